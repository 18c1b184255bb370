"""A persistent worker process: runs jobs one after another.

Started by the local backend as ``python -c ...worker.main()`` with two pipe
file descriptors. Each request is one framed pickle, a Python call::

    ("call", job_id, jobdir, payload, upstream, env, cwd, outcomes)

or a script or shell command (see :mod:`corral.runtime.command`)::

    ("command", job_id, jobdir, argv, environment, cwd)

A call's reply is ``(job_id, ok, blob)`` where *blob* is the pickled return
value or a packed exception (see :mod:`corral.runtime.payload`); a command's is
``(job_id, None, (exit status, why it could not start))``. With *outcomes* set
(a journaled run) a call's reply is also appended to the run's outcome log in
that directory before it is sent (see :mod:`corral.runtime.outcomes`): a
driver killed in between finds it there when it resumes, instead of running
the job twice.

The worker's file descriptors 1 and 2 go to spool files (so output of C
extensions and child processes is caught too); after each job what it
wrote moves to its ``stdout``/``stderr`` files. Around every call the worker
applies the job's environment and directory, and after every job it kills
any process the job left behind. It adopts orphaned grandchildren and dies,
with all of them, when the driver dies (see :mod:`corral.runtime.guard`), so
that no process of a job can outlive the scheduler.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from typing import TYPE_CHECKING

from corral.runtime import abort
from corral.runtime.command import is_stale_message, run_command
from corral.runtime.execute import kill_leftovers, run_call
from corral.runtime.guard import become_subreaper, bind_to_parent
from corral.runtime.payload import dumps_error
from corral.runtime.spool import hand_over, open_spool
from corral.runtime.outcomes import OutcomeLog

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

#: Seconds a worker waits for its next request before it exits, where set (the
#: Dask backend's workers outlive the run that started them otherwise).
IDLE_EXIT_VARIABLE = "CORRAL_WORKER_IDLE_EXIT_S"

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


#: The environment of the last command, which the driver does not send again.
_last_environment: list[dict[bytes, bytes]] = [{}]


def run_request(request: tuple, home: str, spool: _Spool, outcomes: OutcomeLog,
                requests: Connection) -> bytes:
    """Run one request and return the reply, never raising."""
    if request[0] == "command":
        _, job_id, jobdir, argv, environment, cwd = request
        if environment is None:  # the same as the last command's
            environment = _last_environment[0]
        _last_environment[0] = environment
        reply: tuple = (job_id, None, run_command(job_id, argv, environment, cwd, home, requests))
        outcomes_dir = None
    else:
        _, job_id, jobdir, payload, upstream, env, cwd, outcomes_dir = request
        abort.reset()  # an abort of the previous job is not this one's
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
            unrecorded = OSError(f"cannot record the job's outcome: {error}")
            reply = (job_id, False, dumps_error(unrecorded))
            blob = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
    return blob


def main() -> None:
    """Serve requests until the request pipe closes."""
    from multiprocessing.connection import Connection

    read_fd, write_fd, parent_pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    for fd in (read_fd, write_fd):  # a job's processes must not hold our pipes open
        os.set_inheritable(fd, False)
    become_subreaper()
    bind_to_parent(parent_pid)
    spool = _Spool(sys.argv[4])
    abort.listen(signal.SIGUSR1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    requests = Connection(read_fd, writable=False)
    replies = Connection(write_fd, readable=False)
    home = os.getcwd()
    outcomes = OutcomeLog()
    idle_exit = float(os.environ.get(IDLE_EXIT_VARIABLE) or 0) or None
    while True:
        try:
            if idle_exit is not None and not requests.poll(idle_exit):
                return  # unused for that long: whoever started it has moved on
            message = requests.recv_bytes()
        except (EOFError, OSError):
            return
        request = pickle.loads(message)
        if is_stale_message(request):  # about a command that has ended since
            continue
        replies.send_bytes(run_request(request, home, spool, outcomes, requests))
