"""LeanFuture: a Future that makes its lock on first use and resolves
without it; it must behave as a stock Future under every thread interleaving
a program can cause (a thread switch may come between any two lines)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import InvalidStateError, wait
from pathlib import Path

import pytest

from corral.core.lean_future import LeanFuture

LEAN_FUTURE_SOURCE = str(Path(sys.modules[LeanFuture.__module__].__file__ or ""))


class PauseAtLine:
    """Pauses the thread it traces at its *k*-th line in lean_future.py, so
    another thread can run exactly there (a forced thread switch)."""

    def __init__(self, k: int) -> None:
        self.k, self.seen = k, 0
        self.paused, self.go = threading.Event(), threading.Event()
        self.finished = False  # it ran all its lines: k was past its last one

    def reached(self) -> bool:
        """Wait until it pauses at line *k* (True) or finishes before (False)."""
        assert self.paused.wait(10)
        return not self.finished

    def trace(self, frame, event, arg):  # (sys.settrace's signature)
        return self.line if frame.f_code.co_filename == LEAN_FUTURE_SOURCE else None

    def line(self, frame, event, arg):
        if event == "line":
            self.seen += 1
            if self.seen == self.k:
                self.paused.set()
                self.go.wait(10)
        return self.line

    def run(self, work: Callable[[], None]) -> threading.Thread:
        def traced() -> None:
            sys.settrace(self.trace)
            try:
                work()
            finally:
                sys.settrace(None)
                self.finished = True
                self.paused.set()
        thread = threading.Thread(target=traced)
        thread.start()
        return thread


def attempt(outcomes: list[str], name: str, resolve: Callable[[], None]) -> Callable[[], None]:
    def work() -> None:
        try:
            resolve()
        except InvalidStateError:
            outcomes.append(f"{name} refused")
        else:
            outcomes.append(f"{name} won")
    return work


@pytest.mark.parametrize("paused_first", ["corral", "program"])
def test_two_threads_resolving_one_future_at_once_never_both_win(paused_first):
    """corral's loop resolves a job while the program adds a done callback and
    calls the Future's own set_result (a Job is a Future): whichever line the
    first is switched out at, one wins and the other is refused, its value is
    the result, and the callback runs once (review: both won, and the
    callback ran twice)."""
    k = 1
    while True:
        future = LeanFuture()
        called: list[object] = []
        outcomes: list[str] = []

        def program_sets_result(future=future, called=called) -> None:
            future.add_done_callback(lambda done: called.append(done.result(0)))
            future.set_result("program's")
        corral_resolves = attempt(outcomes, "corral",
                                  lambda future=future: future._resolve("corral's"))
        program_resolves = attempt(outcomes, "program", program_sets_result)
        first, second = ((corral_resolves, program_resolves) if paused_first == "corral"
                         else (program_resolves, corral_resolves))
        pause = PauseAtLine(k)
        first_thread = pause.run(first)
        if not pause.reached():  # every line it runs was tried as a switch point
            first_thread.join(10)
            break
        second_thread = threading.Thread(target=second)
        second_thread.start()
        second_thread.join(0.05)  # (it may wait for a lock the first holds: then let it)
        pause.go.set()
        first_thread.join(10)
        second_thread.join(10)
        winners = [outcome for outcome in outcomes if outcome.endswith("won")]
        assert len(outcomes) == 2 and len(winners) == 1, (k, outcomes)
        winner = winners[0].split()[0] + "'s"
        assert future.result(0) == winner and called == [winner], (k, outcomes, called)
        k += 1
    assert k > 5  # (it was switched out at several lines)


def test_a_cancel_and_a_result_at_once_leave_it_one_or_the_other():
    k = 1
    while True:
        future = LeanFuture()
        called: list[bool] = []
        future.add_done_callback(lambda done: called.append(done.cancelled()))  # noqa: B023
        pause = PauseAtLine(k)
        cancelled: list[bool] = []
        thread = pause.run(lambda: cancelled.append(future.cancel()))  # noqa: B023
        reached = pause.reached()
        try:
            future.set_result(1)
            set_first = True
        except InvalidStateError:
            set_first = False
        pause.go.set()
        thread.join(10)
        assert len(called) == 1 and cancelled == [not set_first] == [future.cancelled()], k
        if not reached:
            break
        k += 1


def test_waiting_for_all_neither_returns_early_nor_hangs_wherever_the_resolver_is_switched_out():
    """``wait([x, y])`` while corral's loop resolves x: it returns once y is
    done too, never before, and never hangs. (The loop wrote x's state, then
    looked for a waiter, and told one that had counted x done already: wait()
    returned with y pending, or never, its count gone below zero: attack review.)"""
    k = 1
    while True:
        x, y = LeanFuture(), LeanFuture()
        returned = threading.Event()
        waited: list[tuple] = []

        def wait_for_both(x=x, y=y, waited=waited, returned=returned) -> None:
            waited.append(tuple(wait([x, y], timeout=30)))
            returned.set()
        pause = PauseAtLine(k)
        resolver = pause.run(lambda x=x: x._resolve("x"))
        reached = pause.reached()
        waiter = threading.Thread(target=wait_for_both)
        waiter.start()
        waiter.join(0.05)  # (it may wait for a lock the resolver holds: then let it)
        pause.go.set()
        resolver.join(10)
        assert not returned.wait(0.05), f"wait() returned with y pending (line {k})"
        y.set_result("y")
        assert returned.wait(10), f"wait() did not return once both were done (line {k})"
        waiter.join(10)
        assert waited == [({x, y}, set())], k
        if not reached:
            break
        k += 1
    assert k > 5


def test_a_subclass_property_that_raises_attribute_error_shows_its_own_message():
    """The lazily made lock and lists are not found through ``__getattr__``,
    which a failing property falls back to: its message named the property,
    not what went wrong inside it (review)."""
    class WithProperty(LeanFuture):
        @property
        def label(self) -> str:
            return self.missing_setting  # type: ignore[attr-defined]

    with pytest.raises(AttributeError, match="missing_setting"):
        assert WithProperty().label


def test_its_lock_and_lists_are_made_only_when_something_waits_or_watches():
    future = LeanFuture()
    future._resolve(1)
    assert not {"_condition", "_waiters", "_done_callbacks"} & set(vars(future))
    watched = LeanFuture()
    seen: list[int] = []
    watched.add_done_callback(lambda done: seen.append(done.result(0)))
    threading.Timer(0.05, watched.set_result, (2,)).start()
    assert watched.result(timeout=10) == 2 and seen == [2]
    with pytest.raises(InvalidStateError, match="done already"):
        watched.set_exception(ValueError("late"))
