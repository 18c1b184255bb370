"""The outcome log: a worker's record of every call it finished, kept on disk.

In a journaled run the worker appends each reply ``(job_id, ok, blob)`` to
``<run dir>/outcomes/<host>-<worker pid>`` *before* it sends the reply (the
host, because Dask workers on several machines may share the run directory). If the driver
is killed after a job finished but before the journal recorded it, the next
run finds the outcome here and does not run the job a second time.

One ``write()`` to a file the worker keeps open costs a few microseconds; a
file per job (directory, temporary file, rename) cost ten times more and made
small calls a third slower. Records are length-prefixed; a record torn by a
kill is ignored; each carries the time the call ended. The files are removed once the
journal holds everything
(a clean shutdown).
"""

from __future__ import annotations

import os
import pickle
import struct
import time
from typing import Any

__all__ = ["OUTCOMES_DIR", "OutcomeLog", "OutcomesSince", "outcomes_directory",
           "read_outcomes", "discard_outcomes"]

OUTCOMES_DIR = "outcomes"
_HEADER = struct.Struct("<Id")  # size of the reply, time the call ended


class OutcomeLog:
    """The appending side, one per worker process."""

    def __init__(self) -> None:
        self._files: dict[str, int] = {}

    def append(self, directory: str, reply: bytes) -> None:
        """Append *reply* to this process's log in *directory* (made if missing)."""
        descriptor = self._files.get(directory)
        if descriptor is None:
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass
            name = f"{os.uname().nodename}-{os.getpid()}"
            descriptor = os.open(os.path.join(directory, name),
                                 os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._files[directory] = descriptor
        record = memoryview(_HEADER.pack(len(reply), time.time()) + reply)
        while record:  # one write() moves at most 2 GiB: a bigger record takes several
            record = record[os.write(descriptor, record):]


def outcomes_directory(run_dir: str | os.PathLike[str]) -> str:
    """Where the outcome logs of the run journaled in *run_dir* go (whatever its workdir)."""
    return os.path.join(run_dir, OUTCOMES_DIR)


def read_outcomes(run_dir: str | os.PathLike[str]) -> dict[str, tuple[bool, bytes, float]]:
    """``{str(job id): (ok, blob, ended)}`` from every worker's log; for a job
    recorded more than once (retries), the record that ended last wins."""
    found: dict[str, tuple[bool, bytes, float]] = {}
    directory = outcomes_directory(run_dir)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        try:
            with open(os.path.join(directory, name), "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        for (job_id, ok, blob), ended in _records(data):
            earlier = found.get(str(job_id))
            if earlier is None or ended >= earlier[2]:
                found[str(job_id)] = (ok, blob, ended)
    return found


class OutcomesSince:
    """Reads a run's outcome logs again and again, each time only as far back
    as the calls asked about may have ended: a driver that asks after every
    few cancels must not read a long run's whole log each time (attack
    review: a second's stall of the control loop per cancel, with 570 MB).

    A log is appended in the order its calls end, so each read leaves a mark
    (where it stopped, and when the last call before that ended), and the next
    read starts at the latest mark older than the time asked about.
    """

    #: Marks kept per log (the oldest go; a read then starts further back).
    MARKS_KEPT = 64

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.directory = outcomes_directory(run_dir)
        self._marks: dict[str, list[tuple[int, float]]] = {}

    def read(self, since: float) -> dict[str, tuple[bool, bytes, float]]:
        """``{str(job id): (ok, blob, ended)}`` of the calls that ended at or
        after *since* (epoch seconds); the record that ended last wins."""
        found: dict[str, tuple[bool, bytes, float]] = {}
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return found
        for name in names:
            marks = self._marks.setdefault(name, [])
            start = max((offset for offset, ended in marks if ended < since), default=0)
            try:
                with open(os.path.join(self.directory, name), "rb") as handle:
                    handle.seek(start)
                    data = handle.read()
            except OSError:
                continue
            records, used = _records_and_end(data)
            for (job_id, ok, blob), ended in records:
                if ended >= since:
                    earlier = found.get(str(job_id))
                    if earlier is None or ended >= earlier[2]:
                        found[str(job_id)] = (ok, blob, ended)
            if records:
                marks.append((start + used, records[-1][1]))
                del marks[:-self.MARKS_KEPT]
        return found


def _records(data: bytes) -> list[tuple[tuple[Any, bool, bytes], float]]:
    return _records_and_end(data)[0]


def _records_and_end(data: bytes) -> tuple[list[tuple[tuple[Any, bool, bytes], float]], int]:
    """The whole records at the start of *data*, and where the last one ends."""
    records = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        size, ended = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        if start + size > len(data):
            break  # torn by a kill, or still being written
        try:
            records.append((pickle.loads(data[start:start + size]), ended))
        except Exception:
            break
        offset = start + size
    return records, offset


def discard_outcomes(run_dir: str | os.PathLike[str]) -> None:
    import shutil  # (the driver's, once: not at every worker's start)

    shutil.rmtree(outcomes_directory(run_dir), ignore_errors=True)
