"""What ``corral clean`` and :meth:`corral.Run.clean` may delete, and the deleting.

A job's recorded directory is not trusted as it stands: a run copied or moved
since recorded its jobs' directories at its old place, where another run may
live now (clean of a copy deleted the original's files), and a directory
replaced by a symbolic link points at files that are no job's. So only real
directories are deleted, found where the run holds them now
(:attr:`~corral.journal.stored.StoredJob.directory`: never in another run's
directory), and a link left is said, not passed over. One outside the run is
deleted only in a workdir the run marked as its own
(:mod:`corral.journal.workdir_mark`).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from corral.errors import CorralError
from corral.journal.cleaned import CLEANED_FILE, note_cleaned, was_cleaned
from corral.journal.files import JOURNAL_FILE
from corral.journal.stored import StoredJob
from corral.journal.workdir_mark import WORKDIR_MARK, marked_for
from corral.safe_repr import first_few

__all__ = ["Cleanable", "Cleaned", "files_to_clean", "remove_job_files", "clean_jobs",
           "note_cleaned", "was_cleaned", "CLEANED_FILE"]


@dataclass
class Cleanable:
    """The job directories ``clean`` may delete, their size, and what it leaves, said."""

    directories: list[str] = field(default_factory=list)
    size: int = 0
    notes: list[str] = field(default_factory=list)
    #: The directories of batch submissions (``<run>/<scheduler>/<n>``: the
    #: script, bundle files, its log) whose every job is among those cleaned.
    batch_directories: list[str] = field(default_factory=list)


def files_to_clean(jobs: Iterable[StoredJob], run_dir: str | os.PathLike[str] | None = None
                   ) -> Cleanable:
    """The directories of the finished *jobs* of a run that are its to delete,
    with their size (links inside not followed); with *run_dir*, also the
    batch submissions of the run that ran only those jobs (cold review: a
    clean left every job.sh and batch log of a cluster run)."""
    found = Cleanable()
    linked, shared, foreign, runs = [], [], [], []
    backends = _backends_of(run_dir) if run_dir is not None else set()
    for job in jobs:
        directory = job.directory
        if not directory or not os.path.lexists(directory):
            continue
        if os.path.islink(directory):
            linked.append(f"{job.id} ({directory} -> {os.readlink(directory)})")
        elif run_dir is not None and not marked_for(directory, run_dir):
            foreign.append(f"{job.id} ({directory})")
        elif os.path.basename(directory) in backends:  # (an id from before such were refused)
            shared.append(f"{job.id} ({directory})")
        elif not os.path.isdir(directory):
            continue
        elif _holds_a_run(directory):
            runs.append(f"{job.id} ({directory})")
        else:
            found.directories.append(directory)
            found.size += _size(directory)
    if linked:
        found.notes.append(f"left {_listed(linked)}: a job's directory that is a symbolic link "
                           "is not followed")
    if foreign:
        found.notes.append(f"left {_listed(foreign)}: its directory is outside the run, in a "
                           f"folder no {WORKDIR_MARK} file marks as this run's workdir= (another "
                           "run's, or a journal handed over or edited)")
    if runs:
        found.notes.append(f"left {_listed(runs)}: its directory holds a run of its own (a "
                           f"{JOURNAL_FILE}), which is no job's file to delete")
    if shared:
        found.notes.append(f"left {_listed(shared)}: its directory is also where a backend of "
                           "the run keeps its batch submissions")
    if run_dir is not None:  # (in the run, or where its job files are: workdir= elsewhere)
        roots = dict.fromkeys(os.path.realpath(root) for root in (
            os.fspath(run_dir), *(os.path.dirname(directory) for directory in found.directories)))
        found.batch_directories = [folder for root in roots
                                   for folder in _batch_directories_of(found.directories, root,
                                                                       backends)]
        found.size += sum(_size(directory) for directory in found.batch_directories)
    return found


def _backends_of(run_dir: str | os.PathLike[str]) -> set[str]:
    """The backends the run's sessions used: the names of the folders in which
    they may have kept batch submissions."""
    from corral.journal.reading import read_session_backends

    try:
        return {name for name in read_session_backends(run_dir).values() if name}
    except (OSError, CorralError):
        return set()


def _batch_directories_of(jobdirs: list[str], root: str | os.PathLike[str],
                          backends: set[str]) -> list[str]:
    """The batch submission folders under *root*, the run directory or where
    its job files are (``<root>/<backend>/<n>``, under a folder named after one
    of the run's *backends*)
    whose bundle files list none but the jobs of *jobdirs* (or jobs whose
    directories are gone). Found by looking in the run directory, never through
    a path a file names, and read as JSON only: a run copied from another, or
    handed over by someone, is cleaned in itself, and nothing in it is run
    (attack review: the task files were unpickled; numbered folders of a
    person's own were taken for submissions)."""
    from corral.backends.batch.taskfiles import jobs_of_submission  # (clean only: not logs)

    cleaned = {os.path.basename(os.path.normpath(directory)) for directory in jobdirs}
    freed = []
    for base in _entries(root):
        if (base.name not in backends or not base.is_dir(follow_symlinks=False)
                or base.name in cleaned):
            continue
        folders = _entries(base.path)
        if any(not entry.is_dir(follow_symlinks=False) for entry in folders):
            continue  # (a job's directory, with its files: not a folder of submissions)
        for folder in folders:
            ran = jobs_of_submission(folder.path) if folder.name.isdigit() else None
            if ran and all(job in cleaned or not os.path.lexists(os.path.join(root, job))
                           for job in ran):
                freed.append(folder.path)
    return freed


def _entries(directory: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except OSError:
        return []


@dataclass
class Cleaned:
    """What a clean did: the jobs whose files it deleted, how many bytes, what
    it left and said why (a link), and what it could not delete, and why."""

    jobs: list[int | str] = field(default_factory=list)
    size: int = 0
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def clean_jobs(run_dir: str | os.PathLike[str], jobs: Sequence[StoredJob],
               found: Cleanable | None = None) -> Cleaned:
    """Delete the files of the finished *jobs* of the run at *run_dir* (*found*:
    what :func:`files_to_clean` found of them, if asked already), noting them
    first, so that ``corral logs`` says they were removed, not that they wrote
    nothing.

    On a full disk the files go first, which makes room for the note (attack
    review: the clean one reaches for to free space refused to delete anything).

    Raises:
        OSError: the note cannot be written (a read-only run): nothing was deleted.
    """
    found = files_to_clean(jobs, run_dir) if found is None else found
    cleaned = [job for job in jobs if job.directory in found.directories]
    noted = False
    if cleaned:
        try:
            note_cleaned(run_dir, cleaned)
            noted = True
        except OSError as error:
            if error.errno not in _DISK_FULL:
                raise
    done = Cleaned(size=found.size, notes=list(found.notes))
    for job in cleaned:
        failed = remove_job_files([str(job.directory)])
        done.failures += failed
        if not failed:
            done.jobs.append(job.id)
    if cleaned and not noted:
        try:
            note_cleaned(run_dir, [job for job in cleaned if job.id in done.jobs])
        except OSError as error:
            done.notes.append(f"the record of cleaned jobs cannot be written ({error.strerror}):"
                              " corral logs says their output is empty, not removed")
    done.failures += remove_job_files(found.batch_directories)
    for parent in dict.fromkeys(map(os.path.dirname, found.batch_directories)):
        try:  # (the scheduler's folder of submissions, once it holds none)
            os.rmdir(parent)
        except OSError:
            pass
    return done


#: The errors of a disk (or a quota) that is full.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def remove_job_files(directories: list[str]) -> list[str]:
    """Delete *directories*; return what could not be deleted, and why."""
    failures: list[str] = []
    for directory in directories:
        problems: list[str] = []

        def note(_: object, path: str, error: tuple, problems: list[str] = problems) -> None:
            if isinstance(error[1], FileNotFoundError):  # gone already: what was asked
                return  # (attack review: two cleans at once, and one said it failed)
            problems.append(f"{path}: {getattr(error[1], 'strerror', None) or error[1]}")

        shutil.rmtree(directory, onerror=note)
        if problems:
            failures.append(problems[0])
    return failures


def _holds_a_run(directory: str) -> bool:
    """Whether a journal lies anywhere in *directory*: a run made inside this
    one by an earlier version, which no clean of a job may delete with it
    (cold review: one did). Links are not followed; job directories are small."""
    return any(JOURNAL_FILE in files for _, _, files in os.walk(directory))


def _size(directory: str) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(entry.stat(follow_symlinks=False).st_size for entry in entries
                       if entry.is_file(follow_symlinks=False))
    except OSError:
        return 0


def _listed(items: list[str]) -> str:
    return f"the files of job{'s' * (len(items) != 1)} {first_few(items, 3)}"
