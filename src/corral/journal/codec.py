"""A job's spec to and from JSON: the one form the journal stores it in.

The journal keeps each job's spec so that a process other than the one that
made the job can make it again: the daemon runs a ``corral submit`` command
again after a restart, with every option it was submitted with (its
resources, but also its partition, account, setup lines...). Encoding and
decoding live here, side by side, so that they cannot disagree::

    {"task": {"shell": "make test"},
     "options": {"memory": 2048, "partition": "short", "setup": ["module load gcc"]}}

``options`` holds job options by their registry names, in the parsed form the
registry reads back (memory in MB, durations in seconds), and only those that
differ from their defaults (:func:`corral.spec.spec_options`). ``task`` holds a
command's text or words, or a script's path, words and interpreter; a Python
call is named for people (``{"call": "module.function"}``) but cannot be
rebuilt from JSON: its callable and arguments travel by pickle, not here.

Records of earlier corral versions (flat: ``cores``, ``memory_mb``,
``walltime_s``, ``timeout_s``, ``shell``/``argv`` ... at the top) decode too, so
a daemon started after an upgrade still runs what an older one left.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as _quoted
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from corral.safe_repr import safe_repr
from corral.units import FEWEST_BARE_MEGABYTES, FEWEST_BARE_WALLTIME_S
from corral.spec import (Call, FunctionRef, JobSpec, Script, Shell, Task, make_spec, make_task,
                   spec_options)

__all__ = ["JournaledSpec", "encode_spec", "decode_spec", "rebuild_spec"]


@dataclass(frozen=True, slots=True)
class JournaledSpec:
    """What a journaled spec says: the task when JSON can hold it (commands and
    scripts; None for Python calls), and the job options to make it with."""

    task: Task | None
    options: dict[str, Any]


def encode_spec(spec: JobSpec, meta: Any = None, made: dict[str, str] | None = None) -> str:
    """*spec* as the JSON text the journal stores (see the module docstring),
    with the job's ``meta=`` when it has one (:func:`meta_record`), and where
    a command or script was made to run (see :mod:`corral.core.provenance`).

    Called for every job of a journaled run, so it is built from parts: the
    options' JSON is shared by jobs submitted alike, and a call's task is one
    quoted name.
    """
    task = spec.task
    if isinstance(task, Call):
        task_json = '{"call": ' + _quoted(_call_name(task)) + "}"
    else:
        task_json = json.dumps(_task_record(task))
    kept = "" if meta is None else ', "meta": ' + meta_record(meta)
    if made is not None:
        kept += ', "made": ' + json.dumps(made)
    return '{"task": ' + task_json + ', "options": ' + _options_json(spec) + kept + "}"


#: The most of a job's meta the journal keeps as JSON: every reader of the
#: run (status, report, dashboard) reads it (attack review: 10 MB a job).
_META_MOST = 64 * 1024


def meta_record(meta: Any) -> str:
    """A job's ``meta=`` as the journal keeps it, for ``corral status`` and
    :meth:`corral.Run.results` to give back after the run (cold review: a
    search's trials read back without the hyperparameters they carried): as
    JSON gives it back (a tuple as a list, keys as strings), a value JSON
    cannot hold (a datetime, bytes) as its ``repr``; the whole as its repr,
    cut to a few hundred characters, where that fails (NaN, tuple keys) or
    would pass 64 KB."""
    try:
        text = json.dumps(meta, allow_nan=False, default=safe_repr)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(safe_repr(meta))
    return text if len(text) <= _META_MOST else json.dumps(safe_repr(meta))


def decode_spec(record: str | Mapping[str, Any]) -> JournaledSpec:
    """The task and options of a journaled spec (its JSON text, or that text
    already parsed), in either the current or the earlier flat format.

    Raises:
        ValueError: the record is not a spec, saying what is wrong with it.
    """
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except ValueError as error:
            raise ValueError(f"the journaled spec is not JSON: {error}") from None
    if not isinstance(record, Mapping):
        raise ValueError(f"the journaled spec {safe_repr(record)} is not a JSON object")
    if "options" in record or "task" in record:
        task_record, options = record.get("task") or {}, record.get("options") or {}
    else:
        task_record, options = record, _flat_options(record)
    if not isinstance(task_record, Mapping) or not isinstance(options, Mapping):
        raise ValueError(f"the journaled spec {safe_repr(record)} has no task and options")
    return JournaledSpec(_task_from(task_record), _with_units_said(dict(options)))


def _with_units_said(options: dict[str, Any]) -> dict[str, Any]:
    """*options*, a memory of few megabytes and a walltime of under a minute
    written with their units: the journal keeps megabytes and seconds as bare
    numbers, which the options refuse when so small (gigabytes, or hours or
    minutes, surely meant); a job made with ``memory="4M"`` (attack review) or
    ``walltime="2s"`` is rebuilt so."""
    memory = options.get("memory")
    if type(memory) is int and 0 < memory < FEWEST_BARE_MEGABYTES:
        options["memory"] = f"{memory}M"
    walltime = options.get("walltime")
    if isinstance(walltime, (int, float)) and not isinstance(walltime, bool) \
            and 0 < walltime < FEWEST_BARE_WALLTIME_S:
        options["walltime"] = f"{Decimal(repr(walltime)):f}s"  # (no exponent: it is refused)
    return options


def rebuild_spec(record: str | Mapping[str, Any], task: Task | None = None) -> JobSpec:
    """The :class:`JobSpec` a journaled spec describes: ``rebuild_spec(encode_spec(s))
    == s`` for commands and scripts; for a Python call give its *task*.

    Raises:
        ValueError: a damaged record, a call without *task*, or an option that
            is no longer valid (a directory that was removed since).
    """
    journaled = decode_spec(record)
    task = task if task is not None else journaled.task
    if task is None:
        raise ValueError("the journaled spec is a Python call's, whose function and arguments "
                         "are not in it: give the task")
    return make_spec(make_task(task), journaled.options)


# -- the task ---------------------------------------------------------------------------------


def _task_record(task: Task) -> dict[str, Any]:
    if isinstance(task, Shell):
        if isinstance(task.command, str):
            return {"shell": task.command}
        return {"argv": _words(task.command)}
    if isinstance(task, Script):
        return {"script": task.path, "argv": _words(task.argv), "python": task.python}
    if isinstance(task, FunctionRef):
        return {"function": task.target}
    return {"call": _call_name(task)}


def _call_name(task: Call) -> str:
    """``module.qualified_name`` of a call's function, for people reading the journal."""
    name = getattr(task.fn, "__qualname__", None) or type(task.fn).__qualname__
    return f"{getattr(task.fn, '__module__', None) or '?'}.{name}"


def _words(words: tuple[Any, ...]) -> list[str | None]:
    """Command words as text; a Job's (its result, known only once it has run) as null."""
    return [None if getattr(word, "_is_corral_job", False) else str(word) for word in words]


def _task_from(record: Mapping[str, Any]) -> Task | None:
    """The command or script *record* describes (None for a Python call).

    Raises:
        ValueError: its fields have the wrong types (a damaged journal).
    """
    if "script" in record:
        python = record.get("python")
        task: Task = Script(_text(record, "script"), _word_list(record),
                            *(() if python is None else (_text(record, "python"),)))
    elif "shell" in record:
        task = Shell(_text(record, "shell"))
    elif "argv" in record:
        task = Shell(_word_list(record))
    else:
        return None
    return make_task(task)


def _text(record: Mapping[str, Any], key: str) -> str:
    if not isinstance(record[key], str):
        raise ValueError(f"the journaled spec's {key} {safe_repr(record[key])} is not a string")
    return record[key]


def _word_list(record: Mapping[str, Any]) -> tuple[str, ...]:
    words = record.get("argv") or []
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise ValueError(f"the journaled spec's argv {safe_repr(words)} is not a list of strings "
                         "(a word that was a Job's result cannot be rebuilt)")
    return tuple(words)


# -- the options ------------------------------------------------------------------------------

_CACHE_SIZE = 256
_options_cache: dict[tuple[Any, ...], str] = {}


def _options_json(spec: JobSpec) -> str:
    """The options part of the JSON; jobs submitted alike share one (cached),
    since a run journals thousands of jobs with the same options."""
    global _last_options
    key = (spec.resources, spec.placement, spec.name, spec.named, spec.queue, spec.tokens,
           spec.priority, spec.retries, spec.timeout_s, spec.cwd, spec.env, spec.notify,
           spec.notify_on)
    last_key, last_text = _last_options
    if key == last_key:  # the previous job's: compared item by item, mostly by identity
        return last_text
    text = _options_cache.get(key)  # (hashing Resources and Placement is Python code)
    if text is None:
        if len(_options_cache) >= _CACHE_SIZE:
            _options_cache.clear()
        text = _options_cache[key] = json.dumps(spec_options(spec))
    _last_options = (key, text)
    return text


#: The key and text :func:`_options_json` gave last (one tuple: threads swap it whole).
_last_options: tuple[tuple | None, str] = (None, "")


#: Earlier flat records: the key they used, and the registry option it is.
_FLAT_KEYS = {"cores": "cores", "memory_mb": "memory", "walltime_s": "walltime", "gpus": "gpus",
              "queue": "queue", "tokens": "tokens", "priority": "priority",
              "retries": "retries", "timeout_s": "timeout", "cwd": "cwd", "env": "env",
              "notify": "notify", "notify_on": "notify_on"}


def _flat_options(record: Mapping[str, Any]) -> dict[str, Any]:
    return {name: record[key] for key, name in _FLAT_KEYS.items()
            if record.get(key) is not None}
