"""The timeline as one SVG picture, for a paper or a ticket (``--format svg``).

Lanes and bars as the HTML page draws them, a time axis, and a legend; job
names as ``<title>`` tooltips. Plain SVG 1.1 with no script or styles from
elsewhere, so any viewer or editor opens it.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from corral.report.model import RunView
from corral.report.timeline import Outcome
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


def _label(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds < 120:
        return f"+{seconds:g}s"
    if seconds < 7200:
        return f"+{seconds / 60:g}min"
    return f"+{seconds / 3600:g}h"


def render_svg(view: RunView) -> str:
    """The timeline of *view* as an SVG document."""
    lanes = max(1, view.lanes)
    lane_height = max(2, min(18, 600 // lanes))  # whole pixels: lanes stay crisp
    height = TOP + lanes * lane_height + 30
    origin = view.summary.first if view.summary.first is not None else view.read_at
    end = max([(a.end if a.end is not None else view.read_at) - origin for a in view.attempts],
              default=1.0) or 1.0
    scale = (WIDTH - GUTTER - 10) / end

    def x(seconds: float) -> float:
        return round(GUTTER + seconds * scale, 2)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
           f'<text x="{GUTTER}" y="14" font-size="13" font-weight="bold">'
           f'{_text(view.path.name)}: {view.summary.jobs} jobs, '
           f'{view.summary.attempts} attempts, {view.summary.wall_seconds:.1f} s</text>']
    legend_x = float(GUTTER)
    present = {attempt.outcome for attempt in view.attempts}
    for outcome in (outcome for outcome in Outcome.ALL if outcome in present):
        out.append(f'<rect x="{legend_x}" y="20" width="10" height="10" '
                   f'fill="{COLOURS[outcome]}"/><text x="{legend_x + 13}" y="29">'
                   f'{LABELS[outcome]}</text>')
        legend_x += 24 + 6.2 * len(LABELS[outcome])
    step = _step(end)
    tick = 0.0
    while tick <= end + 1e-9:
        out.append(f'<line x1="{x(tick)}" y1="{TOP - 4}" x2="{x(tick)}" '
                   f'y2="{TOP + lanes * lane_height}" stroke="#e6e9ec"/>'
                   f'<text x="{x(tick) + 2}" y="{TOP + lanes * lane_height + 14}" '
                   f'fill="#66707a">{_label(round(tick, 6))}</text>')
        tick += step
    every = max(1, -(-12 // lane_height))  # a label every this many lanes
    for lane in range(0, lanes, every):
        out.append(f'<text x="{GUTTER - 6}" y="{TOP + lane * lane_height + lane_height / 2 + 4}" '
                   f'text-anchor="end" fill="#66707a">slot {lane + 1}</text>')
    names = {str(job.id): job.name for job in view.jobs}
    for attempt in view.attempts:
        start = attempt.start - origin
        stop = (attempt.end if attempt.end is not None else view.read_at) - origin
        title = _text(f"job {attempt.job} {names.get(attempt.job, '')[:200]} #{attempt.number}")
        # A short failure still shows, as on the page (cold review: 0.5 px, unseen).
        least = 0.5 if attempt.outcome in (Outcome.COMPLETED, Outcome.RUNNING) else 3
        out.append(f'<rect x="{x(start)}" y="{TOP + attempt.lane * lane_height + 1}" '
                   f'width="{max(least, round((stop - start) * scale, 2))}" '
                   f'height="{max(1, lane_height - 2)}" fill="{COLOURS[attempt.outcome]}">'
                   f'<title>{title}</title></rect>')
    out.append("</svg>")
    return "\n".join(out)
