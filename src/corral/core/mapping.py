"""``Scheduler.map``: every call a job of its own, made and dispatched in batches.

``Executor.map`` makes a Future per item before it returns, which for a
million items is gigabytes. Here the first batch of calls is made and
dispatched by ``map()`` itself (so a bad option raises there), and a feeder
thread makes and dispatches the next batch each time the one before the last
has finished: at most two batches run or wait at once, the iterables are
read as the batches are made, and every call runs whether or not its result
is ever read (the Scheduler waits for its feeders when it shuts down).
Results come in order, each job let go once read, so a map whose results are
read runs in flat memory. A call that cannot be dispatched (its argument
cannot be pickled) raises at its own place, after the results of the calls
before it, as ``Executor.map`` does.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import wait as wait_futures
from typing import Any, Protocol

from corral.core.job import Job
from corral.core.chunk_sizes import as_chunk
from corral.runtime.chunks import ChunkFailed
from corral.runtime.payload import dumps_value
from corral.runtime.threads import signals_allowed, start_thread

__all__ = ["MapFeed", "FollowUp", "chunked", "chunk_items", "unchunked"]

_END = None  # put on the queue of batches after the last one


def _take_result(handles: list[Job], deadline: float | None) -> Any:
    """The result of the last job of *handles*, which is then let go. One not
    there by *deadline* raises TimeoutError, and is cancelled with the others
    not read (:meth:`MapFeed.results`), its reason naming the timeout."""
    job = handles[-1]
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        value = job.result(left)
    except TimeoutError as error:
        if job.done() and not job.cancelled() and job.exception(0) is error:  # the call's own
            raise
        raise TimeoutError(_LATE) from None
    handles.pop()
    return value


_LATE = "map(): a result was not there within the map's timeout"


class FollowUp(Protocol):
    """What a map whose jobs may stop short (``chunksize="auto"``, see
    :mod:`corral.core.chunk_sizes`) does about it."""

    def learn(self, job: Job) -> None:
        """*job* ended (the feeder thread)."""

    def rest(self, job: Job) -> list[Job]:
        """Jobs (made, not dispatched) for the calls *job* left undone; [] for none."""

    def stops_short(self, job: Job, value: Any) -> bool:
        """Whether *job*, whose result is *value*, left calls undone."""


class MapFeed:
    """The batches of one ``map()`` call and the thread that dispatches them.

    With a :class:`FollowUp`, the feeder also watches every job end, and
    dispatches jobs for what one left undone; the reader, reaching a job that
    stopped short, reads those next, in its place.
    """

    def __init__(self, make: Callable[[tuple], Job], dispatch: Callable[[list[Job]], object],
                 cancel: Callable[[list[Job], BaseException | None, float], object],
                 calls: Iterator[tuple], window: int, follow_up: FollowUp | None = None,
                 where: Callable[[Job, int], str] | None = None,
                 deadline: float | None = None) -> None:
        self._make = make
        #: The map's timeout, as a time.monotonic() deadline: past it, nothing more
        #: is dispatched, read or not (attack review: a map of an endless
        #: generator, given a timeout and never read, ran for ever), and the
        #: reader meets TimeoutError where the calls not dispatched would come.
        self._deadline = deadline
        self._timed_out = False
        #: Which of the input's items a job is, given the number of jobs before
        #: it (an error names it): by default, the item of that number.
        self._where = where or _item_at
        self._sent = 0  # the input's jobs dispatched so far
        self._follow_up = follow_up
        #: The jobs dispatched for what a job left undone, until the reader
        #: takes them (guarded by the condition, as the stopping is).
        self._followers: dict[Job, list[Job]] = {}
        self._followed = threading.Condition()
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
        if self._past_deadline():  # (read past the timeout: nothing is dispatched)
            first = []
        first, error = _without_frames(*self._dispatch_until_error(first))
        if error is not None and not first:
            raise error  # the map's first call: a bad option, most often
        self._error = error  # raised after the results of the calls before it
        # The reader empties the lists it is given as it reads: the feeder keeps
        # lists of its own (sharing one, it counted a job, then found it gone
        # before it watched it, and waited for its end for ever).
        self._batches.put(list(first))
        self._complete = self._input_done and error is None and not self._timed_out
        feed = self._feed if follow_up is None else self._feed_following
        self._thread = start_thread(feed, args=(first,), name="corral-map-feeder")

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

    def _send_batch(self) -> list[Job] | None:
        """Make and dispatch the next batch; None when none was sent: the
        input ended or failed, a call could not be dispatched (the error is
        kept in ``_error``, and the calls before it are sent), the map was
        stopped or left meanwhile, or its timeout passed."""
        if self._error is not None or self._past_deadline():
            return None
        try:
            batch = self._next_batch()
        except Exception as error:  # the input's: raised after the results before it
            self._error = error
            return None
        if not batch:
            self._complete = self._input_done  # (an input that raised is not)
            return None
        # Made but not dispatched: the map is cut short, or its timeout passed while
        # the input was read (re-attack review: a slow input's batch went after it).
        if self._stop.is_set() or self._past_deadline():
            return None
        batch, self._error = _without_frames(*self._dispatch_until_error(batch))
        if not batch:
            return None
        self._batches.put(list(batch))  # (the reader's own: see __init__)
        if self._stop.is_set() and self._cut_short is None:
            self._cancel(batch, self._left_by, self.started)  # the reader left
            return None
        # (Stopped meanwhile by a shutdown without wait: the batch was
        # dispatched, so it runs and its results are read.)
        self._complete = self._input_done and self._error is None
        return batch

    def _dispatch_until_error(self, batch: list[Job]) -> tuple[list[Job], Exception | None]:
        """Dispatch *batch*, or where one of its jobs cannot be dispatched
        (dispatching is all or nothing), the jobs before that one: those
        dispatched, and the error, which names the job's place in the map
        unless it is the map's first (an error every call would raise)."""
        try:
            self._dispatch(batch)
        except Exception as error:
            if len(batch) > 1:
                half = len(batch) // 2  # halved, so a batch of 1,000 is tried ~20 times
                sent, failed = self._dispatch_until_error(batch[:half])
                if failed is None:
                    rest, failed = self._dispatch_until_error(batch[half:])
                    sent = sent + rest
                return sent, failed
            if self._sent == 0 and not getattr(error, "in_arguments", False):
                return [], error  # (an error every call would raise: a bad function)
            try:
                placed = type(error)(f"map(), {self._where(batch[0], self._sent)}: {error}")
            except Exception:  # an error type that takes other arguments: as it is
                return [], error
            placed.__cause__ = error.__cause__
            return [], placed
        self._sent += len(batch)
        return batch, None

    def _feed(self, previous: list[Job]) -> None:
        try:
            while not self._stop.is_set():
                batch = self._send_batch()
                if batch is None:
                    break
                while (not self._stop.is_set() and not self._past_deadline()
                       and wait_futures(previous, timeout=0.2).not_done):
                    pass
                previous = batch
        except BaseException as error:  # told to the reader when it gets there
            self._error = error
        finally:
            self._batches.put(_END)

    def _feed_following(self, first: list[Job]) -> None:
        """:meth:`_feed` for a map with a :class:`FollowUp`: the next batch once
        no more than a batch's worth of the input's jobs is unfinished, and
        each job, as it ends, learnt from and followed up. It ends when every
        job has ended (or the map is stopped)."""
        assert self._follow_up is not None
        ended: queue.SimpleQueue[tuple[Job, bool]] = queue.SimpleQueue()

        def watch(jobs: list[Job], of_input: bool) -> None:
            def tell(done: Future) -> None:
                ended.put((done, of_input))  # type: ignore[arg-type]

            for job in jobs:
                job.add_done_callback(tell)

        input_left = unfinished = len(first)  # of the input's jobs; of all
        watch(first, True)
        try:
            while not self._stop.is_set() and not self._past_deadline():
                while not self._complete and input_left <= self._window:
                    batch = self._send_batch()
                    if batch is None:
                        break
                    input_left += len(batch)
                    unfinished += len(batch)
                    watch(batch, True)
                if unfinished == 0 or self._stop.is_set():
                    break
                try:
                    job, of_input = ended.get(timeout=0.2)
                except queue.Empty:
                    continue
                unfinished -= 1
                input_left -= of_input
                self._follow_up.learn(job)
                with self._followed:
                    if self._stop.is_set():
                        break
                    rest = self._follow_up.rest(job)
                    if rest:
                        self._dispatch(rest)
                        self._followers[job] = rest
                        self._followed.notify_all()
                del job
                unfinished += len(rest)
                watch(rest, False)
        except BaseException as error:  # told to the reader when it gets there
            self._error = error
        finally:
            self._batches.put(_END)
            with self._followed:
                self._followed.notify_all()  # a reader waiting for followers: there are none

    def _past_deadline(self) -> bool:
        """Whether the map's timeout has passed (then it dispatches nothing more)."""
        if self._deadline is not None and not self._timed_out and not self._complete:
            self._timed_out = time.monotonic() >= self._deadline
        return self._timed_out

    def stop(self, why: str | None = None) -> None:
        """Dispatch nothing more; *why* (the scheduler's shutdown or interrupt)
        is raised by the iterator where the calls not dispatched would have
        come, so that a map cut short never looks complete."""
        if why is not None:
            self._cut_short = why
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every call is dispatched (with a follow-up, as automatic
        chunks have, until every job has ended); False if *timeout* passed first."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

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
                        if self._timed_out and not self._complete:
                            raise TimeoutError(_LATE)
                        if self._cut_short is not None and not self._complete:
                            raise CancelledError(f"map(): {self._cut_short} before every "
                                                 "call was dispatched")
                        return
                    handles = got
                    got = None
                    handles.reverse()  # popped from the end: each job let go once read
                if self._follow_up is None:
                    yield _take_result(handles, deadline)  # (not kept while the caller holds it)
                else:
                    yield self._take_following(handles, deadline)
        finally:
            # What ended the reading, if anything did: an exception raised here
            # (a cancelled call's), or GeneratorExit when the caller's loop
            # was left, by an exception of its own or a break.
            self._left_by = sys.exc_info()[1]
            with self._followed:  # (no follower is dispatched after this)
                self._stop.set()
                unread = handles + [job for rest in self._followers.values() for job in rest]
                self._followers.clear()
            while True:  # and those dispatched but not read at all
                try:
                    batch = self._batches.get_nowait()
                except queue.Empty:
                    break
                unread += batch or []
            if unread:
                self._cancel(unread, self._left_by, self.started)  # at once, not one by one

    def _take_following(self, handles: list[Job], deadline: float | None) -> Any:
        """:func:`_take_result`, and where that job stopped short, the jobs
        that finish its work put next in line."""
        job = handles[-1]
        value = _take_result(handles, deadline)
        assert self._follow_up is not None
        if self._follow_up.stops_short(job, value):
            handles.extend(reversed(self._followers_of(job, deadline)))
        return value

    def _followers_of(self, job: Job, deadline: float | None) -> list[Job]:
        """The jobs dispatched for what *job* left undone, once the feeder has
        dispatched them (it watches every job end)."""
        with self._followed:
            while job not in self._followers:
                if not self._thread.is_alive():  # stopped, or failed, before it got there
                    if self._error is not None:
                        raise self._error
                    if self._timed_out:
                        raise TimeoutError(_LATE)
                    raise CancelledError(f"map(): {self._cut_short or 'the map was stopped'} "
                                         "before every call was dispatched")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(_LATE)
                self._followed.wait(0.2 if left is None else min(0.2, left))
            return self._followers.pop(job)


def _without_frames(sent: list[Job], error: Exception | None
                    ) -> tuple[list[Job], Exception | None]:
    """*sent* and *error*, which lets go of the frames it (and what caused it)
    was raised through: they hold the batch, which the error, kept until it is
    raised and by whoever catches it, kept alive (attack review: the jobs read
    before it were never let go). Its message says what went wrong; their
    frames were corral's own pickling."""
    waiting: list[BaseException | None] = [error]
    seen: set[int] = set()
    while waiting:  # the error, what caused it, what it was raised in the handling of
        each = waiting.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        each.__traceback__ = None  # (its frames lead to the feeder's, which hold batches too)
        waiting += [each.__cause__, each.__context__]
    return sent, error


def _item_at(job: Job, before: int) -> str:
    return f"input item {before:,} (counting from 0)"


def chunk_items(job: Job, before: int) -> str:
    """Which input items a chunk job holds (its arguments: the calls, and the
    number of the first), and the first whose arguments do not pickle, if one
    does not (cold review: "the chunk of items 461 to 710" for item 700)."""
    calls, first = job._record.call_parts[0]
    span = f"{first:,} to {first + len(calls) - 1:,}"
    for index, call in enumerate(calls):
        try:
            dumps_value(call)
        except Exception:
            return f"input item {first + index:,} (counting from 0; in the chunk of items {span})"
    return f"the chunk of input items {span} (counting from 0)"


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
        chunk = as_chunk(chunk)
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
