"""The one registry of job options: names, parsers, defaults and help.

Everything that accepts job options (``Job(...)``, ``Scheduler.options()``,
``submit``/``shell``/``script``/``call``) validates them here, so an unknown
name or a bad value gets the same message wherever it was typed, with a
"did you mean" hint for typos.

Every parser raises ``ValueError`` whose message starts with the option's
name and quotes the bad value through :func:`~corral.safe_repr.safe_repr`, so
that no value, however hostile (a list nested 5,000 deep, an int of 5,000
digits), turns the message itself into another error.

What an option becomes on each backend (``--mem`` on Slurm...) is the
backend's to say: see ``BackendInfo.option_help`` in :mod:`corral.backends`.

This module imports nothing of corral's but the other vocabulary modules.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.safe_repr import safe_repr as _shown
from corral.job_refs import read_back_job_problem
from corral.suggest import did_you_mean
from corral.units import (DURATION_FORMS, FEWEST_BARE_MEGABYTES, FEWEST_BARE_WALLTIME_S,
                          MEMORY_FORMS, parse_duration,
                          parse_memory)

__all__ = ["Option", "JOB_OPTIONS", "NOTIFY_WHEN", "parse_options", "unknown_option_message",
           "peers_word", "peers_word_hint", "os_text_problem", "too_long_argument_problem",
           "os_text_bytes", "bounded_tuple", "INT_LIMIT",
           "MAX_ITEMS", "megabytes_meant_otherwise", "laid_over", "split_flags"]

#: Integer options (and int job ids) stay below this: SQLite stores 64-bit ints,
#: and no count of cores or retries is larger.
INT_LIMIT = 2**63
#: A list given as an option (or as arguments) holds at most this many items:
#: more is an endless iterator (``itertools.count()``) or a mistake, not a job.
MAX_ITEMS = 1_000_000


@dataclass(frozen=True, slots=True)
class Option:
    """One job option: how to read a value, its default, and a line of help."""

    name: str
    parse: Callable[[Any, str], Any]
    default: Any
    help: str
    accepts: str
    units: str = ""
    #: How ``corral submit`` takes it: "int", "text", "choice" (of the values
    #: in *accepts*), "list" (a text flag given once per item), or "" when the
    #: command line supplies it otherwise (the
    #: job's directory and environment are the submitting shell's; ``--after``
    #: takes job ids).
    cli: str = "text"

    @property
    def flag(self) -> str:
        """The option's ``corral submit`` flag, e.g. ``--notify-on``."""
        return "--" + self.name.replace("_", "-")


def laid_over(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Options *top* over *base*, the later winning, but for ``env``, whose
    variables are laid over the earlier ones' (None still unsets one): a
    profile's ``OMP_NUM_THREADS`` and a job's own ``env={"SEED": "1"}`` both
    reach the job (options review: the later env replaced the whole of it)."""
    laid = {**base, **top}
    below, above = base.get("env"), top.get("env")
    if isinstance(below, Mapping) and isinstance(above, Mapping):
        laid["env"] = {**below, **above}
    return laid


def megabytes_meant_otherwise(memory: object) -> str | None:
    """The number of a memory without a unit so small that gigabytes were
    surely meant (``4``, ``"4"``: four megabytes are no job's need; PBS and
    fyrd habits), as text, or None. The command line and a config file say
    so in their own words; :func:`corral.units.parse_memory` refuses it too."""
    if isinstance(memory, (int, float)) and not isinstance(memory, bool):
        number = f"{memory:g}" if math.isfinite(memory) else None
    elif isinstance(memory, str):
        found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*", memory, re.ASCII)
        number = found[1] if found is not None else None
    else:
        number = None
    if number is None or not 0 < float(number) < FEWEST_BARE_MEGABYTES:  # (0: no size at all)
        return None
    return number


def os_text_problem(text: str) -> str | None:
    """Why *text* cannot reach the operating system as an argument, a path or an
    environment variable, or None if it can.

    Checked when a job is made, because the OS refuses such text only when the
    job starts, long after the line that made the job.
    """
    if "\0" in text:
        return "contains a NUL character ('\\0'), which no argument, path or variable can hold"
    try:
        os.fsencode(text)
    except UnicodeError:
        return "holds characters that the file system encoding cannot write"
    return None


def bounded_tuple(items: Iterable[Any], field: str) -> tuple[Any, ...]:
    """*items* as a tuple, refusing more than ``MAX_ITEMS`` of them (with a
    message naming *field*) instead of filling memory with an endless iterator."""
    if isinstance(items, (tuple, list)) and len(items) <= MAX_ITEMS:
        return tuple(items)  # the usual case, without the cost of islice
    kept = tuple(itertools.islice(items, MAX_ITEMS + 1))
    if len(kept) > MAX_ITEMS:
        raise ValueError(f"{field}={_shown(items)} holds more than {MAX_ITEMS:,} items")
    return kept


def _int_at_least(minimum: int) -> Callable[[Any, str], int]:
    def parse(value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not (
                minimum <= value < INT_LIMIT):
            raise ValueError(f"{field}={_shown(value)} must be an int >= {minimum} "
                             "(and below 2**63)")
        return value
    return parse


#: The most times a job may be run again: a failing job retried at once a hundred
#: million times (a typo) kept a core busy and grew the journal 90 KB a second.
MAX_RETRIES = 1000


def _retries(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field}={_shown(value)} must be an int from 0 to {MAX_RETRIES:,}")
    if value > MAX_RETRIES:
        raise ValueError(f"{field}={_shown(value)} is more than {MAX_RETRIES:,}: a job that fails "
                         "at once would be run again as many times; ask for at most "
                         f"{MAX_RETRIES:,}")
    return value


def _any_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (
            -INT_LIMIT <= value < INT_LIMIT):
        raise ValueError(f"{field}={_shown(value)} must be an int from -2**63 to 2**63 - 1 "
                         "(higher runs first)")
    return value


def _name(value: Any, field: str) -> str | None:
    """A label for people, the journal and the cluster's job name."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}={_shown(value)} must be a non-empty string")
    problem = os_text_problem(value)
    if problem is None and not _is_utf8(value):
        problem = "cannot be written as UTF-8"
    if problem:
        raise ValueError(f"{field}={_shown(value)} {problem}; give a non-empty string "
                         "without NUL characters")
    if len(value) > MAX_NAME_CHARACTERS:
        why = "a name is shown on every status line, so it" if field == "name" else "it"
        raise ValueError(f"{field}={_shown(value)} is {len(value):,} characters long; {why} "
                         f"may hold {MAX_NAME_CHARACTERS:,} at most")
    return value


#: The longest name a job may be given (a hostile review gave one of 50 MB,
#: which every ``corral status`` and event then carried).
MAX_NAME_CHARACTERS = 1024


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeError:
        return False
    return True


def _after(value: Any, field: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        raise ValueError(f"{field}={_shown(value)} must be a Job, a job's name or id, or a list "
                         "of them")
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        value = (value,)
    items = bounded_tuple(value, field)
    for item in items:
        if (problem := read_back_job_problem(item)) is not None:
            raise ValueError(f"{field}: {problem}")
        if isinstance(item, bool) or not (isinstance(item, (str, int))
                                          or hasattr(item, "_is_corral_job")):
            raise ValueError(f"{field}: {_shown(item)} is neither a Job nor a job's name or id")
    return items


def _queue(value: Any, field: str) -> str | None:
    return _name(value, field)


def _cwd(value: Any, field: str) -> str | None:
    if value is None:
        return None
    path = _path_text(value, field, "a directory path (a string or os.PathLike)")
    return os.path.abspath(path)  # (that it exists is checked with after=: spec.py)


def _path_text(value: Any, field: str, accepts: str) -> str:
    """*value* (a str or os.PathLike) as a str the OS can take, or a ValueError."""
    path = None
    if isinstance(value, (str, os.PathLike)):
        try:
            path = os.fspath(value)
        except TypeError:  # a __fspath__ that returns neither str nor bytes
            path = None
    if not isinstance(path, str):
        raise ValueError(f"{field}={_shown(value)} must be {accepts}")
    problem = os_text_problem(path)
    if problem:
        raise ValueError(f"{field}={_shown(value)} {problem}; give {accepts}")
    return path


def _env(value: Any, field: str) -> tuple[tuple[str, str | None], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValueError(f"{field}={_shown(value)} must be a mapping of variable names to "
                         "strings")
    pairs = []
    for key, item in value.items():
        problem = _variable_problem(key, item)
        if problem:
            raise ValueError(
                f"{field}: {_shown(key)}={_shown(item)} is not a valid environment variable: "
                f"{problem} (names are non-empty strings without '=', values are strings, or "
                "None to unset the variable; neither may hold a NUL character)"
            )
        # (plain text: a str subclass of the script's own, a StrEnum's member, is
        # not in the worker to unpickle, and the worker died: hostile-input review)
        pairs.append((str.__str__(key), None if item is None else str.__str__(item)))
    _check_environment_size(pairs, field)
    return tuple(pairs)


#: Room left under ARG_MAX for a command's own words and corral's variables.
_EXEC_HEADROOM = 192 * 1024


def _check_environment_size(pairs: list[tuple[str, str | None]], field: str) -> None:
    """Refuse an environment that, with the one it is laid over, no program
    can start with: Linux counts every ``NAME=value`` and its pointer against
    ARG_MAX, and a command then failed "Argument list too long" when it
    started, not when it was made (review: 3,000 variables of 1 KB)."""
    # Counted on the bytes the OS holds (os.environb), not a decoded copy: every
    # job with env= pays for it, and a copy of the environment cost 30 µs.
    inherited = os.environb
    size = sum(len(key) + len(value) for key, value in inherited.items()) + 10 * len(inherited)
    for key, item in pairs:
        name = os.fsencode(key)
        before = inherited.get(name)
        if before is not None:
            size -= len(name) + len(before) + 10
        if item is not None:
            size += len(name) + len(os.fsencode(item)) + 10
    try:
        limit = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        limit = 2 * 1024 * 1024
    if size > limit - _EXEC_HEADROOM:
        raise ValueError(f"{field}: the job's environment comes to {size:,} bytes with the one "
                         f"it is laid over, more than the {limit - _EXEC_HEADROOM:,} a program "
                         f"can start with here (ARG_MAX {limit:,}, less room for its command): "
                         "it would fail 'Argument list too long'; pass large data in a file")


def _variable_problem(key: Any, item: Any) -> str | None:
    """Why ``key=item`` cannot be put in a process's environment, or None."""
    if not isinstance(key, str) or not key:
        return "its name is not a non-empty string"
    if "=" in key:
        return "its name holds '='"
    if not (item is None or isinstance(item, str)):
        return "its value is neither a string nor None"
    problem = os_text_problem(key)
    if problem:
        return f"its name {problem}"
    problem = None if item is None else os_text_problem(item)
    if problem:
        return f"its value {problem}"
    if item is not None and len(key) + 1 + os_text_bytes(item) >= MAX_ARGUMENT_BYTES:
        return (f"NAME=value is longer than the {MAX_ARGUMENT_BYTES // 1024} KiB Linux "
                "allows one environment string; pass large data in a file")
    return None


#: Linux's MAX_ARG_STRLEN: no single argument or "NAME=value" may be this long
#: or longer, or the job fails to start with "Argument list too long".
MAX_ARGUMENT_BYTES = 128 * 1024


def os_text_bytes(text: str) -> int:
    """How many bytes *text* takes as an argument, without its closing NUL."""
    return len(text.encode("utf-8", "surrogateescape"))


def too_long_argument_problem(text: str) -> str | None:
    """Why *text* is too long to be one argument of a command line, or None.

    Checked when a job is made: the OS refuses it only when the job starts.
    """
    if len(text) < MAX_ARGUMENT_BYTES // 4:
        return None  # (four bytes a character at most: the usual case, not encoded)
    size = os_text_bytes(text)
    if size < MAX_ARGUMENT_BYTES:
        return None
    return (f"is {size:,} bytes long, and Linux refuses any one argument of "
            f"{MAX_ARGUMENT_BYTES // 1024} KiB or more ('Argument list too long')")


_ADDRESS = re.compile(r"^[^@\s,;<>\0]+@[^@\s,;<>\0]+$")


def _addresses(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if isinstance(items, (bytes, Mapping)) or not isinstance(items, Iterable):
        raise ValueError(f"{field}={_shown(value)} must be an e-mail address or a list of them")
    addresses = bounded_tuple(items, field)
    for address in addresses:
        if not isinstance(address, str) or not _ADDRESS.match(address.strip()):
            raise ValueError(f"{field}: {_shown(address)} is not an e-mail address (name@host)")
    return tuple(address.strip() for address in addresses)


NOTIFY_WHEN = ("failure", "end")


def _notify_on(value: Any, field: str) -> str:
    if not isinstance(value, str) or value not in NOTIFY_WHEN:
        raise ValueError(f"{field}={_shown(value)} must be 'failure' (mail when a job fails or "
                         "times out) or 'end' (mail whenever a job ends)")
    return value


def _text(value: Any, field: str) -> str | None:
    """A single-line string handed to the cluster as one argument."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "\n\r") or (
            os_text_problem(value)):
        raise ValueError(f"{field}={_shown(value)} must be a non-empty string on one line "
                         "(without NUL characters)")
    return value


def _lines(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if isinstance(items, (bytes, Mapping)) or not isinstance(items, Iterable):
        raise ValueError(f"{field}={_shown(value)} must be a shell line or a list of them")
    lines = bounded_tuple(items, field)
    for line in lines:
        if not isinstance(line, str) or os_text_problem(line):
            raise ValueError(f"{field}: {_shown(line)} is not a line of shell code (a string "
                             "without NUL characters)")
    return lines


def split_flags(text: str, field: str = "extra_flags") -> list[str]:
    """The words of one string of flags, split as a shell splits them."""
    import shlex

    try:
        return shlex.split(text)
    except ValueError as error:
        raise ValueError(f"{field}={_shown(text)} cannot be split into flags: {error}") from None


def _flags(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = split_flags(value, field)
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(f"{field}={_shown(value)} must be a list of flags such as ['--exclusive']")
    flags = bounded_tuple(value, field)
    # After the first, an argument may be a flag's value: SGE's, PBS's and LSF's
    # flags take it apart ("-l", "h_rt=60").
    for position, flag in enumerate(flags):
        if not isinstance(flag, str) or (position == 0 and not flag.startswith("-")) or (
                "\n" in flag) or (
                os_text_problem(flag)):
            raise ValueError(f"{field}: {_shown(flag)} is not a flag (one argument starting "
                             "with '-', without NUL characters)")
    return flags


def _python(value: Any, field: str) -> str | None:
    if value is None:
        return None
    accepts = "the path (or name on PATH) of a Python interpreter"
    path = _path_text(value, field, accepts)
    if not path.strip():
        raise ValueError(f"{field}={_shown(value)} must be {accepts}")
    return path


def _memory(value: Any, field: str) -> int | None:
    return None if value is None else parse_memory(value, field)


def _duration(value: Any, field: str) -> float | None:
    return None if value is None else parse_duration(value, field)


def _walltime(value: Any, field: str) -> float | None:
    """A duration, where a bare number of under a minute is refused (cold
    review: walltime=1.5, meant as hours, killed the job after 1.5 s without a
    word; a config file and the command line refuse every bare number)."""
    if (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 < value < FEWEST_BARE_WALLTIME_S):
        raise ValueError(f"{field}={value!r} is {value:g} seconds, which no walltime is meant "
                         f"to be: give its unit, '{value:g}h' for hours or '{value:g}m' for "
                         f"minutes ('{value:g}s' if seconds are meant)")
    return _duration(value, field)


JOB_OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option("cores", _int_at_least(1), 1, "CPU cores the job uses", "an int >= 1", "cores",
               cli="int"),
        Option("memory", _memory, None, "memory the job needs (binary units)", MEMORY_FORMS, "MB"),
        Option("walltime", _walltime, None,
               "how long the job may run; the job is stopped (TIMED_OUT) past it", DURATION_FORMS,
               "seconds"),
        Option("gpus", _int_at_least(0), 0,
               "GPUs the job uses; it sees them through CUDA_VISIBLE_DEVICES", "an int >= 0",
               "GPUs", cli="int"),
        Option("name", _name, None, "a name for people and for after (--after); need not be unique",
               "a non-empty string", ""),
        Option("after", _after, (), "jobs (by Job, name or id) that must complete first",
               "a Job, a job name, a job id, or a list of them", "", cli=""),
        Option("queue", _queue, None, "named queue whose capacity limits this job",
               "a queue of the scheduler's: Scheduler(queues=...), or the daemon table's queues",
               ""),
        Option("tokens", _int_at_least(0), 0, "tokens held from the scheduler's pool while running",
               "an int >= 0", "tokens", cli="int"),
        Option("priority", _any_int, 0, "higher runs first among ready jobs", "an int", "",
               cli="int"),
        Option("retries", _retries, 0, "times a failed or timed-out job is run again",
               f"an int from 0 to {MAX_RETRIES}", "times", cli="int"),
        Option("timeout", _duration, None,
               "stop the job and its whole process tree after this long (TIMED_OUT)",
               DURATION_FORMS, "seconds"),
        Option("cwd", _cwd, None, "directory the job runs in (default: the driver's)",
               "an existing directory", "", cli=""),
        Option("env", _env, (), "extra environment variables for the job (None unsets one)",
               "a dict of str to str or None", "", cli=""),
        Option("notify", _addresses, (),
               "e-mail these addresses when the job fails (see notify_on)",
               "an e-mail address or a list of them", "", cli="list"),
        Option("notify_on", _notify_on, "failure", "when to send the notify e-mail",
               "'failure' or 'end'", "", cli="choice"),
        Option("partition", _text, None, "cluster partition to run in", "a partition name", ""),
        Option("account", _text, None, "account charged for the job", "an account name", ""),
        Option("qos", _text, None, "quality of service", "a QOS name", ""),
        Option("constraint", _text, None, "node features the job needs", "e.g. 'avx512&ib'", ""),
        Option("setup", _lines, (), "shell lines run before the job on the cluster "
               "(module load, venv activation); they are code, run as given",
               "a line or a list of lines", "", cli="list"),
        Option("extra_flags", _flags, (), "more flags for the cluster's submit command",
               "a list of flags, or one string split like a shell", "", cli="list"),
        Option("python", _python, None, "Python interpreter that runs Python calls on the cluster "
               "(default: the driver's)", "a path or a name on PATH", ""),
        Option("bundle", _int_at_least(1), 1, "up to this many calls dispatched together, "
               "with equal options, share one cluster job", "an int >= 1", "calls", cli="int"),
    )
}


#: Job options as other tools name them (fyrd, submitit, dask-jobqueue,
#: Slurm's own flags), to the option meant: spelling alone points ``cpus``
#: at ``gpus`` and ``time`` at ``timeout``, the wrong option each.
_PEERS_WORDS = {
    **dict.fromkeys(("cpus", "cpus_per_task", "ncpus", "n_cpus", "num_cpus", "ncores",
                     "threads", "procs", "nprocs", "tasks", "ntasks",
                     # (attack review: spelling pointed these at gpus and account)
                     "cpu", "ncpu", "core", "n_cores", "num_cores", "core_count", "cpu_count"),
                    "cores"),
    **dict.fromkeys(("mem", "mem_mb", "mem_gb", "memory_mb", "memory_gb", "ram"), "memory"),
    **dict.fromkeys(("time", "time_limit", "timelimit", "timeout_min", "runtime", "wall_time",
                     "walltime_min", "duration", "walltime_hours", "time_hours", "hours"),
                    "walltime"),
    **dict.fromkeys(("ngpus", "num_gpus", "n_gpus", "gpus_per_node", "gpus_per_task", "gres",
                     "gpu", "ngpu", "gpu_count"), "gpus"),
    "queue_name": "queue",
    "partition_name": "partition",
    **dict.fromkeys(("depends", "depends_on", "dependencies", "dependency", "deps", "wait_for"),
                    "after"),
    **dict.fromkeys(("job_name", "jobname"), "name"),
    **dict.fromkeys(("workdir", "chdir", "dir", "directory", "working_dir"), "cwd"),
    **dict.fromkeys(("email", "mail", "mail_user"), "notify"),
    **dict.fromkeys(("modules", "module", "preamble", "prologue"), "setup"),
    **dict.fromkeys(("max_retries", "retry", "attempts"), "retries"),
    **dict.fromkeys(("job_timeout", "max_duration", "time_out"), "timeout"),
    # dask-jobqueue's and submitit's words (submitit's slurm_mem is its "mem": below)
    **dict.fromkeys(("project", "account_name"), "account"),
    "qos_name": "qos",
    **dict.fromkeys(("ntasks_per_node", "cpus_per_node"), "cores"),
    **dict.fromkeys(("additional_parameters", "srun_args", "job_extra",
                     "job_extra_directives"), "extra_flags"),
    **dict.fromkeys(("job_script_prologue", "env_extra"), "setup"),
}

#: Other tools' options whose bare number has a unit corral's does not give a
#: bare number (submitit's timeout_min=10 is ten minutes, corral's walltime=10
#: ten seconds; mem_gb=4 is four gigabytes, memory=4 refused as megabytes): the hint
#: writes the value with its unit, or says to give one.
_PEERS_UNITS = {
    **dict.fromkeys(("timeout_min", "walltime_min"), "m"),
    **dict.fromkeys(("walltime_hours", "time_hours", "hours"), "h"),
    **dict.fromkeys(("mem_gb", "memory_gb"), "G"),
    **dict.fromkeys(("mem_mb", "memory_mb"), "M"),
}

#: What a bare number is in corral's options of a unit, and a value with one.
_BARE_NUMBER = {"walltime": ("seconds", "90m"), "timeout": ("seconds", "90m"),
                "memory": ("megabytes", "4G")}

#: Words for what corral's options do not ask for, with where to go instead.
_NOT_AN_OPTION = {
    **dict.fromkeys(("mem_per_cpu", "memory_per_core", "mem_per_core", "memory_per_cpu"),
                    "corral's memory is the whole job's: the memory per core times cores "
                    "(2G a core on 4 cores is a memory of 8G)"),
    "nodes": "corral runs each job on one node (cores is its cores there); a multi-node job "
             "asks its cluster through extra_flags, e.g. extra_flags=['--nodes=2'] "
             "(corral submit --extra-flags=--nodes=2)",
    **dict.fromkeys(("stdout", "stderr", "output", "error", "log", "logfile", "outfile",
                     "errfile"),
                    "corral keeps each job's output in files of its own (job.stdout, "
                    "job.stderr; corral logs ID); for a file of your choosing, redirect "
                    "inside the command: 'cmd > out.txt 2> err.txt'"),
    **dict.fromkeys(("output_file", "result_file"),
                    "a command or script writes its result, as JSON, to the file "
                    "$CORRAL_RESULT_FILE names, and job.result() returns it"),
}


def _peers_name(name: str) -> str:
    """*name* as :data:`_PEERS_WORDS` knows it: a word under a scheduler's prefix
    (submitit's ``slurm_mem``, ``slurm_partition``) is the word after it."""
    if name in _PEERS_WORDS or name in _NOT_AN_OPTION:
        return name
    _, _, word = name.partition("_")
    return word if word in _PEERS_WORDS or word in _NOT_AN_OPTION or word in JOB_OPTIONS else name


def peers_word(name: str) -> str | None:
    """The job option another tool's *name* stands for (``job_timeout``:
    ``timeout``), or None."""
    word = _peers_name(name)
    return word if word in JOB_OPTIONS else _PEERS_WORDS.get(word)


def peers_word_hint(name: str, value: object = None, flags: bool = False) -> str | None:
    """What corral calls the job option another tool calls *name* (``cpus``:
    "did you mean 'cores'?"), or where to go instead; None for other names.

    Where the other tool's number has a unit corral's bare number does not,
    the hint writes *value* with its unit (``timeout_min=10``: "did you mean
    walltime='10m'?"), or, without a number, says to give one (for *flags*,
    which take no bare number, only that).
    """
    word = _peers_name(name)
    if word in _NOT_AN_OPTION:
        return _NOT_AN_OPTION[word]
    option = peers_word(name)
    if option is None:
        return None
    number = _plain_number(value)
    if word in _PEERS_UNITS and number is not None:
        return f"did you mean {option}={number + _PEERS_UNITS[word]!r}?"
    if option in _BARE_NUMBER:
        bare, example = _BARE_NUMBER[option]
        if flags:
            return f"did you mean {option!r}? (with its unit, as in {example})"
        return (f"did you mean {option!r}? (a bare number there is {bare}: give the unit, "
                f"as in {example!r})")
    return f"did you mean {option!r}?"


def _plain_number(value: object) -> str | None:
    """*value* written as a positive number without an exponent, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not (math.isfinite(value) and value > 0):
        return None
    text = str(int(value)) if float(value).is_integer() else repr(float(value))
    return None if "e" in text or len(text) > 15 else text


def unknown_option_message(name: str, known: Iterable[str], value: object = None) -> str:
    """A one-line error for an unknown option, with the closest known name
    (and *value*, given, as that option would take it)."""
    if (hint := peers_word_hint(name, value)) is not None:
        return f"unknown job option {name!r}; {hint}"
    if name == "profile":
        return ("profile= names a set of options in the config files, which a Scheduler reads: "
                "give it to scheduler.options(profile=...), shell/script/call(..., "
                "profile=...) or corral submit --profile, not to a Job made on its own")
    if name == "id":  # (cold review: a build's steps keyed by id, told nothing of how)
        return ("id= is given where a job is made on its own: corral.Job(task, args, kwargs, "
                "id=...), then scheduler.dispatch([...]) (a job option applies to many jobs; "
                "an id names one)")
    known = sorted(known)
    hint = did_you_mean(name, known, otherwise=f"known options: {', '.join(known)}")
    return f"unknown job option {name!r}; {hint}"


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
            raise ValueError(unknown_option_message(name, JOB_OPTIONS, value))
        try:
            parsed[name] = option.parse(value, name)
        except (ValueError, TypeError):
            raise
        except Exception as error:  # a hostile value: its __iter__, __fspath__, ... raised
            raise ValueError(f"{name}={_shown(value)} cannot be read as {option.accepts} "
                             f"({type(error).__name__}: {error})") from None
    return parsed
