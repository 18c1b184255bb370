"""Jobs' state changes, kept as one journal row per batch the driver sends.

Every state change of every job is recorded (``corral status JOB``, the
report's timeline and a resumed run read them back), but a row per change
made the journal's writer spend about 6 µs per job on four INSERTs of tiny
rows. The driver now sends each batch's changes as columns, and the writer
stores them as one ``event_batches`` row:

* ``jobs``: the job ids, a JSON list of strings;
* ``times``: when each change happened, little-endian doubles (epoch seconds);
* ``moves``: two bytes per change, the old and the new status as
  :data:`STATUS_CODES` numbers them (:data:`NO_STATUS` for a job's first);
* ``reasons``: a JSON object of the changes that have a reason, by position.

A job's changes are found without unpacking every batch: its id, quoted as
JSON quotes it, is looked for in ``jobs`` first. Journals written before this
format keep their ``events`` rows, which are read first (they are older).
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

from corral.status import JobStatus

__all__ = ["STATUS_CODES", "NO_STATUS", "CREATE_TABLE", "INSERT", "META_KEY", "META_VALUE",
           "EventColumns", "batch_row", "pack", "unpack", "read_events_from", "last_queued",
           "changes_after", "latest_changes"]

#: Each status's number in ``moves``. Only ever appended to: journals store these.
STATUS_CODES: dict[JobStatus, int] = {status: code for code, status in enumerate((
    JobStatus.NEW, JobStatus.WAITING, JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING,
    JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT))}
#: The ``old`` of a job's first change: it had no status before.
NO_STATUS = 255
_NAMES = {code: status.value for status, code in STATUS_CODES.items()}
_NAMES[NO_STATUS] = None  # type: ignore[assignment]
_KNOWN_CODES = bytes(_NAMES)

CREATE_TABLE = ("CREATE TABLE IF NOT EXISTS event_batches ("
                "seq INTEGER PRIMARY KEY, jobs TEXT, times BLOB, moves BLOB, reasons TEXT)")

#: The ``meta`` row of a journal whose changes are in ``event_batches`` (one
#: without it, from before, may lack the table: its ``events`` rows are read).
META_KEY, META_VALUE = "events", "batches"

INSERT = "INSERT INTO event_batches (jobs, times, moves, reasons) VALUES (?, ?, ?, ?)"

#: Two bytes per (old, new) pair, made once: the driver appends them per change.
_MOVE_BYTES: dict[tuple[JobStatus | None, JobStatus], bytes] = {
    (old, new): bytes((NO_STATUS if old is None else STATUS_CODES[old], STATUS_CODES[new]))
    for old in (None, *STATUS_CODES) for new in STATUS_CODES}


class EventColumns:
    """The changes of one batch, gathered by the driver's control loop as columns
    (appending to a list, an array and a bytearray costs less than a tuple per
    change, and pickles in one piece)."""

    __slots__ = ("jobs", "times", "moves", "reasons")

    def __init__(self) -> None:
        self.jobs: list[str] = []
        self.times = array("d")
        self.moves = bytearray()
        self.reasons: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, job_id: str, at: float, old: JobStatus | None, new: JobStatus,
            reason: str | None) -> None:
        if reason is not None:
            self.reasons[len(self.jobs)] = reason
        self.jobs.append(job_id)
        self.times.append(at)
        self.moves += _MOVE_BYTES[old, new]

    def message(self) -> tuple[list[str], bytes, bytes, dict[int, str]]:
        """What the writer process gets (see :func:`insert_batch`)."""
        times = self.times
        if sys.byteorder != "little":
            times = array("d", times)
            times.byteswap()
        return self.jobs, times.tobytes(), bytes(self.moves), self.reasons


def batch_row(jobs: list[str], times: bytes, moves: bytes, reasons: dict[int, str]
              ) -> tuple[str, bytes, bytes, str | None]:
    """The ``event_batches`` row (for :data:`INSERT`) of one batch's changes, as
    :meth:`EventColumns.message` gives them."""
    return json.dumps(jobs), times, moves, json.dumps(reasons) if reasons else None


def pack(events: Iterable[tuple[str, float, JobStatus | None, JobStatus, str | None]]
         ) -> tuple[str, bytes, bytes, str | None]:
    """The row of ``(job id, time, old, new, reason)`` changes, for a process
    that writes the journal itself (the settling of a dead driver's jobs)."""
    columns = EventColumns()
    for job_id, at, old, new, reason in events:
        columns.add(job_id, at, old, new, reason)
    return batch_row(*columns.message())


def read_events_from(db: sqlite3.Connection, job_id: str | None = None
                     ) -> Iterator[tuple[str, float, str | None, str, str | None]]:
    """Every change as ``(job id, time, old, new, reason)``, oldest first (of
    *job_id* alone if given): the older ``events`` rows, then the batches."""
    if job_id is None:
        yield from db.execute("SELECT job_id, time, old, new, reason FROM events ORDER BY seq")
    else:
        yield from db.execute("SELECT job_id, time, old, new, reason FROM events "
                              "WHERE job_id=? ORDER BY seq", (job_id,))
    if not _has_batches(db):
        return
    if job_id is None:
        rows = db.execute("SELECT jobs, times, moves, reasons FROM event_batches ORDER BY seq")
    else:
        rows = db.execute("SELECT jobs, times, moves, reasons FROM event_batches "
                          f"WHERE 1{_naming({job_id})} ORDER BY seq", _quoted({job_id}))
    try:
        for row in rows:
            for event in unpack(row):
                if job_id is None or event[0] == job_id:
                    yield event
    except sqlite3.OperationalError as error:
        if "JSON" not in str(error):
            raise
        raise ValueError(f"a batch of state changes does not decode: {error}") from None


def unpack(row: tuple[Any, Any, Any, Any]
           ) -> Iterator[tuple[str, float, str | None, str, str | None]]:
    """The changes of one ``event_batches`` row.

    Raises:
        ValueError: the row is damaged (see :func:`_columns`).
    """
    jobs, times, moves, reasons = _columns(row)
    names = _NAMES
    for index, (job_id, at) in enumerate(zip(jobs, times, strict=True)):
        yield (job_id, at, names[moves[2 * index]], names[moves[2 * index + 1]],
               reasons.get(index))


def _columns(row: tuple[Any, Any, Any, Any]
             ) -> tuple[list[str], array, bytes, dict[int, str | None]]:
    """A row's job ids, times, status bytes and reasons, checked against each other.

    Raises:
        ValueError: the row is damaged: a column of the wrong type, JSON that
            does not decode, or columns that disagree on how many changes it holds.
    """
    jobs_text, times_bytes, moves, reasons_text = row
    if not (isinstance(jobs_text, str) and isinstance(times_bytes, bytes)
            and isinstance(moves, bytes)):
        raise ValueError("a batch of state changes is damaged: its columns hold "
                         f"{type(jobs_text).__name__}, {type(times_bytes).__name__} and "
                         f"{type(moves).__name__}, not text, blob and blob")
    try:
        jobs = json.loads(jobs_text)
        times = array("d")
        times.frombytes(times_bytes)
    except ValueError as error:
        raise ValueError(f"a batch of state changes does not decode: {error}") from None
    if sys.byteorder != "little":
        times.byteswap()
    if not (isinstance(jobs, list) and all(isinstance(job_id, str) for job_id in jobs)):
        raise ValueError("a batch of state changes is damaged: its job ids are not a list "
                         "of strings")
    if not (len(jobs) == len(times) and len(moves) == 2 * len(jobs)):
        raise ValueError(f"a batch of state changes is damaged: {len(jobs)} jobs, "
                         f"{len(times)} times, {len(moves)} status bytes")
    unknown = moves.translate(None, _KNOWN_CODES) or (
        bytes((NO_STATUS,)) if NO_STATUS in moves[1::2] else b"")  # (no status: as old only)
    if unknown:
        raise ValueError(f"a batch of state changes has an unknown status code {unknown[0]}")
    if not all(map(math.isfinite, times)):
        raise ValueError("a batch of state changes is damaged: a time is not a number")
    try:
        reasons = {int(index): reason for index, reason in
                   (json.loads(reasons_text) if reasons_text is not None else {}).items()}
    except (TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"a batch of state changes has reasons that do not decode: "
                         f"{error}") from None
    if not all(isinstance(reason, str) for reason in reasons.values()):
        raise ValueError("a batch of state changes is damaged: a reason is not text")
    return jobs, times, moves, reasons


def changes_after(db: sqlite3.Connection, seq: int, only: set[str] | None,
                  with_older: bool = False
                  ) -> tuple[list[tuple[str, float, str | None, str, str | None]], int]:
    """The changes recorded in the batches after batch *seq* (of the jobs in
    *only*, ids as text, if given), and the number of the last batch there
    is: what a reader that follows the run has not seen yet. *with_older*:
    the changes of a journal's ``events`` rows (from before the batches)
    first, for a reader's first look.

    Raises:
        ValueError: a batch of changes is damaged.
    """
    found = [] if not with_older else [event for event in read_events_from_table(db)
                                       if only is None or event[0] in only]
    if not _has_batches(db):
        return found, seq
    # The last batch first: those up to it are committed, named or not.
    last = db.execute("SELECT max(seq) FROM event_batches").fetchone()[0] or 0
    if last <= seq:
        return found, seq
    for row in db.execute("SELECT jobs, times, moves, reasons FROM event_batches "
                          f"WHERE seq > ? AND seq <= ?{_naming(only)} ORDER BY seq",
                          (seq, last, *_quoted(only))):
        found += (event for event in unpack(row) if only is None or event[0] in only)
    return found, last


def latest_changes(db: sqlite3.Connection, count: int, only: set[str] | None
                   ) -> tuple[list[tuple[str, float, str | None, str, str | None]], bool, int]:
    """The last *count* changes (of the jobs in *only*, if given), oldest
    first, whether there were earlier ones, and the number of the last batch:
    read from the end (and, for a few jobs, only the batches that name them),
    so that a million jobs' run costs no more.

    Raises:
        ValueError: a batch of changes is damaged.
    """
    pieces: list[list[tuple[str, float, str | None, str, str | None]]] = []  # newest first
    gathered = 0
    last = 0
    if _has_batches(db):
        last = db.execute("SELECT max(seq) FROM event_batches").fetchone()[0] or 0
        for row in db.execute("SELECT jobs, times, moves, reasons FROM event_batches"
                              f" WHERE seq <= ?{_naming(only)} ORDER BY seq DESC",
                              (last, *_quoted(only))):
            piece = [event for event in unpack(row) if only is None or event[0] in only]
            pieces.append(piece)
            gathered += len(piece)
            if gathered > count:
                break
    if gathered <= count:  # (a journal from before the batches: its rows are older)
        pieces.append([event for event in read_events_from_table(db)
                       if only is None or event[0] in only])
    found = [event for piece in reversed(pieces) for event in piece]
    return found[-count:], len(found) > count, last


#: How many jobs' changes are looked for by their ids in each batch's text
#: first (as ``corral status ID`` does), rather than by unpacking every batch.
_FEW = 20


def _naming(only: set[str] | None) -> str:
    """The SQL that keeps the batches naming one of a few jobs (see _quoted),
    and those damaged in a way that could hide that they do (read, so that
    their damage is told, not skipped); none for many jobs, or all."""
    if only is None or len(only) > _FEW:
        return ""
    return (" AND (" + " OR ".join("instr(jobs, ?) IS NOT 0" for _ in only)
            + " OR typeof(jobs) != 'text' OR typeof(times) != 'blob' OR typeof(moves) != 'blob'"
            " OR length(times) != 8 * json_array_length(jobs)"
            " OR length(moves) != 2 * json_array_length(jobs))")


def _quoted(only: set[str] | None) -> tuple[str, ...]:
    """The ids of :func:`_naming`'s jobs as the batches' JSON quotes them."""
    if only is None or len(only) > _FEW:
        return ()
    return tuple(json.dumps(job_id) for job_id in sorted(only))


def read_events_from_table(db: sqlite3.Connection
                           ) -> list[tuple[str, float, str | None, str, str | None]]:
    """The changes of the ``events`` table, one row each (journals written
    before the batches), oldest first."""
    return list(db.execute("SELECT job_id, time, old, new, reason FROM events ORDER BY seq"))


def last_queued(db: sqlite3.Connection, only: set[str]) -> dict[str, float]:
    """When each job of *only* (ids as text) was last made NEW or QUEUED (its
    latest attempt's start, as far as the journal knows), by job id. Every
    batch is read (and checked), but only those jobs are kept.

    Raises:
        ValueError: a batch of changes is damaged.
    """
    wanted = (JobStatus.NEW.value, JobStatus.QUEUED.value)
    found: dict[str, float] = {job_id: at for job_id, at in db.execute(
        "SELECT job_id, max(time) FROM events WHERE new IN (?, ?) GROUP BY job_id", wanted)
        if job_id in only}
    if not _has_batches(db):
        return found
    codes = {STATUS_CODES[JobStatus.NEW], STATUS_CODES[JobStatus.QUEUED]}
    for row in db.execute("SELECT jobs, times, moves, reasons FROM event_batches ORDER BY seq"):
        jobs, times, moves, _ = _columns(row)
        for index, code in enumerate(moves[1::2]):
            if code in codes:
                job_id = jobs[index]
                if job_id in only and times[index] > found.get(job_id, 0.0):
                    found[job_id] = times[index]
    return found


def _has_batches(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='event_batches'"
                      ).fetchone() is not None
