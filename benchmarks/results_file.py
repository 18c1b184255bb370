"""benchmarks/RESULTS.md is made of sections, one per benchmark script, each
between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``: a script rewrites
its own section and leaves the others (and the prose around them) alone."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

__all__ = ["write_section", "machine_line"]

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine_line(command: str) -> str:
    """"Made by `command` on DATE, PYTHON, N CPUs, ARCH." for a section's header."""
    return (f"Made by `{command}` on {time.strftime('%Y-%m-%d')}, "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, {platform.machine()}.")


def write_section(name: str, body: str) -> None:
    """Put *body* in section *name* of RESULTS.md (appended if it is not there yet)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body}\n{end}"
    if start in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)
