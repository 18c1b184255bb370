"""A ``concurrent.futures.Future`` that makes its lock and lists only when used.

A stock Future makes, as it is created, a Condition (an RLock, a deque and
five bound methods) and two lists: ten objects the garbage collector tracks,
for a lock that most jobs never need. A program that submits 1,000 small
calls and then reads their results in turn waits on a few of them: the rest
are done when it asks. Each tracked object counts toward the collector's
next pass; in a 1,000-call run it ran 30 to 36 times, and its slowest passes
were most of the spread between runs (benchmarks/RESULTS.md).

:class:`LeanFuture` makes them on first use (``_condition``, ``_waiters``,
``_done_callbacks`` are class-level descriptors that store what they make in
the instance), answers ``done()`` and ``cancelled()`` without the lock (one
attribute read, atomic under the GIL), and resolves itself without its own lock
while nobody has made it (:meth:`LeanFuture._resolve`).

Why resolving without the lock loses no waiter and tells none twice: the
Condition is made under one lock all LeanFutures share
(:data:`_CONDITION_MADE`), and :meth:`LeanFuture._resolve` looks for it and,
finding none, writes the state under that same lock. Everything that waits or
watches (``Future.result``, ``concurrent.futures.wait``/``as_completed``,
``add_done_callback``) makes the Condition first, then takes it, then reads
the state. So either the Condition was there first, and the future is
resolved under it as ``Future`` resolves (tell the waiters, notify); or the
state was written first, and every watcher reads it done. (Writing the state
first and then looking again for a Condition, as it did, left a window between
the two: ``wait()`` could count the future done, install its waiter, and be
told of the future again: it returned with another future pending, or never,
as its count went below zero: attack review.) The shared lock is taken once
per resolve and once per future someone watches, for a few instructions.

Why two resolvers never both win (corral's loop resolving a job while the
program calls the Future's own ``set_result``, say): each first claims the
future with one ``dict.setdefault``, which is atomic (one C call under the
GIL, and under the dict's own lock in a free-threaded build); the one that
finds a claim there raises ``InvalidStateError`` and writes nothing. Checking
the state and then writing it, as ``Future`` does under its lock, would leave
a thread switch between the two (review: both then wrote, and each done
callback ran twice). ``set_result``, ``set_exception`` and ``cancel`` all
resolve through :meth:`LeanFuture._resolve`, so every path claims.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures._base import (_STATE_TO_DESCRIPTION_MAP as _STATE_NAMES, CANCELLED,
                                      CANCELLED_AND_NOTIFIED, FINISHED, LOGGER, PENDING)
from collections.abc import Callable
from typing import Any

from corral.runtime.threads import logged_and_passed

__all__ = ["LeanFuture"]

_DONE = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED})
_CANCELLED = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED})


#: Held while a LeanFuture's Condition is made, and while a future with none
#: is resolved (module docstring).
_CONDITION_MADE = threading.Lock()


class _MadeOnUse:
    """A class attribute that makes the instance's own value on first read,
    under *lock* if one is given.

    A non-data descriptor: once the value is in the instance's ``__dict__``,
    that is found first and this is not called again. (Not ``__getattr__``:
    that is also asked when a property raises AttributeError, and its own
    error then hid the property's.)"""

    def __init__(self, make: Callable[[], Any], lock: threading.Lock | None = None) -> None:
        self.make = make
        self.lock = lock or contextlib.nullcontext()
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        with self.lock:  # setdefault: two threads asking at once get the same one
            return instance.__dict__.setdefault(self.name, self.make())


class LeanFuture(Future):
    """A Future whose lock and lists are made when first used (module docstring)."""

    _condition = _MadeOnUse(threading.Condition, _CONDITION_MADE)
    _waiters = _MadeOnUse(list)
    _done_callbacks = _MadeOnUse(list)

    def __init__(self) -> None:  # (not Future's: it makes them all now)
        self._state = PENDING
        self._result = None
        self._exception = None

    def __repr__(self) -> str:
        """As ``Future``'s, without its lock: an error that names the future
        must not wait for a thread that is resolving it."""
        state, error = self._state, self._exception
        where = f"<{type(self).__name__} at {id(self):#x} state={_STATE_NAMES[state]}"
        if state != FINISHED:
            return where + ">"
        if error is not None:
            return f"{where} raised {type(error).__name__}>"
        return f"{where} returned {type(self._result).__name__}>"

    def done(self) -> bool:
        return self._state in _DONE

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    def _outcome_now(self) -> Any:
        """``Future.result(0)`` without the lock: the value, or raise the
        exception, CancelledError, or TimeoutError if it is not done."""
        state = self._state
        if state in _CANCELLED:
            raise CancelledError()
        if state != FINISHED:
            raise TimeoutError()
        error = self._exception
        if error is not None:
            try:
                raise error
            finally:
                del error  # (no cycle through the frame: as Future.result)
        return self._result

    def _exception_now(self) -> BaseException | None:
        """``Future.exception(0)`` without the lock."""
        state = self._state
        if state in _CANCELLED:
            raise CancelledError()
        if state != FINISHED:
            raise TimeoutError()
        return self._exception

    def set_result(self, result: Any) -> None:
        """As ``Future.set_result``: claims the future first (module docstring)."""
        self._resolve(result)

    def set_exception(self, exception: BaseException | None) -> None:
        """As ``Future.set_exception``: claims the future first (module docstring)."""
        self._resolve(exception=exception)

    def cancel(self) -> bool:
        """As ``Future.cancel`` for a future nobody started: claims it first."""
        if self._state not in (PENDING, *_CANCELLED):
            return False
        try:
            self._resolve(cancelled=True)
        except InvalidStateError:
            return self.cancelled()
        return True

    def _resolve(self, result: Any = None, exception: BaseException | None = None,
                 cancelled: bool = False) -> None:
        """Resolve as ``set_result``, ``set_exception`` or a cancel would, and
        tell whoever waits; without its own lock while nobody has made it.

        Raises:
            InvalidStateError: it is resolved already, or being resolved by
                another thread (which claimed it first: module docstring).
        """
        claim = object()
        if self.__dict__.setdefault("_claimed_by", claim) is not claim:
            raise InvalidStateError(f"{self!r} is done already")
        with _CONDITION_MADE:
            condition = self.__dict__.get("_condition")
            if condition is None:  # nobody waits or watches, and nobody can start to now
                self._settle(result, exception, cancelled)
        if condition is not None:  # someone waits or watches: as Future does, under its lock
            with condition:
                self._settle(result, exception, cancelled)
                self._tell_waiters(exception, cancelled)
                condition.notify_all()
        for callback in self.__dict__.get("_done_callbacks", ()):
            try:
                callback(self)
            except BaseException as error:
                if not logged_and_passed(error):
                    raise
                LOGGER.exception("exception calling callback for %r", self)

    def _settle(self, result: Any, exception: BaseException | None, cancelled: bool) -> None:
        if cancelled:
            self._state = CANCELLED_AND_NOTIFIED
        else:
            self._result = result
            self._exception = exception
            self._state = FINISHED

    def _tell_waiters(self, exception: BaseException | None, cancelled: bool) -> None:
        for waiter in self.__dict__.get("_waiters", ()):
            if cancelled:
                waiter.add_cancelled(self)
            elif exception is not None:
                waiter.add_exception(self)
            else:
                waiter.add_result(self)
