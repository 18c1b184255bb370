"""Running a scheduler's command: the one place the batch backends start a process."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

from corral.errors import BackendError
from corral.runtime.threads import signals_allowed, start_thread

__all__ = ["run_command", "CommandInFlight", "COMMAND_TIMEOUT_S", "Usable", "start_command",
           "collect_output", "CommandTimedOut"]

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
        process = start_command(argv)
    except (OSError, subprocess.SubprocessError) as error:
        raise BackendError(f"{argv[0]} could not run: {error}") from None
    stdout, stderr = collect_output(process, argv)
    return _stdout_of(argv, process.returncode, stdout, stderr, usable)


class CommandTimedOut(BackendError):
    """A scheduler command did not answer in time: what it did meanwhile is
    unknown (a submit may have submitted), unlike a refusal."""


def start_command(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start a scheduler's command, its output read by :func:`collect_output`."""
    # A session of its own: a site's wrapper script may start children that
    # hold its output open, and a time-out must end them too (attack review:
    # a hung submit wrapper's child was left behind).
    with signals_allowed():
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)


#: The most a scheduler command may print, on each stream: far above any real
#: answer (a status of 100,000 jobs is some 10 MB), and a bound to what one that
#: prints without end costs (a status command of ``yes`` took 4 GB in 10 s and
#: headed for the kernel's out-of-memory killer: attack review).
MOST_OUTPUT_BYTES = 64 * 2**20


def collect_output(process: subprocess.Popen[bytes], argv: Sequence[str],
                   timeout: float | None = None) -> tuple[str, str]:
    """What *process* printed once it ended, each stream decoded (bytes that are
    not UTF-8 replaced). Killed with its session past *timeout* seconds (default
    :data:`COMMAND_TIMEOUT_S`), which raises :class:`CommandTimedOut`, or once a
    stream passes :data:`MOST_OUTPUT_BYTES`, which raises :class:`BackendError`."""
    assert process.stdout is not None and process.stderr is not None, "started with pipes"
    timeout = COMMAND_TIMEOUT_S if timeout is None else timeout
    deadline = time.monotonic() + timeout
    out_fd, err_fd = process.stdout.fileno(), process.stderr.fileno()
    read: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    sizes = dict.fromkeys(read, 0)
    try:
        with selectors.DefaultSelector() as selector:
            for fd in read:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:  # (a child that left its group may hold the pipes open)
                    _kill_group(process)
                    _drain(selector)
                    raise _timed_out(argv, timeout)
                for key, _ in selector.select(left):
                    data = os.read(key.fd, 1 << 16)
                    if not data:
                        selector.unregister(key.fd)
                        continue
                    sizes[key.fd] += len(data)
                    if sizes[key.fd] > MOST_OUTPUT_BYTES:
                        _kill_group(process)
                        _drain(selector)
                        raise BackendError(
                            f"{argv[0]} printed more than {MOST_OUTPUT_BYTES >> 20} MB: no "
                            "answer of a scheduler is that long; it was stopped")
                    read[key.fd].append(data)
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise _timed_out(argv, timeout) from None
    finally:
        process.stdout.close()
        process.stderr.close()
        if process.returncode is None:  # (killed above: reaped, not left a zombie)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
    return (b"".join(read[out_fd]).decode("utf-8", "replace"),
            b"".join(read[err_fd]).decode("utf-8", "replace"))


def _drain(selector: selectors.BaseSelector) -> None:
    """Read what a killed command's pipes still hold, until its processes have
    closed them (they are gone then) or :data:`_DRAIN_S` passed (one that left
    its session holds them): a caller that goes on finds them ended."""
    deadline = time.monotonic() + _DRAIN_S
    while selector.get_map() and (left := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(left):
            if not os.read(key.fd, 1 << 16):
                selector.unregister(key.fd)


#: The most seconds :func:`_drain` waits for a killed command's pipes to close.
_DRAIN_S = 5.0


def _timed_out(argv: Sequence[str], timeout: float) -> CommandTimedOut:
    return CommandTimedOut(f"{argv[0]} could not run: it did not answer within {timeout:.0f} s")


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
        self._process: subprocess.Popen[bytes] | None = None
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
                self._process = start_command(self.argv)
            stdout, stderr = collect_output(self._process, self.argv)
            self._output = _stdout_of(self.argv, self._process.returncode, stdout, stderr,
                                      self._usable)
        except BackendError as error:
            self._error = error
        except (OSError, subprocess.SubprocessError, ValueError) as error:
            self._error = BackendError(f"{self.argv[0]} could not run: {error}")
        finally:
            self._finished.set()
            done.set()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL *process* and every process of its session (it leads one)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
