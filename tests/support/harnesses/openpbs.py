"""A real one-node OpenPBS built from the bundled source (``scripts/openpbs``), in
PBS Pro's dialect (``backend="pbs"``, ``dialect="pro"``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.harnesses import Harness, HarnessSpec


@pytest.fixture(scope="session")
def openpbs() -> Iterator[Any]:
    """The session's OpenPBS server, started once and stopped (purged) at the end."""
    import openpbs_cluster

    reason = openpbs_cluster.why_openpbs_cannot_run()
    if reason is not None:
        pytest.skip(f"NO OPENPBS TESTS: {reason}")
    cluster = openpbs_cluster.start()
    try:
        yield cluster
    finally:
        openpbs_cluster.stop(cluster)


def start(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    cluster = request.getfixturevalue("openpbs")
    path = cluster.env()["PATH"]
    request.getfixturevalue("monkeypatch").setenv("PATH", path)
    yield Harness("openpbs", root, {"PATH": path}, backend_options={"dialect": "pro"})


HARNESS = HarnessSpec("openpbs", start, needs_cluster=True, backend="pbs")
