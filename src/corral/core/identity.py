"""What identifies a job across runs, and how the journal describes it.

Resuming a run means recognising, in a fresh process, the jobs that a previous
process already ran. A job's *key* is therefore computed from what it does,
never from memory addresses or submission times:

* a job given an explicit ``id`` is keyed by that id: the id decides, also
  where the digest of what it does (below, kept as its slot) cannot (its
  arguments pickle differently in every process), and a rerun that gives the
  id to other work is warned that it gets the stored result;
* otherwise by a digest of its task (function by module, qualified name and
  bytecode; a ``module:function`` target, a script or a command by their text),
  its arguments, name, ``cwd=`` and ``env=``, and the keys of the jobs it
  depends on (the directory a command runs in without a ``cwd=`` is kept
  beside the key, and a script's file is compared with when it ran: see
  :mod:`corral.core.provenance`). Identical jobs submitted several times are
  numbered in order (``…#2``), so a deterministic script maps onto its
  previous run job by job.

Resources, retries and priority are left out: asking for more memory does not
change what a finished job computed.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import io
import itertools
import pickle
import re
import shlex
import types
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

from corral.spec import Call, FunctionRef, JobSpec, Script, Shell
from corral.core.provenance import made_in
from corral.journal.codec import encode_spec
from corral.runtime.chunks import ChunkRunner, PlainCalls
from corral.runtime.payload import plain_arguments_pickle

if TYPE_CHECKING:
    from corral.core.record import JobRecord

__all__ = ["job_digest", "job_digests", "describe", "call_label", "chunk_place",
           "map_signature"]


def _callable_parts(fn: Any) -> tuple[bytes, bytes]:
    """What a callable computes with, as ``(its code, the values it reads)``:
    its code (cached per function) and the values it reads besides its
    arguments — defaults, closure cells and the plain-data globals it names —
    which are read afresh every time, since a closure made with k=10 is
    another function than one made with k=2. A ``functools.partial`` is its
    function's with the arguments it binds (pickled, it names its function
    only, so an edit of the function's body went unseen and a rerun restored
    results of the old code); a callable object is its class by name and its
    state, both values. A job's key has both; its slot the values alone."""
    if type(fn) is functools.partial:
        code, reads = _callable_parts(fn.func)
        return b"partial\0" + code, reads + _arguments_bytes(fn.args, dict(fn.keywords))
    try:
        code = _cached_identity(fn)
    except TypeError:  # an unhashable callable object
        code = _identity(fn)
    if getattr(fn, "__code__", None) is None:
        return b"", code  # an object: its class by name, and its state
    if (not getattr(fn, "__closure__", None) and getattr(fn, "__defaults__", None) is None
            and getattr(fn, "__kwdefaults__", None) is None
            and not _global_names(fn.__code__)):  # reads nothing: the common tiny function
        return code, _READS_NOTHING_BYTES
    helpers = _helpers(fn)
    read: tuple = (getattr(fn, "__defaults__", None), getattr(fn, "__kwdefaults__", None),
                   _cells(fn), _plain_globals(fn, helpers.names if helpers else None))
    if helpers is not None:  # (none: the bytes as ever, so the keys of earlier runs match)
        code += helpers.code
        read += (tuple((name, helper.__defaults__, helper.__kwdefaults__, _cells(helper))
                       for name, helper in helpers.functions
                       if helper.__defaults__ or helper.__kwdefaults__ or helper.__closure__),)
    return code, (_READS_NOTHING_BYTES if read == _READS_NOTHING else _stable_bytes(read))


def _cells(fn: Any) -> tuple:
    """The values of *fn*'s closure cells (None for an empty one)."""
    cells = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # an empty cell
            cells.append(None)
    return tuple(cells)


#: What a function that reads nothing besides its arguments reads (its bytes
#: made once: the same bytes as ever, so the keys of earlier runs still match).
_READS_NOTHING = (None, None, (), ())


def _plain_globals(fn: Any, names: tuple[str, ...] | None = None) -> tuple:
    """The globals *fn*'s code names (or *names*: its and its helpers') whose
    values are plain data (numbers, strings, containers of them): a constant
    at the top of a script that changed means the job computes something else."""
    space = getattr(fn, "__globals__", {})
    return tuple((name, space[name]) for name in names or _global_names(fn.__code__)
                 if name in space and _is_plain(space[name]))


class _ScriptHelpers(NamedTuple):
    """What a function of the script calls of the script (see :func:`_helpers`)."""

    functions: tuple[tuple[str, types.FunctionType], ...]  # by name, sorted
    code: bytes  # their code, for the key
    names: tuple[str, ...]  # every global name it and they name, for their constants
    seen: tuple[tuple[str, Any], ...]  # the globals read to find them: unchanged, still right


#: Per function of the script: its helpers as last found (a walk of a script of
#: 500 functions took a millisecond a submit: re-attack review).
_helpers_found: weakref.WeakKeyDictionary[Any, _ScriptHelpers] = weakref.WeakKeyDictionary()


def _helpers(fn: Any) -> _ScriptHelpers | None:
    """For a function of the script (``__main__``: a script, a notebook), the
    functions of the script that its code calls, and theirs in turn, by name
    (a decorator's and a ``functools.partial``'s function too); None if it
    calls none. What it calls there is part of what it computes (cold review,
    a notebook user: a helper edited in a cell, and the rerun restored the
    results of the old one). A module's functions are not followed (the
    README says so): a library's function names dozens."""
    if getattr(fn, "__module__", None) != "__main__":
        return None
    space = fn.__globals__
    known = _helpers_found.get(fn)
    if known is not None and all(space.get(name) is value for name, value in known.seen):
        return known if known.functions else None
    found: dict[str, types.FunctionType] = {}
    seen: dict[str, Any] = {}
    pending = [fn]
    while pending and len(found) < _HELPERS_SEEN:
        for name in _loaded_globals(pending.pop().__code__):
            value = seen[name] = space.get(name)
            label = name
            for _ in range(_WRAPPERS_SEEN):  # a decorated helper: the wrapper and what it
                # wraps (diff review: an edited functools.cache helper was not seen)
                if (type(value) is types.FunctionType and value is not fn and label not in found
                        and value.__module__ == "__main__"):
                    found[label] = value
                    pending.append(value)
                inner = value.func if type(value) is functools.partial else getattr(
                    value, "__wrapped__", None)
                value, label = inner, label + ".__wrapped__"
                if value is None:
                    break
    functions = tuple(sorted(found.items()))
    names = tuple(sorted({name for each in (fn, *found.values())
                          for name in _global_names(each.__code__)
                          if not _not_data(seen.get(name))}))  # (seen: checked as it is)
    code = b"\0uses\0" + b"\0".join(name.encode() + b"=" + _identity(helper)
                                      for name, helper in functions)
    _helpers_found[fn] = known = _ScriptHelpers(functions, code, names, tuple(seen.items()))
    return known if functions else None


def _not_data(value: Any) -> bool:
    """A function, class or module: no constant of the script's (left out of
    the names looked at for those; their identity is checked instead)."""
    return callable(value) or isinstance(value, types.ModuleType)


#: At most this many helpers of a job's function are followed (the first found).
_HELPERS_SEEN = 64
#: How deep a helper's decorators are followed.
_WRAPPERS_SEEN = 4


@functools.lru_cache(maxsize=256)
def _loaded_globals(code: types.CodeType) -> tuple[str, ...]:
    """The names *code* (and the functions inside it) reads as globals: not
    its attributes' names, which ``co_names`` holds too (diff review: a helper
    named ``prepare`` was taken for ``model.prepare``)."""
    names: set[str] = set()
    pending = [code]
    while pending:
        current = pending.pop()
        names.update(instruction.argval for instruction in dis.get_instructions(current)
                     if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"))
        pending.extend(const for const in current.co_consts if isinstance(const, types.CodeType))
    return tuple(sorted(names))


@functools.lru_cache(maxsize=256)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """Every name *code* (and the functions inside it) may read as a global, sorted."""
    names: set[str] = set()
    pending = [code]
    while pending:
        current = pending.pop()
        names.update(current.co_names)
        pending.extend(const for const in current.co_consts if isinstance(const, types.CodeType))
    return tuple(sorted(names))


_PLAIN = (int, float, complex, str, bytes, bool, type(None))


def _is_plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if depth < 3 and isinstance(value, (tuple, list, frozenset, set)):
        return all(_is_plain(item, depth + 1) for item in value)
    if depth < 3 and isinstance(value, dict):
        return all(_is_plain(key, depth + 1) and _is_plain(item, depth + 1)
                   for key, item in value.items())
    return False


@functools.lru_cache(maxsize=256)
def _cached_identity(fn: Any) -> bytes:
    return _identity(fn)


def _identity(fn: Any) -> bytes:
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    code = getattr(fn, "__code__", None)
    if code is not None:
        return f"{module}:{name}:".encode() + _code_bytes(code)
    return f"{module}:{name}:".encode() + _stable_bytes(fn)


def _code_bytes(code: types.CodeType) -> bytes:
    """What a code object does, without where it is: its bytecode, names and
    constants (nested functions alike), but not its file name or line
    numbers, so that a comment added above a function keeps its jobs' keys."""
    parts = [code.co_code, repr((code.co_names, code.co_varnames, code.co_freevars,
                                 code.co_cellvars, code.co_argcount, code.co_kwonlyargcount,
                                 code.co_posonlyargcount, code.co_flags)).encode()]
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            parts.append(_code_bytes(constant))
        elif isinstance(constant, frozenset):  # set order depends on the hash seed
            parts.append(repr(sorted(map(repr, constant))).encode())
        else:
            parts.append(repr(constant).encode())
    return b"\0".join(parts)


_ATOMS = frozenset({int, float, str, bytes, bool, type(None)})


def _canonical(value: Any) -> Any:
    """*value* with sets put in a fixed order: their iteration order depends on
    the interpreter's hash seed, so pickling them as they are gives other
    bytes in every run."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is set or kind is frozenset:
        return (kind.__name__, tuple(sorted(_stable_bytes(item) for item in value)))
    # (An empty one is made anew, as a copy would be: the same empty list given
    # twice must pickle as two lists, or keys of earlier versions would change.)
    if kind is list or kind is tuple:
        return kind(_canonical(item) for item in value) if value else kind()
    if kind is dict:
        return {key: _canonical(item) for key, item in value.items()} if value else {}
    return value


def _stable_bytes(value: Any) -> bytes:
    """Bytes that are equal for equal plain values across processes.

    Plain pickle is deterministic for the data people pass as arguments (once
    sets are ordered); for what it cannot pickle (lambdas, closures)
    cloudpickle is close enough: at worst a job is not recognised and runs
    again, never the wrong way round.
    """
    plain = _plain_pickle(value)
    return plain if plain is not None else _canonical_pickle(value)


def _canonical_pickle(value: Any) -> bytes:
    """:func:`_stable_bytes` the long way, for any value."""
    value = _canonical(value)
    try:
        blob = pickle.dumps(value, 4)
        if _SET_OPCODES[0] in blob or _SET_OPCODES[1] in blob:  # a set inside an object:
            blob = _pickled_with_sets_in_order(value)           # _canonical did not see it
        return blob
    except Exception:
        try:
            import cloudpickle

            return cloudpickle.dumps(value, 4)
        except Exception:
            return repr(value).encode()


#: Protocol 4's EMPTY_SET and FROZENSET: where neither byte is, no set was pickled.
_SET_OPCODES = (pickle.EMPTY_SET, pickle.FROZENSET)


class _SetsInOrder(pickle.Pickler):
    """A pickler that writes every set in a fixed order, wherever it is (an
    object's state too): a set's own order follows the interpreter's hash
    seed, so its bytes, and the key of a job taking it, changed from run to
    run, and a rerun ran the job again."""

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is set or kind is frozenset:
            return (kind.__name__, tuple(sorted(_stable_bytes(item) for item in obj)))
        return None


def _pickled_with_sets_in_order(value: Any) -> bytes:
    buffer = io.BytesIO()
    _SetsInOrder(buffer, 4).dump(value)
    return buffer.getvalue()


#: The containers :func:`_canonical` copies, and so walks into.
_CONTAINERS = frozenset({list, tuple, dict})
_ATOMS_AND_CONTAINERS = _ATOMS | _CONTAINERS


def _plain_pickle(value: Any) -> bytes | None:
    """``pickle.dumps(value)`` when it is the very bytes :func:`_stable_bytes`
    makes the long way, else None: when *value* is numbers, strings and None
    in lists, tuples and dicts (keys too), no container met twice (pickle
    would refer back to the first, where :func:`_canonical`'s copy has two).

    The long way copies every container, then pickles the copy, and since the
    bytes of small ints look like a set's opcodes, pickles it again, an
    object at a time: a list of a thousand tuples of ints took 370 µs of the
    driver's time, where these checks take 110, a container level at a time
    at C speed. The bytes must stay the same: they are the keys of jobs
    journaled by earlier versions, which a rerun finds done."""
    level: list[Any] = [value]
    counted = 0
    ids: set[int] = set()
    while True:
        kinds = set(map(type, level))
        if not kinds <= _ATOMS_AND_CONTAINERS:
            return None  # a set, or an object _canonical leaves but may hold one
        if kinds <= _ATOMS:
            return pickle.dumps(value, 4)
        if not kinds <= _CONTAINERS:
            level = [item for item in level if type(item) in _CONTAINERS]
        ids.update(map(id, level))
        counted += len(level)
        if len(ids) != counted:
            return None  # a container twice (the empty tuple too: rare, and safe)
        if dict in kinds:  # its keys too: one may be shared
            level = list(itertools.chain.from_iterable(
                itertools.chain(item, item.values()) if type(item) is dict else item
                for item in level))
        else:
            level = list(itertools.chain.from_iterable(level))
        if not level:
            return pickle.dumps(value, 4)


_READS_NOTHING_BYTES = _stable_bytes(_READS_NOTHING)


def _arguments_bytes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """``_stable_bytes((args, kwargs))``, sooner when every argument is a number,
    a string or None: :func:`_canonical` would copy them unchanged, and the
    copy pickles to the same bytes (a tiny call spent a third of its key there)."""
    if all(type(arg) in _ATOMS for arg in args) and all(
            type(value) in _ATOMS for value in kwargs.values()):
        return pickle.dumps((args, kwargs), 4)
    return _stable_bytes((args, kwargs))


def _plain_calls_bytes(args: tuple[Any, ...], kwargs: dict[str, Any],
                       payload: bytes | None) -> bytes:
    """:func:`_arguments_bytes` of a chunk whose calls are :class:`PlainCalls`:
    their plain pickle. The long way leaves the calls as they are (they are not
    a plain list), copies the tuple around them, and finding a set's opcode among
    the bytes of their small ints, pickled them all again, an object at a time,
    to the same bytes: 150 µs of the driver's time a chunk of a thousand calls.
    Nothing else is in a chunk's arguments but the number of its first call.

    When the chunk was pickled for its worker already (its *payload*), its
    arguments' pickle is taken from there: protocol 5 writes plain values
    (:data:`~corral.runtime.chunks.PLAIN_TYPES`, in lists and tuples) with the
    very opcodes protocol 4 does, so only the protocol's number differs, and
    the key stays what earlier journals hold. (Pickled again, they were half
    of a journaled chunk's key, 36 µs of 1,000 calls warm and about 60 in a run.)"""
    if payload is not None:
        pickled = plain_arguments_pickle(payload)
        if pickled is not None and pickled[:2] == _PROTOCOL_5:
            return _PROTOCOL_4 + pickled[2:]
    return pickle.dumps((args, kwargs), 4)


#: How a pickle of protocol 5 and one of protocol 4 begin (``PROTO`` and its number).
_PROTOCOL_5, _PROTOCOL_4 = pickle.dumps(None, 5)[:2], pickle.dumps(None, 4)[:2]


def _setting_bytes(spec: JobSpec) -> bytes:
    """The stable bytes of a job's name, directory and environment: those of
    the job before when they are the same (as in a loop of submits)."""
    global _last_setting
    name = spec.name
    if type(spec.task) is Shell and not spec.named:  # (its default name: see first_word)
        name = spec.task.first_word
    setting = (name, spec.cwd, spec.env)
    last, made = _last_setting
    if setting != last:
        made = _stable_bytes(setting)
        _last_setting = (setting, made)
    return made


#: The setting and bytes :func:`_setting_bytes` gave last (one tuple: threads swap it whole).
_last_setting: tuple[tuple | None, bytes] = (None, b"")


def job_digest(job: JobRecord) -> str:
    """A digest of what *job* does (see the module docstring); without the
    ``#n`` occurrence number, which the scheduler adds."""
    return job_digests(job)[0]


def job_digests(job: JobRecord) -> tuple[str, str]:
    """``(the digest of what job does, the digest of its slot)``, both
    without the ``#n`` occurrence number, which the scheduler adds.

    Its *slot* is the same call with the code left out: the function by
    module and name, not by bytecode, with the values it reads besides its
    arguments (a closure's cells, a partial's bound arguments: a loop's
    closures are different calls); and its dependencies by their slots.
    When a rerun finds no earlier job of its key (the function was fixed),
    the job of its slot is the one it runs again in place of: it takes that
    job's id, so the run's failed row becomes the new attempt's instead of
    staying failed beside it. A command or a script has no code apart from
    its text: its slot is its key, but for a command given a ``name=``,
    whose slot is its name (a build's step whose command was fixed runs
    again in its row, not beside it: cold review; the Resumer lets such a
    slot take only a row that did not complete, see Resumer._in_its_slot).
    """
    task = job.spec.task
    what: bytes
    named: bytes | None = None  # what the slot has in place of *what*; None: no code
    if isinstance(task, Call) and isinstance(task.fn, ChunkRunner):  # map(chunksize=N)
        args, kwargs = job.call_parts  # (its calls' arguments, the first one's number)
        inner = task.fn.fn
        arguments = (_plain_calls_bytes(args, kwargs, job.payload) if type(args[0]) is PlainCalls
                     else _arguments_bytes(args, kwargs))
        if isinstance(inner, str):
            what = b"chunk\0function\0" + inner.encode() + arguments
        else:
            code, reads = _callable_parts(inner)
            what = b"chunk\0" + code + reads + arguments
            named = b"chunk\0" + call_label(inner).encode() + reads + arguments
        if task.fn.series is not None and task.fn.series > 1:  # see map_signature
            series = b"\0map\0" + str(task.fn.series).encode()
            what += series
            named = None if named is None else named + series
    elif isinstance(task, Call):
        args, kwargs = job.call_parts
        code, reads = _callable_parts(task.fn)
        arguments = _arguments_bytes(args, kwargs)
        what = b"call\0" + code + reads + arguments
        named = b"call\0" + call_label(task.fn).encode() + reads + arguments
    elif isinstance(task, FunctionRef):
        args, kwargs = job.call_parts
        what = b"function\0" + task.target.encode() + _arguments_bytes(args, kwargs)
    elif isinstance(task, Script):
        what = b"script\0" + task.path.encode() + _stable_bytes(job.argv_template)
    else:  # a Shell command
        command = task.command if isinstance(task.command, str) else job.argv_template
        what = b"shell\0" + _stable_bytes(command)
        if job.spec.named:  # a named step: its edited command runs again in its place
            named = b"shell step\0" + job.spec.name.encode("utf-8", "surrogatepass")
    setting = _setting_bytes(job.spec)
    digest = hashlib.sha256(what + setting)
    for dep in job.deps:
        digest.update(b"\0after\0" + str(dep.key).encode())
    key = digest.hexdigest()[:24]
    if named is None and all(dep.slot == dep.key for dep in job.deps):
        return key, key
    slot = hashlib.sha256((what if named is None else named) + setting)
    for dep in job.deps:
        slot.update(b"\0after\0" + str(dep.slot).encode())
    return key, slot.hexdigest()[:24]


def map_signature(fn: Any, first_call: tuple) -> str:
    """What an automatic map is told apart by, in a run, from the others it
    could take chunks of in a rerun: its function and its first call's
    arguments. Maps that share it are numbered in the order they begin, and
    the number enters their chunks' keys (the first one's keys go without)."""
    return hashlib.sha256(call_label(fn).encode() + b"\0" + _stable_bytes(first_call)
                          ).hexdigest()[:24]


def call_label(fn: Any) -> str:
    """How a call's command reads: ``module.qualname(…)`` (a chunk's, its
    function's), never with a memory address, which the next run would not
    know again: a partial names its function, ``functools.partial(module.f)(…)``,
    and a callable object its class."""
    if type(fn) is functools.partial:
        return f"functools.partial({call_label(fn.func).removesuffix('(…)')})(…)"
    name = getattr(fn, "__qualname__", None)
    if not isinstance(name, str):
        kind = type(fn)
        return f"{kind.__module__}.{kind.__qualname__}(…)"
    return f"{getattr(fn, '__module__', None) or '?'}.{name}(…)"


#: A chunk's command as :func:`describe` writes it, read back by :func:`chunk_place`.
_CHUNK_COMMAND = re.compile(r"(.*) ×(\d+): calls? (\d+)(?:-\d+)? of a map")


def chunk_place(command: str) -> tuple[str, int, int] | None:
    """``(the function's label, the map's number of its first call, how many
    calls)`` of a chunk job's command; None for any other command."""
    found = _CHUNK_COMMAND.fullmatch(command)
    if found is None:
        return None
    return found.group(1), int(found.group(3)), int(found.group(2))


def describe(job: JobRecord) -> tuple[str, str, str]:
    """``(kind, command line for people, spec as JSON)`` as the journal stores them.

    The spec is :func:`corral.journal.codec.encode_spec`'s: every option and, for
    commands and scripts, the task itself, so that the daemon can run a
    ``corral submit`` job again after a restart exactly as it was submitted.
    """
    task = job.spec.task
    if isinstance(task, Call):
        kind = "call"
        command = call_label(task.fn)
        if isinstance(task.fn, ChunkRunner):
            calls, first = task.args
            command += (f" ×1: call {first} of a map" if len(calls) == 1 else
                        f" ×{len(calls)}: calls {first}-{first + len(calls) - 1} of a map")
    elif isinstance(task, FunctionRef):
        kind, command = "function", f"{task.target}(…)"
    elif isinstance(task, Script):
        kind = "script"
        command = shlex.join([task.path, *map(str, task.argv)])
    else:
        kind = "shell"
        command = (task.command if isinstance(task.command, str)
                   else shlex.join(str(word) for word in task.command))
    return kind, command, encode_spec(job.spec, job.meta, made_in(job.spec))
