"""The backends of schedulers described in settings, made on demand.

A :class:`~corral.backends.base.BackendInfo` names its backend by a
``"module:name"`` string; for a described scheduler that name is
``backend_<key>`` (its class) or ``control_<key>`` (its control with no driver),
where *key* is the one :func:`corral.backends.batch.described.describe` gave its
table. This module answers those names (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar

from corral.backends.batch import control
from corral.backends.batch.base import BatchBackend
from corral.backends.batch.described import table_for_key
from corral.backends.batch.described.scheduler import scheduler_class
from corral.backends.batch.scheduler import BatchScheduler
from corral.errors import BackendError

__all__: list[str] = []


class DescribedBackend(BatchBackend):
    """The batch base over a described scheduler. Without a ``signal`` command an
    abort sends nothing (the job is cancelled once the abort's grace is over)."""

    scheduler: ClassVar[BatchScheduler]

    def __init__(self, **settings: Any) -> None:
        """As :class:`BatchBackend`; refuses array options the table cannot send.

        Raises:
            ValueError: ``max_array_size`` above 1 with ``array = false``, or
                ``array_throttle`` with no ``throttle`` in the array table.
        """
        array, name = self.scheduler.table.array, self.scheduler.name  # type: ignore[attr-defined]
        given = settings.get("options") or {}
        if array is None and given.get("max_array_size", 1) != 1:
            raise ValueError(f"max_array_size={given['max_array_size']!r}: [schedulers.{name}] "
                             "has no arrays (array = false), so each job is one submission")
        if given.get("array_throttle") is not None and (array is None or array.throttle is None):
            raise ValueError(f"array_throttle={given['array_throttle']!r}: "
                             f"[schedulers.{name}] says no way to throttle an array (add "
                             "throttle to its array table, e.g. throttle = \"%{limit}\")")
        super().__init__(**settings)

    def terminate(self, job_ids: Collection[int | str]) -> None:
        if self.scheduler.table.signal is not None:  # type: ignore[attr-defined]
            super().terminate(job_ids)


@functools.cache
def _backend_class(key: str) -> type[DescribedBackend]:
    table = table_for_key(key)
    namespace: dict[str, Any] = {"scheduler": scheduler_class(table)(),
                                 "chains_dependencies": table.dependency is not None,
                                 "enforces_walltime": "walltime" in table.directives}
    if table.hold is None:  # no pause: the engine asks the registry, the class agrees
        namespace.update(hold=None, release=None)
    return type(f"DescribedBackend_{table.name}", (DescribedBackend,), namespace)


def _control(key: str) -> Callable[[str, Sequence[str]], str]:
    def control_without_driver(verb: str, native_ids: Sequence[str]) -> str:
        """``corral cancel/pause/resume`` on this scheduler's jobs with no driver.

        Raises:
            BackendError: the scheduler's command failed, or pause/resume on a
                table with no hold/release command.
        """
        scheduler = _backend_class(key).scheduler
        if verb != control.Verb.CANCEL.value and table_for_key(key).hold is None:
            raise BackendError(f"[schedulers.{scheduler.name}] has no hold and release "
                               f"commands: {verb} cannot act on its jobs without a driver")
        return control.control_without_driver(scheduler, verb, native_ids)
    return control_without_driver


def __getattr__(name: str) -> Any:
    kind, _, key = name.partition("_")
    if kind == "backend" and key:
        return _backend_class(key)
    if kind == "control" and key:
        return _control(key)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
