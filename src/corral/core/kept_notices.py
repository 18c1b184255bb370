"""Job notices kept on disk until they are delivered.

A journaled run's :class:`~corral.core.notify.Notifier` writes each notice it
queues to a file of its own in ``RUN_DIR/notices`` and removes the file once
the notice was delivered, or its failure logged. A driver killed with mail
queued or on its way (a ``kill -9``, a node's out-of-memory killer) leaves
those files behind; the next driver of the run that can send mail sends
them, and says so in its log (attack review: three failed jobs' mails were
lost without a word, though the log claims every mail sent or not).

A file is named after the process that wrote it, by pid and start time, so
that a later process given the same pid does not take it for its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["NOTICES_DIR", "keep", "forget", "left_behind"]

log = logging.getLogger("corral.notify")

#: The folder of a run directory where queued notices wait.
NOTICES_DIR = "notices"


#: A notice, as :mod:`corral.core.notify` makes it (a dataclass of plain values).
Notice = TypeVar("Notice")


def keep(directory: Path, notice: Any, recipients: tuple[str, ...], number: int) -> Path:
    """Write *notice* (a dataclass of plain values) for *recipients* to a new
    file in *directory* (made if missing), whole or not at all; return its path.

    Raises:
        OSError: it cannot be written.
    """
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"{_this_process()}.{number}.json"
    temporary = path.with_suffix(".tmp")
    data = json.dumps({"recipients": list(recipients), "notice": dataclasses.asdict(notice)})
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(descriptor, "w", encoding="utf-8") as handle:
        handle.write(data)
    os.replace(temporary, path)
    return path


def forget(path: Path) -> None:
    """Remove a kept notice: it was delivered, or its failure was logged."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:  # (a read-only run: said, and the run goes on)
        log.warning("could not remove the kept job notice %s: %s", path, error)


def left_behind(directory: Path, make: Callable[..., Notice]
                ) -> list[tuple[Path, Notice, tuple[str, ...]]]:
    """The notices in *directory* that processes no longer running left
    undelivered, oldest first, each made again by *make* from its fields. One
    that cannot be read is logged and removed."""
    try:
        names = sorted(os.listdir(directory), key=_order)
    except OSError:
        return []
    found = []
    for name in names:
        stem, _, suffix = name.rpartition(".")
        writer = stem.rpartition(".")[0]
        path = directory / name
        if suffix not in ("json", "tmp") or not writer or _alive(writer):
            continue
        if suffix == "tmp":  # (killed as it wrote it: never queued)
            forget(path)
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            notice = make(**data["notice"])
            recipients = tuple(str(address) for address in data["recipients"])
        except (OSError, ValueError, TypeError, KeyError) as error:
            log.warning("a job notice left in %s cannot be read (%s: %s); it is removed unsent",
                        path, type(error).__name__, error)
            forget(path)
            continue
        if recipients:
            found.append((path, notice, recipients))
    return found


def _order(name: str) -> tuple[str, int]:
    """Files by writer, then in the order it queued them."""
    writer, _, number = name.rpartition(".")[0].rpartition(".")
    return writer, int(number) if number.isdigit() else 0


def _this_process() -> str:
    return f"{os.getpid()}-{_started(os.getpid())}"


def _alive(writer: str) -> bool:
    """Whether the process *writer* (``pid-start``) still runs."""
    pid, _, started = writer.partition("-")
    return pid.isdigit() and _started(int(pid)) == started


def _started(pid: int) -> str:
    """When process *pid* started, in clock ticks since boot ("" if it is gone):
    with the pid, it names one process for as long as the machine runs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return ""
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else ""
