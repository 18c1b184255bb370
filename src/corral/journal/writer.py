"""The journal's writer process: turns batches of changes into SQLite transactions.

The control loop must never wait for the disk, and on a small machine even a
writer *thread* slowed small jobs by half: SQLite's work and the binding of
every row contend with the loop for the GIL. So the driver pickles each batch
(what changed in one loop iteration) down a pipe to this process, which writes
on a core of its own.

Messages are length-prefixed pickles on stdin:

* ``("jobs", new_jobs, events, rows, number)`` — new job rows, event rows,
  state rows;
* ``("meta", key, value, number)`` — a run-wide setting;
* ``("sync",)`` — answer ``b"ok\\n"`` (or ``b"error: ...\\n"``, naming every
  row that could not be written so far) on stdout once everything before it
  is committed;
* ``("stop", session, ended)`` — commit the rest, close the session, say
  ``b"error: ...\\n"`` if anything could not be written, exit (1 then).

Its arguments: the journal's path and the session it writes for. Each
transaction also records the *number* of its last batch (:func:`written_key`),
so that a writer that takes over from a dead one is sent only what this one
had not committed (:mod:`corral.journal.unwritten`).

Everything that arrives within a short interval is committed in one
transaction (group commit). If the driver dies, the pipe's end of file makes
this process commit what it received and exit: nothing the driver sent is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import sqlite3
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import NoReturn, TypeVar

from corral.journal import eventlog
from corral.journal.kept_result import KeptResult
from corral.journal.disk_errors import no_room

from corral.runtime.stdfds import open_standard_fds
from corral.runtime.threads import allow_signals

__all__ = ["HEADER", "WRITING_KEY", "last_written", "main", "written_key"]

HEADER = struct.Struct("<I")

#: After the first message of a quiet spell, wait this long for more, so that
#: a busy run costs one transaction per interval, not one per loop iteration.
GROUP_COMMIT_S = 0.01


class _Reader:
    """Length-prefixed messages from a file descriptor, drained by a thread of
    its own: the pipe never fills while a transaction is being written, so the
    driver's control loop never blocks on writing to it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.closed = False
        self._chunks: list[bytes] = []
        self._arrived = threading.Condition()
        threading.Thread(target=self._drain, name="journal-pipe", daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except OSError:
                chunk = b""
            with self._arrived:
                self._chunks.append(chunk)
                self._arrived.notify()
            if not chunk:
                return

    def fill(self, block: bool, timeout: float | None = None) -> None:
        """Take what arrived; with *block*, wait for something first (at most
        *timeout* seconds, if given)."""
        with self._arrived:
            if block:
                self._arrived.wait_for(lambda: self._chunks, timeout)
            chunks, self._chunks = self._chunks, []
        for chunk in chunks:
            if chunk:
                self.buffer += chunk
            else:
                self.closed = True

    def messages(self) -> list[tuple]:
        found = []
        while len(self.buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < HEADER.size + size:
                break
            found.append(pickle.loads(bytes(self.buffer[HEADER.size:HEADER.size + size])))
            del self.buffer[:HEADER.size + size]
        return found


#: The ``meta`` key naming the session whose writer may hold commits only in
#: the write-ahead log (see :mod:`corral.journal.store`).
WRITING_KEY = "writing"


def last_written(db: sqlite3.Connection, session: int) -> int:
    """The number of the last batch of *session* the journal *db* has committed
    (0: none, or unreadable)."""
    row = db.execute("SELECT value FROM meta WHERE key=?", (written_key(session),)).fetchone()
    try:
        return int(row[0]) if row else 0
    except ValueError:
        return 0


def written_key(session: int) -> str:
    """The ``meta`` key of the number of the last batch of *session* committed
    (see :mod:`corral.journal.unwritten`); removed when the session ends."""
    return f"written {session}"

#: How many problems the writer keeps word of, for the driver.
_PROBLEMS_KEPT = 20


class _Writer:
    """The SQLite side: one connection, one transaction per group of batches.

    A value SQLite refuses (an integer beyond 64 bits, say) costs only its own
    row: the batch is then written again row by row, and every row that
    cannot be written is named in :attr:`problems`, which the driver hears of
    (``sync`` and ``stop``). Nothing else of the batch is lost.

    A transaction the disk has no room for (full, or failing: SQLite's FULL
    and IOERR) loses nothing either: its batches are held and written again
    with the next ones, and every second while nothing comes, until they fit
    (they were lost once, and ``corral status`` showed jobs RUNNING for ever
    that had ended while the disk was full). Only at the session's end are
    those that still do not fit lost, and said to be.
    """

    def __init__(self, path: str, session: int) -> None:
        self.path = path
        self.session = session
        self.problems: list[str] = []
        self._problem_count = 0
        #: Those since the last sync's answer: a sync answers for its own batches
        #: only (a full disk, freed since, must not fail every later submit).
        self._unsaid: list[str] = []
        self._unsaid_count = 0
        #: Batches a transaction had no room for, oldest first: written before the next.
        self.held: list[tuple] = []
        #: Why they are held, for every sync until they are written.
        self._held_because = ""
        #: When they are tried again (time.monotonic()).
        self._next_try = 0.0
        #: The number of the last batch of this session the journal holds: a
        #: writer that takes over is sent what the driver could not tell was
        #: committed (all it kept, if the driver could not read the journal),
        #: and writes only what comes after it. (Read once the journal is open.)
        self._written = 0
        self._db: sqlite3.Connection | None = None
        #: Whether the note that this session writes is still only in the log.
        self._note_only_in_log = False
        self._open()

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "the journal is opened before it is written"
        return self._db

    def _open(self) -> sqlite3.Error | None:
        """Open the journal, or say why there is no room to (a full disk: its
        write-ahead log cannot be made); any other error is raised."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._db = db
            self._say_writing()
            self._written = self._last_written()
        except sqlite3.Error as error:
            self._db = None
            db.close()
            if not no_room(error):
                raise
            return error
        return None

    def _say_writing(self) -> None:
        """Note in journal.db itself, before any commit that could sit only in
        the write-ahead log, that this session writes: a reader that finds the
        note but no log knows that the log was lost."""
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        (WRITING_KEY, str(self.session)))
        self._note_only_in_log = True
        self._move_note_in()

    def _move_note_in(self) -> None:
        """Checkpoint, so that the note of :meth:`_say_writing` is in journal.db.

        A reader in the middle of a read holds the log's frames after its
        snapshot out of the file: the note stayed only in the log then, and a
        lost log went unnoticed (re-attack review). So it is tried again after
        each commit until the log is all in. PASSIVE: it waits for nobody
        (RESTART held the writer 30 s behind such a reader), and leaves the log
        its length: a writer killed before its first commit left an emptied
        log beside its note, which read as a lost one (CI)."""
        try:
            busy, in_log, moved = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return
        self._note_only_in_log = bool(busy) or moved < in_log

    def _last_written(self) -> int:
        return last_written(self.db, self.session)

    def write(self, messages: list[tuple], last_chance: bool = False, now: bool = False) -> None:
        """Commit *messages* (after those held); with *last_chance*, what
        still finds no room is lost, and said to be, instead of held. Held ones
        are tried again once a second, or at once with *now* (a sync waits on
        its answer: an unwritable journal made writable again is written then)."""
        if self.held and not (last_chance or now) and time.monotonic() < self._next_try:
            self.held += messages  # (tried again once a second, not for every batch that comes)
            return
        messages = [*self.held, *messages]
        self.held = []
        unopened = self._open() if self._db is None else None
        if unopened is not None:  # (what it has written is not known yet: every batch held)
            changes = sum(len(rows) for _, rows, _ in _statements(messages, fold=True))
            if last_chance:
                self._note(f"{changes} changes were lost: {unopened}")
            elif messages:
                self._hold(messages, changes, unopened)
            return
        messages = [message for message in messages if message[-1] > self._written]
        groups = _statements(messages, fold=True)
        if not groups:
            return
        last = max(message[-1] for message in messages)
        # The number of the batch, in the same transaction: what a writer that
        # takes over from this one is sent again starts after it.
        numbered = ("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [(written_key(self.session), str(last))],
                    lambda row: "the number of the batch written")
        changes = sum(len(rows) for _, rows, _ in groups)
        try:
            self._commit([*groups, numbered], one_by_one=False)
            self._written = last
            self._after_commit()
            return
        except Exception as error:  # some row is refused: find it, keep the others
            self._rollback()
            if no_room(error):  # (no row's fault: none would fit alone either)
                if last_chance:
                    self._note(f"{changes} changes were lost: {error}")
                else:
                    self._hold(messages, changes, error)
                return
        try:  # (a state refused must not take its job's row with it: not folded)
            self._commit([*_statements(messages, fold=False), numbered], one_by_one=True)
            self._written = last
            self._after_commit()
        except Exception as error:  # the commit itself failed: disk full, I/O error
            self._rollback()
            if no_room(error) and not last_chance:
                self._hold(messages, changes, error)
                return
            self._note(f"{changes} changes were lost: {error}")

    def _hold(self, messages: list[tuple], changes: int, error: Exception) -> None:
        """Keep *messages* for the next try; say so on the driver's stderr once
        for each time it happens (not among the problems: once written, they
        are none), and every sync says it until then."""
        self.held = messages
        self._next_try = time.monotonic() + RETRY_HELD_S
        because = (f"{changes} changes are not written yet: {error}; they are written as soon "
                   "as there is room")
        if not self._held_because:
            self._say(f"corral: cannot write the journal {self.path}: {because}")
        self._held_because = because

    def _after_commit(self) -> None:
        """Move the session's note in if a reader kept it out; say that what
        was held back is written."""
        if self._note_only_in_log:
            self._move_note_in()
        if self._held_because:
            self._say(f"corral: the journal {self.path} is written again: what it held back "
                      "is in it")
            self._held_because = ""

    @staticmethod
    def _say(line: str) -> None:
        with contextlib.suppress(OSError):  # (the driver's stderr may be on the full disk)
            print(line, file=sys.stderr, flush=True)

    def holding_back(self) -> str | None:
        """Why changes are held (a sync cannot be answered "ok" then: its own
        batches are among them), or None."""
        return self._held_because if self.held else None

    def _commit(self, groups: list[tuple[str, list[tuple], Callable[[tuple], str]]],
                one_by_one: bool) -> None:
        db = self.db
        db.execute("BEGIN")
        for sql, rows, label in groups:
            if not one_by_one:
                db.executemany(sql, rows)
                continue
            for row in rows:
                try:
                    db.execute(sql, row)
                except Exception as error:
                    if no_room(error):  # the disk's, not the row's: the whole fails
                        raise
                    self._write_refused(sql, row, label(row), error)
        if db.in_transaction:  # (an I/O error may have rolled it back already)
            db.execute("COMMIT")

    def _write_refused(self, sql: str, row: tuple, label: str, error: Exception) -> None:
        """Write what SQLite can of a refused row: its text made storable, then,
        for a job's state, the state without its result, error and output (too
        big): a job's status must never stay behind its events."""
        for number, attempt in enumerate(_lighter(sql, row)):
            try:
                self.db.execute(sql, attempt)
            except Exception:
                continue
            if number:  # what was left out is said, at once and at the end
                self._note(f"{label}: its result, error or output was not recorded "
                           f"({type(error).__name__}: {error}); its status was")
            return
        self._note(f"{label} was not recorded: {type(error).__name__}: {error}")

    def _rollback(self) -> None:
        if self._db is not None and self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")

    def _note(self, problem: str) -> None:
        if self._problem_count == 0:  # at once, on the driver's stderr; the rest at sync/stop
            print(f"corral: cannot write the journal {self.path}: {problem}", file=sys.stderr,
                  flush=True)
        self._problem_count += 1
        if len(self.problems) < _PROBLEMS_KEPT:
            self.problems.append(problem)
        self._unsaid_count += 1
        if len(self._unsaid) < 3:
            self._unsaid.append(problem)

    def report(self) -> str | None:
        """All problems so far as one line, or None (the session's end says them all)."""
        return _one_line(self.problems, self._problem_count)

    def report_since_last_sync(self) -> str | None:
        """The problems since the last time this was asked, as one line, or None."""
        text = _one_line(self._unsaid, self._unsaid_count)
        self._unsaid, self._unsaid_count = [], 0
        return text

    def stop(self, session: int | None, ended: float | None) -> None:
        """The last transaction: close the session (if the driver said it
        ended), withdraw the note that this session writes; then close, which
        moves the log into journal.db."""
        self._rollback()
        if self.held or self._db is None:  # a last try: what still finds no room is lost now
            self.write([], last_chance=True)
        if self._db is None:
            self._note("the end of the session was not recorded: the journal could not be "
                       "opened")
            return
        try:
            self._end_session(session, ended)
        except sqlite3.Error as error:
            self._rollback()
            if not (no_room(error) and self._end_session_in_less_room(session, ended)):
                self._note(f"the end of the session was not recorded: {error}")
        self.db.close()

    def _end_session(self, session: int | None, ended: float | None) -> None:
        self.db.execute("BEGIN")
        if session is not None:
            self.db.execute("UPDATE sessions SET ended=? WHERE id=?", (ended, session))
        self.db.execute("DELETE FROM meta WHERE key=? AND value=?",
                        (WRITING_KEY, str(self.session)))
        # (The number of the last batch written stays: a writer that takes over
        # from this one, killed after this commit but before it exited, is
        # sent every batch the driver kept, and must know they are written.)
        self.db.execute("COMMIT")

    def _end_session_in_less_room(self, session: int | None, ended: float | None) -> bool:
        """End the session on a full disk; whether it could be.

        Closing moves the log into journal.db and empties it, so the note that
        this session writes, left in journal.db, read as a log that was lost:
        a daemon stopped on a full disk left a run that every command refused
        ("incomplete ... move it away"), though nothing was lost (attack
        review). So the log is moved in first, which frees its room, and the
        end is written again; failing that, the note alone is taken out of
        journal.db's own page, which needs no new room (no log either: a row
        deleted in place), and the session reads as one whose driver died.
        """
        try:
            busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            return False
        if busy:  # (a reader holds the log: it is not emptied, and stays whole)
            return False
        try:
            self._end_session(session, ended)
            return True
        except sqlite3.Error:
            self._rollback()
        try:
            if self.db.execute("PRAGMA journal_mode=OFF").fetchone()[0] != "off":
                return False
            self.db.execute("DELETE FROM meta WHERE key=? AND value=?",
                            (WRITING_KEY, str(self.session)))
        except sqlite3.Error:
            return False
        self._note("the end of the session was not recorded (the disk is full); all else it wrote "
                   "is in the journal")
        return True


def _statements(messages: list[tuple], fold: bool
                ) -> list[tuple[str, list[tuple], Callable[[tuple], str]]]:
    """The SQL for a group of messages: ``(statement, rows, label of a row)``
    in the order they must run; with *fold*, a new job's latest state goes into
    its INSERT (an UPDATE of each new row cost the writer more than the insert)."""
    new_jobs: list[tuple] = []
    events: list[tuple] = []  # one row per batch the driver sent
    rows: dict[str, tuple] = {}
    metas: list[tuple[str, str]] = []
    for message in messages:
        if message[0] == "jobs":
            new_jobs += message[1]
            if message[2] is not None:
                events.append(eventlog.batch_row(*message[2]))
            rows.update((row[-1], row) for row in message[3])  # the latest state wins
        elif message[0] == "meta":
            metas.append((message[1], message[2]))
    groups: list[tuple[str, list[tuple], Callable[[tuple], str]]] = []
    if new_jobs:
        columns = _JOB_COLUMNS + (_STATE_COLUMNS if fold else ())
        inserted: tuple[list[tuple], list[tuple]] = ([], [])  # (as they are, results kept)
        for row in new_jobs:
            state = rows.get(row[0], _NO_STATE)
            inserted[type(state[_RESULT]) is KeptResult].append(
                (*row[:8], _json_or_text(row[8]), row[9], row[10], *(state[:-1] if fold else ())))
        for inserts, statement in zip(inserted, (_insert(columns), _insert_keeping_result(columns)),
                                      strict=True):
            if inserts:
                groups.append((statement, inserts, lambda row: f"job {row[0]}"))
        if fold:
            for row in new_jobs:
                rows.pop(row[0], None)
    if events:
        groups.append((eventlog.INSERT, events,
                       lambda row: f"a batch of {len(row[2]) // 2} state changes"))
    full = [row for row in rows.values() if type(row[_RESULT]) is not KeptResult]
    kept = [row for row in rows.values() if type(row[_RESULT]) is KeptResult]
    for state_rows, statement in ((full, _UPDATE_STATE), (kept, _UPDATE_STATE_BUT_RESULT)):
        if state_rows:
            groups.append((statement, state_rows, lambda row: f"the state of job {row[-1]}"))
    if metas:
        groups.append(("INSERT OR REPLACE INTO meta VALUES (?, ?)", metas,
                       lambda row: f"the run setting {row[0]!r}"))
    return groups


#: A job's columns as written when it is added, and those of its state.
_JOB_COLUMNS = ("id", "int_id", "seq", "key", "name", "kind", "command", "spec", "deps",
                "session", "slot")
_STATE_COLUMNS = ("status", "reason", "exit_code", "attempts", "native_id", "started", "ended",
                  "jobdir", "result", "error", "live")
_RESULT = _STATE_COLUMNS.index("result")


def _insert(columns: tuple[str, ...]) -> str:
    return (f"INSERT OR REPLACE INTO jobs ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})")


def _insert_keeping_result(columns: tuple[str, ...]) -> str:
    """:func:`_insert` of a job restored from the row of its id, whose result
    that row keeps (a REPLACE would empty it: the row is made again)."""
    return (f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            "ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{column}=excluded.{column}" for column in columns
                        if column not in ("id", "result")))


#: A state row's UPDATE, and one that leaves the result as it is (numbered
#: parameters: the row keeps its shape, its KeptResult bound and not used).
_UPDATE_STATE = (f"UPDATE jobs SET {', '.join(f'{column}=?' for column in _STATE_COLUMNS)} "
                 "WHERE id=?")
_UPDATE_STATE_BUT_RESULT = "UPDATE jobs SET {} WHERE id=?{}".format(
    ", ".join(f"{column}=?{number}" for number, column in enumerate(_STATE_COLUMNS, 1)
              if column != "result"), len(_STATE_COLUMNS) + 1)
#: The state of a job not known yet (all NULL), and its id.
_NO_STATE = (None,) * (len(_STATE_COLUMNS) + 1)


#: Where a job's directory and its live output files are, in a state row: paths,
#: kept as bytes when they are no UTF-8 (the reader decodes them back).
_PATH_COLUMNS = (_STATE_COLUMNS.index("jobdir"), _STATE_COLUMNS.index("live"))
_BLOB_COLUMNS = tuple(_STATE_COLUMNS.index(name) for name in ("result", "error", "live"))


def _lighter(sql: str, row: tuple) -> list[tuple]:
    """What to try instead of a refused *row*, in order: its text storable
    (SQLite stores UTF-8 only, and a reason may quote a file name's raw
    bytes), then for a state row the same without its blobs."""
    state = sql.startswith("UPDATE jobs")
    storable = tuple(_storable(value, state and index in _PATH_COLUMNS)
                     for index, value in enumerate(row))
    if not state:
        return [storable]
    return [storable, tuple(None if index in _BLOB_COLUMNS else value
                            for index, value in enumerate(storable))]


def _storable(value: object, path: bool) -> object:
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: undecodable bytes Python kept
        return os.fsencode(value) if path else value.encode(
            "utf-8", "backslashreplace").decode("utf-8")
    return value


def _json_or_text(value: object) -> object:
    """Dependencies as JSON; a value JSON refuses is passed on as it is, so
    that SQLite refuses that one row (named) rather than the whole batch."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return value


_Bound = TypeVar("_Bound", None, bytes)


def _as_it_is(value: _Bound) -> _Bound:
    return value


def _bind_none_and_bytes_quickly() -> None:
    """Have :mod:`sqlite3` bind ``None`` and ``bytes`` through an adapter
    that returns them as they are (this process's own setting: it is the
    writer's, and the writer's alone).

    sqlite3 binds int, float and str directly, but for every other value it
    looks for an adapter, then for ``__adapt__`` and ``__conform__``; a miss,
    the usual case for a NULL column, costs about 0.2 µs per value. A state
    row is mostly NULLs: this took a third of the writer's statement time.
    """
    sqlite3.register_adapter(type(None), _as_it_is)
    sqlite3.register_adapter(bytes, _as_it_is)


def main() -> None:
    # Its stdin and stdout are the driver's pipes; its stderr the driver's, if
    # it had one (see corral.runtime.stdfds: a print to no stderr went down
    # the answer pipe).
    open_standard_fds()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when we stop
    allow_signals()  # SIGTERM ends us, whichever thread of the driver started us
    _bind_none_and_bytes_quickly()
    # Background work: on a busy machine the jobs and the driver come first. The
    # writer still gets its share, and the 1 MB pipe absorbs what it lags behind.
    with contextlib.suppress(OSError):
        os.nice(10)
    writer = _Writer(sys.argv[1], int(sys.argv[2]))
    reader = _Reader(sys.stdin.fileno())
    replies = sys.stdout.fileno()
    try:
        _serve(writer, reader, replies)
    except BaseException:  # ended as when the driver dies, its note taken away: an
        traceback.print_exc()  # uncaught error left the note, and the run was refused as
        _end(writer, replies, None, None, status=1)  # incomplete (re-attack review)


def _serve(writer: _Writer, reader: _Reader, replies: int) -> NoReturn:
    """Write what the driver sends, answer its syncs, and end when it says so or
    is gone. A sync whose answer finds the driver gone (killed as it waited)
    is no error: what follows is written, and the end comes with its pipe's."""
    while True:
        # (while changes are held for want of room, they are tried again every second)
        reader.fill(block=True, timeout=RETRY_HELD_S if writer.held else None)
        pending = reader.messages()
        if pending and pending[-1][0] == "jobs" and not reader.closed:
            time.sleep(GROUP_COMMIT_S)  # let more pile up: one commit for all of them
            reader.fill(block=False)
            pending += reader.messages()
        batch: list[tuple] = []
        for message in pending:
            if message[0] in ("sync", "stop"):
                writer.write(batch, now=True)
                batch = []
                if message[0] == "sync":
                    problems = writer.report_since_last_sync() or writer.holding_back()
                    with contextlib.suppress(OSError):  # (the driver is gone: see above)
                        os.write(replies, b"ok\n" if problems is None else
                                 f"error: {problems}\n".encode(errors="replace"))
                else:
                    _end(writer, replies, message[1], message[2])
            else:
                batch.append(message)
        writer.write(batch)
        if reader.closed:  # the driver died: what it sent is written; nothing more comes
            _end(writer, replies, None, None, status=1)


#: Seconds between tries of changes held for want of room.
RETRY_HELD_S = 1.0

def _one_line(problems: list[str], count: int) -> str | None:
    if not problems:
        return None
    text = "; ".join(problems[:3])
    if count > 3:
        text += f" (and {count - 3} more problems)"
    return text


def _end(writer: _Writer, replies: int, session: int | None, ended: float | None,
         status: int = 0) -> None:
    """Finish the journal, tell the driver what could not be written, exit."""
    writer.stop(session, ended)
    problems = writer.report()
    if problems is not None:
        with contextlib.suppress(OSError):
            os.write(replies, f"error: {problems}\n".encode(errors="replace"))
    _exit(1 if problems is not None else status)


def _exit(status: int) -> NoReturn:
    """End the writer with *status*. Not by SystemExit: under ``PYTHONINSPECT``
    (or ``python -i``) Python prints it as a traceback and ends with status 1,
    and every journaled run ended with a false JournalError ("its writer
    process ended with status 1", attack review). Nothing is left to run at
    exit: the journal is closed, and what is said, flushed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
