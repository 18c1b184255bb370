"""The ``backend_options`` every batch backend takes, checked once when it is made."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from corral.suggest import closest
from corral.units import parse_duration

__all__ = ["BATCH_OPTIONS", "BatchSettings", "parse_settings", "split_options", "options_help"]

#: ``backend_options`` of a batch backend, with their defaults and meaning.
BATCH_OPTIONS: dict[str, tuple[Any, str]] = {
    "poll_interval": (0.5, "seconds between status queries right after a change"),
    "max_poll_interval": (5.0, "the longest wait between status queries while nothing changes"),
    "array_throttle": (None, "at most this many tasks of one array run at once"),
    "max_array_size": (None, "split arrays below this many tasks (default: the cluster's limit)"),
    "user": (None, "whose jobs the status query lists (default: this user)"),
    "submit_retry": (600.0, "how long a submission the scheduler could not be reached for "
                            "is tried again before its jobs fail (0: not at all)"),
}


def options_help(own: Mapping[str, tuple[Any, str]] | None = None) -> Mapping[str, str]:
    """A batch backend's :attr:`~corral.backends.base.BackendInfo.backend_options`:
    the options every batch backend takes and the scheduler's *own*, each with its
    meaning and its default."""
    def line(default: Any, meaning: str) -> str:
        return meaning if default is None else f"{meaning} (default: {default!r})"

    return MappingProxyType({name: line(default, meaning) for name, (default, meaning)
                             in {**BATCH_OPTIONS, **(own or {})}.items()})


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """Checked ``backend_options``: durations in seconds."""

    poll_interval: float = 0.5
    max_poll_interval: float = 5.0
    array_throttle: int | None = None
    max_array_size: int | None = None
    user: str | None = None
    submit_retry: float = 600.0


def split_options(options: dict[str, Any], own: Collection[str],
                  title: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """*options* of a backend on the scheduler *title* ("Slurm"), split into those
    every batch backend takes and those of the scheduler alone (names in *own*).

    Raises:
        ValueError: an option neither knows, with a "did you mean" and the known ones.
    """
    known = [*BATCH_OPTIONS, *own]
    unknown = sorted(set(options) - set(known))
    if unknown:
        close = closest(unknown[0], known, prefix_first=True)
        hint = f"; did you mean {close!r}?" if close else ""
        raise ValueError(f"unknown {title} backend option {unknown[0]!r}{hint} "
                         f"(known: {', '.join(known)})")
    return ({name: value for name, value in options.items() if name in BATCH_OPTIONS},
            {name: value for name, value in options.items() if name not in BATCH_OPTIONS})


def parse_settings(options: dict[str, Any], title: str) -> BatchSettings:
    """Check *options* (those every batch backend takes) for a backend on the
    scheduler *title* ("Slurm").

    Raises:
        ValueError: an unknown option (with a "did you mean") or a bad value,
            naming the option and what it accepts.
    """
    split_options(options, (), title)
    values = {name: default for name, (default, _) in BATCH_OPTIONS.items()}
    values.update(options)
    if values["submit_retry"] in (0, "0", "0s") and values["submit_retry"] is not False:
        values["submit_retry"] = 0.0  # no retry: the refusal is the jobs' failure at once
    else:
        values["submit_retry"] = parse_duration(values["submit_retry"], "submit_retry")
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
