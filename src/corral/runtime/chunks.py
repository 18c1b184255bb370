"""Many calls of one function as one job: what ``map(..., chunksize=N)`` runs.

A job per call costs the driver tens of microseconds (a Future, a record, its
state changes, a journal row), which for calls of a few microseconds is most of
the run. ``map()`` with ``chunksize`` greater than one hands each worker lists
of argument tuples instead, as ``ProcessPoolExecutor.map(chunksize=...)`` and
joblib's batches do: a chunk is one job (one status, one output, one journal
row, one retry unit), and the map still yields each call's own result, and
raises each call's own exception at its place.

Every call of a chunk runs, also after one of them raised (as every call of an
unchunked map runs whether or not its result is read). A chunk in which a
call raised fails as a whole, with :class:`ChunkFailed`: the job's status
then says which call raised what, and the map yields the results before that
call and raises its exception (see :func:`corral.core.mapping.unchunked`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from corral.errors import JobFailed, RemoteTraceback
from corral.runtime.payload import dumps_error, import_function, loads_error

__all__ = ["ChunkRunner", "ChunkFailed"]


class ChunkRunner:
    """Calls one function once per argument tuple of a chunk; the worker runs it
    as the job's callable.

    It carries the function's name, qualified name and module, so that the
    job is named and described as the function's own jobs are; the journal's
    key of a chunk is made from the function itself (see
    :func:`corral.core.identity.job_digest`).
    """

    def __init__(self, fn: Callable[..., Any] | str) -> None:
        #: The function, or ``"package.module:function"``, imported where the
        #: chunk runs (as a map of such a target imports it only there).
        self.fn = fn
        if isinstance(fn, str):
            module, _, path = fn.partition(":")
            self.__module__, self.__qualname__ = module, path
            self.__name__ = path.rpartition(".")[2]
        else:
            functools.update_wrapper(self, fn, updated=())

    def __call__(self, calls: Sequence[tuple[Any, ...]], first: int) -> list[Any]:
        """The results of ``fn(*arguments)`` for each of *calls*, the map's
        items *first*, *first* + 1, ...

        Raises:
            ChunkFailed: a call raised (after every call of the chunk ran).
        """
        values: list[Any] = []
        failures: dict[int, bytes] = {}
        fn = import_function(self.fn) if isinstance(self.fn, str) else self.fn
        for index, arguments in enumerate(calls):
            try:
                values.append(fn(*arguments))
            except Exception as error:
                values.append(None)
                failures[index] = dumps_error(error)
        if failures:
            raise ChunkFailed.of(values, failures, first)
        return values

    def __repr__(self) -> str:
        return f"<chunks of {getattr(self.fn, '__qualname__', self.fn)!r}>"


class ChunkFailed(Exception):
    """A call of a chunk raised. Carries every call's result (None where one
    raised) and each failed call's pickled exception, so that the map can
    yield the results before the first failure and raise its exception."""

    def __init__(self, message: str, values: list[Any], failures: dict[int, bytes],
                 first: int) -> None:
        super().__init__(message, values, failures, first)
        self.values = values
        self.failures = failures
        self.first = first  # the map's number of the chunk's first call

    @classmethod
    def of(cls, values: list[Any], failures: dict[int, bytes], first: int) -> ChunkFailed:
        index = min(failures)
        summary = loads_error(failures[index])[2]
        more = "" if len(failures) == 1 else f" ({len(failures) - 1} more of its calls raised)"
        return cls(f"call {first + index} of the map raised {summary}{more}", values, failures,
                   first)

    def __str__(self) -> str:
        return str(self.args[0])

    def first_failure(self) -> tuple[int, BaseException]:
        """The position in the chunk of its first call that raised, and that
        call's exception as an unchunked map would raise it: the exception
        itself, its traceback in the worker as its ``__cause__`` (or
        :class:`JobFailed` with that traceback, for one that could not travel)."""
        index = min(self.failures)
        error, traceback_text, summary = loads_error(self.failures[index])
        if error is None:
            return index, JobFailed(f"call {self.first + index} of the map raised {summary}\n"
                                    f"{traceback_text}", reason=f"raised {summary}")
        error.__cause__ = RemoteTraceback(traceback_text)
        return index, error
