"""Run one script or shell command inside a worker process.

Commands are started by the local backend's persistent workers, not by the
driver, because a worker is a child subreaper (see :mod:`corral.runtime.guard`):
whatever a command leaves behind — a ``setsid``'d daemon, a double-forked
grandchild — is re-parented to the worker when its own parent exits, so the
worker can kill it when the command ends, and everything dies with the worker
when the driver dies. Started by the driver directly, such a grandchild
escaped every kill.

The command inherits the worker's descriptors 1 and 2 (its spool files) and
runs in a session of its own. While it runs, the worker waits on the
command's pidfd and on its :class:`StopRequests` at once: the driver asks it
to kill or terminate (abort) the command with a message on the request pipe,
never with a signal, so a request can neither arrive before the command
exists nor be taken for the next job's (the pipe keeps the order of what the
driver sent; the worker's doorbell thread passes it on, tagged with the job).
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Mapping, Sequence

from corral.runtime.execute import enter_cwd, go_home

__all__ = ["run_command", "describe_exit", "KILL", "TERMINATE", "StopRequests",
           "TERM_GRACE_S"]

#: Messages the driver sends about a running command: ``(KILL, job_id)``.
KILL = "kill"
TERMINATE = "terminate"

#: How long a command that is killed (its timeout, a cancel) has between the
#: SIGTERM to its process group and the SIGKILL to everything it started: a
#: shell's ``trap ... TERM`` runs, as under Slurm (whose KillWait is 30 s) or
#: ``timeout(1)``. Killed at once before, no cleanup ran (review). Well under
#: the driver's own wait for a worker that cannot act (local backend).
TERM_GRACE_S = 2.0


class StopRequests:
    """Kill and terminate requests for the running command, passed from the
    thread that reads the driver's pipe to the one that waits for the command:
    a pipe to wake it, and the requests, each tagged with its job."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._pending: list[tuple[object, str]] = []

    def fileno(self) -> int:
        return self._read

    def post(self, job_id: object, action: str) -> None:
        with self._lock:
            self._pending.append((job_id, action))
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:  # full: a wake-up is pending anyway
            pass

    def forget(self) -> None:
        """Drop every request posted so far: a new command starts, and those
        were about the one before it. A retry has its job's id: a kill posted
        as the first attempt ended on its own was taken by the retry, and
        killed it at its start."""
        with self._lock:
            self._pending = []

    def take(self, job_id: object) -> list[str]:
        """The requests about *job_id* (those about earlier jobs are stale: dropped)."""
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            pending, self._pending = self._pending, []
        return [action for about, action in pending if about == job_id]


def run_command(job_id: object, argv: Sequence[str], environment: Mapping[bytes, bytes],
                cwd: str | None, home: str, stop_requests: StopRequests,
                ) -> tuple[int | None, str | None]:
    """Run *argv* to its end; return ``(exit status, None)`` or ``(None, why it could not start)``.

    The exit status is negative for a command killed by a signal, as in
    :mod:`subprocess`. *home* is the worker's own directory, restored after
    a *cwd* of the job's own. *stop_requests* brings the driver's kill and
    terminate requests about this job.
    """
    try:
        pid = _spawn(list(argv), dict(environment), cwd, home)
    except (OSError, ValueError) as error:  # ValueError: a NUL in a word an upstream job's
        return None, str(error)  # result gave it (re-attack review: the worker died of it)
    try:
        ended = os.pidfd_open(pid)
    except OSError:  # cannot watch it: wait for it, kills still reach it through the tree
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), None
    kill_at = None  # once killed: when its grace is over
    killed = terminated = False
    try:
        while True:
            wait = None if kill_at is None else max(0.0, kill_at - time.monotonic())
            ready, _, _ = select.select([ended, stop_requests.fileno()], [], [], wait)
            if ended in ready:
                break
            if kill_at is not None and time.monotonic() >= kill_at:
                _kill_everything_we_started()
                kill_at = None
            for action in stop_requests.take(job_id):
                if action == KILL and kill_at is None and not terminated:
                    if select.select([ended], [], [], 0)[0]:
                        break  # it ended first: as it ended, not as killed
                    _signal_group(pid, signal.SIGTERM)
                    kill_at = time.monotonic() + TERM_GRACE_S
                    killed = True
                elif action == KILL:  # asked twice, or after an abort's grace: no more
                    _kill_everything_we_started()
                elif action == TERMINATE:
                    _signal_group(pid, signal.SIGTERM)
                    terminated = True
    finally:
        os.close(ended)
    _, status = os.waitpid(pid, 0)
    if kill_at is not None:  # it ended within its grace: what it started has the rest
        from corral.runtime.proctree import wait_for_descendants

        wait_for_descendants(kill_at)
        _kill_everything_we_started()
    code = os.waitstatus_to_exitcode(status)
    # A trap that exits 0 on the kill's SIGTERM did not complete the command's
    # work: said killed by it, not taken for a completion (a resumed run would
    # not run it again).
    return (-signal.SIGTERM if killed and code == 0 else code), None


def describe_exit(returncode: int) -> str:
    """How a process ended, in a job's reason: "exit code 3", "killed by SIGKILL"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"


def how_it_ended(returncode: int | None) -> str:
    """How a process ended, as the end of a sentence about it: "exited with
    code 3", "was killed by SIGKILL" ("is gone" when that is all we know)."""
    if returncode is None:
        return "is gone"
    if returncode < 0:
        return f"was {describe_exit(returncode)}"
    return f"exited with code {returncode}"


def is_kill_or_terminate(message: object) -> bool:
    """A kill or terminate request about a command (one that reaches a worker
    between commands is stale: its command has ended)."""
    return isinstance(message, tuple) and len(message) == 2 and message[0] in (KILL, TERMINATE)


def _kill_everything_we_started() -> None:
    """Kill the command's tree and whatever it orphaned: all of it is the
    worker's own tree, since the worker adopts orphans."""
    from corral.runtime.proctree import kill_tree

    kill_tree(os.getpid(), include_root=False)


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


#: Programs found on a PATH before: a stat per PATH entry saved per command.
_found: dict[tuple[str, str], str] = {}


def _look_up(program: str, search: str) -> str:
    import shutil  # (a worker that runs no command never needs it)

    found = shutil.which(program, path=search)
    if found is None:
        raise FileNotFoundError(2, "No such file or directory", program)
    if len(_found) < 1024:
        _found[(program, search)] = found
    return found


#: The signals a command starts with their default action (see :func:`_spawn`).
_DEFAULT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGPIPE", "SIGXFSZ")
                         if hasattr(signal, name))


def _spawn(argv: list[str], environment: dict[bytes, bytes], cwd: str | None, home: str) -> int:
    """Start *argv* in a new session with stdin from /dev/null.

    ``posix_spawn`` is several times cheaper than ``fork``+``exec`` from
    Python. It would look the program up in the worker's own PATH, so the
    program is looked up here in the job's; a job directory of its own is
    entered around the spawn (the worker runs one job at a time).

    The program gets the signals a shell would give it: an ignored signal
    stays ignored across ``exec``, and the worker ignores SIGINT (Ctrl-C is
    the driver's) and, as Python does, SIGPIPE and SIGXFSZ. A ``yes | head``
    would otherwise end with "Broken pipe" and a job's own SIGINT trap never fire.
    """
    program = argv[0]
    if "/" not in program:
        search = os.fsdecode(environment.get(b"PATH", os.fsencode(os.defpath)))
        program = _found.get((program, search)) or _look_up(program, search)
    go_home(home) if cwd is None else enter_cwd(cwd)  # (wherever a job before moved it)
    try:
        return os.posix_spawn(program, argv, environment, setsid=True,
                              setsigdef=_DEFAULT_SIGNALS, setsigmask=(), file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        ])
    finally:
        if cwd is not None:
            go_home(home)
