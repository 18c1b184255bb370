"""The pieces every scheduler's ``answers`` probe is made of (for ``backend="auto"``
and ``corral backends``): a command on PATH, asked within a time limit, its failure
in its own words. Light on purpose: a scheduler's package ``__init__`` imports it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from corral.backends.batch.invoke import CommandTimedOut, collect_output, start_command
from corral.backends.info import Probe
from corral.errors import BackendError

__all__ = ["missing", "ask", "failed", "answered"]


def missing(*commands: str) -> Probe | None:
    """"X is not on PATH" for the first of *commands* that is not (for a path:
    that it is no program there); None when all are."""
    for name in commands:
        if shutil.which(name) is None:
            return Probe(False, f"{name} is not a program one may run" if "/" in name
                         else f"{name} is not on PATH")
    return None


def ask(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str] | Probe:
    """Run *argv* (no stdin, in a session of its own) and return what it did; a
    Probe saying no when it cannot run or does not answer within *timeout* seconds,
    after killing it and whatever it started (a hung wrapper's children too)."""
    try:
        process = start_command(argv)
    except (OSError, subprocess.SubprocessError) as error:
        return Probe(False, f"{argv[0]} could not run ({error})")
    try:
        out, err = collect_output(process, argv, timeout)
    except CommandTimedOut:
        return Probe(False, f"{' '.join(argv)} did not answer within {timeout:g} s")
    except BackendError as error:  # (it printed without end: attack review)
        return Probe(False, str(error))
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def failed(done: subprocess.CompletedProcess[str], what: str) -> Probe:
    """"WHAT failed: <its last line of stderr>" (or its exit status)."""
    said = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines()
            or [f"exit status {done.returncode}"])[-1]
    return Probe(False, f"{what} failed: {said[:200]}")


def answered(argv: Sequence[str], timeout: float,
             what: str | None = None) -> subprocess.CompletedProcess[str] | Probe:
    """What *argv* printed when it ran and succeeded within *timeout* seconds; else a
    Probe saying no, and why (*what* names the command in it: default, its argv)."""
    done = ask(argv, timeout)
    if isinstance(done, Probe):
        return done
    if done.returncode != 0:
        return failed(done, what or " ".join(argv))
    return done
