"""Run one Python call the way every backend runs it.

The local backend's persistent workers and the batch runner inside a
cluster job (:mod:`corral.runtime.batch`) both call :func:`run_call`, so a
job's environment, working directory, exit semantics and error packing
cannot drift between backends.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from corral.errors import JobStopped, NotPicklable
from corral.runtime.forked import end_if_forked, watch_for_forks
from corral.runtime.interrupt import NOW, call_begins
from corral.runtime.payload import dumps_error, dumps_value, loads_call, without_corral_frames
from corral.safe_repr import describe_error

__all__ = ["run_call", "kill_leftovers", "go_home", "here_as_home"]


#: How the JobStopped of a call stopped as its arguments loaded ends.
BEFORE_IT_BEGAN = "before it began"


def run_call(job_id: object, payload: bytes, upstream: Sequence[bytes],
             env: tuple[tuple[str, str | None], ...], cwd: str | None,
             home: str) -> tuple[bool, bytes]:
    """Run a pickled call; return ``(ok, blob)``, never raising.

    *blob* is the pickled return value when *ok*, else a packed exception
    (see :mod:`corral.runtime.payload`). ``SystemExit(0)`` counts as success.
    """
    watch_for_forks()
    try:
        with _JobContext(job_id, env, cwd, home):
            try:
                target, args, kwargs = loads_call(payload, tuple(upstream))
            except BaseException as error:  # its pickle names what cannot be loaded here
                return False, dumps_error(error)
            now = NOW
            call_begins()
            try:
                now.calling = job_id  # (attribute stores: no signal handler runs between)
                if now.stopping == job_id:  # stopped while it was being loaded
                    now.stopping = None
                    raise JobStopped(f"corral stopped this call {BEFORE_IT_BEGAN}")
                value = target(*args, **kwargs)
                now.calling = None
            except BaseException as error:  # the job's failure, reported, not ours
                now.calling = None
                end_if_forked(error)
                if isinstance(error, SystemExit) and error.code in (None, 0):
                    return True, dumps_value(None)
                return False, dumps_error(without_corral_frames(error))
            end_if_forked()
            try:
                return True, dumps_value(value)
            except Exception as error:
                return False, dumps_error(NotPicklable(
                    f"the job's return value cannot be pickled: {describe_error(error)}"))
    except JobStopped as error:  # its stop came as the call ended: it is still the job's
        return False, dumps_error(error)
    except Exception as error:  # cannot even set the job up (a bad cwd)
        return False, dumps_error(error)


class _JobContext:
    """Apply a job's environment and working directory, then put them back."""

    def __init__(self, job_id: object, env: tuple[tuple[str, str | None], ...], cwd: str | None,
                 home: str) -> None:
        self.changes = dict(env)
        self.changes["CORRAL_JOB_ID"] = str(job_id)
        self.cwd = cwd
        self.home = home

    def __enter__(self) -> None:
        # First: if it fails, nothing needs undoing.
        go_home(self.home) if self.cwd is None else enter_cwd(self.cwd)
        self.saved = _environment_now()
        for key, value in self.changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        # The whole environment and the directory as they were, whatever the
        # job changed itself (os.chdir, os.environ[...] = ...): a worker runs
        # job after job, and the next one, a command too, would run there with
        # them (attack review: a shell job wrote its files in the directory an
        # earlier call had moved into).
        _put_back_environment(self.saved)
        go_home(self.home)  # (also when the job's directory was deleted under it)


class CwdUnusable(OSError):
    """A job's ``cwd`` that cannot be entered: the job could not start, which
    its reason says, not that it "raised FileNotFoundError" as if its function
    had (hostile-input review)."""

    def __str__(self) -> str:
        return f"cannot enter its cwd {self.filename!r}: {self.strerror}"


def enter_cwd(cwd: str) -> None:
    """Enter a job's own directory, or raise :class:`CwdUnusable`."""
    try:
        os.chdir(cwd)
    except OSError as error:
        raise CwdUnusable(error.errno, error.strerror, cwd) from None


#: The process's own environment mapping: a job may rebind ``os.environ``.
_ENVIRON = os.environ

#: A descriptor of each home directory, by path: a home deleted while the
#: worker runs is still entered (as a worker that never moved stays in it),
#: not refused, which failed every job after.
_home_fds: dict[str, int] = {}


def here_as_home() -> str:
    """The directory this process is in, as the *home* of the jobs it runs
    (see :func:`go_home`), held open from now on; its path, or, where it was
    deleted, a name that no path has.

    A worker runs its jobs without a ``cwd`` in the directory it was started
    in, the driver's, which it needs no path for: a driver whose directory
    was deleted while it ran lost every job as "exited with code 1" with no
    word why, as ``os.getcwd()`` raised in each new worker (attack review).
    Its jobs run there now, as they would in the driver itself."""
    try:
        home = os.getcwd()
    except OSError:
        home = "(a deleted directory)"
    try:
        _home_fds[home] = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # (no search permission: entered by its path, or not at all)
        pass
    return home


def go_home(home: str) -> None:
    """Enter *home*, the directory jobs without a ``cwd`` run in (the driver's)."""
    fd = _home_fds.get(home)
    if fd is None:
        try:
            fd = _home_fds[home] = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:  # gone before this worker entered it: it runs where it is
            return
    try:
        os.fchdir(fd)
    except OSError:  # a job closed the descriptor: by its path, as it can be found
        del _home_fds[home]
        try:
            os.chdir(home)
        except OSError:
            pass


def _environment_now() -> dict[bytes, bytes]:
    """The process's environment as ``os.environ`` holds it (bytes: no decoding)."""
    os.environ = _ENVIRON  # noqa: B003 (a job before may have made it a plain dict)
    return dict(_ENVIRON._data)  # type: ignore[attr-defined]


def _put_back_environment(saved: dict[bytes, bytes]) -> None:
    os.environ = _ENVIRON  # noqa: B003 (the same object, not a new environment)
    data = _ENVIRON._data  # type: ignore[attr-defined]
    if data == saved:
        return
    for key in [key for key in data if key not in saved]:
        del _ENVIRON[os.fsdecode(key)]  # (os.environ's own encoding: the file system's)
    for key, value in saved.items():
        if data.get(key) != value:
            _ENVIRON[os.fsdecode(key)] = os.fsdecode(value)


def kill_leftovers() -> None:
    """Kill what the job left running, then reap every zombie we adopted.

    The worker is a subreaper, so a child of the job's that exits as it is
    killed, or just before (``setsid -f`` exits once it has forked), hands its
    own children to the worker after they were looked for under it: the
    worker's children are looked for again until none is left.

    The common case — the job started no process — costs one waitpid call.
    """
    try:
        _kill_and_reap()
    finally:
        # Whether killed here or ended before (a job that killed its own children,
        # the OOM killer), multiprocessing's helpers are gone (re-attack review).
        _forget_multiprocessing_helpers()


def _kill_and_reap() -> None:
    for _ in range(_KILL_ROUNDS):
        if not _reap_ended_children():
            return
        import psutil

        from corral.runtime.proctree import kill_tree

        children = [child.pid for child in psutil.Process().children()]
        tracker = _resource_tracker_pid()
        # Everything under this worker, frozen first, then killed: a child
        # adopted between two looks is under it as well, and a chain of
        # processes that keep forking and exiting is caught mid-step.
        kill_tree(os.getpid(), include_root=False, sparing=tracker)
        if tracker is not None:
            _end_resource_tracker(tracker)
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _resource_tracker() -> Any:
    """``multiprocessing``'s resource tracker of this process, if a job imported it."""
    return getattr(sys.modules.get("multiprocessing.resource_tracker"), "_resource_tracker", None)


def _resource_tracker_pid() -> int | None:
    """The pid of the ``multiprocessing`` resource tracker a job started here, if any."""
    tracker = _resource_tracker()
    pid = getattr(tracker, "_pid", None)
    return pid if isinstance(pid, int) and isinstance(getattr(tracker, "_fd", None), int) else None


#: How long the resource tracker may take to unlink what a job leaked, and end.
_TRACKER_END_S = 2.0


def _end_resource_tracker(pid: int) -> None:
    """Let the resource tracker end as at a process's exit, unlinking the
    semaphores and shared memory the job's processes registered and left (a
    SIGKILL left them in /dev/shm for good: re-attack review): the job's other
    processes are dead, so closing our end is its last writer gone. One that
    does not end in time is killed."""
    import time

    tracker = _resource_tracker()
    _close_quietly(tracker._fd)
    tracker._fd = None
    deadline = time.monotonic() + _TRACKER_END_S
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _forget_multiprocessing_helpers() -> None:
    """Forget the fork server and resource tracker a job's ``multiprocessing``
    started in this process, now killed with the job's other leftovers.

    The module keeps their pids for the next pool: the next job's
    ``forkserver`` pool would ask ``waitpid`` after a process we reaped and
    fail with ``ChildProcessError`` (every job after the first of a worker,
    and the default start method from Python 3.14), and the resource tracker
    would warn on the job's stderr that it "died unexpectedly". Forgotten,
    each is started afresh when a job needs it. Only modules a job imported
    are touched; nothing is imported here.
    """
    forkserver = sys.modules.get("multiprocessing.forkserver")
    server = getattr(forkserver, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) is not None:
        _close_quietly(getattr(server, "_forkserver_alive_fd", None))
        server._forkserver_address = None
        server._forkserver_alive_fd = None
        server._forkserver_pid = None
    tracker = _resource_tracker()
    if tracker is not None and getattr(tracker, "_pid", None) is not None:
        _close_quietly(getattr(tracker, "_fd", None))
        tracker._fd = None
        tracker._pid = None


def _close_quietly(fd: object) -> None:
    if isinstance(fd, int):
        try:
            os.close(fd)
        except OSError:
            pass


#: How often :func:`kill_leftovers` looks for children again (each round kills
#: every process it finds, so a second round is rare and a third rarer still).
_KILL_ROUNDS = 50


def _reap_ended_children() -> bool:
    """Reap every child of ours that has ended; return whether any still lives."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False  # no children at all
        if pid == 0:
            return True
