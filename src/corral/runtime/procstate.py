"""A process's scheduling state, as the kernel reports it: what tells a process
that is stopped (``T``: SIGSTOP, Ctrl-Z; ``t``: a debugger) or waiting on a
disk (``D``) from one that merely takes its time."""

from __future__ import annotations

__all__ = ["process_state"]


def process_state(pid: int) -> str | None:
    """The one-letter state of *pid* on this host (``R``, ``S``, ``D``, ``T``,
    ``t``, ``Z``...), or None if it cannot be read (gone, or not Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read()
    except OSError:
        return None
    # The command name before the state is in parentheses and may hold anything.
    return fields[fields.rindex(")") + 2:][:1] or None
