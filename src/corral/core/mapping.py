"""``Scheduler.map``: every call a job of its own, made and dispatched in batches.

``Executor.map`` makes a Future per item before it returns, which for a
million items is gigabytes. Here the first batch of calls is made and
dispatched by ``map()`` itself (so a bad option or an argument that cannot
be pickled raises there), and a feeder thread makes and dispatches the next
batch each time the one before the last has finished: at most two batches
run or wait at once, the iterables are read as the batches are made, and
every call runs whether or not its result is ever read (the Scheduler waits
for its feeders when it shuts down). Results come in order, each job let go
once read, so a map whose results are read runs in flat memory.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from concurrent.futures import wait as wait_futures
from typing import Any

from corral.core.job import Job
from corral.runtime.chunks import PLAIN_TYPES, ChunkFailed, PlainCalls
from corral.runtime.threads import signals_allowed, start_thread

__all__ = ["MapFeed", "chunked", "unchunked"]

_END = None  # put on the queue of batches after the last one


def _take_result(handles: list[Job], deadline: float | None) -> Any:
    """The result of the last job of *handles*, which is then let go. One not
    there by *deadline* raises TimeoutError, and is cancelled with the others
    not read (:meth:`MapFeed.results`), its reason naming the timeout."""
    job = handles[-1]
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    value = job.result(left)
    handles.pop()
    return value


class MapFeed:
    """The batches of one ``map()`` call and the thread that dispatches them."""

    def __init__(self, make: Callable[[tuple], Job], dispatch: Callable[[list[Job]], object],
                 cancel: Callable[[list[Job], BaseException | None, float], object],
                 calls: Iterator[tuple], window: int) -> None:
        self._make = make
        self._dispatch = dispatch
        #: Cancels jobs whose results nobody will read, given the exception
        #: that ended the reading, if one did, and when the map began (their
        #: reason names what ended it: see driver_signals.unread_reason).
        self._cancel = cancel
        self._left_by: BaseException | None = None
        self.started = time.monotonic()
        self._calls = calls
        self._window = window
        self._batches: queue.Queue[list[Job] | None] = queue.Queue()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._cut_short: str | None = None  # why it was stopped, if it was
        self._input_done = False  # the input has no more items
        self._complete = False  # every call has been dispatched
        self._ahead: list[tuple] = []  # the input's next item, read ahead (see _next_batch)
        self._input_error: Exception | None = None  # the input's, raised with the next batch
        first = self._next_batch()  # in the caller's thread: its errors are the caller's
        self._dispatch(first)
        self._batches.put(first)
        self._complete = self._input_done
        self._thread = start_thread(self._feed, args=(first,), name="corral-map-feeder")

    def _next_batch(self) -> list[Job]:
        """The next batch's jobs. The input is read one item ahead, so that a
        map stopped after its last full batch is known to be complete, not cut
        short; an error the input raises for that item is raised with the
        batch it belongs to, after the results before it."""
        if self._input_error is not None:
            error, self._input_error = self._input_error, None
            raise error
        ahead, self._ahead = self._ahead, []
        try:
            with signals_allowed():  # the program's input: what it starts gets a plain mask
                ahead += itertools.islice(self._calls, self._window - len(ahead))
        except Exception as error:
            if not ahead:
                raise
            # The calls read before it run, and their results come first.
            self._input_error = error
            return [self._make(arguments) for arguments in ahead]
        batch = [self._make(arguments) for arguments in ahead]
        if len(batch) < self._window:
            self._input_done = True
            return batch
        try:
            with signals_allowed():
                self._ahead = [next(self._calls)]
        except StopIteration:
            self._input_done = True
        except Exception as error:
            self._input_error = error
        return batch

    def _feed(self, previous: list[Job]) -> None:
        try:
            while not self._stop.is_set():
                batch = self._next_batch()
                if not batch:
                    self._complete = self._input_done  # (an input that raised is not)
                    break
                if self._stop.is_set():  # made but not dispatched: the map is cut short
                    break
                self._dispatch(batch)
                self._batches.put(batch)
                if self._stop.is_set() and self._cut_short is None:
                    self._cancel(batch, self._left_by, self.started)  # the reader left
                    break
                # (Stopped meanwhile by a shutdown without wait: the batch was
                # dispatched, so it runs and its results are read.)
                self._complete = self._input_done
                while not self._stop.is_set() and wait_futures(previous, timeout=0.2).not_done:
                    pass
                previous = batch
        except BaseException as error:  # told to the reader when it gets there
            self._error = error
        finally:
            self._batches.put(_END)

    def stop(self, why: str | None = None) -> None:
        """Dispatch nothing more; *why* (the scheduler's shutdown or interrupt)
        is raised by the iterator where the calls not dispatched would have
        come, so that a map cut short never looks complete."""
        if why is not None:
            self._cut_short = why
        self._stop.set()

    def join(self) -> None:
        """Wait until every call is dispatched."""
        self._thread.join()

    def results(self, deadline: float | None) -> Iterator[Any]:
        """The results in order, as ``Executor.map`` yields them: a result not
        there by *deadline* raises TimeoutError, and the jobs whose results
        were not read are cancelled when the iterator is left."""
        handles: list[Job] = []
        try:
            while True:
                while not handles:
                    got = self._batches.get()
                    if got is _END:
                        if self._error is not None:
                            raise self._error
                        if self._cut_short is not None and not self._complete:
                            raise CancelledError(f"map(): {self._cut_short} before every "
                                                 "call was dispatched")
                        return
                    handles = got
                    got = None
                    handles.reverse()  # popped from the end: each job let go once read
                yield _take_result(handles, deadline)  # (not kept here while the caller holds it)
        finally:
            # What ended the reading, if anything did: an exception raised here
            # (a cancelled call's), or GeneratorExit when the caller's loop
            # was left, by an exception of its own or a break.
            self._left_by = sys.exc_info()[1]
            self._stop.set()
            unread = handles
            while True:  # and those dispatched but not read at all
                try:
                    batch = self._batches.get_nowait()
                except queue.Empty:
                    break
                unread += batch or []
            if unread:
                self._cancel(unread, self._left_by, self.started)  # at once, not one by one


def chunked(calls: Iterator[tuple], size: int) -> Iterator[tuple[list[tuple], int]]:
    """The argument tuples of *calls* in lists of *size* (the last one
    shorter), each with the map's number of its first call: the arguments of
    a :class:`corral.runtime.chunks.ChunkRunner` job."""
    first = 0
    while True:
        chunk: list[tuple] = []
        try:
            chunk.extend(itertools.islice(calls, size))
        except Exception:  # the input's: raised after the calls read before it
            if chunk:
                yield chunk, first
            raise
        if not chunk:
            return
        if all(type(argument) in PLAIN_TYPES for arguments in chunk for argument in arguments):
            chunk = PlainCalls(chunk)
        yield chunk, first
        first += len(chunk)


def unchunked(results: Iterator[list[Any]]) -> Iterator[Any]:
    """Each call's result from the results of chunk jobs, in order; where a
    call raised, the results before it and then its exception, as an
    unchunked map yields them (see :mod:`corral.runtime.chunks`)."""
    try:
        for values in results:
            yield from values
    except ChunkFailed as failed:
        index, error = failed.first_failure()
        yield from failed.values[:index]
        raise error from error.__cause__
