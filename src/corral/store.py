"""The journal: one SQLite file (WAL mode) per run directory.

It records every job's spec, every state change (one ``events`` row each, with
time and reason), attempts, native ids and results, so that a run can be read
from another process (``corral status``), resumed after its driver died, and
inspected tomorrow.

Two kinds of access:

* :class:`Journal` — the writer, owned by the one process that drives the run
  (a script's Scheduler or the daemon). It holds an exclusive lock file so a
  second driver gets a clear error instead of a corrupted queue. It is called
  from the control-loop thread only and writes in batches: the loop calls
  :meth:`Journal.flush` once per iteration, which snapshots what changed and
  pipes it to a writer process (:mod:`corral.journal_writer`), so the loop
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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import socket
import sqlite3
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CorralError
from .journal_writer import HEADER
from .status import TERMINAL, JobStatus

if TYPE_CHECKING:
    from .job import Job

__all__ = ["JOURNAL_FILE", "Journal", "StoredJob", "RunInUse", "private_run_dir", "private_file",
           "read_job", "read_jobs", "read_events", "read_meta", "journal_path", "owner_of",
           "read_session_backends", "CLUSTER_BACKENDS"]

JOURNAL_FILE = "journal.db"
LOCK_FILE = "owner.lock"
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
    result BLOB, error BLOB, session INTEGER, live TEXT);
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (key);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, job_id TEXT, time REAL, old TEXT, new TEXT, reason TEXT);
"""

#: Changes are sent to the writer at most this often (and the loop wakes up to
#: send them): one pipe write and one pickle per interval instead of one per
#: loop iteration. With the writer's group commit, this bounds how far the
#: journal lags the loop; a call's outcome is safe meanwhile in the outcome log.
SEND_INTERVAL_S = 0.005
_LARGE_BATCH = 5000

_WRITER_BOOT = ("import sys, json; sys.path[:] = json.loads(sys.argv.pop(2)); "
                "from corral.journal_writer import main; main()")


class RunInUse(CorralError):
    """Another live process drives this run directory."""


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
    @property
    def ok(self) -> bool:
        return self.status is JobStatus.COMPLETED

    def result_value(self) -> Any:
        """The job's return value (None for commands and unfinished jobs).

        Raises:
            Exception: the job's own exception, if it raised one (with its
                remote traceback as ``__cause__``); JobFailed if it ended
                FAILED/TIMED_OUT/CANCELLED otherwise.
        """
        import pickle

        from .errors import JobFailed, RemoteTraceback
        from .runtime.payload import loads_error

        if self.error is not None:
            error, traceback_text, _ = loads_error(self.error)
            if error is not None:
                error.__cause__ = RemoteTraceback(traceback_text)
                raise error
        if self.status in (JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED):
            raise JobFailed(f"job {self.id} {self.name!r} {self.status.name}: {self.reason}",
                            job_id=self.id, status=self.status, reason=self.reason,
                            exit_code=self.exit_code)
        return None if self.result is None else pickle.loads(self.result)

    def output_path(self, stream: str = "stdout") -> str | None:
        """Where *stream* is now: a spool file while the job runs, else its job file."""
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream={stream!r} must be 'stdout' or 'stderr'")
        if self.live is not None and self.status is JobStatus.RUNNING:
            return self.live[0] if stream == "stdout" else self.live[1]
        return os.path.join(self.jobdir, stream) if self.jobdir else None

    def output(self, stream: str = "stdout") -> str:
        """What the job wrote to *stream* (``"stdout"`` or ``"stderr"``), "" if nothing."""
        from .runtime.spool import read_output

        path = self.output_path(stream)
        return "" if path is None else read_output(path)


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
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
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


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    if not create and not path.exists():
        raise FileNotFoundError(f"no corral journal at {path}")
    if create:
        private_file(path)
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints
        connection.execute("PRAGMA busy_timeout=30000")
    except sqlite3.DatabaseError as error:
        connection.close()
        raise _damaged(path, error) from None
    return connection


def _damaged(path: Path, error: Exception) -> CorralError:
    return CorralError(f"{path} is not a corral journal, or it is damaged ({error}); "
                       "move it away to start the run afresh")


def owner_of(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who drives the run now: ``{"pid", "kind", "host", "socket"}``, or None.

    Read from the lock file, and trusted only while its lock is held.
    """
    lock_path = Path(run_dir) / LOCK_FILE
    try:
        handle = open(lock_path, "r+")
    except FileNotFoundError:
        return None
    with handle:
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


#: Backends whose jobs keep running when the driver dies.
CLUSTER_BACKENDS = frozenset({"slurm"})


class Journal:
    """The writing side of a run's journal. See the module docstring.

    Raises:
        RunInUse: another live process drives this run directory.
    """

    def __init__(self, run_dir: str | os.PathLike[str], kind: str = "script",
                 backend: str = "local") -> None:
        self.run_dir = private_run_dir(run_dir)
        self._lock = self._take_lock(kind)
        try:
            self._db = _connect(self.run_dir / JOURNAL_FILE, create=True)
            try:
                self._db.executescript(_SCHEMA)
            except sqlite3.DatabaseError as error:
                raise _damaged(self.run_dir / JOURNAL_FILE, error) from None
            self._setup_meta(kind)
            #: Every earlier session's kind ("script", "daemon"), by session id.
            self.session_kinds: dict[int, str] = dict(
                self._db.execute("SELECT id, kind FROM sessions"))
            if "backend" not in {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}:
                self._db.execute("ALTER TABLE sessions ADD COLUMN backend TEXT")
            #: Every earlier session's backend ("local", "slurm"), by session id.
            self.session_backends: dict[int, str] = dict(
                self._db.execute("SELECT id, coalesce(backend, 'local') FROM sessions"))
            self.session = self._start_session(kind, backend)
            #: The jobs of earlier sessions, by key, as they were left.
            self.previous = {job.key: job for job in _rows_to_jobs(
                self._db.execute("SELECT * FROM jobs ORDER BY seq"))}
            #: When each job last changed, as far as the journal knows.
            self.last_change: dict[str, float] = dict(
                self._db.execute("SELECT job_id, max(time) FROM events GROUP BY job_id"))
            self._close_orphans(kind)
        except BaseException:
            self._release_lock()
            raise
        self._seq = 1 + max((row[0] for row in self._db.execute("SELECT max(seq) FROM jobs")
                             if row[0] is not None), default=0)
        self._events: list[tuple] = []
        self._new_jobs: list[tuple] = []
        self._dirty: dict[int, Job] = {}
        self.closed = False
        self._broken = False
        self._last_send = 0.0
        self._db.close()  # from here on, the writer process owns the writing
        self._writer = self._start_writer()
        self._pipe = self._writer.stdin
        _OPEN_JOURNALS.add(self)

    # -- ownership -----------------------------------------------------------------------

    def _take_lock(self, kind: str):
        private_file(self.run_dir / LOCK_FILE)
        handle = open(self.run_dir / LOCK_FILE, "a+")
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
        handle.write(json.dumps({"pid": os.getpid(), "kind": kind, "host": socket.gethostname(),
                                 "socket": "control.sock"}))
        handle.flush()
        return handle

    def _release_lock(self) -> None:
        handle, self._lock = self._lock, None
        if handle is not None:
            handle.seek(0)
            handle.truncate()
            handle.close()

    def _setup_meta(self, kind: str) -> None:
        found = dict(self._db.execute("SELECT key, value FROM meta"))
        version = int(found.get("version", SCHEMA_VERSION))
        if version != SCHEMA_VERSION:
            raise CorralError(f"journal {self.run_dir / JOURNAL_FILE} has format {version}; this "
                              f"corral reads format {SCHEMA_VERSION}")
        if not found:
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("version", str(SCHEMA_VERSION)), ("created", repr(time.time())),
                ("paused", "0"), ("origin", kind)])
        elif kind != "daemon":  # a script starts unpaused, whatever a killed one left
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('paused', '0')")

    def _start_session(self, kind: str, backend: str) -> int:
        cursor = self._db.execute(
            "INSERT INTO sessions (pid, host, kind, argv, started, backend) VALUES (?, ?, ?, ?, ?, ?)",
            (os.getpid(), socket.gethostname(), kind, json.dumps(sys.argv), time.time(), backend))
        return int(cursor.lastrowid)

    def outlives_driver(self, job: StoredJob) -> bool:
        """Whether an unfinished job lives on without its driver: one handed to
        a cluster scheduler (it is found again by its native id), not a local process."""
        return (job.native_id is not None
                and self.session_backends.get(job.session or 0, "local") in CLUSTER_BACKENDS)

    def _close_orphans(self, kind: str) -> None:
        """End the jobs that earlier sessions left unfinished: their drivers are
        gone (this process holds the run's lock), so nothing runs them any more.
        A job run again in this session gets its row back; the others stop
        looking RUNNING to ``corral status`` and ``corral wait``. A daemon
        keeps its predecessors' submissions as they are: it runs them again at
        once, and a ``corral wait`` on them should not see them end meanwhile."""
        now = time.time()
        orphans = [job for job in self.previous.values()
                   if job.status not in TERMINAL
                   and not self.outlives_driver(job)
                   and not (kind == "daemon" and job.kind == "shell"
                            and self.session_kinds.get(job.session) == "daemon")]
        if not orphans:
            return
        reason = "its driver ended before it did (the next run of the script runs it again)"
        self._db.execute("BEGIN")
        self._db.executemany(
            "UPDATE jobs SET status='cancelled', reason=?, ended=coalesce(ended, ?) WHERE id=?",
            [(reason, now, str(job.id)) for job in orphans])
        self._db.executemany(
            "INSERT INTO events (job_id, time, old, new, reason) VALUES (?, ?, ?, 'cancelled', ?)",
            [(str(job.id), now, job.status.value, reason) for job in orphans])
        self._db.execute("COMMIT")

    def set_meta(self, key: str, value: str) -> None:
        """Record a run-wide setting (e.g. ``paused``), after what is already queued."""
        self.flush(force=True)
        self._send(("meta", key, value))

    # -- recording (control-loop thread) ------------------------------------------------------

    def added(self, job: Job, key: str, kind: str, command: str, spec: str) -> None:
        """Record a new job (*spec* is JSON); written at the next :meth:`flush`."""
        deps = [dep.id for dep in job._deps]  # JSON-encoded by the writer process
        self._new_jobs.append((
            str(job.id), job.id if isinstance(job.id, int) else None, self._seq, key, job.name,
            kind, command, spec, deps, self.session))
        self._seq += 1
        self._dirty[id(job)] = job

    def moved(self, job: Job, old: JobStatus | None, new: JobStatus, reason: str | None) -> None:
        """Record a state change; written at the next :meth:`flush`."""
        self._events.append((str(job.id), time.time(), old.value if old else None, new.value,
                             reason))
        self._dirty[id(job)] = job

    def due_in(self) -> float | None:
        """Seconds until what was recorded must be sent; None if nothing waits."""
        if not (self._events or self._dirty):
            return None
        return max(0.0, self._last_send + SEND_INTERVAL_S - time.monotonic())

    def flush(self, wait: bool = False, force: bool = False) -> None:
        """Send what was recorded to the writer process, as one batch: at once
        with *wait* or *force*, otherwise once :data:`SEND_INTERVAL_S` has
        passed since the last batch (the control loop calls this every
        iteration, and wakes up for :meth:`due_in`). With *wait*, return once
        everything is committed.

        Raises:
            CorralError: (with *wait*) the writer could not write the journal.
        """
        if (self._events or self._dirty) and (
                wait or force or len(self._events) >= _LARGE_BATCH
                or time.monotonic() - self._last_send >= SEND_INTERVAL_S):
            self._last_send = time.monotonic()
            rows = [(job.status.value, job.reason, job.exit_code, job.attempts, job.native_id,
                     job.started, job.ended, None if job.jobdir is None else os.fspath(job.jobdir),
                     job._result_blob, job._error_blob,
                     None if job._live_output is None else "\n".join(job._live_output), str(job.id))
                    for job in self._dirty.values()]
            self._send(("jobs", self._new_jobs, self._events, rows))
            self._new_jobs, self._events, self._dirty = [], [], {}
        if wait:
            self._send(("sync",))
            answer = self._writer.stdout.readline()
            if answer != b"ok\n":
                problem = answer.decode(errors="replace").strip() or "the writer process died"
                raise CorralError(f"cannot write the journal {self.run_dir / JOURNAL_FILE}: "
                                  f"{problem}")

    def _send(self, message: tuple) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        try:
            self._pipe.write(HEADER.pack(len(data)) + data)
        except (BrokenPipeError, ValueError) as error:
            if not self._broken:
                self._broken = True
                import logging

                logging.getLogger(__name__).error(
                    "the journal writer of %s is gone (%s): the journal stops here",
                    self.run_dir, error)

    def _start_writer(self) -> subprocess.Popen:
        import json as _json

        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER_BOOT, os.fspath(self.run_dir / JOURNAL_FILE),
             _json.dumps(sys.path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
            bufsize=0, close_fds=True)
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(writer.stdin.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
        return writer

    def close(self) -> None:
        """Flush, end the session and give up ownership of the run."""
        if self.closed:
            return
        self.closed = True
        _OPEN_JOURNALS.discard(self)
        try:
            self.flush()
            self._send(("stop", self.session, time.time()))
            with contextlib.suppress(OSError):
                self._pipe.close()
            try:
                code = self._writer.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._writer.kill()
                code = self._writer.wait()
            self._writer.stdout.close()
            if code == 0:
                from .runtime.outcomes import discard_outcomes

                discard_outcomes(self.run_dir)  # everything they held is in the journal now
        finally:
            self._release_lock()


# -- reading (any process of the user) -------------------------------------------------------


def _rows_to_jobs(cursor: sqlite3.Cursor) -> list[StoredJob]:
    names = [column[0] for column in cursor.description]
    jobs = []
    for row in cursor:
        record = dict(zip(names, row))
        job_id = record["int_id"] if record["int_id"] is not None else record["id"]
        jobs.append(StoredJob(
            id=job_id, key=record["key"], name=record["name"], kind=record["kind"],
            command=record["command"] or "", spec=json.loads(record["spec"] or "{}"),
            deps=tuple(json.loads(record["deps"] or "[]")),
            status=JobStatus(record["status"] or "new"), reason=record["reason"],
            exit_code=record["exit_code"], attempts=record["attempts"] or 0,
            native_id=record["native_id"], started=record["started"], ended=record["ended"],
            jobdir=record["jobdir"], result=record["result"], error=record["error"],
            session=record["session"],
            live=tuple(record["live"].split("\n", 1)) if record.get("live") else None))
    return jobs


@contextlib.contextmanager
def _reading(run_dir: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    path = journal_path(run_dir)
    if not path.exists():
        if not Path(run_dir).exists():
            raise FileNotFoundError(f"no run directory {os.fspath(run_dir)}")
        raise FileNotFoundError(f"{os.fspath(run_dir)} holds no corral journal ({JOURNAL_FILE})")
    connection = _connect(path, create=False)
    try:
        yield connection
    except sqlite3.DatabaseError as error:
        if "no such table" in str(error):
            raise _NotCreatedYet from None  # its driver is creating it this instant
        raise _damaged(path, error) from None
    finally:
        connection.close()


class _NotCreatedYet(Exception):
    pass


def read_jobs(run_dir: str | os.PathLike[str], with_results: bool = True) -> list[StoredJob]:
    """Every job of the run, in the order they were dispatched.

    Raises:
        FileNotFoundError: no journal there (the message names the path).
    """
    columns = "*" if with_results else (
        "id, int_id, seq, key, name, kind, command, spec, deps, status, reason, exit_code, "
        "attempts, native_id, started, ended, jobdir, NULL AS result, NULL AS error, session, "
        "live")
    try:
        with _reading(run_dir) as db:
            return _rows_to_jobs(db.execute(f"SELECT {columns} FROM jobs ORDER BY seq"))
    except _NotCreatedYet:
        return []


def read_job(run_dir: str | os.PathLike[str], job_id: int | str) -> StoredJob:
    """One job, with its result.

    Raises:
        KeyError: no such job.
    """
    try:
        with _reading(run_dir) as db:
            found = _rows_to_jobs(db.execute("SELECT * FROM jobs WHERE id=?", (str(job_id),)))
    except _NotCreatedYet:
        found = []
    if not found:
        raise KeyError(job_id)
    return found[0]


def read_events(run_dir: str | os.PathLike[str], job_id: int | str | None = None
                ) -> list[tuple[str, float, str | None, str, str | None]]:
    """State changes as ``(job id, time, old, new, reason)``, oldest first."""
    try:
        with _reading(run_dir) as db:
            if job_id is None:
                cursor = db.execute("SELECT job_id, time, old, new, reason FROM events "
                                    "ORDER BY seq")
            else:
                cursor = db.execute("SELECT job_id, time, old, new, reason FROM events "
                                    "WHERE job_id=? ORDER BY seq", (str(job_id),))
            return list(cursor)
    except _NotCreatedYet:
        return []


def read_session_backends(run_dir: str | os.PathLike[str]) -> dict[int, str]:
    """Which backend each session of the run used, by session id (journals
    from before backends were recorded say ``local``)."""
    try:
        with _reading(run_dir) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
            if "backend" not in columns:
                return {row[0]: "local" for row in db.execute("SELECT id FROM sessions")}
            return dict(db.execute("SELECT id, coalesce(backend, 'local') FROM sessions"))
    except _NotCreatedYet:
        return {}


def read_meta(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    try:
        with _reading(run_dir) as db:
            return dict(db.execute("SELECT key, value FROM meta"))
    except _NotCreatedYet:
        return {}
