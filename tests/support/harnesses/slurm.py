"""A real one-node Slurm (``scripts/slurm``), without accounting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.harnesses import Harness, HarnessSpec


@pytest.fixture(scope="session")
def contract_slurm() -> Iterator[Any]:
    """A real one-node Slurm without accounting for the stories (the session's
    ``slurm`` fixture is parametrized, so a story cannot ask for it per backend)."""
    import slurm_cluster

    reason = slurm_cluster.why_slurm_cannot_run()
    if reason is not None:  # as conftest's slurm fixture does: the cluster lane says why
        pytest.skip(f"NO SLURM TESTS: {reason}")
    cluster = slurm_cluster.start(accounting=False)
    try:
        yield cluster
    finally:
        slurm_cluster.stop(cluster)


def start(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    cluster = request.getfixturevalue("contract_slurm")
    request.getfixturevalue("monkeypatch").setenv("SLURM_CONF", cluster.conf)
    yield Harness("slurm", root, {"SLURM_CONF": cluster.conf})


HARNESS = HarnessSpec("slurm", start, needs_cluster=True)
