"""The local backend: real processes on this machine.

* Python calls go to persistent worker processes (:mod:`corral.runtime.worker`)
  over pipes, one job per worker at a time, so a small call costs a round trip,
  not an interpreter start. A worker that dies fails only its own job
  ("worker lost") and the next job gets a fresh worker.
* Scripts and shell commands are started by the same workers, in a session
  of their own (see :mod:`corral.runtime.command`): a worker adopts whatever
  a command leaves behind and kills it when the command ends, and a worker
  takes its whole tree with it when the driver dies.
* The control loop waits in :meth:`LocalBackend.updates` on one selector that
  holds the wake-up pipe and every worker's reply pipe, so a finished job is
  noticed at once, without polling.

Packing (which job fits now) is the scheduler's; this module only hands out
concrete GPU ids and sets ``CUDA_VISIBLE_DEVICES`` from them.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import selectors
import shutil
import signal
import subprocess
import sys
import weakref
from collections.abc import Collection, Sequence
from typing import ClassVar

from corral.errors import BackendError, ResourceError
from corral.runtime.proctree import kill_marked, kill_tree
from corral.spec import Resources
from corral.status import JobStatus
from corral.runtime.command import KILL, TERMINATE, describe_exit
from corral.runtime.reaper import FAREWELL, MARK_VARIABLE, SWEEP_AND_GO
from corral.runtime.tempdirs import SPOOL_PREFIX, make_owned_tempdir
from corral.runtime.worker_process import (WorkerStartError, call_request, command_request,
                                           start_reaper, start_worker)
from corral.backends.base import Capabilities, Capacity, Submission, Update
from corral.backends.local import BACKEND

__all__ = ["LocalBackend", "default_cores", "total_memory_mb", "detect_gpus", "SPOOL_PREFIX"]

log = logging.getLogger("corral.backends.local")

def default_cores() -> int:
    """All CPUs this process may use but one, and at least one."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return max(1, usable - 1)


def total_memory_mb() -> int:
    """Physical memory of this machine in MB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


def detect_gpus() -> int:
    """GPUs visible to this process: CUDA_VISIBLE_DEVICES if set, else ``nvidia-smi -L``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([item for item in visible.split(",") if item.strip() and item.strip() != "-1"])
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    if listing.returncode != 0:
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))



_LIVE_BACKENDS: weakref.WeakSet[LocalBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_LIVE_BACKENDS):
        if not backend._closed:
            backend._forget_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _environment_bytes() -> dict[bytes, bytes]:
    """A copy of this process's environment as bytes.

    os.environ keeps the encoded variables in ``_data``; copying that dict is
    one C call, where ``dict(os.environb)`` costs ~40 us of Python per job.
    """
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict) and all(type(key) is bytes for key in itertools.islice(data, 1)):
        return dict(data)
    return dict(os.environb)


class _Worker:
    """One persistent Python worker, the pipes to it, a pidfd that says when it
    has died, and the mark its processes carry (see corral.runtime.reaper)."""

    def __init__(self, process: subprocess.Popen, requests, replies, gpu_key: tuple[int, ...],
                 spool: tuple[str, str], mark: str):
        self.mark = mark
        self.ended = os.pidfd_open(process.pid)
        self.gone = False  # forgotten by the backend
        self.sent_environment: dict[bytes, bytes] | None = None  # the last command's
        self.spool = spool  # where a running job's output can be read
        self.process = process
        self.requests = requests
        self.replies = replies
        self.gpu_key = gpu_key
        self.job_id: int | str | None = None
        self.runs_command = False  # the running job is a script or command

    @property
    def pid(self) -> int:
        return self.process.pid


class LocalBackend:
    """Runs jobs as processes on this machine. See the module docstring."""

    name: ClassVar[str] = BACKEND.name
    capabilities: ClassVar[Capabilities] = BACKEND.capabilities

    def __init__(self, cores: int | None = None, memory: int | None = None,
                 gpus: int | None = None, python: str = sys.executable,
                 spool_parent: str | None = None, options: dict | None = None) -> None:
        if options:
            raise ValueError(f"the local backend takes no backend_options (got {sorted(options)}); "
                             "set cores, memory and gpus on the Scheduler")
        self._capacity = Capacity(
            cores=default_cores() if cores is None else cores,
            memory_mb=total_memory_mb() if memory is None else memory,
            gpus=detect_gpus() if gpus is None else gpus,
        )
        self._python = python
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._idle: list[_Worker] = []
        self._running: dict[int | str, _Worker] = {}
        self._gpus_held: dict[int | str, tuple[int, ...]] = {}
        self._free_gpus = list(range(self._capacity.gpus or 0))
        self._killed: set[int | str] = set()
        self._pending: list[Update] = []
        self._wake_pending = False
        self._spool_dir: str | None = None
        self._spool_parent = spool_parent  # default: the system's temporary directory
        self._spool_numbers = itertools.count(1)
        #: Marks this backend's workers and everything they start (see corral.runtime.reaper).
        self._token = f"{os.getpid()}-{os.urandom(6).hex()}"
        self._worker_numbers = itertools.count(1)
        self._reaper: subprocess.Popen | None = None
        self._worker_lost = False  # a worker died under a job: sweep once more at the end
        self._closed = False
        _LIVE_BACKENDS.add(self)

    # -- what the scheduler asks -------------------------------------------------

    def capacity(self) -> Capacity:
        return self._capacity

    def check(self, resources: Resources) -> None:
        have = self._capacity
        for what, asked, limit, knob in (
            ("cores", resources.cores, have.cores, "cores"),
            ("MB of memory", resources.memory_mb, have.memory_mb, "memory"),
            ("GPUs", resources.gpus, have.gpus, "gpus"),
        ):
            if asked and limit is not None and asked > limit:
                if asked == 1:  # "1 GPU", "1 core"
                    what = what.rstrip("s")
                raise ResourceError(f"asks for {asked} {what} but the local backend has {limit}",
                                    setting=knob)

    def submit(self, batch: Sequence[Submission]) -> list[str]:
        native_ids = []
        for submission in batch:
            try:
                gpus = self._take_gpus(submission)
                runner = (self._start_call(submission, gpus) if submission.call is not None
                          else self._start_command(submission, gpus))
            except Exception as error:  # this job cannot start; the others of the batch can
                self._release_gpus(submission.job_id)
                self._pending.append(Update(submission.job_id, JobStatus.FAILED,
                                            reason=f"could not start: {error}"))
                native_ids.append("")
                continue
            self._running[submission.job_id] = runner
            native_ids.append(str(runner.pid))
            self._pending.append(Update(submission.job_id, JobStatus.RUNNING,
                                        native_id=str(runner.pid), live_output=runner.spool))
        return native_ids

    def updates(self, timeout: float | None) -> list[Update]:
        if self._pending:
            timeout = 0
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                self._drain_wake_pipe()
                self._wake_pending = False  # after draining: a wake() from now on writes again
            elif not key.data.gone:
                worker = key.data
                if key.fd == worker.ended and not worker.replies.poll(0):
                    self._worker_died(worker)  # and no reply of its last job is waiting
                else:
                    self._read_reply(worker)  # a reply, or the end of the pipe
        found, self._pending = self._pending, []
        return found

    def wake(self) -> None:
        # One byte in the pipe is enough to wake the loop: skip the system call
        # (and the context switch it causes) while one is already on its way.
        if self._wake_pending or self._closed:
            return
        self._wake_pending = True
        try:
            os.write(self._wake_write, b"\0")
        except BlockingIOError:  # the pipe is full: a wake-up is already pending
            pass

    def kill(self, job_ids: Collection[int | str]) -> None:
        for job_id in job_ids:
            runner = self._running.get(job_id)
            if runner is None:
                continue
            self._killed.add(job_id)
            if runner.runs_command:  # the worker kills it, reports it killed and goes on
                self._tell(runner, KILL, job_id)
            else:  # a call runs in the worker itself
                kill_tree(runner.pid)

    def terminate(self, job_ids: Collection[int | str]) -> None:
        for job_id in job_ids:
            runner = self._running.get(job_id)
            if runner is not None and runner.runs_command:  # SIGTERM to its process group
                self._tell(runner, TERMINATE, job_id)
            elif runner is not None:  # a call polls corral.abort_requested()
                os.kill(runner.pid, signal.SIGUSR1)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for runner in list(self._running.values()):
            kill_tree(runner.pid)
        for worker in self._idle:
            worker.requests.close()  # a clean EOF: the worker returns from main()
        for runner in list(self._running.values()) + self._idle:
            self._wait_gone(runner.process)
            self._forget(runner)
        self._stop_reaper()
        self._running.clear()
        self._idle.clear()
        self._selector.close()
        if self._spool_dir is not None:
            shutil.rmtree(self._spool_dir, ignore_errors=True)
        os.close(self._wake_read)
        os.close(self._wake_write)

    # -- GPUs ----------------------------------------------------------------------

    def _take_gpus(self, submission: Submission) -> tuple[int, ...]:
        wanted = submission.resources.gpus
        if not wanted:
            return ()
        if wanted > len(self._free_gpus):
            raise BackendError(f"job {submission.job_id} was handed over without {wanted} "
                               "free GPUs")
        taken, self._free_gpus = tuple(self._free_gpus[:wanted]), self._free_gpus[wanted:]
        self._gpus_held[submission.job_id] = taken
        return taken

    def _release_gpus(self, job_id: int | str) -> None:
        self._free_gpus.extend(self._gpus_held.pop(job_id, ()))
        self._free_gpus.sort()

    def _gpu_environment(self, gpus: tuple[int, ...]) -> dict[str, str]:
        if not self._capacity.gpus:
            return {}
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}

    # -- Python calls ------------------------------------------------------------

    def _start_call(self, submission: Submission, gpus: tuple[int, ...]) -> _Worker:
        assert submission.call is not None, "a call's submission carries its payload"
        worker = self._idle_worker(gpus) or self._spawn_worker(gpus)
        request = call_request(submission.job_id, str(submission.jobdir), submission.call,
                               submission.upstream, submission.env, submission.cwd,
                               submission.outcomes)
        self._hand_to(worker, submission.job_id, request, runs_command=False)
        return worker

    def _hand_to(self, worker: _Worker, job_id: int | str, request: tuple,
                 runs_command: bool) -> None:
        worker.job_id = job_id
        worker.runs_command = runs_command
        try:
            worker.requests.send_bytes(pickle.dumps(request, pickle.HIGHEST_PROTOCOL))
        except OSError:  # died while idle: the reply pipe reports it as lost
            pass

    @staticmethod
    def _tell(worker: _Worker, action: str, job_id: int | str) -> None:
        """Ask *worker* to kill or terminate the command it runs for *job_id*."""
        try:
            worker.requests.send_bytes(pickle.dumps((action, job_id), pickle.HIGHEST_PROTOCOL))
        except OSError:  # the worker died: its reply pipe reports it
            pass

    def _idle_worker(self, gpus: tuple[int, ...] | None) -> _Worker | None:
        """An idle worker started for *gpus* (any idle worker for None: a
        command gets its environment, CUDA_VISIBLE_DEVICES included, with the request)."""
        for index in range(len(self._idle) - 1, -1, -1):
            if gpus is None or self._idle[index].gpu_key == gpus:
                return self._idle.pop(index)
        return None

    def _spawn_worker(self, gpus: tuple[int, ...]) -> _Worker:
        limit = self._capacity.cores or 1
        while self._idle and len(self._idle) + len(self._running) >= limit:
            self._retire(self._idle.pop(0))
        spool = os.path.join(self._spool_directory(), f"worker-{next(self._spool_numbers)}")
        self._start_reaper()
        # Ends with a dot: worker 1's mark must not be a prefix of worker 12's.
        mark = f"{self._token}.{next(self._worker_numbers)}."
        environment = dict(os.environ, **self._gpu_environment(gpus), **{MARK_VARIABLE: mark})
        try:
            started = start_worker(self._python, spool, environment)
        except WorkerStartError as error:
            raise BackendError(str(error)) from error
        worker = _Worker(started.process, started.requests, started.replies, gpus,
                         started.spool, mark)
        self._selector.register(started.replies.fileno(), selectors.EVENT_READ, worker)
        # The reply pipe's end alone may not tell: a process the job forked
        # may hold a copy of it after the worker died.
        self._selector.register(worker.ended, selectors.EVENT_READ, worker)
        log.debug("started worker %d", started.pid)
        return worker

    def _start_reaper(self) -> None:
        """Start the process that kills our jobs' processes if we die (once)."""
        if self._reaper is not None:
            return
        self._reaper = start_reaper(self._python, self._token)

    def _stop_reaper(self) -> None:
        reaper = self._reaper
        if reaper is None:
            return
        assert reaper.stdin is not None, "the reaper is started with a pipe on its stdin"
        try:
            reaper.stdin.write(SWEEP_AND_GO if self._worker_lost else FAREWELL)
            reaper.stdin.close()
        except OSError:
            pass
        self._wait_gone(reaper)

    def _retire(self, worker: _Worker) -> None:
        """Stop an idle worker (it runs no job: nothing is lost by killing it)."""
        self._forget(worker)
        kill_tree(worker.pid)
        self._wait_gone(worker.process)

    def _forget(self, worker: _Worker) -> None:
        """Stop listening to *worker* and close what we hold of it."""
        worker.gone = True
        self._selector.unregister(worker.replies.fileno())
        self._selector.unregister(worker.ended)
        os.close(worker.ended)
        worker.replies.close()
        if not worker.requests.closed:
            worker.requests.close()

    def _read_reply(self, worker: _Worker) -> None:
        job_id = worker.job_id
        try:
            message = worker.replies.recv_bytes()
        except (EOFError, OSError):
            self._worker_died(worker)
            return
        reply_id, ok, blob = pickle.loads(message)
        if reply_id != job_id or job_id is None:  # (a reply's id is never None)
            log.error("worker %d answered for job %r while running %r", worker.pid, reply_id,
                      job_id)
            return
        if job_id in self._killed and not worker.runs_command:
            self._worker_died(worker)  # finished just as we killed it: the worker is gone anyway
            return
        worker.job_id = None
        del self._running[job_id]
        self._release_gpus(job_id)
        self._idle.append(worker)
        if ok is None:
            self._pending.append(self._command_ended(job_id, *blob))
        elif ok:
            self._pending.append(Update(job_id, JobStatus.COMPLETED, exit_code=0, value=blob))
        else:
            self._pending.append(Update(job_id, JobStatus.FAILED, exit_code=1, error=blob))

    def _worker_died(self, worker: _Worker) -> None:
        self._forget(worker)
        kill_tree(worker.pid)  # whatever the job had started goes with it
        returncode = self._wait_gone(worker.process)
        if worker.job_id is not None and (worker.runs_command or worker.job_id not in self._killed):
            # It died under its job: what the job had started went to init. Find it by its mark.
            kill_marked(MARK_VARIABLE, worker.mark)
            self._worker_lost = True
        if worker in self._idle:
            self._idle.remove(worker)
        job_id = worker.job_id
        if job_id is None:
            log.warning("idle worker %d died (%s)", worker.pid, describe_exit(returncode))
            return
        del self._running[job_id]
        self._release_gpus(job_id)
        if job_id in self._killed:
            self._killed.discard(job_id)
            self._pending.append(Update(job_id, JobStatus.CANCELLED, reason="killed"))
        else:
            self._pending.append(Update(
                job_id, JobStatus.FAILED, exit_code=returncode,
                reason=(f"worker lost: its process (pid {worker.pid}) was "
                        f"{describe_exit(returncode)}"),
            ))

    @staticmethod
    def _wait_gone(process: subprocess.Popen) -> int:
        try:
            return process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            kill_tree(process.pid)
            return process.wait()

    # -- scripts and commands ----------------------------------------------------

    def _start_command(self, submission: Submission, gpus: tuple[int, ...]) -> _Worker:
        environment = _environment_bytes()
        environment[b"CORRAL_JOB_ID"] = str(submission.job_id).encode()
        for key, value in (*self._gpu_environment(gpus).items(), *submission.env):
            if value is None:  # unset for this job
                environment.pop(os.fsencode(key), None)
            else:
                environment[os.fsencode(key)] = os.fsencode(value)
        worker = self._idle_worker(None) or self._spawn_worker(gpus)
        environment[MARK_VARIABLE.encode()] = worker.mark.encode()  # after the job's own env
        # Most commands share one environment: send it only when it changed.
        same = environment == worker.sent_environment
        worker.sent_environment = environment
        request = command_request(submission.job_id, str(submission.jobdir), submission.argv,
                                  None if same else environment, submission.cwd)
        self._hand_to(worker, submission.job_id, request, runs_command=True)
        return worker

    def _spool_directory(self) -> str:
        if self._spool_dir is None:
            self._spool_dir = make_owned_tempdir(SPOOL_PREFIX, self._spool_parent)
        return self._spool_dir

    def _command_ended(self, job_id: int | str, returncode: int | None,
                       not_started: str | None) -> Update:
        """The update for a command's end; *returncode* and *not_started* are what
        :func:`corral.runtime.command.run_command` returned: one of them is None."""
        if job_id in self._killed:
            self._killed.discard(job_id)
            return Update(job_id, JobStatus.CANCELLED, exit_code=returncode, reason="killed")
        if returncode is None:  # it never started: *not_started* says why
            return Update(job_id, JobStatus.FAILED, reason=f"could not start: {not_started}")
        if returncode == 0:
            return Update(job_id, JobStatus.COMPLETED, exit_code=0)
        return Update(job_id, JobStatus.FAILED, exit_code=returncode,
                      reason=describe_exit(returncode))

    def _forget_in_child(self) -> None:
        """In a child forked from the driver (a fork-based pool of the user's),
        close our descriptors: a copy of an epoll set, a pidfd or a worker's
        pipe left open there confuses the parent's copy (stale events, no EOF)."""
        descriptors = [self._wake_read, self._wake_write]
        for runner in [*self._running.values(), *self._idle]:
            descriptors += [runner.requests.fileno(), runner.replies.fileno()]
        try:
            descriptors.append(self._selector.fileno())
        except (AttributeError, ValueError, OSError):
            pass
        for fd in descriptors:
            try:
                os.close(fd)
            except OSError:
                pass
        self._closed = True

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
