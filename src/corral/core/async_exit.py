"""Leaving ``async with Scheduler()``: the wait for its jobs, off the event loop.

``with`` waits for the jobs in the thread that leaves the block; ``async with``
must not hold the event loop meanwhile, so the wait runs on a thread of its
own. Not on the loop's default executor: a program whose own
``run_in_executor`` calls fill that pool would leave the wait, and the cancel
of the jobs when the task is cancelled, queued behind them (re-attack review:
a timeout of 1.5 s around the block took 15.7 s).

A task cancelled while it waits (Ctrl-C under ``asyncio.run``, a timeout
around the block, ``Task.cancel()``) cancels the jobs, as Ctrl-C in a
``with`` block does, and leaves only once they are ended, a second cancel
too (review: the thread waited on, unseen, and the program ended only when
every job had).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from corral.runtime.threads import start_thread

__all__ = ["leave_async_block"]

log = logging.getLogger("corral")


async def leave_async_block(wait_for_jobs: Callable[[], Any],
                            cancel_jobs: Callable[[], bool]) -> None:
    """Run *wait_for_jobs* on a thread of its own and wait for it; if this task
    is cancelled meanwhile, run *cancel_jobs* (False: the driver is given up,
    nothing more to wait for), wait for both, then let the cancel go on."""
    leaving = _on_own_thread(wait_for_jobs)
    try:
        await asyncio.shield(leaving)
    except asyncio.CancelledError:
        leaving.add_done_callback(_read_outcome)  # (awaited or not below: never "unretrieved")
        cancelling = _on_own_thread(cancel_jobs)
        while True:
            try:
                if await asyncio.shield(cancelling):
                    await asyncio.shield(leaving)
                break
            except asyncio.CancelledError:  # asked again: the jobs are being ended
                continue
            except Exception:  # the cancel goes on, as asked: what failed is logged
                log.exception("leaving an async with block whose task was cancelled")
                break
        raise


def _read_outcome(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


def _on_own_thread(function: Callable[[], Any]) -> asyncio.Future[Any]:
    """A future of the running loop that *function*, run on a new thread, settles."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is None:
            done.set_result(value)
        else:
            done.set_exception(error)

    def run() -> None:
        try:
            value, error = function(), None
        except BaseException as raised:  # (handed to the awaiting task, as to_thread does)
            value, error = None, raised
        try:
            loop.call_soon_threadsafe(settle, value, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    start_thread(run, name="corral-async-exit")
    return done
