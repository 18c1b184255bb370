"""Runs with something of everything, for the report and dashboard tests.

:func:`mixed_run` drives a real journaled run in the test's own process, on the
local backend: a job that completes, one that fails once and completes on its
retry, a command that fails with a message on stderr, its child (cancelled
before it started), a command killed by its timeout, and a running job that is
cancelled. What the report must show of it is in :data:`EXPECTED`.

:func:`plain_run` makes a run of plain lists instead, with any times: a night
between a run and its rerun, days, thousands of jobs at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import corral
import jobs
from support.waiting import wait_until

#: Attempts drawn as bars: fine 1, flaky 2, broken 1, downstream 0 (never
#: started), slowpoke 1, stuck 1.
EXPECTED_BARS = 6
BROKEN_MESSAGE = "disk quota exceeded on /scratch"
EXPECTED_STATUS = {"fine": "COMPLETED", "flaky": "COMPLETED", "broken": "FAILED",
                   "downstream": "CANCELLED", "slowpoke": "TIMED_OUT", "stuck": "CANCELLED"}


def mixed_run(run_dir: Path, scratch: Path, names: dict[str, str] | None = None) -> Path:
    """Make the run in *run_dir*; *names* renames jobs (a hostile name, say)."""
    named = {name: name for name in EXPECTED_STATUS} | (names or {})
    with corral.Scheduler(journal=run_dir, cores=2) as scheduler:
        fine = scheduler.options(name=named["fine"]).submit(jobs.square, 3)
        flaky = scheduler.options(name=named["flaky"], retries=1).submit(
            jobs.count_attempts, str(scratch / "counter"), 1)
        broken = scheduler.shell(f"echo 'about to fail' >&2; echo '{BROKEN_MESSAGE}' >&2; exit 3",
                                 name=named["broken"])
        downstream = scheduler.options(name=named["downstream"]).submit(jobs.identity, broken)
        corral.wait([fine, flaky, broken, downstream])
        slowpoke = scheduler.shell("sleep 30", name=named["slowpoke"], timeout="0.5s")
        stuck = scheduler.options(name=named["stuck"]).submit(
            jobs.wait_for_file, str(scratch / "never"), None, None, 60)
        wait_until(lambda: stuck.status is corral.JobStatus.RUNNING, 30, "the stuck job to run")
        stuck.cancel()
        corral.wait([slowpoke, stuck])
    return run_dir


# -- runs as plain lists ---------------------------------------------------------------------
# A night between a run and its rerun, a run of days, thousands of slots at once: pictures
# that no real run makes in a test's time. The report reads a run through a protocol
# (corral.report.model.RunSource), so these lists stand in for a journal.

#: A Monday, 09:00 UTC: the plain runs' first moment.
MONDAY = 1_760_346_000.0
DAY = 86_400.0

#: One try: (became ready, started, ended or None while it runs, outcome), where the
#: outcome is "completed", "failed" or "retried" (failed, and the next try follows).
Try = tuple[float, float, float | None, str]


@dataclass
class PlainJob:
    """A job as the report reads one (corral.report.model.StoredJobLike)."""

    id: str
    name: str
    status: corral.JobStatus
    attempts: int
    started: float | None
    ended: float | None
    command: str = "true"
    spec: dict[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    reason: str | None = None
    exit_code: int | None = None
    native_id: str | None = None
    session: int | None = 1

    def output_path(self, stream: str = "stdout") -> str | None:
        return None

    def output_written_at(self) -> float | None:
        return None

    def traceback_text(self) -> str | None:
        return None


@dataclass
class PlainSession:
    """A driver session (corral.report.model.SessionLike)."""

    id: int
    started: float | None
    ended: float | None
    cores: int | None = 2
    backend: str | None = "local"


@dataclass
class PlainRun:
    """A finished run (corral.report.model.RunSource) made of *jobs*, their *events*
    (job id, time, old, new, reason) and its driver *sessions*."""

    path: Path
    listed: list[PlainJob]
    changes: list[tuple[str, float, str, str, str | None]]
    driven: list[PlainSession]
    owner: dict[str, Any] | None = None

    def jobs(self, status: Any = None, *, results: bool = True) -> list[PlainJob]:
        return self.listed

    def job(self, job_id: Any) -> PlainJob:
        return next(job for job in self.listed if job.id == str(job_id))

    def events(self, job_id: Any = None) -> list[tuple[str, float, str, str, str | None]]:
        return self.changes

    def sessions(self) -> list[PlainSession]:
        return self.driven

    def last_written(self) -> float | None:
        return max(change[1] for change in self.changes)

    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def plain_run(path: Path, jobs_tried: list[tuple[str, list[Try]]],
              sessions: list[tuple[float, float]], cores: int = 2) -> PlainRun:
    """A run of the named jobs, each with its tries, driven by *sessions* (from, to)."""
    listed: list[PlainJob] = []
    changes: list[tuple[str, float, str, str, str | None]] = []
    for number, (name, tries) in enumerate(jobs_tried, 1):
        job = str(number)
        changes.append((job, tries[0][0], "new", "queued", None))
        for ready, start, end, outcome in tries:
            changes.append((job, max(ready, start), "queued", "running", None))
            if end is not None:
                changes.append((job, end, "running", "queued", "retry 1 of 1") if
                               outcome == "retried" else (job, end, "running", outcome, None))
        *_, (_, start, end, outcome) = tries
        status = corral.JobStatus.RUNNING if end is None else corral.JobStatus[outcome.upper()]
        listed.append(PlainJob(job, name, status, len(tries), start, end))
    changes.sort(key=lambda change: change[1])
    return PlainRun(path, listed, changes,
                    [PlainSession(number, begin, end, cores)
                     for number, (begin, end) in enumerate(sessions, 1)])


def night_between_runs(path: Path) -> PlainRun:
    """A run of 30 ten-second jobs one after another on one core, in the evening;
    run again the next morning, 14 hours later, with 20 more (the 8th fails)."""
    evening, morning = MONDAY + 10 * 3600, MONDAY + DAY
    first = [(f"first {n}", [(evening, evening + 10 * n, evening + 10 * n + 9.5, "completed")])
             for n in range(30)]
    again = [(f"again {n}", [(morning, morning + 10 * n, morning + 10 * n + 9.5,
                              "failed" if n == 7 else "completed")]) for n in range(20)]
    return plain_run(path, first + again, [(evening, evening + 300), (morning, morning + 200)],
                     cores=1)
