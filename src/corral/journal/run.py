"""A journaled run read back: ``Scheduler.open(path)`` and the ``corral`` command.

:class:`Run` only reads. It starts no backend, takes no lock and needs no
live driver, so it works from another terminal while the run goes on, and
tomorrow after it ended. Each call reads the journal afresh.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.result import Result
from corral.job_refs import ambiguous_name, jobs_called
from corral.errors import JournalError
from corral.journal.files import (JOURNAL_FILE, STOP_ASKED_FILE, STOPPED_FILE, journal_modified_at,
                                  owner_of)
from corral.journal.reading import (Overview, read_overview, read_status_counts, read_events,
                                    read_job, read_jobs, read_jobs_in, read_jobs_named,
                                    read_jobs_numbered,
                                    read_meta, read_reruns, read_session_backends,
                                    read_sessions,
                                    one_snapshot)
from corral.journal.stored import StoredJob, StoredSession
from corral.status import JobStatus, statuses_named

if TYPE_CHECKING:
    from corral.journal.cleaning import Cleaned

__all__ = ["Run"]

class Run:
    """The jobs of a run directory as its journal records them.

    Raises:
        FileNotFoundError: *path* holds no journal (the message names it).
        PermissionError: the journal may not be read (another user's run).
        corral.JournalError: the journal is empty, damaged or lost what
            its write-ahead log held; never shown as a run without jobs.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().resolve()
        read_meta(self.path)  # opened once now, so that these errors come at once

    def jobs(self, status: JobStatus | str | None = None, *,
             results: bool = True) -> list[StoredJob]:
        """Every job in dispatch order; only those in *status* when given (a
        JobStatus, its name, or a group as in :meth:`Scheduler.jobs`).
        ``results=False`` leaves out the pickled results: much faster on big runs."""
        wanted = None if status is None else statuses_named(status)
        if wanted is not None and not results:  # (those rows only: a query)
            return self.jobs_in(wanted)
        jobs = read_jobs(self.path, with_results=results)
        if wanted is None:
            return jobs
        return [job for job in jobs if job.status in wanted]

    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        """A block in which this thread's reads of the run all see it as it
        was at the first (``with run.snapshot(): jobs, events = ...``), while
        its driver goes on writing."""
        return one_snapshot(self.path)

    def overview(self, unfinished: int, finished: int, failed: int = 0) -> Overview:
        """Counts per status, the first *unfinished* unfinished jobs and the last
        *finished* finished ones, after the first *failed* that failed or timed
        out, without reading every row (big runs)."""
        return read_overview(self.path, unfinished, finished, failed)

    def status_counts(self, job_ids: Collection[str] | None = None) -> dict[JobStatus, int]:
        """How many jobs of the run (of *job_ids*, those found, when given) are
        in each status, read from the journal's index, not its rows: quick to
        ask again and again of a run of a million jobs."""
        return read_status_counts(self.path, job_ids)

    def job(self, job_id: int | str) -> StoredJob:
        """The job with this id (``"7"`` finds job 7).

        Raises:
            KeyError: no such job in the run (the message says how many there are).
        """
        try:
            return read_job(self.path, job_id)  # one row by its key: a big run costs no more
        except KeyError:
            count = sum(read_status_counts(self.path).values())  # (counted, not read)
        raise KeyError(f"no job {job_id!r} in the run at {self.path} ({count} "
                       f"job{'s' * (count != 1)})")

    def jobs_in(self, statuses: Collection[JobStatus]) -> list[StoredJob]:
        """The jobs in *statuses*, in dispatch order, without their results (read
        by a query: the failed few of a big run cost no more)."""
        return read_jobs_in(self.path, statuses)

    def jobs_numbered(self, low: int, high: int) -> list[StoredJob]:
        """The jobs numbered *low* to *high*, in dispatch order (read by their
        numbers: a big run costs no more), without their results."""
        return read_jobs_numbered(self.path, low, high)

    def jobs_named(self, name: str) -> list[StoredJob]:
        """The jobs called *name*, in dispatch order, without their results."""
        return read_jobs_named(self.path, name)

    def results(self) -> list[Result]:
        """A :class:`corral.Result` for every finished job, with its value loaded
        (None for a job that did not complete, but for one aborted that returned
        what it had done, as its ``job.record.data`` held).

        Raises:
            corral.JournalError: a stored result cannot be loaded; a
                damaged value is never answered as None.
        """
        results = []
        for job in self.jobs("finished"):
            error: BaseException | None = None
            try:
                data = job.result_value()
            except JournalError:
                raise
            except Exception as raised:  # the job's own exception, or JobFailed: no value
                data = None  # (but one aborted that returned what it had: see below)
                if job.status is JobStatus.CANCELLED:
                    if job.result is not None:
                        data = job.load_result()
                else:
                    error = raised
            results.append(Result(id=job.id, name=job.name, data=data, status=job.status,
                                  exit_code=job.exit_code, started=job.started, ended=job.ended,
                                  attempts=job.attempts, reason=job.reason, meta=job.meta,
                                  error=error))
        return results

    def clean(self, jobs: int | str | Collection[int | str] | None = None) -> Cleaned:
        """Delete the files of the run's finished jobs (of *jobs*, ids or
        names, if given), as ``corral clean --yes`` does: their output and
        task files; their records, results included, stay in the journal,
        and ``corral logs`` says their files were removed. An unfinished job
        named is left alone, and said so in the answer's notes.

        Raises:
            KeyError: a job named is not in the run.
            ValueError: a name given is several jobs'.
            OSError: nothing can be deleted here (a read-only run).
        """
        from corral.journal.cleaning import clean_jobs, files_to_clean

        every = self.jobs(results=False)
        if jobs is None:
            chosen = every
        else:
            chosen = list({str(job.id): job for job in (  # (each once: attack review)
                _one_job(given, every, self.path)
                for given in ([jobs] if isinstance(jobs, (int, str)) else jobs))}.values())
        finished = [job for job in chosen if job.status.is_terminal]
        cleaned = clean_jobs(self.path, finished, files_to_clean(finished, self.path))
        left = [str(job.id) for job in chosen if not job.status.is_terminal]
        if left and jobs is not None:
            cleaned.notes.append(f"left job(s) {', '.join(left)}: not finished")
        return cleaned

    def events(self, job_id: int | str | None = None) -> list[tuple[Any, ...]]:
        """State changes ``(job id, time, old, new, reason)``, oldest first: the
        run's, or those of the job with this id (``7`` or ``"7"``; the rows hold
        it as text, as job directories are named).

        Raises:
            KeyError: no job with this id in the run (as :meth:`job`; an empty
                list read as "nothing happened to it": cold review).
        """
        events = read_events(self.path, job_id)
        if not events and job_id is not None:
            self.job(job_id)  # raises for a job that is not there
        return events

    def cluster_jobs(self, jobs: list[StoredJob]) -> dict[str, str]:
        """``{job id: backend name}`` for those of *jobs* handed to a backend
        whose jobs outlive the driver, a cluster scheduler (their native ids
        are its job ids, and they run on without a driver)."""
        from corral.backends import outlives_driver  # (only commands that act on jobs ask)

        backends = read_session_backends(self.path)
        outliving = {backend for backend in set(backends.values()) if outlives_driver(backend)}
        found = {}
        for job in jobs:
            backend = backends.get(job.session or 0)
            if backend is not None and backend in outliving and job.native_id:
                found[str(job.id)] = backend
        return found

    def jobs_of_unknown_backends(self, jobs: list[StoredJob]) -> dict[str, str]:
        """``{job id: backend name}`` for those of *jobs* handed to a backend that is
        not registered in this process (a site's backend not installed here):
        nothing here can tell whether they still run, nor reach them."""
        backends = read_session_backends(self.path)
        unknown = self.unknown_backends(backends)
        found = {}
        for job in jobs:
            backend = backends.get(job.session or 0)
            if backend is not None and backend in unknown and job.native_id:
                found[str(job.id)] = backend
        return found

    def unknown_backends(self, backends: dict[int, str | None] | None = None) -> set[str]:
        """The backends this run's sessions used that are not registered in this
        process (from *backends*, the sessions' backends, when read already)."""
        from corral.backends import registered_info

        if backends is None:
            backends = read_session_backends(self.path)
        return {backend for backend in set(backends.values())
                if isinstance(backend, str) and registered_info(backend) is None}

    def sessions(self) -> list[StoredSession]:
        """Each driver session of the run (script or daemon), oldest first, with
        its backend and what that backend could run at once."""
        return read_sessions(self.path)

    def last_written(self) -> float | None:
        """When the journal was last written (its files' modification time): after
        a driver was killed, the last sign of its life."""
        return journal_modified_at(self.path / JOURNAL_FILE)

    def meta(self) -> dict[str, str]:
        """The run-wide settings the journal keeps (``paused``, ``origin``, ...)."""
        return read_meta(self.path)

    def how_unfinished_jobs_go_on(self) -> str:
        """What makes the unfinished jobs of this run go on once no process
        drives it: a new daemon for a ``corral submit`` run, else its script."""
        if self.meta().get("origin") != "daemon":
            return "run the script again"
        if self.stop_pending():
            return ("corral stop was asked, and its daemon ended before it had cancelled them: "
                    "the next daemon (corral wait or corral submit) cancels them")
        return "corral wait or corral submit starts a new daemon, which runs them again"

    def reruns(self) -> dict[str, str]:
        """``{id: id}``: each job ``corral rerun`` ran again, and the job that did."""
        return read_reruns(self.path)

    def stop_pending(self) -> bool:
        """Whether ``corral stop`` was answered and its daemon ended before it had
        cancelled the run's jobs: the next daemon cancels them, not runs them."""
        return (self.path / STOP_ASKED_FILE).exists()

    def report(self, path: str | os.PathLike[str], format: str | None = None) -> Path:
        """Write the run's report to *path* and return where it went: a
        self-contained HTML page (summary, failures, timeline) or, with
        ``format="svg"`` or a ``.svg`` path, the timeline as one SVG picture.
        Works while the run goes on (it shows the moment it was written).

        Raises:
            ValueError: *format* is neither ``"html"`` nor ``"svg"``.
        """
        from corral.report import write_report

        return write_report(self, path, format)

    @property
    def paused(self) -> bool:
        return read_meta(self.path).get("paused") == "1"

    @property
    def owner(self) -> dict[str, Any] | None:
        """The live process driving the run (pid, kind), or None."""
        return owner_of(self.path)

    def journal_stopped(self) -> str | None:
        """Why and when the journal stopped taking changes, if its last session
        gave up on it (its writers kept dying): what became of the jobs since is
        not in it. None while it is written."""
        try:  # (its first line: a second says the session closed since)
            text = (self.path / STOPPED_FILE).read_text(errors="replace")
        except OSError:
            return None
        return text.split("\n", 1)[0].strip() or None

    def __repr__(self) -> str:
        return f"<Run {self.path}>"


def _one_job(given: int | str, every: list[StoredJob], path: Path) -> StoredJob:
    """The job of *every* whose id is *given*, else whose name it is."""
    if isinstance(given, bool) or not isinstance(given, (int, str)):
        raise TypeError(f"a job is named by its id or its name, not {given!r}")
    named = jobs_called(given, every, superseded=read_reruns(path))
    if not named:
        raise KeyError(f"no job {given!r} in the run at {path} ({len(every)} jobs)")
    if len(named) > 1:
        raise ValueError(ambiguous_name(given, named))
    return named[0]
