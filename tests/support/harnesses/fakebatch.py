"""The fake batch scheduler the tests ship (``tests/support/fakebatch``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fakebatch import scheduler as fakebatch
from support.harnesses import Harness, HarnessSpec


def start(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    from support.fakebatch.cluster import FakeBatch

    cluster = FakeBatch(root / "fakebatch", forget_s=3.0)
    cluster.root.mkdir()
    monkeypatch = request.getfixturevalue("monkeypatch")
    for name, value in cluster.environ().items():
        monkeypatch.setenv(name, value)
    try:
        with fakebatch.registered():
            yield Harness("fakebatch", root, cluster.environ(),
                          status_queries=lambda: len(cluster.calls("qstat")))
    finally:
        cluster.stop()


HARNESS = HarnessSpec("fakebatch", start, test_backend=fakebatch.BACKEND,
                      prepare_driver=fakebatch.register)
