"""What ``corral clean`` may delete, and the deleting.

A job's recorded directory is not trusted as it stands: a run copied or moved
since recorded its jobs' directories at its old place, where another run may
live now (clean of a copy deleted the original's files), and a directory
replaced by a symbolic link points at files that are no job's. So only real
directories are deleted, found where the run holds them now
(:attr:`~corral.journal.store.StoredJob.directory`: never in another run's
directory), and a link left is said, not passed over.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field

from corral.journal.store import StoredJob
from corral.safe_repr import first_few

__all__ = ["Cleanable", "files_to_clean", "remove_job_files"]


@dataclass
class Cleanable:
    """The job directories ``clean`` may delete, their size, and what it leaves, said."""

    directories: list[str] = field(default_factory=list)
    size: int = 0
    notes: list[str] = field(default_factory=list)


def files_to_clean(jobs: Iterable[StoredJob]) -> Cleanable:
    """The directories of the finished *jobs* of a run that are its to delete,
    with their size (links inside not followed)."""
    found = Cleanable()
    linked = []
    for job in jobs:
        directory = job.directory
        if not directory or not os.path.lexists(directory):
            continue
        if os.path.islink(directory):
            linked.append(f"{job.id} ({directory} -> {os.readlink(directory)})")
        elif not os.path.isdir(directory):
            continue
        else:
            found.directories.append(directory)
            found.size += _size(directory)
    if linked:
        found.notes.append(f"left {_listed(linked)}: a job's directory that is a symbolic link "
                           "is not followed")
    return found


def remove_job_files(directories: list[str]) -> list[str]:
    """Delete *directories*; return what could not be deleted, and why."""
    failures: list[str] = []
    for directory in directories:
        problems: list[str] = []

        def note(_: object, path: str, error: tuple, problems: list[str] = problems) -> None:
            problems.append(f"{path}: {getattr(error[1], 'strerror', None) or error[1]}")

        shutil.rmtree(directory, onerror=note)
        if problems:
            failures.append(problems[0])
    return failures


def _size(directory: str) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(entry.stat(follow_symlinks=False).st_size for entry in entries
                       if entry.is_file(follow_symlinks=False))
    except OSError:
        return 0


def _listed(items: list[str]) -> str:
    return f"the files of job{'s' * (len(items) != 1)} {first_few(items, 3)}"
