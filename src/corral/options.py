"""The one registry of job options: names, parsers, defaults and help.

Everything that accepts job options (``Job(...)``, ``Scheduler.options()``,
``submit``/``shell``/``script``/``call``) validates them here, so an unknown
name or a bad value gets the same message wherever it was typed, with a
"did you mean" hint for typos.

This module imports nothing of corral's but the other vocabulary modules.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .units import DURATION_FORMS, MEMORY_FORMS, parse_duration, parse_memory

__all__ = ["Option", "JOB_OPTIONS", "NOTIFY_WHEN", "parse_options", "unknown_option_message"]


@dataclass(frozen=True, slots=True)
class Option:
    """One job option: how to read a value, its default, and a line of help."""

    name: str
    parse: Callable[[Any, str], Any]
    default: Any
    help: str
    accepts: str
    units: str = ""
    #: What the option becomes on each backend, for ``corral options``.
    backends: Mapping[str, str] = field(default_factory=dict)
    #: How ``corral submit`` takes it: "int", "text" or "choice" (of the values
    #: in *accepts*), or "" when the command line supplies it otherwise (the
    #: job's directory and environment are the submitting shell's; ``--after``
    #: takes job ids).
    cli: str = "text"

    @property
    def flag(self) -> str:
        """The option's ``corral submit`` flag, e.g. ``--notify-on``."""
        return "--" + self.name.replace("_", "-")


def _int_at_least(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{field}={value!r} must be an int >= {minimum}")
        return value
    return parse


def _any_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field}={value!r} must be an int (higher runs first)")
    return value


def _optional(parse: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def parse_or_none(value: Any, field: str) -> Any:
        return None if value is None else parse(value, field)
    return parse_or_none


def _name(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}={value!r} must be a non-empty string")
    return value


def _after(value: Any, field: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        value = (value,)
    items = tuple(value)
    for item in items:
        if isinstance(item, bool) or not (isinstance(item, str) or hasattr(item, "_is_corral_job")):
            raise ValueError(f"{field}: {item!r} is neither a Job nor the name of a job")
    return items


def _queue(value: Any, field: str) -> str | None:
    return _name(value, field)


def _cwd(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{field}={value!r} must be a directory path")
    path = os.path.abspath(os.fspath(value))
    if not os.path.isdir(path):
        raise ValueError(f"{field}={value!r} is not an existing directory")
    return path


def _env(value: Any, field: str) -> tuple[tuple[str, str | None], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValueError(f"{field}={value!r} must be a mapping of variable names to strings")
    pairs = []
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or not (
                item is None or isinstance(item, str)):
            raise ValueError(
                f"{field}: {key!r}={item!r} is not a valid environment variable "
                "(names are non-empty strings without '=', values are strings, or None to "
                "unset the variable)"
            )
        pairs.append((key, item))
    return tuple(pairs)


_ADDRESS = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+$")


def _addresses(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if isinstance(items, (bytes, Mapping)) or not isinstance(items, Iterable):
        raise ValueError(f"{field}={value!r} must be an e-mail address or a list of them")
    addresses = tuple(items)
    for address in addresses:
        if not isinstance(address, str) or not _ADDRESS.match(address.strip()):
            raise ValueError(f"{field}: {address!r} is not an e-mail address (name@host)")
    return tuple(address.strip() for address in addresses)


NOTIFY_WHEN = ("failure", "end")


def _notify_on(value: Any, field: str) -> str:
    if value not in NOTIFY_WHEN:
        raise ValueError(f"{field}={value!r} must be 'failure' (mail when a job fails or times "
                         "out) or 'end' (mail whenever a job ends)")
    return value


def _text(value: Any, field: str) -> str | None:
    """A single-line string handed to the cluster as one argument."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "\n\r\0"):
        raise ValueError(f"{field}={value!r} must be a non-empty string on one line")
    return value


def _lines(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if isinstance(items, (bytes, Mapping)) or not isinstance(items, Iterable):
        raise ValueError(f"{field}={value!r} must be a shell line or a list of them")
    lines = tuple(items)
    for line in lines:
        if not isinstance(line, str) or "\0" in line:
            raise ValueError(f"{field}: {line!r} is not a line of shell code (a string)")
    return lines


def _flags(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        import shlex

        try:
            value = shlex.split(value)
        except ValueError as error:
            raise ValueError(f"{field}={value!r} cannot be split into flags: {error}") from None
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(f"{field}={value!r} must be a list of flags such as ['--exclusive']")
    flags = tuple(value)
    for flag in flags:
        if not isinstance(flag, str) or not flag.startswith("-") or "\n" in flag or "\0" in flag:
            raise ValueError(f"{field}: {flag!r} is not a flag (one argument starting with '-')")
    return flags


def _python(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
        raise ValueError(f"{field}={value!r} must be the path (or name on PATH) of a Python interpreter")
    return os.fspath(value)


def _memory(value: Any, field: str) -> int | None:
    return None if value is None else parse_memory(value, field)


def _duration(value: Any, field: str) -> float | None:
    return None if value is None else parse_duration(value, field)


_LOCAL_ONLY = "not sent: the scheduler applies it"
_CLUSTER_ONLY = "not used"

JOB_OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option("cores", _int_at_least(1), 1, "CPU cores the job uses", "an int >= 1", "cores",
               {"local": "packed against Scheduler(cores=...)", "slurm": "--cpus-per-task=N"}, cli="int"),
        Option("memory", _memory, None, "memory the job needs (binary units)", MEMORY_FORMS, "MB",
               {"local": "packed against Scheduler(memory=...)", "slurm": "--mem=<MB>M"}),
        Option("walltime", _duration, None,
               "how long the job may run; the job is killed (TIMED_OUT) past it", DURATION_FORMS,
               "seconds", {"local": "killed with its process tree past it",
                           "slurm": "--time=<minutes, rounded up>"}),
        Option("gpus", _int_at_least(0), 0,
               "GPUs the job uses; it sees them through CUDA_VISIBLE_DEVICES", "an int >= 0",
               "GPUs", {"local": "ids in CUDA_VISIBLE_DEVICES", "slurm": "--gres=gpu:N"}, cli="int"),
        Option("name", _name, None, "a name for people and for after=; need not be unique",
               "a non-empty string", "",
               {"local": "shown in status", "slurm": "--job-name (with the run's prefix)"}),
        Option("after", _after, (), "jobs (or job names) that must complete first",
               "a Job, a job name, or a list of them", "",
               {"local": _LOCAL_ONLY, "slurm": "--dependency=afterok:ID while the parent is known"}, cli=""),
        Option("queue", _queue, None, "named queue whose capacity limits this job",
               "a queue name given to Scheduler(queues=...)", "",
               {"local": _LOCAL_ONLY, "slurm": _LOCAL_ONLY}),
        Option("tokens", _int_at_least(0), 0, "tokens held from the scheduler's pool while running",
               "an int >= 0", "tokens", {"local": _LOCAL_ONLY, "slurm": _LOCAL_ONLY}, cli="int"),
        Option("priority", _any_int, 0, "higher runs first among ready jobs", "an int", "",
               {"local": _LOCAL_ONLY, "slurm": "order of submission"}, cli="int"),
        Option("retries", _int_at_least(0), 0, "times a failed job is run again", "an int >= 0",
               "times", {"local": _LOCAL_ONLY, "slurm": "a new sbatch per retry"}, cli="int"),
        Option("timeout", _duration, None,
               "kill the job and its whole process tree after this long (TIMED_OUT)",
               DURATION_FORMS, "seconds",
               {"local": "killed with its process tree", "slurm": "scancel after it"}),
        Option("cwd", _cwd, None, "directory the job runs in (default: the driver's)",
               "an existing directory", "", {"local": "chdir before the job starts",
                                             "slurm": "--chdir=DIR"}, cli=""),
        Option("env", _env, (), "extra environment variables for the job (None unsets one)",
               "a dict of str to str or None",
               "", {"local": "set in the job's environment", "slurm": "exported in the batch script"}, cli=""),
        Option("notify", _addresses, (), "e-mail these addresses when the job fails (see notify_on)",
               "an e-mail address or a list of them", "",
               {"local": "sent by corral through the [smtp] settings",
                "slurm": "sent by corral through the [smtp] settings"}),
        Option("notify_on", _notify_on, "failure", "when to send the notify e-mail",
               "'failure' or 'end'", "", {"local": _LOCAL_ONLY, "slurm": _LOCAL_ONLY}, cli="choice"),
        Option("partition", _text, None, "cluster partition to run in", "a partition name", "",
               {"local": _CLUSTER_ONLY, "slurm": "--partition=NAME"}),
        Option("account", _text, None, "account charged for the job", "an account name", "",
               {"local": _CLUSTER_ONLY, "slurm": "--account=NAME"}),
        Option("qos", _text, None, "quality of service", "a QOS name", "",
               {"local": _CLUSTER_ONLY, "slurm": "--qos=NAME"}),
        Option("constraint", _text, None, "node features the job needs", "e.g. 'avx512&ib'", "",
               {"local": _CLUSTER_ONLY, "slurm": "--constraint=EXPR"}),
        Option("setup", _lines, (), "shell lines run before the job on the cluster "
               "(module load, venv activation); they are code, run as given",
               "a line or a list of lines", "",
               {"local": _CLUSTER_ONLY, "slurm": "lines of the batch script"}),
        Option("extra_flags", _flags, (), "more flags for the cluster's submit command",
               "a list of flags, or one string split like a shell", "",
               {"local": _CLUSTER_ONLY, "slurm": "added to sbatch"}),
        Option("python", _python, None, "Python interpreter that runs Python calls on the cluster "
               "(default: the driver's)", "a path or a name on PATH", "",
               {"local": "the driver's", "slurm": "runs corral's runtime in the batch script"}),
        Option("bundle", _int_at_least(1), 1, "up to this many calls dispatched together, "
               "with equal options, share one cluster job", "an int >= 1", "calls",
               {"local": _CLUSTER_ONLY, "slurm": "one array task runs them in turn"}, cli="int"),
    )
}


def unknown_option_message(name: str, known: Iterable[str]) -> str:
    """A one-line error for an unknown option, with the closest known name."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known options: {', '.join(known)}"
    return f"unknown job option {name!r}{hint}"


def parse_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate *options* and return them parsed (defaults not filled in).

    Raises:
        ValueError: an unknown option name (with a suggestion) or a bad value
            (naming the option and the accepted forms).
    """
    parsed: dict[str, Any] = {}
    for name, value in options.items():
        option = JOB_OPTIONS.get(name)
        if option is None:
            raise ValueError(unknown_option_message(name, JOB_OPTIONS))
        parsed[name] = option.parse(value, name)
    return parsed
