"""The journal's file: where it is, made private to its user, created whole,
opened for writing or reading, and checked: a damaged file, an empty one or one
whose write-ahead log was lost is a :class:`JournalError` naming the file and
what to do, never a run with no jobs (see :mod:`corral.journal.store`, whose
writer makes it so). Also
who owns the run (its lock file) and whether its journal stopped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from corral.errors import JournalError
from corral.journal import eventlog
from corral.journal.disk_errors import no_room

__all__ = ["RunPlace", "JOURNAL_FILE", "LOCK_FILE", "STOPPED_FILE", "SCHEMA_VERSION",
           "journal_path",
           "private_run_dir", "refuse_a_run_inside_a_run", "private_file", "MOVE_AWAY",
           "open_for_writing", "open_for_reading", "check_header", "damaged_error",
           "log_missing", "checked_meta", "lost_log_error", "create_journal", "owner_of",
           "refuse_unless_plain", "file_kind", "NotCreatedYet", "SESSION_CLOSED",
           "journal_has_stopped", "closed_after_its_journal_stopped", "journal_modified_at"]


JOURNAL_FILE = "journal.db"

LOCK_FILE = "owner.lock"

#: Where a session whose journal gave up says so
#: (:meth:`corral.journal.store.Journal._give_up`): the journal itself takes
#: nothing more, and ``corral status`` and ``wait`` read it there. The next
#: session removes it.
STOPPED_FILE = "journal-stopped"

#: Made in the run directory as ``corral stop`` is answered, removed once the
#: daemon has cancelled its jobs: a daemon killed in between leaves the stop to
#: the next one (see corral.cli.daemon). A file, not a journal row: the journal's
#: writer may be holding its rows back for want of room, and the stop must not
#: wait on it, nor add to what it holds.
STOP_ASKED_FILE = "stop-asked"

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


def journal_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / JOURNAL_FILE


def refuse_a_run_inside_a_run(run_dir: Path) -> None:
    """Refuse to make a run in a directory inside another run's: that run
    names its jobs' directories by their ids, so one of its jobs could write
    into this run, and a clean of it delete this run (cold review: ``corral
    clean 2`` of the run ``nest`` deleted the run ``nest/2``). A run made so by
    an earlier version opens as before.

    Raises:
        ValueError: naming the run it is inside.
    """
    if (run_dir / JOURNAL_FILE).exists():
        return
    for parent in run_dir.parents:
        if (parent / JOURNAL_FILE).is_file():
            raise ValueError(f"run directory {os.fspath(run_dir)!r} is inside the run at "
                             f"{os.fspath(parent)!r}, whose jobs' directories are named by their "
                             "ids: give a directory outside it")


def private_run_dir(path: str | os.PathLike[str]) -> Path:
    """Create (or check) a run directory only its user may enter.

    Raises:
        ValueError: the path exists and is not a directory, or belongs to
            another user (corral never writes into someone else's run).
    """
    run_dir = Path(path).expanduser().resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run directory {os.fspath(path)!r} exists and is not a directory")
    refuse_a_run_inside_a_run(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:  # under /proc, a file, a read-only mount, another user's directory
        raise ValueError(f"run directory {os.fspath(path)!r} cannot be made: "
                         f"{error.strerror or error}") from None
    info = run_dir.stat()
    if info.st_uid != os.geteuid():
        raise ValueError(f"run directory {run_dir} belongs to another user (uid {info.st_uid})")
    try:
        if info.st_mode & 0o077:
            os.chmod(run_dir, 0o700)
        tempfile.TemporaryFile(dir=run_dir).close()  # (a read-only mount, a 0o555 directory)
    except FileNotFoundError:
        raise  # taken away meanwhile (a refused first submit's undo): the caller may make it anew
    except OSError as error:
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        if journal_path(run_dir).exists():  # a run's history: never "choose another"
            remedy = ("make room on its disk" if full else "the directory may not be writable: "
                      "make it writable (see ls -l, lsattr, mount)")
            raise JournalError(f"cannot write in the run directory {run_dir}: "
                               f"{error.strerror or error}; {remedy} to go on with this run; "
                               "corral status and logs read it as it is") from None
        remedy = "make room there, or choose a run directory on another disk" if full else \
            "choose one this user can write in"
        raise ValueError(f"run directory {os.fspath(path)!r} cannot be written: "
                         f"{error.strerror or error}; {remedy}") from None
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

MOVE_AWAY = "move it away to start the run afresh"


def open_for_writing(path: Path) -> sqlite3.Connection:
    """The driver's own connection (the writer process opens its own)."""
    try:
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    except sqlite3.Error as error:
        raise damaged_error(path, error) from None
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints
        connection.execute("PRAGMA busy_timeout=30000")
    except sqlite3.DatabaseError as error:
        connection.close()
        raise damaged_error(path, error) from None
    return connection


def open_for_reading(path: Path) -> sqlite3.Connection:
    """A read-only connection: it never checkpoints nor removes the
    write-ahead log, whose presence is evidence (see the module docstring).

    Raises:
        PermissionError: the file may not be read (the message says why).
        JournalError: the file is empty or no SQLite database.
    """
    check_header(path)
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30,
                                     isolation_level=None)
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1")  # (where SQLite opens for real)
    except sqlite3.OperationalError as error:
        # On a full disk too (re-attack review: `corral clean`, the way to make
        # room, could not read the run it was to clean).
        if os.access(path.parent, os.W_OK) and not _full(path.parent):
            raise damaged_error(path, error) from None
        return _open_where_nothing_may_be_written(path)
    except sqlite3.Error as error:
        raise damaged_error(path, error) from None
    return connection


def _full(directory: Path) -> bool:
    """Whether the disk that holds *directory* has no room left for a file of SQLite's."""
    try:
        found = os.statvfs(directory)
    except OSError:
        return False
    return found.f_bavail * found.f_frsize < _ROOM_TO_READ


#: What SQLite needs beside a journal to read it: its shared-memory file (32 KiB).
_ROOM_TO_READ = 64 * 1024


def _open_where_nothing_may_be_written(path: Path) -> sqlite3.Connection:
    """A connection to a journal in a directory that cannot be written (its
    mode, a read-only mount, an archive, a full disk): SQLite reads a journal in WAL mode
    only where it may make its shared-memory file beside it, unless told the
    file never changes. Nothing can change it there, but what a killed driver
    left only in the write-ahead log would be missed: that is refused.

    Raises:
        JournalError: the write-ahead log holds changes, or the file cannot be read.
    """
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        raise JournalError(f"cannot read the journal {path}: nothing can be written beside it "
                           f"(a read-only directory, or a full disk), and its latest changes are "
                           f"only in {wal.name}, which SQLite reads only where it may write "
                           "beside it; free some space, or copy the run directory somewhere "
                           "writable, to read it")
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1",
                                     uri=True, isolation_level=None)
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.Error as error:
        raise damaged_error(path, error) from None
    return connection


def check_header(path: Path) -> None:
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
            raise damaged_error(path, "it is no regular file")
        start = os.read(descriptor, len(_SQLITE_MAGIC))
    finally:
        os.close(descriptor)
    if not start:
        raise JournalError(f"{path} is empty (0 bytes): it was truncated, or is no corral "
                           f"journal; {MOVE_AWAY}")
    if start != _SQLITE_MAGIC:
        raise damaged_error(path, "file is not a database")


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


def damaged_error(path: Path, error: object) -> JournalError:
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
                        f"{MOVE_AWAY}")


def _little_room(directory: Path) -> bool:
    """Whether the disk of *directory* is (all but) full: SQLite's I/O error on
    a full disk is one (it cannot make its -shm file), as well as its FULL."""
    try:
        return shutil.disk_usage(directory).free < 1 << 20
    except OSError:
        return False


def log_missing(path: Path) -> bool:
    """Whether journal.db has no write-ahead log beside it, or one without a
    frame (empty, or only its header: a torn one looked whole)."""
    try:
        return os.stat(f"{path}-wal").st_size <= _WAL_HEADER_BYTES
    except FileNotFoundError:
        return True


#: A write-ahead log's header, before its first frame (SQLite's file format, "WAL File Format").
_WAL_HEADER_BYTES = 32


def checked_meta(db: sqlite3.Connection, path: Path,
                  being_created: Callable[[], bool] = lambda: False) -> dict[str, str]:
    """The journal's ``meta`` table, once it is known to be a whole journal.

    Raises:
        NotCreatedYet: it has no tables and *being_created* says a live
            driver is making it (a journal made by a corral from before
            journals were made whole under another name).
        JournalError: tables or the format version are missing, or the format
            is another corral's.
    """
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables >= _TABLES:
        if not tables and being_created():
            raise NotCreatedYet
        missing = ", ".join(sorted(_TABLES - tables))
        raise JournalError(f"{path} is not a whole corral journal: it has no {missing} "
                           f"table{'s' if len(_TABLES - tables) > 1 else ''}; {MOVE_AWAY}")
    meta = dict(db.execute("SELECT key, value FROM meta"))
    events = meta.get(eventlog.META_KEY)
    if events is not None and events != eventlog.META_VALUE:
        raise JournalError(f"{path} keeps its state changes as {events!r}, which this corral "
                           f"does not read (a newer corral's journal, or a damaged one)")
    if events == eventlog.META_VALUE and "event_batches" not in tables:
        raise JournalError(f"{path} is not a whole corral journal: it keeps its state changes "
                           f"in batches, and has no event_batches table; {MOVE_AWAY}")
    if "version" not in meta:
        raise JournalError(f"{path} is not a whole corral journal: its meta table has no "
                           f"format version; {MOVE_AWAY}")
    if meta["version"] != str(SCHEMA_VERSION):
        raise JournalError(f"journal {path} has format {meta['version']}; this corral reads "
                           f"format {SCHEMA_VERSION}")
    return meta


def lost_log_error(path: Path, session: str) -> JournalError:
    """The error for a journal whose write-ahead log was lost while session
    *session*'s writer may have held commits only there."""
    return JournalError(
        f"{path} is incomplete: its write-ahead log {path.name}-wal is missing or empty, but "
        f"session {session} never closed the journal, so what it recorded there is lost; "
        f"{MOVE_AWAY}")


def create_journal(path: Path, kind: str) -> None:
    """Make a whole journal (schema and meta) under another name and rename it
    into place, so that no reader ever sees a journal.db without them."""
    partial = path.with_name(f"{path.name}.partial")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    private_file(partial)
    db = open_for_writing(partial)
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
    refuse_unless_plain(Path(run_dir) / LOCK_FILE)
    try:  # (read only: a shared lock needs no more, and a run on a read-only mount is read)
        with open(Path(run_dir) / LOCK_FILE) as handle:
            return _owner_while_locked(handle)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None  # (no run there: none under a file, none where no file can be)
        raise


def refuse_unless_plain(path: Path) -> None:
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


#: The line a session whose journal had stopped adds to :data:`STOPPED_FILE` as it
#: closes: its jobs all ended (cancelled, if nothing else), unrecorded.
SESSION_CLOSED = "the session that wrote this closed: every job it ran has ended"


class RunPlace:
    """Whether a run's directory is still where its driver left it.

    A run directory deleted under its driver (``rm -rf RUN``) and made again
    by the next ``corral submit`` is another run's: its driver must end, and
    never make its socket there (review: two daemons took turns at one
    control.sock). Told by the directory's descriptor, held from the start,
    not by its path: an ``rm -rf`` of many files takes seconds, and the
    directory keeps its inode until its last entry goes (the socket made again
    meanwhile made the ``rmdir`` fail). Its journal gone from it is a run
    deleted; the directory renamed (``mv RUN elsewhere``) is not. (The journal
    itself is looked up, never held open: closing a descriptor of it would
    drop this process's SQLite locks on it.)
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = os.fspath(run_dir)
        try:
            self._directory: int | None = os.open(
                self.run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            self._directory = None
        self._journal = self._journal_identity()

    def _journal_identity(self) -> tuple[int, int] | None:
        if self._directory is None:
            return None
        try:
            found = os.stat(JOURNAL_FILE, dir_fd=self._directory, follow_symlinks=False)
        except OSError:
            return None
        return (found.st_dev, found.st_ino)

    def deleted(self) -> bool:
        """Whether the run directory or its journal was deleted (not moved)."""
        if self._directory is None:
            return False
        try:
            if os.fstat(self._directory).st_nlink == 0:
                return True
        except OSError:
            return True
        return self._journal is not None and self._journal_identity() != self._journal

    def here(self) -> bool:
        """Whether the run is still at its path, whole: its socket may be made there."""
        if self._directory is None or self.deleted():
            return False
        try:
            held, there = os.fstat(self._directory), os.stat(self.run_dir)
        except OSError:
            return False
        return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)

    def close(self) -> None:
        if self._directory is not None:
            with contextlib.suppress(OSError):
                os.close(self._directory)
            self._directory = None


def journal_has_stopped(run_dir: Path) -> bool:
    """Whether the journal of the run at *run_dir* stopped (its writers kept
    dying, a disk failed), as :data:`STOPPED_FILE` says: its session never
    closed it, and what its last writer held may be missing, which was said
    then. Its log is not lost then, and the run goes on (it was refused for
    good once, though nothing was lost: attack review)."""
    return os.path.lexists(run_dir / STOPPED_FILE)


def closed_after_its_journal_stopped(run_dir: Path) -> bool:
    try:
        lines = (run_dir / STOPPED_FILE).read_text(errors="replace").splitlines()
    except OSError:
        return False
    return SESSION_CLOSED in lines


class NotCreatedYet(Exception):
    """A journal without tables whose live driver is making it (see :func:`checked_meta`)."""


def journal_modified_at(path: Path) -> float | None:
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
