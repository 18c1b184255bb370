"""A persistent worker process: runs jobs one after another.

Started by the local backend as ``python -c ...worker.main()`` with three pipe
file descriptors: requests, replies and a doorbell. Each message on the
request pipe is one framed pickle: a request, a list of requests to run in
that order, or ``(DROP, job ids)``.
A request is a Python call::

    ("call", job_id, jobdir, payload, upstream, env, cwd, outcomes)

or a script or shell command (see :mod:`corral.runtime.command`)::

    ("command", job_id, jobdir, argv, environment, cwd)

Requests the worker has not started wait in its queue (see :class:`_Queue`);
the driver counts them as SUBMITTED. An idle worker reads its next request
in its main thread and starts it at once; a message for a busy worker comes
with a byte on the doorbell pipe, which wakes a thread that reads it while
the job runs. Each job's end is one message
(:func:`corral.runtime.worker_process.reply_message`): when it started and
ended, the pickled ``(job_id, ok, blob)``, and which queued job starts now.
A queued job that starts when no reply could say so (the worker had gone
idle before it arrived) is announced by a message of its own.
*blob* is a call's pickled return value or a packed exception (see
:mod:`corral.runtime.payload`), or a command's ``(exit status, why it could
not start)`` (*ok* None). Queued jobs that will not run here are sent back
in one :class:`~corral.runtime.worker_process.GivenBack` message. With *outcomes* set
(a journaled run) a call's ``(job_id, ok, blob)`` is also appended to the run's
outcome log in that directory before it is sent (see
:mod:`corral.runtime.outcomes`): a driver killed in between finds it there
when it resumes, instead of running the job twice.

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
import _signal  # type: ignore[import-not-found]  # (see _Settings)
import select
import signal
import stat
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, NoReturn

from corral.errors import JobStopped
from corral.runtime import abort, interrupt
from corral.runtime.command_result import RESULT_FILE_NAME, RESULT_FILE_VARIABLE
from corral.runtime.command import KILL, StopRequests, is_kill_or_terminate, run_command
from corral.runtime.execute import here_as_home, kill_leftovers, run_call
from corral.runtime.guard import become_subreaper, bind_to_parent
from corral.runtime.loading import mark_worker_process
from corral.runtime.payload import dumps_error
from corral.safe_repr import describe_error
from corral.runtime.spool import NOT_SAVED, hand_over, move_spool_file, open_spool
from corral.runtime.stdfds import above_standard, open_standard_fds
from corral.runtime.threads import allow_signals, no_thread_left
from corral.runtime.outcomes import OutcomeLog
from corral.runtime.worker_process import (ABORT, CANNOT_START, DROP, LONE, MAX_REPLY_BYTES,
                                           given_back_message, linger_from_environment,
                                           reply_message, started_message, usable_cpus)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

#: Seconds a worker waits for its next request before it exits, where set (the
#: Dask backend's workers outlive the run that started them otherwise).
IDLE_EXIT_VARIABLE = "CORRAL_WORKER_IDLE_EXIT_S"

class _Spool:
    """Fds 1 and 2 of the worker, pointed at spool files for good (see
    :mod:`corral.runtime.spool`), so a job's output is caught whoever writes
    it: Python, a C extension or a child process.

    A job may close them, point them at /dev/null or replace ``sys.stdout``:
    all of that is put back after it, or every later job of the worker failed
    ("cannot save the job's output"), or printed nowhere (attack review)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        #: Which result path this worker's commands are given (see :meth:`hand_over_result`).
        self._result_generation = 0
        #: :attr:`result_path` as a command's environment holds it.
        self.result_path_bytes = os.fsencode(self.result_path)
        self._files: dict[int, tuple[int, int] | None] = {}
        for fd, name in _STREAMS:
            spool = open_spool(f"{prefix}.{name}")
            os.dup2(spool, fd)  # dup2 clears FD_CLOEXEC: children inherit 1 and 2
            os.close(spool)
            self._files[fd] = _file_of(fd)

    def hand_over(self, jobdir: str) -> None:
        """Move what the last job wrote into *jobdir*, and point fds 1 and 2 at
        the spool again where the job moved them (after :meth:`_Settings.put_back`)."""
        failed: OSError | None = None
        for fd, name in _STREAMS:
            path = f"{self.prefix}.{name}"
            try:
                if _file_of(fd) != self._files[fd]:
                    self._point_at_spool(fd, path)
                if hand_over(fd, jobdir, name, path):
                    self._files[fd] = _file_of(fd)  # (renamed: a new spool file)
            except OSError as error:  # (the other is moved all the same)
                failed = failed or error
        if failed is not None:
            raise failed

    @property
    def result_path(self) -> str:
        """Where a command run here writes its result (see
        :mod:`corral.runtime.command_result`), until :meth:`hand_over_result`."""
        generation = f".{self._result_generation}" if self._result_generation else ""
        return f"{self.prefix}{generation}.{RESULT_FILE_NAME}"

    def hand_over_result(self, jobdir: str) -> None:
        """Move the result file a command wrote, if it wrote one, into *jobdir*;
        one that cannot be moved is removed, not left to the next command."""
        path = self.result_path
        try:
            found = os.lstat(path)  # (most commands write none: one stat)
        except FileNotFoundError:
            return
        try:
            if not stat.S_ISREG(found.st_mode):  # (a copy across file systems would follow a
                raise OSError(f"its result file (${RESULT_FILE_VARIABLE}) is "  # link, and
                              f"{_kind_of_file(found.st_mode)}, not a regular file")  # empty
            move_spool_file(path, jobdir, RESULT_FILE_NAME)  # its target: re-attack review)
        except OSError:
            if not _removed(path, found.st_mode):  # (one that cannot be removed, a directory
                # holding an immutable file, would fail every later command: they get another)
                self._result_generation += 1
                self.result_path_bytes = os.fsencode(self.result_path)
            raise

    def _point_at_spool(self, fd: int, path: str) -> None:
        """Point *fd* at its spool file again (what the job wrote there before
        it moved the fd stays, and is handed over)."""
        spool = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        if spool == fd:  # (the job closed it: the lowest free descriptor is that one)
            os.set_inheritable(fd, True)
        else:
            try:
                os.dup2(spool, fd)
            finally:
                os.close(spool)
        self._files[fd] = _file_of(fd)


def _kind_of_file(mode: int) -> str:
    """What a file that is no regular one is, in words."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a device"


def _removed(path: str, mode: int) -> bool:
    """Remove what a command left at its result file's path, a directory with
    all it holds too: left there, it failed every later command of this worker
    (re-attack review: one ``mkdir "$CORRAL_RESULT_FILE"``); whether it is gone.
    The path is the worker's own, in its spool directory: nothing of anyone
    else's is there."""
    try:
        if stat.S_ISDIR(mode):
            import shutil  # (only here: a worker starts without it)

            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


_STREAMS = ((1, "stdout"), (2, "stderr"))
#: The variable naming a command's result file (see corral.runtime.command_result).
_RESULT_VARIABLE = RESULT_FILE_VARIABLE.encode()


def _file_of(fd: int) -> tuple[int, int] | None:
    """Which file *fd* is open on (device, inode); None if it is closed."""
    try:
        found = os.fstat(fd)
    except OSError:
        return None
    return found.st_dev, found.st_ino


#: Signals a job may take over (ignore, handle) for the jobs after it too.
_KEPT_SIGNALS = (*(int(getattr(signal, name)) for name in (
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM",
    "SIGCHLD", "SIGCONT", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGXCPU", "SIGXFSZ", "SIGVTALRM",
    "SIGPROF", "SIGWINCH") if hasattr(signal, name)), interrupt.STOP_SIGNAL)


class _Settings:
    """What of the worker process a Python call may change for every job
    after it, as the worker set it up: put back after each job (attack
    review: a call's ``signal.signal(SIGTERM, SIG_IGN)`` made a later
    command ignore its abort; its ``os.umask`` made later jobs' files
    unreadable; its alarm killed the next job)."""

    def __init__(self) -> None:
        # (_signal's getsignal: the signal module's wraps each answer in an
        # enum, 13 us a job for these; the raw one, under 1 us.)
        self.handlers = [(signum, _signal.getsignal(signum)) for signum in _KEPT_SIGNALS]
        # (attack review: a call that blocked signals blocked corral's stop and
        # abort signals for every job after it)
        self.mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
        # (re-attack review: a call's own hook took the stop's re-arming from the jobs after)
        self.unraisable = sys.unraisablehook
        self.umask = os.umask(0o022)
        os.umask(self.umask)

    def put_back(self) -> None:
        for stream in (sys.stdout, sys.stderr):  # the job's own, wherever it put them
            try:
                stream.flush()
            except Exception:
                pass
        _put_back_python_streams()
        signal.setitimer(signal.ITIMER_REAL, 0)  # (an alarm outlives the call that set it)
        if signal.pthread_sigmask(signal.SIG_BLOCK, ()) != self.mask:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        if sys.unraisablehook is not self.unraisable:
            sys.unraisablehook = self.unraisable
        for signum, handler in self.handlers:
            if _signal.getsignal(signum) is not handler:
                signal.signal(signum, handler)
        os.umask(self.umask)


def _put_back_python_streams() -> None:
    """``sys.stdout`` and ``sys.stderr`` as the worker set them, on fds 1 and
    2, whatever the job assigned or closed."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        original = getattr(sys, f"__{name}__")
        if original is None or original.closed:
            original = open(fd, "w", buffering=1, closefd=False,  # noqa: SIM115
                            errors="backslashreplace")
            setattr(sys, f"__{name}__", original)
        if getattr(sys, name) is not original:
            setattr(sys, name, original)


#: How long a job may run before the jobs queued behind it are given back to
#: the driver, which hands them to a worker that is free (see :class:`_Queue`).
PATIENCE_S = 0.02
#: Overrides PATIENCE_S where set (tests hold queued jobs in a worker with it).
PATIENCE_VARIABLE = "CORRAL_WORKER_PATIENCE_S"
#: How long a worker that ran a lone job (see
#: :func:`corral.runtime.worker_process.lone_request`) waits awake for its next
#: request before it sleeps. Longer than a lone round trip's gap between a
#: reply and the next request here (about 0.25 ms), short enough that a
#: driver that sends nothing more wastes next to nothing. It does so only
#: while that pays and costs no one (see :meth:`_Queue.may_linger`).
#: corral.runtime.worker_process.LINGER_VARIABLE overrides it.
LINGER_S = 0.0005
#: The most lone jobs a worker passes without lingering after lingering
#: caught nothing many times in a row: it then tries once in this many, so a
#: caller that pauses between its jobs pays under 1 % of LINGER_S a job.
MOST_LINGERS_SKIPPED = 128
#: The most looks at the pipe a second of lingering takes: each (a poll, a
#: clock and a yield, three system calls) took 1.2 to 1.7 µs here, so the clock
#: ends a linger first; the count ends it where the clock cannot.
LOOKS_PER_SECOND = 1_000_000
#: The clock a linger is timed by, taken as the worker starts: a job that
#: patches the time module does not change it.
_monotonic_clock = time.clock_gettime


class _Queue:
    """Requests received and not started yet, in order; the reading of them
    from the driver; and the lookout that gives them back when the job before
    them runs long.

    The driver hands a worker its next jobs before the current one ends (they
    are SUBMITTED, not RUNNING), so that it never idles while the driver
    catches up. Who reads the request pipe depends on whether a job runs:

    * An idle worker's main thread waits on the pipe itself, and starts the
      request it reads at once. Handing it to the main thread from another
      one cost a tiny job a third of its round trip. After a lone job (see
      :func:`corral.runtime.worker_process.lone_request`) it waits awake a
      moment first (:data:`LINGER_S`), where that pays and costs no one.
    * While a job runs, the driver rings the doorbell after each message it
      sends (a queued job, a drop, a kill). That wakes the doorbell thread,
      which reads every message the pipe holds. So queued jobs can always be
      asked back (:data:`DROP`), and a running command killed.

    One message at a time is read and filed, under :attr:`reading`: they are
    filed in the order they were sent, whichever thread reads them. The
    doorbell's end (the driver died, or let the worker go) ends a running
    command, as the request pipe's end does.

    Queued jobs must not wait behind a slow one: the
    lookout thread gives them back once the running job has run
    :data:`PATIENCE_S`, or the jobs run since the next one in line arrived
    have taken that long together (a line of a kind that became slower, each
    job shorter than the patience). Time spent blocked sending replies to a
    busy driver does not count: that is not the line's work.
    One lock keeps the queue, the running job and the
    reply pipe: a job is either started or given back, never both, and
    messages are never interleaved. (A job that holds the GIL in C code for
    long holds both threads up too.)
    """

    def __init__(self, requests: Connection, replies: Connection, doorbell: int,
                 patience: float = PATIENCE_S, linger: float = LINGER_S) -> None:
        self.patience = patience
        #: Seconds to wait awake for the next request after a lone job (see LINGER_S).
        self.linger = linger
        #: Whether the last request taken was a lone job's: the next wait may linger.
        self._lingers = False
        #: Lone jobs still to pass without lingering, since it caught nothing lately.
        self._lingers_to_skip = 0
        #: How many to pass after the next miss: twice as many after each miss,
        #: half as many after each catch, from 1 up to MOST_LINGERS_SKIPPED (a
        #: catch that undid every miss let a line of jobs alternating short
        #: and long gaps linger in vain twice in six jobs: re-attack review).
        self._skips_after_miss = 1
        #: The CPUs this process may use (see may_linger), read at the first
        #: lone job's end: a worker that never runs one (Dask's) never reads them.
        self._cpus: int | None = None
        self._pipe = requests
        #: Held by the thread that reads and files a message (see the class's docstring).
        self.reading = threading.Lock()
        self._waiting = select.poll()  # for the request pipe: poll(0) says if a message is there
        self._waiting.register(requests.fileno(), select.POLLIN)
        #: (request, whether its start must be announced, :attr:`work_done` when
        #: it arrived): a job queued behind another is SUBMITTED for the driver
        #: until told it started.
        self.requests: deque[tuple[tuple, bool, float]] = deque()
        #: Seconds the jobs run here so far took, in all (for the lookout).
        self.work_done = 0.0
        self.replies = replies
        self.lock = threading.Lock()
        self._watch = threading.Condition(self.lock)
        self._watching = False
        self._closed = False  # the driver's pipe has ended
        #: The job running now (set when it is taken from the queue).
        self.running: tuple | None = None
        self._current: tuple[object, float] | None = None  # (job id, since): the lookout's
        #: The environment of the last command received (the driver sends a
        #: command's environment only when it differs from the previous one's).
        self._environment: dict[bytes, bytes] = {}
        self._lookout: threading.Thread | None = None
        #: Queued commands the driver killed or terminated before they started.
        self.stopped: dict[object, str] = {}
        #: Queued calls the driver aborted before they started (it counts them running).
        self._abort_at_start: set[object] = set()
        #: Kills and terminates of the running command, for run_command.
        self.stop_requests = StopRequests()
        threading.Thread(target=self._answer_doorbell, args=(doorbell,), daemon=True,
                         name="corral-doorbell").start()

    def _answer_doorbell(self, doorbell: int) -> None:
        """Read what the pipe holds each time the driver rings; stop when the
        driver's end of the doorbell closes."""
        while True:
            try:
                rung = os.read(doorbell, 4096)  # (every ring so far: one read is enough)
            except OSError:
                rung = b""
            if not rung:
                self._ended()
                return
            with self.reading:
                while not self._closed and self._waiting.poll(0):
                    self._read_one()

    def _read_one(self) -> None:
        """Read one message and file it (:attr:`reading` is held)."""
        try:
            message = self._pipe.recv_bytes()
        except (EOFError, OSError):
            self._ended()
            return
        self._take(pickle.loads(message))

    def _ended(self) -> None:
        """The driver is gone, or has let us go: no more requests come."""
        with self.lock:
            self._closed = True
            if self.running is not None and self.running[0] == "command":
                self.stop_requests.post(self.running[1], KILL)

    def _take(self, message: object) -> None:
        """File one message from the driver: a request, a list of them, a drop,
        or a kill or terminate of a command (one that has not started yet is
        then answered as killed without starting; one about no command here
        is about one that ended since)."""
        if is_kill_or_terminate(message):
            action: str = message[0]  # type: ignore[index]
            about: object = message[1]  # type: ignore[index]
            with self.lock:
                if self.running is not None and self.running[1] == about:
                    if self.running[0] != "command":
                        # JobStopped is raised in the call, which runs its finally
                        # blocks; the driver kills this worker if it goes on.
                        interrupt.stop(about)
                        return
                    self.stop_requests.post(about, action)
                elif any(entry[0][1] == about for entry in self.requests):
                    self.stopped[about] = action
            return
        assert isinstance(message, (tuple, list)), "the driver sends tuples and lists"
        if isinstance(message, tuple) and message[0] == DROP:
            self._give_back(set(message[1]))
            return
        if isinstance(message, tuple) and message[0] == ABORT:
            with self.lock:
                if self.running is not None and self.running[1] == message[1]:
                    abort.request()
                elif any(entry[0][1] == message[1] for entry in self.requests):
                    self._abort_at_start.add(message[1])
                # else: about a job that ended since, whose abort came too late
            return
        self._lingers = isinstance(message, tuple) and message[0] == LONE
        if self._lingers:
            message = message[1]
            assert isinstance(message, tuple), "a lone job is one request"
        queued = isinstance(message, list)  # else one job for an idle worker: known running
        with self.lock:
            arrived = self.work_done
            for request in (message if queued else (message,)):
                if request[0] == "command":  # resolved now: a dropped one may have set it
                    if request[4] is None:
                        request = (*request[:4], self._environment, request[5])
                    self._environment = request[4]
                self.requests.append((request, queued, arrived))
            if self._current is not None:  # they arrived behind a running job: watch it
                self._arm_lookout()

    def next(self, idle_exit: float | None = None) -> tuple[tuple, bool, float] | None:
        """Wait for the request to run now, reading the pipe in this thread;
        return it and whether its start must be announced, or None when the
        pipe ended or nothing came for *idle_exit* seconds. From now on it
        runs: it cannot be given back."""
        deadline = None if idle_exit is None else time.monotonic() + idle_exit
        while True:
            with self.lock:
                if self.requests:
                    entry = self.requests.popleft()
                    self._begin(entry[0])
                    return entry
                if self._closed:
                    return None
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            with self.reading:
                # The doorbell thread may have filed one while we waited for it.
                if self.requests or self._closed:
                    continue
                lone, self._lingers = self._lingers, False  # (once: as a lone job ends)
                if (lone and self.may_linger()
                        and self._awake_until_request(min(self.linger, left or self.linger))):
                    self._read_one()
                    continue
                if left is None or self._waiting.poll(left * 1000):
                    self._read_one()

    def may_linger(self) -> bool:
        """Whether to wait awake for the next request after a lone job: not
        while lingering lately caught nothing (a caller that pauses between
        its jobs gains nothing by it, and paid up to LINGER_S of CPU a job:
        attack review), nor where it would take a CPU from another process:
        fewer must run beside this one than there are CPUs (other drivers'
        workers lingering at once took a third of their throughput)."""
        if self.linger <= 0:
            return False
        if self._lingers_to_skip:
            self._lingers_to_skip -= 1
            return False
        if self._cpus is None:
            self._cpus = usable_cpus()
        return cpu_to_spare(self._cpus)

    def _awake_until_request(self, seconds: float) -> bool:
        """Wait up to *seconds* for a request without sleeping; whether one
        came (see LINGER_S). It yields the CPU at each look, which lets a
        thread queued on this CPU run (Linux does not promise it runs first);
        on an idle machine the wait keeps a CPU busy for its length."""
        # The system's clock, which a job cannot have stopped as it can
        # time.perf_counter (freezegun's freeze_time() left running kept a
        # worker awake for good), and the looks counted too, whatever a job
        # did to the time module (re-attack reviews).
        until = _monotonic_clock(time.CLOCK_MONOTONIC) + seconds
        for _ in range(int(seconds * LOOKS_PER_SECOND) + 1):
            if self._waiting.poll(0):
                self._skips_after_miss = max(1, self._skips_after_miss // 2)
                return True
            if _monotonic_clock(time.CLOCK_MONOTONIC) >= until:
                break
            os.sched_yield()
        self._lingers_to_skip = self._skips_after_miss
        self._skips_after_miss = min(2 * self._skips_after_miss, MOST_LINGERS_SKIPPED)
        return False

    def _begin(self, request: tuple | None) -> None:
        """*request* runs from now on (None: nothing): the abort flag is its own
        from here, under the lock that an abort naming a job is filed under,
        so an abort is never lost to the reset nor taken for the next job's."""
        self.running = request
        abort.reset()
        interrupt.forget()
        self.stop_requests.forget()  # (kills posted until now were the job's before)
        if request is not None and request[1] in self._abort_at_start:
            self._abort_at_start.discard(request[1])
            abort.request()

    def started(self, job_id: object) -> None:
        """The job now running; the lookout watches it while others wait behind it."""
        self._current = (job_id, time.monotonic())
        if self.requests and not self._watching:
            with self._watch:
                self._arm_lookout()

    def _arm_lookout(self) -> None:
        """Make the lookout watch the running job (the lock is held)."""
        if self._watching:
            return
        self._watching = True
        if self._lookout is None:
            self._lookout = threading.Thread(target=self._look_out, daemon=True,
                                             name="corral-lookout")
            self._lookout.start()
        self._watch.notify()

    def finish(self, blob: bytes, started: float, ended: float
               ) -> tuple[tuple, bool, float] | None:
        """Send the reply of the job that ended and take the next one from the
        queue, as one step: a kill of the next job must find either this reply
        sent or that job still queued, never the finished job's reply unsent
        (killed with it, the job would be given back and run again).

        What the pipe holds is read first: a drop or kill sent while the job
        ran, which the doorbell thread could not read if the job held the
        GIL, is acted on before the next job starts (the driver counts on
        it: see Engine._settle_unanswered)."""
        if self.requests:
            with self.reading:
                while not self._closed and self._waiting.poll(0):
                    self._read_one()
        with self.lock:
            entry = self.requests.popleft() if self.requests else None
            self._begin(None if entry is None else entry[0])
            if self._current is not None:
                self.work_done += time.monotonic() - self._current[1]
            self._current = None
            self.replies.send_bytes(reply_message(blob, started, ended,
                                                  None if entry is None else entry[0][1]))
            return entry

    def send(self, message: bytes) -> None:
        with self.lock:
            self.replies.send_bytes(message)

    def _give_back(self, wanted: set[object] | None) -> None:
        """Give back the queued jobs in *wanted* (None: all of them)."""
        with self.lock:
            kept: deque[tuple[tuple, bool, float]] = deque()
            returned = []
            for entry in self.requests:
                if wanted is None or entry[0][1] in wanted:
                    returned.append(entry[0][1])
                    self.stopped.pop(entry[0][1], None)
                else:
                    kept.append(entry)
            self.requests = kept
            if returned:
                self.replies.send_bytes(given_back_message(returned))

    def _look_out(self) -> None:
        while True:
            with self._watch:
                while not (self._watching and self.requests and self._current is not None):
                    self._watching = False
                    self._watch.wait()
            current = self._current
            if current is None:
                continue
            running_for = time.monotonic() - current[1]
            try:  # and the jobs that ran while the next one in line waited
                running_for += self.work_done - self.requests[0][2]
            except IndexError:  # emptied meanwhile
                pass
            late = self.patience - running_for
            if late > 0:
                time.sleep(late)
                continue
            if self._current is current:
                self._give_back(None)


def cpu_to_spare(cpus: int, loadavg: str = "/proc/loadavg") -> bool:
    """Whether fewer threads are runnable now beside this one than there are
    *cpus*: the machine's runnable count in *loadavg*, which counts this one
    too, and not the threads of a cgroup, at one instant (a process that is
    about to wake is not counted). False where it cannot be read: lingering
    is only worth it where it likely costs no one."""
    try:
        descriptor = os.open(loadavg, os.O_RDONLY | os.O_CLOEXEC)
        try:
            text = os.read(descriptor, 256)
        finally:
            os.close(descriptor)
        running = int(text.split()[3].split(b"/")[0])
    except Exception:  # (OSError, garbled text, or a job's patched os.open: re-attack review)
        return False
    return running - 1 < cpus


def _linger() -> float:
    """LINGER_S, or what the environment sets instead (the driver refused a
    bad setting already; one changed since is taken for unset)."""
    try:
        seconds = linger_from_environment()
    except ValueError:
        seconds = None
    return LINGER_S if seconds is None else seconds


def run_request(request: tuple, home: str, spool: _Spool, settings: _Settings,
                outcomes: OutcomeLog, stop_requests: StopRequests) -> bytes:
    """Run one request and return the pickled ``(job_id, ok, blob)``, never raising."""
    if request[0] == "command":
        _, job_id, jobdir, argv, environment, cwd = request
        # Its result file beside its output in the spool, handed over with it:
        # its job's directory is made only once it has something to hold. One
        # path for all the worker's commands, set in the dict kept for the next
        # ones: a path of each job's made every environment differ, sent whole
        # (200 `true` commands took 13 % more). Set here, after the job's own
        # environment: a CORRAL_RESULT_FILE of the program's does not count.
        environment[_RESULT_VARIABLE] = spool.result_path_bytes
        reply: tuple = (job_id, None, run_command(job_id, argv, environment, cwd, home,
                                                  stop_requests))
        outcomes_dir = None
    else:
        _, job_id, jobdir, payload, upstream, env, cwd, outcomes_dir = request
        ok, blob = run_call(job_id, payload, upstream, env, cwd, home)
        if ok and interrupt.took_the_stop(job_id) and not abort.abort_requested():
            # It caught JobStopped and returned: not a completion, which a
            # cancelled job would keep and a rerun restore (attack review: a
            # bare except: made a partial sum the run's result). An aborted
            # call's partial work is kept, as when it stops by itself.
            ok, blob = False, dumps_error(JobStopped(interrupt.CAUGHT_AND_RETURNED))
        reply = (job_id, ok, blob)
    kill_leftovers()
    if request[0] == "command":  # (after its leftovers: a child it left writing its result
        try:  # file made it again after the hand-over, for the next command; re-attack review)
            spool.hand_over_result(jobdir)
        except OSError as error:
            reply = (job_id, False, dumps_error(OSError(f"{NOT_SAVED}: {error}")))
    settings.put_back()
    try:
        spool.hand_over(jobdir)
    except OSError as error:
        reply = (job_id, False, dumps_error(OSError(f"{NOT_SAVED}: {error}")))
    blob = reply_blob(reply)
    # A call asked to abort may return partial work (a map's chunk short of its
    # calls): not an outcome the next driver may take for a completion after
    # this one died (re-attack review: a rerun restored such a chunk and its map
    # lost calls without a word). Unlogged, it runs again there. Nor is the
    # failure of a call corral stopped: a Dask call stopped because its driver
    # died read "raised JobStopped" in the next session, not "its driver ended".
    if (outcomes_dir is not None and not abort.abort_requested()
            and (reply[1] or not interrupt.asked_to_stop(job_id))):
        try:
            outcomes.append(outcomes_dir, blob)
        except OSError as error:
            unrecorded = OSError(f"cannot record the job's outcome: {error}")
            reply = (job_id, False, dumps_error(unrecorded))
            blob = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
    return blob


def reply_blob(reply: tuple) -> bytes:
    """The pickled ``(job_id, ok, blob)``, or, for one too large for a reply's
    header (4 GiB), the job's failure that says so."""
    blob = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
    if len(blob) <= MAX_REPLY_BYTES:
        return blob
    too_large = ValueError(f"the job's result is too large to send back: {len(blob):,} bytes "
                           f"pickled, at most {MAX_REPLY_BYTES:,}; write it to a file and "
                           "return the path")
    return pickle.dumps((reply[0], False, dumps_error(too_large)), pickle.HIGHEST_PROTOCOL)


def _die_with_everything() -> None:
    """Kill this worker and every process its job started."""
    from corral.runtime.proctree import kill_tree

    kill_tree(os.getpid(), include_root=False)  # (it would stop itself before its killing)
    os.kill(os.getpid(), signal.SIGKILL)


def _stopped_before_start(request: tuple, action: str) -> bytes:
    """The reply for a command killed or terminated before it started: as if
    it had been killed by that signal at once."""
    signum = signal.SIGKILL if action == KILL else signal.SIGTERM
    return pickle.dumps((request[1], None, (-signum, None)), pickle.HIGHEST_PROTOCOL)


def _pass_ctrl_c(signum: int, frame: object) -> None:
    """SIGINT does nothing to a worker: Ctrl-C is the driver's to handle. A
    handler rather than SIG_IGN, because an ignored signal stays ignored in
    what a call job starts (its ``bash -c "trap ... INT"`` never fired); a
    handled one is back to its default there."""


def main() -> None:
    """Serve requests until the request pipe closes."""
    from multiprocessing.connection import Connection

    # Its pipes above 0, 1 and 2, then those three open, before anything else
    # opens a descriptor (see corral.runtime.stdfds).
    read_fd, write_fd, doorbell_fd = (above_standard(int(sys.argv[at])) for at in (1, 2, 5))
    mark_worker_process()
    open_standard_fds()
    parent_pid = int(sys.argv[3])
    for fd in (read_fd, write_fd, doorbell_fd):  # a job's processes must not hold our pipes open
        os.set_inheritable(fd, False)
    home = here_as_home()
    # The spool first: what goes wrong from here on is in the stderr of the job
    # this worker was started for, not lost on the driver's terminal.
    spool = _Spool(sys.argv[4])
    _put_back_python_streams()  # (none where the driver had none: a job's print went nowhere)
    try:
        become_subreaper()
        bind_to_parent(parent_pid)
        # The driver's, as a job run in the driver would see it (and as ProcessPoolExecutor's
        # children do): not this process's file descriptors.
        sys.argv[:] = sys.argv[7 + int(sys.argv[6]):]  # (after sys.path: see worker_process)
        # The driver aborts a call with a message naming it; SIGUSR1 asks the running
        # job to stop too, as it does a cluster job's (see corral.runtime.batch).
        abort.listen(signal.SIGUSR1)
        interrupt.listen()  # (before _Settings: a call that takes the signal gives it back)
        signal.signal(signal.SIGINT, _pass_ctrl_c)  # Ctrl-C is the driver's to handle
        allow_signals()  # started by a thread that leaves them to the driver's main thread
        queue = _Queue(Connection(read_fd, writable=False),
                       Connection(write_fd, readable=False),
                       doorbell_fd, float(os.environ.get(PATIENCE_VARIABLE) or PATIENCE_S),
                       _linger())
    except Exception as error:
        _cannot_start(error)
    settings = _Settings()  # (once the worker's own handlers are in place)
    outcomes = OutcomeLog()
    idle_exit = float(os.environ.get(IDLE_EXIT_VARIABLE) or 0) or None
    entry = None
    try:
        while True:
            if entry is None:  # idle: wait for work
                entry = queue.next(idle_exit)
                if entry is None:
                    return  # the driver is gone, or has not used us for that long
                if entry[1]:  # queued, and no reply said it starts: say so
                    queue.send(started_message(entry[0][1], time.time()))
            request = entry[0]
            queue.started(request[1])
            started = time.time()
            stopped = queue.stopped.pop(request[1], None)
            blob = (run_request(request, home, spool, settings, outcomes, queue.stop_requests)
                    if stopped is None else _stopped_before_start(request, stopped))
            if interrupt.must_end(request[1]):
                # A call stopped by corral whose work goes on in threads it
                # started, or whose import was cut short: the worker ends with
                # them, and the driver replaces it (the stop reads as a kill there).
                _die_with_everything()
            entry = queue.finish(blob, started, time.time())
    except OSError:  # the reply pipe is gone: so is the driver
        return


def _cannot_start(error: Exception) -> NoReturn:
    """End a worker that cannot serve, saying why on its stderr: the spool,
    which the driver moves to the job it was started for, so the job's error
    ends with these lines (attack review: with a tiny process limit every
    job said only "worker lost: ... exited with code 1", and the real cause
    went raw to the driver's terminal)."""
    import traceback

    traceback.print_exception(error)
    hint = ""
    if no_thread_left(error):
        hint = (": the worker needs threads of its own; is the limit on processes "
                "(ulimit -u) or on memory reached?")
    print(f"{CANNOT_START.format(pid=os.getpid())}{describe_error(error)}{hint}",
          file=sys.stderr, flush=True)
    os._exit(1)  # (SystemExit would print a traceback of its own under PYTHONINSPECT)
