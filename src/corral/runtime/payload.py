"""Pack a Python call for a worker, and pack what comes back.

Arguments are pickled with cloudpickle (functions from ``__main__``, closures
and lambdas travel by value). Code that travels by value keeps its file name
(cloudpickle would write ``<dynamic-code>``), so a remote traceback names the
user's file and line, and shows the line when the file is readable there. A
dependency's result is not known when a job is submitted, so it travels as an
:class:`Upstream` placeholder that the worker swaps for the real value just
before the call.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import sys
import types
import weakref
from typing import Any, ClassVar

from corral.errors import JobStopped
from corral.runtime.loading import loading_job_code
from corral.safe_repr import describe_error, shortened, writable_text

__all__ = ["Upstream", "dumps_call", "dumps_function", "loads_call", "dumps_value", "dumps_error",
           "unpicklable_part", "plain_arguments_pickle",
           "loads_error", "error_traceback", "import_function", "without_corral_frames"]

_PROTOCOL = pickle.HIGHEST_PROTOCOL


class Upstream:
    """Stands in for the result of dependency number ``index`` inside arguments."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self):
        return (Upstream, (self.index,))

    def __repr__(self) -> str:
        return f"Upstream({self.index})"


def dumps_call(target: Any, args: tuple, kwargs: dict, has_upstream: bool,
               function_blob: bytes | None = None) -> bytes:
    """Pickle a call; *target* is a callable or a ``"module:function"`` string.
    *function_blob* is :func:`dumps_function`'s for *target*, made already (a
    batch of calls of one function pickles it once)."""
    if function_blob is None:
        function_blob = dumps_function(target)
    return pickle.dumps((function_blob, dumps_value((args, kwargs)), has_upstream), _PROTOCOL)


def plain_arguments_pickle(payload: bytes) -> bytes | None:
    """The arguments' part of a :func:`dumps_call` payload if the standard
    pickler made it (protocol :data:`pickle.HIGHEST_PROTOCOL`), None if they
    went by value (cloudpickle). The journal's key of a chunk of a thousand
    calls hashes their pickle: taken from here, they are not pickled twice."""
    _, arguments, _ = pickle.loads(payload)
    return None if _names_main(arguments) else arguments


def unpicklable_part(target: Any, args: tuple, kwargs: dict) -> str | None:
    """Which part of a call that :func:`dumps_call` refused does not pickle, in
    the words of a message ("its function", "its argument args[1]", "its keyword
    argument kwargs['conn']"); None when each pickles alone. Run only once the
    call was refused: it pickles each part again."""
    parts: list[tuple[str, Any, Any]] = [("its function", dumps_function, target)]
    parts += [(f"its argument args[{index}]", dumps_value, value)
              for index, value in enumerate(args)]
    parts += [(f"its keyword argument kwargs[{name!r}]", dumps_value, value)
              for name, value in kwargs.items()]
    for said, dumps, value in parts:
        try:
            dumps(value)
        except Exception:
            return said + _through(value) if dumps is dumps_function else said
    return None


def _through(function: Any) -> str:
    """What of a function that does not pickle by value does not pickle: a
    global it reads, a variable of its closure, or a default (cold review: "its
    function cannot be pickled" for a script's ``LOCK`` the function uses);
    nothing when none of those is it."""
    if not isinstance(function, types.FunctionType):
        return ""
    code = function.__code__
    candidates: list[tuple[str, Any]] = [
        (f" {function.__name__}, through the global {name!r} it reads,", function.__globals__[name])
        for name in code.co_names if name in function.__globals__]
    for name, cell in zip(code.co_freevars, function.__closure__ or (), strict=False):
        try:
            candidates.append((f" {function.__name__}, through the variable {name!r} of its "
                               "closure,", cell.cell_contents))
        except ValueError:  # an empty cell
            continue
    defaults = [*(function.__defaults__ or ()), *(function.__kwdefaults__ or {}).values()]
    candidates += [(f" {function.__name__}, through a default of its arguments,", value)
                   for value in defaults]
    for said, value in candidates:
        if isinstance(value, types.ModuleType):
            continue  # (a module travels by name)
        try:
            dumps_value(value)
        except Exception:
            return said
    return ""


def loads_call(payload: bytes, upstream: tuple[bytes, ...]) -> tuple[Any, tuple, dict]:
    """Unpickle a call and put the dependencies' results in place of their placeholders."""
    with loading_job_code:  # (what it unpickles may not submit jobs: see the module)
        function_blob, arguments_blob, has_upstream = pickle.loads(payload)
        target = _loaded_functions.get(function_blob)
        if target is None:
            target = pickle.loads(function_blob)
            if isinstance(target, str):
                target = import_function(target)
            if len(_loaded_functions) >= _FUNCTION_CACHE_SIZE:
                _loaded_functions.clear()
            _loaded_functions[function_blob] = target
        args, kwargs = pickle.loads(arguments_blob)
        if has_upstream:
            values = [pickle.loads(blob) for blob in upstream]
            args = _substitute(args, values)
            kwargs = _substitute(kwargs, values)
    return target, args, kwargs


# A worker runs the same few functions many times: unpickle each once.
_FUNCTION_CACHE_SIZE = 256
_loaded_functions: dict[bytes, Any] = {}

# The driver pickles a function defined in __main__, a closure or a lambda by
# value (cloudpickle), which costs ~100 us; it is cached per function object and
# re-pickled when a global it names or a closure cell is rebound. Mutating such
# a global in place after the first submission is not seen by later jobs.
_by_value: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], bytes]] = (
    weakref.WeakKeyDictionary())


def dumps_function(target: Any) -> bytes:
    """The function part of :func:`dumps_call`'s payload: a reference by name
    when the worker can import it, else the function by value."""
    if isinstance(target, str) or _importable(target):
        try:
            blob = pickle.dumps(target, _PROTOCOL)
        except Exception:
            pass
        else:
            if not _names_main(blob):  # (a partial of a function of the script does)
                return blob
    if not isinstance(target, types.FunctionType):
        return _dumps_by_value(target)
    fingerprint = _fingerprint(target)
    cached = _by_value.get(target)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    blob = _dumps_by_value(target)
    _by_value[target] = (fingerprint, blob)
    return blob


def _dumps_by_value(value: Any) -> bytes:
    """cloudpickle, keeping the file name of every code object (see the module docstring)."""
    buffer = io.BytesIO()
    _pickler_keeping_file_names()(buffer, protocol=_PROTOCOL).dump(value)
    return buffer.getvalue()


_Pickler: type | None = None


def _pickler_keeping_file_names() -> type:
    """A cloudpickle Pickler whose code objects keep ``co_filename``; made on
    first use, so that cloudpickle is imported only when something travels by value."""
    global _Pickler
    if _Pickler is None:
        import cloudpickle
        from cloudpickle import cloudpickle as internals

        reduce_code = getattr(internals, "_code_reduce", None)

        reduce_text_file = cloudpickle.Pickler.dispatch_table.get(io.TextIOWrapper)

        def refuse_open_file(handle: io.TextIOWrapper) -> Any:
            if reduce_text_file is not None and handle in (sys.stdout, sys.stderr, sys.stdin):
                return reduce_text_file(handle)  # (the other side's own, by name; stdin refused)
            raise TypeError(f"cannot pickle {type(handle).__name__!r} object: an open "
                            f"file ({getattr(handle, 'name', '?')!r}) does not travel between "
                            "processes; pass its path, and open it where it is read")

        # cloudpickle sends a file open for reading as a copy of what is left
        # to read in it (a 50 MB file, once per job), silently; pickle and
        # ProcessPoolExecutor refuse it, and so does this (cold review).
        table = {**cloudpickle.Pickler.dispatch_table, io.TextIOWrapper: refuse_open_file}
        if reduce_code is not None:  # else cloudpickle's own, file name lost
            table[types.CodeType] = lambda code: (
                _code_in_file, (reduce_code(code), code.co_filename))

        class Pickler(cloudpickle.Pickler):
            dispatch_table: ClassVar[dict] = table

            def reducer_override(self, obj: Any) -> Any:
                if type(obj) is _CACHED and _of_the_script(getattr(obj, "__wrapped__", None)):
                    settings = obj.cache_parameters()
                    return _cached, (obj.__wrapped__, settings["maxsize"], settings["typed"])
                return super().reducer_override(obj)

        _Pickler = Pickler
    return _Pickler


#: What ``functools.cache`` and ``functools.lru_cache`` make of a function.
_CACHED = type(functools.lru_cache(maxsize=None)(int))


def _of_the_script(function: Any) -> bool:
    return getattr(function, "__module__", None) in ("__main__", "__mp_main__")


def _cached(function: Any, maxsize: int | None, typed: bool) -> Any:
    """A cached function of the script, made again in the worker: cloudpickle
    sends it by name, which the worker's ``__main__`` does not have (a job
    calling a ``@functools.cache`` helper of the script, or of a notebook,
    failed "Can't get attribute"; diff review). Its cache starts empty."""
    return functools.lru_cache(maxsize=maxsize, typed=typed)(function)


def _code_in_file(reduced: tuple[Any, tuple], filename: str) -> types.CodeType:
    """Rebuild a code object from cloudpickle's ``(constructor, args)``, under
    the file name it had where it was pickled."""
    constructor, args = reduced
    return constructor(*args).replace(co_filename=filename)


def _importable(target: Any) -> bool:
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", "")
    return module not in (None, "__main__", "__mp_main__") and "<" not in qualname


def _fingerprint(function: types.FunctionType) -> tuple[int, ...]:
    names = function.__code__.co_names
    namespace = function.__globals__
    marks = [id(namespace.get(name)) for name in names]
    marks.append(id(function.__defaults__))
    marks.append(id(function.__kwdefaults__))
    for cell in function.__closure__ or ():
        try:
            marks.append(id(cell.cell_contents))
        except ValueError:  # an empty cell
            marks.append(0)
    return tuple(marks)


def import_function(reference: str) -> Any:
    """The function ``"package.module:function"`` names, imported."""
    import importlib

    module_name, _, attribute_path = reference.partition(":")
    with loading_job_code:  # (a chunk's calls import theirs as the chunk runs)
        found: Any = importlib.import_module(module_name)
    for attribute in attribute_path.split("."):
        found = getattr(found, attribute)
    return found


def _substitute(value: Any, values: list[Any]) -> Any:
    if isinstance(value, Upstream):
        return values[value.index]
    if type(value) is tuple:
        return tuple(_substitute(item, values) for item in value)
    if type(value) is list:
        return [_substitute(item, values) for item in value]
    if type(value) is dict:
        return {key: _substitute(item, values) for key, item in value.items()}
    if type(value) in (set, frozenset):
        return type(value)(_substitute(item, values) for item in value)
    return value


def dumps_value(value: Any) -> bytes:
    """Pickle a job's arguments or return value, falling back to cloudpickle
    for lambdas and the like, and for what names the program's ``__main__``."""
    try:
        blob = pickle.dumps(value, _PROTOCOL)
    except Exception:
        return _dumps_by_value(value)
    return _dumps_by_value(value) if _names_main(blob) else blob


def _names_main(blob: bytes) -> bool:
    """Whether a plain pickle refers to something of the program's ``__main__``
    by name (a class of the script, a function in a partial): the worker's
    ``__main__`` is not the program's, so that must travel by value. (A string
    that merely holds the text sends its value by cloudpickle too: slower, as right.)"""
    return b"__main__" in blob or b"__mp_main__" in blob


_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))


def without_corral_frames(error: BaseException) -> BaseException:
    """*error*, its traceback begun at the job's own code: the frames of
    corral's runtime above it (the worker's call, a chunk's loop over its
    calls) are of no use to whoever reads why the job failed. A ChunkFailed,
    raised by corral itself, keeps no frame: its cause's traceback says where."""
    frames = error.__traceback__
    while frames is not None and _in_runtime(frames):
        frames = frames.tb_next
    if isinstance(error, JobStopped):  # it ends where the call was, not in the signal handler
        frames = _without_runtime_tail(frames)
    return error.with_traceback(frames)


def _without_runtime_tail(frames: types.TracebackType | None) -> types.TracebackType | None:
    """*frames* without the frames of corral's runtime at their end."""
    kept = []
    while frames is not None:
        kept.append(frames)
        frames = frames.tb_next
    while kept and _in_runtime(kept[-1]):
        kept.pop()
    rebuilt = None
    for frame in reversed(kept):
        rebuilt = types.TracebackType(rebuilt, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return rebuilt


def _in_runtime(frame: types.TracebackType) -> bool:
    """Whether *frame* is one of corral's runtime (not of the job's code)."""
    return os.path.dirname(frame.tb_frame.f_code.co_filename) == _RUNTIME_DIR


def dumps_error(error: BaseException) -> bytes:
    """Pickle an exception raised by a job with its traceback text.

    An exception that cannot be unpickled by calling its class travels as
    its class, ``args`` and attributes (:class:`_Rebuilt`). If even that
    cannot travel, only its type name and text do, and the driver raises
    ``JobFailed`` with them.
    """
    import traceback  # (only for a job that failed: not at every worker's start)

    text = writable_text("".join(traceback.format_exception(error)))
    if len(text) > _LONGEST_TRACEBACK_LINE:  # (a 50 MB message: in corral status ID, in mail)
        text = "\n".join(shortened(line, _LONGEST_TRACEBACK_LINE) for line in text.split("\n"))
    summary = writable_text(describe_error(error))
    blob: bytes | None = None
    for packed in (error, _Rebuilt(error)):
        try:
            pickled = dumps_value(packed)
            pickle.loads(pickled)  # one that cannot be loaded again travels as text only
        except Exception:
            continue
        blob = pickled
        break
    return pickle.dumps((blob, text, summary), _PROTOCOL)


#: The most characters of a line of a job's traceback text kept (the exception
#: itself keeps its whole message): the text is shown by ``corral status ID``
#: and sent in failure mail, which a 50 MB message made a 50 MB mail.
_LONGEST_TRACEBACK_LINE = 4000


class _Rebuilt:
    """An exception that pickles, but cannot be unpickled as pickle does it:
    by calling its class with its ``args`` (``MyError(code, message)`` calling
    ``super().__init__(message)``, a keyword-only constructor). It travels as
    its class, ``args`` and attributes instead, and is made again without
    calling ``__init__``: the job's own exception type, with its attributes,
    not ``JobFailed`` (a cold review's ``except MyError`` missed it). An
    attribute that cannot be pickled (a lock) is left out, and a note says so."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple:
        kept, left = {}, []
        for name, value in vars(self.error).items():
            try:
                pickle.loads(dumps_value(value))
            except Exception as problem:
                left.append(f"{name} ({type(problem).__name__}: {problem})")
            else:
                kept[name] = value
        return (_rebuild_exception, (type(self.error), self.error.args, kept, left))


def _rebuild_exception(kind: type[BaseException], args: tuple, attributes: dict[str, Any],
                       left: list[str]) -> BaseException:
    error = kind.__new__(kind, *args)
    error.args = args
    vars(error).update(attributes)
    if left:
        error.add_note("corral: attributes that could not travel from the worker: "
                       + ", ".join(left))
    return error


def error_traceback(blob: bytes) -> str:
    """The traceback text of a packed exception, without loading the exception
    itself (which may need the job's own modules)."""
    return str(pickle.loads(blob)[1])


def loads_error(blob: bytes) -> tuple[BaseException | None, str, str]:
    """Return (exception or None, traceback text, one-line summary)."""
    exception_blob, text, summary = pickle.loads(blob)
    error = None
    if exception_blob is not None:
        try:
            error = pickle.loads(exception_blob)
        except Exception:
            error = None
    return error, text, summary
