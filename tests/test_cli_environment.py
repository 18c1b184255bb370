"""The ``corral`` command in the environments a shell can hand it (attack
review): standard streams closed, a reader that went away, a terminal that
cannot encode every name, a current directory that was deleted. In each it
does what it would do elsewhere, or says in one line why it cannot; its exit
status says what the jobs did, never "a job failed" for a stream's trouble.

One run of two completed jobs, made once and left without a daemon: the
commands tried here read its journal.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import CORRAL, Corral, Outcome, assert_one_line_error

#: A name no latin-1 or ascii terminal can write whole.
NAME = "nämé ☃"

#: The exit status of a command whose reader went away, as a shell says it of ``ls | head -1``.
BROKEN_PIPE = 141


@pytest.fixture(scope="module")
def corral(tmp_path_factory) -> Iterator[Corral]:
    home = tmp_path_factory.mktemp("environment")
    corral = Corral(home, home / "run")
    corral.submit("--name", NAME, "--", "echo", "☃")
    corral.submit("true")
    assert corral("wait").status == 0
    corral.stop_daemon()  # (the commands here read the journal; none starts a daemon)
    yield corral
    corral.stop_daemon()


def run_corral(corral: Corral, *args: str, cwd: Path | None = None, preexec=None,
               stdout: int = subprocess.PIPE, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[bytes]:
    """``corral ARGS`` with *preexec* run in the child before it starts (to
    close a stream, or remove its directory), its output kept as bytes."""
    return subprocess.run([CORRAL, *args], cwd=cwd or corral.home,
                          env={**corral.env, **(env or {})}, stdin=subprocess.DEVNULL,
                          stdout=stdout, stderr=subprocess.PIPE, preexec_fn=preexec,
                          timeout=60)


def closing(fd: int):
    return lambda: os.close(fd)


@pytest.mark.parametrize("args", [("status",), ("status", "1"), ("options",), ("backends",)],
                         ids=" ".join)
def test_command_with_stdout_closed_exits_as_with_dev_null(corral: Corral, args) -> None:
    # Was: AttributeError: 'NoneType' object has no attribute 'isatty', exit 1.
    done = run_corral(corral, *args, preexec=closing(1))
    assert done.returncode == 0, done
    assert b"Traceback" not in done.stderr, done.stderr.decode()


def test_wait_with_stderr_closed_exits_0_when_every_job_completed(corral: Corral) -> None:
    # Was: exit 1 with nothing said, so `corral wait 2>&- && deploy` never deployed.
    done = run_corral(corral, "wait", preexec=closing(2))
    assert done.returncode == 0, done


@pytest.mark.parametrize("args", [("status", "--all"), ("logs", "1"), ("backends",)],
                         ids=" ".join)
def test_output_to_a_reader_gone_ends_quietly_not_as_a_failed_job(corral: Corral,
                                                                  args) -> None:
    """``corral status --all | head -1``: the reader leaves; the command stops
    without a word and exits as ``ls`` would, not 1 (a job failed)."""
    reading, writing = os.pipe()
    os.close(reading)  # gone before the command writes a byte
    try:
        done = run_corral(corral, *args, stdout=writing)
    finally:
        os.close(writing)
    assert (done.returncode, done.stderr) == (BROKEN_PIPE, b""), done


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_names_a_terminal_cannot_encode_are_written_escaped(corral: Corral,
                                                            encoding: str) -> None:
    # Was: UnicodeEncodeError in the console's write, a traceback and exit 1.
    env = {"PYTHONIOENCODING": encoding}
    status = run_corral(corral, "status", env=env)
    assert status.returncode == 0, status
    assert b"\\u2603" in status.stdout, status.stdout
    said = "nämé".encode("latin-1") if encoding == "latin-1" else b"n\\xe4m\\xe9"
    assert said in status.stdout, status.stdout


def test_a_run_whose_name_the_c_locale_cannot_say_is_read(tmp_path_factory) -> None:
    """Attack review: under LC_ALL=C (Python's UTF-8 mode off), `corral logs`
    and `report` of a run directory named with an 'é' crashed with a
    UnicodeEncodeError (os.path.samefile of a job directory's recorded path)."""
    home = tmp_path_factory.mktemp("locale")
    made = Corral(home, home / "rün-é")
    made.submit("--", "echo", "hello")
    assert made("wait").status == 0
    made.stop_daemon()
    c_locale = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
                "PYTHONIOENCODING": ""}
    for args in (("logs", "1"), ("report", "-o", os.fspath(home / "report.html"))):
        done = run_corral(made, *args, env=c_locale)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done
    assert run_corral(made, "logs", "1", env=c_locale).stdout == b"hello\n"


def test_commands_on_an_absolute_run_work_from_a_deleted_directory(
        corral: Corral, tmp_path: Path) -> None:
    # Was: "corral: error: No such file or directory" (its own config file was looked for).
    for args, shown in ((("status",), NAME), (("--run", os.fspath(corral.run), "status"), NAME),
                        (("logs", "1"), "☃\n")):
        done = in_deleted_directory(corral, tmp_path, *args)
        assert done.returncode == 0, (args, done)
        assert shown.encode() in done.stdout, done


@pytest.mark.parametrize(("args", "needed_for"), [
    (("--run", "run", "status"), "--run run is relative to it"),
    (("status", "--run", "run"), "--run run is relative to it"),
    (("submit", "--workdir", "here", "true"), "--workdir here is relative to it"),
    (("report",), "-o report.html is written in it"),
], ids=" ".join)
def test_a_relative_path_from_a_deleted_directory_is_one_line_that_says_so(
        corral: Corral, tmp_path: Path, args, needed_for: str) -> None:
    # Was: "corral: error: No such file or directory", exit 3, or -o's "cannot write it".
    done = in_deleted_directory(corral, tmp_path, *args)
    assert_one_line_error(as_outcome(args, done), 2,
                          rf"current directory was deleted \({re.escape(needed_for)}")


def test_submit_from_a_deleted_directory_is_refused_not_a_job_that_fails_later(
        corral: Corral, tmp_path: Path) -> None:
    """A job runs where it is submitted from: from a directory that is gone it
    could only fail as it started; refused, the run gets no job."""
    from corral import Run

    jobs_before = len(Run(corral.run).jobs())
    done = in_deleted_directory(corral, tmp_path, "submit", "--", "true")
    assert_one_line_error(as_outcome(("submit",), done), 2,
                          r"current directory was deleted \(a job runs in the directory it "
                          r"is submitted from; --workdir DIR")
    assert len(Run(corral.run).jobs()) == jobs_before
    assert corral.daemon_pid() is None  # (no daemon was started for it)


def in_deleted_directory(corral: Corral, tmp_path: Path, *args: str,
                         ) -> subprocess.CompletedProcess[bytes]:
    """``corral ARGS`` typed in a directory that was deleted (``mkdir d; cd d;
    rmdir ../d`` in its shell): the child removes its own directory as it starts."""
    gone = Path(tempfile.mkdtemp(dir=tmp_path))
    return run_corral(corral, *args, cwd=gone, preexec=lambda: os.rmdir(gone))


def as_outcome(args: tuple[str, ...], done: subprocess.CompletedProcess[bytes]) -> Outcome:
    return Outcome(args, done.returncode, done.stdout.decode(), done.stderr.decode())
