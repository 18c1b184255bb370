"""Whether a call's arguments fit its function, checked when its job is made.

A call its function cannot take (a keyword misspelt, an argument too many or
missing) would fail only once a worker ran it: minutes later behind a queue,
hours later on a cluster, after its dependencies ran. The job is refused when
it is made instead, in Python's own words. ``submit()`` gives its keyword
arguments to the function, as ``Executor.submit`` does, so a job option put
there (``cores=2``, or ``corse=2``) is the commonest such call: its error says
where job options go.

The function's signature is read once per function; a call whose positional
arguments a quick count clears, without keywords, is not bound at all (a
thousand submits of one function pay a dictionary lookup each).
"""

from __future__ import annotations

import functools
import inspect
import operator
import types
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.options import JOB_OPTIONS
from corral.suggest import closest

__all__ = ["check_call_fits", "check_map_fits"]


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a function takes: its signature, and the counts of positional
    arguments that bind without a look at the signature."""

    signature: inspect.Signature
    fewest: int  # positional parameters without a default
    most: float  # all positional parameters (infinite with *args)
    keyword_needed: bool  # a keyword-only parameter without a default
    takes_any_keyword: bool  # **kwargs


#: Shapes of plain functions (a bound method's by its function), each with the
#: code and defaults it was read from: one patched in place (a notebook's
#: autoreload replaces ``__code__``) is read again. None: no check. Weak: a
#: closure made in a loop is not kept alive by having been submitted.
_shapes: weakref.WeakKeyDictionary[
    Any, tuple[tuple[Any, ...], dict[str, Any] | None, _Shape | None]] = \
    weakref.WeakKeyDictionary()

#: The shapes of modules' builtin functions (``math.sqrt``), which take no weak reference.
_module_builtins: dict[Any, _Shape | None] = {}

#: What the check reads: plain functions, methods, partials of them, classes.
#: Not other callable objects: ``inspect`` misreads some (a ``__call__`` that
#: is a staticmethod loses its first parameter), and a refusal must be sure.
_CHECKED = (types.FunctionType, types.MethodType, functools.partial, type,
            types.BuiltinFunctionType)  # (a module's, with a signature: print, math.sqrt)


def check_call_fits(fn: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse a call of *fn* that it cannot take.

    Raises:
        TypeError: naming the function and what does not fit (a keyword named
            like a job option says where job options go).
    """
    if type(fn) is functools.partial and not fn.keywords and not kwargs and _fits_at_a_count(
            fn.func, len(fn.args) + len(args)):
        return
    bound_self: tuple[Any, ...] = ()
    target = fn
    if type(fn) is types.MethodType and type(fn.__func__) is types.FunctionType:
        target, bound_self = fn.__func__, (fn.__self__,)  # (a fresh object each time)
    shape = _shape_of(target)
    if shape is None:
        return
    count = len(args) + len(bound_self)
    if not kwargs and not shape.keyword_needed and shape.fewest <= count <= shape.most:
        return
    try:
        shape.signature.bind(*bound_self, *args, **kwargs)
    except TypeError as error:
        raise TypeError(_why(fn, shape, len(args), len(bound_self), kwargs, str(error))
                        ) from None


def _fits_at_a_count(fn: Any, count: int) -> bool:
    """Whether a plain function (or a method of one) surely takes *count*
    positional arguments and no keyword, by the counts of its cached shape:
    a partial without keywords passes its arguments before the call's, so
    ``map(partial(f, x), items)`` costs a lookup a call, not a signature read
    (60 us). False: not known so, which the whole check then decides."""
    if type(fn) is types.MethodType and type(fn.__func__) is types.FunctionType:
        fn, count = fn.__func__, count + 1
    if type(fn) is not types.FunctionType:
        return False
    shape = _shape_of(fn)
    return (shape is not None and not shape.keyword_needed
            and shape.fewest <= count <= shape.most)


def check_map_fits(fn: Any, iterables: int) -> None:
    """Refuse a ``map()`` whose calls *fn* cannot take: each takes one
    argument from each of the *iterables*, so all its calls fit, or none.
    (A map of no iterable makes no call.)

    Raises:
        TypeError: as :func:`check_call_fits`.
    """
    if not iterables:
        return
    try:
        check_call_fits(fn, (None,) * iterables, {})
    except TypeError as error:
        raise TypeError(f"map() calls with {iterables} argument{'s' * (iterables != 1)}, "
                        f"one from each iterable: {error}") from None


def _shape_of(fn: Any) -> _Shape | None:
    kind = type(fn)  # (not isinstance: a proxy, such as wrapt's, passes for what it wraps)
    if not issubclass(kind, _CHECKED):
        return None
    if kind is types.BuiltinFunctionType:
        if not isinstance(fn.__self__, types.ModuleType):
            return None  # an object's builtin method ([].append): made anew at each access
        if fn not in _module_builtins:  # (a module's own: they never change, and are few)
            _module_builtins[fn] = _read_shape(fn)
        return _module_builtins[fn]
    if kind is not types.FunctionType:  # few, and their parts may change: read each time
        return _read_shape(fn)
    keywords = fn.__kwdefaults__
    made_of = (fn.__code__, fn.__defaults__, keywords, getattr(fn, "__signature__", None))
    cached = _shapes.get(fn)
    if (cached is not None and all(map(operator.is_, cached[0], made_of))
            and (keywords is None or cached[1] == keywords)):  # (changed in place)
        return cached[2]
    shape = _read_shape(fn)
    _shapes[fn] = (made_of, None if keywords is None else dict(keywords), shape)
    return shape


def _read_shape(fn: Any) -> _Shape | None:
    if _claims_a_signature(fn):
        return None
    try:
        # Not through __wrapped__: a decorator's wrapper may take more than
        # what it wraps (a timeout of its own), and the wrapper is what runs.
        signature = inspect.signature(fn, follow_wrapped=False)
    except Exception:  # none to read (some builtins), or its own code raised: let it run
        return None
    kind = inspect.Parameter
    positional = [parameter for parameter in signature.parameters.values()
                  if parameter.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)]
    kinds = {parameter.kind for parameter in signature.parameters.values()}
    return _Shape(
        signature,
        fewest=sum(parameter.default is kind.empty for parameter in positional),
        most=float("inf") if kind.VAR_POSITIONAL in kinds else len(positional),
        keyword_needed=any(parameter.kind is kind.KEYWORD_ONLY and parameter.default is kind.empty
                           for parameter in signature.parameters.values()),
        takes_any_keyword=kind.VAR_KEYWORD in kinds)


def _claims_a_signature(fn: Any) -> bool:
    """Whether *fn* (or what its partial or method calls) sets ``__signature__``:
    ``inspect`` believes it, a call does not (a wrapper shows what it wraps,
    for help() and editors, and takes more), so it cannot be checked."""
    try:
        while isinstance(fn, functools.partial):
            fn = fn.func
        if type(fn) is types.MethodType:
            fn = fn.__func__
        return getattr(fn, "__signature__", None) is not None
    except Exception:  # a hostile attribute: no check
        return True


#: Unknown keywords looked at for a suggestion at most (each is compared with
#: every parameter; a call of 100,000 unknown ones was refused after 10 s).
_SUGGESTED_FOR = 3


def _why(fn: Any, shape: _Shape, given: int, bound: int, kwargs: Mapping[str, Any],
         problem: str) -> str:
    name = _name_of(fn)
    named = shape.signature.parameters
    unknown = [] if shape.takes_any_keyword else [
        keyword for keyword in kwargs if keyword not in named]
    misplaced = [keyword for keyword in unknown if keyword in _OPTION_NAMES]
    if misplaced:
        return _options_go_elsewhere(name, misplaced[:_SUGGESTED_FOR], misplaced[0])
    made = [keyword for keyword in unknown if keyword in _JOB_ARGUMENTS]
    if made:  # (cold review, a hypertunity port: submit(f, x, id=7) said only "unexpected")
        return (f"{name}() takes no argument {made[0]!r}: keyword arguments go to the "
                f"function, as with Executor.submit; a job's own {made[0]} is given where it "
                f"is made: scheduler.dispatch(corral.Job({name}, (...), {made[0]}=...))")
    by_keyword = [word for word, parameter in named.items() if word not in kwargs
                  and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)]
    for keyword in unknown[:_SUGGESTED_FOR]:
        own = closest(keyword, by_keyword)
        if own is not None:
            return f"{name}() takes no argument {keyword!r}; did you mean {own!r}?"
        option = closest(keyword, _OPTION_NAMES)
        if option is not None:
            return _options_go_elsewhere(name, [keyword], option,
                                         f" (did you mean the job option {option!r}?)")
    if unknown:  # what Python's call says first, as it is surely wrong
        problem = f"got an unexpected keyword argument {unknown[0]!r}"
    elif problem == "too many positional arguments":  # (bind's words say no more; a
        problem += f": it takes {shape.most - bound:.0f}, given {given}"  # method's self aside)
    if isinstance(fn, functools.partial):  # (its counts are what the partial leaves)
        problem += f" (after the {len(fn.args)} positional and {len(fn.keywords)} keyword " \
                   "arguments of its functools.partial)"
    return f"{name}() cannot be called with these arguments: {problem}"


def _name_of(fn: Any) -> str:
    """The function's name as its user wrote it: a partial's is its function's."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else type(fn).__qualname__


def _options_go_elsewhere(name: str, keywords: list[str], option: str, said: str = "") -> str:
    return (f"{name}() takes no argument {', '.join(map(repr, keywords))}{said}: keyword "
            "arguments go to the function, as with Executor.submit; job options go in "
            f"scheduler.options({option}=...).submit({name}, ...), or Job({name}, ..., "
            f"{option}=...)")


#: Job options by name, and ``profile``, which options() takes too.
_OPTION_NAMES = frozenset(JOB_OPTIONS) | {"profile"}
#: What a Job takes besides its options, only where it is made (``corral.Job``).
_JOB_ARGUMENTS = frozenset({"id", "meta"})
