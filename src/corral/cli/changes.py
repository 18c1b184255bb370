"""The run's state changes as ``corral events`` prints them: the latest, or
all, and followed as the journal records them, one line each.

What ``Scheduler.on_event`` tells a callback in the driver, for a person in
another terminal (cold review: an experiment queue's operator polled
``corral status`` for them): when each job was queued, started, ended, and
why, as the journal has it, so also after the driver is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from corral.cli.logs import POLL_S
from corral.cli.waiting import unfinished
from corral.journal.reading import read_changes_after, read_job_names, read_latest_changes
from corral.safe_repr import printable

if TYPE_CHECKING:
    from corral.journal.run import Run

__all__ = ["print_changes", "change_line"]

Change = tuple[str, float, "str | None", str, "str | None"]


def print_changes(run: Run, only: set[str] | None, count: int | None, follow: bool,
                  out: IO[str], note: Callable[[str], None]) -> None:
    """Print the last *count* changes (all: None) of the jobs in *only* (ids as
    text; None: every job), oldest first; with *follow*, then each new one as
    it is recorded, until the jobs of *only* have ended or no process drives
    the run any more. *note* is told
    when earlier changes were left out.

    Raises:
        CommandError: (with *follow*) the driver went with jobs of *only*
            unfinished (attack review: a daemon killed, and it ended as if
            the run had)."""
    if count is None:
        changes, seq = read_changes_after(run.path, 0, only, with_older=True)
    else:
        changes, more, seq = read_latest_changes(run.path, count, only)
        if more:
            note(f"corral: earlier changes left out (the last {count} are shown; --all lists "
                 "every one)")
    names = _Names(run)
    _print(changes, names, out)
    while follow:
        driven = run.owner is not None  # (before the read: what it wrote last is read then)
        # The jobs asked for ended: nothing more of theirs comes (re-attack review: it
        # followed an ended job until the daemon idled out, five minutes).
        ended = only is not None and not unfinished(run.status_counts(tuple(only)))
        changes, seq = read_changes_after(run.path, seq, only)
        _print(changes, names, out)
        if ended:
            return
        if not driven:
            _say_if_left_unfinished(run, only)
            return
        time.sleep(POLL_S)  # another process writes the journal; nothing to wait on


def _say_if_left_unfinished(run: Run, only: set[str] | None) -> None:
    """Raise, as ``corral wait`` does, if jobs of *only* (None: all) are left
    unfinished with no process to drive them."""
    from corral.cli.exits import EXIT_UNREACHABLE, CommandError

    left = unfinished(run.status_counts(tuple(only) if only else None))
    if left:
        raise CommandError(f"no process drives the run at {run.path} any more; its {left} "
                           f"unfinished job{'s' * (left != 1)} will not progress "
                           f"({run.how_unfinished_jobs_go_on()})", EXIT_UNREACHABLE)


def _print(changes: list[Change], names: _Names, out: IO[str]) -> None:
    if not changes:
        return
    names.learn({change[0] for change in changes})
    # In the order they happened: a try's start is recorded when the driver
    # heard of it, stamped with its worker's time (see read_events).
    for change in sorted(changes, key=lambda change: change[1]):
        out.write(change_line(change, names.of(change[0])) + "\n")
    out.flush()


def change_line(change: Change, name: str | None) -> str:
    """``12:03:55.120  job 3 'measure'  QUEUED -> RUNNING`` and ``: reason`` if it
    has one, on one line; at local clock time."""
    job_id, at, old, new, reason = change
    try:
        when = time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"
    except (TypeError, ValueError, OverflowError, OSError):
        when = "??:??:??.???"
    named = f"job {job_id}" + (f" {name!r}" if name else "")
    move = f"{old.upper()} -> {new.upper()}" if old else new.upper()
    said = f": {printable(' '.join(reason.split()))}" if reason else ""
    return f"{when}  {named}  {move}{said}"


#: The most job names :class:`_Names` keeps (the jobs of a batch or two).
_NAMES_KEPT = 10_000


class _Names:
    """The names of the jobs printed, read once per job (by key: a million
    jobs' run costs no more)."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._known: dict[str, str] = {}

    def learn(self, ids: set[str]) -> None:
        unknown = ids - self._known.keys()
        if len(self._known) + len(unknown) > _NAMES_KEPT:  # (following a million jobs' run)
            self._known = {}
            unknown = ids
        if unknown:
            self._known.update(read_job_names(self._run.path, unknown))

    def of(self, job_id: str) -> str | None:
        return self._known.get(job_id)
