"""Run a bundle of jobs inside one cluster job: the batch-script side of corral.

A cluster backend writes each job's request to ``<jobdir>/task`` and a bundle
file listing the job directories; its batch script runs::

    python -c '<boot>' BUNDLE_FILE

which calls :func:`main`. Jobs run one after another, through the same
:func:`corral.runtime.execute.run_call` as the local backend's workers. For
each job the runtime:

1. claims it by creating ``<jobdir>/started`` exclusively (the driver
   cancels a job that has not started the same way, so exactly one wins);
2. sends fds 1 and 2 to ``<jobdir>/stdout`` and ``stderr``;
3. writes ``<jobdir>/result`` atomically: ``(ok, blob, exit_code, reason)``.

The batch job exits non-zero when a job failed, so that a dependent handed
to Slurm with ``afterok`` does not start. It is walltime-aware: the bundle file gives the allocation's time limit, and
after the first job, a job is started only if the time left covers its own
walltime (or, without one, the longest job so far). What it leaves unclaimed
the driver submits again. A job that runs past its walltime is killed by a
watchdog, to the second (Slurm's ``--time`` is in minutes), which records it as
timed out and ends the batch job (unclaimed jobs go back to the driver).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from corral.runtime import abort
from corral.runtime.execute import kill_leftovers, run_call
from corral.runtime.payload import dumps_error, dumps_value

__all__ = ["TASK_FILE", "STARTED_FILE", "RESULT_FILE", "CANCELLED_MARK", "main",
           "read_result", "claim_for_cancel"]

TASK_FILE = "task"
STARTED_FILE = "started"
RESULT_FILE = "result"
#: What the driver writes into ``started`` to cancel a job before it starts.
CANCELLED_MARK = b"cancelled\n"
_TIMED_OUT_EXIT = 124
#: Seconds a bundle keeps free at the end of its allocation (the backend adds
#: them to the time it asks for).
MARGIN_S = 2.0


def write_atomically(path: str, data: bytes) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def read_result(jobdir: str) -> tuple[bool, bytes | None, int | None, str | None] | None:
    """``(ok, blob, exit_code, reason)`` of a finished job, or None if it has none yet."""
    try:
        with open(os.path.join(jobdir, RESULT_FILE), "rb") as handle:
            return pickle.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as error:
        return False, None, None, f"its result file cannot be read: {error}"


def claim_for_cancel(jobdir: str) -> bool:
    """Mark a job that has not started as cancelled; False if the runtime took it first."""
    try:
        descriptor = os.open(os.path.join(jobdir, STARTED_FILE),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except FileNotFoundError:  # its directory is gone: nothing will run it
        return True
    os.write(descriptor, CANCELLED_MARK)
    os.close(descriptor)
    return True


def _claim(jobdir: str) -> bool:
    path = os.path.join(jobdir, STARTED_FILE)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:
        return False
    except FileExistsError:
        if not _requeued_here(jobdir):
            return False
        descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
              "slurm_job": _slurm_job_id()}
    os.write(descriptor, json.dumps(record).encode() + b"\n")
    os.close(descriptor)
    return True


def _requeued_here(jobdir: str) -> bool:
    """Whether this job was claimed by an earlier run of this very Slurm job,
    which Slurm requeued (node failure, preemption) before it left a result."""
    if not int(os.environ.get("SLURM_RESTART_COUNT") or 0):
        return False
    if os.path.exists(os.path.join(jobdir, RESULT_FILE)):
        return False
    try:
        with open(os.path.join(jobdir, STARTED_FILE), "rb") as handle:
            record = json.loads(handle.read() or b"{}")
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("slurm_job") == _slurm_job_id()


def _slurm_job_id() -> str | None:
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class _Output:
    """Point fds 1 and 2 at a job's files, and back at the batch job's log."""

    def __init__(self) -> None:
        self.saved = (os.dup(1), os.dup(2))

    def to_job(self, jobdir: str) -> None:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(os.path.join(jobdir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                             0o600)
            os.dup2(target, fd)
            os.close(target)

    def back(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)


def _upstream_values(entries: list[Any]) -> tuple[list[bytes], str | None]:
    """Blobs for a call's dependencies; a str entry is a parent's job directory."""
    values = []
    for entry in entries:
        if isinstance(entry, bytes):
            values.append(entry)
            continue
        result = read_result(entry)
        if result is None or not result[0]:
            return [], f"the job it depends on ({entry}) left no result"
        values.append(result[1] if result[1] is not None else dumps_value(None))  # a command
    return values, None


def _run_command(task: dict[str, Any], home: str) -> tuple[bool, bytes | None, int | None, str | None]:
    env = dict(os.environ)
    env["CORRAL_JOB_ID"] = str(task["job_id"])
    for key, value in task["env"]:
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    try:
        process = subprocess.Popen(task["argv"], cwd=task["cwd"] or home, env=env,
                                   start_new_session=True)
    except (OSError, ValueError, TypeError) as error:  # ValueError: a NUL in an argument
        return False, None, 127, f"cannot start it: {error}"
    try:
        code = process.wait()
    except BaseException:
        from corral.runtime.proctree import kill_tree

        kill_tree(process.pid)
        raise
    if code == 0:
        return True, None, 0, None
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return False, None, code, f"killed by {name}"
    return False, None, code, f"exit code {code}"


def _run_task(task: dict[str, Any], home: str) -> tuple[bool, bytes | None, int | None, str | None]:
    if task["argv"]:
        return _run_command(task, home)
    upstream, problem = _upstream_values(task["upstream"])
    if problem is not None:
        return False, dumps_error(RuntimeError(problem)), None, None
    ok, blob = run_call(task["job_id"], task["payload"], upstream, tuple(task["env"]),
                        task["cwd"], home)
    kill_leftovers()
    return ok, blob, 0 if ok else 1, None


class _Watchdog:
    """Ends the bundle when the running job passes its walltime, recording why."""

    def __init__(self) -> None:
        self._timer: threading.Timer | None = None

    def arm(self, jobdir: str, walltime: float | None) -> None:
        if walltime is not None:
            self._timer = threading.Timer(walltime, self._expire, (jobdir, walltime))
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @staticmethod
    def _expire(jobdir: str, walltime: float) -> None:
        reason = f"ran past its walltime of {walltime:g} s; killed with its child processes"
        try:
            write_atomically(os.path.join(jobdir, RESULT_FILE),
                             pickle.dumps((False, None, None, "timed out: " + reason)))
        finally:
            from corral.runtime.proctree import kill_tree
            import psutil

            for child in psutil.Process().children():
                kill_tree(child.pid)
            os._exit(_TIMED_OUT_EXIT)


def run_bundle(bundle: dict[str, Any]) -> tuple[int, int]:
    """Run the bundle's jobs in turn; return how many were left for the driver
    and how many failed."""
    begun = time.monotonic()
    limit = bundle.get("time_limit_s")
    deadline = None if limit is None else begun + limit - MARGIN_S
    home = os.getcwd()
    output = _Output()
    watchdog = _Watchdog()
    longest = 0.0
    left = failed = 0
    for jobdir in bundle["jobdirs"]:
        try:
            with open(os.path.join(jobdir, TASK_FILE), "rb") as handle:
                task = pickle.load(handle)
        except OSError:
            continue  # removed by the driver
        walltime = task.get("walltime_s")
        needed = walltime if walltime is not None else longest
        ran_one = longest > 0 or failed > 0
        if deadline is not None and ran_one and time.monotonic() + needed > deadline:
            left += 1
            continue  # not enough time left: the driver submits it again
        if not _claim(jobdir):
            continue  # cancelled, or run by an earlier attempt of this bundle
        abort.reset()
        started = time.monotonic()
        output.to_job(jobdir)
        watchdog.arm(jobdir, walltime)
        try:
            outcome = _run_task(task, home)
        except BaseException as error:  # our failure, not the job's: still record it
            outcome = (False, dumps_error(error), None, None)
        finally:
            watchdog.disarm()
            output.back()
        write_atomically(os.path.join(jobdir, RESULT_FILE), pickle.dumps(outcome))
        longest = max(longest, time.monotonic() - started, 1e-6)
        failed += not outcome[0]
    return left, failed


def main() -> None:
    """Entry point of the batch script: ``main()`` with the bundle file in argv[1]."""
    with open(sys.argv[1]) as handle:
        bundle = json.load(handle)
    abort.listen(signal.SIGUSR1)
    left, failed = run_bundle(bundle)
    if left:
        print(f"corral: {left} jobs left for lack of time; the driver submits them again",
              file=sys.stderr)
    # Non-zero when a job failed, so that Slurm's afterok holds back its dependents
    # even when no driver is watching. os._exit: nothing the jobs left at exit
    # (atexit handlers, threads) may change the status once the results are written.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(1 if failed else 0)
