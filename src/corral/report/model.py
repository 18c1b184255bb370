"""What the report and the dashboard show of a run, computed once from its journal.

:func:`read_view` reads a run (anything shaped like :class:`corral.Run`) into a
:class:`RunView`: the jobs, their attempts in lanes, and the summary — jobs by
state, wall time, utilisation, retries, backends. :func:`page_data` turns a view
into the compact JSON the page draws from (columns of numbers and strings, times
in milliseconds from the run's start), small enough for a 10,000-job run.

This package sits below the journal and imports nothing of it: it reads a run
through :class:`RunSource`, so that ``Run.report()`` can call down into it.
"""

from __future__ import annotations

import bisect
import contextlib

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corral.backends import backend_info, outlives_driver
from corral.report.timeline import (Attempt, Break, Outcome, assign_lanes, attempts_from_events,
                                   idle_breaks, waiting_since, waits_that_ended_unstarted)
from corral.safe_repr import bidi_shown
from corral.status import TERMINAL, JobStatus

__all__ = ["RunSource", "RunView", "Summary", "read_view", "page_data", "stderr_tail"]

#: Characters of stderr kept per job: more for the jobs that did not complete,
#: whose reason is often in it, and a total so a big run's page stays small.
FAILED_TAIL_CHARS = 2000
OTHER_TAIL_CHARS = 300
TAIL_BUDGET_CHARS = 1_500_000
#: Commands longer than this are cut in the page (the journal keeps them whole).
COMMAND_CHARS = 400
NAME_CHARS = 200
REASON_CHARS = 2000
#: Failed jobs whose traceback is read (one journal row each), and how much of each.
TRACEBACKS_READ = 200
TRACEBACK_CHARS = 4000
SLOWEST_SHOWN = 10
#: Failures whose stderr tail the dashboard's data carries (it reads others on demand).
DASHBOARD_TAILS = 50
_NOT_COMPLETED = (JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED)
PENDING_OR_SUBMITTED = (JobStatus.QUEUED, JobStatus.SUBMITTED)


class StoredJobLike(Protocol):
    """What the report reads of a job: :class:`corral.journal.stored.StoredJob` fits it."""

    @property
    def id(self) -> int | str: ...
    @property
    def name(self) -> str: ...
    @property
    def command(self) -> str: ...
    @property
    def spec(self) -> dict[str, Any]: ...
    @property
    def deps(self) -> tuple[int | str, ...]: ...
    @property
    def status(self) -> JobStatus: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def native_id(self) -> str | None: ...
    @property
    def started(self) -> float | None: ...
    @property
    def ended(self) -> float | None: ...
    @property
    def session(self) -> int | None: ...

    def output_path(self, stream: str = "stdout") -> str | None: ...

    def output_written_at(self) -> float | None: ...

    def traceback_text(self) -> str | None: ...


class SessionLike(Protocol):
    """A driver session of the run: :class:`corral.journal.stored.StoredSession` fits it."""

    @property
    def id(self) -> int: ...
    @property
    def backend(self) -> str | None: ...
    @property
    def started(self) -> float | None: ...
    @property
    def ended(self) -> float | None: ...
    @property
    def cores(self) -> int | None: ...


class RunSource(Protocol):
    """What the report reads of a run: :class:`corral.Run` fits it."""

    @property
    def path(self) -> Path: ...

    def jobs(self, status: Any = None, *, results: bool = True) -> Sequence[StoredJobLike]: ...

    def job(self, job_id: Any) -> StoredJobLike: ...

    def events(self, job_id: Any = None) -> list[tuple[Any, ...]]: ...

    def sessions(self) -> Sequence[SessionLike]: ...

    @property
    def owner(self) -> dict[str, Any] | None: ...

    def last_written(self) -> float | None: ...

    def snapshot(self) -> contextlib.AbstractContextManager[None]: ...


@dataclass
class Summary:
    """The run in numbers, as the page's first panel shows them."""

    jobs: int
    by_status: dict[str, int]
    #: From the first job made to the last attempt's end (or now, while it runs).
    first: float | None
    last: float | None
    #: Core-seconds the attempts held: each attempt's duration times its cores.
    busy_core_seconds: float
    #: Core-seconds the backend offered over the same span, where it packs on
    #: this machine and said its cores; None on a cluster (it packs on its own).
    available_core_seconds: float | None
    #: The most cores held at one moment.
    peak_cores: int
    #: Seconds of the span no driver ran the run (between a killed one and its rerun).
    undriven_seconds: float
    retries: int
    attempts: int
    backends: list[str]
    native_ids: int
    #: What the native ids are: worker process ids on this machine, or a cluster's job ids.
    native_kind: str = "native ids"
    #: The cores the session driving the run now offers (None: none does, or it did
    #: not say): a live page counts the core-seconds offered on at that rate.
    cores_now: int | None = None
    #: When a driver ran the run: (from, to), within the span.
    driven: list[tuple[float, float]] = field(default_factory=list)

    @property
    def wall_seconds(self) -> float:
        return 0.0 if self.first is None or self.last is None else max(0.0, self.last - self.first)

    @property
    def utilisation(self) -> float | None:
        if not self.available_core_seconds:
            return None
        return self.busy_core_seconds / self.available_core_seconds


@dataclass
class RunView:
    """A run as read at one moment: jobs in dispatch order, attempts in lanes."""

    path: Path
    jobs: list[StoredJobLike]
    attempts: list[Attempt]
    lanes: int
    summary: Summary
    read_at: float
    live: bool = False
    index: dict[str, int] = field(default_factory=dict)
    #: The remote tracebacks of jobs that raised, by job id (the first failures only).
    tracebacks: dict[str, str] = field(default_factory=dict)
    #: Jobs ready to start and not started, by job id, with when they became ready.
    waiting: dict[str, float] = field(default_factory=dict)
    #: Waits that ended without a start (see timeline.waits_that_ended_unstarted).
    unstarted_waits: list[tuple[str, float, float]] = field(default_factory=list)
    #: Unfinished jobs that nothing runs now: their driver is gone, and their
    #: backend's jobs end with it (``corral status`` says "its driver is gone").
    orphaned: int = 0
    #: Long stretches in which nothing ran, drawn narrow (see timeline.idle_breaks).
    breaks: list[Break] = field(default_factory=list)


def cores_of(job: StoredJobLike) -> int:
    cores = job.spec.get("options", {}).get("cores", 1) if isinstance(job.spec, dict) else 1
    return cores if isinstance(cores, int) and cores > 0 else 1


def read_view(run: RunSource, now: float | None = None,
              tracebacks: int = TRACEBACKS_READ) -> RunView:
    """Read *run* once, as it was at one moment: its jobs (without results),
    events and sessions, and the tracebacks of its first *tracebacks* failed jobs."""
    with run.snapshot():
        return _read_view(run, now, tracebacks)


def _read_view(run: RunSource, now: float | None, tracebacks: int) -> RunView:
    now = time.time() if now is None else now
    driven = run.owner is not None
    jobs = list(run.jobs(results=False))
    # a row with a damaged time (not a number, or NaN or infinite) is left out, not a
    # traceback (attack review: an infinite one drew a timeline without end, for ever)
    events = [event for event in run.events()
              if isinstance(event[1], (int, float)) and math.isfinite(event[1])]
    attempts = attempts_from_events(events)
    _use_recorded_times(attempts, jobs)
    sessions = list(run.sessions())
    dies_with_driver = _dies_with_its_driver(sessions)
    if not driven:
        last_sign = max([event[1] for event in events] + [run.last_written() or 0.0])
        _settle_unknown_ends(attempts, jobs, dies_with_driver, last_sign)
    index = {str(job.id): number for number, job in enumerate(jobs)}
    attempts = [attempt for attempt in attempts if attempt.job in index]  # no row: not drawn
    lanes = assign_lanes(attempts)
    summary = _summarise(jobs, attempts, sessions, index, now)
    view = RunView(run.path, jobs, attempts, lanes, summary, now, driven, index)
    view.unstarted_waits = [wait for wait in waits_that_ended_unstarted(events)
                            if wait[0] in index]
    if driven:
        view.waiting = {job: since for job, since in waiting_since(events).items()
                        if job in index and jobs[index[job]].status in PENDING_OR_SUBMITTED}
    else:  # (cold review: the page showed them "running", and said nothing of the driver)
        view.orphaned = sum(1 for job in jobs
                            if job.status not in TERMINAL and dies_with_driver(job))
    view.breaks = _breaks(view)
    for number in _failures(jobs)[:tracebacks]:
        job = jobs[number]
        if job.status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            try:
                text = run.job(job.id).traceback_text()
            except KeyError:  # gone between the two reads: the next read has it
                text = None
            if text:
                view.tracebacks[str(job.id)] = bidi_shown(text[-TRACEBACK_CHARS:])
    return view


def _use_recorded_times(attempts: list[Attempt], jobs: list[StoredJobLike]) -> None:
    """A job's row holds when its last attempt really started and ended, where a
    cluster backend learns it after the fact (its poll stamps the events of a
    short job together): those times win for that attempt."""
    last: dict[str, Attempt] = {}
    for each in attempts:
        if each.job not in last or each.number > last[each.job].number:
            last[each.job] = each
    for job in jobs:
        found = last.get(str(job.id))
        started = job.started
        if found is None or not isinstance(started, (int, float)):
            continue
        attempt = found
        ended = job.ended if isinstance(job.ended, (int, float)) else None
        if attempt.end is None and attempt.outcome == Outcome.RUNNING:
            attempt.start = started
        elif attempt.end is not None and ended is not None and started <= ended and \
                attempt.outcome not in (Outcome.RETRIED, Outcome.REQUEUED):
            attempt.start, attempt.end = started, ended
        else:
            continue
        if attempt.queued is not None:
            attempt.queued = min(attempt.queued, attempt.start)


def _breaks(view: RunView) -> list[Break]:
    """The long idle stretches of *view*'s span (see :func:`idle_breaks`).

    A run with no session recorded (an older journal) counts as driven all along,
    as its summary does."""
    summary = view.summary
    if summary.first is None or summary.last is None:
        return []
    running = [(a.start, a.end if a.end is not None else view.read_at) for a in view.attempts]
    waiting = [*((a.queued, a.start) for a in view.attempts if a.queued is not None),
               *((began, ended) for _, began, ended in view.unstarted_waits),
               *((since, view.read_at) for since in view.waiting.values())]
    driven = summary.driven if summary.undriven_seconds > 0 else [(summary.first, summary.last)]
    return idle_breaks(running, waiting, driven, summary.first, summary.last)


def _dies_with_its_driver(sessions: Sequence[SessionLike]) -> Callable[[StoredJobLike], bool]:
    """Whether a job ran on a backend whose jobs end with their driver (the
    local one's), not on one that runs them on (a cluster's)."""
    backends = {session.id: session.backend for session in sessions}
    return lambda job: not outlives_driver(backends.get(job.session or 0))


def _settle_unknown_ends(attempts: list[Attempt], jobs: list[StoredJobLike],
                         dies_with_driver: Callable[[StoredJobLike], bool],
                         last_sign: float) -> None:
    """No driver runs the run: an attempt the journal shows running on a backend
    whose jobs die with their driver ended when it died, at a moment nobody
    recorded; draw it to the last sign of life (the journal's last write, or the
    job's own output's), as UNKNOWN (``corral status`` says "?" for it)."""
    by_id = {str(job.id): job for job in jobs}
    for attempt in attempts:
        job = by_id.get(attempt.job)
        if attempt.end is not None or job is None or not dies_with_driver(job):
            continue
        attempt.end = max(attempt.start, last_sign, job.output_written_at() or 0.0)
        attempt.outcome = Outcome.UNKNOWN
        attempt.reason = "its driver is gone; when it stopped was not recorded"


def _summarise(jobs: list[StoredJobLike], attempts: list[Attempt], sessions: Sequence[SessionLike],
               index: dict[str, int], now: float) -> Summary:
    by_status = Counter(job.status.name for job in jobs)
    starts = [a.queued if a.queued is not None else a.start for a in attempts]
    ends = [a.end if a.end is not None else now for a in attempts]
    ended = [job.ended for job in jobs if job.ended is not None]
    first = min(starts, default=None)
    last = max([*ends, *ended], default=None)
    cores = [cores_of(jobs[index[a.job]]) if a.job in index else 1 for a in attempts]
    busy = sum(((a.end if a.end is not None else now) - a.start) * c
               for a, c in zip(attempts, cores, strict=True))
    signs = sorted([*(a.start for a in attempts), *(a.end for a in attempts if a.end is not None),
                    *(a.queued for a in attempts if a.queued is not None)])
    spans = _driven_spans(sessions, first, last, now, signs)
    available, undriven = _available_core_seconds(spans, first, last)
    return Summary(
        jobs=len(jobs), by_status=dict(by_status), first=first, last=last,
        busy_core_seconds=max(0.0, busy), available_core_seconds=available,
        undriven_seconds=undriven if sessions else 0.0,
        peak_cores=_peak(attempts, cores, now),
        # Every attempt but a job's first: retries=, a requeue, on_finish asking for
        # another run (cold review: those were not counted), a rerun after a driver died.
        retries=len(attempts) - len({a.job for a in attempts}),
        attempts=len(attempts),
        backends=sorted({s.backend for s in sessions if s.backend}),  # None: not recorded
        native_ids=len({job.native_id for job in jobs if job.native_id}),
        native_kind=_native_kind(sessions),
        cores_now=next((session.cores for session in sorted(
            sessions, key=lambda session: session.started or 0.0, reverse=True)[:1]
            if session.ended is None), None),
        driven=[(begin, end) for begin, end, _ in spans])


def _native_kind(sessions: Sequence[SessionLike]) -> str:
    """Worker pids where every session packed on this machine, else the backend's ids
    ("Slurm ids", "Dask ids")."""
    for session in sessions:
        if session.backend is None:  # an older journal: it ran on this machine
            continue
        try:
            info = backend_info(session.backend)
        except ValueError:  # a backend not registered here: a site's, or a described one
            return "cluster job ids"
        if not info.capabilities.packs_locally:
            return f"{info.title} ids"
    return "worker pids"


def _driven_spans(sessions: Sequence[SessionLike], first: float | None, last: float | None,
                  now: float, signs: list[float]) -> list[tuple[float, float, int | None]]:
    """``(from, to, cores)`` of each session, over the part of the run's span it drove.

    A session that never ended (its driver was killed) drove until its last
    sign of life before the next one began (*signs*: the attempts' starts and
    ends, sorted): counting it to the run's end counted the cores twice (a
    killed run and its rerun read as a third used), and to the next start
    counted the time nobody drove the run as cores left idle (a run killed at
    night and rerun in the morning read as 5 % used)."""
    if first is None or last is None:
        return []
    spans: list[tuple[float, float, int | None]] = []
    starts = sorted(session.started for session in sessions if session.started is not None)
    for session in sessions:
        begin = max(first, session.started if session.started is not None else first)
        later = [start for start in starts if start > begin]
        if session.ended is not None:
            ended = session.ended
        elif later:
            before_next = signs[:bisect.bisect_right(signs, later[0])]
            ended = before_next[-1] if before_next else begin
        else:
            ended = now
        end = min(last, ended)
        if end > begin:
            spans.append((begin, end, session.cores))
    return spans


def _available_core_seconds(spans: list[tuple[float, float, int | None]], first: float | None,
                            last: float | None) -> tuple[float | None, float]:
    """``(core-seconds offered, seconds no session drove)`` over the run's span,
    from the sessions' *spans* (:func:`_driven_spans`).

    Each session offers its cores over the part of the span it drove; None
    when a session that ran jobs did not say its cores (a cluster, an older
    journal). The time no session drove is the second number: the page says
    how much of the wall time it was (cold review: a rerun's wall time held the
    night, and nothing said so)."""
    if first is None or last is None:
        return None, 0.0
    total: float | None = 0.0
    for begin, end, cores in spans:
        if cores is None or total is None:
            total = None
        else:
            total += cores * (end - begin)
    covered = _covered([(begin, end) for begin, end, _ in spans])
    return total or None, max(0.0, (last - first) - covered)


def _covered(spans: list[tuple[float, float]]) -> float:
    """How long the union of *spans* lasts."""
    covered, reach = 0.0, -math.inf
    for begin, end in sorted(spans):
        if end > reach:
            covered += end - max(begin, reach)
            reach = end
    return covered


def _peak(attempts: list[Attempt], cores: list[int], now: float) -> int:
    changes = sorted([(a.start, c) for a, c in zip(attempts, cores, strict=True)]
                     + [(a.end if a.end is not None else now, -c)
                        for a, c in zip(attempts, cores, strict=True)],
                     key=lambda change: (change[0], change[1]))
    held = peak = 0
    for _, delta in changes:
        held += delta
        peak = max(peak, held)
    return peak


def stderr_tail(job: StoredJobLike, chars: int) -> str:
    """The last *chars* characters of what the job wrote to stderr ("" if none)."""
    path = job.output_path("stderr")
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - chars * 4))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return text[-chars:]


def _resources(job: StoredJobLike) -> str:
    options = job.spec.get("options", {}) if isinstance(job.spec, dict) else {}
    cores = cores_of(job)
    parts = [f"{cores} core{'s' if cores != 1 else ''}"]
    if isinstance(options.get("memory"), int):
        parts.append(f"{options['memory']} MB")
    if options.get("gpus"):
        parts.append(f"{options['gpus']} GPU")
    if isinstance(options.get("walltime"), (int, float)):
        parts.append(f"walltime {_seconds(options['walltime'])}")
    if isinstance(options.get("timeout"), (int, float)):
        parts.append(f"timeout {_seconds(options['timeout'])}")
    if options.get("queue"):
        parts.append(f"queue {options['queue']}")
    return ", ".join(parts)


def _seconds(value: float) -> str:
    return f"{value:g}s" if value < 120 else f"{value / 60:g}m"


def page_data(view: RunView, tails: str = "all") -> dict[str, Any]:
    """The JSON the page draws: see the module docstring. *tails* says whose
    stderr tails to embed: ``"all"`` jobs' (the report, within a budget) or only
    the first ``"failures"``' (the dashboard, which reads the others on demand)."""
    summary = view.summary
    origin = summary.first if summary.first is not None else view.read_at

    def ms(moment: float | None) -> float | None:
        # a tenth of a millisecond: a call that fails in 0.3 ms is still a bar
        return None if moment is None else round((moment - origin) * 1000, 1)

    jobs = view.jobs
    index = view.index
    attempts = sorted(view.attempts, key=lambda a: (a.start, a.lane))
    outcome_code = {name: number for number, name in enumerate(Outcome.ALL)}
    data: dict[str, Any] = {
        "path": str(view.path),
        "title": view.path.name,
        "generated": view.read_at,
        "live": view.live,
        "orphaned": view.orphaned,
        "origin": origin,
        "now": ms(view.read_at),
        "lanes": view.lanes,
        "outcomes": list(Outcome.ALL),
        "summary": {
            "jobs": summary.jobs, "by_status": summary.by_status,
            "wall_seconds": summary.wall_seconds,
            "busy_core_seconds": summary.busy_core_seconds,
            "available_core_seconds": summary.available_core_seconds,
            "undriven_seconds": summary.undriven_seconds,
            "utilisation": summary.utilisation, "peak_cores": summary.peak_cores,
            "retries": summary.retries, "attempts": summary.attempts,
            "backends": summary.backends, "native_ids": summary.native_ids,
            "native_kind": summary.native_kind,
            "cores_now": summary.cores_now if view.live else None,
        },
        "jobs": {
            "id": [str(job.id) for job in jobs],
            "name": [_cut(bidi_shown(job.name), NAME_CHARS) for job in jobs],
            "status": [job.status.name for job in jobs],
            "reason": [None if job.reason is None else _cut(bidi_shown(job.reason), REASON_CHARS)
                       for job in jobs],
            "exit": [job.exit_code for job in jobs],
            "command": [_cut(bidi_shown(job.command)) for job in jobs],
            "res": [_resources(job) for job in jobs],
            "cores": [cores_of(job) for job in jobs],
            "native": [job.native_id for job in jobs],
            "attempts": [job.attempts for job in jobs],
            "deps": [[index[str(dep)] for dep in job.deps if str(dep) in index] for job in jobs],
            "ended": [ms(job.ended) for job in jobs],
        },
        "bars": {
            "job": [index.get(a.job, -1) for a in attempts],
            "n": [a.number for a in attempts],
            "lane": [a.lane for a in attempts],
            "q": [ms(a.queued) for a in attempts],
            "s": [ms(a.start) for a in attempts],
            "e": [ms(a.end) for a in attempts],
            "o": [outcome_code[a.outcome] for a in attempts],
            "why": [_cut(bidi_shown(a.reason), REASON_CHARS)
                    if a.reason and a.outcome != Outcome.COMPLETED
                    else None for a in attempts],
        },
        # [from, to, drawn width, of it with no driver]: a night between a run and its
        # rerun drawn narrow, as a break in the axis (review: it left both a sliver)
        "breaks": [[ms(item.start), ms(item.end), round(item.shown * 1000, 1),
                    round(item.undriven * 1000, 1)] for item in view.breaks],
        "waiting": [[index[job], ms(since)] for job, since in view.waiting.items()],
        "waits": [[index[job], ms(began), ms(ended)] for job, began, ended in view.unstarted_waits],
        "failures": _failures(jobs),
        "slowest": _slowest(view),
        "traceback": {str(index[job_id]): text for job_id, text in view.tracebacks.items()
                      if job_id in index},
        "stderr": _tails(jobs, only_failures=DASHBOARD_TAILS if tails == "failures" else None),
    }
    return data


def _cut(text: str, most: int = COMMAND_CHARS) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"


def _failures(jobs: list[StoredJobLike]) -> list[int]:
    """Jobs that did not complete: failed and timed out first, then cancelled,
    each group in the order they ended."""
    order = {JobStatus.FAILED: 0, JobStatus.TIMED_OUT: 1, JobStatus.CANCELLED: 2}
    found = [(order[job.status], job.ended or 0.0, number)
             for number, job in enumerate(jobs) if job.status in order]
    return [number for *_, number in sorted(found)]


def _slowest(view: RunView) -> list[int]:
    longest: dict[int, float] = {}
    for attempt in view.attempts:
        number = view.index.get(attempt.job)
        if number is None:
            continue
        end = attempt.end if attempt.end is not None else view.read_at
        longest[number] = max(longest.get(number, 0.0), end - attempt.start)
    return sorted(longest, key=lambda number: -longest[number])[:SLOWEST_SHOWN]


def _tails(jobs: list[StoredJobLike], only_failures: int | None = None) -> dict[str, str]:
    """stderr tails by job index, those that did not complete first, within a
    budget; with *only_failures*, of that many failures only."""
    tails: dict[str, str] = {}
    budget = TAIL_BUDGET_CHARS
    ranked = (_failures(jobs)[:only_failures] if only_failures is not None else
              sorted(range(len(jobs)), key=lambda n: jobs[n].status not in _NOT_COMPLETED))
    for number in ranked:
        job = jobs[number]
        if job.status not in TERMINAL and job.status is not JobStatus.RUNNING:
            continue
        chars = FAILED_TAIL_CHARS if job.status in _NOT_COMPLETED else OTHER_TAIL_CHARS
        if budget < chars:
            break
        tail = stderr_tail(job, chars)
        if tail:
            tails[str(number)] = tail = bidi_shown(tail)
            budget -= len(tail)
    return tails
