"""The ``backend_options`` every batch backend takes, checked once when it is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.suggest import closest
from corral.units import parse_duration

__all__ = ["BATCH_OPTIONS", "BatchSettings", "parse_settings"]

#: ``backend_options`` of a batch backend, with their defaults and meaning.
BATCH_OPTIONS: dict[str, tuple[Any, str]] = {
    "poll_interval": (0.5, "seconds between status queries right after a change"),
    "max_poll_interval": (5.0, "the longest wait between status queries while nothing changes"),
    "array_throttle": (None, "at most this many tasks of one array run at once"),
    "max_array_size": (None, "split arrays below this many tasks (default: the cluster's limit)"),
    "user": (None, "whose jobs the status query lists (default: this user)"),
}


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """Checked ``backend_options``: durations in seconds."""

    poll_interval: float = 0.5
    max_poll_interval: float = 5.0
    array_throttle: int | None = None
    max_array_size: int | None = None
    user: str | None = None


def parse_settings(options: dict[str, Any], title: str) -> BatchSettings:
    """Check *options* for a backend on the scheduler *title* ("Slurm").

    Raises:
        ValueError: an unknown option (with a "did you mean") or a bad value,
            naming the option and what it accepts.
    """
    unknown = sorted(set(options) - set(BATCH_OPTIONS))
    if unknown:
        close = closest(unknown[0], BATCH_OPTIONS, prefix_first=True)
        hint = f"; did you mean {close!r}?" if close else ""
        raise ValueError(f"unknown {title} backend option {unknown[0]!r}{hint} "
                         f"(known: {', '.join(BATCH_OPTIONS)})")
    values = {name: default for name, (default, _) in BATCH_OPTIONS.items()}
    values.update(options)
    for name in ("poll_interval", "max_poll_interval"):
        values[name] = parse_duration(values[name], name)
        if values[name] <= 0:
            raise ValueError(f"{name}={options[name]!r} must be more than 0 seconds")
    for name in ("array_throttle", "max_array_size"):
        value = values[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{name}={value!r} must be an int >= 1")
    if values["user"] is not None and not isinstance(values["user"], str):
        raise ValueError(f"user={values['user']!r} must be a user name")
    values["max_poll_interval"] = max(values["max_poll_interval"], values["poll_interval"])
    return BatchSettings(**values)
