"""One journal writer at a time, across sessions.

A journaled driver hands its rows to a writer process (:mod:`corral.journal.writer`),
which outlives it for a moment when the driver is killed: it still commits what
the driver had sent. The run's own lock is the driver's, so a driver started
right after could take the run, read the journal and write its own rows while
the dead driver's writer was still behind: its late rows then overwrote the new
session's (a job completed, then shown SUBMITTED, ran once more).

So each session locks ``writer.lock`` before it reads the journal, and hands
the locked file to its writer process, which holds it (an inherited descriptor:
the lock is the open file's) for as long as it lives, however its driver ends.
The next session waits for that lock: a writer that is merely behind finishes
its rows first; one that is stopped (SIGSTOP, Ctrl-Z: nothing would ever let it go
on, its driver gone) is let go on, to do the same; one that does not finish within
:data:`EARLIER_WRITER_PATIENCE_S` (stuck on a dead disk, held by a debugger) is
killed, and what it had not committed is lost, as it would be had it died with
its driver.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import stat
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from corral.runtime.procstate import process_state

if TYPE_CHECKING:
    import psutil

__all__ = ["WRITER_LOCK_FILE", "take_writer_lock", "note_writer"]

WRITER_LOCK_FILE = "writer.lock"
#: Seconds a new session waits for an earlier session's writer to finish.
EARLIER_WRITER_PATIENCE_S = 10.0
#: Seconds waited for an earlier writer before the user is told.
_QUIET_WAIT_S = 0.5
#: What an earlier writer's command line holds (its boot code names the module).
_WRITER_MARK = "corral.journal.writer"

log = logging.getLogger("corral.journal")


def _open(run_dir: Path) -> IO[str]:
    """The lock file, opened (made if missing).

    Raises:
        OSError: it cannot be a lock (a directory, a dangling link, a pipe),
            with a message that names it.
    """
    path = run_dir / WRITER_LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                             | os.O_NONBLOCK, 0o600)
    except OSError as error:
        raise OSError(error.errno, f"cannot use {path} as the journal writer's lock: "
                                   f"{error.strerror}; remove it") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, f"cannot use {path} as the journal writer's lock: not a "
                                    "regular file; remove it")
    return os.fdopen(descriptor, "r+")


def take_writer_lock(run_dir: Path, patience: float | None = None) -> IO[str]:
    """The lock of the journal in *run_dir*, once no earlier session's writer
    holds it (the caller holds the run's own lock, so no new one starts).
    Pass the returned file to the writer process and note its pid with
    :func:`note_writer`; close it here once the writer has it.

    Raises:
        TimeoutError: an earlier writer holds it still, even once killed.
    """
    patience = EARLIER_WRITER_PATIENCE_S if patience is None else patience
    handle = _open(run_dir)
    try:
        if _locked_within(handle, _QUIET_WAIT_S):  # (one finishing its last rows: no word)
            return handle
        handle.seek(0)
        pid = handle.read().strip()
        continued = _continue_if_stopped(pid, run_dir)
        log.warning("waiting up to %g s for the journal writer of an earlier session of %s "
                    "(pid %s, its driver gone%s) to write what it holds", patience, run_dir,
                    pid or "?", "; it was stopped: let go on" if continued else "")
        if _locked_within(handle, patience):
            return handle
        log.warning("the journal writer of an earlier session of %s (pid %s) did not finish "
                    "within %g s: killing it (what it had not written is lost)", run_dir,
                    pid or "?", patience)
        _kill_writer(pid, run_dir)
        if _locked_within(handle, patience):
            return handle
    except BaseException:
        handle.close()
        raise
    handle.close()
    raise TimeoutError(f"the journal writer of an earlier session of {run_dir} (pid "
                       f"{pid or '?'}) still holds {WRITER_LOCK_FILE}")


def note_writer(handle: IO[str], pid: int) -> None:
    """Write the pid of the writer that holds the lock, for a later session
    that may have to kill it."""
    handle.seek(0)
    handle.truncate()
    handle.write(str(pid))
    handle.flush()


def _locked_within(handle: IO[str], seconds: float) -> bool:
    """Take the lock within *seconds*; whether it could be taken."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
            continue
        return True


def _continue_if_stopped(pid_text: str, run_dir: Path) -> bool:
    """Let the writer *pid_text* names go on if it is the journal writer of the
    run in *run_dir* and stopped (SIGSTOP, Ctrl-Z); whether it was. Its driver
    is gone, so nothing else would: killed instead, it would lose what it holds."""
    process = _earlier_writer(pid_text, run_dir)
    if process is None or process_state(process.pid) != "T":
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(process.pid, signal.SIGCONT)
        return True
    return False


def _kill_writer(pid_text: str, run_dir: Path) -> None:
    """Kill the process *pid_text* names if it is the journal writer of the run in *run_dir*."""
    process = _earlier_writer(pid_text, run_dir)
    if process is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, signal.SIGKILL)


def _earlier_writer(pid_text: str, run_dir: Path) -> psutil.Process | None:
    """The process *pid_text* names if it is the journal writer of the run in
    *run_dir* (a pid may have been reused since it was written), else None."""
    if not pid_text.isdigit():
        return None
    import psutil

    inside = os.fspath(run_dir) + os.sep
    try:
        process = psutil.Process(int(pid_text))
        words = process.cmdline()
    except psutil.Error:
        return None
    if _WRITER_MARK not in " ".join(words) or not any(word.startswith(inside)
                                                      for word in words):
        return None
    return process
