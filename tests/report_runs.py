"""Runs with something of everything, for the report and dashboard tests.

:func:`mixed_run` drives a real journaled run in the test's own process, on the
local backend: a job that completes, one that fails once and completes on its
retry, a command that fails with a message on stderr, its child (cancelled
before it started), a command killed by its timeout, and a running job that is
cancelled. What the report must show of it is in :data:`EXPECTED`.
"""

from __future__ import annotations

from pathlib import Path

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
