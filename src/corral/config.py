"""Config files and named profiles, read in one place.

corral reads two TOML files: the user's (``$CORRAL_CONFIG``, else the
platform's config folder) and ``corral.toml`` in the working directory, which
overrides the first key by key. They hold the ``[smtp]`` settings used to mail
job notices and ``[profiles.NAME]`` tables of job options, so that a set of
options typed often (``walltime``, ``memory``, ``notify``...) gets a name, and
``[schedulers.NAME]`` tables, each a batch scheduler described in settings that
becomes the backend NAME (see :mod:`corral.backends.batch.described`): loading
the config registers them, so that every corral process that reads the config
(a Scheduler, the ``corral`` command, the daemon) knows them.

Everything is checked when the files are loaded, and every error is a
:class:`ConfigError` that names the file, the line and the dotted key, so a
typo in a profile is found before a job is submitted with it, and where it is.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import stat
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from corral.backends import (AUTO, DEFAULT_BACKEND, BackendInfo, backend_info, backend_names,
                             register_backend, unregister_backend)
from corral.config_files import (CONFIG_NAME, config_paths, named_by_variables,
                                 platform_config_path, same_file, site_config_path,
                                 user_config_path, where_to_write)
from corral.errors import CorralError
from corral.options import laid_over, megabytes_meant_otherwise, parse_options
from corral.safe_repr import printable, safe_repr, shows_as_written
from corral.suggest import did_you_mean
from corral.units import DURATION_FORMS, parse_duration, parse_memory

__all__ = [
    "CONFIG_NAME",
    "Config",
    "ConfigError",
    "DaemonSettings",
    "MAX_CONFIG_BYTES",
    "SmtpSettings",
    "tables_in",
    "scheduler_names_in",
    "load_config",
    "register_schedulers",
    "user_config_path",
    "check_idle",
    "profile_key",
]

#: The file name of both the user's config file and the local one.

_TABLES = ("smtp", "profiles", "daemon", "schedulers")
#: Options a profile may not hold, and why.
#: At most this many problems of a file follow the first in its one error.
_MORE_PROBLEMS_SHOWN = 10

_NOT_IN_PROFILES = {
    "after": "after= names jobs of one run, so it cannot be part of a profile in a config "
             "file; pass it when submitting",
    "profile": "a profile cannot include another profile; copy the options it needs into it",
}


class ConfigError(CorralError, ValueError):
    """A config file that cannot be read or holds a wrong key or value.

    ``str()`` is one line, ``PATH:LINE: KEY: PROBLEM``, the form editors and
    terminals turn into a link; ``path``, ``line`` (int or None), ``key``
    (dotted, e.g. ``profiles.short.memory``, or None) and ``problem`` are
    also attributes.
    """

    def __init__(self, problem: str, *, path: str | os.PathLike[str],
                 line: int | None = None, key: str | None = None) -> None:
        self.problem = problem
        self.path = Path(path)
        self.line = line
        self.key = key
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")

    def __reduce__(self):  # keep the keyword fields when pickled
        return (_rebuild_config_error, (self.problem, self.path, self.line, self.key))


def _rebuild_config_error(problem: str, path: Path, line: int | None,
                          key: str | None) -> ConfigError:
    return ConfigError(problem, path=path, line=line, key=key)


def _default_sender() -> str:
    return f"corral@{os.uname().nodename}"


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """How to reach the mail server that delivers job notices.

    ``password`` is never read from a file: it comes from the environment
    variable named by ``password_env`` in ``[smtp]``, and is left out of
    ``repr()``.
    """

    host: str = "localhost"
    port: int = 25
    sender: str = field(default_factory=_default_sender)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    ssl: bool = False
    timeout: float = 30.0
    #: Why no mail can be sent: ``password_env`` names a variable that is not
    #: set (``PATH:LINE: smtp.password_env: ...``). Said by a job that asks for
    #: mail, not by every command that reads the file (corral profiles,
    #: options and backends failed over a mail password).
    unset_password: str | None = None


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """How the daemon behind ``corral submit`` packs jobs (``[daemon]``).

    None means the Scheduler's default (all CPUs but one, all memory, the
    visible GPUs); ``idle`` is how long it stays with nothing to do.
    """

    cores: int | None = None
    memory_mb: int | None = None
    gpus: int | None = None
    queues: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    tokens: int = 0
    idle: float = 300.0
    #: A registered backend's name, or "auto" (see corral.backends).
    backend: str = DEFAULT_BACKEND
    #: Where that backend's own scheduler listens (Dask: "tcp://host:8786").
    address: str | None = None
    #: The backend's settings, as ``Scheduler(backend_options=...)`` takes them.
    backend_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Config:
    """What the config files say: profiles, SMTP settings, and where it came from.

    ``profiles`` maps a profile name to its job options exactly as written
    (``"2G"`` stays ``"2G"``), ready for ``Scheduler.options(**profile)`` or the
    command line. ``sources`` are the files actually read; ``searched`` all the
    files looked for, read or not, so messages can say where to write.
    ``smtp`` is None when no file has an ``[smtp]`` table: ``notify=`` is then
    refused when the job is made, rather than its mail lost at the first failure.
    """

    profiles: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({}))
    smtp: SmtpSettings | None = None  # None: no [smtp] table, so no mail can be sent
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    #: The backends of the ``[schedulers.NAME]`` tables, by name (the local file's
    #: table replaces the user's of the same name whole).
    schedulers: Mapping[str, BackendInfo] = field(default_factory=lambda: MappingProxyType({}))
    sources: tuple[Path, ...] = ()
    searched: tuple[Path, ...] = ()

    def where_to_set_smtp(self) -> str:
        """Where a person sets the mail server, for an error that needs one:
        every file this config read or looked for (a daemon's are the user's
        and its run directory's, not the submitting directory's)."""
        files = where_to_write(self.searched or (user_config_path(),))
        return f'set [smtp] host in {files} (e.g. host = "smtp.example.org", port = 587)'


    def profile(self, name: str) -> dict[str, Any]:
        """Return a copy of the job options of profile *name*, as written.

        Raises:
            ValueError: no profile has that name; the message suggests the
                closest name and says which files profiles come from; or
                *name* is not a string (``profile=None``, a number).
        """
        if not isinstance(name, str) or not name:
            known = ", ".join(sorted(self.profiles)) or "none are defined"
            raise ValueError(f"profile={safe_repr(name)} must be the name of a [profiles.NAME] "
                             f"table of the config files (known profiles: {known})")
        if profile_key(name) in self.profiles:
            return copy.deepcopy(dict(self.profiles[profile_key(name)]))
        if not self.profiles:
            where = where_to_write(self.searched)
            raise ValueError(f"unknown profile {safe_repr(name)}: no profiles are defined; "
                             f"add a [profiles.{_dotted((name,))}] table to {where}")
        names = sorted(self.profiles)
        hint = did_you_mean(name, names, otherwise=f"known profiles: {', '.join(names)}")
        sources = ", ".join(str(path) for path in self.sources)
        raise ValueError(f"unknown profile {safe_repr(name)}; {hint} "
                         f"(profiles come from {sources})")


def profile_key(name: str) -> str:
    """*name* as profiles are known by: its Unicode NFC form, so that "café"
    typed with a combining accent (a macOS file name, a paste) finds the file's
    precomposed one, not "unknown profile 'café'; did you mean 'café'?"."""
    return unicodedata.normalize("NFC", name)


def load_config(cwd: str | os.PathLike[str] | None = None,
                run_dir: str | os.PathLike[str] | None = None) -> Config:
    """Read the site's config file (:func:`corral.config_files.site_config_path`),
    the user's, then ``corral.toml`` in *run_dir* (where
    given: ``corral submit``'s, whose daemon reads that file too), then
    ``corral.toml`` in *cwd*, and check them.

    *cwd* defaults to the current directory. A missing file counts as empty,
    unless an environment variable names it (:func:`named_by_variables`).
    Each file overrides those before it: a profile in several is merged option by
    option and ``[smtp]`` key by key, the later value winning. The SMTP password
    is read from the environment variable named by ``smtp.password_env`` now.

    The ``[schedulers.NAME]`` tables are registered as backends (again: no-op;
    a table that changed replaces the one registered before), before ``[daemon]
    backend`` is checked, which may name one.

    Raises:
        ConfigError: a file cannot be read (or is no regular file, or is over
            :data:`MAX_CONFIG_BYTES`), or a variable names one that does not
            exist, or it is not valid TOML, or holds an
            unknown table, an unknown or invalid job option in a profile, a
            bad ``[smtp]`` key or value, or a bad scheduler table (or one named
            as a backend that is not described in settings); the error names
            file, line and key.
    """
    user_file, in_cwd = config_paths(cwd)
    site_file = site_config_path()
    searched = [user_file] if site_file is None or same_file(site_file, user_file) else \
        [site_file, user_file]
    for nearer in ([] if run_dir is None else [Path(run_dir) / CONFIG_NAME]) + [in_cwd]:
        if not any(same_file(nearer, path) or nearer == path for path in searched):
            searched.append(nearer)
    profiles: dict[str, dict[str, Any]] = {}
    smtp: dict[str, _Origin] = {}
    smtp_table = False  # an empty [smtp] table still means "the defaults: localhost:25"
    daemon: dict[str, Any] = {}
    sources = []
    named = named_by_variables()
    layers = [layer for layer in (_read(path, named.get(path)) for path in searched)
              if layer is not None]
    schedulers: dict[str, _Origin] = {}
    for layer in layers:
        schedulers.update(layer.schedulers())
    _register(schedulers)
    for layer in layers:
        path = layer.path
        sources.append(path)
        for name, options in layer.profiles().items():
            profiles[name] = laid_over(profiles.get(name, {}), options)
        smtp.update(layer.smtp())
        smtp_table = smtp_table or layer.has_table("smtp")
        daemon.update(layer.daemon())
    frozen = {name: MappingProxyType(options) for name, options in profiles.items()}
    return Config(profiles=MappingProxyType(frozen),
                  smtp=_smtp_settings(smtp) if smtp_table else None,
                  daemon=DaemonSettings(**daemon),
                  schedulers=MappingProxyType({name: origin.value
                                               for name, origin in schedulers.items()}),
                  sources=tuple(sources),
                  searched=tuple(searched))


def tables_in(path: Path, names: Iterable[str]) -> list[str]:
    """Which of the tables *names* the config file at *path* has (none if it
    cannot be read: reading it for its own use says why)."""
    try:
        layer = _read(path)
    except ValueError:
        return []
    return [] if layer is None else [name for name in names if layer.has_table(name)]


def scheduler_names_in(path: Path) -> set[str]:
    """The NAMEs of the ``[schedulers.NAME]`` tables of the config file at *path*,
    the rest of it unchecked (none where it cannot be parsed): whether a mistake
    in a file is what keeps a scheduler it describes unknown."""
    try:
        raw = _read_bytes(path, None)
        data = tomllib.loads(raw.decode("utf-8")) if raw is not None else {}
    except (ValueError, RecursionError):  # (ConfigError, not UTF-8, not TOML)
        return set()
    tables = data.get("schedulers")
    return set(tables) if isinstance(tables, dict) else set()


def register_schedulers(config: Config) -> None:
    """Register the backends of *config*'s ``[schedulers.NAME]`` tables again where
    they are not (load_config did, but a test or a program may have unregistered
    them since). A name registered meanwhile by something else is left as it is."""
    for name, info in config.schedulers.items():
        if name not in backend_names():
            register_backend(info)


def _register(schedulers: Mapping[str, _Origin]) -> None:
    """Register each described scheduler, replacing one described earlier under
    its name with another table; refuse a name any other backend has."""
    if not schedulers:  # (the reader of tables costs every command 25 ms)
        return
    from corral.backends.batch.described import table_of

    for name, origin in schedulers.items():
        info: BackendInfo = origin.value
        if name in backend_names():
            known = backend_info(name)
            if table_of(known) is None:
                raise ConfigError(f"{name!r} is already a backend ({known.description}); "
                                  "give the scheduler another name",
                                  path=origin.path, line=origin.line, key=f"schedulers.{name}")
            if table_of(known) == table_of(info):
                continue
            unregister_backend(name)
        register_backend(info)


# -- one file ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Origin:
    """A raw value and where it was written, for errors found after merging."""

    value: Any
    path: Path
    line: int | None


class _Layer:
    """One parsed config file, checked table by table."""

    def __init__(self, path: Path, text: str, data: dict[str, Any]) -> None:
        self.path = path
        self._data = data
        self._lines = _key_lines(text)
        for table, value in data.items():
            if table not in _TABLES:
                self.fail((table,), _unknown("table", table, _TABLES))
            if not isinstance(value, dict):
                self.fail((table,), f"must be a table ([{table}]), not {_kind(value)}")

    def has_table(self, table: str) -> bool:
        return table in self._data

    def fail(self, key: tuple[str, ...], problem: str) -> NoReturn:
        raise ConfigError(problem, path=self.path, line=self.line(key), key=_dotted(key))

    def fail_all(self, problems: list[tuple[tuple[str, ...], str]]) -> NoReturn:
        """Raise one error for several *problems* of this file, ``(key, problem)``
        in the file's order: the first's, its message going on with the others,
        each with its line and key (still one line, as :class:`ConfigError` says)."""
        (key, problem), others = problems[0], problems[1:]
        if others:
            shown = others[:_MORE_PROBLEMS_SHOWN]
            problem += f"; and {len(others)} more: " + "; ".join(
                f"line {self.line(other)}: {_dotted(other)}: {said}" for other, said in shown)
            if len(others) > len(shown):
                problem += f"; and {len(others) - len(shown)} after those"
        self.fail(key, problem)

    def line(self, key: tuple[str, ...]) -> int | None:
        """The line that defines *key*, else the closest enclosing table's."""
        for end in range(len(key), 0, -1):
            line = self._lines.get(key[:end])
            if line is not None:
                return line
        return None

    def profiles(self) -> dict[str, dict[str, Any]]:
        """The ``[profiles.NAME]`` tables, every option checked. Every problem
        is reported at once, in one error (see :meth:`fail_all`): a file is
        then fixed in one round, not one round per typo."""
        checked = {}
        problems: list[tuple[tuple[str, ...], str]] = []
        written: dict[str, str] = {}  # each profile's key: the name as the file writes it
        for name, options in self._data.get("profiles", {}).items():
            if profile_key(name) in written:
                problems.append((("profiles", name), _written_twice(written[profile_key(name)])))
                continue
            written[profile_key(name)] = name
            if not name.strip():  # (profile="" names no profile: attack review)
                problems.append((("profiles", name), "a profile needs a name: "
                                                     "[profiles.short], not [profiles.\"\"]"))
                continue
            if not shows_as_written(name):  # (attack review: an ESC sequence in a name
                problems.append((("profiles", name),  # rewrote the terminal of `corral profiles`)
                                 f"{safe_repr(name)}: a profile's name is shown and typed: give "
                                 "it no control character, tab, newline or invisible mark"))
                continue
            if not isinstance(options, dict):
                problems.append((("profiles", name), f"a profile must be a table of job options "
                                                     f"([profiles.{_dotted((name,))}]), "
                                                     f"not {_kind(options)}"))
                continue
            for option, value in options.items():
                key = ("profiles", name, option)
                if option in _NOT_IN_PROFILES:
                    problems.append((key, _NOT_IN_PROFILES[option]))
                    continue
                if option == "cwd" and value == "":
                    problems.append((key, "cwd = '' names no directory; leave it out for the "
                                          "directory a job is made in"))
                    continue
                if option == "cwd" and isinstance(value, str):
                    # Relative to this file, ~ expanded: the same directory for the
                    # command, the daemon (in the run directory) and a script
                    # (attack review: the daemon died at start on a relative one).
                    value = options[option] = os.path.normpath(
                        self.path.parent.absolute() / os.path.expanduser(value))
                problem = _bare_number_problem(option, value)
                if problem is not None:
                    problems.append((key, problem))
                    continue
                try:
                    parse_options({option: value})
                except ValueError as error:
                    problems.append((key, str(error)))
            checked[profile_key(name)] = options
        if problems:
            self.fail_all(problems)
        return checked

    def daemon(self) -> dict[str, Any]:
        checked: dict[str, Any] = {}
        for name, value in self._data.get("daemon", {}).items():
            key = ("daemon", name)
            check = _DAEMON_KEYS.get(name)
            if check is None:
                self.fail(key, _unknown("daemon setting", name, _DAEMON_KEYS))
            try:
                field_name, parsed = check(value, name)
            except ValueError as error:
                self.fail(key, str(error))
            checked[field_name] = parsed
        return checked

    def schedulers(self) -> dict[str, _Origin]:
        """Each ``[schedulers.NAME]`` table as its (unregistered) backend."""
        if not self._data.get("schedulers"):  # (its reader costs every command 25 ms)
            return {}
        from corral.backends.batch.described import TableError, describe

        described = {}
        for name, table in self._data.get("schedulers", {}).items():
            key = ("schedulers", name)
            if not isinstance(table, dict):
                self.fail(key, f"a scheduler must be a table ([schedulers.{_dotted((name,))}]), "
                               f"not {_kind(table)}")
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or name == AUTO:
                self.fail(key, f"a scheduler's name is a backend name: a lowercase word other "
                               f"than {AUTO!r} (letters, digits and '_'), not {name!r}")
            try:
                info = describe(name, table)
            except ValueError as error:
                problem = error.problem if isinstance(error, TableError) else str(error)
                self.fail(key + getattr(error, "key", ()), problem)
            described[name] = _Origin(info, self.path, self.line(key))
        return described

    def smtp(self) -> dict[str, _Origin]:
        checked = {}
        for name, value in self._data.get("smtp", {}).items():
            key = ("smtp", name)
            check = _SMTP_KEYS.get(name)
            if check is None:
                if name == "password":
                    self.fail(key, "passwords are not stored in config files; put it in an "
                                   "environment variable and name that with password_env")
                self.fail(key, _unknown("smtp setting", name, _SMTP_KEYS))
            try:
                checked[name] = _Origin(check(value, name), self.path, self.line(key))
            except ValueError as error:
                self.fail(key, str(error))
        return checked


#: The most of a config file that is read: a larger one is no settings (a log or
#: a data file named by mistake), and one without end (/dev/zero) was read until
#: memory ran out (attack review).
MAX_CONFIG_BYTES = 1024 * 1024


def _read(path: Path, variable: str | None = None) -> _Layer | None:
    """The config file at *path*, parsed; None where there is none, unless the
    environment variable *variable* names it (a file a person asked for)."""
    raw = _read_bytes(path, variable)
    return None if raw is None else _parsed(path, raw)


def _read_bytes(path: Path, variable: str | None) -> bytes | None:
    """The bytes of the regular file at *path*, at most :data:`MAX_CONFIG_BYTES`.

    ``/dev/null`` is the conventional "no file" (``CORRAL_CONFIG=/dev/null``
    reads none). Anything else is refused before it is opened: every command
    reads the config, and a FIFO there hung them all (attack review). It is looked at
    again once open, without waiting (O_NONBLOCK), in case it was swapped meanwhile.
    """
    if os.path.realpath(path) == os.devnull:  # (also a link to it: re-attack review)
        return b""
    try:
        _check_regular(path, os.stat(path).st_mode)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if variable is None:
            return None
        raise ConfigError(_missing_named_file(variable), path=path) from None
    except OSError as error:
        raise _unreadable(path, error) from error
    try:
        _check_regular(path, os.fstat(descriptor).st_mode)
        with open(descriptor, "rb", closefd=False) as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise _unreadable(path, error) from error
    finally:
        os.close(descriptor)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES // 2**20} MB, the most corral reads "
                          "of a config file; is it the right file?", path=path)
    return raw


def _missing_named_file(variable: str) -> str:
    """Why a file that the environment variable *variable* names, and that does
    not exist, is refused, and what to do instead."""
    instead = (f"unset it to read {platform_config_path()}, or set it to {os.devnull} to read "
               "none" if variable == "CORRAL_CONFIG" else "set it empty to read no site file")
    return f"no such file, yet ${variable} names it; create it, correct ${variable}, or {instead}"


def _check_regular(path: Path, mode: int) -> None:
    """Refuse a config file that is not a regular file, naming what it is."""
    if stat.S_ISREG(mode):
        return
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    raise ConfigError(f"{kind}, not a regular file; a config file is a TOML text file, and "
                      "nothing else is read", path=path)


def _unreadable(path: Path, error: OSError) -> ConfigError:
    return ConfigError(f"cannot read the config file: {error.strerror or error}", path=path)


def _parsed(path: Path, raw: bytes) -> _Layer:
    """The config file *path* holding *raw*, checked table by table."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text, as TOML must be", path=path, line=line) from error
    if text.startswith("\ufeff"):  # (an editor's "UTF-8 with BOM")
        raise ConfigError("begins with a byte-order mark (U+FEFF), which TOML does not allow; "
                          "save the file as UTF-8 without one", path=path, line=1)
    try:
        data = tomllib.loads(text)
    except RecursionError as error:  # (arrays in arrays, thousands deep: attack review)
        deep = re.search(r"[\[{](?:\s*[\[{]){63}", text)
        raise ConfigError("invalid TOML: values nested too deeply (arrays or tables inside "
                          "each other)", path=path,
                          line=None if deep is None else text.count("\n", 0, deep.start()) + 1
                          ) from error
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        at = _TOML_POSITION.search(message)
        if at:
            line, column = int(at["line"]), int(at["column"])
            problem = f"invalid TOML at column {column}: {message[:at.start()].rstrip()}"
        else:  # "(at end of document)"
            line = text.count("\n") + (0 if text.endswith("\n") else 1)
            problem = f"invalid TOML: {message}"
        raise ConfigError(problem, path=path, line=line) from error
    except ValueError as error:  # (Python reads no integer of more than 4,300 digits:
        # its own message named neither the file nor the line: attack review)
        long = re.search(r"[0-9_]{4300,}", text)
        raise ConfigError("invalid TOML: a number of more than 4,300 digits, more than Python "
                          "reads; nothing here counts that high", path=path,
                          line=None if long is None else text.count("\n", 0, long.start()) + 1
                          ) from error
    return _Layer(path, text, data)


_TOML_POSITION = re.compile(r"\s*\(at line (?P<line>\d+), column (?P<column>\d+)\)")


# -- [smtp] ----------------------------------------------------------------------------------

def _bare_number_problem(option: str, value: Any) -> str | None:
    """Why a profile's number without a unit is refused, as the command line
    refuses it (options review: ``memory = 4`` and ``walltime = 10`` in a
    profile gave jobs 4 MB and 10 s where ``--memory 4`` and ``--walltime 10``
    are refused): a duration's bare number is seconds to corral's Python API
    and minutes to Slurm, and a few megabytes are no job's need."""
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if number is not None and not (math.isfinite(number) and number > 0):
        return None  # (out of range: parse_options says so, offering no "0s" or "infm")
    if option in ("walltime", "timeout") and number is not None:
        return (f"{option} = {number:g} is ambiguous without a unit: write \"{number:g}s\" for "
                f"seconds or \"{number:g}m\" for minutes")
    if option == "memory" and (few := megabytes_meant_otherwise(value)) is not None:
        return (f"memory = {few} is megabytes without a unit, so little that gigabytes are "
                f"likely meant: write \"{few}G\" (or \"{few}M\" if megabytes are meant)")
    return None


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, not {_kind(value)}")
    return value.strip()


def _port(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{name}={value!r} must be an int from 1 to 65535 "
                         "(25, or 587 with starttls, or 465 with ssl)")
    return value


def _sender(value: Any, name: str) -> str:
    # (A line break made every notice fail to compose: attack review.)
    from email.utils import parseaddr  # (8 ms: only a config with an [smtp] table pays)

    if (not isinstance(value, str) or "@" not in parseaddr(value)[1]
            or not value.isprintable()):
        raise ValueError(f"{name}={value!r} must be an e-mail address such as "
                         "'corral@lab.example.org'")
    return value


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"{name}={value!r} must be true or false")


def _timeout(value: Any, name: str, zero: bool = False) -> float:
    if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return parse_duration(value, name, zero=zero)
    raise ValueError(f"{name}={value!r} is not a duration; use {DURATION_FORMS}")


def _env_name(value: Any, name: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f"{name}={value!r} must be the name of an environment variable, "
                         "such as 'CORRAL_SMTP_PASSWORD'")
    return value


_SMTP_KEYS: dict[str, Callable[[Any, str], Any]] = {
    "host": _string,
    "port": _port,
    "from": _sender,
    "username": _string,
    "password_env": _env_name,
    "starttls": _bool,
    "ssl": _bool,
    "timeout": _timeout,
}


def _smtp_settings(keys: Mapping[str, _Origin]) -> SmtpSettings:
    def fail(name: str, problem: str) -> NoReturn:
        origin = keys[name]
        raise ConfigError(problem, path=origin.path, line=origin.line, key=f"smtp.{name}")

    values = {name: origin.value for name, origin in keys.items()}
    if values.get("starttls") and values.get("ssl"):
        fail("ssl", "ssl and starttls exclude each other: use ssl = true for a server that "
                    "speaks TLS from the start (port 465), starttls = true for one that "
                    "upgrades a plain connection (port 587)")
    password = unset = None
    if "password_env" in values:
        variable = values["password_env"]
        if "username" not in values:
            fail("password_env", "a password needs a username: set smtp.username too")
        password = os.environ.get(variable)
        if password is None:  # said when mail is asked for: corral profiles works without it
            origin = keys["password_env"]
            unset = str(ConfigError(f"the environment variable {variable!r} is not set; export "
                                    "it with the SMTP password", path=origin.path,
                                    line=origin.line, key="smtp.password_env"))
    settings = SmtpSettings()
    return SmtpSettings(
        host=values.get("host", settings.host),
        port=values.get("port", settings.port),
        sender=values.get("from", settings.sender),
        username=values.get("username"),
        password=password,
        starttls=values.get("starttls", False),
        ssl=values.get("ssl", False),
        timeout=values.get("timeout", settings.timeout),
        unset_password=unset,
    )


# -- [daemon] ---------------------------------------------------------------------------------

#: Above any real count (a 20-digit one stopped the daemon with "int too large
#: to convert", naming no file: attack review); the Scheduler's bound too.
_LARGEST_COUNT = 2**31 - 1


def _count(minimum: int) -> Callable[[Any, str], tuple[str, int]]:
    def check(value: Any, name: str) -> tuple[str, int]:
        if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
                or value > _LARGEST_COUNT):
            raise ValueError(f"{name}={value!r} must be an int from {minimum} to "
                             f"{_LARGEST_COUNT}")
        return name, value
    return check


def _daemon_memory(value: Any, name: str) -> tuple[str, int]:
    return "memory_mb", parse_memory(value, name)


#: How long a daemon may wait idle ([daemon] idle, $CORRAL_DAEMON_IDLE): long
#: enough to serve the submit that started it, which asks once it has started;
#: short enough that it goes some day.
SHORTEST_IDLE_S = 1.0
LONGEST_IDLE_S = 365 * 86400.0


def check_idle(seconds: float, said: str) -> float:
    """Return *seconds* where a daemon may wait that long idle; else raise a
    ValueError, *said* followed by the range. The one check of the config's key
    and of the variable: the file took 0.01 s, which the variable refused, and
    every submit then failed on a daemon gone before it was asked (attack review).
    """
    if not SHORTEST_IDLE_S <= seconds <= LONGEST_IDLE_S:  # (NaN too: it never went idle)
        raise ValueError(f"{said} from {SHORTEST_IDLE_S:g} to {LONGEST_IDLE_S:,.0f} (a year)")
    return seconds


def _daemon_idle(value: Any, name: str) -> tuple[str, float]:
    seconds = _timeout(value, name, zero=True)  # (0 too: check_idle says the range)
    return "idle", check_idle(seconds, f"{name}={value!r} is {seconds:,.10g} s; the seconds a "
                                       "daemon waits idle must be")


def _queues(value: Any, name: str) -> tuple[str, Mapping[str, int]]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a table of queue names and how many of their jobs "
                         "may run at once, e.g. queues = { gpu = 1, io = 4 }")
    for queue, capacity in value.items():
        if not queue:  # (taken here, it stopped the daemon, naming no file: attack review)
            raise ValueError(f"{name}: {queue!r} is not a queue name; give each queue a name")
        _count(1)(capacity, f"{name}.{queue}")
    return "queues", MappingProxyType(dict(value))


def _daemon_backend(value: Any, name: str) -> tuple[str, str]:
    known = (*backend_names(), AUTO)  # those registered now, sites' own included
    if not isinstance(value, str) or value not in known:
        hint = did_you_mean(value, known)
        raise ValueError(f"{name}={value!r} must be one of {', '.join(map(repr, known))}"
                         + (f"; {hint}" if hint else ""))
    return "backend", value


def _daemon_address(value: Any, name: str) -> tuple[str, str]:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}={value!r} must be a scheduler's address, e.g. "
                         "\"tcp://host:8786\"")
    return "address", value.strip()


def _daemon_backend_options(value: Any, name: str) -> tuple[str, Mapping[str, Any]]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a table of the backend's settings, e.g. "
                         "backend_options = { n_workers = 2 }")
    return "backend_options", MappingProxyType(dict(value))


_DAEMON_KEYS: dict[str, Callable[[Any, str], tuple[str, Any]]] = {
    "cores": _count(1),
    "memory": _daemon_memory,
    "gpus": _count(0),
    "queues": _queues,
    "tokens": _count(0),
    "idle": _daemon_idle,
    "backend": _daemon_backend,
    "address": _daemon_address,
    "backend_options": _daemon_backend_options,
}


# -- where keys are written ---------------------------------------------------------------

_BARE = r"[A-Za-z0-9_-]+"
_PART = rf"""(?:{_BARE}|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_DOTTED_KEY = rf"{_PART}(?:[ \t]*\.[ \t]*{_PART})*"
_HEADER = re.compile(rf"\[\[?[ \t]*(?P<key>{_DOTTED_KEY})[ \t]*\]\]?")
_KEY = re.compile(rf"(?P<key>{_DOTTED_KEY})[ \t]*=")
_STRING = re.compile(
    r'"{3}(?:[^\\]|\\.)*?"{3,5}'  # multi-line basic: it may end in up to 5 quotes
    r"|'{3}.*?'{3,5}"  # multi-line literal
    r'|"(?:[^"\\\n]|\\.)*"'  # basic
    r"|'[^'\n]*'",  # literal
    re.DOTALL,
)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map every key path (table headers, dotted and inline keys) to its first line.

    tomllib keeps no positions, so this scans the text, which tomllib has
    already accepted: it only needs to tell keys from values, not to judge.
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    last: tuple[str, ...] = ()  # the key whose value is being read
    nesting: list[tuple[str, ...] | None] = []  # open inline tables (their key) and arrays (None)
    expect_key = True
    line, pos = 1, 0
    while pos < len(text):
        char = text[pos]
        if char == "\n":
            line += 1
            expect_key = not nesting
            pos += 1
        elif char in " \t\r":
            pos += 1
        elif char == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
        elif expect_key and not nesting and (header := _HEADER.match(text, pos)):
            table = _split_key(header["key"])
            for end in range(1, len(table) + 1):  # [profiles.x] also places "profiles"
                lines.setdefault(table[:end], line)
            expect_key = False
            pos = header.end()
        elif expect_key and (key := _KEY.match(text, pos)):
            last = (nesting[-1] or ()) if nesting else table
            last = last + _split_key(key["key"])
            for end in range(len(table) + 1, len(last) + 1):
                lines.setdefault(last[:end], line)
            expect_key = False
            pos = key.end()
        elif string := _STRING.match(text, pos):
            line += string.group().count("\n")
            pos = string.end()
        else:
            if char == "{":
                nesting.append(last)
                expect_key = True
            elif char == "[":
                nesting.append(None)
            elif char in "]}" and nesting:
                nesting.pop()
            elif char == ",":
                expect_key = bool(nesting) and nesting[-1] is not None
            pos += 1
    return lines


def _split_key(dotted: str) -> tuple[str, ...]:
    return tuple(_unquote(part) for part in re.findall(_PART, dotted))


def _unquote(part: str) -> str:
    if part.startswith('"'):
        return tomllib.loads(f"k = {part}")["k"]
    if part.startswith("'"):
        return part[1:-1]
    return part


def _dotted(key: Iterable[str]) -> str:
    """Write a key path as TOML would: ``profiles.short.memory``, quoting odd parts
    (their control characters escaped: a message shows the key to a terminal)."""
    return ".".join(part if re.fullmatch(_BARE, part)
                    else printable(json.dumps(part, ensure_ascii=False)) for part in key)


# -- messages ---------------------------------------------------------------------------------

def _written_twice(first: str) -> str:
    """Why a profile named as one before it, in another Unicode form, is refused:
    names are compared in their NFC form (:func:`profile_key`)."""
    return (f"the same name as profile {first!r} before it, in another Unicode form (NFC "
            "and NFD); give one of them another name")


def _unknown(what: str, name: str, known: Iterable[str]) -> str:
    known = list(known)
    hint = did_you_mean(name, known, otherwise=f"known: {', '.join(known)}")
    return f"unknown {what} {name!r}; {hint}"


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)
