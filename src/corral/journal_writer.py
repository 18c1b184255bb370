"""The journal's writer process: turns batches of changes into SQLite transactions.

The control loop must never wait for the disk, and on a small machine even a
writer *thread* slowed small jobs by half: SQLite's work and the binding of
every row contend with the loop for the GIL. So the driver pickles each batch
(what changed in one loop iteration) down a pipe to this process, which writes
on a core of its own.

Messages are length-prefixed pickles on stdin:

* ``("jobs", new_jobs, events, rows)`` — new job rows, event rows, state rows;
* ``("meta", key, value)`` — a run-wide setting;
* ``("sync",)`` — answer ``b"ok\\n"`` (or ``b"error: ...\\n"``) on stdout once
  everything before it is committed;
* ``("stop", session, ended)`` — commit the rest, close the session, exit.

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

__all__ = ["HEADER", "main"]

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

    def fill(self, block: bool) -> None:
        with self._arrived:
            if block:
                self._arrived.wait_for(lambda: self._chunks)
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


class _Writer:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.error: str | None = None

    def write(self, messages: list[tuple]) -> None:
        new_jobs: list[tuple] = []
        events: list[tuple] = []
        rows: dict[str, tuple] = {}
        metas: list[tuple[str, str]] = []
        for message in messages:
            if message[0] == "jobs":
                new_jobs += message[1]
                events += message[2]
                rows.update((row[-1], row) for row in message[3])  # the latest state wins
            elif message[0] == "meta":
                metas.append((message[1], message[2]))
        if not (new_jobs or events or rows or metas):
            return
        db = self.db
        try:
            db.execute("BEGIN")
            if new_jobs:
                db.executemany(
                    "INSERT OR REPLACE INTO jobs (id, int_id, seq, key, name, kind, command, spec, "
                    "deps, session) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*row[:8], json.dumps(row[8]), row[9]) for row in new_jobs])
            if events:
                db.executemany("INSERT INTO events (job_id, time, old, new, reason) "
                               "VALUES (?, ?, ?, ?, ?)", events)
            if rows:
                db.executemany(
                    "UPDATE jobs SET status=?, reason=?, exit_code=?, attempts=?, native_id=?, "
                    "started=?, ended=?, jobdir=?, result=?, error=?, live=? WHERE id=?",
                    list(rows.values()))
            if metas:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", metas)
            db.execute("COMMIT")
        except Exception as error:  # the batch is lost; the error is kept for the next sync
            if db.in_transaction:
                db.execute("ROLLBACK")
            if self.error is None:
                print(f"corral: cannot write the journal: {error}", file=sys.stderr, flush=True)
            self.error = str(error)

    def stop(self, session: int, ended: float) -> None:
        self.db.execute("UPDATE sessions SET ended=? WHERE id=?", (ended, session))
        self.db.close()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when we stop
    # Background work: on a busy machine the jobs and the driver come first. The
    # writer still gets its share, and the 1 MB pipe absorbs what it lags behind.
    with contextlib.suppress(OSError):
        os.nice(10)
    writer = _Writer(sys.argv[1])
    reader = _Reader(sys.stdin.fileno())
    replies = sys.stdout.fileno()
    while True:
        reader.fill(block=True)
        pending = reader.messages()
        if pending and pending[-1][0] == "jobs" and not reader.closed:
            time.sleep(GROUP_COMMIT_S)  # let more pile up: one commit for all of them
            reader.fill(block=False)
            pending += reader.messages()
        batch: list[tuple] = []
        for message in pending:
            if message[0] in ("sync", "stop"):
                writer.write(batch)
                batch = []
                if message[0] == "sync":
                    answer = b"ok\n" if writer.error is None else f"error: {writer.error}\n".encode()
                    os.write(replies, answer)
                else:
                    writer.stop(message[1], message[2])
                    sys.exit(0 if writer.error is None else 1)
            else:
                batch.append(message)
        writer.write(batch)
        if reader.closed:  # the driver died: what it sent is written; nothing more comes
            sys.exit(1)


if __name__ == "__main__":
    main()
