"""The run's record of which jobs' files ``corral clean`` removed.

A module of its own, below :mod:`corral.journal.stored`: a job read back
says that its output was removed (rather than reading as empty), and
:mod:`corral.journal.cleaning`, which removes it, reads jobs back.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Sequence
from typing import Protocol

from corral.status import TERMINAL, JobStatus

__all__ = ["CLEANED_FILE", "note_cleaned", "was_cleaned"]


class _Attempt(Protocol):
    """What the record needs of a job read back (a StoredJob)."""

    @property
    def id(self) -> int | str: ...
    @property
    def status(self) -> JobStatus: ...
    @property
    def ended(self) -> float | None: ...
    @property
    def directory(self) -> str | None: ...


#: Which jobs' files ``corral clean`` removed: ``{job id: its end time}``. A
#: job that printed nothing has no files either, so without this record
#: ``corral logs`` could not tell "removed" from "nothing written".
CLEANED_FILE = "cleaned.json"


def note_cleaned(run_dir: str | os.PathLike[str], jobs: Sequence[_Attempt]) -> None:
    """Add *jobs* to the run's record of cleaned jobs (atomically: temp file, rename)."""
    path = os.path.join(run_dir, CLEANED_FILE)
    record = _cleaned(run_dir)
    record.update({str(job.id): job.ended for job in jobs})
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                  "w") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:  # (a full disk: the part written would hold on to its space)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def was_cleaned(run_dir: str | os.PathLike[str], job: _Attempt) -> bool:
    """Whether ``corral clean`` removed this attempt's files (a job run again
    since then has a new end time and files of its own)."""
    directory = job.directory
    if job.status not in TERMINAL or directory is None or os.path.isdir(directory):
        return False
    ended = _cleaned(run_dir).get(str(job.id), math.nan)
    return ended == job.ended


def _cleaned(run_dir: str | os.PathLike[str]) -> dict[str, float | None]:
    try:
        with open(os.path.join(run_dir, CLEANED_FILE)) as handle:
            record = json.load(handle)
    except (FileNotFoundError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
