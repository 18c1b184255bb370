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

import os

__all__ = ["WORKDIR_MARK", "claim_workdir", "marked_for", "inside"]

#: The file in a workdir that names the run directory whose job files it holds.
WORKDIR_MARK = ".corral-run"

#: The journal a run directory holds (as ``corral.journal.files`` names it).
_JOURNAL = "journal.db"


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


def _owner(workdir: str | os.PathLike[str]) -> str | None:
    try:
        with open(os.path.join(workdir, WORKDIR_MARK), encoding="utf-8",
                  errors="surrogateescape") as handle:
            return handle.read(4096).strip() or None
    except (OSError, ValueError):
        return None


def claim_workdir(workdir: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> None:
    """Mark *workdir* as the job files of the run at *run_dir*, unless it lies
    in the run. A workdir another run holds is refused while that run's
    journal is there; one whose run is gone (deleted, moved) is taken over.

    Raises:
        ValueError: another run's job files are in *workdir*.
    """
    if inside(workdir, run_dir):
        return
    mine = os.path.realpath(run_dir)
    owner = _owner(workdir)
    if owner == mine:
        return
    if owner is not None and os.path.exists(os.path.join(owner, _JOURNAL)):
        raise ValueError(f"workdir={os.fspath(workdir)!r} holds the job files of the run at "
                         f"{owner}: the two runs would write into each other's job directories; "
                         "give each run a workdir of its own")
    with open(os.path.join(workdir, WORKDIR_MARK), "w", encoding="utf-8",
              errors="surrogateescape") as handle:
        handle.write(mine + "\n")


def marked_for(directory: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> bool:
    """Whether the job directory *directory* is the run's at *run_dir* to
    delete: in the run, or in a workdir the run marked as its own."""
    if inside(directory, run_dir):
        return True
    return _owner(os.path.dirname(os.path.normpath(directory))) == os.path.realpath(run_dir)
