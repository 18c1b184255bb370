"""Parse the units people write for memory and time, once, at the edge.

Everything inside corral works in megabytes (int) and seconds (float). These
parsers turn what a user typed ("4G", "1.5GB", "90m", "1:30:00", "2-00:00:00")
into those numbers and refuse anything else with a message that names the field
and the forms it accepts. Memory prefixes are binary (1G = 1024M), as Slurm and
most batch systems read them.

This module imports nothing of corral's: it is vocabulary.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

__all__ = [
    "MEMORY_FORMS",
    "DURATION_FORMS",
    "parse_memory",
    "parse_duration",
    "format_memory",
    "format_duration",
]

MEMORY_FORMS = "an int of megabytes or a string such as '512M', '4G', '1.5GB', '2T'"
DURATION_FORMS = (
    "an int of seconds or a string such as '90s', '30m', '2h', '1h30m', "
    "'1:30:00', '30:00', '2-00:00:00'"
)

_MAX_MEGABYTES = 1024.0**4  # 1 EB: anything larger is a typo, not a request
_MAX_SECONDS = 100 * 365 * 86400.0
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_MB_PER_PREFIX = {"": 1.0, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0**2, "p": 1024.0**3}

_UNIT_SECONDS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}
_UNIT_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)", re.IGNORECASE)
_UNIT_WHOLE = re.compile(r"^(?:\s*(?:\d+(?:\.\d*)?|\.\d+)\s*[a-z]+)+\s*$", re.IGNORECASE)
# Slurm's clock forms: [D-]HH:MM:SS, [D-]HH:MM (only after a day), D-HH, MM:SS.
_CLOCK = re.compile(r"^\s*(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+(?:\.\d*)?))?\s*$")


def parse_memory(value: object, field: str = "memory") -> int:
    """Return *value* as a whole number of megabytes (rounded up).

    Raises:
        ValueError: the value is not positive or not in one of ``MEMORY_FORMS``;
            the message names *field*.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{field}={value!r} is not a memory size; use {MEMORY_FORMS}")
    if isinstance(value, (int, float)):
        try:
            megabytes = float(value)
        except OverflowError:
            megabytes = math.inf
    else:
        match = _MEMORY.match(value)
        if match is None:
            raise ValueError(f"{field}={value!r} is not a memory size; use {MEMORY_FORMS}")
        number, prefix, suffix = match.groups()
        if not prefix and suffix and suffix.lower() == "b":
            megabytes = float(number) / (1024 * 1024)  # plain bytes, e.g. "1048576B"
        else:
            megabytes = float(number) * _MB_PER_PREFIX[prefix.lower()]
    if not math.isfinite(megabytes) or megabytes <= 0 or megabytes > _MAX_MEGABYTES:
        raise ValueError(f"{field}={value!r} must be a positive memory size below 1 EB; "
                         f"use {MEMORY_FORMS}")
    return math.ceil(megabytes)


def parse_duration(value: object, field: str = "walltime") -> float:
    """Return *value* as a positive number of seconds.

    A bare number in a string ("30") is refused as ambiguous: Slurm reads it as
    minutes while an int here means seconds, and guessing wrong kills jobs.

    Raises:
        ValueError: the value is not positive or not in one of ``DURATION_FORMS``.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{field}={value!r} is not a duration; use {DURATION_FORMS}")
    elif isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        seconds = _parse_duration_text(value, field)
    if not math.isfinite(seconds) or seconds <= 0 or seconds > _MAX_SECONDS:
        raise ValueError(f"{field}={value!r} must be a positive duration of at most 100 years; "
                         f"use {DURATION_FORMS}")
    return seconds


def _parse_duration_text(text: str, field: str) -> float:
    if _UNIT_WHOLE.match(text):
        total = 0.0
        for number, unit in _UNIT_PART.findall(text):
            factor = _UNIT_SECONDS.get(unit.lower())
            if factor is None:
                raise ValueError(
                    f"{field}={text!r}: unknown time unit {unit!r}; use s, m, h or d "
                    f"({DURATION_FORMS})"
                )
            total += float(number) * factor
        return total
    match = _CLOCK.match(text)
    if match is None:
        raise ValueError(f"{field}={text!r} is not a duration; use {DURATION_FORMS}")
    days, first, second, third = match.groups()
    if second is None and third is None:
        if days is None:
            raise ValueError(
                f"{field}={text!r} is ambiguous: write '{text.strip()}s' for seconds "
                f"or '{text.strip()}m' for minutes"
            )
        return int(days) * 86400 + int(first) * 3600  # D-HH
    if third is None:
        if days is None:
            return int(first) * 60 + float(second)  # MM:SS
        return int(days) * 86400 + int(first) * 3600 + int(second) * 60  # D-HH:MM
    return (int(days or 0) * 86400 + int(first) * 3600 + int(second) * 60 + float(third))


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
