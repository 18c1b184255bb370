"""Start a persistent worker (:mod:`corral.runtime.worker`) and speak its protocol.

The local backend keeps a pool of these next to the driver; the Dask backend's
task starts one per Dask worker thread, inside the Dask worker. Both start it
and word its requests here, so a job runs the same way wherever it lands: the
worker's spool, its subreaper, its kill of whatever a job left behind, and its
death with its parent process.
"""

from __future__ import annotations

import errno
import os
import pickle
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
# NamedTuples, not dataclasses: every worker imports this module at its start, and
# dataclasses' import of inspect was a fifth of that start (a Reply, made for every
# job, is also made three times sooner).
from typing import TYPE_CHECKING, NamedTuple

from corral.runtime.stdfds import above_standard

if TYPE_CHECKING:  # (subprocess is the driver's alone: each worker imports this module)
    import subprocess
    from multiprocessing.connection import Connection

__all__ = ["WorkerProcess", "start_worker", "path_arguments", "too_long_said", "ring",
           "start_reaper", "call_request",
           "command_request", "drop_request", "abort_request", "lone_request", "ABORT", "LONE",
           "WorkerStartError", "usable_cpus", "cpu_quota", "linger_from_environment",
           "LINGER_VARIABLE",
           "MOST_LINGER_S",
           "Reply", "Started", "GivenBack", "reply_message", "started_message",
           "given_back_message", "read_message", "DROP", "MAX_REPLY_BYTES"]

#: ``(DROP, job ids)``: give back these queued jobs if they have not started.
DROP = "drop"
#: ``(ABORT, job id)``: set the abort flag for this call if it runs, or once it starts.
ABORT = "abort"
#: ``(LONE, request)``: run this request, which the driver runs with a CPU to
#: spare, and wait for the next one awake a moment after it (see :func:`lone_request`).
LONE = "lone"

#: A reply's fixed part: when the job started and ended (epoch seconds), and
#: the size of the pickled ``(job_id, ok, blob)`` that follows.
_REPLY_HEAD = struct.Struct("<ddI")
#: The largest pickled ``(job_id, ok, blob)`` a reply carries (its size is 32 bits).
MAX_REPLY_BYTES = 2 ** 32 - 1

_BOOT = (  # (sys.path and the driver's sys.argv as arguments: json's import was a tenth of it)
    "import sys; _n = int(sys.argv[6]); sys.path[:] = sys.argv[7:7 + _n]; del _n; "
    "from corral.runtime.worker import main; main()"
)


_REAPER_BOOT = (
    "import sys; sys.path[:] = sys.argv[3:]; "  # (json's import was a third of its start)
    "from corral.runtime.reaper import main; main()"
)


def path_arguments(path: Iterable[object] | None = None) -> list[str]:
    """*path* (this process's ``sys.path`` by default) as a child interpreter's
    arguments, one entry each: its text entries and paths. An entry of another
    kind, which the import system passes over, is left out (attack review: a
    ``None`` in sys.path failed every job's start)."""
    arguments = []
    for entry in sys.path if path is None else path:
        if isinstance(entry, os.PathLike):
            entry = entry.__fspath__()
        if isinstance(entry, bytes):
            entry = os.fsdecode(entry)
        if isinstance(entry, str) and "\0" not in entry:
            arguments.append(entry)
    return arguments


def too_long_said(error: OSError, arguments: Sequence[str]) -> str:
    """*error*, and when the system refused the arguments as too long, that
    they are mostly ``sys.path``'s, with how many entries and bytes it has."""
    if error.errno != errno.E2BIG:
        return str(error)
    size = sum(len(os.fsencode(argument)) + 1 for argument in arguments)
    return (f"{error.strerror} ({len(arguments):,} arguments, {size:,} bytes, most of them the "
            "entries of sys.path, which the process needs to import what this one can: "
            "fewer entries in sys.path or PYTHONPATH)")


def start_reaper(python: str, token: str) -> subprocess.Popen:
    """Start the process that kills every process marked ``<token>.`` once this
    process dies (see :mod:`corral.runtime.reaper`): the backstop for a worker
    that cannot kill its own tree, its GIL held by a job's C code. Its stdin is
    the pipe through which this process says farewell."""
    import subprocess

    # -S: no site module: it runs no code of the user's, and is given sys.path whole
    # (a sixth of its start-up, 27 -> 23 ms of CPU, once per scheduler).
    arguments = [python, "-S", "-c", _REAPER_BOOT, str(os.getpid()), token,
                 *path_arguments()]
    try:
        return subprocess.Popen(arguments, stdin=subprocess.PIPE, start_new_session=True)
    except OSError as error:
        raise WorkerStartError(f"cannot start the reaper (which ends this run's jobs if this "
                               f"process dies) with {python}: "
                               f"{too_long_said(error, arguments)}") from error


#: The opening of the last line a worker that cannot start writes on its stderr
#: (its first job's): the driver takes it for that job's reason.
CANNOT_START = "corral: the worker (pid {pid}) cannot start: "


class WorkerStartError(OSError):
    """The worker's interpreter could not be started."""


class WorkerProcess(NamedTuple):
    """A started worker: its process and the three pipes to it."""

    process: subprocess.Popen
    requests: Connection
    replies: Connection
    #: Where a running job's output can be read: the spool's stdout and stderr files.
    spool: tuple[str, str]
    #: The write end of its doorbell (non-blocking): see :func:`ring`.
    doorbell: int

    @property
    def pid(self) -> int:
        return self.process.pid


def ring(doorbell: int) -> None:
    """Wake a worker's doorbell thread, so that it reads the message just sent
    while the worker runs a job (an idle worker reads its pipe without one).
    Never blocks: a full doorbell has a ring on its way already."""
    try:
        os.write(doorbell, b"\1")
    except OSError:  # full (a ring is pending), or the worker is gone (its pipe says so)
        pass


def start_worker(python: str, spool_prefix: str, environment: Mapping[str, str],
                 path: Sequence[str] | None = None) -> WorkerProcess:
    """Start a worker with *python* in a session of its own, tied to this process
    (it dies, with its jobs' processes, when this process dies); its
    ``sys.path`` is *path*, this process's by default.

    Raises:
        WorkerStartError: *python* cannot be started.
    """
    from multiprocessing.connection import Connection

    import subprocess

    path_given = path_arguments(path)
    made: list[int] = []  # every fd made so far: closed if the start fails
    try:
        for _ in range(3):
            made.extend(os.pipe2(os.O_CLOEXEC))
        # (a driver whose stdout was closed gave one of those the worker gets fd 1:
        # in the worker its spool went over it; see corral.runtime.stdfds)
        for place in (0, 3, 4):
            made[place] = above_standard(made[place])
        request_read, request_write, reply_read, reply_write, doorbell_read, doorbell_write = made
        os.set_blocking(doorbell_write, False)
        process = subprocess.Popen(
            [python, "-c", _BOOT, str(request_read), str(reply_write), str(os.getpid()),
             spool_prefix, str(doorbell_read), str(len(path_given)), *path_given, *sys.argv],
            pass_fds=(request_read, reply_write, doorbell_read), stdin=subprocess.DEVNULL,
            start_new_session=True, env=dict(environment),
        )
    except OSError as error:  # (short of descriptors, a pipe made and the next not:
        for fd in made:  # each start that failed leaked two, diff review)
            os.close(fd)
        said = too_long_said(error, path_given)
        raise WorkerStartError(f"cannot start a worker with {python}: {said}") from error
    for fd in (request_read, reply_write, doorbell_read):
        os.close(fd)
    return WorkerProcess(process, Connection(request_write, readable=False),
                         Connection(reply_read, writable=False),
                         (spool_prefix + ".stdout", spool_prefix + ".stderr"), doorbell_write)


def call_request(job_id: object, jobdir: str, payload: bytes,
                 upstream: Sequence[bytes | int | str],
                 env: tuple[tuple[str, str | None], ...], cwd: str | None,
                 outcomes: str | None) -> tuple:
    """The request that runs a pickled Python call (see :mod:`corral.runtime.worker`)."""
    return ("call", job_id, jobdir, payload, tuple(upstream), env, cwd, outcomes)


def command_request(job_id: object, jobdir: str, argv: Sequence[str],
                    environment: Mapping[bytes, bytes] | None, cwd: str | None) -> tuple:
    """The request that runs a script or shell command; *environment* None: the
    same as the worker's previous command's."""
    return ("command", job_id, jobdir, tuple(argv), environment, cwd)


def abort_request(job_id: object) -> tuple:
    """The request that asks a call to stop (:func:`corral.abort_requested`).
    Naming the job, it cannot be taken for the next job's, as a signal that
    arrived as one job ended and the next began was."""
    return (ABORT, job_id)


def lone_request(request: tuple) -> tuple:
    """*request* for an idle worker, from a driver that runs it with a CPU to
    spare: once it ends, the worker waits for its next request awake for a
    moment (:data:`corral.runtime.worker.LINGER_S`) before it sleeps.

    A job submitted once the one before has returned (``submit(f).result()``
    in a loop) reaches a worker that has just gone to sleep, and waking a
    sleeping process on another CPU took about a third of such a round trip
    here (a virtual machine's idle CPU, or a deep C-state, takes tens of
    microseconds to wake, and the process's caches are cold). Only a driver
    that leaves a CPU free for itself asks for it: a worker awake beside
    every busy CPU would slow the driver it waits for."""
    return (LONE, request)


#: Sets how long a worker waits awake after a lone job, in seconds, up to
#: MOST_LINGER_S (0: never); read by each worker as it starts (see
#: corral.runtime.worker.LINGER_S, and ``benchmarks/diagnose_small_calls.py
#: linger``, which compares both ways).
LINGER_VARIABLE = "CORRAL_WORKER_LINGER_S"
#: The longest linger LINGER_VARIABLE may ask for: a worker awake for long
#: would take a CPU from others for nothing.
MOST_LINGER_S = 0.01


def linger_from_environment() -> float | None:
    """The linger :data:`LINGER_VARIABLE` sets; None where it is unset or empty.

    Raises:
        ValueError: it is not a number of seconds from 0 to MOST_LINGER_S,
            naming the variable and what it holds.
    """
    given = os.environ.get(LINGER_VARIABLE, "").strip()
    if not given:
        return None
    try:
        seconds = float(given)
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds <= MOST_LINGER_S:  # (NaN fails it too)
        raise ValueError(
            f"{LINGER_VARIABLE}={given!r}: give a number of seconds from 0 to {MOST_LINGER_S:g} "
            "that a worker waits awake for its next job after a lone one (0: never), or "
            "unset it for the default")
    return seconds


def usable_cpus() -> int:
    """The CPUs this process may use: those it may run on, and no more than
    its cgroup's CPU quota allows in whole CPUs, at least one (a container
    limited to one CPU's time on a machine of two ran lone loops 22 % slower
    with workers that lingered as if there were two: attack review)."""
    cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1)
    try:
        quota = cpu_quota()
    except Exception:  # (a limit too large for a float: attack review; never a failed start)
        quota = None
    return cpus if quota is None else max(1, min(cpus, int(quota)))


def cpu_quota(cgroups: str = "/proc/self/cgroup", mounted: str = "/sys/fs/cgroup"
              ) -> float | None:
    """How many CPUs' time the cgroups of this process allow it, the least
    of theirs and their ancestors' (cgroup v2's ``cpu.max``, v1's
    ``cpu.cfs_quota_us``); None where none is set or none can be read."""
    try:
        with open(cgroups, encoding="utf-8", errors="replace") as listed:
            lines = listed.read().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3 or (parts[1] and "cpu" not in parts[1].split(",")):
            continue
        # Where the hierarchy is mounted: v2 at the top (or "unified" beside v1), v1 by
        # its controllers' names.
        mounts = ("", "unified") if not parts[1] else (parts[1], "cpu", "cpu,cpuacct")
        for below in dict.fromkeys(mounts):  # (each once: "cpu" may be the name listed)
            base, here = os.path.join(mounted, below), parts[2].strip("/")
            while True:  # (a container sees its own cgroup at the top: "/" or a path not there)
                quota = _quota_of(os.path.join(base, here))
                if quota is not None:
                    limits.append(quota)
                if not here:
                    break
                here = os.path.dirname(here)
    return min(limits) if limits else None


def _quota_of(directory: str) -> float | None:
    """The CPUs' time one cgroup *directory* allows; None for no limit."""
    def read(name: str) -> list[str]:
        with open(os.path.join(directory, name), encoding="ascii") as limit:
            return limit.read().split()

    try:
        allowed, period = read("cpu.max")[:2]  # v2: "max 100000" or "150000 100000"
        return None if allowed == "max" else int(allowed) / int(period)
    except (OSError, ValueError, ZeroDivisionError, OverflowError):
        pass
    try:  # v1: -1 for no limit
        quota, every = int(read("cpu.cfs_quota_us")[0]), int(read("cpu.cfs_period_us")[0])
        return quota / every if quota > 0 and every > 0 else None
    except (OSError, ValueError, IndexError, OverflowError):
        return None


def drop_request(job_ids: Sequence[object]) -> tuple:
    """The request that takes back queued jobs the worker has not started: it
    answers with a :class:`GivenBack` of those it still had."""
    return (DROP, tuple(job_ids))


class Reply(NamedTuple):
    """A job's end, as the worker reports it."""

    job_id: object
    #: True: *blob* is the pickled value; False: a packed exception; None: a
    #: command, and *blob* is ``(exit status, why it could not start)``.
    ok: bool | None
    blob: object
    started: float
    ended: float
    #: The queued job the worker starts now, if any: from this reply on it runs.
    next_id: object


class Started(NamedTuple):
    """A queued job started with no reply to say so: the worker was idle when it came."""

    job_id: object
    at: float


class GivenBack(NamedTuple):
    """Queued jobs the worker will not run: asked back (:func:`drop_request`) or
    given back because the job before them ran long."""

    job_ids: tuple


def reply_message(reply: bytes, started: float, ended: float, next_id: object) -> bytes:
    """A :class:`Reply` as sent; *reply* is the pickled ``(job_id, ok, blob)``
    the outcome log keeps too, so it is pickled once."""
    return (b"R" + _REPLY_HEAD.pack(started, ended, len(reply)) + reply
            + pickle.dumps(next_id, pickle.HIGHEST_PROTOCOL))


def started_message(job_id: object, at: float) -> bytes:
    return b"S" + pickle.dumps((job_id, at), pickle.HIGHEST_PROTOCOL)


def given_back_message(job_ids: Sequence[object]) -> bytes:
    return b"B" + pickle.dumps(tuple(job_ids), pickle.HIGHEST_PROTOCOL)


def read_message(data: bytes) -> Reply | Started | GivenBack:
    """What a worker sent: a :class:`Reply`, :class:`Started` or :class:`GivenBack`."""
    view = memoryview(data)
    if view[:1] == b"B":
        return GivenBack(pickle.loads(view[1:]))
    if view[:1] == b"S":
        return Started(*pickle.loads(view[1:]))
    started, ended, size = _REPLY_HEAD.unpack_from(view, 1)
    start = 1 + _REPLY_HEAD.size
    job_id, ok, blob = pickle.loads(view[start:start + size])
    return Reply(job_id, ok, blob, started, ended, pickle.loads(view[start + size:]))
