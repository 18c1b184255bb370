"""Counting a scheduler's commands as a user could: wrappers first on PATH that log
each call of the real command (its name and time) before running it. Used by the
tests that count status queries and submissions, and by benchmarks/bench_batch.py."""

from __future__ import annotations

import itertools
import os
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

__all__ = ["wrap_commands", "logged_calls", "counts_of", "gaps_between"]


def wrap_commands(directory: Path, names: Iterable[str], path: str) -> tuple[Path, str]:
    """Put a logging wrapper of each of *names* found on *path* into *directory*;
    return the log file they append to and the PATH that puts them first."""
    log = directory / "commands.log"
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        real = shutil.which(name, path=path)
        if real is None:
            continue  # a command this scheduler does not have here: nothing to count
        wrapper = directory / name
        wrapper.write_text(f"#!/bin/sh\necho \"{name} $(date +%s.%N)\" >> '{log}'\n"
                           f"exec '{real}' \"$@\"\n")
        wrapper.chmod(0o755)
    return log, f"{directory}{os.pathsep}{path}"


def logged_calls(log: Path, take: bool = False) -> list[tuple[str, float]]:
    """``(command, time)`` of every call logged so far; with *take*, the log starts
    again empty."""
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    if take:
        log.unlink()
    return [(line.split()[0], float(line.split()[1])) for line in lines if line.strip()]


def counts_of(log: Path) -> Counter[str]:
    """How many times each command ran, by the wrappers' log."""
    return Counter(name for name, _ in logged_calls(log))


def gaps_between(log: Path, name: str) -> list[float]:
    """The seconds between one call of the command *name* and the next."""
    times = sorted(stamp for called, stamp in logged_calls(log) if called == name)
    return [later - earlier for earlier, later in itertools.pairwise(times)]
