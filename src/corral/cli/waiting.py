"""``corral wait``'s progress bar: the jobs still to go, the failed, the time waited.

Apart from :mod:`corral.cli.views`, so that the other commands do not import
rich's progress machinery.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from corral.cli.logs import POLL_S
from corral.status import TERMINAL, JobStatus
from corral.units import format_span

if TYPE_CHECKING:
    from corral.journal.run import Run

__all__ = ["live_script", "progress_words", "unfinished", "wait_with_progress"]


def wait_with_progress(run: Run, ids: Sequence[str], timeout: float | None,
                       show: bool) -> str:
    """Wait until the jobs (all of the run when *ids* is empty, and its script
    if one drives it) have ended.

    Returns "done"; "timeout"; "orphaned" when no process drives the run any
    more while jobs are unfinished; "journal stopped" when the driver's journal
    gave up (no end would be seen); or "cut short" when the whole run's jobs
    have ended but the script that made them ended without closing the run
    (killed): it may not have made them all.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    wanted = {str(job_id) for job_id in ids}
    told_of_script = False
    stopped = _StoppedDriver(run, show)
    with (_progress_bar() if show else _NoBar()) as progress:
        bar = progress.add_task("waiting", total=None)
        while True:
            # Counts from the journal's index, not every row: a wait beside a run
            # of 100,000 jobs read them all five times a second, took most of a
            # core from the run, and ended seconds after it.
            counts = run.status_counts(wanted or None)
            total, done = sum(counts.values()), _ended(counts)
            if any(counts.get(status) for status in _BAD_ENDS):
                progress.turn_red()
            words = progress_words(counts)
            script = live_script(run) if done == total and not wanted else None
            if script is not None:
                words += f"; script pid {script} may make more"
                if not show and not told_of_script:  # (a bar says it where one is drawn)
                    told_of_script = True
                    print(f"corral: {'every job has ended' if total else 'no job yet'}; "
                          f"waiting for the script that drives the run (pid {script}), "
                          "which may make more", file=sys.stderr, flush=True)
            if done < total and stopped.looked_at():
                words += f"; its driver is STOPPED (kill -CONT {stopped.pid})"
            progress.update(bar, total=total, completed=done, description=words)
            if done == total and script is None:
                return "done" if wanted or not _cut_short(run) else "cut short"
            if deadline is not None and time.monotonic() > deadline:
                return "timeout"
            if run.owner is None:  # (read again: it may have ended them as it went)
                counts = run.status_counts(wanted or None)
                if unfinished(counts):
                    return "orphaned"
            elif run.journal_stopped() is not None:  # its ends would never be seen here
                return "journal stopped"
            time.sleep(POLL_S)  # the journal is written by another process


class _StoppedDriver:
    """Whether the run's driver is stopped (Ctrl-Z, SIGSTOP), looked at now and
    then: a wait on it counted time without a word, and printed nothing at all
    without a terminal (attack review). Said once on stderr each time it stops,
    where no bar shows it."""

    def __init__(self, run: Run, show: bool) -> None:
        self._run, self._show = run, show
        self._next_look = time.monotonic() + _STOPPED_LOOK_S
        self.pid: int | None = None

    def looked_at(self) -> bool:
        """Whether the driver was stopped at the last look (one taken if it is time)."""
        if time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + _STOPPED_LOOK_S
            from corral.control.server import stopped_driver

            was, self.pid = self.pid, stopped_driver(self._run.path, traced=False)
            if self.pid is not None and was is None and not self._show:
                print(f"corral: the run's driver (pid {self.pid}) is STOPPED (Ctrl-Z or "
                      f"SIGSTOP): no job goes on until it runs again (kill -CONT {self.pid})",
                      file=sys.stderr, flush=True)
        return self.pid is not None


#: Seconds between looks at whether the driver is stopped (one reads /proc).
_STOPPED_LOOK_S = 1.0


def live_script(run: Run) -> int | None:
    """The pid of the script that drives *run*, while one does: a wait for
    the whole run waits for it too, since it may make more jobs (a map makes
    its calls a thousand at a time as they are read, and may have ended all
    it made when a wait looks). None for a daemon's run, or no driver."""
    owner = run.owner
    if owner is None or owner.get("kind") == "daemon":
        return None
    return owner.get("pid") or 0


def _cut_short(run: Run) -> bool:
    """Whether the run's last session was a script's that never closed the
    run (killed): every job it made may have ended, but it may not have made
    them all (attack review: a wait on a script killed then said exit 0,
    and ``corral wait && deploy`` deployed half a run). A session that
    closed writes its end within moments of letting go of the run: looked
    at for a second before it is believed cut short."""
    for _ in range(_CLOSE_LOOKS):
        sessions = run.sessions()
        if not sessions or sessions[-1].kind != "script" or sessions[-1].ended is not None:
            return False
        if run.owner is not None:  # a new driver took the run meanwhile: its wait goes on
            return False
        time.sleep(POLL_S)
    return True


#: Looks at a last session's end before it is taken to have been cut short (POLL_S apart).
_CLOSE_LOOKS = 5


def _ended(counts: Mapping[JobStatus, int]) -> int:
    return sum(count for status, count in counts.items() if status in TERMINAL)


def unfinished(counts: Mapping[JobStatus, int]) -> int:
    """How many of the jobs counted by status (``Run.status_counts``) are unfinished."""
    return sum(counts.values()) - _ended(counts)


#: The ends that turn the bar red.
_BAD_ENDS = (JobStatus.FAILED, JobStatus.TIMED_OUT)


def progress_words(counts: Mapping[JobStatus, int]) -> str:
    """The bar's words, from the count of jobs in each status: how many are
    still to go, how many failed, and how many timed out or were cancelled,
    where any were ("3 to go, 1 failed, 2 cancelled"): a bar that counts them
    as done says nothing else of them."""
    words = [f"{unfinished(counts)} to go",
             f"{counts.get(JobStatus.FAILED, 0)} failed"]
    for status, word in ((JobStatus.TIMED_OUT, "timed out"), (JobStatus.CANCELLED, "cancelled")):
        if counts.get(status):
            words.append(f"{counts[status]} {word}")
    return ", ".join(words)


class _NoBar:
    """What a wait without a terminal draws: nothing (and rich's progress
    module, a third of such a command's start-up, is not imported)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def add_task(self, description: str, total: float | None) -> int:
        return 0

    def update(self, task: int, **fields: object) -> None:
        pass

    def turn_red(self) -> None:
        pass


def _progress_bar() -> Any:
    """The progress bar of a wait in a terminal, on stderr (where *show* was
    decided: stdout is for results, even in a terminal): red only once a job
    failed, since rich's own colour for a bar on its way reads as an alarm."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task,
                               TextColumn)
    from rich.text import Text

    class ElapsedColumn(ProgressColumn):
        """Time since the wait began, in the command's one format (format_span)."""

        def render(self, task: Task) -> Text:
            return Text(format_span(task.elapsed or 0.0), style="progress.elapsed")

    line = BarColumn(complete_style="cyan", finished_style="green")

    class Bar(Progress):
        def turn_red(self) -> None:
            line.complete_style = line.finished_style = "red"

    return Bar(TextColumn("{task.description}"), line, MofNCompleteColumn(), ElapsedColumn(),
               console=Console(stderr=True), transient=False)
