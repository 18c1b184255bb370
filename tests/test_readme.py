"""The README's promises: its set-up commands exist as documented, and its code runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_opens_with_the_two_set_up_commands():
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert README.startswith("# corral\n\n```sh\n")
    assert len(first_block) == 2
    assert first_block[0].endswith("-m corral.demo")
    assert first_block[1].endswith("-m pytest -q")


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert "sed -n 2p" in script and "README.md" in script


def test_the_python_examples_in_the_readme_run(tmp_path):
    for block in re.findall(r"```python\n(.*?)```", README, re.S):
        example = tmp_path / "example.py"
        example.write_text(block)
        done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "22.5" in done.stdout


def test_the_demo_runs_and_shows_what_went_right_and_wrong(tmp_path):
    done = subprocess.run([sys.executable, "-m", "corral.demo"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "total words: 10000" in done.stdout
    assert "after 2 attempts" in done.stdout
    assert "TIMED_OUT" in done.stdout and "upstream job 13 'calibrate' failed" in done.stdout
