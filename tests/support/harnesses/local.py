"""The local backend: worker processes on this machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.harnesses import Harness, HarnessSpec


def start(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    yield Harness("local", root)


HARNESS = HarnessSpec("local", start)
