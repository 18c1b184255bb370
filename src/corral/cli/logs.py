"""A job's output, printed as ``corral logs`` shows it: whole, byte for byte, a
piece at a time (a 1 GB output is never held in memory), and followed while the
job runs, across its retries, from its worker's spool and then its own file.

Kept apart from the tables of :mod:`corral.cli.views`: these copy bytes and
poll the journal, and need none of the table library, which ``corral logs``
then does not import.
"""

from __future__ import annotations

import codecs
import os
import time
from typing import IO, TYPE_CHECKING

from corral.status import TERMINAL, JobStatus

if TYPE_CHECKING:
    from corral.journal.run import Run
    from corral.journal.stored import StoredJob

__all__ = ["follow_output", "print_file", "POLL_S"]

#: How often what watches a run (a followed log, ``corral wait``) reads its journal again.
POLL_S = 0.2


def follow_output(run: Run, job_id: str, stream: str, follow: bool, out: IO[str]) -> int:
    """Print a job's output; with *follow*, keep printing until the job has
    ended. Return how many bytes of the attempt shown last were printed.

    While a job runs its output is in a spool file; when it ends the output is
    moved to the job directory. Both hold the whole output, so one offset
    carries over from the first to the second. A spool is reused by the next
    job of the same worker as soon as this one ends, and the journal hears of
    the end a few milliseconds late; so bytes read from a spool are printed
    only if the journal, a poll later, still says the same attempt runs.
    Otherwise they are dropped and read again from the job's own file.
    """
    printed = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # chunks split characters
    attempt = run.job(job_id).attempts
    while True:
        job = run.job(job_id)
        if job.attempts != attempt and follow:  # a retry writes its output anew
            retried = attempt > 0  # (not the first attempt of a job that was queued)
            attempt, printed = job.attempts, 0
            decoder.reset()
            if retried:
                out.write(f"\n[corral: attempt {attempt}]\n")
                out.flush()
        if job.status is not JobStatus.RUNNING or job.live is None:
            printed += _copy_from(job.output_path(stream), printed, out, decoder)
            if job.status in TERMINAL or not follow or _orphaned(run, job):
                return printed
            time.sleep(POLL_S)  # another process writes the journal; nothing to wait on
            continue
        chunk = _read_from(job.output_path(stream), printed)
        if not chunk and job.directory:  # moved out of the spool by a worker that was ending
            chunk = _read_from(os.path.join(job.directory, stream), printed)
        time.sleep(POLL_S)  # longer than the journal's lag: time for it to say if the job ended
        later = run.job(job_id)
        if (later.status, later.live, later.attempts) == (job.status, job.live, job.attempts):
            printed += _write(chunk, out, decoder)
            if len(chunk) == _SPOOL_PIECE:  # more was there already: read on first
                continue
            if not follow or _orphaned(run, later):  # its driver died: it will not go on
                return printed


def _orphaned(run: Run, job: StoredJob) -> bool:
    """Whether nothing will ever end *job*: no process drives the run, and its
    backend's jobs do not run on without one."""
    return run.owner is None and str(job.id) not in run.cluster_jobs([job])


#: The most of a job's output read at a time: a 1 GB output is printed in
#: pieces as it is read, not read whole into memory first.
_PIECE = 1 << 20

#: The most read from a running job's spool in one poll (held until the next
#: poll says the same attempt still runs, see :func:`follow_output`).
_SPOOL_PIECE = 64 << 20


def _read_from(path: str | None, offset: int) -> bytes:
    if path is None:
        return b""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(_SPOOL_PIECE)
    except FileNotFoundError:
        return b""


def print_file(path: str | None, out: IO[str]) -> int:
    """Print a finished file as it was written (see :func:`_write`); return
    how many bytes were printed."""
    return _copy_from(path, 0, out, codecs.getincrementaldecoder("utf-8")(errors="replace"))


def _copy_from(path: str | None, offset: int, out: IO[str],
               decoder: codecs.IncrementalDecoder) -> int:
    """Print the file at *path* from *offset* to its end, a piece at a time;
    return how many bytes were printed."""
    if path is None:
        return 0
    copied = 0
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            while piece := handle.read(_PIECE):
                copied += _write(piece, out, decoder)
    except FileNotFoundError:
        pass
    return copied


def _write(data: bytes, out: IO[str], decoder: codecs.IncrementalDecoder) -> int:
    """Print *data* as the job wrote it, byte for byte where *out* takes bytes
    (a terminal, a pipe, a file: ``corral logs 7 > copy`` keeps what is not
    UTF-8); decoded, with U+FFFD for such bytes, where it takes only text."""
    if data:
        binary = getattr(out, "buffer", None)
        if binary is not None:
            out.flush()
            binary.write(data)
            binary.flush()
        else:
            out.write(decoder.decode(data))
            out.flush()
    return len(data)
