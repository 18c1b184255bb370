"""A ``[schedulers.NAME]`` table, checked once: :func:`parse_table` turns the raw
TOML values into a frozen :class:`Table`, or raises :class:`TableError` naming
the key (a path inside the table) so that the config can point at its line.

Nothing here runs a process; the table's meaning is in the package docstring.
"""

from __future__ import annotations

import enum
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

from corral.errors import BackendError
from corral.safe_repr import safe_repr, shows_as_written
from corral.suggest import did_you_mean
from corral.units import parse_duration

__all__ = ["Table", "Parser", "ArraySyntax", "StateWord", "TableError", "parse_table",
           "DIRECTIVES", "WALLTIME_FORMATS", "MEMORY_UNITS", "render", "fields_of"]


class StateWord(enum.Enum):
    """What a scheduler's state word means to corral (the values of ``states``)."""

    PENDING = "pending"
    HELD = "held"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    ENDED = "ended"  # completed or failed, as the exit status and signal say


class TableError(ValueError):
    """A bad key of a table: *key* is its path inside the table, ``("array", "argument")``."""

    def __init__(self, key: tuple[str, ...], problem: str) -> None:
        super().__init__(f"{'.'.join(key)}: {problem}")
        self.key = key
        self.problem = problem


#: Each resource directive and the placeholder its value fills.
DIRECTIVES = ("cores", "memory", "walltime", "gpus", "partition", "account", "qos",
              "constraint", "name")
WALLTIME_FORMATS = ("seconds", "minutes", "hh:mm:ss")
#: Megabytes per unit of ``memory_unit`` (a value is rounded up to a whole unit).
MEMORY_UNITS = {"KB": 1 / 1024, "MB": 1, "GB": 1024}
#: Names of the columns (or regex groups) the status parser reads; ``-`` skips a column.
COLUMNS = ("id", "state", "reason", "exit_status", "signal")
_IDS = ("ids",)
_FORMATTER = string.Formatter()


@dataclass(frozen=True, slots=True)
class Parser:
    """How to read rows from a command's output: whitespace columns or a regex."""

    columns: tuple[str, ...] | None
    regex: re.Pattern[str] | None
    skip: int  # header lines


@dataclass(frozen=True, slots=True)
class ArraySyntax:
    argument: tuple[str, ...]
    index_variable: str
    first_index: int
    job_id_variable: str | None
    task_id: str
    max_size: int
    throttle: str | None


@dataclass(frozen=True, slots=True)
class Table:
    """One scheduler described in settings, checked."""

    name: str
    title: str
    description: str
    submit: tuple[str, ...]
    job_id: re.Pattern[str]
    status: tuple[str, ...]
    status_parser: Parser
    states: Mapping[str, StateWord]
    cancel: tuple[str, ...]
    hold: tuple[str, ...] | None
    release: tuple[str, ...] | None
    signal: tuple[str, ...] | None
    accounting: tuple[str, ...] | None
    accounting_parser: Parser
    never_starts: Mapping[str, str]  # reason -> "dependency" | "impossible"
    directive_prefix: str | None
    directives: Mapping[str, tuple[str, ...]]
    memory_unit: str
    walltime_format: str
    array: ArraySyntax | None
    dependency: tuple[str, ...] | None
    dependency_separator: str
    ids_separator: str
    job_id_variable: str
    restart_count_variable: str | None
    failed_exit_status: int
    forget_after_s: float
    commands_in_job_group: bool
    #: More words (lower case) by which the cancel command says a job had ended already.
    cancel_ended_words: tuple[str, ...] = ()


# -- checking one value ------------------------------------------------------------------------

def _fail(key: tuple[str, ...], problem: str) -> NoReturn:
    raise TableError(key, problem)


def _text(value: Any, key: tuple[str, ...], *, blank: bool = False) -> str:
    """A non-empty string (*blank*: one of spaces is fine, a separator)."""
    if not isinstance(value, str) or not (value if blank else value.strip()):
        _fail(key, f"must be a non-empty string, not {value!r}")
    _no_nul(value, key)
    return value


def _no_nul(text: str, key: tuple[str, ...]) -> None:
    """No NUL character: no command line or file name can hold one (attack review:
    it passed here, to fail each submit with a traceback naming no key)."""
    if "\0" in text:
        _fail(key, f"{text!r} holds a NUL character (\\0), which no command may take")


def _shown(value: Any, key: tuple[str, ...]) -> str:
    """:func:`_text` that a terminal shows as it is (``corral backends``, a column
    of ``corral status``): an ESC sequence in a title retitled the terminal of
    whoever listed the backends of a cloned project's corral.toml (attack review)."""
    text = _text(value, key)
    if not shows_as_written(text):
        _fail(key, f"{safe_repr(text)} is shown to people: give it no control character, tab, "
                   "newline or invisible mark")
    return text


def _one_line(value: Any, key: tuple[str, ...]) -> str:
    """:func:`_text` of one line: a newline in a directive's prefix made a
    line of the script's header a shell command (attack review)."""
    text = _text(value, key)
    if any(mark in text for mark in ("\n", "\r")):
        _fail(key, f"must be one line, not {text!r}")
    return text


def _argv(value: Any, key: tuple[str, ...], placeholders: tuple[str, ...]) -> tuple[str, ...]:
    """A command as a list of strings whose ``{placeholders}`` are all known."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        _fail(key, f"must be a command as a list of strings, such as [\"qstat\", \"-u\", "
                   f"\"{{user}}\"], not {value!r}")
    if not value[0].strip() or value[0] != value[0].strip():  # (attack review: [""] passed)
        _fail(key, f"must start with the program to run, a name or a path without blanks "
                   f"around it, not {value[0]!r}")
    for part in value:
        _no_nul(part, key)
        _check_fields(part, key, placeholders)
    return tuple(value)


def _ids_argv(value: Any, key: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`_argv` of a command about jobs, which must name them: a
    ``cancel = ["qdel"]`` ran a bare qdel, the job read CANCELLED and ran on,
    and ``["qdel", "-u", "me"]`` would cancel every job of the user (attack
    review)."""
    argv = _argv(value, key, _IDS)
    if not any(field == "ids" for part in argv
               for _, field, _, _ in _FORMATTER.parse(part)):
        _fail(key, f"must hold {{ids}}, where corral puts the job ids, such as "
                   f"[\"{argv[0]}\", \"{{ids}}\"]; without it the command names no job")
    return argv


def _check_fields(text: str, key: tuple[str, ...], placeholders: tuple[str, ...]) -> None:
    """Each ``{field}`` of *text* is one of *placeholders*, bare: a conversion or
    format spec (``{ids:d}``, ``{output!r}``, ``{index:{x}}``) is refused here, or it
    would fail only when filled (a cancel that never runs, a poll that crashes)."""
    try:
        fields = [(field, spec, conversion) for _, field, spec, conversion
                  in _FORMATTER.parse(text) if field is not None]
    except ValueError as error:
        _fail(key, f"{text!r}: {error} (write a literal brace as {{{{ or }}}})")
    for field, spec, conversion in fields:
        if field not in placeholders:
            known = ", ".join(f"{{{p}}}" for p in placeholders) or "none"
            hint = did_you_mean(field, placeholders)
            _fail(key, f"unknown placeholder {{{field}}} in {text!r}"
                       f"{'; ' + hint if hint else ''} (known here: {known})")
        if spec or conversion:
            written = f"{{{field}{'!' + conversion if conversion else ''}" \
                      f"{':' + spec if spec else ''}}}"
            _fail(key, f"{written} in {text!r}: a placeholder takes no conversion or format "
                       f"spec; write {{{field}}}")


def fields_of(text: str) -> list[str]:
    """The placeholders of a checked template, in order."""
    return [field for _, field, _, _ in _FORMATTER.parse(text) if field is not None]


def render(text: str, values: Mapping[str, object], where: str) -> str:
    """A checked template with its placeholders filled from *values* (each by
    ``str``), as ``str.format`` would; ``{{`` and ``}}`` are literal braces.

    Raises:
        BackendError: the template is not one :func:`parse_table` accepts (a
            placeholder missing from *values*, a conversion or format spec);
            *where* (the table's key, ``schedulers.NAME.cancel``) opens its message.
    """
    filled: list[str] = []
    try:
        for literal, field, spec, conversion in _FORMATTER.parse(text):
            filled.append(literal)
            if field is None:
                continue
            if spec or conversion or field not in values:
                raise ValueError(f"{{{field}}} is not a bare placeholder of {sorted(values)}")
            filled.append(str(values[field]))
    except ValueError as error:
        raise BackendError(f"{where}: cannot fill {text!r}: {error}") from None
    return "".join(filled)


def _int(value: Any, key: tuple[str, ...], low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        _fail(key, f"must be an int from {low}{f' to {high}' if high else ' up'}, not {value!r}")
    return value


def _variable(value: Any, key: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        _fail(key, f"must be the name of an environment variable, not {value!r}")
    return value


def _choice(value: Any, key: tuple[str, ...], known: Any) -> str:
    if value not in known:
        hint = did_you_mean(value, known)
        _fail(key, f"{value!r} is not one of {', '.join(map(repr, known))}"
                   f"{'; ' + hint if hint else ''}")
    return str(value)


def _regex(value: Any, key: tuple[str, ...]) -> re.Pattern[str]:
    try:
        return re.compile(_text(value, key), re.MULTILINE)
    except re.error as error:
        return _fail(key, f"not a regular expression: {error}")


def _parser(raw: Mapping[str, Any], prefix: str, default: Parser | None) -> Parser:
    """``<prefix>_columns`` or ``<prefix>_regex``, and ``<prefix>_skip``."""
    columns_key, regex_key = (f"{prefix}_columns",), (f"{prefix}_regex",)
    skip = _int(raw.get(f"{prefix}_skip", default.skip if default else 0), (f"{prefix}_skip",), 0)
    if columns_key[0] in raw and regex_key[0] in raw:
        _fail(regex_key, f"give {columns_key[0]} or {regex_key[0]}, not both")
    if columns_key[0] in raw:
        columns = raw[columns_key[0]]
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            _fail(columns_key, f"must be a list of column names, not {columns!r}")
        for column in columns:
            if column != "-" and column not in COLUMNS:
                _fail(columns_key, f"unknown column {column!r}; "
                      + did_you_mean(column, COLUMNS, otherwise=f"known: {', '.join(COLUMNS)}")
                      + " ('-' for a column corral does not read)")
        twice = sorted({column for column in columns
                        if column != "-" and columns.count(column) > 1})
        if twice:  # (attack review: the later one was read, silently)
            _fail(columns_key, f"column {twice[0]!r} named twice; '-' for a column corral does "
                               "not read")
        return _check_parser(Parser(tuple(columns), None, skip), columns_key, set(columns))
    if regex_key[0] in raw:
        regex = _regex(raw[regex_key[0]], regex_key)
        for group in regex.groupindex:
            if group not in COLUMNS:
                _fail(regex_key, f"unknown group (?P<{group}>...); "
                      + did_you_mean(group, COLUMNS, otherwise=f"known: {', '.join(COLUMNS)}"))
        return _check_parser(Parser(None, regex, skip), regex_key, set(regex.groupindex))
    if default is None:
        _fail(columns_key, f"missing: say how to read the {prefix} output with {columns_key[0]} "
                           f"(names of its columns) or {regex_key[0]} (named groups)")
    return Parser(default.columns, default.regex, skip)


def _check_parser(parser: Parser, key: tuple[str, ...], names: set[str]) -> Parser:
    missing = [name for name in ("id", "state") if name not in names]
    if missing:
        _fail(key, f"missing {missing[0]!r}: the job id and its state must be read from each line")
    return parser


# -- the whole table ---------------------------------------------------------------------------

_KEYS = ("title", "description", "submit", "job_id", "status", "status_columns", "status_regex",
         "status_skip", "states", "cancel", "hold", "release", "signal", "accounting",
         "accounting_columns", "accounting_regex", "accounting_skip", "never_starts",
         "directive_prefix", "directives", "memory_unit", "walltime_format", "array",
         "dependency", "dependency_separator", "ids_separator", "job_id_variable",
         "restart_count_variable", "failed_exit_status", "forget_after",
         "commands_in_job_group", "cancel_ended_words")
_ARRAY_KEYS = ("argument", "index_variable", "first_index", "job_id_variable", "task_id",
               "max_size", "throttle")
_REQUIRED = ("submit", "job_id", "status", "states", "cancel", "job_id_variable")


def parse_table(name: str, raw: Mapping[str, Any]) -> Table:
    """Check the table of the scheduler *name*.

    Raises:
        TableError: a key is unknown (with a "did you mean"), missing or wrong.
    """
    for key in raw:
        if key not in _KEYS:
            _fail((key,), "unknown key; " + did_you_mean(
                key, _KEYS, otherwise="known: " + ", ".join(_KEYS)))
    for key in _REQUIRED:
        if key not in raw:
            _fail((key,), "missing: every scheduler table needs " + ", ".join(_REQUIRED))
    if ("hold" in raw) != ("release" in raw):
        present, absent = ("hold", "release") if "hold" in raw else ("release", "hold")
        _fail((present,), f"{absent} is missing: give both (pause holds, resume releases) "
                          "or neither")
    optional = {key: _ids_argv(raw[key], (key,)) for key in
                ("hold", "release", "signal") if key in raw}
    if "accounting" in raw:
        optional["accounting"] = _argv(raw["accounting"], ("accounting",), _IDS)
    states = raw["states"]
    if not isinstance(states, dict) or not states:
        _fail(("states",), "must be a table of the scheduler's state words, e.g. "
                           "{ Q = \"pending\", R = \"running\" }")
    words = [word.value for word in StateWord]
    never = raw.get("never_starts", {})
    if not isinstance(never, dict):
        _fail(("never_starts",), "must be a table of pending reasons, each \"dependency\" "
                                 "or \"impossible\"")
    status_parser = _parser(raw, "status", None)
    return Table(
        name=name, title=_shown(raw.get("title", name), ("title",)),
        description=_shown(raw.get("description", f"the scheduler [schedulers.{name}] of the "
                                                    "config files"), ("description",)),
        submit=_argv(raw["submit"], ("submit",), ("name", "output", "script")),
        job_id=_job_id(raw["job_id"]),
        status=_argv(raw["status"], ("status",), ("user",)), status_parser=status_parser,
        states=MappingProxyType({word: StateWord(_choice(meaning, ("states", word), words))
                                 for word, meaning in states.items()}),
        cancel=_ids_argv(raw["cancel"], ("cancel",)),
        hold=optional.get("hold"), release=optional.get("release"),
        signal=optional.get("signal"), accounting=optional.get("accounting"),
        accounting_parser=_parser(raw, "accounting", status_parser),
        never_starts=MappingProxyType({
            reason: _choice(kind, ("never_starts", reason), ("dependency", "impossible"))
            for reason, kind in never.items()}),
        directive_prefix=_directive_prefix(raw["directive_prefix"])
        if "directive_prefix" in raw else None,
        directives=_directives(raw.get("directives", {})),
        memory_unit=_choice(raw.get("memory_unit", "MB"), ("memory_unit",), tuple(MEMORY_UNITS)),
        walltime_format=_choice(raw.get("walltime_format", "seconds"), ("walltime_format",),
                                WALLTIME_FORMATS),
        array=_array(raw.get("array", False)),
        dependency=_ids_argv(raw["dependency"], ("dependency",)) if "dependency" in raw
        else None,
        dependency_separator=_text(raw.get("dependency_separator", ":"),
                                   ("dependency_separator",), blank=True),
        ids_separator=_text(raw.get("ids_separator", ","), ("ids_separator",), blank=True),
        job_id_variable=_variable(raw["job_id_variable"], ("job_id_variable",)),
        restart_count_variable=_variable(raw["restart_count_variable"],
                                         ("restart_count_variable",))
        if "restart_count_variable" in raw else None,
        failed_exit_status=_int(raw.get("failed_exit_status", 1), ("failed_exit_status",), 1, 255),
        forget_after_s=_forget_after(raw.get("forget_after", "5m")),
        commands_in_job_group=_flag(raw.get("commands_in_job_group", False),
                                    ("commands_in_job_group",)),
        cancel_ended_words=_words(raw.get("cancel_ended_words", []), ("cancel_ended_words",)),
    )


def _directive_prefix(value: Any) -> str:
    """One line that begins with ``#``: a comment to the shell. "PBS" without its
    ``#`` made each directive a command at the top of the job script, run with
    its errors unseen and no resources asked (attack review)."""
    prefix = _one_line(value, ("directive_prefix",))
    if not prefix.startswith("#"):
        _fail(("directive_prefix",), f"{prefix!r} must begin with '#' (such as \"#PBS\"): "
                                     "the job script is a shell script, and a line without it "
                                     "would run as a command")
    return prefix


def _words(value: Any, key: tuple[str, ...]) -> tuple[str, ...]:
    """A list of non-empty strings, in lower case (they are looked for so)."""
    if not isinstance(value, list):
        _fail(key, f"must be a list of strings, such as [\"job already gone\"], not {value!r}")
    words = tuple(_one_line(word, key).lower() for word in value)
    for word in words:
        if len(word.strip()) < _SHORTEST_WORDS:  # (re-attack review: "e" read every error
            _fail(key, f"{word!r} is too short: a cancel error holding it anywhere would "  # as
                       "read as a job that had ended; give the scheduler's whole phrase")  # gone)
    return words


#: The fewest characters of a cancel_ended_words entry.
_SHORTEST_WORDS = 5


def _job_id(value: Any) -> re.Pattern[str]:
    regex = _regex(value, ("job_id",))
    if regex.groups != 1:
        _fail(("job_id",), f"must have exactly one group, the id, such as '^(\\d+)', "
                           f"not {regex.groups}")
    return regex


def _flag(value: Any, key: tuple[str, ...]) -> bool:
    if not isinstance(value, bool):
        _fail(key, f"must be true or false, not {value!r}")
    return value


def _forget_after(value: Any) -> float:
    try:
        return parse_duration(value, "forget_after")
    except ValueError as error:
        return _fail(("forget_after",), str(error))


def _directives(raw: Any) -> Mapping[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        _fail(("directives",), "must be a table of resource directives, e.g. "
                               "{ cores = [\"-l\", \"ncpus={cores}\"] }")
    for resource in raw:
        if resource not in DIRECTIVES:
            _fail(("directives", resource), _unknown_directive(resource))
    return MappingProxyType({resource: _argv(pieces, ("directives", resource), (resource,))
                             for resource, pieces in raw.items()})


#: What other tools ask of a cluster that corral has no job option for (a
#: "did you mean 'cores'?" for ``nodes`` misled: cold review).
_NO_OPTION_FOR = frozenset({"nodes", "ntasks", "tasks", "ppn", "mpiprocs", "exclusive",
                            "licenses", "mail", "email"})


def _unknown_directive(resource: Any) -> str:
    """Why *resource* cannot have a directive, and where its flags go instead."""
    hint = None if resource in _NO_OPTION_FOR else did_you_mean(resource, DIRECTIVES)
    return (f"{resource!r} is not one of {', '.join(map(repr, DIRECTIVES))}"
            + (f"; {hint}" if hint else "; corral has no job option for it: give the "
               "scheduler's own flags with a job's extra_flags option (extra_flags="
               "[\"--nodes=2\"]), or in this table's submit command for every job"))


def _array_argument(value: Any) -> tuple[str, ...]:
    """The submit's array argument, which says how many tasks there are (its
    ``{last}`` or ``{size}``: "1-2" ran two tasks of three, the third read
    cancelled) and never puts an empty argument on the command line (a lone
    "{throttle}" did when no throttle was asked, and every array failed):
    attack review."""
    key = ("array", "argument")
    argument = _argv(value, key, ("first", "last", "size", "throttle"))
    fields = {field for part in argument for field in fields_of(part)}
    if not fields & {"last", "size"}:
        _fail(key, f"{list(argument)!r} must hold {{last}} or {{size}}, where corral puts how "
                   "many tasks the array has, such as [\"-t\", \"{first}-{last}{throttle}\"]")
    if "{throttle}" in (part.strip() for part in argument):
        _fail(key, "\"{throttle}\" alone is an empty argument when no throttle is asked: join "
                   "it to another, such as \"{first}-{last}{throttle}\"")
    return argument


def _array(raw: Any) -> ArraySyntax | None:
    if raw is False:
        return None
    if not isinstance(raw, dict):
        _fail(("array",), "must be false (no arrays) or a table with argument and "
                          "index_variable")
    for key in raw:
        if key not in _ARRAY_KEYS:
            _fail(("array", key), "unknown key; " + did_you_mean(
                key, _ARRAY_KEYS, otherwise="known: " + ", ".join(_ARRAY_KEYS)))
    for key in ("argument", "index_variable"):
        if key not in raw:
            _fail(("array", key), "missing: an array needs argument (e.g. [\"-t\", "
                                  "\"{first}-{last}{throttle}\"]) and index_variable")
    task_id = _text(raw.get("task_id", "{job}_{index}"), ("array", "task_id"))
    _check_fields(task_id, ("array", "task_id"), ("job", "index"))
    if {"job", "index"} - set(fields_of(task_id)) or "{job}{index}" in task_id:  # (attack
        # review: "{job}" made every task the array's, read running or gone at random; and
        # "{job}{index}" reads job 1's task 23 as job 12's task 3)
        _fail(("array", "task_id"),
              f"{task_id!r} must hold both {{job}} and {{index}}, apart, as the scheduler names "
              "one task of an array (such as \"{job}_{index}\" or \"{job}[{index}]\")")
    throttle = raw.get("throttle")
    if throttle is not None:
        _check_fields(_text(throttle, ("array", "throttle")), ("array", "throttle"), ("limit",))
    return ArraySyntax(
        argument=_array_argument(raw["argument"]),
        index_variable=_variable(raw["index_variable"], ("array", "index_variable")),
        first_index=_int(raw.get("first_index", 1), ("array", "first_index"), 0),
        job_id_variable=_variable(raw["job_id_variable"], ("array", "job_id_variable"))
        if "job_id_variable" in raw else None,
        task_id=task_id, max_size=_int(raw.get("max_size", 1000), ("array", "max_size"), 1),
        throttle=throttle)
