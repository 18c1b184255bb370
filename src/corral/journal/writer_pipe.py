"""Talking to the journal writer, and saying why when it takes nothing.

The driver hands its batches of changes to the writer process through a pipe
of 1 MiB, and waits for its answer when a change must be committed before it
goes on (a ``corral submit``'s job). While the writer commits, that is
quick; a writer that takes nothing (stopped with SIGSTOP or held by a
debugger, or waiting on a hung file system) would block the driver's control
loop with no word: no job would start or end, no ``corral`` command would be
answered, and Ctrl-C would wait with it. So the pipe is written without
blocking, and the answer waited for with a look at the clock:

* after :data:`QUIET_S` of waiting the driver says, once, what it waits for
  (the writer's pid and state), and when the writer goes on, that it did;
* a writer found *stopped* (SIGSTOP, a debugger) for the caller's *patience*
  raises :class:`WriterStalled`: the journal replaces it (see
  ``Journal._take_over`` in :mod:`corral.journal.store`), which loses nothing,
  as every batch is kept until committed.

A writer that runs is waited for however slow (and named): one that commits a
backlog to a slow disk answers late but answers, and a new one would be no
quicker on the same disk. :func:`stopped_for` tells the driver, between its
writes, of a writer stopped while nothing waited on it.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import time
from pathlib import Path

from corral.runtime.procstate import process_state

__all__ = ["QUIET_S", "WriterStalled", "write_to_writer", "wait_for_answer", "wait_for_end",
           "stopped_for"]

#: How long the driver waits on the writer before it says so.
QUIET_S = 5.0
#: How often a waiting driver looks at the writer again.
_LOOK_S = 1.0

log = logging.getLogger(__name__)


class WriterStalled(TimeoutError):
    """The writer was stopped for the patience it was given while the driver waited."""


class _Wait:
    """One wait on the writer: when it began, whether it was said, and the
    give-up (see the module docstring)."""

    def __init__(self, what: str, writer_pid: int, run_dir: Path, patience: float) -> None:
        self.what, self.pid, self.run_dir, self.patience = what, writer_pid, run_dir, patience
        self.began = time.monotonic()
        self.stopped_since: float | None = None
        self.said_at: float | None = None

    def blocked(self, done: str) -> None:
        """Note that the writer takes nothing now (*done*: what it took so far);
        say so once it has lasted, and give up on a writer stopped for the patience."""
        now = time.monotonic()
        state = process_state(self.pid)
        self.stopped_since = _stopped_since(state, self.stopped_since, now)
        if self.stopped_since is not None and now - self.stopped_since >= self.patience:
            raise WriterStalled(f"it was {_STOPPED.get(state or '', 'stopped')} for "
                                f"{now - self.stopped_since:.0f} s")
        if self.said_at is None and now - self.began >= QUIET_S:
            self.said_at = self.began
            log.warning("the journal writer of %s (pid %d) has %s in %.0f s%s: the run waits "
                        "for it (a writer stopped for %.0f s is replaced)", self.run_dir,
                        self.pid, done or f"not {self.what}", now - self.began,
                        _why(state, self.pid), self.patience)

    def ended(self) -> None:
        if self.said_at is not None:
            log.warning("the journal writer of %s (pid %d) goes on, after %.0f s",
                        self.run_dir, self.pid, time.monotonic() - self.said_at)


def write_to_writer(descriptor: int, data: bytes, writer_pid: int, run_dir: Path,
                    patience: float) -> None:
    """Write all of *data* to the writer's pipe (*descriptor*, non-blocking).

    Raises:
        BrokenPipeError: the writer is gone (its end of the pipe closed).
        WriterStalled: it was stopped for *patience* seconds while the pipe was full.
    """
    view = memoryview(data)
    wait = _Wait("taken anything", writer_pid, run_dir, patience)
    watch: select.poll | None = None
    while view:
        try:
            written = os.write(descriptor, view)
        except BlockingIOError:
            taken = len(data) - len(view)
            wait.blocked(f"taken only {taken >> 10} of {len(data) >> 10} KiB" if taken else "")
            if watch is None:
                watch = select.poll()
                watch.register(descriptor, select.POLLOUT)
            watch.poll(_LOOK_S * 1000)  # (a closed reader wakes it: the write then raises)
            continue
        view = view[written:]
    wait.ended()


def wait_for_answer(descriptor: int, writer_pid: int, run_dir: Path, patience: float) -> None:
    """Return once the writer's answer (or its end) can be read from *descriptor*.

    Raises:
        WriterStalled: it was stopped for *patience* seconds before it answered.
    """
    wait = _Wait("answered", writer_pid, run_dir, patience)
    watch = select.poll()
    watch.register(descriptor, select.POLLIN)
    while not watch.poll(_LOOK_S * 1000):
        wait.blocked("")
    wait.ended()


def wait_for_end(process: subprocess.Popen, run_dir: Path, patience: float,
                 stopped_patience: float) -> int:
    """Wait for the writer *process*, told to end, to end; its exit status. One
    still there after *patience* seconds, or stopped for *stopped_patience*
    (it would never end), is killed."""
    wait = _Wait("ended", process.pid, run_dir, stopped_patience)
    while True:
        try:
            code = process.wait(timeout=_LOOK_S)
        except subprocess.TimeoutExpired:
            try:
                wait.blocked("")
                if time.monotonic() - wait.began < patience:
                    continue
                why = f"it had not ended after {patience:.0f} s"
            except WriterStalled as error:
                why = str(error)
            log.warning("the journal writer of %s (pid %d) is killed: %s", run_dir,
                        process.pid, why)
            process.kill()
            return process.wait()
        wait.ended()
        return code


def stopped_for(writer_pid: int, since: float | None) -> float | None:
    """When the writer was first seen stopped (*since*, kept by the caller
    between looks, or now), or None if it is not stopped now."""
    return _stopped_since(process_state(writer_pid), since, time.monotonic())


def _stopped_since(state: str | None, since: float | None, now: float) -> float | None:
    """*since* (or *now*, if it was not stopped before) while *state* is a
    stopped one; None once it runs."""
    if state not in _STOPPED:
        return None
    return now if since is None else since


#: The states of a stopped process, and what to call them.
_STOPPED = {"T": "stopped", "t": "held by a debugger"}


def _why(state: str | None, pid: int) -> str:
    """What the writer's state says of why it takes nothing."""
    if state == "T":
        return f" (it is stopped: kill -CONT {pid} lets it go on)"
    if state == "t":
        return " (a debugger holds it: it goes on when the debugger lets it)"
    if state == "D":
        return (" (it waits on the disk: for a large value to be written, or on a disk or "
                "file system that is slow or does not answer)")
    return ""
