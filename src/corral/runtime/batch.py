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
3. writes ``<jobdir>/result`` atomically and durably (fsync, then rename: job
   directories live on network filesystems, read from another machine): a
   pickled :class:`BatchOutcome`.

The batch job exits with ``$CORRAL_FAILED_EXIT_STATUS`` when a job failed, so
that a dependent handed to the scheduler ("after this one ends well") does not
start. The runtime never names a scheduler's variable: the batch script exports
the names of the ones it needs (see :data:`SCHEDULER_VARIABLES`).

It is walltime-aware: the bundle file gives the allocation's time limit, and
after the first job, a job is started only if the time left covers its own
walltime (or, without one, the longest job so far). What it leaves unclaimed
the driver submits again. A job that runs past its walltime is killed by a
watchdog, to the second (a scheduler's time limit may be in minutes), which
records it as timed out and ends the batch job (unclaimed jobs go back to the driver);
the watchdog also ends a job a little before the scheduler's own limit would, counted
from the batch script's start, so that the reason is recorded (see _Watchdog).
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
# A NamedTuple, not a dataclass: dataclasses' import of inspect was a quarter
# of the start of every batch job's runner.
from typing import Any, NamedTuple

from corral.runtime import abort
from corral.runtime.command import TERM_GRACE_S
from corral.runtime.command_result import RESULT_FILE_NAME, RESULT_FILE_VARIABLE
from corral.runtime.execute import enter_cwd, kill_leftovers, run_call
from corral.runtime.guard import become_subreaper
from corral.runtime.loading import mark_worker_process
from corral.runtime.payload import dumps_error, dumps_value

__all__ = ["TASK_FILE", "STARTED_FILE", "RESULT_FILE", "CANCELLED_MARK", "BatchOutcome",
           "SCHEDULER_VARIABLES", "FAILED_EXIT_STATUS_VAR", "main", "read_result",
           "write_atomically", "claim_for_cancel"]

TASK_FILE = "task"
STARTED_FILE = "started"
RESULT_FILE = "result"
#: What the driver writes into ``started`` to cancel a job before it starts.
CANCELLED_MARK = b"cancelled\n"
#: Seconds a bundle keeps free at the end of its allocation (the backend adds
#: them to the time it asks for).
MARGIN_S = 2.0 + TERM_GRACE_S

#: The runtime's table of a scheduler's variables: for each thing it needs to
#: know, the variable in which the batch script puts the *name* of the
#: scheduler's own variable, e.g. ``export CORRAL_ARRAY_INDEX_VAR=<its array index variable>``.
SCHEDULER_VARIABLES = {
    "job_id": "CORRAL_BATCH_JOB_ID_VAR",
    "array_job_id": "CORRAL_ARRAY_JOB_ID_VAR",
    "array_index": "CORRAL_ARRAY_INDEX_VAR",
    "restart_count": "CORRAL_RESTART_COUNT_VAR",
}
#: Where the batch script says with which status to end when a job failed.
FAILED_EXIT_STATUS_VAR = "CORRAL_FAILED_EXIT_STATUS"
#: Set (to 1) by a batch script whose scheduler ends and suspends a job by
#: signalling its process group, with no SIGTERM first (Grid Engine's ``qdel``
#: is a SIGKILL, its suspend a SIGSTOP): a command then runs in that group, not
#: in a session of its own, which the signals would not reach (cold review: a
#: cancelled or timed-out command ran on after its batch job was gone).
COMMANDS_IN_JOB_GROUP_VAR = "CORRAL_COMMANDS_IN_JOB_GROUP"


class BatchOutcome(NamedTuple):
    """How one job of a bundle ended: what the runtime leaves in its result file.

    ``blob`` is the pickled return value of a call that completed, or a packed
    exception (:func:`corral.runtime.payload.loads_error`) of one that failed;
    None for a command. ``reason`` says why a job failed when no exception does.
    """

    ok: bool
    blob: bytes | None = None
    exit_code: int | None = None
    reason: str | None = None
    #: Killed by the runtime's watchdog for running past its walltime.
    timed_out: bool = False
    #: Asked to abort while it ran: a completed call's value may be the partial
    #: work of one that stopped early (a map's chunk short of its calls), which
    #: a driver that did not ask (the next one, after a kill) must not take for
    #: a completion.
    aborted: bool = False


def write_atomically(path: str, data: bytes) -> None:
    """Write *data* to *path* so that a reader sees all of it or nothing, even
    after the machine crashes: temporary file, fsync, rename, fsync of the
    directory (on a network filesystem another node reads it next)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    try:
        directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:  # some filesystems cannot sync a directory; the rename stands
        pass
    finally:
        os.close(directory)


def read_result(jobdir: str) -> BatchOutcome | None:
    """The outcome of a finished job, or None if it has none yet."""
    try:
        with open(os.path.join(jobdir, RESULT_FILE), "rb") as handle:
            outcome = pickle.load(handle)
    except FileNotFoundError:
        return None
    except Exception as error:  # a job wrote this file: anything may be in it
        # (a module the driver lacks, a class whose unpickling raises): that job
        # fails, never the driver's loop that reads it.
        return BatchOutcome(False, reason=f"its result file cannot be read: "
                                          f"{type(error).__name__}: {error}")
    if not isinstance(outcome, BatchOutcome):
        return BatchOutcome(False, reason="its result file holds no outcome corral knows")
    return outcome


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
              "batch_job": _batch_job_id()}
    os.write(descriptor, json.dumps(record).encode() + b"\n")
    os.close(descriptor)
    return True


def _requeued_here(jobdir: str) -> bool:
    """Whether this job was claimed by an earlier run of this very batch job,
    which the scheduler requeued (node failure, preemption) before it left a result."""
    restarts = _scheduler_value("restart_count") or "0"
    if not (restarts.isdigit() and int(restarts)):
        return False
    if os.path.exists(os.path.join(jobdir, RESULT_FILE)):
        return False
    try:
        with open(os.path.join(jobdir, STARTED_FILE), "rb") as handle:
            record = json.loads(handle.read() or b"{}")
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("batch_job") == _batch_job_id()


def _scheduler_value(what: str) -> str | None:
    """The value of the scheduler's variable for *what* (a key of
    :data:`SCHEDULER_VARIABLES`), through the name the batch script exported."""
    name = os.environ.get(SCHEDULER_VARIABLES[what])
    return os.environ.get(name) or None if name else None


def _batch_job_id() -> str | None:
    """This batch job (or array task), the same in every run of it."""
    array_job, index = _scheduler_value("array_job_id"), _scheduler_value("array_index")
    if array_job and index:
        return f"{array_job}_{index}"
    return _scheduler_value("job_id")


def _failed_exit_status() -> int:
    text = os.environ.get(FAILED_EXIT_STATUS_VAR, "")
    return int(text) if text.isdigit() and 0 < int(text) < 256 else 1


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
        if result is None or not result.ok:
            return [], f"the job it depends on ({entry}) left no result"
        values.append(result.blob if result.blob is not None else dumps_value(None))  # a command
    return values, None


def _run_command(task: dict[str, Any], home: str, jobdir: str) -> BatchOutcome:
    env = dict(os.environ)
    env["CORRAL_JOB_ID"] = str(task["job_id"])
    for key, value in task["env"]:
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    # Where it may leave its result (see corral.runtime.command_result): in its
    # job's directory, which the driver reads; set here, where the command runs,
    # as the local worker sets its own.
    env[RESULT_FILE_VARIABLE] = os.path.join(jobdir, RESULT_FILE_NAME)
    try:
        if task["cwd"]:  # (entered first, to name a cwd that cannot be entered as such)
            here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                enter_cwd(task["cwd"])
                os.fchdir(here)  # (by descriptor: also where home was deleted meanwhile)
            finally:
                os.close(here)
        process = subprocess.Popen(task["argv"], cwd=task["cwd"] or home, env=env,
                                   start_new_session=_in_a_session_of_its_own())
    except (OSError, ValueError, TypeError) as error:  # ValueError: a NUL in an argument
        return BatchOutcome(False, exit_code=127, reason=f"could not start: {error}")
    try:
        code = process.wait()
    except BaseException:
        from corral.runtime.proctree import kill_tree

        kill_tree(process.pid)
        raise
    if code == 0:
        return BatchOutcome(True, exit_code=0)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return BatchOutcome(False, exit_code=code, reason=f"killed by {name}")
    return BatchOutcome(False, exit_code=code, reason=f"exit code {code}")


def _run_task(task: dict[str, Any], home: str, jobdir: str) -> BatchOutcome:
    if task["argv"]:
        outcome = _run_command(task, home, jobdir)
        kill_leftovers()  # what it left running, adopted here: as on the local backend
        return outcome
    upstream, problem = _upstream_values(task["upstream"])
    if problem is not None:
        return BatchOutcome(False, dumps_error(RuntimeError(problem)))
    ok, blob = run_call(task["job_id"], task["payload"], upstream, tuple(task["env"]),
                        task["cwd"], home)
    kill_leftovers()
    return BatchOutcome(ok, blob, 0 if ok else 1)


class _Watchdog:
    """Ends the bundle when the running job passes its walltime, recording why.

    In a bundle it also fires :data:`MARGIN_S` before the batch job's own time
    limit, which the scheduler counts from the batch script's start, setup lines
    included: a job the scheduler kills leaves no result file, only the
    scheduler's word for why. A job alone in its batch job is asked for its
    walltime, no more (a margin on top would ask a partition for more than its
    limit when the walltime is that limit), and its watchdog counts the walltime
    from the job's start: where the scheduler's limit is the walltime to the
    second, the scheduler may end it a moment first, and says why itself."""

    def __init__(self) -> None:
        self._timer: threading.Timer | None = None
        #: Set once it fired: the job's own end, which its SIGTERM brings
        #: during the grace, must not write over the timed-out result.
        self.fired = threading.Event()

    def arm(self, jobdir: str, walltime: float | None, time_left: float | None,
            began_after: float = 0.0) -> None:
        """Fire after *walltime* or *time_left* (to the batch job's deadline),
        whichever comes first; the job began *began_after* seconds after the
        batch script did."""
        if walltime is None and time_left is None:
            return
        if time_left is not None and (walltime is None or time_left < walltime):
            delay = max(time_left, 0.0)
            reason = (f"reached its batch job's time limit, which counts from the batch "
                      f"job's start ({began_after:.1f} s before this job's), less "
                      f"{MARGIN_S:g} s to record this")
            if walltime is not None:
                reason += f", before its walltime of {walltime:g} s"
        else:
            assert walltime is not None
            delay, reason = walltime, f"ran past its walltime of {walltime:g} s"
        self._timer = threading.Timer(delay, self._expire, (jobdir, reason))
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, jobdir: str, why: str) -> None:
        self.fired.set()
        reason = f"{why}; killed with its child processes"
        try:
            write_atomically(os.path.join(jobdir, RESULT_FILE),
                             pickle.dumps(BatchOutcome(False, reason=reason, timed_out=True)))
        finally:
            _end_what_it_started()  # (its SIGTERM and grace, as on the local backend)
            # The failure status, as for any failed job: SGE releases the
            # -hold_jid dependents of a batch job that ends with any other.
            os._exit(_failed_exit_status())




def _in_a_session_of_its_own() -> bool:
    """Whether a command leads a session of its own (see :data:`COMMANDS_IN_JOB_GROUP_VAR`)."""
    return os.environ.get(COMMANDS_IN_JOB_GROUP_VAR) != "1"


def _end_with_the_job(signum: int, frame: object) -> None:
    """The scheduler ends the job (a cancel, a timeout, its walltime): end what
    it started, then this process, as the signal meant. The scheduler's own
    kill reaches only the processes it tracks, and one that tracks them by
    parentage (Slurm's proctrack/linuxproc) loses those that outlive this
    process: a command that ignores SIGTERM ran on, with its children, for ever."""
    _end_what_it_started()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _end_what_it_started() -> None:
    """Each child is told first with SIGTERM (a command leads its own session)
    and killed with everything under it after :data:`TERM_GRACE_S`, below any
    KillWait a site sets (Slurm's default is 30 s)."""
    import psutil

    from corral.runtime.proctree import kill_tree, wait_for_descendants

    me = psutil.Process()
    children = me.children()
    leaders = []  # of their own groups (a command leads its session): not ours
    for child in children:
        try:
            if os.getpgid(child.pid) == child.pid:
                leaders.append(child.pid)
                os.killpg(child.pid, signal.SIGTERM)
            else:
                child.terminate()
        except (OSError, psutil.Error):
            pass
    wait_for_descendants(time.monotonic() + TERM_GRACE_S)  # (all it started, not its leader)
    # Everything under this process, frozen, then killed: this process is a
    # subreaper (see main), so what a child that ended left running is under it.
    kill_tree(me.pid, include_root=False)
    for leader in leaders:
        try:
            os.killpg(leader, signal.SIGKILL)  # what its leader left behind in its group
        except OSError:
            pass


def _script_began() -> float:
    """When the batch script began, on the monotonic clock.

    The scheduler's time limit counts from there, not from this interpreter's
    start: the script's setup lines and a slow start under load come first (a
    setup that took 30 s of a 60 s limit left the watchdog firing after the
    scheduler's kill, so the job said only "TIMEOUT"). The script execs this
    interpreter, so this process's start time is the script's."""
    import psutil

    now = time.monotonic()
    try:
        ran_for = time.time() - psutil.Process().create_time()
    except psutil.Error:
        return now
    return now - min(max(ran_for, 0.0), 24 * 3600.0)


def _home(driver_directory: object) -> str:
    """Where the bundle's jobs without a ``cwd`` run: the driver's directory,
    entered here, or, where this node cannot enter it (not shared), the one
    the scheduler started the batch job in, saying so in its log."""
    if isinstance(driver_directory, str) and driver_directory:
        try:
            os.chdir(driver_directory)
        except OSError as error:
            print(f"corral: jobs without a cwd run in {os.getcwd()}: the driver's directory "
                  f"{driver_directory} cannot be entered here ({error.strerror or error})",
                  file=sys.stderr)
    return os.getcwd()


def run_bundle(bundle: dict[str, Any]) -> tuple[int, int]:
    """Run the bundle's jobs in turn; return how many were left for the driver
    and how many failed."""
    begun = _script_began()
    limit = bundle.get("time_limit_s")
    deadline = None if limit is None else begun + limit - MARGIN_S
    home = _home(bundle.get("home"))
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
        signal.signal(signal.SIGTERM, _end_with_the_job)  # (a job before may have set its own)
        started = time.monotonic()
        output.to_job(jobdir)
        watchdog.arm(jobdir, walltime,
                     None if deadline is None else deadline - time.monotonic(),
                     began_after=started - begun)
        try:
            outcome = _run_task(task, home, jobdir)
        except BaseException as error:  # our failure, not the job's: still record it
            outcome = BatchOutcome(False, dumps_error(error))
        finally:
            watchdog.disarm()
            if watchdog.fired.is_set():  # it ends this process, its result written
                threading.Event().wait()
            output.back()
        if outcome.ok and abort.abort_requested():
            outcome = outcome._replace(aborted=True)
        write_atomically(os.path.join(jobdir, RESULT_FILE), pickle.dumps(outcome))
        longest = max(longest, time.monotonic() - started, 1e-6)
        failed += not outcome.ok
    return left, failed


def main() -> None:
    """Entry point of the batch script: ``main()`` with the bundle file in argv[1]."""
    mark_worker_process()
    with open(sys.argv[1]) as handle:
        bundle = json.load(handle)
    abort.listen(signal.SIGUSR1)
    # Orphans of what the jobs start come to this process, not to init: ended with it.
    become_subreaper()
    left, failed = run_bundle(bundle)
    if left:
        print(f"corral: {left} jobs left for lack of time; the driver submits them again",
              file=sys.stderr)
    # The scheduler's failure status when a job failed, so that it holds back
    # its dependents even when no driver is watching. os._exit: nothing the jobs left at exit
    # (atexit handlers, threads) may change the status once the results are written.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_failed_exit_status() if failed else 0)
