"""What the ``corral`` command shows: tables and notes (a job's output is
printed by :mod:`corral.cli.logs`, the progress bar of ``corral wait`` by
:mod:`corral.cli.waiting`).

Kept apart from :mod:`corral.cli.main` (argument parsing and errors): the tables
are functions of plain data (a :class:`~corral.journal.run.Run`, a list of
:class:`~corral.journal.stored.StoredJob`, the option registry, a config); the
run's header looks at its owner's process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, Group
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

from corral.config_files import where_to_write
from corral.journal.stored import DRIVER_GONE
from corral.safe_repr import printable
from corral.status import TERMINAL, JobStatus
from corral.units import format_span

if TYPE_CHECKING:
    from corral.config import Config
    from corral.journal.run import Run
    from corral.journal.stored import StoredJob
    from corral.cli.sent_without_driver import SentRequest

__all__ = ["run_header", "status_table", "hidden_note", "unlisted_note", "paused_reason",
           "earlier_tries", "profiles_view"]


_STYLES = {
    JobStatus.COMPLETED: "green", JobStatus.FAILED: "bold red", JobStatus.TIMED_OUT: "bold red",
    JobStatus.CANCELLED: "yellow", JobStatus.RUNNING: "cyan", JobStatus.SUBMITTED: "cyan",
}


def run_header(run: Run) -> Text:
    owner = run.owner
    driver = "no driver running" if owner is None else (
        f"driven by {owner.get('kind', '?')} pid {owner.get('pid', '?')}")
    # A script's next run starts unpaused whatever the last one left: with no
    # driver, only a daemon's run (whose next daemon starts paused) is PAUSED.
    paused = ", PAUSED" if run.paused and (
        owner is not None or run.meta().get("origin") == "daemon") else ""
    stopped = ""
    if owner is not None:
        from corral.control.server import stopped_driver

        pid = stopped_driver(run.path, traced=False)  # (one look: see there)
        if pid is not None:
            stopped = (f"; the driver is STOPPED (Ctrl-Z or SIGSTOP): it starts no job and "
                       f"answers no command until it runs again (kill -CONT {pid})")
    stopped_journal = run.journal_stopped()
    if stopped_journal is not None:  # (what follows may be stale: said before it is read)
        ended = "" if owner is None else "; corral stop ends its driver"
        stopped += f"; its JOURNAL STOPPED: {stopped_journal}{ended}"
    return Text(f"run {run.path}: {driver}{paused}{stopped}")


def _elapsed(job: StoredJob, driver_alive: bool) -> str:
    if job.started is None:
        return ""
    if job.ended is None and not driver_alive:
        return "?"  # its driver is gone: it is not running any more, whatever the journal says
    end = job.ended if job.ended is not None else time.time()
    return format_span(max(0.0, end - job.started))


#: What a QUEUED job of a paused run waits for, whatever else it lacks.
PAUSED_REASON = "paused: starts after corral resume"


#: What an unfinished job of a run whose driver is gone shows: the journal
#: still says RUNNING or QUEUED, but nothing will run it until a driver opens
#: the run again (which settles it: CANCELLED, or COMPLETED from the outcome log).
ORPHANED_REASON = "its driver is gone: nothing runs it now"
#: What an unfinished job of a cluster scheduler shows when no driver follows it:
#: its state is the journal's last word, and the cluster may have moved on since.
UNFOLLOWED_REASON = "as last seen (no driver)"


def paused_reason(job: StoredJob) -> str:
    """Why a QUEUED job of a paused run waits: the pause, and, for a retry, what
    ended its attempt before (review: "retry 1 of 2 after: ..." was hidden)."""
    if job.attempts and job.reason:
        return f"{PAUSED_REASON}; {job.reason}"
    return PAUSED_REASON


#: The statuses from which a try goes back to the queue (and SUBMITTED, for a
#: retry of a cluster's job that ended between two polls; otherwise a job
#: handed ahead and given back unstarted: no try).
_TRIED = frozenset(status.value for status in (
    JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMED_OUT))
#: The statuses a try ended with before on_finish asked for it to run again.
_ENDED = frozenset(status.value for status in TERMINAL)
#: The most earlier tries :func:`earlier_tries` lists.
_TRIES_SHOWN = 20


def earlier_tries(run: Run, job: StoredJob) -> list[str]:
    """How each of *job*'s tries that went back to the queue ended, as its
    journal's state changes say (``"  12:03:55 retry 1 of 2 after: raised
    ..."``, at local clock time): by a retry, with its reason, by on_finish,
    with the status the try had ended with, or by its driver's death."""
    lines = []
    events = run.events(job.id)
    for number, (_, at, old, new, reason) in enumerate(events):
        if not isinstance(reason, str) or not reason:
            continue
        # A try its driver's death ended, run again by the next session (chaos
        # review: TRIES 2, and no word of the first): not its last event.
        ended_with_driver = (new == JobStatus.CANCELLED.value and old in _TRIED
                             and reason.startswith(DRIVER_GONE) and number + 1 < len(events))
        back_to_queue = new == JobStatus.QUEUED.value and (
            old in _TRIED or (old == JobStatus.SUBMITTED.value and reason.startswith("retry")))
        if not (back_to_queue or ended_with_driver):
            continue
        try:  # (a damaged row's time: said so, not a traceback: re-attack review)
            when = time.strftime("%H:%M:%S", time.localtime(at))
        except (TypeError, ValueError, OverflowError, OSError):
            when = "??:??:??"
        ended = f"{old.upper()}; " if old in _ENDED else ""  # (what on_finish was shown)
        lines.append(f"  {when} {_one_line(ended + reason)}")
    if len(lines) > _TRIES_SHOWN:  # (1,000 retries: their first and last few)
        left_out = len(lines) - _TRIES_SHOWN
        lines[_TRIES_SHOWN // 2:-_TRIES_SHOWN // 2] = [f"  ... {left_out} more ..."]
    return lines


def unknown_backend_reason(backend: str) -> str:
    """The DETAIL of an unfinished job of a backend not installed where status runs."""
    return f"may still run on {backend!r} (unknown here)"


def _detail(job: StoredJob, paused: bool, orphaned: bool = False,
            unknown_backend: str | None = None, unfollowed: bool = False) -> str:
    """The DETAIL cell: why the job ended as it did, or why it still waits."""
    if unknown_backend is not None and job.status not in TERMINAL:
        return unknown_backend_reason(unknown_backend)
    if orphaned and job.status not in TERMINAL:
        return ORPHANED_REASON
    if unfollowed and job.status not in TERMINAL:
        return UNFOLLOWED_REASON
    if paused and job.status is JobStatus.QUEUED:
        return paused_reason(job)
    detail = job.reason or ""
    # (Only an ended job's: a retry's waiting reason had its last try's exit code
    # beside it, read as the wait's: cold review.)
    if job.status in TERMINAL and job.exit_code not in (None, 0) and (
            "exit code" not in detail and not detail.startswith("raised ")):  # (it says it all)
        detail = f"{detail} (exit code {job.exit_code})".strip()
    return detail


def status_table(jobs: Sequence[StoredJob], driver_alive: bool = True,
                 cluster_jobs: Mapping[str, str] | None = None, paused: bool = False,
                 width: int = 160, unknown_backend_jobs: Mapping[str, str] | None = None,
                 sent_without_driver: Mapping[str, SentRequest] | None = None,
                 reruns: Mapping[str, str] | None = None) -> Listing:
    """The jobs as a table fitting *width* characters; *cluster_jobs* (``{id:
    backend}``, see :meth:`corral.Run.cluster_jobs`) adds a column with their
    cluster job ids; *paused* (the run is) is what its QUEUED jobs wait for;
    *unknown_backend_jobs* (``{id: backend}``) were handed to backends not
    installed here; *sent_without_driver*, what ``corral cancel``/``pause``
    sent to a cluster job while no driver ran; *reruns* (``{id: id}``), which
    job ``corral rerun`` ran again as which (cold review: nothing said it)."""
    reruns = reruns or {}
    rerun_of = {new: old for old, new in reruns.items()}
    cluster_jobs = cluster_jobs or {}
    sent_without_driver = sent_without_driver or {}
    unknown_backend_jobs = unknown_backend_jobs or {}
    # (jobs of a backend not registered here, a site's scheduler whose table this
    # directory does not see, keep their ids too: a sysadmin's review)
    shown_ids = {**unknown_backend_jobs, **cluster_jobs}
    cluster_column = _native_id_column(shown_ids.values()) if shown_ids else None
    rows: list[list[Any]] = []
    for job in jobs:
        on_cluster = str(job.id) in cluster_jobs  # it runs on without a driver
        detail = _detail(job, paused, orphaned=not driver_alive and not on_cluster,
                         unknown_backend=unknown_backend_jobs.get(str(job.id)),
                         unfollowed=not driver_alive and on_cluster)
        if detail == UNFOLLOWED_REASON and str(job.id) in sent_without_driver:
            detail = sent_without_driver[str(job.id)].describe()  # (the cluster may lag it)
        detail = "; ".join(filter(None, (
            f"rerun of job {rerun_of[str(job.id)]}" if str(job.id) in rerun_of else "", detail,
            f"run again as job {reruns[str(job.id)]}" if str(job.id) in reruns else "")))
        cells = [_one_line(str(job.id)), _one_line(job.name),
                 Text(job.status.name, _STYLES.get(job.status, "")),
                 _elapsed(job, driver_alive or on_cluster), str(job.attempts)]
        if cluster_column:
            cells.append(job.native_id or "" if str(job.id) in shown_ids else "")
        rows.append([*cells, _one_line(detail), _one_line(job.command)])
    names = ["ID", "NAME", "STATUS", "TIME", "TRIES"] + ([cluster_column] if cluster_column else [])
    names += ["DETAIL", "COMMAND"]
    if not jobs:
        rows.append(["", "(no jobs)", *[""] * (len(names) - 2)])
    return Listing(names, rows, _column_widths(names, rows, width))


class Listing:
    """A table of one line per row, columns of fixed widths, cut with "…":
    what ``corral status`` prints, as rich's ``Table(box=None, pad_edge=False)``
    would print it, line by line.

    rich's Table measures and lays out every cell of every row first: ``corral
    status --all`` on 50,000 jobs took 22 s, and printed nothing until then.
    On a terminal too narrow for the columns' least widths, rich's Table is
    used after all: it squeezes every column, where lines would be cropped.
    """

    def __init__(self, names: list[str], rows: list[list[Any]], widths: dict[str, int]) -> None:
        self.names = names
        self.rows = rows
        self.widths = [widths[name] for name in names]

    def print(self, console: Console) -> None:
        """Print the table on *console*; where it shows no colour (a file, a
        pipe) and the table fits, its lines go straight to the console's file:
        rich would measure every character of every line again to crop it."""
        if (console.no_color or console.color_system is None) and self._fits(console.width):
            console.file.write("".join([f"{line}\n" for line in self.lines()]))
        else:
            console.print(self)

    def _fits(self, width: int) -> bool:
        return sum(self.widths) + _COLUMN_GAP * (len(self.widths) - 1) <= width

    def __rich_console__(self, console: Console, options: ConsoleOptions
                         ) -> Iterator[Segment | Table]:
        if not self._fits(options.max_width):
            yield self._table()
            return
        if console.no_color or console.color_system is None:  # a file, a pipe: text alone
            yield from (Segment(line + "\n") for line in self.lines())
            return
        bold = Style(bold=True)
        yield from self._line(self.names, bold)
        for row in self.rows:
            yield from self._line(row, None)

    def lines(self) -> Iterator[str]:
        """The header and rows as plain lines, each column padded as rich pads
        it: a row is a few string operations, where rich renders a segment per
        cell (``status --all`` of 20,000 jobs: 3.6 s, most of it there)."""
        gap = " " * _COLUMN_GAP
        for cells in (self.names, *self.rows):
            yield gap.join([_fitted(cell.plain if isinstance(cell, Text) else cell, width)
                            for cell, width in zip(cells, self.widths, strict=True)])

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name, width in zip(self.names, self.widths, strict=True):
            table.add_column(name, no_wrap=True, overflow="ellipsis", width=width)
        for row in self.rows:
            table.add_row(*row)
        return table

    def _line(self, cells: list[Any], header: Style | None) -> Iterator[Segment]:
        """One row for a terminal: the plain cells between two styled ones
        go as one segment (rich's cost is per segment)."""
        plain: list[str] = []
        last = len(cells) - 1
        for index, (cell, width) in enumerate(zip(cells, self.widths, strict=True)):
            style: Style | None
            if isinstance(cell, Text):
                text = cell.plain
                style = Style.parse(cell.style) if isinstance(cell.style, str) else cell.style
            else:
                text, style = cell, header
            gap = "" if index == last else " " * _COLUMN_GAP
            if style:
                if plain:
                    yield Segment("".join(plain))
                    plain = []
                yield Segment(_fitted(text, width), style)
                if gap and header:  # (rich gives a header's gap the header's style)
                    yield from (Segment(" ", header),) * _COLUMN_GAP
                elif gap:
                    plain.append(gap)
            else:
                plain.append(_fitted(text, width) + gap)
        if plain:
            yield Segment("".join(plain))
        yield Segment.line()


def _fitted(text: str, width: int) -> str:
    """*text* padded or cut (with "…") to *width* cells; ASCII, as ids, names
    and statuses mostly are, without asking rich how wide each character is."""
    if text.isascii():
        return text.ljust(width) if len(text) <= width else text[:width - 1] + "…"
    if cell_len(text) > width:
        text = set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width)


def _cells(text: str) -> int:
    """How many terminal cells *text* takes."""
    return len(text) if text.isascii() else cell_len(text)


def _native_id_column(backends: Iterable[str]) -> str:
    """The title of the column of native job ids: the backend's own word for
    them ("SLURM ID"), or a plain one for a backend not registered here."""
    from corral.backends import backend_info  # (the registry: only a cluster's run needs it)

    name = sorted(set(backends))[0]
    try:
        return backend_info(name).native_id_column
    except ValueError:  # a run made where a site registered a backend this process lacks
        return f"{name.upper()} ID"


#: Columns that give way on a narrow terminal, in the order they do, and the
#: least each keeps; every other column keeps its whole content.
_SHRINKING = {"COMMAND": 4, "DETAIL": 4, "NAME": 10}
#: The most each of them takes on a wide one: one 5,000-character command must
#: not push the other columns off the screen.
_CAPS = {"NAME": 24, "DETAIL": 48, "COMMAND": 64}
_COLUMN_GAP = 2


def _column_widths(names: list[str], rows: list[list], width: int) -> dict[str, int]:
    """Widths that keep ID, STATUS, TIME and TRIES whole within *width*.

    (rich's own collapsing squeezes every column in proportion, so at 80
    columns the ids and statuses were the first to vanish.)
    """
    wanted = {}
    for index, column in enumerate(names):
        widest = max([_cells(column)] + [_cells(str(row[index])) for row in rows])
        wanted[column] = min(widest, _CAPS.get(column, widest))
    excess = sum(wanted.values()) + _COLUMN_GAP * (len(names) - 1) - width
    for column, least in _SHRINKING.items():
        if excess <= 0:
            break
        give = min(excess, max(0, wanted[column] - least))
        wanted[column] -= give
        excess -= give
    return wanted


def hidden_note(count: int, not_completed: Mapping[JobStatus, int] | None = None) -> Text:
    """The line over a status table that left out older finished jobs; it
    counts those that did not complete (*not_completed*), which must not
    pass unseen."""
    jobs = "job" if count == 1 else "jobs"
    failed = ", ".join(f"{number:,} {status.name}" for status, number in
                       (not_completed or {}).items() if number)
    of_them = f", of them {failed}" if failed else ""
    return Text(f"({count:,} older finished {jobs} hidden{of_them}; --all shows them)")


def unlisted_note(count: int, counts: Mapping[JobStatus, int]) -> Text:
    """The line over a status table that lists only the first unfinished jobs."""
    jobs = "job" if count == 1 else "jobs"
    unfinished = ", ".join(f"{counts[status]:,} {status.name}" for status in JobStatus
                           if not status.is_terminal and counts.get(status))
    return Text(f"({count:,} more unfinished {jobs} not listed; --all lists them; "
                f"unfinished: {unfinished})")


def _one_line(text: str, limit: int = 300) -> str:
    """*text* on one line (newlines and tabs as spaces), at most *limit* characters."""
    if text.isascii() and text.isprintable() and "  " not in text and text.strip() == text:
        flat = text  # (most names and commands: already one line of printable characters)
    else:
        flat = printable(" ".join(text.split()))
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def profiles_view(config: Config, chosen: dict[str, dict[str, Any]] | None) -> Group | Text:
    profiles = chosen if chosen is not None else {name: dict(values)
                                                   for name, values in config.profiles.items()}
    sources = ", ".join(str(path) for path in config.sources) or "no config file found"
    if not profiles:
        return Text("no profiles defined; add a [profiles.NAME] table to "
                    + where_to_write(config.searched))
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("PROFILE")
    table.add_column("OPTIONS", overflow="fold")
    for name, values in profiles.items():
        table.add_row(name, ", ".join(f"{key}={value!r}" for key, value in values.items()))
    return Group(Text(f"from {sources}"), table)
