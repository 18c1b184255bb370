"""The fake batch scheduler's backend: the shared batch base over :class:`FakeBatchScheduler`.

Kept apart from :mod:`support.fakebatch.scheduler` so that declaring the backend
(its :class:`~corral.backends.base.BackendInfo`) imports none of the base.
"""

from __future__ import annotations

from typing import ClassVar

from corral.backends.batch.base import BatchBackend
from corral.backends.batch.scheduler import BatchScheduler

from support.fakebatch.scheduler import FakeBatchScheduler

__all__ = ["FakeBatchBackend"]


class FakeBatchBackend(BatchBackend):
    scheduler: ClassVar[BatchScheduler] = FakeBatchScheduler()
