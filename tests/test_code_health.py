"""The code stays clean by its own linters: ruff and mypy, configured in pyproject.toml.

They run here, inside the test suite, so that the README's one test command is also the
lint gate: a change cannot land with a finding just because nobody ran the tools. The
tools are in the ``test`` extra; a missing one fails (with what to install) instead of
skipping, since a skipped check would read as a clean one.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Below pytest-timeout's 180 s, so a stuck tool is killed by us, not left behind.
TOOL_TIMEOUT_S = 150
#: One finding a line, and no cache written into the source tree.
RUFF_OPTIONS = ("--no-cache", "--output-format", "concise")


def run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> <args>`` from the repository root.

    Fails the test, saying how to install it, when the tool is missing: the tools
    are test dependencies, so their absence is a broken setup, not a reason to skip.
    """
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed; it is a test dependency: "
                    f"pip install -e '.[test]'", pytrace=False)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=TOOL_TIMEOUT_S)


def assert_clean(done: subprocess.CompletedProcess[str]) -> None:
    """Pass when the tool exited 0; otherwise fail with everything it printed (and
    nothing else: the findings are the message)."""
    if done.returncode != 0:
        pytest.fail(f"python {' '.join(done.args[1:])} exited {done.returncode}:\n"
                    f"{done.stdout}{done.stderr}", pytrace=False)


def test_ruff_is_clean():
    assert_clean(run_tool("ruff", "check", *RUFF_OPTIONS, "src", "tests", "benchmarks"))


def test_mypy_is_clean():
    # mypy's own cache (.mypy_cache, which keeps itself out of git), as `python -m mypy`
    # by hand uses: a check of a checked tree takes 0.3 s instead of 15 s of CPU, a
    # fifteenth of the fast lane's two cores' budget. mypy checks each module's hash.
    assert_clean(run_tool("mypy"))


def test_a_missing_tool_fails_the_test_and_says_to_install_the_test_extra():
    with pytest.raises(pytest.fail.Exception,
                       match=r"^no_such_linter is not installed; it is a test dependency: "
                             r"pip install -e '\.\[test\]'$"):
        run_tool("no_such_linter", "check")


def test_a_finding_fails_the_check_and_shows_the_tools_output(tmp_path):
    """The health checks are only worth something if a finding fails them, with the
    place and the rule in the message. ruff run on a file with a too-long line and
    an unused import, under the project's configuration, must say so."""
    offender = tmp_path / "offender.py"
    offender.write_text("import os\n" f"WIDE = {'1' * 100}\n")
    done = run_tool("ruff", "check", *RUFF_OPTIONS, "--config", str(ROOT / "pyproject.toml"),
                    str(offender))
    with pytest.raises(pytest.fail.Exception) as failed:
        assert_clean(done)
    lines = str(failed.value).splitlines()
    assert lines[0].endswith(f"{offender} exited 1:")
    assert f"{offender}:1:8: F401 [*] `os` imported but unused" in lines
    assert f"{offender}:2:101: E501 Line too long (107 > 100)" in lines


def test_a_type_error_fails_the_mypy_check_with_its_place(tmp_path):
    """mypy under the project's settings reports a wrong type with its file, line and code."""
    offender = tmp_path / "offender.py"
    offender.write_text("def double(value: int) -> int:\n    return value * 2\n\n\n"
                        "double('two')\n")
    done = run_tool("mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir",
                    str(tmp_path / "mypy-cache"), str(offender))
    with pytest.raises(pytest.fail.Exception) as failed:
        assert_clean(done)
    assert (f'{offender}:5: error: Argument 1 to "double" has incompatible type "str"; '
            f'expected "int"  [arg-type]') in str(failed.value).splitlines()
