"""Parse the units people write for memory and time, once, at the edge.

Everything inside corral works in megabytes (int) and seconds (float). These
parsers turn what a user typed ("4G", "1.5GB", "90m", "1:30:00", "2-00:00:00")
into those numbers and refuse anything else with a message that names the field
and the forms it accepts. Memory prefixes are binary (1G = 1024M), as Slurm and
most batch systems read them.

This module imports nothing of corral's but :mod:`corral.safe_repr`: it is vocabulary.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from corral.safe_repr import safe_repr as _shown

__all__ = [
    "FEWEST_BARE_MEGABYTES",
    "MEMORY_FORMS",
    "DURATION_FORMS",
    "DURATION_TEXT_FORMS",
    "parse_memory",
    "parse_duration",
    "format_memory",
    "format_duration",
    "format_span",
]

#: The fewest megabytes a memory without a unit may be: below, gigabytes were
#: surely meant (``memory=4``: PBS and fyrd habits), and four megabytes are no
#: job's need. What corral keeps as an int of megabytes is said with its unit
#: (``"4M"``) when it is passed on as an option.
FEWEST_BARE_MEGABYTES = 64
#: A walltime given as a bare number below this many seconds is refused: no
#: cluster job is asked for under a minute, so hours or minutes were meant.
FEWEST_BARE_WALLTIME_S = 60
MEMORY_FORMS = (f"an int of megabytes ({FEWEST_BARE_MEGABYTES} or more) or a string such as "
                "'512M', '4G', '1.5GB', '2T'")
_DURATION_TEXTS = "'90s', '30m', '2h', '1h30m', '1:30:00', '30:00', '2-00:00:00'"
DURATION_FORMS = f"a number of seconds or a string such as {_DURATION_TEXTS}"
#: The same for a command line, where every value is text and a bare number
#: is refused: Slurm's --time reads one as minutes, corral's API as seconds.
DURATION_TEXT_FORMS = f"a duration with its unit or a clock, such as {_DURATION_TEXTS}"

_MAX_MEGABYTES = 1024.0**4  # 1 EB: anything larger is a typo, not a request
_MAX_SECONDS = 100 * 365 * 86400.0
# "4G", "4GB", "4GiB" and Kubernetes' "4Gi": all binary, as Slurm reads them.
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgtp])(ib?|b)?|(b)?)\s*$",
                     re.IGNORECASE)
_MB_PER_PREFIX = {"": 1.0, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0**2, "p": 1024.0**3}

_UNIT_SECONDS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}
_UNIT_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)", re.IGNORECASE)
_EXPONENT = re.compile(r"\d\s*e[+-]?\d", re.IGNORECASE)
_UNIT_WHOLE = re.compile(r"^(?:\s*(?:\d+(?:\.\d*)?|\.\d+)\s*[a-z]+)+\s*$", re.IGNORECASE)
# Slurm's clock forms: [D-]HH:MM:SS, [D-]HH:MM (only after a day), D-HH, MM:SS; the
# seconds may have a fraction.
_CLOCK = re.compile(r"^\s*(?:(\d+)-)?(\d+(?::\d+){0,2})(\.\d*)?\s*$")


def parse_memory(value: object, field: str = "memory") -> int:
    """Return *value* as a whole number of megabytes (rounded up).

    Raises:
        ValueError: the value is not positive or not in one of ``MEMORY_FORMS``;
            the message names *field*.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{field}={_shown(value)} is not a memory size; use {MEMORY_FORMS}")
    if isinstance(value, (int, float)):
        try:
            megabytes = float(value)
        except OverflowError:
            megabytes = math.inf
        unitless = True
    else:
        match = _MEMORY.match(value)
        if match is None:
            raise ValueError(f"{field}={_shown(value)} is not a memory size; use {MEMORY_FORMS}")
        number, prefix, _, in_bytes = match.groups()
        unitless = not prefix and not in_bytes
        if in_bytes:
            megabytes = float(number) / (1024 * 1024)  # plain bytes, e.g. "1048576B"
        else:
            megabytes = float(number) * _MB_PER_PREFIX[(prefix or "").lower()]
    if not math.isfinite(megabytes) or megabytes <= 0 or megabytes > _MAX_MEGABYTES:
        raise ValueError(f"{field}={_shown(value)} must be a positive memory size below 1 EB; "
                         f"use {MEMORY_FORMS}")
    if unitless and megabytes < FEWEST_BARE_MEGABYTES:
        # A cluster would kill the job. The text "4" first, then the int 4 too,
        # which ran as 4 MB (cold reviews); "4M" says megabytes.
        raise ValueError(f"{field}={_shown(value)} has no unit, and {megabytes:g} megabytes "
                         f"are so little that gigabytes are likely meant: write "
                         f"'{megabytes:g}G' (or '{megabytes:g}M' if megabytes are meant)")
    if unitless and megabytes != math.floor(megabytes):  # 1.5 is surely not 1.5 MB
        meant = f"such as '{megabytes:g}G', " if megabytes < 64 else ""
        raise ValueError(f"{field}={_shown(value)} is not a whole number of megabytes; give "
                         f"its unit, {meant}or use {MEMORY_FORMS}")
    return math.ceil(megabytes)


def parse_duration(value: object, field: str = "walltime", *, zero: bool = False) -> float:
    """Return *value* as a positive number of seconds (*zero*: or 0, for a
    wait that looks once, where a job's limit of 0 would be a mistake).

    A bare number in a string ("30") is refused as ambiguous: Slurm reads it as
    minutes while an int here means seconds, and guessing wrong kills jobs.

    Raises:
        ValueError: the value is not positive or not in one of ``DURATION_FORMS``.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{field}={_shown(value)} is not a duration; use {DURATION_FORMS}")
    elif isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        seconds = _parse_duration_text(value, field)
    if zero and seconds == 0:
        return 0.0
    if not math.isfinite(seconds) or seconds <= 0 or seconds > _MAX_SECONDS:
        which = "duration from 0 to" if zero else "positive duration of at most"
        raise ValueError(f"{field}={_shown(value)} must be a {which} 100 years; "
                         f"use {DURATION_FORMS}")
    return seconds


def _parse_duration_text(text: str, field: str) -> float:
    """Seconds in *text*, possibly inf (refused by the caller) but never an
    OverflowError: a clock of 400 digits is a typo to report, not a crash."""
    try:
        return _duration_text_seconds(text, field)
    except (OverflowError, _DigitsLimit):
        return math.inf


class _DigitsLimit(Exception):
    """A number too long for ``int()`` (CPython refuses over 4,300 digits)."""


def _whole(digits: str) -> int:
    if len(digits) > 100:  # far past 100 years in any unit
        raise _DigitsLimit(digits)
    return int(digits)


def _duration_text_seconds(text: str, field: str) -> float:
    if _EXPONENT.search(text):  # (else "1e9h" is said to have the unknown unit 'e')
        raise ValueError(f"{field}={_shown(text)}: a number with an exponent is not taken; write "
                         f"it out ({DURATION_FORMS})")
    if _UNIT_WHOLE.match(text):
        total = 0.0
        for number, unit in _UNIT_PART.findall(text):
            factor = _UNIT_SECONDS.get(unit.lower())
            if factor is None:
                raise ValueError(
                    f"{field}={_shown(text)}: unknown time unit {_shown(unit)}; use s, m, h or d "
                    f"({DURATION_FORMS})"
                )
            total += float(number) * factor
        return total
    match = _CLOCK.match(text)
    if match is None:
        raise ValueError(f"{field}={_shown(text)} is not a duration; use {DURATION_FORMS}")
    days, clock, fraction = match.groups()
    parts = [_whole(part) for part in clock.split(":")]
    if days is None and len(parts) == 1:
        number = text.strip() if len(text) <= 40 else "N"  # only digits here
        spans = (f" ({format_span(parts[0])})", f" ({format_span(parts[0] * 60)})") if (
            parts[0] >= 60 and len(text) <= 40) else ("", "")  # (cold review: '3600m'
        # was offered for an hour with no word that it is 60 hours)
        raise ValueError(f"{field}={_shown(text)} is ambiguous: write '{number}s' for seconds"
                         f"{spans[0]} or '{number}m' for minutes{spans[1]}")
    # D-HH, D-HH:MM, [D-]HH:MM:SS, or MM:SS
    names = _CLOCK_FIELDS[:len(parts)] if days is not None or len(parts) == 3 else _CLOCK_FIELDS[1:]
    if fraction and names[-1] != "seconds":
        raise ValueError(f"{field}={_shown(text)}: only the seconds of a clock may have a "
                         "fraction, as in '1:30:00.5'")
    total = 0.0 if days is None else _whole(days) * 86400.0
    for position, (value, name) in enumerate(zip(parts, names, strict=True)):
        limit = 24 if name == "hours" else 60
        # The first field may be as large as it likes ("90:00" is 90 minutes), unless
        # days come before it; a later one that overflows ("1:70:00") is a typo.
        if (position > 0 or days is not None) and value >= limit:
            raise ValueError(f"{field}={_shown(text)}: {name} must be below {limit} in a clock "
                             "such as '1:30:00' or '2-00:00:00'")
        total += value * _UNIT_SECONDS[name]
    return total + (float("0" + fraction) if fraction else 0.0)


#: A clock's fields, largest first.
_CLOCK_FIELDS = ("hours", "minutes", "seconds")


def format_memory(megabytes: int) -> str:
    """Render megabytes exactly and compactly: 512M, 4G, 1536M."""
    if megabytes >= 1024 and megabytes % 1024 == 0:
        return f"{megabytes // 1024}G"
    return f"{megabytes}M"


def format_duration(seconds: float) -> str:
    """Render seconds as [D-]HH:MM:SS, rounding up to whole seconds."""
    whole = math.ceil(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def format_span(seconds: float) -> str:
    """A length of time as people read it, and as the ``corral`` command shows
    it: ``0.4s``, ``59.9s``, ``1m17s``, ``2h03m``, ``3d04h``. Two units at most,
    so a column of them reads at a glance; each form parses back as a duration
    (rounded to its last unit)."""
    if seconds < 59.95:
        return f"{max(0.0, seconds):.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    minutes = round(seconds / 60)
    if minutes < 24 * 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    hours = round(seconds / 3600)
    return f"{hours // 24}d{hours % 24:02d}h"
