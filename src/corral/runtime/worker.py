"""A persistent worker process: runs Python calls one after another.

Started by the local backend as ``python -c ...worker.main()`` with two pipe
file descriptors. Each request is one framed pickle::

    (job_id, jobdir, payload, upstream, env, cwd)

and each reply is ``(job_id, ok, blob)`` where *blob* is the pickled return
value or a packed exception (see :mod:`corral.runtime.payload`).

Around every call the worker points file descriptors 1 and 2 at the job's
``stdout``/``stderr`` files (so output of C extensions and child processes is
caught too), applies the job's environment and directory, and afterwards kills
any process the job left behind. It dies with its parent (``PR_SET_PDEATHSIG``)
and adopts orphaned grandchildren (``PR_SET_CHILD_SUBREAPER``) so that no
process of a job can outlive the scheduler.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys

from . import abort
from .payload import dumps_error, dumps_value, loads_call

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the backend's kill path still works
        pass


def _bind_to_parent(parent_pid: int) -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != parent_pid:  # the parent died before the prctl took effect
        os._exit(1)


def _child_pids() -> list[int]:
    """Direct children of this process, read cheaply from /proc."""
    pids: list[int] = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as handle:
                pids.extend(int(pid) for pid in handle.read().split())
    except OSError:
        import psutil

        pids = [child.pid for child in psutil.Process().children()]
    return pids


def _kill_leftovers() -> None:
    """Kill what the job left running, then reap every zombie we adopted."""
    children = _child_pids()
    if children:
        from ..proctree import kill_tree

        for pid in children:
            kill_tree(pid)
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    while True:  # orphans the job's children left and we adopted
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break


class _Redirected:
    """Point fds 1 and 2 at the job's files for the duration of a call."""

    def __init__(self, jobdir: str) -> None:
        self.jobdir = jobdir

    def __enter__(self) -> None:
        try:
            os.mkdir(self.jobdir)
        except FileExistsError:
            pass
        out = os.open(os.path.join(self.jobdir, "stdout"), _OUTPUT_FLAGS, 0o644)
        err = os.open(os.path.join(self.jobdir, "stderr"), _OUTPUT_FLAGS, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)

    def __exit__(self, *exc: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])


class _JobContext:
    """Apply a job's environment and working directory, then put them back."""

    def __init__(self, job_id: object, env: tuple[tuple[str, str], ...], cwd: str | None,
                 home: str) -> None:
        self.changes = dict(env)
        self.changes["CORRAL_JOB_ID"] = str(job_id)
        self.cwd = cwd or home
        self.home = home

    def __enter__(self) -> None:
        self.saved = {key: os.environ.get(key) for key in self.changes}
        os.environ.update(self.changes)
        if self.cwd != self.home:
            os.chdir(self.cwd)

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if os.getcwd() != self.home:
            os.chdir(self.home)


def run_request(message: bytes, home: str) -> bytes:
    """Run one request and return the reply, never raising."""
    job_id, jobdir, payload, upstream, env, cwd = pickle.loads(message)
    abort.reset()
    try:
        with _Redirected(jobdir), _JobContext(job_id, env, cwd, home):
            try:
                target, args, kwargs = loads_call(payload, upstream)
                value = target(*args, **kwargs)
            except BaseException as error:  # the job's failure, reported, not ours
                if isinstance(error, SystemExit) and error.code in (None, 0):
                    reply = (job_id, True, dumps_value(None))
                else:
                    reply = (job_id, False, dumps_error(error))
            else:
                try:
                    reply = (job_id, True, dumps_value(value))
                except Exception as error:
                    unpicklable = TypeError(f"the job's return value cannot be pickled: {error}")
                    reply = (job_id, False, dumps_error(unpicklable))
    except Exception as error:  # cannot even set the job up (disk full, bad cwd)
        reply = (job_id, False, dumps_error(error))
    finally:
        _kill_leftovers()
    return pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)


def main() -> None:
    """Serve requests until the request pipe closes."""
    from multiprocessing.connection import Connection

    read_fd, write_fd, parent_pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    _bind_to_parent(parent_pid)
    abort.listen(signal.SIGUSR1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    requests = Connection(read_fd, writable=False)
    replies = Connection(write_fd, readable=False)
    home = os.getcwd()
    while True:
        try:
            message = requests.recv_bytes()
        except (EOFError, OSError):
            return
        replies.send_bytes(run_request(message, home))
