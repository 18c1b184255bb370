"""The journal: one SQLite file (WAL mode) per run directory.

It records every job's spec, every state change (with time and reason, in one
``event_batches`` row per batch the driver sends: :mod:`corral.journal.eventlog`),
attempts, native ids and results, so that a run can be read from another process
(``corral status``), resumed after its driver died, and inspected tomorrow.

Two kinds of access:

* :class:`Journal` — the writer, owned by the one process that drives the run
  (a script's Scheduler or the daemon). It holds an exclusive lock file so a
  second driver gets a clear error instead of a corrupted queue. It is called
  from the control-loop thread only and writes in batches: the loop calls
  :meth:`Journal.flush` once per iteration, which snapshots what changed and
  pipes it to a writer process (:mod:`corral.journal.writer`), so the loop
  never waits for the disk nor shares the GIL with SQLite. (A synchronous
  commit per iteration tripled the latency of a small call; a writer thread
  still slowed 1,000 small calls by half.) The journal therefore lags the loop
  by a group-commit interval; what must not be lost in that gap — a call's
  outcome — the worker has already appended to ``outcomes/`` (see
  :mod:`corral.runtime.outcomes`), and a driver's death ends the pipe, after
  which the writer commits everything it was sent.
* :func:`read_jobs` / :func:`read_events` — plain readers for any process of
  the same user; WAL lets them read while the writer writes.

Everything is private to the user: the run directory is 0700 and the files in
it 0600: the files are created with that mode before SQLite opens them, and
SQLite gives its ``-wal``/``-shm`` files the mode of the database file.

The journal is never silently wrong. A reader must never show a damaged file
as a run with no jobs, so:

* ``journal.db`` is made whole (schema and ``meta``, with its format version)
  under another name and renamed into place: a file without them, or an empty
  one, is never a journal being born, it is damaged;
* the writer process records in ``meta`` (key :data:`WRITING_KEY`) that it may
  hold commits only in the write-ahead log, and moves that note into
  ``journal.db`` itself before it commits anything; it removes it when it
  ends. Readers open the journal read-only, so they never checkpoint nor
  remove ``journal.db-wal``. The note found with no log beside the file and no
  driver alive therefore means the log, and what it held, was lost;
* a row with a value corral cannot read raises :class:`JournalError` naming
  the file, the job and the value.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import json
import logging
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import stat
import time
import weakref
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

from corral.errors import CorralError
from corral.journal import eventlog
from corral.journal.previous import PreviousJobs
from corral.journal.unwritten import Unwritten
from corral.journal.writer import HEADER, WRITING_KEY, no_room
from corral.journal.writer_pipe import (WriterStalled, stopped_for, wait_for_answer, wait_for_end,
                                       write_to_writer)
from corral.journal.writer_lock import note_writer, take_writer_lock
from corral.status import TERMINAL, JobStatus

__all__ = ["JOURNAL_FILE", "STOPPED_FILE", "Journal", "JournalError", "StoredJob", "RunInUse",
           "private_run_dir", "private_file",
           "read_job", "read_jobs", "read_events", "read_meta", "journal_path", "owner_of",
           "read_session_backends", "read_sessions", "StoredSession", "JournaledJob",
           "last_written", "file_kind", "directory_now"]


class JournaledJob(Protocol):
    """What the journal reads of a job it records: the engine's record
    (:class:`corral.core.record.JobRecord`) fits it. A protocol, so that the
    journal, which the core writes through, imports nothing of the core."""

    id: Any
    deps: Any  # its dependencies, each with an ``id``
    status: JobStatus
    reason: str | None
    exit_code: int | None
    attempts: int
    native_id: str | None
    started: float | None
    ended: float | None
    jobdir: str | None
    result_blob: bytes | None
    error_blob: bytes | None
    live_output: tuple[str, str] | None

    @property
    def name(self) -> str: ...


JOURNAL_FILE = "journal.db"
LOCK_FILE = "owner.lock"
#: Where a session whose journal gave up says so (:meth:`Journal._give_up`): the
#: journal itself takes nothing more, and ``corral status`` and ``wait`` read it
#: there. The next session removes it.
STOPPED_FILE = "journal-stopped"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, pid INTEGER, host TEXT, kind TEXT, argv TEXT,
    started REAL, ended REAL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, int_id INTEGER, seq INTEGER, key TEXT, name TEXT, kind TEXT,
    command TEXT, spec TEXT, deps TEXT, status TEXT, reason TEXT, exit_code INTEGER,
    attempts INTEGER, native_id TEXT, started REAL, ended REAL, jobdir TEXT,
    result BLOB, error BLOB, session INTEGER, live TEXT, slot TEXT);
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (key);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, job_id TEXT, time REAL, old TEXT, new TEXT, reason TEXT);
""" + eventlog.CREATE_TABLE + ";\n"

#: Changes are sent to the writer at most this often (and the loop wakes up to
#: send them): one pipe write and one pickle per interval instead of one per
#: loop iteration. With the writer's group commit, this bounds how far the
#: journal lags the loop; a call's outcome is safe meanwhile in the outcome log.
SEND_INTERVAL_S = 0.005

#: Each status as the journal writes it (an enum's ``.value`` is a property
#: call, paid several times for every job).
_TEXT = {status: status.value for status in JobStatus}
_LARGE_BATCH = 5000
#: How many writers that died a session replaces within a span: one that dies
#: at once each time (see Journal._take_over) is not started for ever, and a
#: daemon whose writer is killed now and then over days keeps its journal.
_TAKEOVERS = 3
_TAKEOVER_SPAN_S = 60.0
#: How long a writer sent ``stop`` may take to commit the rest and end.
_WRITER_END_PATIENCE_S = 60.0
#: How long a writer may be stopped (SIGSTOP, a debugger) before it is killed
#: and replaced (see corral.journal.writer_pipe): well within the minute a
#: ``corral`` command waits for the driver's answer.
_WRITER_STALL_PATIENCE_S = 20.0

_WRITER_BOOT = ("import sys, json; sys.path[:] = json.loads(sys.argv.pop(2)); "
                "from corral.journal.writer import main; main()")


class RunInUse(CorralError):
    """Another live process drives this run directory."""


class JournalError(CorralError):
    """The journal cannot be read, or cannot be trusted: not a corral journal,
    empty, missing what its write-ahead log held, a value corral cannot read,
    or a write the writer process could not make. The message names the file
    and what is wrong."""


#: Why an unfinished job of a dead driver ends CANCELLED (README: "Unfinished work").
ORPHANED = "its driver ended before it did (the next run of the script runs it again)"
#: Why a call whose outcome only the outcome log knew ends COMPLETED or FAILED.
FOUND_IN_OUTCOME_LOG = "found in the outcome log after its driver ended"
_CALL_KINDS = ("call", "function")  # the jobs whose workers log their outcomes


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One job as the journal last recorded it (plain values, no live process)."""

    id: int | str
    key: str
    name: str
    kind: str
    command: str
    spec: dict[str, Any]
    deps: tuple[int | str, ...]
    status: JobStatus
    reason: str | None
    exit_code: int | None
    attempts: int
    native_id: str | None
    started: float | None
    ended: float | None
    jobdir: str | None
    result: bytes | None
    error: bytes | None
    session: int | None
    live: tuple[str, str] | None = None  # stdout, stderr files while it runs
    #: Its key with the code left out (see corral.core.identity.job_digests).
    slot: str | None = None
    #: The journal file it was read from, for error messages.
    journal: str | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.COMPLETED

    def result_value(self) -> Any:
        """The job's return value (None for commands and unfinished jobs).

        Raises:
            Exception: the job's own exception, if it raised one (with its
                remote traceback as ``__cause__``); JobFailed if it ended
                FAILED/TIMED_OUT/CANCELLED otherwise.
            JournalError: the stored result (or error) cannot be loaded: a
                damaged value is never answered as None.
        """
        from corral.errors import JobFailed, RemoteTraceback
        from corral.runtime.payload import loads_error

        if self.error is not None:
            error, traceback_text, _ = self._load("error", loads_error, self.error)
            if error is not None:
                error.__cause__ = RemoteTraceback(traceback_text)
                raise error
        if self.status in (JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED):
            raise JobFailed(f"job {self.id} {self.name!r} {self.status.name}: {self.reason}",
                            job_id=self.id, status=self.status, reason=self.reason,
                            exit_code=self.exit_code)
        return self.load_result()

    def load_result(self) -> Any:
        """The stored return value, whatever the status (None if none is stored).

        Raises:
            JournalError: it cannot be loaded.
        """
        return None if self.result is None else self._load("result", pickle.loads, self.result)

    def _load(self, what: str, load: Callable[[bytes], Any], blob: bytes) -> Any:
        try:
            return load(blob)
        except Exception as problem:
            where = f" in {self.journal}" if self.journal else ""
            raise JournalError(
                f"job {self.id} {self.name!r}: its stored {what}{where} cannot be loaded "
                f"({type(problem).__name__}: {problem}); the journal is damaged, or the value "
                "needs code this process cannot import") from None

    def traceback_text(self) -> str | None:
        """The remote traceback of the exception the job raised, as text; None if it
        raised none (or its record was read without results, or cannot be read)."""
        from corral.runtime.payload import error_traceback

        if self.error is None:
            return None
        try:
            return error_traceback(self.error)
        except Exception:
            return None

    @property
    def directory(self) -> str | None:
        """The job's directory as its run holds it now (None: it has none).

        :attr:`jobdir` is where it was made: in a run that was moved or copied
        since, that is the run's old place, where another run may live now
        (``corral clean`` of a copy deleted the original's files, and ``logs``
        showed the original's output). So the job's directory is the one of
        the same name in this run when the one recorded is in another run's
        directory, or in one that is gone, whether it exists or not. One made
        elsewhere on purpose (``Scheduler(workdir=...)``) stays where it is.
        """
        if not self.jobdir or not self.journal:
            return self.jobdir
        return directory_now(self.jobdir, os.path.dirname(self.journal))

    def output_path(self, stream: str = "stdout") -> str | None:
        """Where *stream* is now: a spool file while the job runs, else its job file."""
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream={stream!r} must be 'stdout' or 'stderr'")
        directory = self.directory
        if self.live is not None and self.status is JobStatus.RUNNING:
            live = self.live[0] if stream == "stdout" else self.live[1]
            if os.path.exists(live) or not directory:  # (else: moved, its worker dead)
                return live
        return os.path.join(directory, stream) if directory else None

    def output_written_at(self) -> float | None:
        """When the job last wrote to its stdout or stderr file (None: no file)."""
        times = []
        for stream in ("stdout", "stderr"):
            path = self.output_path(stream)
            if path:
                try:
                    times.append(os.stat(path).st_mtime)
                except OSError:
                    pass
        return max(times, default=None)

    def output(self, stream: str = "stdout") -> str:
        """What the job wrote to *stream* (``"stdout"`` or ``"stderr"``), "" if nothing."""
        from corral.runtime.spool import read_output

        path = self.output_path(stream)
        return "" if path is None else read_output(path)


def directory_now(jobdir: str, run_dir: str) -> str:
    """Where the job directory recorded as *jobdir* is in the run at *run_dir*
    now (see :attr:`StoredJob.directory`): in this run, at the same place
    under it as it was made under the run's old place (its ``workdir=`` may
    be a folder inside the run), unless it was made elsewhere on purpose (in
    a directory of no run)."""
    place = os.path.dirname(jobdir)
    while True:
        try:
            if os.path.samefile(place, run_dir):
                return jobdir
        except OSError:  # gone: the run was moved away from it
            return _where_it_came(jobdir, run_dir)
        if os.path.lexists(os.path.join(place, JOURNAL_FILE)):  # another run's, now
            return os.path.join(run_dir, os.path.relpath(jobdir, place))
        parent = os.path.dirname(place)
        if parent == place:  # (the root: made in no run's directory)
            return jobdir
        place = parent


def _where_it_came(jobdir: str, run_dir: str) -> str:
    """The job directory of a run moved away from the place *jobdir* was made
    in, which is gone: the deepest of its places under *run_dir* that exists
    (``files/1`` of a run made with ``workdir="run/files"``), else the one of
    its name."""
    place = os.path.dirname(jobdir)
    while os.path.dirname(place) != place:
        candidate = os.path.join(run_dir, os.path.relpath(jobdir, place))
        if os.path.isdir(candidate):
            return candidate
        place = os.path.dirname(place)
    return os.path.join(run_dir, os.path.basename(jobdir))


def last_written(path: Path) -> float | None:
    """When journal file *path* was last written: the newest modification time of
    it and of its write-ahead log. An empty log is left out: a reader makes one
    when it opens a journal whose writer has gone, and that is no write."""
    times = []
    for each in (path, path.with_name(path.name + "-wal")):
        try:
            info = each.stat()
        except OSError:
            continue
        if info.st_size > 0:
            times.append(info.st_mtime)
    return max(times, default=None)


def journal_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / JOURNAL_FILE


def private_run_dir(path: str | os.PathLike[str]) -> Path:
    """Create (or check) a run directory only its user may enter.

    Raises:
        ValueError: the path exists and is not a directory, or belongs to
            another user (corral never writes into someone else's run).
    """
    run_dir = Path(path).expanduser().resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run directory {os.fspath(path)!r} exists and is not a directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:  # under /proc, a file, a read-only mount, another user's directory
        raise ValueError(f"run directory {os.fspath(path)!r} cannot be made: "
                         f"{error.strerror or error}") from None
    info = run_dir.stat()
    if info.st_uid != os.geteuid():
        raise ValueError(f"run directory {run_dir} belongs to another user (uid {info.st_uid})")
    if info.st_mode & 0o077:
        os.chmod(run_dir, 0o700)
    return run_dir


def private_file(path: str | os.PathLike[str]) -> None:
    """Create *path* (if missing) readable and writable by its user only.

    An explicit mode rather than a narrowed umask: the umask is process-wide,
    and other threads of the user's program create files too.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.close(descriptor)


_SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = frozenset({"meta", "sessions", "jobs", "events"})
_MOVE_AWAY = "move it away to start the run afresh"


def _open_for_writing(path: Path) -> sqlite3.Connection:
    """The driver's own connection (the writer process opens its own)."""
    try:
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    except sqlite3.Error as error:
        raise _damaged(path, error) from None
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints
        connection.execute("PRAGMA busy_timeout=30000")
    except sqlite3.DatabaseError as error:
        connection.close()
        raise _damaged(path, error) from None
    return connection


def _open_for_reading(path: Path) -> sqlite3.Connection:
    """A read-only connection: it never checkpoints nor removes the
    write-ahead log, whose presence is evidence (see the module docstring).

    Raises:
        PermissionError: the file may not be read (the message says why).
        JournalError: the file is empty or no SQLite database.
    """
    _check_header(path)
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30,
                                     isolation_level=None)
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1")  # (where SQLite opens for real)
    except sqlite3.OperationalError as error:
        if os.access(path.parent, os.W_OK):
            raise _damaged(path, error) from None
        return _open_where_nothing_may_be_written(path)
    except sqlite3.Error as error:
        raise _damaged(path, error) from None
    return connection


def _open_where_nothing_may_be_written(path: Path) -> sqlite3.Connection:
    """A connection to a journal in a directory that cannot be written (its
    mode, a read-only mount, an archive): SQLite reads a journal in WAL mode
    only where it may make its shared-memory file beside it, unless told the
    file never changes. Nothing can change it there, but what a killed driver
    left only in the write-ahead log would be missed: that is refused.

    Raises:
        JournalError: the write-ahead log holds changes, or the file cannot be read.
    """
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        raise JournalError(f"cannot read the journal {path}: its directory cannot be written, "
                           f"and its latest changes are only in {wal.name}, which SQLite reads "
                           "only where it may write beside it; copy the run directory "
                           "somewhere writable to read it")
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1",
                                     uri=True, isolation_level=None)
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.Error as error:
        raise _damaged(path, error) from None
    return connection


def _check_header(path: Path) -> None:
    """Refuse, before SQLite sees it, a file that cannot be a journal: SQLite
    takes an empty file for an empty database, and says only "unable to open
    database file" for one it may not read.

    Raises:
        PermissionError: the file may not be read (the message says why).
        JournalError: the file is empty or no SQLite database.
    """
    try:
        # Without blocking, and refused unless a plain file: opening a FIFO there
        # waited for a writer that never came (attack review: corral status hung).
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        raise PermissionError(_permission_message(path)) from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise _damaged(path, "it is no regular file")
        start = os.read(descriptor, len(_SQLITE_MAGIC))
    finally:
        os.close(descriptor)
    if not start:
        raise JournalError(f"{path} is empty (0 bytes): it was truncated, or is no corral "
                           f"journal; {_MOVE_AWAY}")
    if start != _SQLITE_MAGIC:
        raise _damaged(path, "file is not a database")


def _permission_message(path: Path) -> str:
    run_dir = path.parent
    try:
        owner = run_dir.stat().st_uid
    except OSError:
        owner = None
    if owner is not None and owner != os.geteuid():
        return f"permission denied: the run at {run_dir} belongs to another user"
    return f"permission denied: {path} may not be read"


#: The files SQLite keeps beside a journal, as a message names them.
_BESIDE = "journal.db-wal and journal.db-shm files"


def _damaged(path: Path, error: object) -> JournalError:
    if isinstance(error, sqlite3.OperationalError) and "readonly" in str(error):
        # Whole, but not writable (its mode, chattr +i, a read-only mount): moving
        # it away, as for a damaged one, would throw a good history away.
        return JournalError(f"cannot write the journal {path}: it is read-only ({error}); "
                            f"make it, its {_BESIDE} and its directory writable (see ls -l, "
                            "lsattr, mount) to go on with this run; corral status and logs "
                            "read it as it is")
    if no_room(error) and _little_room(path.parent):
        # SQLite could not make or grow a file it needs for want of room: the
        # journal is whole (moving it away, as for a damaged one, would lose it).
        return JournalError(f"cannot use the journal {path} ({error}): the disk it is on is "
                            f"full (see df {path.parent}); it is not damaged: free some space "
                            "and run this again")
    if isinstance(error, sqlite3.OperationalError) and "unable to open" in str(error):
        # SQLite could not open a file it needs (its directory is not writable,
        # a -wal or -shm file is not): no sign of damage, nothing to move away.
        return JournalError(f"cannot open the journal {path} ({error}): its directory or its "
                            f"{_BESIDE} may not be writable (see ls -l, lsattr, mount); corral "
                            "status and logs read it as it is")
    return JournalError(f"{path} is not a corral journal, or it is damaged ({error}); "
                        f"{_MOVE_AWAY}")


def _little_room(directory: Path) -> bool:
    """Whether the disk of *directory* is (all but) full: SQLite's I/O error on
    a full disk is one (it cannot make its -shm file), as well as its FULL."""
    try:
        return shutil.disk_usage(directory).free < 1 << 20
    except OSError:
        return False


def _log_missing(path: Path) -> bool:
    """Whether journal.db has no write-ahead log beside it, or one without a
    frame (empty, or only its header: a torn one looked whole)."""
    try:
        return os.stat(f"{path}-wal").st_size <= _WAL_HEADER_BYTES
    except FileNotFoundError:
        return True


#: A write-ahead log's header, before its first frame (SQLite's file format, "WAL File Format").
_WAL_HEADER_BYTES = 32


def _checked_meta(db: sqlite3.Connection, path: Path,
                  being_created: Callable[[], bool] = lambda: False) -> dict[str, str]:
    """The journal's ``meta`` table, once it is known to be a whole journal.

    Raises:
        _NotCreatedYet: it has no tables and *being_created* says a live
            driver is making it (a journal made by a corral from before
            journals were made whole under another name).
        JournalError: tables or the format version are missing, or the format
            is another corral's.
    """
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables >= _TABLES:
        if not tables and being_created():
            raise _NotCreatedYet
        missing = ", ".join(sorted(_TABLES - tables))
        raise JournalError(f"{path} is not a whole corral journal: it has no {missing} "
                           f"table{'s' if len(_TABLES - tables) > 1 else ''}; {_MOVE_AWAY}")
    meta = dict(db.execute("SELECT key, value FROM meta"))
    events = meta.get(eventlog.META_KEY)
    if events is not None and events != eventlog.META_VALUE:
        raise JournalError(f"{path} keeps its state changes as {events!r}, which this corral "
                           f"does not read (a newer corral's journal, or a damaged one)")
    if events == eventlog.META_VALUE and "event_batches" not in tables:
        raise JournalError(f"{path} is not a whole corral journal: it keeps its state changes "
                           f"in batches, and has no event_batches table; {_MOVE_AWAY}")
    if "version" not in meta:
        raise JournalError(f"{path} is not a whole corral journal: its meta table has no "
                           f"format version; {_MOVE_AWAY}")
    if meta["version"] != str(SCHEMA_VERSION):
        raise JournalError(f"journal {path} has format {meta['version']}; this corral reads "
                           f"format {SCHEMA_VERSION}")
    return meta


def _log_lost(path: Path, session: str) -> JournalError:
    """The error for a journal whose write-ahead log was lost while session
    *session*'s writer may have held commits only there."""
    return JournalError(
        f"{path} is incomplete: its write-ahead log {path.name}-wal is missing or empty, but "
        f"session {session} never closed the journal, so what it recorded there is lost; "
        f"{_MOVE_AWAY}")


def _create_journal(path: Path, kind: str) -> None:
    """Make a whole journal (schema and meta) under another name and rename it
    into place, so that no reader ever sees a journal.db without them."""
    partial = path.with_name(f"{path.name}.partial")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    private_file(partial)
    db = _open_for_writing(partial)
    try:
        db.executescript(_SCHEMA)
        db.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("version", str(SCHEMA_VERSION)), ("created", repr(time.time())),
            ("paused", "0"), ("origin", kind), (eventlog.META_KEY, eventlog.META_VALUE)])
    finally:
        db.close()  # the last connection: its log is moved into the file and removed
    os.replace(partial, path)


def owner_of(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who drives the run now: ``{"pid", "kind", "host", "socket"}``, or None.

    Read from the lock file, and trusted only while its lock is held.
    """
    _refuse_unless_plain(Path(run_dir) / LOCK_FILE)
    try:  # (read only: a shared lock needs no more, and a run on a read-only mount is read)
        with open(Path(run_dir) / LOCK_FILE) as handle:
            return _owner_while_locked(handle)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None  # (no run there: none under a file, none where no file can be)
        raise


def _refuse_unless_plain(path: Path) -> None:
    """Refuse a run file that is there but no regular file: opening a FIFO put
    in place of the lock file waited for good (attack review: corral status,
    wait and a new Scheduler hung).

    Raises:
        JournalError: naming the file and what it is.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # (missing, or not reachable: the open that follows says which)
    if not stat.S_ISREG(mode):
        raise JournalError(f"{path} is a {file_kind(mode)}, not the run's lock file; move it "
                           "away, then the run can be read and driven again")


def file_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words for a message ("directory",
    "FIFO"...): said where something else sits in place of a run's own file."""
    for test, kind in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISLNK, "symbolic link"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISREG, "regular file")):
        if test(mode):
            return kind
    return "special file"


def _owner_while_locked(handle: IO[str]) -> dict[str, Any] | None:
    """What the open lock file says of its owner, if a live process holds its lock."""
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return json.loads(handle.read() or "{}") or {"pid": None, "kind": "unknown"}
        except ValueError:
            return {"pid": None, "kind": "unknown"}
    fcntl.flock(handle, fcntl.LOCK_UN)
    return None


_OPEN_JOURNALS: weakref.WeakSet[Journal] = weakref.WeakSet()


def _forget_locks_in_child() -> None:
    """A child forked from the driver (a fork-based pool) must not keep the
    run's lock, nor the writer's pipe, alive after the driver is gone; closing
    its copies of the descriptors leaves the driver's in place."""
    for journal in list(_OPEN_JOURNALS):
        handle, journal._lock = journal._lock, None
        for descriptor in (handle, getattr(journal, "_pipe", None)):
            if descriptor is not None:  # (a closed one's fileno() raises ValueError)
                with contextlib.suppress(OSError, ValueError):
                    os.close(descriptor.fileno())
        journal.closed = True


os.register_at_fork(after_in_child=_forget_locks_in_child)


class Journal:
    """The writing side of a run's journal. See the module docstring.

    Raises:
        RunInUse: another live process drives this run directory.
        JournalError: the journal is damaged, not whole, of another format,
            or lost what its write-ahead log held.
    """

    def __init__(self, run_dir: str | os.PathLike[str], kind: str = "script",
                 backend: str | None = None) -> None:
        self._refuse_what_is_no_journal(Path(run_dir).expanduser().resolve() / JOURNAL_FILE)
        self.run_dir = private_run_dir(run_dir)
        self._lock = self._take_lock(kind)
        path = self.run_dir / JOURNAL_FILE
        db: sqlite3.Connection | None = None
        writer_lock: IO[str] | None = None
        try:
            # A killed driver's writer may still be writing: its rows come first.
            try:
                writer_lock = take_writer_lock(self.run_dir)
            except OSError as error:  # (a broken lock file, or a writer that never let go)
                raise JournalError(error.strerror or str(error)) from None
            #: Whether the last session's journal stopped and that session then
            #: closed: every job it left unfinished here ended, unrecorded.
            self._ended_unrecorded = _closed_after_its_journal_stopped(self.run_dir)
            stopped_before = _journal_stopped(self.run_dir)
            with contextlib.suppress(OSError):  # (an earlier session's word: this one writes)
                (self.run_dir / STOPPED_FILE).unlink(missing_ok=True)
            if not path.exists():
                _create_journal(path, kind)
            #: The last sign of an earlier driver's life: when it last wrote here.
            self._last_written = last_written(path)
            _check_header(path)
            log_was_missing = _log_missing(path)
            db = _open_for_writing(path)
            try:
                meta = _checked_meta(db, path)
                if log_was_missing and meta.get(WRITING_KEY) and not stopped_before:
                    raise _log_lost(path, meta[WRITING_KEY])
                self._open_session(db, kind, backend, meta)
            except sqlite3.DatabaseError as error:
                raise _damaged(path, error) from None
        except BaseException:
            if db is not None:
                db.close()
            if writer_lock is not None:
                writer_lock.close()
            self._release_lock()
            raise
        self._seq = 1 + max((row[0] for row in db.execute("SELECT max(seq) FROM jobs")
                             if row[0] is not None), default=0)
        self._events = eventlog.EventColumns()
        self._new_jobs: list[tuple] = []
        self._dirty: dict[int, JournaledJob] = {}
        self.closed = False
        self._broken = False
        self._failure: str | None = None
        #: What the journal says once it gave up (:meth:`_give_up`): when, and why.
        self._stopped_here: str | None = None
        self._last_send = 0.0
        db.close()  # from here on, the writer process owns the writing
        self._unwritten = Unwritten(path, self.session)
        self._takeovers: list[float] = []  # when writers were replaced (monotonic)
        self._writer_stopped_since: float | None = None  # (see _look_at_writer)
        self._next_look = 0.0
        try:
            self._writer, self._pipe, self._answers = self._start_writer(writer_lock)
        finally:
            writer_lock.close()  # the writer holds it now (or none was started)
        _OPEN_JOURNALS.add(self)

    @staticmethod
    def _refuse_what_is_no_journal(path: Path) -> None:
        """Refuse a ``journal.db`` that is no SQLite file before the directory is
        made private and locked (a directory of the user's own, given by mistake).
        One that cannot be looked at is left to :func:`private_run_dir` to name."""
        try:
            exists = path.is_file()
        except OSError:  # (another user's directory, say)
            return
        if exists:
            _check_header(path)

    def _open_session(self, db: sqlite3.Connection, kind: str, backend: str | None,
                      meta: dict[str, str]) -> None:
        """Record this session and settle what earlier ones left unfinished, through
        *db*: the one connection the driver opens, before the writer takes over."""
        if kind != "daemon":  # a script starts unpaused, whatever a killed one left
            db.execute("INSERT OR REPLACE INTO meta VALUES ('paused', '0')")
        #: Whether this (daemon's) session starts paused: the run was left paused.
        self.left_paused = kind == "daemon" and meta.get("paused") == "1"
        #: Every earlier session's kind ("script", "daemon"), by session id.
        self.session_kinds: dict[int, str] = dict(db.execute("SELECT id, kind FROM sessions"))
        if "backend" not in {row[1] for row in db.execute("PRAGMA table_info(sessions)")}:
            db.execute("ALTER TABLE sessions ADD COLUMN backend TEXT")
        if "slot" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}:
            db.execute("ALTER TABLE jobs ADD COLUMN slot TEXT")  # (NULL: from before slots)
        db.execute("CREATE INDEX IF NOT EXISTS jobs_by_slot ON jobs (slot)")
        if meta.get(eventlog.META_KEY) != eventlog.META_VALUE:  # a journal from before batches:
            db.execute(eventlog.CREATE_TABLE)  # its event rows stay, and are read first
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                       (eventlog.META_KEY, eventlog.META_VALUE))
        #: Every earlier session's backend by session id (None: not recorded, as
        #: in journals from before backends were).
        self.session_backends: dict[int, str | None] = dict(
            db.execute("SELECT id, backend FROM sessions"))
        self.session = self._start_session(db, kind, backend)
        path = self.run_dir / JOURNAL_FILE
        _check_rows(db, path)  # (the finished jobs are read whole only when matched)
        #: The jobs of earlier sessions, by key, as they were left (a call
        #: settled from the outcome log as it ended).
        self.previous: PreviousJobs[StoredJob] = PreviousJobs(
            db, path, _rows_to_jobs, lambda error: _damaged(path, error))
        #: When each unfinished job's latest attempt was queued, as far as the
        #: journal knows: a logged outcome that ended later is that attempt's.
        #: (Not the job's last event: the driver stamps RUNNING after it has
        #: handed the call over, and a fast call can end before that stamp.)
        try:
            self.last_change: dict[str, float] = eventlog.last_queued(
                db, {str(job.id) for job in self.previous.unfinished()})
        except ValueError as error:
            raise JournalError(f"{self.run_dir / JOURNAL_FILE}: {error}; {_MOVE_AWAY}") from None
        self._close_orphans(db, kind)

    # -- ownership -----------------------------------------------------------------------

    def _take_lock(self, kind: str):
        _refuse_unless_plain(self.run_dir / LOCK_FILE)
        private_file(self.run_dir / LOCK_FILE)
        # Not in a with-block: the open file is the lock, held until the session ends.
        handle = open(self.run_dir / LOCK_FILE, "a+")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                owner = json.loads(handle.read() or "{}")
            except ValueError:
                owner = {}
            handle.close()
            raise RunInUse(
                f"run directory {self.run_dir} is driven by another process "
                f"({owner.get('kind', 'a corral scheduler')}, pid {owner.get('pid', '?')}); "
                "control it with the corral command, or use another run directory") from None
        handle.seek(0)
        handle.truncate()
        try:
            handle.write(json.dumps({"pid": os.getpid(), "kind": kind,
                                     "host": os.uname().nodename, "socket": "control.sock"}))
            handle.flush()
        except OSError as error:  # (a full disk: a one-line word, not a traceback)
            with contextlib.suppress(OSError):  # (closing flushes again, and fails again)
                handle.close()
            raise JournalError(f"cannot start a session of the run at {self.run_dir}: "
                               f"{error.strerror or error} (writing {LOCK_FILE})") from None
        return handle

    def _release_lock(self) -> None:
        handle, self._lock = self._lock, None
        if handle is not None:
            handle.seek(0)
            handle.truncate()
            handle.close()

    def _start_session(self, db: sqlite3.Connection, kind: str, backend: str | None) -> int:
        cursor = db.execute(
            "INSERT INTO sessions (pid, host, kind, argv, started, backend) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (os.getpid(), os.uname().nodename, kind, json.dumps(sys.argv), time.time(), backend))
        session = cursor.lastrowid
        assert session is not None, "sqlite3 sets lastrowid after every INSERT"
        return session

    def outlives_driver(self, job: StoredJob) -> bool:
        """Whether an unfinished job lives on without its driver: one handed to
        a cluster scheduler (it is found again by its native id), not a local process."""
        from corral.backends import outlives_driver  # (the command line rarely asks)

        return (job.native_id is not None
                and outlives_driver(self.session_backends.get(job.session or 0)))

    def _orphaned_reason(self, job: StoredJob) -> str:
        """Why an unfinished job of an earlier session is closed. One handed to a
        backend not installed here may still run there: said in its reason and
        logged, since the next run of the script runs it again here."""
        from corral.backends import backend_names

        backend = self.session_backends.get(job.session or 0)
        if backend is None or job.native_id is None or backend in backend_names():
            return ORPHANED
        logging.getLogger("corral").warning(
            "job %s %r was handed to the %r backend, which is not installed here; it may "
            "still run there (native id %s) and this run will run it again", job.id, job.name,
            backend, job.native_id)
        return (f"its driver ended before it did; it was handed to the {backend!r} backend, "
                f"which is not installed here, and may still run there as {job.native_id} "
                "(the next run of the script runs it again)")

    def _close_orphans(self, db: sqlite3.Connection, kind: str) -> None:
        """End the jobs that earlier sessions left unfinished: their drivers are
        gone (this process holds the run's lock), so nothing runs them any more.

        A call whose worker logged its outcome after the journal last heard of
        it (:mod:`corral.runtime.outcomes`) ended: it becomes COMPLETED with its
        result (or FAILED with its error). The others become CANCELLED. Both in
        one transaction: were this session killed next, the one after must not
        find a finished call CANCELLED and run it again. A job run again in
        this session gets its row back; the others stop looking RUNNING to
        ``corral status`` and ``corral wait``. A daemon keeps its
        predecessors' submissions as they are: it runs them again at once, and
        a ``corral wait`` on them should not see them end meanwhile."""
        orphans = [job for job in self.previous.unfinished()
                   if job.status not in TERMINAL
                   and not self.outlives_driver(job)
                   and not (kind == "daemon" and job.kind == "shell" and job.session is not None
                            and self.session_kinds.get(job.session) == "daemon"
                            and not self._ended_unrecorded)]
        if not orphans:
            return
        now = time.time()
        outcomes = {}
        if any(job.kind in _CALL_KINDS for job in orphans):
            from corral.runtime.outcomes import read_outcomes

            outcomes = read_outcomes(self.run_dir)
        ended = [self._settled(job, outcomes) or replace(
            job, status=JobStatus.CANCELLED,
            reason=_END_UNRECORDED if self._ended_unrecorded else self._orphaned_reason(job),
            ended=job.ended or self._died_at(job, now)) for job in orphans]
        db.execute("BEGIN")
        db.executemany(
            "UPDATE jobs SET status=?, reason=?, exit_code=?, ended=?, result=?, error=?, "
            "live=NULL WHERE id=?",
            [(job.status.value, job.reason, job.exit_code, job.ended, job.result, job.error,
              str(job.id)) for job in ended])
        db.execute(eventlog.INSERT, eventlog.pack(
            (str(job.id), job.ended if job.ended is not None else now, old.status, job.status,
             job.reason) for old, job in zip(orphans, ended, strict=True)))
        db.execute("COMMIT")
        for job in ended:
            self.last_change[str(job.id)] = now
            # The Resumer must see the others as they are; a job whose end went
            # unrecorded ended (a daemon must not take it for one to run again).
            if job.status is not JobStatus.CANCELLED or self._ended_unrecorded:
                self.previous.replace(job)

    def _died_at(self, job: StoredJob, now: float) -> float:
        """When an orphan stopped: its processes died with its driver, whose last
        sign of life is its journal's last write (or the job's own output's, when
        the writer died too). The event that records the end is stamped then too,
        as a backend stamps an end it learns late."""
        last = max(self._last_written or 0.0, job.output_written_at() or 0.0)
        known = max(job.started or 0.0, self.last_change.get(str(job.id), 0.0))
        if not last or last > now or last < known:  # a clock that cannot be right
            return now
        return last

    def _settled(self, job: StoredJob, outcomes: dict[str, tuple[bool, bytes, float]]
                 ) -> StoredJob | None:
        """*job* as its logged outcome ended it, or None if the log holds none
        newer than the journal's last word on it (an older one is an earlier
        attempt's: a retry, or a re-run that on_finish asked for)."""
        found = outcomes.get(str(job.id)) if job.kind in _CALL_KINDS else None
        if found is None or found[2] <= self.last_change.get(str(job.id), 0.0):
            return None
        ok, blob, ended = found
        # It ran at least once, whether or not the journal heard of its start.
        attempts = max(job.attempts, 1)
        if ok:
            return replace(job, status=JobStatus.COMPLETED, exit_code=0, ended=ended, result=blob,
                           error=None, attempts=attempts,
                           reason=f"completed; {FOUND_IN_OUTCOME_LOG}")
        return replace(job, status=JobStatus.FAILED, exit_code=None, ended=ended, result=None,
                       error=blob, attempts=attempts,
                       reason=f"raised {_error_summary(blob)}; {FOUND_IN_OUTCOME_LOG}")

    def record_capacity(self, cores: int | None, memory_mb: int | None,
                        gpus: int | None) -> None:
        """Note what this session's backend can run at once, for the report's
        utilisation (busy core-seconds against those available)."""
        self.set_meta(CAPACITY_KEY.format(session=self.session),
                      json.dumps({"cores": cores, "memory_mb": memory_mb, "gpus": gpus}))

    def set_meta(self, key: str, value: str) -> None:
        """Record a run-wide setting (e.g. ``paused``), after what is already queued."""
        self.flush(force=True)
        self._send(("meta", key, value))

    # -- recording (control-loop thread) ------------------------------------------------------

    def added(self, job: JournaledJob, key: str, slot: str, kind: str, command: str,
              spec: str) -> None:
        """Record a new job (*spec* is JSON); written at the next :meth:`flush`."""
        deps = [dep.id for dep in job.deps]  # JSON-encoded by the writer process
        self._new_jobs.append((
            str(job.id), job.id if isinstance(job.id, int) else None, self._seq, key, job.name,
            kind, command, spec, deps, self.session, slot))
        self._seq += 1
        self._dirty[id(job)] = job

    def touched(self, job: JournaledJob) -> None:
        """Record a change of *job*'s row without a state change (why a QUEUED
        job waits); written at the next :meth:`flush`, no event row."""
        self._dirty[id(job)] = job

    def moved(self, job: JournaledJob, old: JobStatus | None, new: JobStatus,
              reason: str | None) -> None:
        """Record a state change; written at the next :meth:`flush`."""
        self._events.add(str(job.id), time.time(), old, new, reason)
        self._dirty[id(job)] = job

    def due_in(self) -> float | None:
        """Seconds until what was recorded must be sent, or the writer, seen
        stopped, looked at again; None if nothing waits."""
        now = time.monotonic()
        # Looked at while it may hold changes not committed yet (and until a
        # stopped one was replaced): a stopped writer is caught, idle or not.
        watched = not self._broken and (self._writer_stopped_since is not None
                                        or now - self._last_send < _WRITER_STALL_PATIENCE_S + 5.0)
        look = max(0.0, self._next_look - now) if watched else None
        if not self._dirty:  # (every recorded change marks its job dirty)
            return look
        send = max(0.0, self._last_send + SEND_INTERVAL_S - now)
        return send if look is None else min(send, look)

    def _look_at_writer(self) -> None:
        """Replace a writer that died, or that has been stopped (SIGSTOP, a
        debugger) for :data:`_WRITER_STALL_PATIENCE_S`, also while nothing
        waits on it: the changes sent to it would be lost with a driver killed
        meanwhile (one that died was found only by the next change sent).
        Looked at once a second at most (a read of its state in /proc)."""
        now = time.monotonic()
        if now < self._next_look or self._broken:
            return
        self._next_look = now + 1.0
        if self._writer.poll() is not None:  # died with changes sent that it may not have written
            if not self._take_over("it was found dead"):
                self._give_up(BrokenPipeError("its writer process died"))
            return
        since = self._writer_stopped_since = stopped_for(self._writer.pid,
                                                         self._writer_stopped_since)
        if since is None or now - since < _WRITER_STALL_PATIENCE_S:
            return
        self._writer_stopped_since = None
        self._writer.kill()
        if not self._take_over(f"it was stopped for {now - since:.0f} s"):
            self._give_up(OSError(f"its writer was stopped for {now - since:.0f} s and could "
                                  "not be replaced"))

    def flush(self, wait: bool = False, force: bool = False) -> None:
        """Send what was recorded to the writer process, as one batch: at once
        with *wait* or *force*, otherwise once :data:`SEND_INTERVAL_S` has
        passed since the last batch (the control loop calls this every
        iteration, and wakes up for :meth:`due_in`). With *wait*, return once
        everything is committed.

        Every job whose row changed gets its row in the batch, whatever its
        state: a passing one (SUBMITTED with a cluster's job id) is what the
        ``corral`` command acts on once the driver is gone. (Holding passing
        states back one batch saved the writer about 5 µs a job, and lost them
        when the driver was killed in between: see benchmarks/RESULTS.md.)

        Raises:
            JournalError: (with *wait*) the writer could not write something
                (every such row is named; the rest of its batch is written).
        """
        self._look_at_writer()
        if self._dirty and (
                wait or force or len(self._events) >= _LARGE_BATCH
                or time.monotonic() - self._last_send >= SEND_INTERVAL_S):
            self._last_send = time.monotonic()
            rows = [(_TEXT[job.status], job.reason, job.exit_code, job.attempts, job.native_id,
                     job.started, job.ended, job.jobdir,
                     job.result_blob, job.error_blob,
                     None if job.live_output is None else "\n".join(job.live_output), str(job.id))
                    for job in self._dirty.values()]
            events = self._events.message() if self._events.jobs else None
            self._send(("jobs", self._new_jobs, events, rows))
            self._new_jobs, self._dirty = [], {}
            self._events = eventlog.EventColumns()
        if wait:
            answer = b""
            if self._stopped_here is None:  # (else there is no writer to ask)
                self._send(("sync",))
                answer, why = self._answer() if self._stopped_here is None else (b"", "")
                if not answer and self._take_over(why):
                    self._send(("sync",))
                    answer, _ = self._answer()
                elif not answer and self._stopped_here is None:  # (said as it was: not "died")
                    self._give_up(OSError(f"its writer {why.removeprefix('it ')}"))
            if answer != b"ok\n":
                problem = (self._stopped_here or answer.decode(errors="replace").strip()
                           or "the writer process died")
                raise JournalError(f"cannot write the journal {self.run_dir / JOURNAL_FILE}: "
                                   f"{problem.removeprefix('error: ')}")

    def _send(self, message: tuple) -> None:
        """Send *message* to the writer; a batch of changes is numbered and kept
        until committed. A writer found dead is replaced (:meth:`_take_over`)."""
        if self._broken:  # (said once already)
            return
        control = message[0] in ("sync", "stop")
        data = (pickle.dumps(message, pickle.HIGHEST_PROTOCOL) if control
                else self._unwritten.numbered(message))
        try:
            self._write(data)
        except (BrokenPipeError, WriterStalled) as error:
            if isinstance(error, WriterStalled):
                self._writer.kill()  # (and _take_over starts another)
            if self._take_over(str(error)):  # (which sent this batch again, if it is one)
                if control:
                    self._send(message)
                return
            self._give_up(error)
        except ValueError as error:  # the pipe was closed: the journal was closed
            self._give_up(error)

    def _write(self, data: bytes) -> None:
        """Write one message (*data*, framed here) to the writer: never blocked
        without a word, nor for ever (see :mod:`corral.journal.writer_pipe`).

        Raises:
            BrokenPipeError: the writer is gone.
            WriterStalled: it was stopped for :data:`_WRITER_STALL_PATIENCE_S`.
        """
        write_to_writer(self._pipe.fileno(), HEADER.pack(len(data)) + data, self._writer.pid,
                        self.run_dir, _WRITER_STALL_PATIENCE_S)

    def _answer(self) -> tuple[bytes, str]:
        """The writer's answer to a sync, and, if there is none (b""), why: it
        ended, or it was stopped for :data:`_WRITER_STALL_PATIENCE_S` and was
        killed."""
        try:
            wait_for_answer(self._answers.fileno(), self._writer.pid, self.run_dir,
                            _WRITER_STALL_PATIENCE_S)
        except WriterStalled as error:
            self._writer.kill()
            return b"", f"it did not answer: {error}"
        return self._answers.readline(), "it ended before it answered"

    @property
    def stopped(self) -> bool:
        """Whether the journal gave up (its writer died and could not be
        replaced): nothing more is written to it in this session."""
        return self._stopped_here is not None

    def _give_up(self, error: Exception) -> None:
        if not self._broken:
            self._broken = True
            replaced = [when for when in self._takeovers
                        if time.monotonic() - when < _TAKEOVER_SPAN_S]
            again = (f"; its writers died {len(replaced) + 1} times within "
                     f"{_TAKEOVER_SPAN_S:.0f} s, so no other is started"
                     if len(replaced) >= _TAKEOVERS > 0 else "")
            what = "its writer process died" if isinstance(error, BrokenPipeError) else error
            self._stopped_here = (f"it stopped at {time.strftime('%H:%M:%S')} ({what}{again}): "
                                  "no change after that is in it, no job submitted or ended "
                                  "since; the run went on without it")
            logging.getLogger(__name__).error(
                "the journal writer of %s is gone (%s%s): the journal stops here",
                self.run_dir, what, again)
            with contextlib.suppress(OSError):  # (for corral status and wait; at best)
                (self.run_dir / STOPPED_FILE).write_text(self._stopped_here + "\n")

    def _take_over(self, why: str) -> bool:
        """Start a writer in place of one that died, and send it the batches
        the journal does not hold; whether that could be done. (Only so
        often: a writer that dies at once each time is not started for ever.)"""
        now = time.monotonic()
        recent = [when for when in self._takeovers if now - when < _TAKEOVER_SPAN_S]
        if self._broken or len(recent) >= _TAKEOVERS:
            return False
        self._takeovers = [*recent, now]
        code = self._reap_writer(10.0)  # (one whose stdin closed, yet alive, is not writing)
        self._answers.close()
        try:
            lock = take_writer_lock(self.run_dir)
        except (OSError, TimeoutError) as error:
            logging.getLogger(__name__).error("cannot replace the journal writer of %s: %s",
                                              self.run_dir, error)
            return False
        try:
            again = self._unwritten.not_committed()
            self._writer, self._pipe, self._answers = self._start_writer(lock)
            self._writer_stopped_since = None
        finally:
            lock.close()
        try:
            for data in again:
                self._write(data)
        except BrokenPipeError:
            return self._take_over("the writer that took over ended at once")
        except WriterStalled as error:
            self._writer.kill()
            return self._take_over(f"the writer that took over stalled: {error}")
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        logging.getLogger(__name__).warning(
            "the journal writer of %s ended (%s; %s): a new one took over, and was sent the "
            "%d batches of changes it had not written", self.run_dir, how, why, len(again))
        return True

    def _start_writer(self, lock: IO[str]) -> tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]:
        """Start the writer process; return it, the pipe to it and the pipe of its answers.

        It inherits the locked *lock* (see :mod:`corral.journal.writer_lock`) and
        so holds it as long as it lives, also after its driver was killed.
        """
        import json as _json

        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER_BOOT, os.fspath(self.run_dir / JOURNAL_FILE),
             _json.dumps(sys.path), str(self.session)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
            bufsize=0, close_fds=True, pass_fds=(lock.fileno(),))
        note_writer(lock, writer.pid)
        requests, answers = writer.stdin, writer.stdout
        assert requests is not None and answers is not None, "both were asked for as pipes"
        with contextlib.suppress(OSError, AttributeError):  # (F_SETPIPE_SZ: Linux only)
            fcntl.fcntl(requests.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
        os.set_blocking(requests.fileno(), False)  # (see _write)
        return writer, requests, answers

    def close(self) -> None:
        """Flush, end the session and give up ownership of the run.

        Never raises for what the writer could not write (it runs on the
        control loop's thread): that is kept for :meth:`raise_if_failed`.
        """
        if self.closed:
            return
        self.closed = True
        _OPEN_JOURNALS.discard(self)
        self.previous.close()
        try:
            self.flush(force=True)
            ended = time.time()
            self._send(("stop", self.session, ended))
            code, report = self._writer_ended()
            # Killed (or stopped, and killed here) before its last commit: what it
            # held is still kept here, for a writer that takes over.
            if code < 0 and self._take_over("it ended before it had written all"):
                self._send(("stop", self.session, ended))
                code, report = self._writer_ended()
            if code == 0 and not self._broken:
                from corral.runtime.outcomes import discard_outcomes

                discard_outcomes(self.run_dir)  # everything they held is in the journal now
            else:
                self._failure = self._stopped_here or _writer_failure(report, code)
            if self._stopped_here is not None:  # (every job of this session has ended)
                with contextlib.suppress(OSError), open(self.run_dir / STOPPED_FILE,
                                                         "a") as stopped:
                    stopped.write(f"{_SESSION_CLOSED}\n")
        finally:
            self._release_lock()

    def _writer_ended(self) -> tuple[int, bytes]:
        """Let the writer finish (it was sent ``stop``); its exit status and its
        last words (what it could not write). One that does not end within a
        minute (stopped, stuck) is killed."""
        code = self._reap_writer(_WRITER_END_PATIENCE_S)
        report = self._answers.read() or b""
        self._answers.close()
        return code, report

    def _reap_writer(self, patience: float) -> int:
        """Close the pipe to the writer, and return its exit status once it has
        ended: within *patience* seconds, or killed then (or once it has been
        stopped for :data:`_WRITER_STALL_PATIENCE_S`)."""
        with contextlib.suppress(OSError):
            self._pipe.close()
        return wait_for_end(self._writer, self.run_dir, patience, _WRITER_STALL_PATIENCE_S)

    def raise_if_failed(self) -> None:
        """Raise, once, what the writer could not write during the session.

        The driver calls this after :meth:`close`, from its own thread, so
        that a journal that misses something never passes silently.

        Raises:
            JournalError: naming the journal, the job and the problem.
        """
        failure, self._failure = self._failure, None
        if failure is not None:
            raise JournalError(f"cannot write the journal {self.run_dir / JOURNAL_FILE}: {failure}")


#: The line a session whose journal had stopped adds to :data:`STOPPED_FILE` as it
#: closes: its jobs all ended (cancelled, if nothing else), unrecorded.
_SESSION_CLOSED = "the session that wrote this closed: every job it ran has ended"
#: What such a job shows once the next session opens the run (a daemon's
#: submissions are not run again: ``corral stop`` had cancelled them).
_END_UNRECORDED = "its end was not recorded: the journal of its session had stopped"


def _journal_stopped(run_dir: Path) -> bool:
    """Whether the journal of the run at *run_dir* stopped (its writers kept
    dying, a disk failed), as :data:`STOPPED_FILE` says: its session never
    closed it, and what its last writer held may be missing, which was said
    then. Its log is not lost then, and the run goes on (it was refused for
    good once, though nothing was lost: attack review)."""
    return os.path.lexists(run_dir / STOPPED_FILE)


def _closed_after_its_journal_stopped(run_dir: Path) -> bool:
    try:
        lines = (run_dir / STOPPED_FILE).read_text(errors="replace").splitlines()
    except OSError:
        return False
    return _SESSION_CLOSED in lines


def _writer_failure(report: bytes, code: int) -> str:
    """What went wrong, from the writer's last words and its exit status."""
    text = report.decode(errors="replace").strip().removeprefix("error: ")
    if text:
        return text
    if code < 0:
        return f"its writer process was killed by signal {-code}; the last changes may be missing"
    return f"its writer process ended with status {code}; the last changes may be missing"


# -- reading (any process of the user) -------------------------------------------------------


def _rows_to_jobs(cursor: sqlite3.Cursor, path: Path) -> list[StoredJob]:
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


def _check_rows(db: sqlite3.Connection, path: Path) -> None:
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
        return JournalError(f"{path} is damaged: job {job_id} has {what}; {_MOVE_AWAY}")

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
        session=record["session"], live=tuple(live.split("\n", 1)) if live else None,
        slot=record.get("slot"), journal=os.fspath(path))


def _path_text(value: object) -> Any:
    """A path column as text: the writer keeps a path that is no UTF-8 as bytes."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


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


def _error_summary(blob: bytes) -> str:
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
    except (_NotCreatedYet, FileNotFoundError):
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
        _NotCreatedYet: a live driver is making it this instant.
    """
    path = journal_path(run_dir)
    held = _snapshots.get({}).get(path)
    if held is not None:
        yield held
        return
    if not path.exists():
        if not Path(run_dir).exists():
            raise FileNotFoundError(f"no run directory {os.fspath(run_dir)}")
        raise FileNotFoundError(f"{os.fspath(run_dir)} holds no corral journal ({JOURNAL_FILE})")
    log_was_missing = _log_missing(path)  # before connecting: a reader's connection makes one
    connection = _open_for_reading(path)
    try:
        driven = lambda: owner_of(run_dir) is not None  # noqa: E731
        try:
            meta = _checked_meta(connection, path, being_created=driven)
            if (log_was_missing and meta.get(WRITING_KEY) and not driven()
                    and not _journal_stopped(Path(run_dir))):
                raise _log_lost(path, meta[WRITING_KEY])
        except sqlite3.DatabaseError as error:
            raise _damaged(path, error) from None
        try:
            yield connection
        except sqlite3.DatabaseError as error:
            raise _damaged(path, error) from None
    finally:
        connection.close()


class _NotCreatedYet(Exception):
    """A journal without tables whose live driver is making it (see :func:`_checked_meta`)."""


def read_jobs(run_dir: str | os.PathLike[str], with_results: bool = True) -> list[StoredJob]:
    """Every job of the run, in the order they were dispatched.

    Raises:
        FileNotFoundError: no journal there (the message names the path).
    """
    columns = "*" if with_results else _COLUMNS_BUT_RESULTS
    try:
        with _reading(run_dir) as db:
            return _rows_to_jobs(db.execute(f"SELECT {columns} FROM jobs ORDER BY seq"),
                                 journal_path(run_dir))
    except _NotCreatedYet:
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
            first = _rows_to_jobs(db.execute(
                f"SELECT {columns} FROM jobs WHERE status IN ({_marks(unfinished_statuses)}) "
                "ORDER BY rowid LIMIT ?", (*unfinished_statuses, unfinished)), path)
            last = _rows_to_jobs(db.execute(
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
    except _NotCreatedYet:
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
        _rows_to_jobs(db.execute(
            f"SELECT {_COLUMNS_BUT_RESULTS} FROM jobs WHERE status IS NULL OR status NOT IN "
            f"({_marks(known)}) LIMIT 1", known), path)
        # No row has it: the index the counts come from is damaged (a torn page).
        raise _damaged(path, f"its index of job statuses holds {unknown[0]!r}, which no "
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
    except _NotCreatedYet:
        return {}


#: Ids asked about in one query (SQLite allows 32,766 parameters; fewer keep it quick).
_IDS_A_QUERY = 500

#: A job row's columns but its pickled result and error: what listings read.
_COLUMNS_BUT_RESULTS = (
    "id, int_id, seq, key, name, kind, command, spec, deps, status, reason, exit_code, "
    "attempts, native_id, started, ended, jobdir, NULL AS result, NULL AS error, session, live")


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
            found = _rows_to_jobs(db.execute("SELECT * FROM jobs WHERE id=?", (str(job_id),)),
                                  journal_path(run_dir))
    except _NotCreatedYet:
        found = []
    if not found:
        raise KeyError(job_id)
    return found[0]


def read_events(run_dir: str | os.PathLike[str], job_id: int | str | None = None
                ) -> list[tuple[str, float, str | None, str, str | None]]:
    """State changes as ``(job id, time, old, new, reason)``, oldest first
    (see :mod:`corral.journal.eventlog`).

    Raises:
        JournalError: a batch of changes is damaged.
    """
    try:
        with _reading(run_dir) as db:
            return list(eventlog.read_events_from(db, None if job_id is None else str(job_id)))
    except _NotCreatedYet:
        return []
    except ValueError as error:
        raise JournalError(f"{journal_path(run_dir)}: {error}; {_MOVE_AWAY}") from None


def read_session_backends(run_dir: str | os.PathLike[str]) -> dict[int, str | None]:
    """Which backend each session of the run used, by session id (None in
    journals from before backends were recorded: they ran on this machine)."""
    try:
        with _reading(run_dir) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
            if "backend" not in columns:
                return {row[0]: None for row in db.execute("SELECT id FROM sessions")}
            return dict(db.execute("SELECT id, backend FROM sessions"))
    except _NotCreatedYet:
        return {}


@dataclass(frozen=True)
class StoredSession:
    """One driver session of a run: who drove it, on which backend, and what
    that backend could run at once (``cores`` None: unknown, or a cluster that
    packs on its own)."""

    id: int
    kind: str
    backend: str | None
    started: float | None
    ended: float | None
    cores: int | None


#: The ``meta`` key under which a session records its backend's capacity (JSON).
CAPACITY_KEY = "capacity.{session}"


def read_sessions(run_dir: str | os.PathLike[str]) -> list[StoredSession]:
    """Every session of the run, oldest first."""
    try:
        with _reading(run_dir) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
            backend = "backend" if "backend" in columns else "NULL"
            rows = list(db.execute(f"SELECT id, kind, {backend}, started, ended FROM sessions "
                                   "ORDER BY id"))
            meta = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'capacity.%'"))
    except _NotCreatedYet:
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
            cores if isinstance(cores, int) and not isinstance(cores, bool) else None))
    return sessions


def read_meta(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    try:
        with _reading(run_dir) as db:
            return dict(db.execute("SELECT key, value FROM meta"))
    except _NotCreatedYet:
        return {}
