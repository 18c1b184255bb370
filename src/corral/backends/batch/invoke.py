"""Running a scheduler's command: the one place the batch backends start a process."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

from corral.errors import BackendError
from corral.runtime.threads import signals_allowed, start_thread

__all__ = ["run_command", "CommandInFlight", "COMMAND_TIMEOUT_S", "Usable"]

#: A scheduler command that takes longer is hung (a controller that is down):
#: the caller logs it and tries again at the next poll.
COMMAND_TIMEOUT_S = 60.0


#: A failed command whose output is still an answer: ``usable(returncode, stderr)``
#: (PBS's qstat of several jobs, one of which it forgot, exits 153 and lists the rest).
Usable = Callable[[int, str], bool]


def run_command(argv: Sequence[str], usable: Usable | None = None) -> str:
    """Run a scheduler command (an argv list, never a shell); return its stdout.
    Bytes that are not UTF-8 (another user's job in a Latin-1 directory) are
    replaced, never a reason the whole answer is lost.

    Raises:
        BackendError: it could not start, timed out or exited non-zero (unless
            *usable* says its output is an answer all the same); the message
            names the program and ends with what it printed.
    """
    try:
        process = _start(argv)
    except (OSError, subprocess.SubprocessError) as error:
        raise BackendError(f"{argv[0]} could not run: {error}") from None
    stdout, stderr = _finish(process, argv)
    return _stdout_of(argv, process.returncode, stdout, stderr, usable)


class CommandTimedOut(BackendError):
    """A scheduler command did not answer in time: what it did meanwhile is
    unknown (a submit may have submitted), unlike a refusal."""


def _start(argv: Sequence[str]) -> subprocess.Popen[str]:
    # A session of its own: a site's wrapper script may start children that
    # hold its output open, and a time-out must end them too (attack review:
    # a hung submit wrapper's child was left behind).
    with signals_allowed():
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, encoding="utf-8", errors="replace",
                                start_new_session=True)


def _finish(process: subprocess.Popen[str], argv: Sequence[str]) -> tuple[str, str]:
    """What *process* printed once it ended; killed with its session past
    :data:`COMMAND_TIMEOUT_S`, which raises :class:`CommandTimedOut`."""
    try:
        return process.communicate(timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        try:
            process.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a child that left the group holds the pipes
            pass
        raise CommandTimedOut(f"{argv[0]} could not run: it did not answer within "
                              f"{COMMAND_TIMEOUT_S:.0f} s") from None


def _stdout_of(argv: Sequence[str], returncode: int, stdout: str, stderr: str,
               usable: Usable | None = None) -> str:
    if returncode != 0 and not (usable is not None and usable(returncode, stderr)):
        message = (stderr or stdout).strip().splitlines()
        raise BackendError(f"{argv[0]} exited {returncode}: "
                           f"{' '.join(message[-2:]) or 'no message'}")
    return stdout


class CommandInFlight:
    """A scheduler command run on a thread of its own, for the status query: a
    controller that answers slowly (or hangs until :data:`COMMAND_TIMEOUT_S`)
    then delays only the news, never the control loop that must act on a
    cancel, a pause or a submission meanwhile. *done* is called (from that
    thread) once :meth:`answer` has its answer.
    """

    def __init__(self, argv: Sequence[str], done: threading.Event,
                 usable: Usable | None = None) -> None:
        self.argv = list(argv)
        self._usable = usable
        #: Monotonic time the command was started: what it answers is as of then.
        self.started = time.monotonic()
        self._finished = threading.Event()
        self._output = ""
        self._error: BackendError | None = None
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._abandoned = False
        start_thread(self._run, args=(done,), name=f"corral {self.argv[0]}")

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def finished_within(self, seconds: float) -> bool:
        """Wait up to *seconds* for the command to end; whether it has."""
        return self._finished.wait(seconds)

    def answer(self) -> str:
        """What the command printed, once :attr:`finished`.

        Raises:
            BackendError: it could not start, timed out or exited non-zero.
        """
        if self._error is not None:
            raise self._error
        return self._output

    def abandon(self) -> None:
        """Kill the command and whatever it started if it still runs (the backend
        closes): nothing is left behind waiting for a controller that does not answer."""
        with self._lock:
            self._abandoned = True
            if self._process is not None and not self._finished.is_set():
                _kill_group(self._process)  # still being waited for: its group is alive

    def _run(self, done: threading.Event) -> None:
        try:
            with self._lock:
                if self._abandoned:
                    raise BackendError(f"{self.argv[0]} was abandoned")
                self._process = _start(self.argv)
            stdout, stderr = _finish(self._process, self.argv)
            self._output = _stdout_of(self.argv, self._process.returncode, stdout, stderr,
                                      self._usable)
        except BackendError as error:
            self._error = error
        except (OSError, subprocess.SubprocessError, ValueError) as error:
            self._error = BackendError(f"{self.argv[0]} could not run: {error}")
        finally:
            self._finished.set()
            done.set()


def _kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL *process* and every process of its session (it leads one)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
