"""Dask: a real ``dask scheduler`` with two ``dask worker`` processes on loopback
(``tests/dask_cluster.py``), one declaring resources and one not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.harnesses import Harness, HarnessSpec


@pytest.fixture(scope="session")
def contract_dask(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import dask_cluster

    cluster = dask_cluster.start(tmp_path_factory.mktemp("dask"))
    try:
        yield cluster
    finally:
        dask_cluster.stop(cluster)


def start(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    cluster = request.getfixturevalue("contract_dask")
    yield Harness("dask", root, backend_options={"address": cluster.address})


HARNESS = HarnessSpec("dask", start, needs_cluster=True)
