"""The timeline as one SVG picture, for a paper or a ticket (``--format svg``).

Lanes and bars as the HTML page draws them, a time axis, and a legend; job
names as ``<title>`` tooltips. Plain SVG 1.1 with no script or styles from
elsewhere, so any viewer or editor opens it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from xml.sax.saxutils import escape

from corral.report.model import RunView
from corral.report.timeline import Outcome, ShownTime
from corral.safe_repr import bidi_shown

__all__ = ["render_svg"]

COLOURS = {Outcome.COMPLETED: "#3b9a5d", Outcome.FAILED: "#d4423e",
           Outcome.TIMED_OUT: "#e38b0c", Outcome.CANCELLED: "#8a9199",
           Outcome.RETRIED: "#a35cc9", Outcome.REQUEUED: "#5b8ed6",
           Outcome.RUNNING: "#1f6fe5", Outcome.UNKNOWN: "#a3946a"}
LABELS = {Outcome.COMPLETED: "completed", Outcome.FAILED: "failed",
          Outcome.TIMED_OUT: "timed out", Outcome.CANCELLED: "cancelled",
          Outcome.RETRIED: "failed, retried", Outcome.REQUEUED: "given back",
          Outcome.RUNNING: "running", Outcome.UNKNOWN: "no driver: end unknown"}
WIDTH = 1000
GUTTER = 60
TOP = 44
#: The most height the lanes take (past it, they share it).
LANES_HEIGHT = 600
#: About how wide a character of the 11 px labels is.
_CHAR_WIDTH = 6.2
#: Painted in this order, the failures last: see _bars.
_DRAW_ORDER = (Outcome.COMPLETED, Outcome.RUNNING, Outcome.UNKNOWN, Outcome.REQUEUED,
               Outcome.RETRIED, Outcome.CANCELLED, Outcome.TIMED_OUT, Outcome.FAILED)
#: Characters XML 1.0 does not allow anywhere: a job name may hold them (a terminal
#: colour code), an SVG may not.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
#: The most axis ticks drawn, whatever the times (a damaged clock).
_MOST_TICKS = 40
_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120,
          300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)


def _step(span: float) -> float:
    wanted = span / 10
    step = next((step for step in _STEPS if step >= wanted), _STEPS[-1])
    return max(step, span / _MOST_TICKS)


def _text(value: str) -> str:
    """*value* as SVG text: escaped, and without what XML cannot hold."""
    return escape(bidi_shown(_NOT_XML.sub("\ufffd", value)))


def _label(seconds: float, step: float) -> str:
    """A tick's offset from the start, in its unit where the *step* is a tenth of
    that unit or more ("+2.5h"), else in hours and minutes ("+24h 2min", not "+24.0333h")."""
    if seconds == 0:
        return "0"
    if seconds < 120:
        return f"+{seconds:g}s"
    unit, name = (60, "min") if seconds < 7200 else (3600, "h")
    if abs(step * 10 / unit - round(step * 10 / unit)) < 1e-6:
        return f"+{seconds / unit:g}{name}"
    whole = round(seconds)
    hours, minutes, rest = whole // 3600, whole % 3600 // 60, seconds - whole // 60 * 60
    return (f"+{hours}h " if hours else "+") + f"{minutes}min" + (f" {rest:g}s" if rest else "")


def _duration(seconds: float) -> str:
    """A length of time as the page says it (a run of days in hours, not 259200.0 s)."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _lane_height(lanes: int) -> float:
    """Whole pixels while the lanes fit in :data:`LANES_HEIGHT` at 2 px each (crisp);
    past that they share it (review: 20,000 lanes drew a picture 40,000 px tall)."""
    if lanes * 2 <= LANES_HEIGHT:
        return max(2, min(18, LANES_HEIGHT // lanes))
    return LANES_HEIGHT / lanes


def render_svg(view: RunView) -> str:
    """The timeline of *view* as an SVG document."""
    lanes = max(1, view.lanes)
    lane_height = _lane_height(lanes)
    bottom = TOP + lanes * lane_height
    height = math.ceil(bottom + 30)
    origin = view.summary.first if view.summary.first is not None else view.read_at
    shown = ShownTime(view.breaks, origin)
    last = max([(a.end if a.end is not None else view.read_at) - origin for a in view.attempts],
               default=1.0) or 1.0
    scale = (WIDTH - GUTTER - 10) / (shown(last) or 1.0)

    def x(seconds: float) -> float:
        return round(GUTTER + shown(seconds) * scale, 2)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
           '<defs><pattern id="break" width="6" height="6" patternUnits="userSpaceOnUse">'
           '<rect width="6" height="6" fill="#f4f5f7"/><path d="M0 6L6 0" stroke="#c9ced4"/>'
           '</pattern></defs>',
           f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
           f'<text x="{GUTTER}" y="14" font-size="13" font-weight="bold">'
           f'{_text(view.path.name)}: {view.summary.jobs} jobs, '
           f'{view.summary.attempts} attempts, {_duration(view.summary.wall_seconds)}</text>']
    out += _legend(view)
    taken = _breaks(out, view, origin, x, bottom)
    out += _ticks(shown.segments(last), x, bottom, taken)
    every = max(1, math.ceil(12 / lane_height))  # a label every this many lanes
    for lane in range(0, lanes, every):  # (past 999 lanes, numbers alone fit the gutter)
        name = f"slot {lane + 1}" if lane == 0 or lanes < 1000 else str(lane + 1)
        out.append(f'<text x="{GUTTER - 6}" y="{round(TOP + (lane + 0.5) * lane_height + 4, 2)}" '
                   f'text-anchor="end" fill="#66707a">{name}</text>')
    out += _bars(view, origin, x, lane_height)
    out.append("</svg>")
    return "\n".join(out)


def _legend(view: RunView) -> list[str]:
    out = []
    legend_x = float(GUTTER)
    present = {attempt.outcome for attempt in view.attempts}
    for outcome in (outcome for outcome in Outcome.ALL if outcome in present):
        out.append(f'<rect x="{legend_x}" y="20" width="10" height="10" '
                   f'fill="{COLOURS[outcome]}"/><text x="{legend_x + 13}" y="29">'
                   f'{LABELS[outcome]}</text>')
        legend_x += 24 + 6.2 * len(LABELS[outcome])
    return out


def _breaks(out: list[str], view: RunView, origin: float, x: Callable[[float], float],
            bottom: float) -> list[tuple[float, float]]:
    """Draw each break as a hatched band, titled with how long it lasted and why
    nothing ran; return its label's extent, which the ticks' labels keep clear of."""
    taken = []
    for item in view.breaks:
        left, right = x(item.start - origin), x(item.end - origin)
        length = _duration(item.end - item.start)
        why = "with no driver" if item.undriven >= (item.end - item.start) / 2 else \
            "with nothing running"
        out.append(f'<rect x="{left}" y="{TOP - 4}" width="{round(right - left, 2)}" '
                   f'height="{round(bottom - TOP + 4, 2)}" fill="url(#break)">'
                   f'<title>{length} {why}, drawn narrow</title></rect>')
        label = f"\u22ef {length} \u22ef"
        width = _CHAR_WIDTH * len(label)
        centre = (left + right) / 2
        if centre - width / 2 >= GUTTER and centre + width / 2 <= WIDTH:
            out.append(f'<text x="{round(centre, 2)}" y="{round(bottom + 14, 2)}" '
                       f'text-anchor="middle" fill="#66707a">{label}</text>')
            taken.append((centre - width / 2, centre + width / 2))
    return taken


def _ticks(segments: list[tuple[float, float]], x: Callable[[float], float], bottom: float,
           taken: list[tuple[float, float]]) -> list[str]:
    """Grid lines and labels in each stretch drawn to scale; a label that would
    overlap another or run off the picture is left out (review: "+72h" was cut
    to "+`" at the right edge)."""
    out = []
    step = _step(sum(end - start for start, end in segments))
    for start, end in segments:
        tick = math.ceil(round(start / step, 6)) * step
        while tick <= end + 1e-9:
            at = x(tick)
            out.append(f'<line x1="{at}" y1="{TOP - 4}" x2="{at}" y2="{bottom}" '
                       f'stroke="#e6e9ec"/>')
            label = _label(round(tick, 6), step)
            left, right = at + 2, at + 2 + _CHAR_WIDTH * len(label)
            if right <= WIDTH and not any(left < z + 6 and right > a - 6 for a, z in taken):
                out.append(f'<text x="{round(left, 2)}" y="{round(bottom + 14, 2)}" '
                           f'fill="#66707a">{label}</text>')
                taken.append((left, right))
            tick += step
    return out


def _bars(view: RunView, origin: float, x: Callable[[float], float],
          lane_height: float) -> list[str]:
    """A rect per attempt, the failures last (on top): among many short bars,
    each widened to be seen, one must not hide a failure."""
    names = {str(job.id): job.name for job in view.jobs}
    out = []
    bar_height = max(1.0, lane_height - 2) if lane_height >= 2 else 1.0
    inset = 1 if lane_height >= 2 else 0
    for attempt in sorted(view.attempts, key=lambda a: _DRAW_ORDER.index(a.outcome)):
        start = attempt.start - origin
        stop = (attempt.end if attempt.end is not None else view.read_at) - origin
        title = _text(f"job {attempt.job} {names.get(attempt.job, '')[:200]} #{attempt.number}")
        # A short bar still shows, as on the page: a failure 3 px, others a whole pixel
        # (cold review: 0.5 px, unseen; review: 0.5 px read as nothing in a long run).
        least = 1 if attempt.outcome in (Outcome.COMPLETED, Outcome.RUNNING) else 3
        out.append(f'<rect x="{x(start)}" y="{round(TOP + attempt.lane * lane_height + inset, 2)}" '
                   f'width="{max(least, round(x(stop) - x(start), 2))}" '
                   f'height="{round(bar_height, 2)}" fill="{COLOURS[attempt.outcome]}">'
                   f'<title>{title}</title></rect>')
    return out
