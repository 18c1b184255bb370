"""The local backend: real processes on this machine.

* Python calls go to persistent worker processes (:mod:`corral.runtime.worker`)
  over pipes, so a small call costs a message, not an interpreter start. A
  worker that dies fails only its own job ("worker lost") and the next job
  gets a fresh worker.
* A worker may be handed jobs to run after its current one (the engine
  chooses them, :attr:`Submission.follows`), sent in one message: they are
  SUBMITTED until the worker's reply for the job before says it starts them,
  and come back unstarted (an update to QUEUED) when asked for
  (:meth:`LocalBackend.give_back`, a kill), when the job before them runs
  long, or when the worker dies.
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

import errno
import itertools
import logging
import os
import pickle
import select
import selectors
import shutil
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Collection, Sequence
from typing import ClassVar, NamedTuple, cast

from corral.errors import BackendError, ResourceError
from corral.runtime.proctree import kill_marked, kill_tree, wake
from corral.spec import Resources
from corral.status import JobStatus
from corral.runtime.command import KILL, TERM_GRACE_S, TERMINATE, describe_exit, how_it_ended
from corral.runtime.frames import FrameReader
from corral.runtime.reaper import FAREWELL, MARK_VARIABLE, SWEEP_AND_GO
from corral.runtime.spool import move_spool_file, read_output_if_there
from corral.runtime.threads import no_thread_left
from corral.runtime.tempdirs import SPOOL_PREFIX, make_owned_tempdir
from corral.runtime.worker_process import (CANNOT_START, GivenBack, Reply, Started,
                                           WorkerStartError, call_request,
                                           abort_request, command_request, drop_request,
                                           lone_request,
                                           read_message,
                                           linger_from_environment, ring, start_reaper,
                                           start_worker, usable_cpus)
from corral.backends.base import Capabilities, Capacity, Submission, Update
from corral.backends.local import BACKEND

__all__ = ["LocalBackend", "default_cores", "total_memory_mb", "detect_gpus", "SPOOL_PREFIX"]

log = logging.getLogger("corral.backends.local")

def _starting_failure(jobdir: str) -> str | None:
    """The line a worker that could not start ended its stderr with (see
    ``corral.runtime.worker._cannot_start``), without its prefix; None if none."""
    tail = read_output_if_there(os.path.join(jobdir, "stderr"), last_bytes=1024) or ""
    last = tail.rstrip("\n").rpartition("\n")[2]
    prefix = CANNOT_START.partition("{pid}")[0]
    return last.removeprefix("corral: ") if last.startswith(prefix) else None


#: How often jobs that could not start for want of resources are tried again
#: while nothing ends (a shortage caused by other programs may pass).
_RETRY_START_S = 0.5
#: The reason of a job handed back before it could start.
_NOT_STARTED = "given back unstarted by its worker"
#: What a start that failed for want of these says: others' ends may free them.
_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


def _short_of_resources(error: BaseException | None) -> bool:
    """Whether *error* (or what caused it) is a want of file descriptors,
    processes, threads or memory, which a job's end may free."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in _SHORTAGES:
            return True
        if no_thread_left(error):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


#: Seconds a call gets to end once JobStopped was raised in it (its finally
#: blocks), as a command gets after its SIGTERM, before its worker is killed.
_CALL_STOP_GRACE_S = TERM_GRACE_S
#: How long a worker may take to kill the command it runs before it is killed
#: itself (it gives the command's process group its SIGTERM and grace, then
#: kills all it started, and waits for it to end).
_COMMAND_KILL_GRACE_S = TERM_GRACE_S + 3.0

#: The most GPUs one machine is taken to have: the local backend numbers each one.
MOST_GPUS = 4096


def default_cores() -> int:
    """All CPUs this process may use but one, and at least one."""
    return max(1, usable_cpus() - 1)


def total_memory_mb() -> int:
    """Physical memory of this machine in MB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


def visible_gpus() -> list[str] | None:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` gives this process, as it names them
    (indices or UUIDs), in order; None where it is not set. As CUDA reads it,
    the list ends at the first entry that names no device ("-1", empty)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    names: list[str] = []
    for item in visible.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break
        if item not in names:  # ("2,2" is one GPU: two jobs must not both hold it)
            names.append(item)
    return names


def detect_gpus() -> int:
    """GPUs visible to this process: CUDA_VISIBLE_DEVICES if set, else ``nvidia-smi -L``."""
    visible = visible_gpus()
    if visible is not None:
        return len(visible)
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


class _Outbox(NamedTuple):
    """The selector's note that *worker*'s request pipe has room for its outbox."""

    worker: _Worker


class _Outgoing:
    """A message waiting in a worker's outbox: what of it is still to be
    written, and whether the worker's doorbell is still to be rung for it."""

    __slots__ = ("data", "ring")

    def __init__(self, data: memoryview, ring: bool) -> None:
        self.data = data
        self.ring = ring


class _Worker:
    """One persistent Python worker, the pipes to it, a pidfd that says when it
    has died, and the mark its processes carry (see corral.runtime.reaper)."""

    def __init__(self, process: subprocess.Popen, requests, replies, doorbell: int,
                 gpu_key: tuple[int, ...], spool: tuple[str, str], mark: str):
        self.mark = mark
        self.ended = os.pidfd_open(process.pid)
        self.gone = False  # forgotten by the backend
        self.sent_environment: dict[bytes, bytes] | None = None  # the last command's
        self.spool = spool  # where a running job's output can be read
        self.process = process
        self.requests = requests
        self.request_fd: int = requests.fileno()  # (known also once requests is closed)
        self.replies = replies
        self.doorbell = doorbell  # rung after a message for it while it runs a job
        #: Its messages, read many at a time (see corral.runtime.frames).
        self.reader = FrameReader(replies.fileno())
        self.gpu_key = gpu_key
        #: (job id, is a script or command) of the jobs it has, in order: the
        #: first may run (see job_id), the others wait in its queue.
        self.handed: deque[tuple[int | str, bool]] = deque()
        #: The job it runs now: the first one handed, once known started.
        self.job_id: int | str | None = None
        #: We killed it (a call cannot be killed otherwise): its end is near.
        self.doomed = False
        #: Started for the job it is handed first, and not heard from yet.
        self.starting = True
        #: What is still to be written to its request pipe, in order (see
        #: LocalBackend._send): the loop writes only what the pipe takes.
        self.outbox: deque[_Outgoing] = deque()
        #: The loop's selector waits for room in its request pipe (for the outbox).
        self.awaits_room = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def runs_command(self) -> bool:
        """Whether the job it runs now is a script or command."""
        return self.job_id is not None and self.handed[0][1]


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
        linger_from_environment()  # a bad setting is refused here, not in every worker
        if gpus is not None and gpus > MOST_GPUS:  # (each is numbered: 10**8 took 12 GB,
            raise ValueError(f"gpus={gpus}: no machine has that many; the local backend "  # attack
                             f"counts at most {MOST_GPUS}")  # review)
        visible = visible_gpus()
        if gpus and visible is not None and gpus > len(visible):
            raise ValueError(f"gpus={gpus}, but CUDA_VISIBLE_DEVICES gives this process "
                             f"{len(visible)} GPU(s) ({','.join(visible) or 'none'}): a job "
                             "would share one; give at most that many, or set it wider")
        self._capacity = Capacity(
            cores=default_cores() if cores is None else cores,
            memory_mb=total_memory_mb() if memory is None else memory,
            gpus=detect_gpus() if gpus is None else gpus,
        )
        self._checked: Resources | None = None  # the last resources check() passed
        self._python = python
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        #: Held to write a wake-up and to close the pipe: a thread that posted as the
        #: loop closed wrote to a closed descriptor (EBADF at a rerun's end; once
        #: its number is reused, a byte into whatever file has it now).
        self._wake_lock = threading.Lock()
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._wake_poll = select.poll()  # the wake pipe alone: see hold_replies
        self._wake_poll.register(self._wake_read, select.POLLIN)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        #: The CPUs this process may use (see usable_cpus): while fewer workers
        #: than that are busy, one handed a job lingers after it (see lone_request).
        self._cpus = usable_cpus()
        #: Every job handed over and not ended, running or queued, and its worker.
        self._running: dict[int | str, _Worker] = {}
        #: The directory of each of those jobs: what a job wrote before its worker
        #: died goes there (see _keep_what_it_wrote).
        self._jobdirs: dict[int | str, str] = {}
        self._gpus_held: dict[int | str, tuple[int, ...]] = {}
        self._free_gpus = list(range(self._capacity.gpus or 0))
        #: What each of those is called in a job's CUDA_VISIBLE_DEVICES: the
        #: driver's own list where it has one (its GPUs 2 and 3 are not 0 and
        #: 1, which may be another user's), else their indices.
        named = visible_gpus() or []
        self._gpu_names = [named[index] if index < len(named) else str(index)
                           for index in self._free_gpus]
        self._killed: set[int | str] = set()
        #: Jobs killed while they waited in a worker's queue: cancelled when given
        #: back; one the worker started meanwhile runs on (its outcome is real).
        self._withdrawn: set[int | str] = set()
        #: Workers asked to kill the call they run, and when to kill them instead.
        self._kill_later: dict[_Worker, tuple[int | str, float]] = {}
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
        #: Jobs that could not start for want of descriptors or processes (see _defer).
        self._deferred: dict[int | str, Submission] = {}
        self._retry_at = 0.0
        self._said_short = False  # (said once: a shortage comes and goes many times)
        _LIVE_BACKENDS.add(self)

    # -- what the scheduler asks -------------------------------------------------

    @property
    def worker_mark(self) -> str:
        """The mark in the environment of every process of this backend's jobs
        (``<it>.<worker number>.``): a journal records it, so that a run that
        follows a killed one kills what it left (see corral.core.resume)."""
        return self._token

    def capacity(self) -> Capacity:
        return self._capacity

    def check(self, resources: Resources) -> None:
        if resources is self._checked:  # jobs submitted alike share their Resources
            return
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
        self._checked = resources

    def submit(self, batch: Sequence[Submission]) -> list[str]:
        native_ids = []
        queued: dict[_Worker, list[tuple]] = {}  # per worker: requests for its queue
        for submission in batch:
            if submission.follows is not None:
                native_ids.append(self._queue_behind(submission, queued))
            else:
                native_ids.append(self._start(submission))
        for worker, requests in queued.items():
            self._send(worker, requests)
        return native_ids

    def _start(self, submission: Submission) -> str:
        """Start one job; return its native id ("" if it did not start)."""
        sent_at = time.time()  # before it is sent: it may end before we look again
        try:
            gpus = self._take_gpus(submission)
            runner = (self._start_call(submission, gpus) if submission.call is not None
                      else self._start_command(submission, gpus))
        except Exception as error:  # this job cannot start; the others of the batch can
            self._release_gpus(submission.job_id)
            if self._idle and _short_of_resources(error):
                # Idle workers hold what it lacks (started for other GPUs, or for other
                # jobs earlier): one goes, and it starts (re-attack review: it failed
                # while three idle workers held the descriptors).
                self._retire(self._idle.pop(0))
                return self._start(submission)
            if self._busy and _short_of_resources(error):
                self._defer(submission, error)
            else:
                self._pending.append(Update(submission.job_id, JobStatus.FAILED,
                                            reason=f"could not start: {error}"))
            return ""
        self._running[submission.job_id] = runner
        self._jobdirs[submission.job_id] = str(submission.jobdir)
        self._pending.append(Update(submission.job_id, JobStatus.RUNNING,
                                    native_id=str(runner.pid), live_output=runner.spool,
                                    at=sent_at, starting=runner.starting))
        return str(runner.pid)

    # -- short of descriptors or processes ---------------------------------------------

    def _defer(self, submission: Submission, error: Exception) -> None:
        """Keep a job that could not start for want of file descriptors,
        processes or memory while others run: it starts once one of them ended
        (on its worker), or the shortage passed. Failing it at once failed the
        rest of the queue within a second, retries included (attack review,
        ``ulimit -n 64`` and 16 cores: 189 of 200 jobs failed while 11 ran)."""
        if not self._said_short:
            self._said_short = True
            log.warning("could not start a job (%s): it waits for a running job to end, "
                        "and so do the next ones that cannot start", error)
        self._deferred[submission.job_id] = submission
        self._retry_at = time.monotonic() + _RETRY_START_S
        # (Its row said SUBMITTED and nothing more, while the warning went to one
        # terminal only: known left from the attack review.)
        said = " ".join(str(error).split())
        self._pending.append(Update(submission.job_id, JobStatus.SUBMITTED, reason=(
            f"waits to start: {said}; tried again when a running job ends")))

    def _start_deferred(self) -> None:
        """Try the jobs that could not start again, in their order, until one
        still cannot (with nothing running any more, that one fails)."""
        waiting, self._deferred = self._deferred, {}
        for number, submission in enumerate(waiting.values()):
            self._start(submission)
            if self._deferred:  # short again: the rest wait on behind it, in their order
                self._deferred.update(itertools.islice(waiting.items(), number + 1, None))
                break

    def _take_deferred(self, job_ids: Collection[int | str], status: JobStatus,
                       reason: str) -> list[int | str]:
        """Settle those of *job_ids* that wait to start (given back, killed);
        return the others."""
        if not self._deferred:
            return list(job_ids)
        others = []
        for job_id in job_ids:
            if self._deferred.pop(job_id, None) is None:
                others.append(job_id)
            else:
                self._pending.append(Update(job_id, status, reason=reason))
        return others

    def give_back(self, job_ids: Collection[int | str]) -> None:
        """Ask for these jobs back if they wait in a worker's queue; each then
        comes back as QUEUED, or, if it started meanwhile, runs on."""
        self._drop(self._take_deferred(job_ids, JobStatus.QUEUED, _NOT_STARTED))

    def updates(self, timeout: float | None) -> list[Update]:
        if self._pending:
            timeout = 0
        if self._deferred:  # (tried again now and then: a shortage may pass)
            due = max(0.0, self._retry_at - time.monotonic())
            timeout = due if timeout is None else min(timeout, due)
        if self._kill_later:
            self._kill_overdue()
        if self._kill_later:  # (the overdue ones are gone from it now)
            soonest = min(due for _, due in self._kill_later.values()) - time.monotonic()
            timeout = max(0.0, soonest) if timeout is None else min(timeout, max(0.0, soonest))
        for key, _ in self._selector.select(timeout):
            if isinstance(key.data, _Outbox):
                if not key.data.worker.gone:
                    self._write_outbox(key.data.worker)
            elif key.data is None:
                self._drain_wake_pipe()
                self._wake_pending = False  # after draining: a wake() from now on writes again
            elif not key.data.gone:
                worker = key.data
                # Its pidfd says it died, or its pipe has messages (or ended):
                # what it sent before it died is read first, either way.
                self._read_reply(worker)
                if key.fd == worker.ended and not worker.gone:
                    self._worker_died(worker)
        if self._deferred and (self._idle or time.monotonic() >= self._retry_at):
            self._start_deferred()
        found, self._pending = self._pending, []
        return found

    def hold_replies(self, seconds: float) -> None:
        """Wait up to *seconds*, leaving workers' replies unread, unless woken
        (:meth:`wake`) or something is due: the loop then reads several
        replies at once (see :meth:`corral.core.ahead.AheadPolicy.reply_wait`).
        In whole milliseconds, rounded down: ``poll`` rounds up, and 0.4 ms
        asked waited 1.1 (attack review), longer than the work the workers had."""
        milliseconds = int(seconds * 1000)
        if (milliseconds < 1 or self._wake_pending or self._pending or self._deferred
                or self._kill_later or any(worker.awaits_room for worker in self._busy)):
            return
        self._wake_poll.poll(milliseconds)

    def wake(self) -> None:
        # One byte in the pipe is enough to wake the loop: skip the system call
        # (and the context switch it causes) while one is already on its way.
        if self._wake_pending or self._closed:
            return
        with self._wake_lock:
            if self._closed:
                return
            self._wake_pending = True
            try:
                os.write(self._wake_write, b"\0")
            except BlockingIOError:  # the pipe is full: a wake-up is already pending
                pass

    def kill(self, job_ids: Collection[int | str]) -> None:
        queued = []
        for job_id in self._take_deferred(job_ids, JobStatus.CANCELLED, "killed"):
            runner = self._running.get(job_id)
            if runner is None:
                continue
            if runner.job_id != job_id:  # not started: taken back, then reported killed
                self._withdrawn.add(job_id)
                queued.append(job_id)
            else:
                self._killed.add(job_id)
                self._kill_running(runner, job_id)
        self._drop(queued)

    def _kill_running(self, runner: _Worker, job_id: int | str) -> None:
        """Kill the job *runner* runs (as far as its messages read so far say)."""
        if runner.starting:
            # It reads no message before it has started, which may take long
            # (or never end): it dies, and the job with it, which had not begun
            # (those handed behind it come back).
            runner.doomed = True
            kill_tree(runner.pid)
        elif runner.runs_command:  # the worker kills it, reports it killed and goes on
            wake(runner.pid)  # (a command that stopped its worker, kill -STOP $PPID)
            self._tell(runner, KILL, job_id)
            # A worker that cannot act on it (stopped again, or in D state) dies,
            # and the command's processes with it, as a call's worker does.
            self._kill_later[runner] = (job_id, time.monotonic() + _COMMAND_KILL_GRACE_S)
        else:
            # A call runs in the worker itself: the worker raises JobStopped in
            # it, if it still runs, so that its finally blocks run (see
            # corral.runtime.interrupt), and is killed if the call goes on.
            # Jobs waiting behind it are taken back: the worker may have gone
            # on to them since its last message.
            wake(runner.pid)  # (a call that stopped its worker, os.kill(os.getpid(), SIGSTOP))
            self._drop([entry[0] for entry in runner.handed if entry[0] != job_id])
            self._tell(runner, KILL, job_id)
            if self._kill_later.get(runner, (None,))[0] != job_id:  # (a second stop, a cancel
                # after its timeout, gives it no more time: re-attack review)
                self._kill_later[runner] = (job_id, time.monotonic() + _CALL_STOP_GRACE_S)

    def _kill_overdue(self) -> None:
        """Kill the workers still running a job they were asked to kill."""
        now = time.monotonic()
        for worker, (job_id, due) in list(self._kill_later.items()):
            if worker.gone or worker.job_id != job_id:
                del self._kill_later[worker]
            elif due <= now:
                del self._kill_later[worker]
                worker.doomed = True
                kill_tree(worker.pid)

    def terminate(self, job_ids: Collection[int | str]) -> None:
        queued = []
        for job_id in self._take_deferred(job_ids, JobStatus.CANCELLED, "killed"):
            runner = self._running.get(job_id)
            if runner is not None and runner.job_id != job_id:
                queued.append(job_id)  # not started: nothing to ask to stop
            elif runner is not None and runner.runs_command:  # SIGTERM to its process group
                self._tell(runner, TERMINATE, job_id)
            elif runner is not None:  # a call polls corral.abort_requested()
                self._send(runner, abort_request(job_id))
        self._drop(queued)

    def _drop(self, job_ids: Collection[int | str]) -> None:
        """Ask the workers for these queued jobs back (one message per worker)."""
        by_worker: dict[_Worker, list[int | str]] = {}
        for job_id in job_ids:
            worker = self._running.get(job_id)
            if worker is not None and worker.job_id != job_id:
                by_worker.setdefault(worker, []).append(job_id)
        for worker, dropped in by_worker.items():
            self._send(worker, drop_request(dropped))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        busy = list(self._busy)
        for runner in busy:
            kill_tree(runner.pid)
        for worker in self._idle:
            worker.requests.close()  # a clean EOF: the worker returns from main()
        # Told before the workers are waited for, so that the reaper's exit and
        # theirs overlap: nothing is left for it to guard (the busy ones' trees are
        # killed above; a sweep after a lost worker also ends idle ones, ending anyway).
        self._tell_reaper_to_go()
        for runner in busy + self._idle:
            self._wait_gone(runner.process)
            self._forget(runner)
        if self._reaper is not None:
            self._wait_gone(self._reaper)
        self._running.clear()
        self._busy.clear()
        self._idle.clear()
        self._deferred.clear()
        self._selector.close()
        if self._spool_dir is not None:
            shutil.rmtree(self._spool_dir, ignore_errors=True)
        with self._wake_lock:  # (_closed is set: no wake-up writes from now on)
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
        return {"CUDA_VISIBLE_DEVICES": ",".join(self._gpu_names[gpu] for gpu in gpus)}

    # -- Python calls ------------------------------------------------------------

    def _start_call(self, submission: Submission, gpus: tuple[int, ...]) -> _Worker:
        assert submission.call is not None, "a call's submission carries its payload"
        worker = self._idle_worker(gpus) or self._spawn_worker(gpus)
        self._hand_to(worker, submission.job_id, self._call_request(submission),
                      runs_command=False)
        return worker

    @staticmethod
    def _call_request(submission: Submission, extra_env: tuple = ()) -> tuple:
        assert submission.call is not None, "a call's submission carries its payload"
        return call_request(submission.job_id, str(submission.jobdir), submission.call,
                            submission.upstream,
                            (*submission.env, *extra_env) if extra_env else submission.env,
                            submission.cwd, submission.outcomes)

    def _hand_to(self, worker: _Worker, job_id: int | str, request: tuple,
                 runs_command: bool) -> None:
        """Give *worker*, idle, the job it runs now. A worker still starting
        gets it as a queue of one, so that it says when it really starts it
        (:meth:`_started`): its interpreter's start-up (a tenth of a second,
        more on a busy machine) is not the job's time, which its timeout
        counts. The job is RUNNING from now on all the same: it is killed,
        aborted and paused as a running job."""
        worker.handed.append((job_id, runs_command))
        worker.job_id = job_id
        self._busy.add(worker)
        if worker.starting:
            message: object = [request]
        elif len(self._busy) < self._cpus:  # a CPU left for the driver: see lone_request
            message = lone_request(request)
        else:
            message = request
        # Idle, its main thread waits on the pipe and reads this itself: no ring.
        self._send(worker, message, ring=False)

    def _send(self, worker: _Worker, message: object, ring: bool = True) -> None:
        """Send *message* to *worker*, framed as ``Connection.send_bytes`` frames it,
        and, with *ring*, ring its doorbell once the message is in the pipe:
        a worker that runs a job reads it only then (see :mod:`corral.runtime.worker`).

        Never blocks: what the pipe does not take now waits in the worker's
        outbox, and the loop writes it when the pipe has room. A blocking
        write could wait forever: a worker that sends a large reply while
        its doorbell thread waits for the queue's lock reads no request until
        the driver reads its replies, and the driver would be stuck writing.
        """
        if worker.gone:
            return
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        header = (struct.pack("!i", len(data)) if len(data) <= 0x7FFFFFFF
                  else struct.pack("!iQ", -1, len(data)))
        worker.outbox.append(_Outgoing(memoryview(header + data), ring))
        if len(worker.outbox) == 1:
            self._write_outbox(worker)

    def _write_outbox(self, worker: _Worker) -> None:
        """Write as much of *worker*'s outbox as its pipe takes, and ring its
        doorbell for the messages that need it as soon as their first bytes
        are in (the worker reads the rest as it comes); have the loop wait
        for room for the rest."""
        descriptor = worker.request_fd
        rings = False
        try:
            while worker.outbox:
                head = worker.outbox[0]
                written = os.write(descriptor, head.data)
                if written and head.ring:
                    rings, head.ring = True, False
                if written < len(head.data):
                    head.data = head.data[written:]
                    break
                worker.outbox.popleft()
        except BlockingIOError:
            pass
        except OSError:  # it died: its reply pipe reports it
            worker.outbox.clear()
        if rings:
            ring(worker.doorbell)
        if worker.outbox and not worker.awaits_room:
            self._selector.register(descriptor, selectors.EVENT_WRITE, _Outbox(worker))
            worker.awaits_room = True
        elif worker.awaits_room and not worker.outbox:
            self._selector.unregister(descriptor)
            worker.awaits_room = False

    def _queue_behind(self, submission: Submission, queued: dict[_Worker, list[tuple]]) -> str:
        """Queue a job on the worker that has *submission.follows*: it starts
        there when the jobs before it end. Returns its native id (the worker's pid)."""
        worker = self._running.get(submission.follows)  # type: ignore[arg-type]
        if worker is None or worker.gone or worker.doomed or worker in self._kill_later:
            self._pending.append(Update(submission.job_id, JobStatus.QUEUED,
                                        reason="the job it was to follow has ended"))
            return ""
        if submission.call is not None:  # (on a worker started for GPUs, it holds none)
            request = self._call_request(
                submission, (("CUDA_VISIBLE_DEVICES", ""),) if worker.gpu_key else ())
        else:
            request = self._command_request(submission, worker, ())
        worker.handed.append((submission.job_id, submission.call is None))
        self._running[submission.job_id] = worker
        self._jobdirs[submission.job_id] = str(submission.jobdir)
        queued.setdefault(worker, []).append(request)
        return str(worker.pid)

    def _tell(self, worker: _Worker, action: str, job_id: int | str) -> None:
        """Ask *worker* to kill or terminate the command it runs for *job_id*."""
        self._send(worker, (action, job_id))

    def _idle_worker(self, gpus: tuple[int, ...] | None) -> _Worker | None:
        """An idle worker started for *gpus* (any idle worker for None: a
        command gets its environment, CUDA_VISIBLE_DEVICES included, with the request)."""
        for index in range(len(self._idle) - 1, -1, -1):
            if gpus is None or self._idle[index].gpu_key == gpus:
                return self._idle.pop(index)
        return None

    def _spawn_worker(self, gpus: tuple[int, ...]) -> _Worker:
        limit = self._capacity.cores or 1
        while self._idle and len(self._idle) + len(self._busy) >= limit:
            self._retire(self._idle.pop(0))
        spool = os.path.join(self._spool_directory(), f"worker-{next(self._spool_numbers)}")
        # Ends with a dot: worker 1's mark must not be a prefix of worker 12's.
        mark = f"{self._token}.{next(self._worker_numbers)}."
        environment = dict(os.environ, **self._gpu_environment(gpus), **{MARK_VARIABLE: mark})
        try:
            self._start_reaper()
            started = start_worker(self._python, spool, environment)
        except WorkerStartError as error:
            raise BackendError(str(error)) from error
        worker = _Worker(started.process, started.requests, started.replies, started.doorbell,
                         gpus, started.spool, mark)
        os.set_blocking(started.requests.fileno(), False)  # see _send
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

    def _tell_reaper_to_go(self) -> None:
        """Say farewell to the reaper (or ask it to sweep first, after a lost
        worker); the caller waits for it to end."""
        reaper = self._reaper
        if reaper is None:
            return
        assert reaper.stdin is not None, "the reaper is started with a pipe on its stdin"
        try:
            reaper.stdin.write(SWEEP_AND_GO if self._worker_lost else FAREWELL)
            reaper.stdin.close()
        except OSError:
            pass

    def _retire(self, worker: _Worker) -> None:
        """Stop an idle worker (it runs no job: nothing is lost by killing it)."""
        self._forget(worker)
        kill_tree(worker.pid)
        self._wait_gone(worker.process)

    def _forget(self, worker: _Worker) -> None:
        """Stop listening to *worker* and close what we hold of it."""
        worker.gone = True
        worker.outbox.clear()
        if worker.awaits_room:
            self._selector.unregister(worker.request_fd)
            worker.awaits_room = False
        self._selector.unregister(worker.replies.fileno())
        self._selector.unregister(worker.ended)
        os.close(worker.ended)
        os.close(worker.doorbell)
        worker.replies.close()
        if not worker.requests.closed:
            worker.requests.close()

    def _read_reply(self, worker: _Worker) -> None:
        """Act on what *worker* has sent: every message its pipe holds, read
        at once, so that a worker running a line of tiny jobs costs the
        control loop one turn per handful of jobs, not one per job."""
        reader = worker.reader
        reader.fill()
        while not worker.gone:
            data = reader.next_message()
            if data is None:
                break
            self._handle(worker, read_message(data))
        if reader.ended and not worker.gone:
            self._worker_died(worker)

    def _handle(self, worker: _Worker, message: Reply | Started | GivenBack,
                dying: bool = False) -> None:
        """Act on one message of *worker*; *dying*: read after it died."""
        worker.starting = False
        if isinstance(message, GivenBack):
            self._taken_back(worker, message.job_ids)
            return
        if isinstance(message, Started):
            self._started(worker, message.job_id, message.at)
            return
        job_id = worker.job_id
        if message.job_id != job_id or job_id is None:  # (a reply's id is never None)
            log.error("worker %d answered for job %r while running %r", worker.pid,
                      message.job_id, job_id)
            return
        if job_id in self._killed and worker.doomed and not dying and len(worker.handed) == 1:
            # It finished just as we killed it: its end counts, and the worker is gone anyway.
            self._handle(worker, message, dying=True)
            self._worker_died(worker, killed=True)
            return
        worker.handed.popleft()
        worker.job_id = None
        if self._kill_later.get(worker, (None,))[0] == job_id:  # it ended: nothing overdue
            del self._kill_later[worker]  # (its retry may run here next, under the same id)
        del self._running[job_id]
        del self._jobdirs[job_id]
        self._release_gpus(job_id)
        ok, blob, ended = message.ok, message.blob, message.ended
        # A job killed as it ended is reported as it ended: the engine knows
        # why it killed it (a timeout, a cancel) and what that makes of the
        # outcome; a cancelled call that completed all the same keeps its result.
        killed = job_id in self._killed
        self._killed.discard(job_id)
        if ok is None:
            returncode, not_started = cast("tuple[int | None, str | None]", blob)
            update = self._command_ended(job_id, returncode, not_started, ended,
                                         message.started, killed)
        elif ok:
            update = Update(job_id, JobStatus.COMPLETED, exit_code=0, at=ended,
                            began=message.started, value=blob)  # type: ignore[arg-type]
        else:
            update = Update(job_id, JobStatus.FAILED, exit_code=1, at=ended,
                            began=message.started, error=blob)  # type: ignore[arg-type]
        self._pending.append(update)
        if message.next_id is not None:
            self._started(worker, message.next_id, message.ended)
        elif not worker.handed and not dying:
            self._busy.discard(worker)
            self._idle.append(worker)
        # else: what it was handed next had not reached it yet; it says when it starts it

    def _started(self, worker: _Worker, job_id: object, at: float) -> None:
        """The worker started the first job of its queue."""
        if not worker.handed or worker.handed[0][0] != job_id:
            log.error("worker %d started job %r, which it was not handed next", worker.pid,
                      job_id)
            return
        handed_as_it_started = worker.job_id == job_id  # its first job (see _hand_to)
        worker.job_id = job_id = worker.handed[0][0]
        self._pending.append(Update(job_id, JobStatus.RUNNING, native_id=str(worker.pid),
                                    live_output=worker.spool, at=at))
        if handed_as_it_started:  # RUNNING already: this says when it began, no more
            return
        self._withdrawn.discard(job_id)  # it started before being asked back: it runs on
        if job_id in self._killed:  # a kill that came too late to take it back
            self._kill_running(worker, job_id)

    def _taken_back(self, worker: _Worker, job_ids: tuple) -> None:
        """Queued jobs the worker gave back unstarted."""
        returned = set(job_ids)
        worker.handed = deque(entry for entry in worker.handed if entry[0] not in returned)
        for job_id in job_ids:
            if self._running.pop(job_id, None) is None:
                continue
            del self._jobdirs[job_id]
            if job_id in self._killed or job_id in self._withdrawn:
                self._killed.discard(job_id)
                self._withdrawn.discard(job_id)
                self._pending.append(Update(job_id, JobStatus.CANCELLED, reason="killed"))
            else:
                self._pending.append(Update(job_id, JobStatus.QUEUED, reason=_NOT_STARTED))
        if worker.job_id is None and not worker.handed and not worker.gone:
            self._busy.discard(worker)
            self._idle.append(worker)

    def _worker_died(self, worker: _Worker, killed: bool = False) -> None:
        """Settle what *worker* ran or held, once it died (*killed*: by us, once idle)."""
        # What it sent before it died counts: jobs it finished must not run again.
        worker.doomed = True
        reader = worker.reader
        while worker.job_id is not None:
            data = reader.next_message()
            if data is None and reader.fill():
                continue
            if data is None:
                break
            self._handle(worker, read_message(data), dying=True)
        self._forget(worker)
        kill_tree(worker.pid)  # whatever the job had started goes with it
        returncode = self._wait_gone(worker.process)
        if worker.job_id is not None and (worker.runs_command or worker.job_id not in self._killed):
            # It died under its job: what the job had started went to init. Find it by its mark.
            kill_marked(MARK_VARIABLE, worker.mark)
            self._worker_lost = True
        if worker in self._idle:
            self._idle.remove(worker)
        self._busy.discard(worker)
        job_id = worker.job_id
        self._taken_back(worker, tuple(entry[0] for entry in worker.handed if entry[0] != job_id))
        if job_id is None:
            if not killed:
                log.warning("idle worker %d died (%s)", worker.pid, describe_exit(returncode))
            return
        del self._running[job_id]
        jobdir = self._jobdirs.pop(job_id)
        self._keep_what_it_wrote(worker, jobdir)
        self._release_gpus(job_id)
        if job_id in self._killed:
            self._killed.discard(job_id)
            self._pending.append(Update(job_id, JobStatus.CANCELLED, reason="killed"))
        else:
            reason = f"worker lost: its process (pid {worker.pid}) {how_it_ended(returncode)}"
            if worker.starting:  # what it said as it could not start (review of a fix:
                said = _starting_failure(jobdir)  # "worker lost" said nothing of the cause)
                reason = reason if said is None else f"worker lost: {said}"
            self._pending.append(Update(job_id, JobStatus.FAILED, exit_code=returncode,
                                        reason=reason))

    @staticmethod
    def _keep_what_it_wrote(worker: _Worker, jobdir: str) -> None:
        """Move what the job *worker* ran wrote before the worker died (killed
        for the job's timeout, a cancel or an abort, or dead by itself) from
        its spool files to the job's own, as the worker does after each job it
        ends: the output of a job that did not end well is the one most read."""
        for path, name in zip(worker.spool, ("stdout", "stderr"), strict=True):
            try:
                if os.path.getsize(path):
                    move_spool_file(path, jobdir, name)
            except FileNotFoundError:  # (the worker died before it made it)
                continue
            except OSError as error:
                log.warning("the %s of job directory %s could not be kept: %s", name, jobdir,
                            error)

    @staticmethod
    def _wait_gone(process: subprocess.Popen) -> int:
        try:
            return process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            kill_tree(process.pid)
            return process.wait()

    # -- scripts and commands ----------------------------------------------------

    def _start_command(self, submission: Submission, gpus: tuple[int, ...]) -> _Worker:
        worker = self._idle_worker(None) or self._spawn_worker(gpus)
        self._hand_to(worker, submission.job_id, self._command_request(submission, worker, gpus),
                      runs_command=True)
        return worker

    def _command_request(self, submission: Submission, worker: _Worker,
                         gpus: tuple[int, ...]) -> tuple:
        """The request for a command on *worker*, with its whole environment
        only when it differs from the last one sent there (most commands share one)."""
        environment = _environment_bytes()
        environment[b"CORRAL_JOB_ID"] = str(submission.job_id).encode()
        for key, value in (*self._gpu_environment(gpus).items(), *submission.env):
            if value is None:  # unset for this job
                environment.pop(os.fsencode(key), None)
            else:
                environment[os.fsencode(key)] = os.fsencode(value)
        environment[MARK_VARIABLE.encode()] = worker.mark.encode()  # after the job's own env
        same = environment == worker.sent_environment
        worker.sent_environment = environment
        return command_request(submission.job_id, str(submission.jobdir), submission.argv,
                               None if same else environment, submission.cwd)

    def _spool_directory(self) -> str:
        if self._spool_dir is None:
            self._spool_dir = make_owned_tempdir(SPOOL_PREFIX, self._spool_parent)
        return self._spool_dir

    def _command_ended(self, job_id: int | str, returncode: int | None,
                       not_started: str | None, ended: float, began: float,
                       killed: bool) -> Update:
        """The update for a command's end; *returncode* and *not_started* are what
        :func:`corral.runtime.command.run_command` returned: one of them is None.
        One *killed* that had exited 0 first completed."""
        if killed and returncode != 0:
            return Update(job_id, JobStatus.CANCELLED, exit_code=returncode, reason="killed",
                          at=ended)
        if returncode is None:  # it never started: *not_started* says why
            return Update(job_id, JobStatus.FAILED, reason=f"could not start: {not_started}",
                          at=ended)
        if returncode == 0:
            return Update(job_id, JobStatus.COMPLETED, exit_code=0, at=ended, began=began)
        return Update(job_id, JobStatus.FAILED, exit_code=returncode,
                      reason=describe_exit(returncode), at=ended, began=began)

    def _forget_in_child(self) -> None:
        """In a child forked from the driver (a fork-based pool of the user's),
        close our descriptors: a copy of an epoll set, a pidfd or a worker's
        pipe left open there confuses the parent's copy (stale events, no EOF)."""
        descriptors = [self._wake_read, self._wake_write]
        for runner in [*self._busy, *self._idle]:
            descriptors += [runner.requests.fileno(), runner.replies.fileno(), runner.doorbell,
                            runner.ended]
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
        # A read of a pipe returns what it holds: one that comes back short
        # emptied it, and a second read would only fail with EAGAIN.
        try:
            while len(os.read(self._wake_read, 4096)) == 4096:
                pass
        except BlockingIOError:
            pass


