"""corral's real ``backend="lsf"`` over the fake LSF the tests ship
(``tests/support/fakelsf``): LSF's commands and output, jobs as real processes.
Nothing of LSF itself runs here (it is closed source)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.harnesses import Harness, HarnessSpec


def start(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    from support.fakelsf.cluster import FakeLsf

    # A CLEAN_PERIOD of 3 s: the stories also see jobs LSF forgot.
    cluster = FakeLsf(root / "fakelsf", forget_s=3.0)
    cluster.root.mkdir()
    monkeypatch = request.getfixturevalue("monkeypatch")
    for name, value in cluster.environ().items():
        monkeypatch.setenv(name, value)
    try:
        yield Harness("lsf", root, cluster.environ(),
                      status_queries=lambda: len(cluster.calls("bjobs")))
    finally:
        cluster.stop()


HARNESS = HarnessSpec("lsf", start)
