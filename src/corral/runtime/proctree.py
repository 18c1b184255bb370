"""Kill a process and every process it started, without letting one slip away.

Used wherever corral ends a job early (timeout, cancel, abort, interrupt) and
when a worker cleans up after a job. The tree is frozen with SIGSTOP first and
re-listed until no new process appears, so a process forking in a loop cannot
outrun the kill; then everything, and the root's process group, gets SIGKILL.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

__all__ = ["kill_tree", "signal_group", "kill_marked", "wait_for_descendants"]


def kill_tree(pid: int, *, include_root: bool = True, sparing: int | None = None) -> None:
    """SIGKILL *pid*'s descendants (and *pid* unless ``include_root=False``), but
    the process *sparing* (not its children).

    Never raises for processes that are already gone.
    """
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.Error:
        root = None
    frozen: dict[int, psutil.Process] = {}
    me = os.getpid()
    try:
        for _ in range(20):
            found = []
            if root is not None:
                if include_root:
                    found.append(root)
                try:
                    found.extend(root.children(recursive=True))
                except psutil.Error:
                    pass
            # (never this process: a tree read while its parent dies may list it)
            fresh = [process for process in found
                     if process.pid not in frozen and process.pid not in (me, sparing)]
            if not fresh:
                break
            for process in fresh:
                frozen[process.pid] = process
                try:
                    process.suspend()
                except psutil.Error:
                    pass
    finally:  # whatever went wrong, nothing is left frozen: a stopped process never ends
        _kill_all(frozen.values())
    if include_root:
        signal_group(pid, signal.SIGKILL)


def wait_for_descendants(deadline: float) -> None:
    """Wait until this process has no live descendant, or until *deadline* (on
    the monotonic clock): the grace a killed job's SIGTERM gives lasts for all
    it started, not only for the process that led it (re-attack review: a
    shell without a trap died at once, and its child, still cleaning up, was
    killed with it). What this process adopted (a subreaper's) counts."""
    import time

    import psutil

    me = psutil.Process()
    while time.monotonic() < deadline:
        try:
            alive = [child for child in me.children(recursive=True)
                     if child.status() != psutil.STATUS_ZOMBIE]
        except psutil.Error:
            continue
        if not alive:
            return
        time.sleep(0.05)


def wake(pid: int) -> None:
    """SIGCONT to a worker that may have been stopped (by its own job, or a
    person's Ctrl-Z of it): a stopped worker reads no message, and a call it
    is told to stop would take no JobStopped."""
    try:
        os.kill(pid, signal.SIGCONT)
    except (ProcessLookupError, PermissionError):
        pass


def signal_group(pid: int, signum: int) -> None:
    """Send *signum* to the process group led by *pid*, if it still exists."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def kill_marked(variable: str, prefix: str) -> int:
    """SIGKILL every process of this user whose environment has *variable*
    starting with *prefix*; return how many.

    The last resort for processes whose parent chain no longer leads to
    anything corral holds: the children of a worker that died (re-parented
    to init), or a whole driver's jobs once the driver is gone. A process
    inherits the mark from its worker unless it rebuilt its environment.
    Each round freezes what it finds first, so a forking process cannot
    outrun it.
    """
    needle = f"{variable}={prefix}".encode()
    me = os.getpid()
    fresh = [pid for pid in _pids_marked(needle) if pid != me]
    if not fresh:  # the usual case, without the cost of importing psutil
        return 0
    import psutil

    frozen: dict[int, psutil.Process] = {}
    try:
        for round_number in range(20):
            if round_number:
                fresh = [pid for pid in _pids_marked(needle) if pid != me and pid not in frozen]
                # A frozen process's descendants too: one that rebuilt its environment
                # (env -i) carries no mark, and would be orphaned once its parent dies.
                fresh += [pid for pid in _descendants(frozen.values())
                          if pid != me and pid not in frozen and pid not in fresh]
            if not fresh:
                break
            for pid in fresh:
                try:
                    process = psutil.Process(pid)
                    process.suspend()
                except psutil.Error:
                    continue
                frozen[pid] = process
    finally:  # whatever went wrong, nothing is left frozen: a stopped process never ends
        _kill_all(frozen.values())
    return len(frozen)


def _kill_all(processes: Iterable[psutil.Process]) -> None:
    import psutil

    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass


def _descendants(processes: Iterable[psutil.Process]) -> list[int]:
    """The pids of every descendant of *processes*, from one reading of /proc:
    a walk per process read all of /proc each time (attack review: 1,500 of
    them took 65 s, the driver's control loop stalled all the while)."""
    import psutil  # (as the rest of this module: only where it is needed; re-attack
    # review: a child that ended mid-walk raised NameError here, and the reaper stopped)

    children: dict[int, list[int]] = {}
    for process in psutil.process_iter(["ppid"]):
        children.setdefault(process.info["ppid"], []).append(process.pid)
    found: list[int] = []
    seen: set[int] = set()
    waiting = [process.pid for process in processes]
    while waiting:
        for child in children.get(waiting.pop(), ()):
            if child not in seen:  # (a pid reused while /proc was read may loop)
                seen.add(child)
                found.append(child)
                waiting.append(child)
    return found


def _pids_marked(needle: bytes) -> list[int]:
    found: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:  # no /proc here: nothing can be found by its mark
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                variables = environ.read()
        except OSError:  # gone, or another user's
            continue
        if variables.startswith(needle) or b"\0" + needle in variables:
            found.append(int(name))
    return found
