"""The backends the contract suite (``tests/test_backend_contract.py``) runs on.

Each module here declares one backend as ``HARNESS``, a :class:`HarnessSpec`:
how a story gets a :class:`Harness` for it, whether it needs a real cluster (the
fast lane leaves those out) and, for a backend the tests ship, its
:class:`~corral.backends.BackendInfo`, registered only while a story runs on it.
A new backend gets the whole suite by adding one module here; the module may also
define the pytest fixtures its harness asks for (``tests/conftest.py`` loads every
module here as a plugin).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import corral
from corral.backends import BackendInfo, backend_info

__all__ = ["Harness", "HarnessSpec", "harnesses", "harness_modules", "info_of", "backend_of",
           "scheduler_options", "POLL_S"]

#: Seconds between a batch backend's status queries (backing off to twice that).
POLL_S = 0.1


@dataclass
class Harness:
    """One backend as the stories use it."""

    #: The harness's name (a story's id); its spec tells the backend's where they differ.
    name: str
    root: Path
    #: Variables every process of the story needs (a fake scheduler's PATH...).
    environ: dict[str, str] = field(default_factory=dict)
    #: How many status queries the backend ran so far, as a user could count
    #: them; None where it runs none (local) or they cannot be counted.
    status_queries: Callable[[], int] | None = None
    #: ``backend_options`` beyond the quick polls every batch harness gets.
    backend_options: dict[str, Any] = field(default_factory=dict)
    made: list[corral.Scheduler] = field(default_factory=list)

    def scheduler(self, **options: Any) -> corral.Scheduler:
        """A Scheduler on this backend, shut down at the end of the story."""
        made = corral.Scheduler(**scheduler_options(self.name, self.backend_options),
                                workdir=self.root / f"run{len(self.made)}", **options)
        self.made.append(made)
        return made

    def close(self) -> None:
        for made in self.made:
            if not made.wait(timeout=30):
                made.interrupt()
            made.shutdown()


@dataclass(frozen=True)
class HarnessSpec:
    """How the stories get one backend."""

    name: str
    #: A generator: yields the :class:`Harness` for one story, then cleans up.
    start: Callable[[pytest.FixtureRequest, Path], Iterator[Harness]]
    #: It needs a real cluster: marked ``cluster``, left out of the fast lane.
    needs_cluster: bool = False
    #: A backend the tests ship (not registered in corral): its info, for the
    #: stories' choice by capability, registered by the harness while a story runs.
    test_backend: BackendInfo | None = None
    #: The backend's name, where it is not the harness's (two harnesses for PBS's dialects).
    backend: str | None = None
    #: Called in a story's own driver process before it makes a Scheduler there
    #: (registers a backend the tests ship); None: nothing to do.
    prepare_driver: Callable[[], None] | None = None


#: The order stories run in: these first, then any other module here by name.
_FIRST = ("local", "fakebatch", "slurm")


def harness_modules() -> list[str]:
    """The importable names of every module here, in :data:`_FIRST` order."""
    names = [module.name for module in pkgutil.iter_modules(__path__)]
    ordered = [name for name in _FIRST if name in names]
    ordered += sorted(name for name in names if name not in _FIRST)
    return [f"{__name__}.{name}" for name in ordered]


@functools.cache
def harnesses() -> dict[str, HarnessSpec]:
    """Every backend the stories run on, by name (imported on first use, after
    pytest loaded the modules as plugins, so that their asserts are rewritten)."""
    specs = {}
    for module in harness_modules():
        spec = importlib.import_module(module).HARNESS
        specs[spec.name] = spec
    return specs


def backend_of(harness: str) -> str:
    """The name of the backend the harness *harness* runs."""
    spec = harnesses().get(harness)
    return spec.backend or harness if spec is not None else harness


def info_of(harness: str) -> BackendInfo:
    """The backend of the harness *harness*: one the tests ship is registered only
    while a story uses it, so it is described from its harness."""
    spec = harnesses().get(harness)
    if spec is not None and spec.test_backend is not None:
        return spec.test_backend
    return backend_info(backend_of(harness))


def scheduler_options(harness: str,
                      backend_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a Scheduler of the harness *harness* is given: room for a few jobs
    where corral packs them, quick polls where a batch scheduler is asked."""
    name = backend_of(harness)
    info = info_of(harness)
    if info.capabilities.packs_locally:
        return {"backend": name, "cores": 4}
    if "poll_interval" not in info.backend_options:  # it is told, it does not poll
        return {"backend": name, "backend_options": dict(backend_options or {})}
    return {"backend": name, "backend_options": {"poll_interval": POLL_S,
                                                 "max_poll_interval": 2 * POLL_S,
                                                 **(backend_options or {})}}
