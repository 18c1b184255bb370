"""A persistent worker process: runs Python calls one after another.

Started by the local backend as ``python -c ...worker.main()`` with two pipe
file descriptors. Each request is one framed pickle::

    (job_id, jobdir, payload, upstream, env, cwd, outcomes)

and each reply is ``(job_id, ok, blob)`` where *blob* is the pickled return
value or a packed exception (see :mod:`corral.runtime.payload`). With
*outcomes* set (a journaled run) the reply is also appended to the run's
outcome log in that directory before it is sent (see :mod:`corral.runtime.outcomes`): a driver
killed in between finds it there when it resumes, instead of running the
job twice.

The worker's file descriptors 1 and 2 go to spool files (so output of C
extensions and child processes is caught too); after each call what the job
wrote moves to its ``stdout``/``stderr`` files. Around every call the worker
applies the job's environment and directory, and afterwards kills any
process the job left behind. It dies with its parent (``PR_SET_PDEATHSIG``)
and adopts orphaned grandchildren (``PR_SET_CHILD_SUBREAPER``) so that no
process of a job can outlive the scheduler.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys

from . import abort
from .execute import kill_leftovers, run_call
from .payload import dumps_error
from .spool import hand_over, open_spool
from .outcomes import OutcomeLog

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


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


class _Spool:
    """Fds 1 and 2 of the worker, pointed at spool files for good (see
    :mod:`corral.runtime.spool`), so a job's output is caught whoever writes
    it: Python, a C extension or a child process."""

    def __init__(self, prefix: str) -> None:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            spool = open_spool(f"{prefix}.{name}")
            os.dup2(spool, fd)  # dup2 clears FD_CLOEXEC: children inherit 1 and 2
            os.close(spool)

    def hand_over(self, jobdir: str) -> None:
        """Move what the last job wrote into *jobdir*."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        hand_over(1, jobdir, "stdout")
        hand_over(2, jobdir, "stderr")


def run_request(message: bytes, home: str, spool: _Spool, outcomes: OutcomeLog) -> bytes:
    """Run one request and return the reply, never raising."""
    job_id, jobdir, payload, upstream, env, cwd, outcomes_dir = pickle.loads(message)
    ok, blob = run_call(job_id, payload, upstream, env, cwd, home)
    reply = (job_id, ok, blob)
    kill_leftovers()
    try:
        spool.hand_over(jobdir)
    except OSError as error:
        reply = (job_id, False, dumps_error(OSError(f"cannot save the job's output: {error}")))
    blob = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
    if outcomes_dir is not None:
        try:
            outcomes.append(outcomes_dir, blob)
        except OSError as error:
            reply = (job_id, False, dumps_error(OSError(f"cannot record the job's outcome: {error}")))
            blob = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
    return blob


def main() -> None:
    """Serve requests until the request pipe closes."""
    from multiprocessing.connection import Connection

    read_fd, write_fd, parent_pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    _bind_to_parent(parent_pid)
    spool = _Spool(sys.argv[4])
    abort.listen(signal.SIGUSR1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    requests = Connection(read_fd, writable=False)
    replies = Connection(write_fd, readable=False)
    home = os.getcwd()
    outcomes = OutcomeLog()
    while True:
        try:
            message = requests.recv_bytes()
        except (EOFError, OSError):
            return
        replies.send_bytes(run_request(message, home, spool, outcomes))
