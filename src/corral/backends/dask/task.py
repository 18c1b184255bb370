"""What runs inside a Dask worker for one corral job.

A Dask task cannot be killed: it is a thread of the worker. So the task does not
run the job itself; it hands the job to a corral worker process
(:mod:`corral.runtime.worker`, the one the local backend uses), one per Dask
worker thread, started on the first job and reused, and waits for its reply.
That buys every backend's semantics at the cost of a pipe round trip: result
and packed exception, output caught at the file-descriptor level, environment
and directory per job, whatever a job left behind killed when it ends, and a
process tree that can be killed on cancel or timeout and that dies with the
Dask worker.

While it waits, the task looks every :data:`WATCH_S` seconds at its own
state in the Dask worker. Dask marks a
running task ``cancelled`` when its client cancels it or goes away (a driver
killed), and the task then stops the job as the local backend does: a call
gets :class:`corral.JobStopped` raised in it and runs its ``finally`` blocks,
a command gets SIGTERM; either is killed with its process tree if it is still
running :data:`~corral.runtime.command.TERM_GRACE_S` later. A call that
returned meanwhile completed, and the task says so (see
:func:`_say_how_it_ended_when_cancelled`).

Dask re-runs a task whose worker died (its nanny restarts the worker and the
scheduler reschedules the task), a retry corral must decide on, per the job's
``retries``. Each attempt therefore claims itself first, in the run's
directory when the worker sees it (see :class:`_ClaimLog`): a task that finds
its attempt claimed returns "worker lost" without running anything. (Where the
workers do not see the run directory, the driver learns of the lost worker from
the scheduler's ``remove-worker`` event and cancels the re-run, a few
milliseconds late.)
"""

from __future__ import annotations

import enum
import itertools
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import pickle
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from corral.runtime.command import KILL, TERM_GRACE_S, TERMINATE, how_it_ended
from corral.runtime.command_result import RESULT_FILE_NAME, read_result_bytes
from corral.runtime.proctree import kill_marked, kill_tree, wake
from corral.runtime.reaper import MARK_VARIABLE
from corral.runtime.tempdirs import SPOOL_PREFIX, make_owned_tempdir
from corral.runtime.worker import IDLE_EXIT_VARIABLE
from corral.runtime.worker_process import (ABORT, Reply, WorkerProcess, WorkerStartError,
                                           call_request,
                                           command_request, read_message, ring, start_reaper,
                                           start_worker)

__all__ = ["TaskSpec", "TaskOutcome", "Ending", "run_job", "terminate_job", "end_run",
           "wait_for_stopped_attempts", "CLAIMS",
           "PAUSED",
           "WATCH_S", "OUTPUT_LIMIT"]

#: Seconds between two looks at whether Dask still wants the running task.
WATCH_S = 0.05
#: A job still running after this many seconds is announced to the driver as
#: started (with the time it started). Shorter ones are not: each event costs the
#: scheduler and the driver as much as a small task, and the outcome carries the
#: start time anyway.
ANNOUNCE_AFTER_S = 0.02
#: The sub-directory of the run's Dask directory that holds the attempts' claims.
CLAIMS = "claims"
#: The file in the run's Dask directory that says the run is paused.
PAUSED = "paused"
#: Bytes of each output stream sent back where the run directory is not visible.
OUTPUT_LIMIT = 16 * 1024 * 1024
#: The largest result a task sends by an event when its job completed as Dask
#: cancelled it (see _say_it_completed_all_the_same): events pass the scheduler.
LATE_RESULT_LIMIT = 1024 * 1024


class Ending(enum.Enum):
    """How a task ended."""

    CALL = "call"            # a Python call returned or raised: ``ok`` and ``blob``
    COMMAND = "command"      # a command exited (``returncode``) or could not start (``reason``)
    LOST = "lost"            # a worker died under it, or under a parent's result
    UPSTREAM = "upstream"    # a parent did not complete: nothing ran
    KILLED = "killed"        # cancelled in Dask while it ran
    HELD = "held"            # the run was paused when it came to start: nothing ran


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One job as the driver sends it to Dask: plain values only."""

    key: str
    #: The attempt's number, unique in the run (the last part of *key*).
    attempt: int
    job_id: int | str
    jobdir: str
    #: The backend's directory inside the run (claims), as the driver sees it.
    share: str
    #: The topic the driver listens on for "started" events.
    topic: str
    call: bytes | None = None
    #: Per value the call takes: a pickled value, or the index of a parent in
    #: the task's *parents* whose result it is.
    upstream: tuple[bytes | int, ...] = ()
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str | None], ...] = ()
    cwd: str | None = None
    #: The driver's directory: the job's own where it gives none and this worker
    #: has it (else the job runs in the worker's).
    default_cwd: str | None = None
    #: The driver's ``sys.path`` (its directories): those this worker has too
    #: come after its own, so that the program's own modules, beside the
    #: script, import here as they do in the local backend's workers.
    driver_path: tuple[str, ...] = ()
    outcomes: str | None = None
    #: The corral ids of the parents passed to the task, for messages.
    parent_ids: tuple[int | str, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """What a task returns to Dask, and Dask to the driver (or to a child)."""

    ending: Ending
    ok: bool = False
    blob: bytes | None = None
    returncode: int | None = None
    reason: str | None = None
    started: float = 0.0
    ended: float = 0.0
    #: The job's output, where the workers do not see the run directory.
    stdout: bytes | None = None
    stderr: bytes | None = None
    #: What a command left in its result file, where the workers do not see
    #: the run directory (the driver reads it as it reads one written there).
    result_file: bytes | None = None

    @property
    def completed(self) -> bool:
        if self.ending is Ending.CALL:
            return self.ok
        return self.ending is Ending.COMMAND and self.returncode == 0


def run_job(spec: TaskSpec, parents: list[TaskOutcome]) -> TaskOutcome:
    """The Dask task: run one corral job in this thread's corral worker. Never raises."""
    started = time.time()
    for index, parent in enumerate(parents):
        parent_id = spec.parent_ids[index] if index < len(spec.parent_ids) else "?"
        if parent.ending is Ending.LOST:
            return TaskOutcome(Ending.LOST, started=started, ended=time.time(), reason=(
                f"worker lost: the result of job {parent_id} was lost with its Dask worker"))
        if not parent.completed:
            return TaskOutcome(Ending.UPSTREAM, started=started, ended=time.time(),
                               reason=f"upstream job {parent_id} did not complete")
    visible = _sees(spec.share)
    if visible and os.path.exists(os.path.join(spec.share, PAUSED)):
        return TaskOutcome(Ending.HELD, started=started, ended=time.time())
    if visible:
        try:
            taken_by = _claim(spec.share, spec, _where_am_i())
        except OSError:  # the run's claims directory was removed under it: run unclaimed
            taken_by = None
        if taken_by is not None:
            return TaskOutcome(Ending.LOST, started=started, ended=time.time(), reason=(
                f"worker lost: it was running on {taken_by}, which went away"))
    try:
        outcome = _run(spec, parents, _runner(spec.topic, spec.driver_path), visible, started)
        if not _still_wanted():
            _say_how_it_ended_when_cancelled(spec, outcome)
        return outcome
    except WorkerStartError as error:
        return TaskOutcome(Ending.LOST, started=started, ended=time.time(), reason=str(error))
    except Exception as error:  # a bug of ours must not turn into Dask's own retries
        return TaskOutcome(Ending.LOST, started=started, ended=time.time(),
                           reason=f"the Dask task failed: {type(error).__name__}: {error}")


def _runs_a_task(runner: _Runner) -> bool:
    return any(running.runner is runner for running in _RUNNING.values())


def terminate_job(key: str) -> bool:
    """Ask the job running as *key* in this worker to stop cleanly (an abort);
    run by the driver through ``Client.run``. Whether it runs here."""
    running = _RUNNING.get(key)
    if running is None:
        return False
    # The job of *key*, not the runner's job now: it may have gone on to the
    # next one meanwhile, and the worker ignores a message about a job it
    # does not run.
    if running.runs_command:
        running.runner.tell(TERMINATE, running.job_id)
    else:  # a call polls corral.abort_requested()
        running.runner.tell(ABORT, running.job_id)
    return True


# -- where the task runs --------------------------------------------------------------------

_visible: dict[str, bool] = {}


def _sees(share: str) -> bool:
    """Whether this worker sees the driver's run directory (cached per run): the
    backend's directory has a random name, so finding it is finding the same one."""
    seen = _visible.get(share)
    if seen is None:
        if len(_visible) >= 256:  # runs come and go on a long-lived worker
            _visible.clear()
        seen = _visible[share] = os.path.isdir(os.path.join(share, CLAIMS))
    return seen


def _claim(share: str, spec: TaskSpec, where: str) -> str | None:
    """Claim the attempt *spec*; None, or who claimed it first (a worker that died)."""
    with _lock:
        log = _claim_logs.get(share)
        if log is None:
            log = _claim_logs[share] = _ClaimLog(os.path.join(share, CLAIMS))
    log.last_used = time.monotonic()
    return log.claim(spec.key, spec.attempt, where)


class _ClaimLog:
    """The attempts this process started in one run, and those the others did.

    Each Dask worker process appends one line per attempt it starts to a file of
    its own in the run's claims directory (a 1 us write; a file per attempt cost
    80 us and left a million files in a big run), and before each start reads
    what the other processes' files gained since it last looked. An attempt found
    there was started by a process that died: Dask is running it again. Attempts
    are numbered by the driver, so what was seen is one bit per attempt.

    On NFS, a line written by a node that lost power may never reach the server;
    the driver's cancel on the scheduler's ``remove-worker`` event is then what
    stops the re-run, a few milliseconds after it started.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.name = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.descriptor = os.open(os.path.join(directory, self.name),
                                  os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.listed_at = -1
        self.others: list[str] = []
        self.read_up_to: dict[str, int] = {}
        self.partial: dict[str, bytes] = {}
        self.seen = bytearray()
        self.lock = threading.Lock()  # the worker's threads claim at once
        self.last_used = time.monotonic()

    def close(self) -> None:
        with self.lock:
            os.close(self.descriptor)

    def claim(self, key: str, attempt: int, where: str) -> str | None:
        with self.lock:
            self._read_others()
            if attempt < len(self.seen) * 8 and self.seen[attempt >> 3] & (1 << (attempt & 7)):
                return self._who_started(key)
            os.write(self.descriptor, f"{key} {where}\n".encode())
        return None

    def _read_others(self) -> None:
        changed = os.stat(self.directory).st_mtime_ns
        # Listed again when a file was added, and while the last change is recent:
        # a filesystem with coarse times (NFS, 1 s) may show two additions as one.
        if changed != self.listed_at or time.time() - changed / 1e9 < 2:
            self.listed_at = changed
            self.others = [name for name in os.listdir(self.directory) if name != self.name]
        for name in self.others:
            path = os.path.join(self.directory, name)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            offset = self.read_up_to.get(name, 0)
            if size <= offset:
                continue
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = self.partial.pop(name, b"") + handle.read(size - offset)
            self.read_up_to[name] = size
            lines = data.split(b"\n")
            if lines[-1]:
                self.partial[name] = lines[-1]  # written as we read: finished next time
            for line in lines[:-1]:
                self._mark(line.split(b" ", 1)[0])

    def _mark(self, key: bytes) -> None:
        try:
            attempt = int(key.rsplit(b"-", 1)[1])
        except (IndexError, ValueError):
            return
        if attempt >= len(self.seen) * 8:
            self.seen.extend(bytes(max(attempt // 8 + 1 - len(self.seen), len(self.seen))))
        self.seen[attempt >> 3] |= 1 << (attempt & 7)

    def _who_started(self, key: str) -> str:
        for name in self.others:
            try:
                with open(os.path.join(self.directory, name), "rb") as handle:
                    for line in handle:
                        found, _, where = line.decode(errors="replace").partition(" ")
                        if found == key:
                            return where.strip() or "another Dask worker"
            except OSError:
                continue
        return "another Dask worker"


_claim_logs: dict[str, _ClaimLog] = {}


def _where_am_i() -> str:
    try:
        from distributed import get_worker

        address = get_worker().address
    except Exception:  # not in a worker (called directly)
        address = socket.gethostname()
    return f"Dask worker {address} (pid {os.getpid()})"


def _announce(spec: TaskSpec, started: float, runner: _Runner) -> None:
    """Tell the driver the job started, where, and where its output can be read
    while it runs (the driver reads it only on the same machine)."""
    try:
        from distributed import get_worker

        get_worker().log_event(spec.topic, ("start", spec.key, started, socket.gethostname(),
                                            get_worker().address, runner.worker.spool))
    except Exception:  # the driver then learns the start from the outcome
        pass


def _say_how_it_ended_when_cancelled(spec: TaskSpec, outcome: TaskOutcome) -> None:
    """Tell the driver, by an event, how the job of a task Dask cancelled
    ended: Dask drops a cancelled task's result.

    One that completed all the same (it ended as the cancel came, or returned
    as it was being stopped) would be recorded CANCELLED, and a journaled
    rerun ran it again (attack review: a dozen calls of 20 ms of a map left
    early). A call that raised as it was stopped sends its error: the one
    of a timeout says where it was (JobStopped's traceback), as on the local
    backend. The result or error goes with the word only up to
    :data:`LATE_RESULT_LIMIT`; without one (a larger one, or a job that was
    killed) the driver settles the job at once, from the run's outcome log
    where that has it, rather than when it gives up waiting for a word."""
    killed = outcome.ending is not Ending.CALL and not outcome.completed
    too_large = outcome.blob is not None and len(outcome.blob) > LATE_RESULT_LIMIT
    message: tuple = ("stopped", spec.key) if killed or too_large else (
        "ended", spec.key, outcome.ending.value, outcome.ok, outcome.blob, outcome.returncode,
        outcome.started, outcome.ended)
    try:
        from distributed import get_worker

        get_worker().log_event(spec.topic, message)
    except Exception:  # the driver then settles it when it stops waiting for a word
        pass


def _still_wanted() -> bool:
    """Whether Dask still wants the task this thread runs: not cancelled, its
    client alive, its worker not closing (a worker that lost its scheduler closes
    once its running tasks end: they must end)."""
    try:
        from distributed import get_worker
        from distributed.core import Status
        from distributed.worker import thread_state

        worker = get_worker()
        if worker.status in (Status.closing, Status.closed, Status.failed):
            return False  # its scheduler went away, or it is being stopped
        task = worker.state.tasks.get(thread_state.key)
    except Exception:
        return True
    return task is not None and task.state in ("executing", "long-running")


# -- the corral worker process serving this thread ----------------------------------------------

#: (thread, run) -> the corral worker serving that Dask worker thread for that run.
_RUNNERS: dict[tuple[int, str], _Runner] = {}


class _Running(NamedTuple):
    """A task's job as it runs on a runner, for terminate_job and
    wait_for_stopped_attempts."""

    runner: _Runner
    job_id: int | str
    runs_command: bool


_RUNNING: dict[str, _Running] = {}  # key -> its job on the runner running it
_numbers = itertools.count(1)
_token = f"dask-{os.getpid()}-{os.urandom(4).hex()}"
_spool_root: list[str] = []
_lock = threading.Lock()
#: A runner (or a run's claim log) unused this long is closed when its thread next
#: works: a run that ended without saying so (its driver was killed) leaves nothing.
IDLE_S = 120.0
#: ... and a runner exits by itself after this long without a request, should its
#: Dask worker thread never work again.
RUNNER_IDLE_EXIT_S = 180.0


class _Runner:
    """One corral worker process, serving one Dask worker thread for one run.

    Runners are not shared between runs: a runner imports the run's modules, and
    a later run of edited code must not get the old ones.
    """

    def __init__(self, run: str, driver_path: tuple[str, ...] = ()) -> None:
        _start_reaper()
        number = next(_numbers)
        self.run = run
        # Ends with a dot: runner 1's mark must not be a prefix of runner 12's.
        self.mark = f"{_token}.{number}."
        environment = dict(os.environ, **{MARK_VARIABLE: self.mark,
                                          IDLE_EXIT_VARIABLE: str(RUNNER_IDLE_EXIT_S)})
        path = [*sys.path, *(entry for entry in driver_path
                             if entry not in sys.path and os.path.isdir(entry))]
        self.worker: WorkerProcess = start_worker(
            sys.executable, os.path.join(_spool_directory(), f"runner-{number}"), environment,
            path)
        self.ended = os.pidfd_open(self.worker.pid)
        self.pipe_lock = threading.Lock()  # the task's thread and terminate_job both write
        self.runs_command = False
        self.job_id: int | str | None = None
        self.sent_environment: dict[bytes, bytes] | None = None
        self.last_used = time.monotonic()
        self.closed = False
        #: Its run ended while it ran a task (just cancelled): it goes when the task ends.
        self.run_ended = False

    def send(self, request: tuple) -> None:
        with self.pipe_lock:
            self._write(request)

    def _write(self, message: tuple) -> None:
        """Write one message to its request pipe (the pipe's lock is held)."""
        self.worker.requests.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def tell(self, action: str, job_id: object) -> None:
        """Ask it to kill or terminate the command it runs, or abort the call:
        the message, then a ring, which has its doorbell thread read it while
        the job runs. Under the pipe's lock, and not once closed: the
        doorbell's number may by then be another file's."""
        with self.pipe_lock:
            if self.closed:
                return
            try:
                self._write((action, job_id))
            except OSError:  # it died: the task notices
                return
            ring(self.worker.doorbell)

    def close(self) -> None:
        with self.pipe_lock:  # (tell() may be writing from another thread)
            if self.closed:
                return
            self.closed = True
        kill_tree(self.worker.pid)
        try:
            self.worker.process.wait(timeout=5)
        except Exception:
            pass
        kill_marked(MARK_VARIABLE, self.mark)  # what it started that left its tree
        for closing in (self.worker.requests.close, self.worker.replies.close,
                        lambda: os.close(self.ended), lambda: os.close(self.worker.doorbell)):
            try:
                closing()
            except OSError:
                pass


def _spool_directory() -> str:
    with _lock:
        if not _spool_root:
            _spool_root.append(make_owned_tempdir(SPOOL_PREFIX))
        return _spool_root[0]


_reaper: list[subprocess.Popen] = []


def _start_reaper() -> None:
    """Once per Dask worker process: the process that kills every runner and what
    it started if this Dask worker dies (a runner whose job holds the GIL in C
    code cannot notice by itself)."""
    with _lock:
        if not _reaper:
            _reaper.append(start_reaper(sys.executable, _token))


def _runner(run: str, driver_path: tuple[str, ...] = ()) -> _Runner:
    """This thread's corral worker for *run*, started on first use or after it
    died; this thread's runners that have been idle for :data:`IDLE_S` go."""
    thread = threading.get_ident()
    now = time.monotonic()
    with _lock:
        stale = [(place, runner) for place, runner in _RUNNERS.items()
                 if (place[0] == thread and now - runner.last_used > IDLE_S)
                 or (not _runs_a_task(runner)  # idle, and exited by itself: reaped
                     and runner.worker.process.poll() is not None)]
        for place, _ in stale:
            del _RUNNERS[place]
        runner = _RUNNERS.get((thread, run))
    for _, old in stale:
        old.close()
    _close_idle_claim_logs(now)
    if runner is None or runner.closed or runner.worker.process.poll() is not None:
        if runner is not None:
            runner.close()
        runner = _Runner(run, driver_path)
        with _lock:
            _RUNNERS[(thread, run)] = runner
    runner.last_used = now
    return runner


def _close_idle_claim_logs(now: float) -> None:
    with _lock:
        idle = [share for share, log in _claim_logs.items() if now - log.last_used > IDLE_S]
        closing = [_claim_logs.pop(share) for share in idle]
    for log in closing:
        log.close()


def _retire(runner: _Runner) -> None:
    """Stop *runner* for good (it was killed with a job): the next job starts another."""
    with _lock:
        for place, known in list(_RUNNERS.items()):
            if known is runner:
                del _RUNNERS[place]
    runner.close()


async def wait_for_stopped_attempts(runs: list[str], limit: float) -> int:
    """Wait, up to *limit* seconds, until this worker runs no job for the
    sessions *runs* (killed drivers'); return how many it still runs. Run by
    a new session's driver through ``Client.run`` (on the worker's event
    loop, so it must not block it).

    A killed driver's tasks are cancelled, and their calls get their grace to
    end (see :func:`_stop`); a rerun started meanwhile ran the same job beside
    the old one's ``finally`` blocks, which could remove what the new one
    had just made (attack review)."""
    import asyncio

    deadline = time.monotonic() + limit
    while True:
        with _lock:
            left = sum(1 for running in _RUNNING.values() if running.runner.run in runs)
        if not left or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(WATCH_S)


def end_run(run: str, share: str) -> int:
    """Close this worker's runners of the run *run* and its claim log (*share*);
    run by the driver through ``Client.run`` when it shuts down. How many closed.
    A runner still busy, its task cancelled a moment ago, goes when that task
    ends (attack review: such runners outlived their run by three minutes, their
    idle exit, and stayed as zombies of the Dask worker)."""
    with _lock:
        idle = []
        for place, runner in _RUNNERS.items():
            if runner.run != run:
                continue
            if _runs_a_task(runner):
                runner.run_ended = True
            else:
                idle.append(place)
        closing = [_RUNNERS.pop(place) for place in idle]
        log = _claim_logs.pop(share, None)
    for runner in closing:
        runner.close()
    if log is not None:
        log.close()
    return len(closing)


# -- running one job -----------------------------------------------------------------------------

def _run(spec: TaskSpec, parents: list[TaskOutcome], runner: _Runner, visible: bool,
         started: float) -> TaskOutcome:
    jobdir = spec.jobdir if visible else tempfile.mkdtemp(dir=_spool_directory())
    cwd = spec.cwd
    if cwd is None and spec.default_cwd is not None and os.path.isdir(spec.default_cwd):
        cwd = spec.default_cwd
    try:
        if spec.call is not None:
            upstream = [parents[item].blob or b"" if isinstance(item, int) else item
                        for item in spec.upstream]
            request = call_request(spec.job_id, jobdir, spec.call, upstream, spec.env,
                                   cwd, spec.outcomes if visible else None)
        else:
            request = command_request(spec.job_id, jobdir, spec.argv,
                                      _command_environment(spec, runner), cwd)
        runner.job_id, runner.runs_command = spec.job_id, spec.call is None
        with _lock:  # (end_run reads it under the lock)
            _RUNNING[spec.key] = _Running(runner, spec.job_id, spec.call is None)
        try:
            runner.send(request)
            reply = _wait_for_reply(spec, runner, started)
        finally:
            with _lock:
                _RUNNING.pop(spec.key, None)
                run_ended = runner.run_ended
            runner.last_used = time.monotonic()
            if run_ended:
                _retire(runner)
        ended = time.time()
        stdout = stderr = result_file = None
        if not visible:  # sent back with the outcome
            stdout = _read_output(os.path.join(jobdir, "stdout"))
            stderr = _read_output(os.path.join(jobdir, "stderr"))
            if spec.call is None:
                result_file, _ = read_result_bytes(os.path.join(jobdir, RESULT_FILE_NAME))

        def outcome(ending: Ending, **fields: Any) -> TaskOutcome:
            return TaskOutcome(ending, started=started, ended=ended, stdout=stdout,
                               stderr=stderr, result_file=result_file, **fields)

        if reply is None:  # cancelled in Dask: killed
            return outcome(Ending.KILLED)
        if isinstance(reply, str):  # the runner died under the job
            return outcome(Ending.LOST, reason=reply)
        ok, blob = reply.ok, reply.blob
        if ok is None:  # a command: (exit status, why it could not start)
            returncode, not_started = cast("tuple[int | None, str | None]", blob)
            return outcome(Ending.COMMAND, returncode=returncode, reason=not_started)
        return outcome(Ending.CALL, ok=bool(ok), blob=blob)
    finally:
        if not visible:
            shutil.rmtree(jobdir, ignore_errors=True)


def _command_environment(spec: TaskSpec, runner: _Runner) -> dict[bytes, bytes] | None:
    """The command's environment: this worker's, the job's own, and the
    runner's mark; None when it is the one the runner's last command had."""
    environment = dict(os.environb)
    environment[b"CORRAL_JOB_ID"] = str(spec.job_id).encode()
    for key, value in spec.env:
        if value is None:
            environment.pop(os.fsencode(key), None)
        else:
            environment[os.fsencode(key)] = os.fsencode(value)
    environment[MARK_VARIABLE.encode()] = runner.mark.encode()
    if environment == runner.sent_environment:
        return None
    runner.sent_environment = environment
    return environment


def _wait_for_reply(spec: TaskSpec, runner: _Runner, started: float) -> Reply | str | None:
    """The runner's reply (once Dask cancelled the task: as the job ended when
    it was stopped); None where it had to be killed; or why the runner died (a
    string). The job is announced once it has run :data:`ANNOUNCE_AFTER_S`."""
    replies = runner.worker.replies
    watched: list[Any] = [replies, runner.ended]
    wait = ANNOUNCE_AFTER_S
    announced = False
    while True:
        ready, _, _ = select.select(watched, [], [], wait)
        if replies in ready or (runner.ended in ready and replies.poll(0)):
            try:
                return _reply(replies.recv_bytes())
            except (EOFError, OSError):
                return _runner_died(runner)
        if runner.ended in ready:
            return _runner_died(runner)
        if not announced:
            _announce(spec, started, runner)
            announced, wait = True, WATCH_S
        if not _still_wanted():
            # How it ended as it was stopped: a call returned, or raised (JobStopped,
            # where it was then); a command was killed (its exit status says so, a
            # trap's exit 0 too), or had exited by itself as the stop came.
            return _stop(runner)


def _reply(message: bytes) -> Reply:
    """The runner's reply (it is sent one job at a time, so never gives any back)."""
    reply = read_message(message)
    assert isinstance(reply, Reply), "a runner sent one job at a time queues none"
    return reply


def _stop(runner: _Runner) -> Reply | None:
    """Stop the running job, as the local backend does, and return the
    runner's reply, or None where it had to be killed.

    A call gets :class:`corral.JobStopped` raised in it, so that its
    ``finally`` blocks run, and the runner goes on to the next job; one still
    running :data:`TERM_GRACE_S` later is killed with the runner (and every
    process it started). A command gets SIGTERM, then SIGKILL, from the runner.
    Killing the runner at once, as before, could land between a call's last
    side effect and the runner's record of its outcome, and a rerun after a
    killed driver ran such a call again (CI: 1 in a few dozen runs)."""
    wake(runner.worker.pid)  # (a call that stopped its runner: attack review)
    runner.tell(KILL, runner.job_id)
    # (a command's runner kills its tree after TERM_GRACE_S itself, and replies)
    ready, _, _ = select.select([runner.worker.replies], [], [],
                                TERM_GRACE_S + (3.0 if runner.runs_command else 0.0))
    if ready:
        try:
            return _reply(runner.worker.replies.recv_bytes())
        except (EOFError, OSError):  # (it ended itself: threads of the call ran on)
            pass
    _retire(runner)
    return None


def _runner_died(runner: _Runner) -> str:
    pid = runner.worker.pid
    _retire(runner)
    return f"worker lost: its process (pid {pid}) {how_it_ended(runner.worker.process.returncode)}"


def _read_output(path: str) -> bytes | None:
    """A job's output file, its last :data:`OUTPUT_LIMIT` bytes (None: none)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size > OUTPUT_LIMIT:
                handle.seek(size - OUTPUT_LIMIT)
                note = (f"[corral: the first {size - OUTPUT_LIMIT} bytes were dropped: the Dask "
                        f"worker does not see the run directory]\n")
                return note.encode() + handle.read()
            handle.seek(0)
            return handle.read()
    except FileNotFoundError:
        return None

