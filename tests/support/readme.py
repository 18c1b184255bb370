"""The README's Python examples, run as a reader would run them: each block saved
as a script and run in a directory of its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

__all__ = ["README", "example_blocks", "run_example"]

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def example_blocks() -> list[str]:
    """Every ```python block of the README, in order."""
    return re.findall(r"```python\n(.*?)```", README, re.S)


def run_example(block: str, directory: Path, name: str,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run *block* as ``directory/name.py`` from *directory*; fail the test if it fails."""
    example = directory / f"{name}.py"
    example.write_text(block)
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                          timeout=timeout, cwd=directory)
    assert done.returncode == 0, done.stderr
    return done
