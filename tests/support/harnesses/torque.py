"""PBS's Torque dialect (``backend="pbs"``, ``dialect="torque"``) on Slurm's own
Torque wrappers over a real one-node Slurm (``scripts/pbs``, ``scripts/slurm``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.harnesses import Harness, HarnessSpec


@pytest.fixture(scope="session")
def torque() -> Iterator[Any]:
    """The session's Slurm with the Torque wrappers first on PATH (for corral only)."""
    import torque_cluster

    reason = torque_cluster.why_torque_cannot_run()
    if reason is not None:
        pytest.skip(f"NO TORQUE TESTS: {reason}")
    cluster = torque_cluster.start()
    try:
        yield cluster
    finally:
        torque_cluster.stop(cluster)


def start(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    cluster = request.getfixturevalue("torque")
    monkeypatch = request.getfixturevalue("monkeypatch")
    environ = {name: cluster.env()[name] for name in ("PATH", "SLURM_CONF")}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    yield Harness("torque", root, environ, backend_options={"dialect": "torque"})


HARNESS = HarnessSpec("torque", start, needs_cluster=True, backend="pbs")
