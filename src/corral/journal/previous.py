"""The jobs of a run's earlier sessions, as a resumed run looks them up.

A resumed run matches each job it dispatches against the journal by its key
(:mod:`corral.core.resume`). Every earlier job was read whole when the journal
was opened (its spec parsed, its result loaded): 2.5 KB and 21 µs a job, so
2.1 s and 250 MB more to resume a run of 100,000 jobs, and twenty times that
for a million. Now only the unfinished ones are read whole (a dead driver's:
the journal settles them at once); of the others only the key and the id are
kept, in a dict of strings (which the garbage collector does not track), and
a job is read whole when a new one matches it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from corral.status import TERMINAL, JobStatus

__all__ = ["PreviousJobs"]


class _Stored(Protocol):
    """What is used here of a stored job (``corral.journal.stored.StoredJob``)."""

    @property
    def key(self) -> str: ...
    @property
    def id(self) -> int | str: ...
    @property
    def status(self) -> JobStatus: ...


StoredJob = TypeVar("StoredJob", bound=_Stored)

#: Ids in one query of :meth:`PreviousJobs.read_ahead` (SQLite's oldest limit of
#: parameters is 999).
_READ_AHEAD_AT_ONCE = 500
#: The unfinished statuses, as the journal writes them.
_UNFINISHED = tuple(status.value for status in JobStatus if status not in TERMINAL)
_MARKS = ", ".join("?" * len(_UNFINISHED))


class PreviousJobs(Generic[StoredJob]):
    """Earlier sessions' jobs by key: the unfinished ones whole, the others read
    when asked for. Reads go through a connection of its own, opened on the
    journal for the session (the writer process writes meanwhile: WAL)."""

    def __init__(self, db: sqlite3.Connection, path: Path,
                 read: Callable[[sqlite3.Cursor, Path], list[StoredJob]],
                 damaged: Callable[[sqlite3.Error], Exception]) -> None:
        self._path = path
        self._read = read
        self._damaged = damaged  # the error for a row SQLite cannot give (text no UTF-8)
        #: The jobs read whole, by key: the unfinished ones, then those settled at open.
        self._whole: dict[str, StoredJob] = {job.key: job for job in read(db.execute(
            f"SELECT * FROM jobs WHERE status IN ({_MARKS}) ORDER BY seq", _UNFINISHED), path)}
        #: The same jobs by id (as text).
        self._whole_by_id = {str(job.id): job for job in self._whole.values()}
        #: key -> id (as text) of the finished ones.
        self._ids: dict[str, str] = dict(db.execute(
            f"SELECT key, id FROM jobs WHERE status NOT IN ({_MARKS})", _UNFINISHED))
        self.max_int_id: int = db.execute("SELECT max(int_id) FROM jobs").fetchone()[0] or 0
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        #: Finished jobs read ahead by :meth:`read_ahead`, by key, until asked for.
        self._ahead: dict[str, StoredJob] = {}

    def __len__(self) -> int:
        return len(self._whole) + len(self._ids)

    def unfinished(self) -> list[StoredJob]:
        """The jobs read whole, in submission order: the unfinished ones (and
        those of them the journal settled when it was opened)."""
        return list(self._whole.values())

    def replace(self, job: StoredJob) -> None:
        """*job* as the journal settled it (a dead driver's call that had ended)."""
        self._whole[job.key] = self._whole_by_id[str(job.id)] = job

    def get(self, key: str) -> StoredJob | None:
        """The earlier job of *key*, read whole; None if there is none."""
        found = self._whole.get(key)
        if found is not None or key not in self._ids:
            return found
        found = self._ahead.pop(key, None)
        if found is not None:
            return found
        return self._one("SELECT * FROM jobs WHERE id=?", self._ids[key])

    def read_ahead(self, keys: Iterable[str]) -> None:
        """Read the finished earlier jobs of *keys* in a few queries, for the
        :meth:`get` of each that follows (a rerun of a map asks for a
        thousand jobs at a time: one query each cost it a fifth of its time).
        What is read ahead and never asked for is dropped at the next call."""
        ids = {self._ids[key]: key for key in keys
               if key in self._ids and key not in self._whole}
        self._ahead = {}
        wanted = list(ids)
        with self._lock:
            db = self._connection()
            for start in range(0, len(wanted), _READ_AHEAD_AT_ONCE):
                part = wanted[start:start + _READ_AHEAD_AT_ONCE]
                try:
                    jobs = self._read(db.execute(
                        f"SELECT * FROM jobs WHERE id IN ({', '.join('?' * len(part))})", part),
                        self._path)
                except sqlite3.Error as error:
                    raise self._damaged(error) from None
                for job in jobs:
                    key = ids.get(str(job.id))
                    if key is not None:
                        self._ahead[key] = job

    def by_slot(self, slot: str) -> StoredJob | None:
        """The latest earlier job in *slot* (see :func:`corral.core.identity.job_digests`),
        read whole; None if none (or the journal is from before slots)."""
        return self._one("SELECT * FROM jobs WHERE slot=? ORDER BY seq DESC LIMIT 1", slot)

    def by_id(self, job_id: str) -> StoredJob | None:
        """The earlier job whose id is *job_id* (as text), read whole; None if none."""
        found = self._whole_by_id.get(job_id)
        return found if found is not None else self._one("SELECT * FROM jobs WHERE id=?", job_id)

    def statuses(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """The statuses of those of *job_ids* that are earlier jobs."""
        found = {job_id: job.status for job_id, job in self._whole_by_id.items()}
        wanted = [job_id for job_id in job_ids if job_id not in found]
        with self._lock:
            db = self._connection()
            try:
                for job_id in wanted:
                    row = db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
                    if row is not None:
                        found[job_id] = JobStatus(row[0])
            except sqlite3.Error as error:
                raise self._damaged(error) from None
        return found

    def commands_starting(self, prefix: str) -> list[str]:
        """The command lines of earlier jobs that begin with *prefix*."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._lock:
            try:
                return [command for (command,) in self._connection().execute(
                    "SELECT command FROM jobs WHERE command LIKE ? ESCAPE '\\'", (pattern,))]
            except sqlite3.Error as error:
                raise self._damaged(error) from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _one(self, query: str, *parameters: object) -> StoredJob | None:
        with self._lock:
            try:
                jobs = self._read(self._connection().execute(query, parameters), self._path)
            except sqlite3.Error as error:  # (checked at open, but text is read only here)
                raise self._damaged(error) from None
        return jobs[0] if jobs else None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:  # (the submitting thread, a map's feeder: not one thread)
            self._db = sqlite3.connect(f"{self._path.absolute().as_uri()}?mode=ro", uri=True,
                                       check_same_thread=False, timeout=30)
        return self._db
