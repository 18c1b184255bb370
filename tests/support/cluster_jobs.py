"""What the tests on each real batch scheduler (Slurm, Grid Engine, PBS) do alike:
dispatch jobs together, wait for a status, and measure what 200 calls cost in
the scheduler's commands."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import corral
from corral import JobStatus
from jobs import square
from support.commandlog import counts_of, gaps_between
from support.waiting import wait_until


def submit_together(sched: corral.Scheduler, count: int, fn=square, *args,
                    **options) -> list[corral.Job]:
    """``fn(i, *args)`` for i < *count*, in one dispatch (so they may go out as arrays)."""
    sched.pause()
    jobs = [sched.options(**options).submit(fn, i, *args) if options else
            sched.submit(fn, i, *args) for i in range(count)]
    sched.resume()
    return jobs


def wait_for_status(job: corral.Job, status: JobStatus, timeout: float = 60) -> None:
    try:
        wait_until(lambda: job.status is status, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"{job!r} never became {status.name} (reason: {job.reason})") \
            from None


@dataclass
class CallCost:
    """What 200 calls dispatched together cost in the scheduler's commands."""

    jobs: list[corral.Job]
    elapsed: float
    counts: dict[str, int]
    #: Seconds between one status query and the next.
    gaps: list[float]
    report: dict[str, Any]


def two_hundred_calls(make: Callable[..., corral.Scheduler], log: Path, status_command: str,
                      commands: Sequence[str], **report: Any) -> CallCost:
    """Run 200 ``square`` calls polled every 0.5 s, arrays of at most 64, and count
    the scheduler's commands in *log*; print the report (with *report*'s entries)."""
    begun = time.monotonic()
    sched = make(poll_interval=0.5, max_array_size=64)
    jobs = submit_together(sched, 200)
    assert [job.result(timeout=240) for job in jobs] == [i * i for i in range(200)]
    elapsed = time.monotonic() - begun
    counts = counts_of(log)
    gaps = gaps_between(log, status_command)
    summary = {**report, "calls": 200, "elapsed_s": round(elapsed, 2),
               "counts": {name: counts.get(name, 0) for name in commands},
               f"min_{status_command}_gap_s": round(min(gaps), 3) if gaps else None}
    print(json.dumps(summary))
    return CallCost(jobs, elapsed, counts, gaps, summary)


def spaced_like_polls(gaps: list[float]) -> bool:
    """Whether status queries came once per 0.5 s poll. Each call is stamped when its
    process has started, which a loaded machine delays by up to a few tenths: a gap
    is the interval less that jitter. Two queries in one poll would be a few
    milliseconds apart."""
    return bool(gaps) and min(gaps) >= 0.25 and statistics.median(gaps) >= 0.45
