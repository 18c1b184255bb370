"""``corral wait``'s progress bar: the jobs still to go, the failed, the time waited.

Apart from :mod:`corral.cli.views`, so that the other commands do not import
rich's progress machinery.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.progress import ProgressColumn, Task
from rich.text import Text

from corral.cli.views import POLL_S
from corral.status import TERMINAL, JobStatus
from corral.units import format_span

if TYPE_CHECKING:
    from corral.journal.run import Run

__all__ = ["progress_words", "wait_with_progress"]


def wait_with_progress(run: Run, ids: Sequence[str], timeout: float | None,
                       show: bool) -> str:
    """Wait until the jobs (all of the run when *ids* is empty) have ended.

    Returns "done", "timeout", or "orphaned" when no process drives the run
    any more while jobs are unfinished.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    wanted = {str(job_id) for job_id in ids}
    # On stderr, where *show* was decided: stdout is for results, even in a terminal.
    # Red only once a job failed: rich's own colour for a bar on its way reads as an alarm.
    line = BarColumn(complete_style="cyan", finished_style="green")
    with Progress(TextColumn("{task.description}"), line, MofNCompleteColumn(),
                  _ElapsedColumn(), console=Console(stderr=True), disable=not show,
                  transient=False) as progress:
        bar = progress.add_task("waiting", total=None)
        while True:
            jobs = [job for job in run.jobs(results=False) if not wanted or str(job.id) in wanted]
            done = sum(job.status in TERMINAL for job in jobs)
            if any(job.status in _BAD_ENDS for job in jobs):
                line.complete_style = line.finished_style = "red"
            progress.update(bar, total=len(jobs), completed=done,
                            description=progress_words([job.status for job in jobs]))
            if done == len(jobs):
                return "done"
            if deadline is not None and time.monotonic() > deadline:
                return "timeout"
            if run.owner is None and done < len(jobs):
                jobs = [job for job in run.jobs(results=False)
                        if not wanted or str(job.id) in wanted]
                if any(job.status not in TERMINAL for job in jobs):
                    return "orphaned"
            time.sleep(POLL_S)  # the journal is written by another process


#: The ends that turn the bar red.
_BAD_ENDS = (JobStatus.FAILED, JobStatus.TIMED_OUT)


def progress_words(statuses: Sequence[JobStatus]) -> str:
    """The bar's words: how many jobs are still to go, how many failed, and
    how many timed out or were cancelled, where any were ("3 to go, 1 failed,
    2 cancelled"): a bar that counts them as done says nothing else of them."""
    done = sum(status in TERMINAL for status in statuses)
    words = [f"{len(statuses) - done} to go",
             f"{sum(status is JobStatus.FAILED for status in statuses)} failed"]
    for status, word in ((JobStatus.TIMED_OUT, "timed out"), (JobStatus.CANCELLED, "cancelled")):
        count = sum(each is status for each in statuses)
        if count:
            words.append(f"{count} {word}")
    return ", ".join(words)


class _ElapsedColumn(ProgressColumn):
    """Time since the wait began, in the command's one format (format_span)."""

    def render(self, task: Task) -> Text:
        return Text(format_span(task.elapsed or 0.0), style="progress.elapsed")
