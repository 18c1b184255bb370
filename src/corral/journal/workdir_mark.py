"""Which run a ``workdir=`` outside its run directory belongs to.

A journaled run may keep its job files elsewhere (``Scheduler(journal=run,
workdir=scratch)``): its job directories are ``<workdir>/<id>``. Two runs
given one workdir took each other's directories without a word (run B's job
1 wrote into run A's, so A's ``corral logs 1`` showed B's output), and a
``corral clean`` deleted whatever directory a journal named outside its run,
a folder of the user's own included (attack review). So a run marks the
workdir it takes with :data:`WORKDIR_MARK`, naming its run directory; another
live run is refused it, and ``clean`` deletes a job directory outside its run
only where that mark names the run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator

from corral.journal.files import JOURNAL_FILE

__all__ = ["WORKDIR_MARK", "claim_workdir", "check_workdir_free", "marked_for", "inside"]

#: The file in a workdir that names the run directory whose job files it holds.
WORKDIR_MARK = ".corral-run"



def inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether *path* is *folder* or lies under it: one of its places is the
    same directory as *folder* (a run seen through a bind mount, a link, is
    the same run)."""
    try:
        target = os.stat(folder)
    except OSError:
        return False
    place = os.path.abspath(path)
    while True:
        try:
            found = os.stat(place)
            if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
                return True
        except OSError:
            pass
        parent = os.path.dirname(place)
        if parent == place:
            return False
        place = parent


#: What :func:`_owner` says of a mark that is no regular file (a FIFO, a link).
_NOT_A_MARK = "(not a mark)"


def _owner(workdir: str | os.PathLike[str]) -> str | None:
    """The run directory the mark in *workdir* names; None where there is no
    mark. Read without following a link or waiting on a FIFO (re-attack
    review: a FIFO there hung every Scheduler and clean)."""
    try:
        descriptor = os.open(os.path.join(workdir, WORKDIR_MARK),
                             os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return _NOT_A_MARK
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return _NOT_A_MARK
        return os.read(descriptor, 4096).decode("utf-8", "surrogateescape").strip() or None
    except OSError:
        return _NOT_A_MARK
    finally:
        os.close(descriptor)


_COLLIDE = (": the two runs would write into each other's job directories; give each run a "
            "workdir of its own")


def _run_elsewhere(workdir: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None
                   ) -> str | None:
    """Another run whose job files *workdir* holds, or None: one its mark
    names while that run's journal is there, or the run *workdir* itself is
    (re-attack review: a run's own directory, unmarked, was taken)."""
    owner = _owner(workdir)
    if owner == _NOT_A_MARK:
        return (f"its {WORKDIR_MARK} is no regular file (a link, a FIFO), which corral "
                "neither reads nor writes through; remove it")
    mine = None if run_dir is None else os.path.realpath(run_dir)
    if owner is not None and owner != mine and os.path.exists(os.path.join(owner, JOURNAL_FILE)):
        return f"it holds the job files of the run at {owner}{_COLLIDE}"
    if os.path.exists(os.path.join(workdir, JOURNAL_FILE)) and (
            run_dir is None or not inside(workdir, run_dir)):
        return f"it is the run directory of another run ({os.path.realpath(workdir)}){_COLLIDE}"
    return None


def check_workdir_free(workdir: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None
                       ) -> None:
    """Refuse *workdir* where another run's job files are: a run without a
    journal (*run_dir* None) too would write into their directories.

    Raises:
        ValueError: naming the other run.
    """
    if run_dir is not None and inside(workdir, run_dir):
        return
    problem = _run_elsewhere(workdir, run_dir)
    if problem is not None:
        raise ValueError(f"workdir={os.fspath(workdir)!r}: {problem}")


def claim_workdir(workdir: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> None:
    """Mark *workdir* as the job files of the run at *run_dir*, unless it lies
    in the run. A workdir another run holds is refused while that run's
    journal is there; one whose run is gone (deleted, moved) is taken over.

    Raises:
        ValueError: another run's job files are in *workdir*.
    """
    if inside(workdir, run_dir):
        return
    with _claiming(workdir):
        _claim(workdir, run_dir)


@contextlib.contextmanager
def _claiming(workdir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the workdir's lock while its mark is checked and written: two
    runs started together each found it free, and both took it (review).

    Best effort: a lock held for longer than a claim takes is someone
    else's (``flock DIR cmd`` around the program itself, attack review: the
    run waited for ever), and a workdir this user may write but not read
    cannot be opened to lock; the claim then goes ahead unlocked, as before."""
    try:
        descriptor = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + _CLAIM_PATIENCE_S
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
            except OSError:  # (a filesystem without locks)
                break
        yield
    finally:
        os.close(descriptor)  # (the lock goes with it)


#: How long a claim waits for another's to be over (a claim takes milliseconds).
_CLAIM_PATIENCE_S = 2.0


def _claim(workdir: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> None:
    check_workdir_free(workdir, run_dir)
    mine = os.path.realpath(run_dir)
    if _owner(workdir) == mine:
        return
    # Made anew, never through a link another user left there (re-attack review:
    # the run wrote its mark into whatever file the link named).
    path = os.path.join(workdir, WORKDIR_MARK)
    partial = f"{path}.{os.getpid()}"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
    try:
        os.write(descriptor, os.fsencode(mine) + b"\n")
    finally:
        os.close(descriptor)
    os.replace(partial, path)


def marked_for(directory: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> bool:
    """Whether the job directory *directory* is the run's at *run_dir* to
    delete: in the run, or in a workdir the run marked as its own."""
    if inside(directory, run_dir):
        return True
    return _owner(os.path.dirname(os.path.normpath(directory))) == os.path.realpath(run_dir)
