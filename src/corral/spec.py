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

import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from .options import JOB_OPTIONS, parse_options

__all__ = ["Call", "FunctionRef", "Script", "Shell", "Task", "Resources", "Placement", "JobSpec",
           "make_task", "make_spec"]

_FUNCTION_REF = re.compile(r"^[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*$")


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
        if isinstance(self.command, str):
            words = self.command.split()
            return os.path.basename(words[0]) if words else "sh"
        return os.path.basename(str(self.command[0]))


Task = Union[Call, FunctionRef, Script, Shell]


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

    @property
    def kill_after_s(self) -> float | None:
        """The earliest of timeout and walltime: past it the job is killed."""
        limits = [limit for limit in (self.timeout_s, self.resources.walltime_s) if limit]
        return min(limits) if limits else None


def make_task(task: object, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Task:
    """Turn what a user passed as a task into one of the four task kinds.

    A string is a ``"package.module:function"`` or a path to a ``.py`` script;
    a shell command must be given as :class:`Shell` so that it is never
    confused with a script path.

    Raises:
        ValueError: the task is none of the accepted kinds, or names a script
            or module that does not exist.
    """
    kwargs = dict(kwargs or {})
    if isinstance(task, (Call, FunctionRef, Script, Shell)):
        if args or kwargs:
            raise ValueError(f"args/kwargs go inside the {type(task).__name__}(...) task itself")
        return _checked(task)
    if isinstance(task, (str, os.PathLike)):
        text = os.fspath(task)
        if _FUNCTION_REF.match(text):
            return _checked(FunctionRef(text, tuple(args), kwargs))
        if text.endswith(".py") or os.path.isfile(text):
            if kwargs:
                raise ValueError(f"script {text!r} takes command-line arguments only, not kwargs")
            return _checked(Script(text, tuple(args)))
        raise ValueError(
            f"task {text!r} is neither 'package.module:function' nor a path to a .py script; "
            "for a shell command use corral.Shell(...) or Scheduler.shell(...)"
        )
    if callable(task):
        return Call(task, tuple(args), kwargs)
    raise ValueError(
        f"task {task!r} is not runnable: give a callable, 'package.module:function', "
        "a .py script path, or corral.Shell(command)"
    )


def _checked(task: Task) -> Task:
    if isinstance(task, FunctionRef):
        if not _FUNCTION_REF.match(task.target):
            raise ValueError(f"function reference {task.target!r} must look like 'package.module:function'")
        module = task.target.partition(":")[0]
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise ValueError(f"function reference {task.target!r}: no module named {module!r} can be imported")
    elif isinstance(task, Script):
        path = os.path.abspath(task.path)
        if not os.path.isfile(path):
            raise ValueError(f"script {task.path!r} does not exist")
        return Script(path, tuple(task.argv), task.python)
    elif isinstance(task, Shell):
        command = task.command
        if isinstance(command, str):
            if not command.strip():
                raise ValueError("shell command is empty")
        else:
            if isinstance(command, (bytes, Mapping)) or not isinstance(command, Sequence):
                raise ValueError(f"shell command {command!r} must be a string or a list of arguments")
            command = tuple(command)
            if not command:
                raise ValueError("shell command is an empty argument list")
        return Shell(command)
    return task


def make_spec(task: Task, options: Mapping[str, Any]) -> JobSpec:
    """Validate *options* for *task* and build its :class:`JobSpec`.

    Raises:
        ValueError: an unknown option (with a suggestion) or a bad value.
    """
    values = {name: option.default for name, option in JOB_OPTIONS.items()}
    values.update(parse_options(options))
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
    )
