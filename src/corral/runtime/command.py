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
command's pidfd and on its request pipe at once: the driver asks it to kill
or terminate (abort) the command with a message on that pipe, never with a
signal, so a request can neither arrive before the command exists nor be
taken for the next job's (the pipe keeps the order of what the driver sent).
"""

from __future__ import annotations

import os
import pickle
import select
import shutil
import signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["run_command", "describe_exit", "KILL", "TERMINATE"]

#: Messages the driver sends about a running command: ``(KILL, job_id)``.
KILL = "kill"
TERMINATE = "terminate"


def run_command(job_id: object, argv: Sequence[str], environment: Mapping[bytes, bytes],
                cwd: str | None, home: str, requests: Connection) -> tuple[int | None, str | None]:
    """Run *argv* to its end; return ``(exit status, None)`` or ``(None, why it could not start)``.

    The exit status is negative for a command killed by a signal, as in
    :mod:`subprocess`. *home* is the worker's own directory, restored after
    a *cwd* of the job's own. *requests* is the worker's request pipe, read
    for kill and terminate messages about this job.
    """
    try:
        pid = _spawn(list(argv), dict(environment), cwd, home)
    except OSError as error:
        return None, str(error)
    try:
        ended = os.pidfd_open(pid)
    except OSError:  # cannot watch it: wait for it, kills still reach it through the tree
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), None
    watched: list = [ended, requests]
    try:
        while True:
            ready, _, _ = select.select(watched, [], [])
            if ended in ready:
                break
            try:
                action, about = pickle.loads(requests.recv_bytes())
            except (EOFError, OSError):  # the driver is gone: so is the command
                action, about = KILL, job_id
                watched = [ended]  # the pipe stays at its end: do not read it again
            if about != job_id:
                continue
            if action == KILL:
                _kill_everything_we_started()
            elif action == TERMINATE:
                _signal_group(pid, signal.SIGTERM)
    finally:
        os.close(ended)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), None


def describe_exit(returncode: int) -> str:
    """How a process ended, in a job's reason: "exit code 3", "killed by SIGKILL"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"


def is_stale_message(message: object) -> bool:
    """A kill or terminate request that reached an idle worker: its command had ended."""
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
    found = shutil.which(program, path=search)
    if found is None:
        raise FileNotFoundError(2, "No such file or directory", program)
    if len(_found) < 1024:
        _found[(program, search)] = found
    return found


def _spawn(argv: list[str], environment: dict[bytes, bytes], cwd: str | None, home: str) -> int:
    """Start *argv* in a new session with stdin from /dev/null.

    ``posix_spawn`` is several times cheaper than ``fork``+``exec`` from
    Python. It would look the program up in the worker's own PATH, so the
    program is looked up here in the job's; a job directory of its own is
    entered around the spawn (the worker runs one job at a time).
    """
    program = argv[0]
    if "/" not in program:
        search = os.fsdecode(environment.get(b"PATH", os.fsencode(os.defpath)))
        program = _found.get((program, search)) or _look_up(program, search)
    if cwd is not None:
        os.chdir(cwd)
    try:
        return os.posix_spawn(program, argv, environment, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        ])
    finally:
        if cwd is not None:
            os.chdir(home)
