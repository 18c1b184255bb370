"""A driver started in a hostile environment: its stdout or stderr closed, its
directory deleted, PYTHONINSPECT set, no room for threads, a job's output
file unreadable. Its jobs run, or fail saying why (attack review)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import corral

import jobs


#: A driver that runs ``square`` over ``range(30)`` with the cores, journal and
#: cwd-ful extra jobs it is told, and writes what each job gave (its value,
#: or its error) as JSON to the file named first: its stdout may be closed.
DRIVER = """
import json, os, sys
import corral
sys.path.insert(0, {tests!r})
import jobs

out, cores, journal, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, sys.argv[4]
if mode == "delete-cwd":
    os.rmdir(os.getcwd())  # as `cd gone; python driver.py & rm -rf gone` does
results = []
with corral.Scheduler(cores=cores, journal=journal) as sched:
    if mode == "talk":  # what each job wrote, too
        submitted = [sched.submit(jobs.talk, str(i)) for i in range(30)]
    else:
        submitted = [sched.submit(jobs.square, i) for i in range(30)]
    if mode == "delete-cwd":
        submitted.append(sched.options(cwd=os.path.dirname(out)).submit(os.getcwd))
        submitted.append(sched.shell("echo from a shell"))
    for job in submitted:
        try:
            value = job.result(timeout=60)
            results.append([value, job.stdout, job.stderr] if mode == "talk" else value)
        except Exception as error:
            results.append(f"{{type(error).__name__}}: {{error}}")
with open(out, "w") as file:
    json.dump(results, file)
"""


def _run_driver(tmp_path: Path, *, redirect: str = "", cores: int = 4, journal: bool = False,
                mode: str = "", cwd: Path | None = None,
                env: dict[str, str] | None = None) -> tuple[list, subprocess.CompletedProcess]:
    """Run :data:`DRIVER` in a process of its own, with *redirect* applied to
    its standard descriptors by a shell (``>&-`` closes its stdout); return
    what its jobs gave and the finished process."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(Path(__file__).parent)))
    out = tmp_path / "results.json"
    argv = [sys.executable, str(script), str(out), str(cores),
            str(tmp_path / "run") if journal else "", mode]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    done = subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", *argv], cwd=cwd,
                          capture_output=not redirect, text=True, timeout=120, env=environment)
    assert out.exists(), done.stderr
    return json.loads(out.read_text()), done


def test_pythoninspect_does_not_fail_a_journaled_run(tmp_path):
    results, done = _run_driver(tmp_path, cores=2, journal=True, env={"PYTHONINSPECT": "1"})
    assert results == [i * i for i in range(30)], done.stderr
    assert "JournalError" not in done.stderr and "SystemExit" not in done.stderr
    assert "Traceback" not in done.stderr
    assert done.returncode == 0


def test_a_failed_jobs_unreadable_stderr_is_named_and_the_run_goes_on(scheduler):
    probe = scheduler.submit(jobs.noop)
    probe.result(timeout=30)
    run_dir = probe.jobdir.parent
    # The job puts a directory where its stderr file goes, then fails: its
    # error's last lines of stderr cannot be read.
    failing = scheduler.shell(f'mkdir -p "{run_dir}/$CORRAL_JOB_ID/stderr"; exit 3')
    with pytest.raises(corral.JobFailed) as raised:
        failing.result(timeout=30)
    message = str(raised.value)
    assert "exit code 3" in message
    assert f"(its stderr, {failing.jobdir}/stderr, cannot be read: Is a directory)" in message
    assert [scheduler.submit(jobs.square, i).result(timeout=30) for i in range(3)] == [0, 1, 4]

