"""Immutable descriptions of what a job runs and what it needs.

Four kinds of task, one per way people start work:

* :class:`Call` — a Python callable with arguments, run in a worker process;
* :class:`FunctionRef` — ``"package.module:function"`` imported and called in a worker;
* :class:`Script` — ``python script.py argv…`` in a fresh interpreter;
* :class:`Shell` — a command string for ``/bin/sh -c``, or an argv list run without a shell.

:func:`make_spec` validates a task and its options once, when the job is made,
so that everything downstream can trust a :class:`JobSpec`.

This module imports nothing of corral's but the other vocabulary modules.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import re
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from corral.call_fit import check_call_fits
from corral.options import (INT_LIMIT, JOB_OPTIONS, MAX_ARGUMENT_BYTES, MAX_ITEMS, bounded_tuple,
                            os_text_bytes, os_text_problem, parse_options,
                            too_long_argument_problem)
from corral.safe_repr import safe_repr as _shown
from corral.suggest import did_you_mean

__all__ = ["Call", "FunctionRef", "Script", "Shell", "Task", "Resources", "Placement", "JobSpec",
           "make_task", "make_spec", "named_function", "spec_options", "check_job_id",
           "MAX_ID_BYTES"]

_DOTTED_NAME = r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*"
_FUNCTION_REF = re.compile(rf"{_DOTTED_NAME}:{_DOTTED_NAME}")


@dataclass(frozen=True, slots=True)
class Call:
    """A Python callable and its arguments, run in a persistent worker."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return getattr(self.fn, "__name__", None) or type(self.fn).__name__


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """``"package.module:function"``, imported in the worker and called there."""

    target: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.target.rpartition(":")[2]


@dataclass(frozen=True, slots=True)
class Script:
    """A Python script run as ``python path argv…`` in a fresh interpreter."""

    path: str
    argv: tuple[Any, ...] = ()
    python: str = sys.executable

    @property
    def label(self) -> str:
        return os.path.basename(self.path)


@dataclass(frozen=True, slots=True)
class Shell:
    """A shell command: a string for ``/bin/sh -c``, or an argv tuple run directly."""

    command: str | tuple[Any, ...]

    @property
    def label(self) -> str:
        words = self.command.split() if isinstance(self.command, str) else list(
            map(str, self.command))
        return command_label(words) or "sh"

    @property
    def first_word(self) -> str:
        """The command's first word, its label before :func:`command_label`
        read past prefixes and interpreters: what a job's key holds for the
        name of a command not named otherwise, so that keys stay as earlier
        versions made them (a journal resumed after an upgrade finds its jobs)."""
        if isinstance(self.command, str):
            words = self.command.split()
            return os.path.basename(words[0]) if words else "sh"
        return os.path.basename(str(self.command[0])) if self.command else "sh"


Task = Call | FunctionRef | Script | Shell

#: Words before the program a command runs: ``exec sleep 60`` is a sleep.
_PREFIXES = frozenset({"exec", "env", "nohup", "nice", "time", "command", "stdbuf"})
#: Programs that run a script: ``python train.py`` is named train.py.
_INTERPRETER = re.compile(r"^(?:python[\d.]*|pypy[\d.]*|bash|sh|zsh|ksh|dash|perl|ruby|node|"
                          r"Rscript|julia|php|lua|tclsh)$")
#: What ends a command's first word in the shell: ``nproc; echo ok`` is an nproc.
_SHELL_PUNCTUATION = re.compile(r"[;&|<>()`'\"{}]")


def command_label(words: list[str]) -> str:
    """A command's name for its job: the program it runs, after the words
    that only prefix one (``exec``, ``env``, ``VAR=value``), or the script
    an interpreter runs (``train.py`` of ``python train.py``, ``pkg.main``
    of ``python -m pkg.main``); "" if none is found. Each job of
    ``corral submit -- python ...`` was named python (cold review), and
    ``corral cancel python`` then found several. Never a number, which
    commands would read as a job's id (``python 2`` is named python)."""
    words = [_SHELL_PUNCTUATION.split(word.lstrip("({"), 1)[0] for word in words]
    while words and (os.path.basename(words[0]) in _PREFIXES or "=" in words[0]
                     or words[0].startswith("-") or words[0].isdigit()):  # (nice -n 5 ...)
        words.pop(0)
    if not words or not words[0]:
        return ""
    program, rest = os.path.basename(words[0]), words[1:]
    if program.isnumeric():  # (./7)
        return ""
    if not _INTERPRETER.match(program):
        return program
    script = _script_of(rest)
    return program if not script or script.isnumeric() else script


#: Interpreters' options that take the next word as their value (``python -W ignore``).
_VALUED_OPTIONS = frozenset({"-W", "-X", "-o", "-O", "-r", "--require"})


def _script_of(words: list[str]) -> str:
    """The script (or ``-m`` module) an interpreter's *words* run; "" for none."""
    skip = False
    for position, word in enumerate(words):
        if skip:
            skip = False
        elif word == "-m":
            return words[position + 1] if position + 1 < len(words) else ""
        elif word in ("-c", "-e", "--eval", ""):  # code given inline: no script to name it
            return ""
        elif word.startswith("-"):
            skip = word in _VALUED_OPTIONS
        else:
            return os.path.basename(word.rstrip("/"))
    return ""


@dataclass(frozen=True, slots=True)
class Resources:
    """What a job asks of the machine. Units are normalised: MB and seconds."""

    cores: int = 1
    memory_mb: int | None = None
    walltime_s: float | None = None
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    """Where on a cluster a job goes and how its batch job starts.

    The local backend ignores it, so a script written for a cluster runs
    unchanged on a laptop. ``setup`` lines are shell code by intent; every
    other value reaches the cluster as one argument, never through a shell.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    extra_flags: tuple[str, ...] = ()
    python: str | None = None
    bundle: int = 1


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a job is, validated. ``after`` holds Jobs and names, resolved later."""

    task: Task
    resources: Resources
    name: str
    after: tuple[Any, ...] = ()
    queue: str | None = None
    tokens: int = 0
    priority: int = 0
    retries: int = 0
    timeout_s: float | None = None
    cwd: str | None = None
    env: tuple[tuple[str, str | None], ...] = ()  # None: unset the variable
    notify: tuple[str, ...] = ()
    notify_on: str = "failure"
    placement: Placement = Placement()
    #: Whether *name* was given (``name=``, ``--name``), not the task's label:
    #: a command's key holds its first word in place of a label (see
    #: :attr:`Shell.first_word`), never in place of a name given.
    named: bool = False

    @property
    def kill_after_s(self) -> float | None:
        """The earliest of timeout and walltime: past it the job is killed."""
        limits = [limit for limit in (self.timeout_s, self.resources.walltime_s) if limit]
        return min(limits) if limits else None


def make_task(task: object, args: Sequence[Any] = (),
              kwargs: Mapping[str, Any] | None = None, *, arguments_later: bool = False) -> Task:
    """Turn what a user passed as a task into one of the four task kinds.

    A string is a ``"package.module:function"`` or a path to a ``.py`` script;
    a shell command must be given as :class:`Shell` so that it is never
    confused with a script path. A callable must be able to take *args* and
    *kwargs* (:func:`corral.call_fit.check_call_fits`), unless they come
    later (*arguments_later*: a map's, which checks its calls itself).

    Raises:
        ValueError: the task is none of the accepted kinds, or names a script
            or module that does not exist.
        TypeError: the callable cannot take the arguments.
    """
    args, kwargs = _arguments(args), _keyword_arguments(kwargs)
    if isinstance(task, (Call, FunctionRef, Script, Shell)):
        if args or kwargs:
            raise ValueError(f"args/kwargs go inside the {type(task).__name__}(...) task itself")
        return _checked(task)
    if isinstance(task, (str, os.PathLike)):
        text = _task_text(task)
        if _FUNCTION_REF.fullmatch(text):
            return _checked_function(FunctionRef(text, args, kwargs), arguments_later)
        if text.endswith(".py") or os.path.isfile(text):
            if kwargs:
                raise ValueError(f"script {_shown(text)} takes command-line arguments only, "
                                 "not kwargs")
            return _checked(Script(text, args))
        raise ValueError(
            f"task {_shown(text)} is neither 'package.module:function' nor a path to a .py "
            "script" + _function_ref_hint(text)
            + "; for a shell command use corral.Shell(...) or Scheduler.shell(...)")
    if callable(task):
        if not arguments_later:
            check_call_fits(task, args, kwargs)
        return Call(task, args, kwargs)
    raise ValueError(
        f"task {_shown(task)} is not runnable: give a callable, 'package.module:function', "
        "a .py script path, or corral.Shell(command)"
    )


def _arguments(args: object) -> tuple[Any, ...]:
    """*args* as a tuple; a dict or a string is refused rather than iterated,
    which would silently pass its keys or its characters as the arguments."""
    if type(args) is tuple and len(args) <= MAX_ITEMS:  # submit()'s *args: the hot path
        return args
    if isinstance(args, (str, bytes, bytearray, Mapping)) or not isinstance(args, Iterable):
        raise ValueError(
            f"args={_shown(args)} must be a list or tuple of positional arguments (for a "
            "script: its command-line words, e.g. ['--x', '1']); give keyword arguments of a "
            "call as kwargs={...}")
    return bounded_tuple(args, "args")


def _keyword_arguments(kwargs: object) -> dict[str, Any]:
    if kwargs is None or (type(kwargs) is dict and not kwargs):
        return {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
        raise ValueError(f"kwargs={_shown(kwargs)} must be a dict of keyword arguments with "
                         "string keys")
    return dict(kwargs)


def _task_text(task: str | os.PathLike[str]) -> str:
    try:
        text = os.fspath(task)
    except Exception:  # a bytes path's TypeError, or a hostile __fspath__
        text = None
    if not isinstance(text, str):
        raise ValueError(f"task {_shown(task)} is a path that cannot be read as text; give a "
                         "str path")
    return text


def _checked(task: Task) -> Task:
    """*task* as given by the user, validated (and normalised: an absolute
    script path, tuples of arguments)."""
    if isinstance(task, FunctionRef):
        return _checked_function(task)
    if isinstance(task, Call):
        if not callable(task.fn):
            raise ValueError(f"Call({_shown(task.fn)}, ...): the function is not callable")
        args, kwargs = _arguments(task.args), _keyword_arguments(task.kwargs)
        check_call_fits(task.fn, args, kwargs)
        return Call(task.fn, args, kwargs)
    if isinstance(task, Script):
        return _checked_script(task)
    return _checked_shell(task)


def _function_ref_hint(text: str) -> str:
    """``; did you mean 'mod:func'?`` for a function named another tool's way:
    hypertunity's ``"mod.py::func"``, or ``"pkg.mod.func"``; else ""."""
    found = re.fullmatch(r"(?P<module>[\w./]+?)(?:\.py)?::?(?P<name>\w+)", text)
    if found is None:
        found = re.fullmatch(r"(?P<module>\w+(?:\.\w+)*)\.(?P<name>\w+)", text)
    if found is None:
        return ""
    module = found["module"].strip("./").replace("/", ".")
    suggestion = f"{module}:{found['name']}"
    return f"; did you mean {suggestion!r}?" if _FUNCTION_REF.fullmatch(suggestion) else ""


def _checked_function(task: FunctionRef, arguments_later: bool = False) -> FunctionRef:
    target = task.target
    if not isinstance(target, str) or not _FUNCTION_REF.fullmatch(target):
        raise ValueError(f"function reference {_shown(target)} must look like "
                         "'package.module:function'")
    module = target.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except Exception:  # importing its package failed: the same answer for the user
        found = None
    if found is None:
        raise ValueError(f"function reference {_shown(target)}: no module named "
                         f"{_shown(module)} can be imported")
    args, kwargs = _arguments(task.args), _keyword_arguments(task.kwargs)
    function = _check_function_name(target, sys.modules.get(module))
    if function is not None and not arguments_later:
        check_call_fits(function, args, kwargs)
    return FunctionRef(target, args, kwargs)


def named_function(target: str) -> Callable[..., Any] | None:
    """The plain function a valid ``"package.module:function"`` names, when
    this process has imported its module (unchanged since), else None: what
    a map of it can check its calls against."""
    return _check_function_name(target, sys.modules.get(target.partition(":")[0]))


def _check_function_name(target: str, module: Any) -> Callable[..., Any] | None:
    """Refuse a function name that *module* (when this process has imported it
    already) surely does not have: a typo then fails here, once, not in every job.
    Return the function, when it is a plain one (its calls can be checked).

    Nothing of the module's runs here: names are looked up without calling a
    module's or a class's ``__getattr__`` or a property, and where one of those
    could make the name, the job tells. A module not imported yet is not
    imported here (for its side effects and its cost), nor is one whose file
    changed since this process started (the workers import it afresh).
    """
    if module is None or _changed_since_start(module):
        return None
    module_name, _, path = target.partition(":")
    found, walked = module, list[str]()
    for part in path.split("."):
        owner_of_found = found
        try:
            found = inspect.getattr_static(found, part)
        except AttributeError:
            if _answers_dynamically(found):
                return None
            owner = (_shown(f"{module_name}:{'.'.join(walked)}") if walked
                     else f"module {_shown(module_name)}")
            hint = did_you_mean(part, _public_names(found))
            raise ValueError(f"function reference {_shown(target)}: {owner} has no attribute "
                             f"{_shown(part)}" + (f"; {hint}" if hint else "")) from None
        # What the worker's getattr gives as it is: a module's function, a
        # class's own (unbound) or static one; not one bound on the way (a
        # classmethod, a method of an instance, an enum member or a metaclass).
        plain = isinstance(owner_of_found, types.ModuleType) or (
            isinstance(owner_of_found, type) and vars(owner_of_found).get(part) is found
            and not isinstance(found, classmethod))
        if isinstance(found, (staticmethod, classmethod)):
            found = found.__func__
        elif not callable(found) and hasattr(type(found), "__get__"):
            return None  # a property or another descriptor: what it gives is not looked at here
        walked.append(part)
    if not callable(found):
        raise ValueError(f"function reference {_shown(target)} is not callable")
    if not plain or type(found) is not types.FunctionType:  # (a proxy passes isinstance)
        return None
    return found if _as_a_worker_imports_it(found, module_name) else None


def _as_a_worker_imports_it(function: types.FunctionType, module_name: str) -> bool:
    """Whether *function* is what a worker's fresh import finds: defined in
    the module named (or a module of its package, as a package's
    ``__init__`` takes them in) from a file unchanged since this process
    started. Not one patched in here from elsewhere, nor one re-exported
    from a file edited since."""
    defined_in = getattr(function, "__module__", None)
    if not isinstance(defined_in, str) or not (
            defined_in == module_name or defined_in.startswith(module_name + ".")):
        return False
    try:
        return os.stat(function.__code__.co_filename).st_mtime < _STARTED
    except (OSError, ValueError, TypeError):
        return False


def _process_started() -> float:
    """When this process started (the epoch's seconds): a module file changed
    since then may differ from what the process imported, even before corral
    was imported. Where /proc cannot say, when this module was imported."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            ticks = int(stat.read().rpartition(b")")[2].split()[19])
        with open("/proc/stat", "rb") as system:
            booted = next(int(line.split()[1]) for line in system if line.startswith(b"btime"))
        return booted + ticks / os.sysconf("SC_CLK_TCK") - 1  # (btime is whole seconds)
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


_STARTED = _process_started()


def _changed_since_start(module: Any) -> bool:
    path = getattr(module, "__file__", None)
    try:
        return isinstance(path, str) and os.stat(path).st_mtime >= _STARTED
    except OSError:
        return True


def _answers_dynamically(owner: Any) -> bool:
    """Whether *owner* may have names its ``__dict__`` does not show: a module's
    ``__getattr__`` (PEP 562), or one of its type's."""
    if isinstance(owner, types.ModuleType):
        return "__getattr__" in vars(owner)
    try:
        inspect.getattr_static(type(owner), "__getattr__")
    except AttributeError:
        return False
    return True


#: Names offered as "did you mean" at most (difflib over 300,000 takes seconds).
_HINT_NAMES = 5000


def _public_names(owner: Any) -> list[str]:
    try:
        names = dir(owner)
    except Exception:  # a __dir__ that raises
        return []
    return [name for name in names[:_HINT_NAMES * 2]
            if isinstance(name, str) and not name.startswith("_")][:_HINT_NAMES]


def _checked_script(task: Script) -> Script:
    for what, text in (("script", task.path), ("script interpreter", task.python)):
        problem = os_text_problem(text) if isinstance(text, str) else "is not a string path"
        if problem:
            raise ValueError(f"{what} {_shown(text)} {problem}")
    path = os.path.abspath(task.path)
    if not os.path.isfile(path):
        raise ValueError(f"script {_shown(task.path)} does not exist")
    argv = _arguments(task.argv)
    _refuse_other_interpreters(task.path, path, argv)
    _check_words(argv, f"script {_shown(task.path)}", "argument")
    return Script(path, _plain_words(argv), task.python)


def _refuse_other_interpreters(given: str, path: str, argv: tuple) -> None:
    """Refuse a script whose first line names another interpreter than
    Python's (``#!/bin/sh``): a Script runs with Python, where a shell script
    failed later with a SyntaxError (cold review: PLAMS's runscripts are shell
    scripts). A file without such a line is taken as Python."""
    try:
        with open(path, "rb") as script:
            first = script.readline(256)
    except OSError:
        return  # (unreadable here: the job says why where it runs)
    if not first.startswith(b"#!") or b"python" in first:
        return
    interpreter = first[2:].decode(errors="replace").strip()
    # (By its interpreter: a command needs no execute bit, nor a path from $PATH.)
    words = ", ".join(repr(str(word)) for word in (*interpreter.split(), given, *argv))
    raise ValueError(f"script {_shown(given)} begins with #!{interpreter}, not Python, which "
                     "a script job runs with; run it as a command: "
                     f"corral.Shell([{words}]) or scheduler.shell([{words}])")


def _checked_shell(task: Shell) -> Shell:
    command = task.command
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("shell command is empty")
        problem = os_text_problem(command)
        if problem:
            raise ValueError(f"shell command {_shown(command)} {problem}")
        problem = too_long_argument_problem(command)
        if problem:
            raise ValueError(f"shell command {_shown(command)} {problem}; put a long script in "
                             "a file and run the file, and pass large data in a file")
        return Shell(str.__str__(command))  # (a str subclass of the script's: plain text)
    if isinstance(command, (bytes, bytearray, Mapping)) or not isinstance(command, Sequence):
        raise ValueError(f"shell command {_shown(command)} must be a string or a list of "
                         "arguments")
    command = bounded_tuple(command, "shell command")
    if not command:
        raise ValueError("shell command is an empty argument list")
    _check_words(command, "shell command", "word")
    return Shell(_plain_words(command))


def _check_words(words: tuple[Any, ...], whole: str, word_is: str) -> None:
    """Refuse command-line words the OS would refuse when the job starts.

    A word is a string, a path, a number (any object whose ``str`` is the
    word) or a Job, whose result is the word when it has run. *whole* names
    the command ("shell command"), *word_is* what each word is to it.
    """
    characters = 0
    texts: list[str] = []
    for index, word in enumerate(words):
        text, problem = _word_text(word)
        if problem:
            raise ValueError(f"{whole}: {word_is} {index} ({_shown(word)}) {problem}; command "
                             "words are strings, paths, numbers, or Jobs whose results are those")
        if text is None:
            continue
        problem = too_long_argument_problem(text)
        if problem:
            raise ValueError(f"{whole}: {word_is} {index} ({_shown(word)}) {problem}; pass large "
                             "data in a file")
        texts.append(text)
        characters += len(text)
    # (each word also costs the OS its closing NUL and a pointer to it)
    limit, overhead = _command_line_limit(), len(texts) * (1 + _POINTER_BYTES)
    if characters * 4 + overhead > limit and (
            total := sum(map(os_text_bytes, texts)) + overhead) > limit:
        raise ValueError(f"{whole}: its words come to {total:,} bytes, more than the "
                         f"{limit // 1024:,} KiB this system lets a command line hold ('Argument "
                         "list too long'); pass large data in a file")


#: What the OS counts for each word's pointer in a command line's size.
_POINTER_BYTES = 8


def _word_text(word: Any) -> tuple[str | None, str | None]:
    """``(the word's text as the OS gets it, None)``, ``(None, None)`` for a
    Job (its result is known later), or ``(None, why it is no word)``. Its
    ``str()`` is taken once: a hostile one that answers once and then raises
    must not pass the check and fail the job."""
    if getattr(word, "_is_corral_job", False):
        return None, None
    if word is None or isinstance(word, (bytes, bytearray, Mapping, list, tuple, set, frozenset)):
        return None, f"is a {type(word).__name__}, not one word"
    try:
        if isinstance(word, str):  # (as sent: a str subclass's own text, see _plain_word)
            text = str.__str__(word)
        else:
            text = os.fspath(word) if isinstance(word, os.PathLike) else str(word)
    except Exception:  # a hostile __str__, an int too long to write out
        return None, "cannot be written as text"
    if not isinstance(text, str):
        return None, "is a path that is not text"
    if not isinstance(word, str) and _AN_ADDRESS.search(text):
        # (cold review: a lock among the words ran as "<unlocked _thread.lock object
        # at 0x7fa0...>": surely a mistake, and a different word every run)
        return None, "has no text of its own, only its type and memory address"
    problem = os_text_problem(text)
    return (None, problem) if problem else (text, None)


#: The end of the text Python gives an object that defines none: ``<... at 0x7f...>``.
_AN_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>\Z")


def _command_line_limit() -> int:
    """ARG_MAX: what the words of a command line and its environment may come to."""
    try:
        return max(os.sysconf("SC_ARG_MAX"), MAX_ARGUMENT_BYTES)
    except (ValueError, OSError):
        return 2 * 1024 * 1024


def _plain_words(words: tuple[Any, ...]) -> tuple[Any, ...]:
    """*words* with those of the script's own types as their text: a worker
    unpickles a command's words, and a class defined in ``__main__`` (an
    ``enum.StrEnum``'s member) is not there to unpickle: the worker died and
    the job read "worker lost" (hostile-input review)."""
    if all(type(word) is str for word in words):
        return words
    return tuple(_plain_word(word) for word in words)


def _plain_word(word: Any) -> Any:
    if isinstance(word, str):
        return str.__str__(word)
    if type(word).__module__ != "__main__" or getattr(word, "_is_corral_job", False):
        return word  # (a number, a path: the worker has their classes)
    return os.fspath(word) if isinstance(word, os.PathLike) else str(word)


def make_spec(task: Task, options: Mapping[str, Any]) -> JobSpec:
    """Validate *options* for *task* and build its :class:`JobSpec`.

    Raises:
        ValueError: an unknown option (with a suggestion) or a bad value.
    """
    if not options:  # submit()'s usual case: every field but the task's own is shared
        resources, _, *rest = _plain_fields()
        return JobSpec(task, resources, task.label, *rest)
    return _checked_spec(task, options)


@functools.cache
def _plain_fields() -> tuple[Any, ...]:
    """The fields after ``task`` of a spec made without options (its
    ``name``, the task's label, is made anew for each task)."""
    plain = _checked_spec(Call(print), {})
    return tuple(getattr(plain, name) for name in _FIELDS_AFTER_TASK)


def _checked_spec(task: Task, options: Mapping[str, Any]) -> JobSpec:
    values = {name: option.default for name, option in JOB_OPTIONS.items()}
    values.update(parse_options(options))
    check_cwd_exists(values["cwd"], values["after"])
    resources = Resources(
        cores=values["cores"], memory_mb=values["memory"],
        walltime_s=values["walltime"], gpus=values["gpus"],
    )
    return JobSpec(
        task=task, resources=resources, name=values["name"] or task.label,
        after=values["after"], queue=values["queue"], tokens=values["tokens"],
        priority=values["priority"], retries=values["retries"], timeout_s=values["timeout"],
        cwd=values["cwd"], env=values["env"], notify=values["notify"],
        notify_on=values["notify_on"],
        placement=Placement(
            partition=values["partition"], account=values["account"], qos=values["qos"],
            constraint=values["constraint"], setup=values["setup"],
            extra_flags=values["extra_flags"], python=values["python"], bundle=values["bundle"]),
        named=values["name"] is not None,
    )



def check_cwd_exists(cwd: str | None, after: Sequence[Any]) -> None:
    """Refuse a *cwd* that is no directory, unless the job waits for others:
    one of them may make it (a build's ``mkdir build``, then a command run in
    ``build``: refused when it was made, review). Where it is still missing
    when the job starts, the job fails, naming it.

    Raises:
        ValueError: *cwd* is not an existing directory and nothing comes first.
    """
    if cwd is not None and not after and not os.path.isdir(cwd):
        raise ValueError(f"cwd={cwd!r} is not an existing directory (a job that runs after "
                         "the one that makes it may name it: after=)")


def spec_maker(template: JobSpec) -> Callable[[tuple[Any, ...]], JobSpec]:
    """Make specs like *template* (a call's, already validated) whose call
    takes other positional arguments: what ``map()`` makes for each item.

    Built by the constructors directly, with every other field read once:
    two ``dataclasses.replace`` per call cost twice as much.
    """
    task = template.task
    if not isinstance(task, (Call, FunctionRef)):
        raise TypeError(f"spec_maker() takes a call's spec, not {type(task).__name__}'s")
    kind, kwargs = type(task), task.kwargs
    target = task.fn if isinstance(task, Call) else task.target
    rest = tuple(getattr(template, name) for name in _FIELDS_AFTER_TASK)

    def make(arguments: tuple[Any, ...]) -> JobSpec:
        return JobSpec(kind(target, arguments, kwargs), *rest)  # type: ignore[arg-type]

    return make


#: JobSpec's fields after its first, ``task`` (see :func:`spec_maker`).
_FIELDS_AFTER_TASK = tuple(item.name for item in fields(JobSpec))[1:]


def spec_options(spec: JobSpec) -> dict[str, Any]:
    """The job options that make *spec* again: ``make_spec(spec.task,
    spec_options(spec)) == spec``. The inverse of :func:`make_spec`, kept
    beside it so that an option added to one is added to the other.

    Options at their registry default are left out, and so is ``after``: it
    holds Jobs, which only the run that made them can resolve (the journal
    records dependencies by id instead). The name is left out when none was
    given (the task's own label, which :func:`make_spec` gives it again).
    """
    resources, placement = spec.resources, spec.placement
    values: dict[str, Any] = {
        "cores": resources.cores, "memory": resources.memory_mb,
        "walltime": resources.walltime_s, "gpus": resources.gpus,
        "name": spec.name if spec.named else None,
        "queue": spec.queue, "tokens": spec.tokens, "priority": spec.priority,
        "retries": spec.retries, "timeout": spec.timeout_s, "cwd": spec.cwd,
        "env": spec.env, "notify": spec.notify, "notify_on": spec.notify_on,
        "partition": placement.partition, "account": placement.account, "qos": placement.qos,
        "constraint": placement.constraint, "setup": placement.setup,
        "extra_flags": placement.extra_flags, "python": placement.python,
        "bundle": placement.bundle,
    }
    return {name: dict(value) if name == "env" else value for name, value in values.items()
            if value != JOB_OPTIONS[name].default}

#: A job's id names its directory: well below the 255 bytes a file name may have.
MAX_ID_BYTES = 200


def check_job_id(job_id: object) -> None:
    """Refuse an ``id=`` that would fail only later: when the journal stores it
    (an int beyond 64 bits) or when the job's directory is made (a name too
    long, or one that is no single directory name).

    Raises:
        ValueError: naming the id and the forms accepted.
    """
    if job_id is None:
        return
    if isinstance(job_id, bool) or not isinstance(job_id, (int, str)):
        raise ValueError(f"id={_shown(job_id)} must be an int or a string")
    if isinstance(job_id, int):
        if not -INT_LIMIT <= job_id < INT_LIMIT:
            raise ValueError(f"id={_shown(job_id)} must be an int from -2**63 to 2**63 - 1 "
                             "(the journal stores 64-bit ints); use a string for a larger id")
        return
    problem = _id_text_problem(job_id)
    if problem:
        raise ValueError(
            f"id={_shown(job_id)} {problem}: a string id is a non-empty name of at most "
            f"{MAX_ID_BYTES} bytes of UTF-8, without '/', NUL or characters that do not print, "
            "and neither '.' nor '..'")


def _id_text_problem(text: str) -> str | None:
    if text in ("", ".", ".."):
        return "cannot name a directory (it is empty, '.' or '..')"
    if "/" in text or "\0" in text:
        return "cannot name a directory (it holds '/' or NUL)"
    try:
        size = len(text.encode("utf-8"))
    except UnicodeError:
        return "cannot name a directory (it cannot be written as UTF-8)"
    if size > MAX_ID_BYTES:
        return f"cannot name a directory (it is too long ({size} bytes))"
    if not text.replace(" ", "").isprintable():
        # A newline split its row of `corral status`, an escape recoloured it,
        # U+2028 showed as a space that cannot be typed back.
        return ("cannot be shown or typed as it is (it holds a control character or an "
                "invisible one: a newline, a tab, a line separator…)")
    return None
