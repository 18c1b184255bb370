"""Many calls of one function as one job: what ``map(..., chunksize=N)`` runs.

A job per call costs the driver tens of microseconds (a Future, a record, its
state changes, a journal row), which for calls of a few microseconds is most of
the run. ``map()`` with ``chunksize`` greater than one hands each worker lists
of argument tuples instead, as ``ProcessPoolExecutor.map(chunksize=...)`` and
joblib's batches do: a chunk is one job (one status, one output, one journal
row, one retry unit), and the map still yields each call's own result, and
raises each call's own exception at its place.

Every call of a chunk runs, also after one of them raised (as every call of an
unchunked map runs whether or not its result is read), SystemExit and
KeyboardInterrupt included; a call whose return value cannot be pickled fails
as such, alone. (The results travel back together, pickled as one list, so that
one object returned by many calls travels once: a result the driver cannot load
fails the whole chunk.) A chunk in which a call failed fails as a whole, with
:class:`ChunkFailed`: the job's status then says which call raised what (its
traceback shows the call's), and the map yields the results before that call
and raises its exception (see :func:`corral.core.mapping.unchunked`). An abort
(:func:`corral.abort_requested`) ends a chunk after the call that runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from corral.errors import JobFailed, JobStopped, NotPicklable, RemoteTraceback
from corral.runtime.abort import abort_requested
from corral.runtime.forked import FORKED, end_if_forked, watch_for_forks
from corral.runtime.interrupt import NOW as STOPPING
from corral.runtime.payload import (dumps_error, dumps_value, import_function, loads_error,
                                    without_corral_frames)
from corral.safe_repr import describe_error

__all__ = ["ChunkRunner", "ChunkFailed", "PlainCalls", "PLAIN_TYPES"]


#: The types of argument that hold nothing else: no Job (a dependency) to look
#: for inside, no set whose order differs between processes.
PLAIN_TYPES = frozenset({int, float, complex, str, bytes, bool, type(None)})


class PlainCalls(list):
    """A chunk's calls whose arguments are all of :data:`PLAIN_TYPES`, as
    :func:`corral.core.mapping.chunked` finds them while it reads the input:
    the driver then need not walk a thousand tuples per chunk for Jobs among
    them (it spent most of a chunked map's time there), nor put them in a
    canonical form for the journal's key."""

    __slots__ = ()


class ChunkRunner:
    """Calls one function once per argument tuple of a chunk; the worker runs it
    as the job's callable.

    It carries the function's name, qualified name and module, so that the
    job is named and described as the function's own jobs are; the journal's
    key of a chunk is made from the function itself (see
    :func:`corral.core.identity.job_digest`).
    """

    def __init__(self, fn: Callable[..., Any] | str, budget_s: float | None = None,
                 series: int | None = None) -> None:
        #: The function, or ``"package.module:function"``, imported where the
        #: chunk runs (as a map of such a target imports it only there).
        self.fn = fn
        #: Past this many seconds, the chunk ends after the call that runs,
        #: leaving the rest to other jobs (``chunksize="auto"``: see
        #: :mod:`corral.core.chunk_sizes`); None: every call runs here.
        self.budget_s = budget_s
        #: Which of the automatic maps of this function that began with the
        #: same call the chunk belongs to (1, 2, ...): part of its key, so that a
        #: rerun takes no map's chunks for another's, whose boundaries differ
        #: (see corral.core.identity.map_signature).
        self.series = series
        if isinstance(fn, str):
            module, _, path = fn.partition(":")
            self.__module__, self.__qualname__ = module, path
            self.__name__ = path.rpartition(".")[2]
        else:  # as a job of the function itself is named (corral.spec.Call.label)
            self.__module__ = getattr(fn, "__module__", None) or type(fn).__module__
            self.__qualname__ = getattr(fn, "__qualname__", None) or type(fn).__qualname__
            self.__name__ = getattr(fn, "__name__", None) or type(fn).__name__

    def __call__(self, calls: Sequence[tuple[Any, ...]], first: int) -> list[Any]:
        """The results of ``fn(*arguments)`` for each of *calls*, the map's
        items *first*, *first* + 1, ...; fewer if the job was asked to abort
        (:func:`corral.abort_requested`), which makes it CANCELLED, or ran past
        its budget (the calls not run are then the map's to give to other jobs).

        Raises:
            ChunkFailed: a call raised, even SystemExit or KeyboardInterrupt,
                or returned what cannot travel back (after every call ran).
        """
        values: list[Any] = []
        failures: dict[int, bytes] = {}
        first_error: tuple[int, BaseException] | None = None  # the cause ChunkFailed names
        fn = import_function(self.fn) if isinstance(self.fn, str) else self.fn
        deadline = None if self.budget_s is None else time.monotonic() + self.budget_s
        watch_for_forks()
        forked = FORKED  # (read after each call: see corral.runtime.forked)
        for index, arguments in enumerate(calls):
            try:
                values.append(fn(*arguments))
            except BaseException as error:  # the call's own, as an unchunked call's would be
                end_if_forked(error)  # (a child must not run the chunk's next calls)
                if isinstance(error, JobStopped):  # corral stops the whole chunk, not one call
                    raise  # (attack review: the chunk's later calls ran on after a cancel)
                values.append(None)
                error = without_corral_frames(error)
                failures[index] = dumps_error(error)
                first_error = first_error or (index, error)
            if forked[0]:
                end_if_forked()
            if abort_requested():
                break
            if STOPPING.asked is not None:  # (a call that caught JobStopped, or turned it
                # into an error of its own: the chunk stops all the same: re-attack review)
                raise JobStopped("corral stopped this chunk of a map between two of its calls")
            if deadline is not None and time.monotonic() > deadline:
                break  # (the map gives the calls left to other jobs, and says so)
        unsendable = _fail_unsendable(values, failures, first)
        if unsendable is not None and (first_error is None or unsendable[0] < first_error[0]):
            first_error = unsendable
        if first_error is not None:
            raise ChunkFailed.of(values, failures, first) from first_error[1]
        return values

    def __repr__(self) -> str:
        return f"<chunks of {self.__qualname__}>"


def _fail_unsendable(values: list[Any], failures: dict[int, bytes], first: int
                     ) -> tuple[int, BaseException] | None:
    """Fail each call whose value cannot travel back, as a call whose return
    value cannot be pickled fails (its place in *values* becomes None); return
    the first such call's place and error, if any."""
    try:
        dumps_value(values)
        return None
    except Exception:
        pass
    found = None
    for index, value in enumerate(values):
        if index in failures:
            continue
        try:
            dumps_value(value)
        except Exception as error:
            problem = NotPicklable(f"call {first + index}'s return value cannot be pickled: "
                                f"{describe_error(error)}")
            values[index] = None
            failures[index] = dumps_error(problem)
            found = found or (index, problem)
    return found


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

    @property
    def stands_for(self) -> str:
        """The name of the exception the map raises for this chunk (its first
        failed call's), which is what people read of it, e.g. in the reason of
        the calls a map left unread."""
        return loads_error(self.failures[min(self.failures)])[2].partition(":")[0]

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
