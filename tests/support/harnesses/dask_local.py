"""Dask without an address: each Scheduler starts (and closes) a LocalCluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.harnesses import Harness, HarnessSpec


def start(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    yield Harness("dask_local", root)


HARNESS = HarnessSpec("dask_local", start, needs_cluster=True, backend="dask")
