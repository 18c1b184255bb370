"""Reading a run's journal, from any process of its user, while its driver
writes it (WAL lets readers read): every job, one job, the counts and the
latest jobs of a big run, events, sessions and the run's settings. A row with
a value corral cannot read is a :class:`JournalError` naming the file, the job
and the value.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import sqlite3
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from corral.journal import eventlog
from corral.journal.writer import WRITING_KEY
from corral.status import JobStatus
from corral.errors import JournalError
from corral.journal.files import (JOURNAL_FILE, MOVE_AWAY, NotCreatedYet, checked_meta,
                                  damaged_error, journal_has_stopped, journal_path, lost_log_error,
                                  log_missing, open_for_reading, owner_of)
from corral.journal.stored import StoredJob, StoredSession

__all__ = ["rows_to_jobs", "check_rows", "error_summary", "one_snapshot", "read_jobs", "Overview",
           "read_overview", "read_status_counts", "read_job", "read_events",
           "read_session_backends", "CAPACITY_KEY", "LEFT_EARLY_KEY", "read_sessions", "read_meta",
           "read_jobs_in", "read_jobs_named", "read_jobs_numbered"]


def rows_to_jobs(cursor: sqlite3.Cursor, path: Path) -> list[StoredJob]:
    """The jobs of a ``SELECT`` on the jobs table.

    Raises:
        JournalError: a row holds a value corral cannot read (naming the
            file, the job and the value), never a traceback from deep inside.
    """
    names = [column[0] for column in cursor.description]
    return [_stored_job(dict(zip(names, row, strict=True)), path) for row in cursor]


_NUMBER = ((int, float), "number")

#: Columns whose values must have these types, and what to call them (None is always allowed).
_COLUMN_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "exit_code": ((int,), "integer"), "attempts": ((int,), "integer"), "started": _NUMBER,
    "ended": _NUMBER, "session": ((int,), "integer"), "result": ((bytes,), "blob"),
    "error": ((bytes,), "blob")}


#: How SQLite names the types of :data:`_COLUMN_TYPES` (``typeof``).
_SQLITE_TYPES = {int: "integer", float: "real", bytes: "blob"}


def check_rows(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a journal with a job row corral cannot read, as reading it whole
    would (:func:`_stored_job`): SQLite finds the rows that may be damaged, and
    only those are read here.

    Raises:
        JournalError: the first damaged row, named as :func:`_stored_job` names it.
    """
    types = [f"typeof({column}) NOT IN ('null', "
             + ", ".join(f"'{_SQLITE_TYPES[kind]}'" for kind in kinds) + ")"
             for column, (kinds, _) in _COLUMN_TYPES.items()]
    known = ", ".join(f"'{status.value}'" for status in JobStatus)
    suspects = db.execute(
        "SELECT * FROM jobs WHERE status IS NULL OR status NOT IN (" + known + ") "
        "OR typeof(name) != 'text' OR " + " OR ".join(types) + " "
        "OR (spec != '' AND (json_valid(spec) = 0 OR json_type(spec) != 'object')) "
        "OR (deps != '' AND (json_valid(deps) = 0 OR json_type(deps) != 'array'))")
    names = [column[0] for column in suspects.description]
    for row in suspects:  # read one by one: SQLite's JSON is stricter (a NaN is no damage)
        _stored_job(dict(zip(names, row, strict=True)), path)  # raises for a damaged one


def _stored_job(record: dict[str, Any], path: Path) -> StoredJob:
    job_id = record["int_id"] if record["int_id"] is not None else record["id"]

    def damaged(what: str) -> JournalError:
        return JournalError(f"{path} is damaged: job {job_id} has {what}; {MOVE_AWAY}")

    for column, (types, called) in _COLUMN_TYPES.items():
        value = record.get(column)
        if value is not None and not isinstance(value, types):
            raise damaged(f"{column} {value!r}, which is no {called}")
    if record["status"] is None:  # every job is written with its first state
        raise damaged("no status")
    if not isinstance(record["name"], str):
        raise damaged(f"the name {record['name']!r}, which is no text")
    try:
        status = JobStatus(record["status"])
    except ValueError:
        raise damaged(f"the status {record['status']!r}, which is no job status") from None
    spec = _json_column(record, "spec", dict, "{}", damaged)
    deps = _json_column(record, "deps", list, "[]", damaged)
    live = _path_text(record.get("live"))
    return StoredJob(
        id=job_id, key=record["key"], name=record["name"], kind=record["kind"],
        command=record["command"] or "", spec=spec, deps=tuple(deps), status=status,
        reason=record["reason"], exit_code=record["exit_code"], attempts=record["attempts"] or 0,
        native_id=record["native_id"], started=record["started"], ended=record["ended"],
        jobdir=_path_text(record["jobdir"]), result=record["result"], error=record["error"],
        session=record["session"], live=_two_paths(live),
        slot=record.get("slot"), journal=os.fspath(path),
        results_read=bool(record.get("results_read", 1)))


def _path_text(value: object) -> Any:
    """A path column as text: the writer keeps a path that is no UTF-8 as bytes."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _two_paths(live: object) -> tuple[str, str] | None:
    """A ``live`` column's stdout and stderr files; None unless it holds both
    (a damaged one with one path crashed every reader of its job, and the next
    driver: re-attack review)."""
    if not isinstance(live, str):
        return None
    stdout, newline, stderr = live.partition("\n")
    return (stdout, stderr) if newline and stdout and stderr else None


def _json_column(record: dict[str, Any], column: str, kind: type, empty: str,
                 damaged: Callable[[str], JournalError]) -> Any:
    text = record[column] or empty
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, kind):
        shown = text if len(str(text)) <= 40 else f"{str(text)[:40]}…"
        raise damaged(f"a {column} that is no JSON {'object' if kind is dict else 'list'} "
                      f"({shown!r})")
    return value


def error_summary(blob: bytes) -> str:
    """The one-line summary of a packed exception (see :mod:`corral.runtime.payload`)."""
    from corral.runtime.payload import loads_error

    try:
        return loads_error(blob)[2]
    except Exception:
        return "an exception that cannot be read back here"


#: The connection each journal's reads share inside :func:`one_snapshot`, by path.
_snapshots: contextvars.ContextVar[dict[Path, sqlite3.Connection]] = contextvars.ContextVar(
    "corral_journal_snapshots")


@contextlib.contextmanager
def one_snapshot(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Let every read of the run's journal inside this block (by this thread)
    see it as it was at the first: one connection in one read transaction.

    A page made of the jobs and then the events, each read on its own, drew a
    live run's job as QUEUED beside the bar of its finished attempt, written
    between the two reads.
    """
    path = journal_path(run_dir)
    if path in _snapshots.get({}):  # (within one already: that one holds)
        yield
        return
    entered = False
    try:
        with _reading(run_dir) as db:
            entered = True
            db.execute("BEGIN")
            token = _snapshots.set({**_snapshots.get({}), path: db})
            try:
                yield
            finally:
                _snapshots.reset(token)
                db.execute("ROLLBACK")  # (it only read)
    except (NotCreatedYet, FileNotFoundError):
        if entered:
            raise
        yield  # (each read says so in its own way)


@contextlib.contextmanager
def _reading(run_dir: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a journal known to be whole (the one of the
    :func:`one_snapshot` this thread is in, if any).

    Raises:
        FileNotFoundError: no run directory, or no journal in it.
        PermissionError: the journal may not be read (another user's run).
        JournalError: the file is empty, damaged, not whole, or lost what its
            write-ahead log held.
        NotCreatedYet: a live driver is making it this instant.
    """
    path = journal_path(run_dir)
    held = _snapshots.get({}).get(path)
    if held is not None:
        yield held
        return
    if not path.exists():
        if not Path(run_dir).exists():
            raise FileNotFoundError(f"no run directory {os.fspath(run_dir)}")
        raise FileNotFoundError(
            f"{os.fspath(run_dir)} holds no corral journal ({JOURNAL_FILE}): a run is "
            "journaled where Scheduler(journal=DIR) or `corral --run DIR submit` puts it "
            "(Scheduler(workdir=DIR) keeps only the jobs' files)")
    log_was_missing = log_missing(path)  # before connecting: a reader's connection makes one
    connection = open_for_reading(path)
    try:
        driven = lambda: owner_of(run_dir) is not None  # noqa: E731
        try:
            meta = checked_meta(connection, path, being_created=driven)
            if (log_was_missing and meta.get(WRITING_KEY) and not driven()
                    and not journal_has_stopped(Path(run_dir))):
                raise lost_log_error(path, meta[WRITING_KEY])
        except sqlite3.DatabaseError as error:
            raise damaged_error(path, error) from None
        try:
            yield connection
        except sqlite3.DatabaseError as error:
            raise damaged_error(path, error) from None
    finally:
        connection.close()


def read_jobs(run_dir: str | os.PathLike[str], with_results: bool = True) -> list[StoredJob]:
    """Every job of the run, in the order they were dispatched.

    Raises:
        FileNotFoundError: no journal there (the message names the path).
    """
    columns = "*" if with_results else _COLUMNS_BUT_RESULTS
    try:
        with _reading(run_dir) as db:
            return rows_to_jobs(db.execute(f"SELECT {columns} FROM jobs ORDER BY seq"),
                                 journal_path(run_dir))
    except NotCreatedYet:
        return []


def read_jobs_numbered(run_dir: str | os.PathLike[str], low: int, high: int) -> list[StoredJob]:
    """The jobs whose ids are the numbers *low* to *high*, in dispatch order:
    one query, not every row of the run made into a job (a range of a big
    run took seconds, and a second a thousand jobs)."""
    return _jobs_where(run_dir, "int_id BETWEEN ? AND ?", (low, high))


def read_jobs_named(run_dir: str | os.PathLike[str], name: str) -> list[StoredJob]:
    """The jobs called *name*, in dispatch order (one query, as above)."""
    return _jobs_where(run_dir, "name = ?", (name,))


def read_jobs_in(run_dir: str | os.PathLike[str], statuses: Collection[JobStatus]
                 ) -> list[StoredJob]:
    """The jobs in *statuses*, in dispatch order (one query, as above: the 12
    that failed of a million-job run, not every row)."""
    values = tuple(status.value for status in statuses)
    # A row whose status is none is an error, as every full read says, not a
    # row left out (attack review): the counts' check names it.
    return _jobs_where(run_dir, f"status IN ({_marks(values)})", values,
                       statuses_checked=True) if values else []


def _jobs_where(run_dir: str | os.PathLike[str], condition: str,
                parameters: tuple[object, ...], statuses_checked: bool = False
                ) -> list[StoredJob]:
    try:
        with _reading(run_dir) as db:
            if statuses_checked:  # (in the snapshot the rows are read from)
                db.execute("BEGIN")
                _status_counts(db, journal_path(run_dir))
            return rows_to_jobs(db.execute(f"SELECT {_COLUMNS_BUT_RESULTS} FROM jobs WHERE "
                                           f"{condition} ORDER BY seq", parameters),
                                journal_path(run_dir))
    except NotCreatedYet:
        return []


@dataclass(frozen=True)
class Overview:
    """What ``corral status`` shows of a run without reading every row: the
    count of jobs per status, the first unfinished jobs, the last finished ones."""

    counts: dict[JobStatus, int]
    unfinished: list[StoredJob]
    finished: list[StoredJob]

    @property
    def unfinished_left_out(self) -> int:
        return sum(count for status, count in self.counts.items()
                   if not status.is_terminal) - len(self.unfinished)

    @property
    def finished_left_out(self) -> int:
        return sum(count for status, count in self.counts.items()
                   if status.is_terminal) - len(self.finished)


def read_overview(run_dir: str | os.PathLike[str], unfinished: int, finished: int,
                  failed: int = 0) -> Overview:
    """Counts per status, the first *unfinished* unfinished jobs in dispatch
    order, and the last *finished* finished ones with, before them, the first
    *failed* that failed or timed out (what went wrong must not hide among the
    counts): queries that stay well under a second on a run of a million jobs
    (the index on status answers the counts and finds the unfinished and
    failed rows; rows are stored in dispatch order, so the table's own order
    serves for the rest)."""
    terminal = tuple(status.value for status in JobStatus if status.is_terminal)
    unfinished_statuses = tuple(status.value for status in JobStatus if not status.is_terminal)
    columns = _COLUMNS_BUT_RESULTS
    try:
        with _reading(run_dir) as db:
            # One snapshot for every question: asked one by one, the counts and the
            # rows listed could tell of different moments of a run going on.
            db.execute("BEGIN")
            path = journal_path(run_dir)
            counts = _status_counts(db, path)
            # (IN the unfinished statuses, not NOT IN the others: the index on
            # status then finds the rows in order, where NOT IN reads the table.)
            first = rows_to_jobs(db.execute(
                f"SELECT {columns} FROM jobs WHERE status IN ({_marks(unfinished_statuses)}) "
                "ORDER BY rowid LIMIT ?", (*unfinished_statuses, unfinished)), path)
            last = rows_to_jobs(db.execute(
                f"SELECT {columns} FROM jobs WHERE status IN ({_marks(terminal)}) "
                "ORDER BY rowid DESC LIMIT ?", (*terminal, finished)), path)[::-1]
            failures: list[tuple[int, StoredJob]] = []  # (rowid: dispatch order, job)
            for status in (JobStatus.FAILED, JobStatus.TIMED_OUT):  # (one each: the index
                cursor = db.execute(                                 # serves them in order)
                    f"SELECT rowid, {columns} FROM jobs WHERE status = ? ORDER BY rowid "
                    "LIMIT ?", (status.value, failed))
                names = [column[0] for column in cursor.description][1:]
                failures += [(row[0], _stored_job(dict(zip(names, row[1:], strict=True)), path))
                             for row in cursor]
    except NotCreatedYet:
        return Overview({}, [], [])
    listed = {str(job.id) for job in last}
    failures.sort(key=lambda found: found[0])
    return Overview(counts, first,
                    [job for _, job in failures if str(job.id) not in listed][:failed] + last)


def _status_counts(db: sqlite3.Connection, path: Path,
                   job_ids: list[str] | None = None) -> dict[JobStatus, int]:
    """How many jobs (of *job_ids*, those found, when given) are in each status."""
    if job_ids is None:
        found = dict(db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
    else:
        found = {}
        for first in range(0, len(job_ids), _IDS_A_QUERY):
            some = job_ids[first:first + _IDS_A_QUERY]
            for status, count in db.execute(f"SELECT status, COUNT(*) FROM jobs WHERE id IN "
                                            f"({_marks(tuple(some))}) GROUP BY status", some):
                found[status] = found.get(status, 0) + count
    known = tuple(status.value for status in JobStatus)
    unknown = [status for status in found if status not in known]
    if unknown:
        # A row whose status is not one: read it as every reader does, which
        # names the file, the job and the value. (Asked only then: the
        # question reads the whole table.)
        rows_to_jobs(db.execute(
            f"SELECT {_COLUMNS_BUT_RESULTS} FROM jobs WHERE status IS NULL OR status NOT IN "
            f"({_marks(known)}) LIMIT 1", known), path)
        # No row has it: the index the counts come from is damaged (a torn page).
        raise damaged_error(path, f"its index of job statuses holds {unknown[0]!r}, which no "
                             "job has")
    return {JobStatus(status): count for status, count in found.items()}


def read_status_counts(run_dir: str | os.PathLike[str],
                       job_ids: Collection[str] | None = None) -> dict[JobStatus, int]:
    """How many jobs of the run (or of *job_ids*, those found) are in each
    status, without reading their rows: what a waiting command asks five times
    a second, where reading every row of a run of 100,000 jobs took most of a
    core from the run it waited for."""
    try:
        with _reading(run_dir) as db:
            db.execute("BEGIN")  # one snapshot for every slice of the ids
            return _status_counts(db, journal_path(run_dir), None if job_ids is None
                                  else list(dict.fromkeys(map(str, job_ids))))
    except NotCreatedYet:
        return {}


#: Ids asked about in one query (SQLite allows 32,766 parameters; fewer keep it quick).
_IDS_A_QUERY = 500

#: A job row's columns but its pickled result and error: what listings read.
_COLUMNS_BUT_RESULTS = (
    "id, int_id, seq, key, name, kind, command, spec, deps, status, reason, exit_code, "
    "attempts, native_id, started, ended, jobdir, NULL AS result, NULL AS error, session, live, "
    "0 AS results_read")


def _marks(values: tuple) -> str:
    """One SQL parameter mark per value: ``?, ?, ?``."""
    return ", ".join("?" * len(values))


def read_job(run_dir: str | os.PathLike[str], job_id: int | str) -> StoredJob:
    """One job, with its result.

    Raises:
        KeyError: no such job.
    """
    try:
        with _reading(run_dir) as db:
            found = rows_to_jobs(db.execute("SELECT * FROM jobs WHERE id=?", (str(job_id),)),
                                  journal_path(run_dir))
    except NotCreatedYet:
        found = []
    if not found:
        raise KeyError(job_id)
    return found[0]


def read_events(run_dir: str | os.PathLike[str], job_id: int | str | None = None
                ) -> list[tuple[str, float, str | None, str, str | None]]:
    """State changes as ``(job id, time, old, new, reason)``, oldest first
    (see :mod:`corral.journal.eventlog`); a job's own in the order they were
    recorded, which is the order they happened.

    The journal holds them in the order the driver heard of them: a try's
    start, heard of after another job's later change, is recorded with the
    time its worker began it (as is a retried try's end). So the changes of
    the whole run are put in time order here, ties as recorded (a damaged
    time last).

    Raises:
        JournalError: a batch of changes is damaged.
    """
    if job_id is not None:
        return _read_changes(run_dir, lambda db: list(eventlog.read_events_from(
            db, str(job_id))), [])
    return _read_changes(run_dir, lambda db: sorted(eventlog.read_events_from(db),
                                                    key=_time_or_last), [])


def read_changes_after(run_dir: str | os.PathLike[str], seq: int, only: set[str] | None,
                       with_older: bool = False
                       ) -> tuple[list[tuple[str, float, str | None, str, str | None]], int]:
    """:func:`corral.journal.eventlog.changes_after` of the run's journal.

    Raises:
        JournalError: a batch of changes is damaged.
    """
    nothing: list[tuple[str, float, str | None, str, str | None]] = []
    return _read_changes(run_dir, lambda db: eventlog.changes_after(db, seq, only, with_older),
                         (nothing, seq))


def read_latest_changes(run_dir: str | os.PathLike[str], count: int, only: set[str] | None
                        ) -> tuple[list[tuple[str, float, str | None, str, str | None]],
                                   bool, int]:
    """:func:`corral.journal.eventlog.latest_changes` of the run's journal.

    Raises:
        JournalError: a batch of changes is damaged.
    """
    nothing: list[tuple[str, float, str | None, str, str | None]] = []
    return _read_changes(run_dir, lambda db: eventlog.latest_changes(db, count, only),
                         (nothing, False, 0))


_Read = TypeVar("_Read")


def _read_changes(run_dir: str | os.PathLike[str], read: Callable[[sqlite3.Connection], _Read],
                  before_any: _Read) -> _Read:
    """``read(db)`` of the run's journal; *before_any* while a live driver is
    making it.

    Raises:
        JournalError: a batch of changes is damaged.
    """
    try:
        with _reading(run_dir) as db:
            return read(db)
    except NotCreatedYet:
        return before_any
    except ValueError as error:
        raise JournalError(f"{journal_path(run_dir)}: {error}; {MOVE_AWAY}") from None


def read_job_names(run_dir: str | os.PathLike[str], ids: Collection[str]) -> dict[str, str]:
    """``{job id: name}`` of the jobs with these ids (as text), read by their key."""
    names: dict[str, str] = {}
    wanted = list(ids)
    try:
        with _reading(run_dir) as db:
            for start in range(0, len(wanted), 500):  # (SQLite's limit on bound values)
                part = wanted[start:start + 500]
                names.update(db.execute(
                    f"SELECT id, name FROM jobs WHERE id IN ({_marks(tuple(part))})", part))
    except NotCreatedYet:
        pass
    return names


def _time_or_last(event: tuple[Any, ...]) -> float:
    at = event[1]
    return at if isinstance(at, (int, float)) and math.isfinite(at) else math.inf


def read_session_backends(run_dir: str | os.PathLike[str]) -> dict[int, str | None]:
    """Which backend each session of the run used, by session id (None in
    journals from before backends were recorded: they ran on this machine)."""
    try:
        with _reading(run_dir) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
            if "backend" not in columns:
                return {row[0]: None for row in db.execute("SELECT id FROM sessions")}
            return dict(db.execute("SELECT id, backend FROM sessions"))
    except NotCreatedYet:
        return {}


#: The ``meta`` key under which a session records its backend's capacity (JSON).
CAPACITY_KEY = "capacity.{session}"
#: Why a session's program left its ``with`` block early (see StoredSession.left_early).
LEFT_EARLY_KEY = "left_early.{session}"
#: The ``meta`` key that says a job was run again by ``corral rerun``: its value
#: is the new job's id.
RERUN_KEY = "rerun.{job}"


def read_reruns(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{id of a job run again: id of the job that ran it again}``."""
    return reruns_in(read_meta(run_dir))


def reruns_in(meta: dict[str, str]) -> dict[str, str]:
    """:func:`read_reruns` from the run's *meta*, read already."""
    prefix = RERUN_KEY.format(job="")
    return {key[len(prefix):]: value for key, value in meta.items() if key.startswith(prefix)}


def latest_rerun(job_id: str, reruns: dict[str, str]) -> str:
    """The id of the last job in the line of reruns from *job_id* (itself if none)."""
    seen = {job_id}
    while job_id in reruns and reruns[job_id] not in seen:
        job_id = reruns[job_id]
        seen.add(job_id)
    return job_id


def read_sessions(run_dir: str | os.PathLike[str]) -> list[StoredSession]:
    """Every session of the run, oldest first."""
    try:
        with _reading(run_dir) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
            backend = "backend" if "backend" in columns else "NULL"
            rows = list(db.execute(f"SELECT id, kind, {backend}, started, ended FROM sessions "
                                   "ORDER BY id"))
            meta = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'capacity.%' "
                                   "OR key LIKE 'left_early.%'"))
    except NotCreatedYet:
        return []
    sessions = []
    for session, kind, backend_name, started, ended in rows:
        try:
            cores = json.loads(meta.get(CAPACITY_KEY.format(session=session), "{}")).get("cores")
        except (ValueError, AttributeError):
            cores = None  # a note corral did not write: the capacity stays unknown
        sessions.append(StoredSession(
            int(session), str(kind), backend_name,
            started if isinstance(started, (int, float)) else None,
            ended if isinstance(ended, (int, float)) else None,
            cores if isinstance(cores, int) and not isinstance(cores, bool) else None,
            meta.get(LEFT_EARLY_KEY.format(session=session))))
    return sessions


def read_meta(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    try:
        with _reading(run_dir) as db:
            return dict(db.execute("SELECT key, value FROM meta"))
    except NotCreatedYet:
        return {}
