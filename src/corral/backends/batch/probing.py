"""The pieces every scheduler's ``answers`` probe is made of (for ``backend="auto"``
and ``corral backends``): a command on PATH, asked within a time limit, its failure
in its own words. Light on purpose: a scheduler's package ``__init__`` imports it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from corral.backends.base import Probe

__all__ = ["missing", "ask", "failed"]


def missing(*commands: str) -> Probe | None:
    """"X is not on PATH" for the first of *commands* that is not; None when all are."""
    for name in commands:
        if shutil.which(name) is None:
            return Probe(False, f"{name} is not on PATH")
    return None


def ask(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str] | Probe:
    """Run *argv* (no stdin) and return what it did; a Probe saying no when it
    cannot run or does not answer within *timeout* seconds."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Probe(False, f"{' '.join(argv)} did not answer within {timeout:g} s")
    except (OSError, subprocess.SubprocessError) as error:
        return Probe(False, f"{argv[0]} could not run ({error})")


def failed(done: subprocess.CompletedProcess[str], what: str) -> Probe:
    """"WHAT failed: <its last line of stderr>" (or its exit status)."""
    said = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines()
            or [f"exit status {done.returncode}"])[-1]
    return Probe(False, f"{what} failed: {said[:200]}")
