"""``corral.wait`` and ``corral.as_completed``: ``concurrent.futures``' own,
with their timeout read as every wait of corral's reads it (see
:func:`corral.runtime.threads.plain_timeout`): ``inf`` waits without limit
rather than raising OverflowError, NaN not at all. They take Jobs and any
other Futures alike."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, Future
from typing import Any

from corral.runtime.threads import plain_timeout

__all__ = ["wait", "as_completed"]


def wait(fs: Iterable[Future[Any]], timeout: float | None = None,
         return_when: str = ALL_COMPLETED) -> concurrent.futures._base.DoneAndNotDoneFutures:
    """:func:`concurrent.futures.wait`."""
    return concurrent.futures.wait(fs, plain_timeout(timeout), return_when)


def as_completed(fs: Iterable[Future[Any]], timeout: float | None = None
                 ) -> Iterator[Future[Any]]:
    """:func:`concurrent.futures.as_completed`."""
    return concurrent.futures.as_completed(fs, plain_timeout(timeout))
