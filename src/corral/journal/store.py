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
* :mod:`corral.journal.reading` — plain readers for any process of the same
  user; WAL lets them read while the writer writes. What they read back is a
  :class:`~corral.journal.stored.StoredJob`; the file itself, its checks and
  its lock are :mod:`corral.journal.files`.

Everything is private to the user: the run directory is 0700 and the files in
it 0600: the files are created with that mode before SQLite opens them, and
SQLite gives its ``-wal``/``-shm`` files the mode of the database file.

The journal is never silently wrong. A reader must never show a damaged file
as a run with no jobs, so:

* ``journal.db`` is made whole (schema and ``meta``, with its format version)
  under another name and renamed into place: a file without them, or an empty
  one, is never a journal being born, it is damaged
  (:func:`~corral.journal.files.create_journal`, :func:`~corral.journal.files.checked_meta`);
* the writer process records in ``meta`` (key :data:`WRITING_KEY`) that it may
  hold commits only in the write-ahead log, and moves that note into
  ``journal.db`` itself before it commits anything; it removes it when it
  ends. Readers open the journal read-only, so they never checkpoint nor
  remove ``journal.db-wal``. The note found with no log beside the file and no
  driver alive therefore means the log, and what it held, was lost
  (:func:`~corral.journal.files.lost_log_error`);
* a row with a value corral cannot read raises :class:`JournalError` naming
  the file, the job and the value (:func:`~corral.journal.reading.check_rows`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import time
import weakref
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Protocol

from corral.errors import CorralError, JournalError, RunInUse, RunLockTakenAway
from corral.journal import eventlog
from corral.journal.files import (JOURNAL_FILE, LOCK_FILE, MOVE_AWAY, SESSION_CLOSED, STOPPED_FILE,
                                  check_header, checked_meta, closed_after_its_journal_stopped,
                                  create_journal, damaged_error, journal_has_stopped,
                                  journal_modified_at, log_missing, lost_log_error,
                                  open_for_reading, open_for_writing, private_file,
                                  private_run_dir,
                                  refuse_unless_plain)
from corral.journal.reading import (CAPACITY_KEY, LEFT_EARLY_KEY, check_rows, error_summary,
                                    rows_to_jobs)
from corral.journal.stored import COMPLETED_ALL_THE_SAME, DRIVER_GONE, StoredJob
from corral.journal.previous import PreviousJobs
from corral.journal.unwritten import Unwritten
from corral.journal.writer import HEADER, WRITING_KEY
from corral.journal.writer_pipe import (WriterStalled, stopped_for, wait_for_answer, wait_for_end,
                                       write_to_writer)
from corral.journal.writer_lock import note_writer, take_writer_lock
from corral.status import ACTIVE, TERMINAL, JobStatus, failures_before_retry

__all__ = ["Journal", "JournaledJob", "DRIVER_GONE"]

#: How the reason of an unfinished job of a dead driver begins (it ends CANCELLED).
#: Why it ends CANCELLED (README: "Unfinished work").
_ORPHANED = f"{DRIVER_GONE} (the next run of the script runs it again)"
#: Why a try of a ``corral submit`` job ended with its daemon (the next daemon runs it again).
_ORPHANED_BY_DAEMON = f"{DRIVER_GONE} (its daemon's; the next daemon ran it again)"
#: How many of a job's latest changes are read back for its count of failures.
_HISTORY_READ_BACK = 200

#: Why a call whose outcome only the outcome log knew ends COMPLETED or FAILED.
_FOUND_IN_OUTCOME_LOG = "found in the outcome log after its driver ended"

_CALL_KINDS = ("call", "function")  # the jobs whose workers log their outcomes

#: The meta key of a session's worker mark (see Journal.record_worker_mark).
WORKER_MARK_KEY = "worker_mark.{session}"


class JournaledJob(Protocol):
    """What the journal reads of a job it records: the engine's record
    (:class:`corral.core.record.JobRecord`) fits it. A protocol, so that the
    journal, which the core writes through, imports nothing of the core."""

    id: Any
    deps: Any  # its dependencies, each with an ``id``
    ended_deps: tuple[Any, ...]  # ids of those that had ended before it was made
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

#: The writer's interpreter gets this process's sys.path as its arguments after
#: the journal's path and the session's number (see path_arguments).
_WRITER_BOOT = ("import sys; sys.path[:] = sys.argv[3:]; del sys.argv[3:]; "
                "from corral.journal.writer import main; main()")


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
            self._refuse_a_driver_that_lost_its_lock(path)  # (before its writer is waited for)
            # A killed driver's writer may still be writing: its rows come first.
            try:
                writer_lock = take_writer_lock(self.run_dir)
            except OSError as error:  # (a broken lock file, or a writer that never let go)
                raise JournalError(error.strerror or str(error)) from None
            #: Whether the last session's journal stopped and that session then
            #: closed: every job it left unfinished here ended, unrecorded.
            self._ended_unrecorded = closed_after_its_journal_stopped(self.run_dir)
            stopped_before = journal_has_stopped(self.run_dir)
            with contextlib.suppress(OSError):  # (an earlier session's word: this one writes)
                (self.run_dir / STOPPED_FILE).unlink(missing_ok=True)
            if not path.exists():
                create_journal(path, kind)
            #: The last sign of an earlier driver's life: when it last wrote here.
            self._last_written = journal_modified_at(path)
            check_header(path)
            log_was_missing = log_missing(path)
            db = open_for_writing(path)
            try:
                meta = checked_meta(db, path)
                if log_was_missing and meta.get(WRITING_KEY) and not stopped_before:
                    raise lost_log_error(path, meta[WRITING_KEY])
                if meta.get(WRITING_KEY):  # its log is whole: the note has said what it had to
                    # (Left, the close below moves the log in and deletes it, and a driver
                    # killed before its writer's own note left a run refused as incomplete
                    # though nothing was lost: re-attack review.)
                    db.execute("DELETE FROM meta WHERE key=?", (WRITING_KEY,))
                self._open_session(db, kind, backend, meta)
            except sqlite3.DatabaseError as error:
                raise damaged_error(path, error) from None
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
            check_header(path)

    def _open_session(self, db: sqlite3.Connection, kind: str, backend: str | None,
                      meta: dict[str, str]) -> None:
        """Record this session and settle what earlier ones left unfinished, through
        *db*: the one connection the driver opens, before the writer takes over.

        A script may not take up a run of the ``corral`` command that a person
        paused (cold review: it ran at once in a run paused for the jobs lined
        up in it, and dropped the pause); one not paused it may (it leaves the
        daemon's commands to the next daemon: see :meth:`_close_orphans`)."""
        if kind == "script" and meta.get("origin") == "daemon" and meta.get("paused") == "1":
            raise JournalError(f"the run at {self.run_dir} is paused (corral pause): the jobs "
                               "submitted to it wait for corral resume, but a script would "
                               f"start its own at once: resume it first (corral --run "
                               f"{self.run_dir} resume), or give the script a journal "
                               "directory of its own")
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
        self.marks_left = self._marks_left(db, meta)
        path = self.run_dir / JOURNAL_FILE
        check_rows(db, path)  # (the finished jobs are read whole only when matched)
        #: The jobs of earlier sessions, by key, as they were left (a call
        #: settled from the outcome log as it ended).
        self.previous: PreviousJobs[StoredJob] = PreviousJobs(
            db, path, rows_to_jobs, lambda error: damaged_error(path, error))
        #: When each unfinished job's latest attempt was queued, as far as the
        #: journal knows: a logged outcome that ended later is that attempt's.
        #: (Not the job's last event: the driver stamps RUNNING after it has
        #: handed the call over, and a fast call can end before that stamp.)
        try:
            self.last_change: dict[str, float] = eventlog.last_queued(
                db, {str(job.id) for job in self.previous.unfinished()})
        except ValueError as error:
            raise JournalError(f"{self.run_dir / JOURNAL_FILE}: {error}; {MOVE_AWAY}") from None
        self._outcomes_read: dict[str, tuple[bool, bytes, float]] | None = None
        #: The status each job a killed daemon left before it began was left in,
        #: by id, until this daemon moves it: its history goes on from there
        #: (see :meth:`moved`).
        self._taken_up: dict[str, JobStatus] = {}
        #: The tries that failed so far of each job a killed daemon left with a
        #: retry to come, by id: the daemon that takes it up goes on counting.
        self.failures_so_far: dict[str, int] = {}
        self._close_orphans(db, kind)
        self._settle_cancelled_that_completed(db)
        self._outcomes_read = None  # (their results: read once, kept no longer)

    # -- ownership -----------------------------------------------------------------------

    def _take_lock(self, kind: str):
        refuse_unless_plain(self.run_dir / LOCK_FILE)
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
            if (owner.get("pid"), owner.get("host")) == (os.getpid(), os.uname().nodename):
                # (a notebook's cell run twice)
                raise RunInUse(
                    f"run directory {self.run_dir} is driven by a Scheduler this program made "
                    "before and did not shut down: use that one, or call its shutdown() "
                    "first") from None
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

    def _refuse_a_driver_that_lost_its_lock(self, path: Path) -> None:
        """Refuse the run while a driver of an unended session still holds files in
        it: the lock is a file, found by its path, and an ``rm owner.lock`` (a
        "stale lock" cleaned by hand) let a second driver take a run the first
        still drove, kill its journal writer and run its jobs twice at once
        (attack review). A copy of a running run is no such run: its driver's
        files are in the original. A journal that cannot be read is left to the
        checks that follow, which say what is wrong with it."""
        try:
            if not path.is_file():
                return
            with contextlib.closing(open_for_reading(path)) as db:
                unended = db.execute("SELECT pid, kind FROM sessions WHERE ended IS NULL "
                                     "AND host=?", (os.uname().nodename,)).fetchall()
        except (OSError, sqlite3.Error, CorralError):
            return
        for pid, owner in unended:
            if isinstance(pid, int) and pid != os.getpid() and _holds_files_in(pid,
                                                                               self.run_dir):
                raise RunLockTakenAway(
                    f"run directory {self.run_dir} is driven by another process ({owner}, pid "
                    f"{pid}), though its {LOCK_FILE} was taken away: control it with the "
                    f"corral command, or end it first (kill {pid}); never delete the lock of a "
                    "run that runs")

    def keep_lock_file(self) -> None:
        """Make the run's lock file again, locked, where it was deleted while
        this driver holds the run (an ``rm`` of a "stale" lock): every command
        then took the run for one no process drives (attack review: ``corral
        status`` said its driver was gone, and ``corral wait`` tried to start a
        daemon four times). Called about once a second by the control server's
        thread, which has seen that the run directory is still this one. A
        plain file made in its place that no process holds locked (a driver
        refused at its start leaves an empty one: re-attack review) is taken;
        one locked, or a link or a directory, is left alone."""
        handle, path = self._lock, self.run_dir / LOCK_FILE
        if handle is None or handle.closed:
            return
        try:
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(handle.fileno()).st_ino:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return
        try:
            made = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                           | os.O_CLOEXEC, 0o600)
        except OSError:
            return
        found = os.fstat(made)
        # (Not a FIFO, nor a file linked in from elsewhere, which would be written over:
        # second re-attack review, the FIFO ended the control thread for good.)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
            os.close(made)
            return
        new = os.fdopen(made, "r+")
        try:
            fcntl.flock(new, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (held by another: left alone)
            handle.seek(0)
            owner = handle.read()
            new.truncate(0)
            new.write(owner)
            new.flush()
        except (OSError, ValueError):
            new.close()
            return
        self._lock = new
        handle.close()
        logging.getLogger(__name__).warning("the lock file of the run at %s was gone: made "
                                            "again", self.run_dir)

    def _release_lock(self) -> None:
        handle, self._lock = self._lock, None
        if handle is not None:
            handle.seek(0)
            handle.truncate()
            handle.close()

    def _marks_left(self, db: sqlite3.Connection, meta: dict[str, str]
                    ) -> dict[int, tuple[str, int, float]]:
        """``{session: (mark, driver pid, start)}`` of the earlier sessions on
        this machine that never ended (killed, or a copy of a run that still
        goes on), whose processes carry that mark (see :meth:`record_worker_mark`):
        their jobs' commands may still run.

        Each is swept once (see :meth:`swept`): a session whose driver, writer,
        reaper and workers were all killed at once (`pkill -9 python`) left its
        commands running, and the next run ran them a second time beside them
        (attack review)."""
        host = os.uname().nodename
        left = {}
        for session, on, ended, pid, started in db.execute(
                "SELECT id, host, ended, pid, started FROM sessions"):
            key = WORKER_MARK_KEY.format(session=session)
            if ended is None and on == host and meta.get(key):
                left[session] = (meta[key], pid, started)
        return left

    def record_worker_mark(self, mark: str) -> None:
        """Record the mark in the environment of every process of this session's
        jobs (a local backend's), for the next session to sweep if this one is killed.

        Committed before this returns, so before any job runs: sent on its own, a
        writer slow to take it (a busy machine) let a driver killed with it leave
        a command the next session knew nothing of (CI failure)."""
        self.set_meta(WORKER_MARK_KEY.format(session=self.session), mark)
        self.flush(wait=True)

    def swept(self, session: int) -> None:
        """The processes of an earlier *session*'s mark (:attr:`marks_left`) are gone."""
        self.set_meta(WORKER_MARK_KEY.format(session=session), "")

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
            return _ORPHANED
        logging.getLogger("corral").warning(
            "job %s %r was handed to the %r backend, which is not installed here; it may "
            "still run there (native id %s) and this run will run it again", job.id, job.name,
            backend, job.native_id)
        return (f"{DRIVER_GONE}; it was handed to the {backend!r} backend, "
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
        ``corral status`` and ``corral wait``. What ``corral submit`` gave a
        daemon is kept as it is: a daemon runs it again at once, and a ``corral
        wait`` on it should not see it end meanwhile; a script leaves it for the
        next daemon (attack review: a script on the run of a killed daemon
        closed its commands as the script's, to run again by a rerun of a
        script that never had them)."""
        left = [job for job in self.previous.unfinished()
                if job.status not in TERMINAL and not self.outlives_driver(job)]
        self._keep_what_they_wrote(left)
        orphans = [job for job in left
                   if not (job.kind == "shell" and job.session is not None
                           and self.session_kinds.get(job.session) == "daemon"
                           and not self._ended_unrecorded)]
        if kind != "daemon" and len(orphans) < len(left):
            count = len(left) - len(orphans)
            logging.getLogger("corral").warning(
                "%d command%s that corral submit gave a daemon of this run, which was killed, "
                "%s left for the next corral command's daemon to run again (corral --run %s "
                "wait)", count, "s" * (count != 1), "are" if count != 1 else "is", self.run_dir)
        now = time.time()
        # A try of a kept one that had begun ended with its daemon all the same:
        # its history says so, as an orphan's does, while its row stays as it is
        # (cold review: TRIES said 2, and the report and `corral status ID` knew
        # of one try only).
        # (By the daemon that takes them up: a script may open the run many times.)
        # (Running ones: one QUEUED for a retry has begun before, but no try of it
        # ran: re-attack review, its history said it was cancelled.)
        # The latest changes of each that ran or runs, read once: whether its try's
        # end is told already, and how many of its tries failed.
        histories = {str(job.id): _latest_changes(db, job) for job in left
                     if kind == "daemon" and job not in orphans
                     and (job.status in ACTIVE or job.started is not None)}
        kept = [job for job in left if job not in orphans and job.status in ACTIVE
                and kind == "daemon" and not _closed_already(histories[str(job.id)])]
        if kind == "daemon":
            self._taken_up = {str(job.id): job.status for job in left
                              if job not in orphans and job.status not in ACTIVE}
            self.failures_so_far = {job_id: failures for job_id, history in histories.items()
                                    if (failures := _failures_so_far(history))}
        if kept:
            db.execute("BEGIN")
            db.execute(eventlog.INSERT, eventlog.pack(
                (str(job.id), self._died_at(job, now), job.status, JobStatus.CANCELLED,
                 _ORPHANED_BY_DAEMON) for job in kept))
            db.execute("COMMIT")
        if not orphans:
            return
        outcomes = {}
        if any(job.kind in _CALL_KINDS for job in orphans):
            outcomes = self._logged_outcomes()
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

    def _logged_outcomes(self) -> dict[str, tuple[bool, bytes, float]]:
        """The run's outcome logs (see :mod:`corral.runtime.outcomes`), read
        once while the journal is opened: the orphans and the cancelled calls
        of a dead driver are both settled from them."""
        if self._outcomes_read is None:
            from corral.runtime.outcomes import read_outcomes

            self._outcomes_read = read_outcomes(self.run_dir)
        return self._outcomes_read

    def _settle_cancelled_that_completed(self, db: sqlite3.Connection) -> None:
        """Mark the calls a dead driver recorded CANCELLED whose logged outcome
        says that they completed all the same, as the engine would have: kept
        CANCELLED, with their result and :data:`COMPLETED_ALL_THE_SAME`, so that
        the rerun restores them rather than runs them again.

        A Dask job killed as it ended is settled only when its task, or the
        outcome log, can say how it ended, half a second later (see
        ``DaskBackend.kill``), and the journal records it CANCELLED at once: a
        driver killed in between left completed calls for the rerun to run
        again (attack review). The log exists only after such a death: a
        session that ends well removes it."""
        from corral.runtime.outcomes import outcomes_directory

        if not os.path.isdir(outcomes_directory(self.run_dir)):
            return
        cancelled = [row[0] for row in db.execute(
            "SELECT id FROM jobs WHERE status=? AND kind IN (?, ?) AND reason NOT LIKE ?",
            (JobStatus.CANCELLED.value, *_CALL_KINDS, f"%{COMPLETED_ALL_THE_SAME}"))]
        if not cancelled:
            return
        outcomes = self._logged_outcomes()
        completed = {job_id: outcomes[job_id] for job_id in cancelled
                     if job_id in outcomes and outcomes[job_id][0]}
        if not completed:
            return
        queued = eventlog.last_queued(db, set(completed))
        settled = []
        for job_id, (_, blob, ended) in completed.items():
            job = self.previous.by_id(job_id)
            if job is None or ended <= queued.get(job_id, 0.0):  # an earlier try's
                continue
            settled.append(replace(job, exit_code=0, ended=ended, result=blob,
                                   attempts=max(job.attempts, 1),
                                   reason=f"{job.reason or 'cancelled'}; {COMPLETED_ALL_THE_SAME}"))
        if not settled:
            return
        db.execute("BEGIN")
        db.executemany("UPDATE jobs SET reason=?, exit_code=0, ended=?, result=?, attempts=? "
                       "WHERE id=?", [(job.reason, job.ended, job.result, job.attempts,
                                       str(job.id)) for job in settled])
        db.execute("COMMIT")
        for job in settled:
            self.previous.replace(job)

    def _keep_what_they_wrote(self, jobs: list[StoredJob]) -> None:
        """Move the output of *jobs* that ran when their driver died from its
        spool files, which this session removes, to their job directories;
        a job run again keeps it as its earlier try's (``stdout.1``). Renamed,
        the files keep their times, which :meth:`_died_at` reads."""
        from corral.runtime.spool import keep_dead_drivers_spool

        for job in jobs:
            if job.live is not None and job.directory:
                keep_dead_drivers_spool(job.live, job.directory, os.fspath(self.run_dir))

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
                           reason=f"completed; {_FOUND_IN_OUTCOME_LOG}")
        return replace(job, status=JobStatus.FAILED, exit_code=None, ended=ended, result=None,
                       error=blob, attempts=attempts,
                       reason=f"raised {error_summary(blob)}; {_FOUND_IN_OUTCOME_LOG}")

    def record_capacity(self, cores: int | None, memory_mb: int | None,
                        gpus: int | None) -> None:
        """Note what this session's backend can run at once, for the report's
        utilisation (busy core-seconds against those available)."""
        self.set_meta(CAPACITY_KEY.format(session=self.session),
                      json.dumps({"cores": cores, "memory_mb": memory_mb, "gpus": gpus}))

    def record_left_early(self, reason: str) -> None:
        """Note that this session's program left its ``with`` block with jobs
        unfinished, and why: ``corral wait`` says it may not have made them all."""
        self.set_meta(LEFT_EARLY_KEY.format(session=self.session), reason)

    def set_meta(self, key: str, value: str) -> None:
        """Record a run-wide setting (e.g. ``paused``), after what is already queued."""
        self.flush(force=True)
        self._send(("meta", key, value))

    # -- recording (control-loop thread) ------------------------------------------------------

    def added(self, job: JournaledJob, key: str, slot: str, kind: str, command: str,
              spec: str) -> None:
        """Record a new job (*spec* is JSON); written at the next :meth:`flush`."""
        deps = [dep.id for dep in job.deps]  # JSON-encoded by the writer process
        if job.ended_deps:
            deps += job.ended_deps
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
              reason: str | None, at: float | None = None) -> None:
        """Record a state change (made *at*, if not now); written at the next :meth:`flush`.

        A job that a killed daemon left before it began, taken up again, goes
        on from the status it was left in: not NEW again (attack review: its
        history said NEW -> QUEUED once per daemon killed), and without a change
        of status, no change is told."""
        if old is JobStatus.NEW and self._taken_up:
            old = self._taken_up.pop(str(job.id), old)
            if old is new:
                self._dirty[id(job)] = job
                return
        self._events.add(str(job.id), time.time() if at is None else at, old, new, reason)
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
        from corral.runtime.worker_process import path_arguments, too_long_said

        arguments = [sys.executable, "-c", _WRITER_BOOT, os.fspath(self.run_dir / JOURNAL_FILE),
                     str(self.session), *path_arguments()]
        try:
            writer = subprocess.Popen(
                arguments, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
                bufsize=0, close_fds=True, pass_fds=(lock.fileno(),))
        except OSError as error:
            raise OSError(error.errno, f"cannot start the journal's writer: "
                                       f"{too_long_said(error, arguments)}") from error
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
                    stopped.write(f"{SESSION_CLOSED}\n")
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


#: What such a job shows once the next session opens the run (a daemon's
#: submissions are not run again: ``corral stop`` had cancelled them).
_END_UNRECORDED = "its end was not recorded: the journal of its session had stopped"


def _writer_failure(report: bytes, code: int) -> str:
    """What went wrong, from the writer's last words and its exit status."""
    text = report.decode(errors="replace").strip().removeprefix("error: ")
    if text:
        return text
    if code < 0:
        return f"its writer process was killed by signal {-code}; the last changes may be missing"
    return f"its writer process ended with status {code}; the last changes may be missing"


def _holds_files_in(pid: int, directory: Path) -> bool:
    """Whether process *pid* has a file of *directory* open (one deleted since too),
    as /proc says; False where it cannot be told (no such process, another user's)."""
    inside = f"{directory}/"
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
        except OSError:
            continue
        if target.startswith(inside):
            return True
    return False


def _latest_changes(db: sqlite3.Connection, job: StoredJob
                    ) -> list[tuple[str, float, str | None, str, str | None]]:
    """The latest changes of *job* (at most :data:`_HISTORY_READ_BACK`), oldest
    first; none if they cannot be read (damaged: what follows assumes nothing)."""
    try:
        return eventlog.latest_changes(db, _HISTORY_READ_BACK, {str(job.id)})[0]
    except ValueError:
        return []


def _closed_already(history: list[tuple[str, float, str | None, str, str | None]]) -> bool:
    """Whether a job's *history*, left running by a killed daemon, says already
    that its try ended so: a daemon killed before it had run the job again left
    its row as it was (re-attack review: two daemons killed in quick succession
    each told the same try's end)."""
    return bool(history) and history[-1][3] == JobStatus.CANCELLED.value \
        and history[-1][4] == _ORPHANED_BY_DAEMON


def _failures_so_far(history: list[tuple[str, float, str | None, str, str | None]]) -> int:
    """How many tries failed since a job's *history* last began: what its
    latest retry said (see :func:`corral.status.failures_before_retry`)."""
    for _, _, old, new, reason in reversed(history):
        counted = failures_before_retry(reason) if new == JobStatus.QUEUED.value else None
        if counted is not None:
            return counted
        if old in (None, JobStatus.NEW.value):  # (it began again here: a rerun)
            return 0
    return 0
