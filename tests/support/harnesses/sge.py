"""A real one-node Grid Engine (``scripts/sge``): SGE 8.1.9 with accounting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.harnesses import Harness, HarnessSpec


@pytest.fixture(scope="session")
def contract_sge() -> Iterator[Any]:
    """A real one-node Grid Engine, once per session, for the stories and for
    ``tests/test_sge.py``."""
    import sge_cluster

    reason = sge_cluster.why_sge_cannot_run()
    if reason is not None:
        pytest.skip(f"NO SGE TESTS: {reason}")
    cluster = sge_cluster.start()
    try:
        yield cluster
    finally:
        sge_cluster.stop(cluster)


def start(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    request.getfixturevalue("contract_sge")
    yield Harness("sge", root)


HARNESS = HarnessSpec("sge", start, needs_cluster=True)
