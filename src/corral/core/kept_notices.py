"""Job notices kept on disk until they are delivered.

A journaled run's :class:`~corral.core.notify.Notifier` writes each notice it
queues to a file of its own in ``RUN_DIR/notices`` and removes the file once
the notice was delivered, or its failure logged. A driver killed with mail
queued or on its way (a ``kill -9``, a node's out-of-memory killer) leaves
those files behind; the next driver of the run that can send mail tries to
send them, and says so in its log (attack review: three failed jobs' mails
were lost without a word, though the log claims every mail sent or not).

A file is named after the process that wrote it, by pid and start time, so
that a later process given the same pid does not take it for its own; a
killed process not yet reaped (a zombie) counts as gone. The folder is the
run's (0700), but what is found there is read warily: only regular files, not
through a link, of a bounded size, each problem said and the file removed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["NOTICES_DIR", "keep", "forget", "left_behind", "waiting"]

log = logging.getLogger("corral.notify")

#: The folder of a run directory where queued notices wait.
NOTICES_DIR = "notices"
#: The largest notice file read back (a notice holds a stderr tail and a
#: traceback, each bounded when made: far less than this).
_LARGEST_FILE = 4 * 1024 * 1024
#: Numbers the files of this process, whichever notifier writes them (a
#: daemon makes a new one when its ``[smtp]`` table changes, beside the old
#: one: attack review, the two overwrote each other's files).
_numbers = itertools.count(1)


#: A notice, as :mod:`corral.core.notify` makes it (a dataclass of plain values).
Notice = TypeVar("Notice")


def keep(directory: Path, notice: Any, recipients: tuple[str, ...]) -> Path:
    """Write *notice* (a dataclass of plain values) for *recipients* to a new
    file in *directory* (made if missing), whole or not at all; return its path.

    Raises:
        OSError: it cannot be written (what was begun is removed).
    """
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"{_this_process()}.{next(_numbers)}.json"
    temporary = path.with_suffix(".tmp")
    data = json.dumps({"recipients": list(recipients), "notice": dataclasses.asdict(notice)})
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                             0o600)
        with open(descriptor, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except OSError:
        forget(temporary)  # (a full disk: no empty file for the next driver to find)
        raise
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
    undelivered, in the order each wrote them, each made again by *make* from
    its fields. One that cannot be read is said and removed; anything else
    there is left as it is."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in sorted(names, key=_order):
        place = _place(name)
        if place is None or _alive(place[0]):
            continue
        path = directory / name
        if name.endswith(".tmp"):  # (killed as it wrote it: never queued)
            forget(path)
            continue
        try:
            found.append((path, *_read(path, make)))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            log.warning("a job notice left in %s cannot be read (%s: %s); it is removed unsent",
                        path, type(error).__name__, error)
            forget(path)
    return found


def waiting(directory: Path) -> int:
    """How many notices in *directory* processes no longer running left (by
    their names: none is read)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    return sum(1 for name in names if name.endswith(".json")
               and (place := _place(name)) is not None and not _alive(place[0]))


def _read(path: Path, make: Callable[..., Notice]) -> tuple[Notice, tuple[str, ...]]:
    """The notice of the file *path* and its recipients.

    Raises:
        OSError, ValueError, TypeError, KeyError, AttributeError: it is no
            such file (a link, a pipe, too large) or holds no such notice.
    """
    # (Not through a link, and no wait on a pipe: attack review, a FIFO named
    # like a notice hung every driver of the run at its start.)
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(descriptor, "rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise ValueError("not a regular file")
        if status.st_size > _LARGEST_FILE:
            raise ValueError(f"{status.st_size:,} bytes, more than a notice holds")
        data = json.loads(handle.read(_LARGEST_FILE + 1))
    recipients = data["recipients"]
    if not isinstance(recipients, list) or not recipients or not all(
            isinstance(address, str) for address in recipients):
        raise ValueError("its recipients are no list of addresses")
    return make(**data["notice"]), tuple(recipients)


def _place(name: str) -> tuple[str, int] | None:
    """``(writer, number)`` of a notice file's *name* (``PID-START.N.json`` or
    its ``.tmp``); None for a name no notifier writes."""
    stem, _, suffix = name.rpartition(".")
    writer, _, number = stem.rpartition(".")
    pid, _, started = writer.partition("-")
    if suffix not in ("json", "tmp") or not all(
            part.isascii() and part.isdigit() for part in (pid, started, number)):
        return None
    return writer, int(number)


def _order(name: str) -> tuple[int, int, int]:
    """Files by writer (its pid, then start), then in the order it wrote them."""
    place = _place(name)
    if place is None:
        return (0, 0, 0)
    pid, _, started = place[0].partition("-")
    return int(pid), int(started), place[1]


def _this_process() -> str:
    return f"{os.getpid()}-{_started(os.getpid())}"


def _alive(writer: str) -> bool:
    """Whether the process *writer* (``pid-start``) still runs."""
    pid, _, started = writer.partition("-")
    return _started(int(pid)) == started


def _started(pid: int) -> str:
    """When process *pid* started, in clock ticks since boot; "" if it is gone,
    or killed and not yet reaped (a zombie: attack review, a supervisor that
    started the next driver before it reaped the killed one had its notices
    taken for a live driver's). With the pid, it names one process for as
    long as the machine runs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat_line = handle.read()
    except OSError:
        return ""
    fields = stat_line[stat_line.rfind(b")") + 2:].split()
    if len(fields) <= 19 or fields[0] in (b"Z", b"X"):
        return ""
    return fields[19].decode()
