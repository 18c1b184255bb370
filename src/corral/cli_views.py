"""What the ``corral`` command shows: tables, followed logs, a progress bar.

Kept apart from :mod:`corral.cli` (argument parsing and errors) so that each
view is a function of plain data: a :class:`~corral.run.Run`, a list of
:class:`~corral.store.StoredJob`, the option registry, a config.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .options import JOB_OPTIONS
from .status import TERMINAL, JobStatus
from .units import format_duration

if TYPE_CHECKING:
    from .config import Config
    from .run import Run
    from .store import StoredJob

__all__ = ["run_header", "status_table", "follow_output", "wait_with_progress",
           "options_table", "profiles_view"]

#: How often views that watch a run read its journal again.
POLL_S = 0.2

_STYLES = {
    JobStatus.COMPLETED: "green", JobStatus.FAILED: "bold red", JobStatus.TIMED_OUT: "bold red",
    JobStatus.CANCELLED: "yellow", JobStatus.RUNNING: "cyan", JobStatus.SUBMITTED: "cyan",
}


def run_header(run: Run) -> Text:
    owner = run.owner
    driver = "no driver running" if owner is None else (
        f"driven by {owner.get('kind', '?')} pid {owner.get('pid', '?')}")
    paused = ", PAUSED" if run.paused else ""
    return Text(f"run {run.path}: {driver}{paused}")


def _elapsed(job: StoredJob, driver_alive: bool) -> str:
    if job.started is None:
        return ""
    if job.ended is None and not driver_alive:
        return "?"  # its driver is gone: it is not running any more, whatever the journal says
    end = job.ended if job.ended is not None else time.time()
    seconds = max(0.0, end - job.started)
    if seconds < 60:  # short jobs: a clock rounded up to 00:00:01 would say nothing
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    return format_duration(seconds)


def status_table(jobs: Sequence[StoredJob], driver_alive: bool = True,
                 cluster_jobs: Mapping[str, str] | None = None) -> Table:
    """The jobs as a table; *cluster_jobs* (``{id: backend}``, see
    :meth:`corral.Run.cluster_jobs`) adds a column with their cluster job ids."""
    cluster_jobs = cluster_jobs or {}
    cluster_column = (f"{sorted(set(cluster_jobs.values()))[0].upper()} ID"
                      if cluster_jobs else None)
    table = Table(box=None, pad_edge=False, header_style="bold")
    # Every column keeps room: one 5,000-character command must not push ID and
    # STATUS off the screen.
    columns = [("ID", None), ("NAME", 24), ("STATUS", None), ("TIME", None), ("TRIES", None)]
    if cluster_column:
        columns.append((cluster_column, None))
    for column, width in (*columns, ("DETAIL", 48), ("COMMAND", 64)):
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=width)
    for job in jobs:
        detail = job.reason or ""
        if job.exit_code not in (None, 0) and "exit code" not in detail and not \
                detail.startswith("raised "):  # a Python job's exception says it all
            detail = f"{detail} (exit code {job.exit_code})".strip()
        on_cluster = str(job.id) in cluster_jobs  # it runs on without a driver
        cells = [str(job.id), _one_line(job.name),
                 Text(job.status.name, _STYLES.get(job.status, "")),
                 _elapsed(job, driver_alive or on_cluster), str(job.attempts)]
        if cluster_column:
            cells.append(job.native_id if on_cluster else "")
        table.add_row(*cells, _one_line(detail), _one_line(job.command))
    if not jobs:
        table.add_row("", "(no jobs)", *[""] * (len(columns) - 2), "", "")
    return table


def _one_line(text: str, limit: int = 300) -> str:
    """*text* on one line (newlines and tabs as spaces), at most *limit* characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def follow_output(run: Run, job_id: str, stream: str, follow: bool, out: IO[str]) -> None:
    """Print a job's output; with *follow*, keep printing until the job has ended.

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
    while True:
        job = run.job(job_id)
        if job.status is not JobStatus.RUNNING or job.live is None:
            printed += _write(_read_from(job.output_path(stream), printed), out, decoder)
            if job.status in TERMINAL or not follow:
                return
            time.sleep(POLL_S)  # another process writes the journal; nothing to wait on
            continue
        chunk = _read_from(job.output_path(stream), printed)
        time.sleep(POLL_S)  # longer than the journal's lag: time for it to say if the job ended
        later = run.job(job_id)
        if (later.status, later.live, later.attempts) == (job.status, job.live, job.attempts):
            printed += _write(chunk, out, decoder)
            if not follow:
                return


def _read_from(path: str | None, offset: int) -> bytes:
    if path is None:
        return b""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return b""


def _write(data: bytes, out: IO[str], decoder: codecs.IncrementalDecoder) -> int:
    if data:
        out.write(decoder.decode(data))
        out.flush()
    return len(data)


def wait_with_progress(run: Run, ids: Sequence[str], timeout: float | None,
                       show: bool) -> str:
    """Wait until the jobs (all of the run when *ids* is empty) have ended.

    Returns "done", "timeout", or "orphaned" when no process drives the run
    any more while jobs are unfinished.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    wanted = {str(job_id) for job_id in ids}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), disable=not show, transient=False) as progress:
        bar = progress.add_task("waiting", total=None)
        while True:
            jobs = [job for job in run.jobs(results=False) if not wanted or str(job.id) in wanted]
            done = sum(job.status in TERMINAL for job in jobs)
            failed = sum(job.status in (JobStatus.FAILED, JobStatus.TIMED_OUT) for job in jobs)
            progress.update(bar, total=len(jobs), completed=done,
                            description=f"{len(jobs) - done} to go, {failed} failed")
            if done == len(jobs):
                return "done"
            if deadline is not None and time.monotonic() > deadline:
                return "timeout"
            if run.owner is None and done < len(jobs):
                jobs = [job for job in run.jobs(results=False) if not wanted or str(job.id) in wanted]
                if any(job.status not in TERMINAL for job in jobs):
                    return "orphaned"
            time.sleep(POLL_S)  # the journal is written by another process


def _default_text(value: Any) -> str:
    if value in (None, (), {}):
        return "-"
    return str(value)


def options_table() -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("OPTION", "FLAG", "ACCEPTS", "UNITS", "DEFAULT", "LOCAL", "SLURM",
                   "WHAT IT DOES"):
        table.add_column(column, overflow="fold")
    flags = {"after": "--after ID", "cwd": "--workdir", "env": "(your shell's)"}
    for option in JOB_OPTIONS.values():
        flag = option.flag if option.cli else flags.get(option.name, "-")
        table.add_row(option.name, flag, option.accepts, option.units or "-",
                      _default_text(option.default), option.backends.get("local", "-"),
                      option.backends.get("slurm", "-"), option.help)
    return table


def profiles_view(config: Config, chosen: dict[str, dict[str, Any]] | None) -> Group | Text:
    profiles = chosen if chosen is not None else {name: dict(values)
                                                   for name, values in config.profiles.items()}
    sources = ", ".join(str(path) for path in config.sources) or "no config file found"
    if not profiles:
        searched = " or ".join(str(path) for path in config.searched)
        return Text(f"no profiles defined; add a [profiles.NAME] table to {searched}")
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("PROFILE")
    table.add_column("OPTIONS", overflow="fold")
    for name, values in profiles.items():
        table.add_row(name, ", ".join(f"{key}={value!r}" for key, value in values.items()))
    return Group(Text(f"from {sources}"), table)
