"""The ``corral`` command on a Slurm run whose driver is gone: the jobs live on
in Slurm, so ``status`` shows their Slurm ids and ``cancel``/``pause``/``resume``
act on them there; the script's next run records what happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from support.cli import CORRAL
from support.waiting import wait_until

DRIVER = textwrap.dedent("""
    import json, os, sys, time
    import corral

    def slow(release, value):
        while not os.path.exists(release):
            time.sleep(0.05)
        return value

    def add(a, b):
        return a + b

    run_dir, release, mode = sys.argv[1:4]
    with corral.Scheduler(backend="slurm", journal=run_dir,
                          backend_options={"poll_interval": 0.2}) as scheduler:
        first = scheduler.submit(slow, release, 1)
        second = scheduler.submit(slow, release, 2)
        total = scheduler.submit(add, first, second)
        jobs = [first, second, total]
        if mode == "die":
            while any(job.native_id is None for job in jobs):
                time.sleep(0.02)
            print(json.dumps([job.native_id for job in jobs]), flush=True)
            os.kill(os.getpid(), 9)
        import concurrent.futures
        concurrent.futures.wait(jobs, timeout=120)
        print(json.dumps([[job.status.name, job.reason] for job in jobs]), flush=True)
""")


def corral_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CORRAL, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})


def _driver(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "run"),
                           str(tmp_path / "release"), mode],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)


def _squeue(slurm, native_ids: list[str]) -> dict[str, str]:
    listing = slurm.run("squeue", "--noheader", "--array", "--states=all",
                        "--Format=JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|")
    found = {}
    for line in listing.stdout.splitlines():
        job, array, task, state, reason = (part.strip() for part in line.split("|")[:5])
        native = f"{array}_{task}" if task.isdigit() else job
        if native in native_ids:
            found[native] = f"{state} {reason}"
    return found


def test_without_a_driver_the_command_line_acts_on_the_jobs_in_slurm(slurm, tmp_path):
    died = _driver(tmp_path, "die")
    assert died.returncode == -signal.SIGKILL, died.stderr
    natives = json.loads(died.stdout)
    run = ["--run", str(tmp_path / "run")]

    listing = corral_command(*run, "status")
    assert listing.returncode == 0, listing.stderr
    assert "SLURM ID" in listing.stdout
    for native in natives:
        assert native in listing.stdout

    wait_until(lambda: all(state.startswith("RUNNING")
                           for state in _squeue(slurm, natives[:2]).values()), 30,
               "the parents running in Slurm")
    paused = corral_command(*run, "pause")
    assert paused.returncode == 0, paused.stderr
    assert "no driver runs: pause sent to Slurm" in paused.stderr
    # The two parents run (they wait for the release file); their child pends
    # on them in Slurm (afterok): pause holds what pends, not what runs.
    child = natives[2]
    wait_until(lambda: "JobHeld" in _squeue(slurm, [child]).get(child, ""), 30,
               "the pending child held in Slurm")
    assert all("JobHeld" not in state
               for native, state in _squeue(slurm, natives[:2]).items())
    resumed = corral_command(*run, "resume")
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: "JobHeld" not in _squeue(slurm, [child]).get(child, "JobHeld"), 30,
               "the child released in Slurm")

    cancelled = corral_command(*run, "cancel", "1", "99")
    # (and its child)
    assert cancelled.stdout.split("\n")[:2] == ["cancelled 1 'slow'", "cancelled 3 'add'"]
    assert "no job 99 in this run (neither an id nor a job's name)" in cancelled.stderr
    assert cancelled.returncode == 2

    (tmp_path / "release").touch()
    again = _driver(tmp_path, "finish")
    assert again.returncode == 0, again.stderr
    (first, second, total) = json.loads(again.stdout)
    assert first[0] == "CANCELLED" and first[1].startswith("cancelled in Slurm (Slurm job ")
    assert second == ["COMPLETED", None]
    assert total[0] == "CANCELLED" and "upstream job 1" in total[1]


def test_a_script_run_with_nothing_in_slurm_still_says_run_the_script_again(tmp_path):
    script = tmp_path / "local.py"
    script.write_text(textwrap.dedent(f"""
        import corral
        with corral.Scheduler(journal={str(tmp_path / 'run')!r}) as scheduler:
            scheduler.submit(print, "done").result()
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=60,
                   env={**os.environ})
    refused = corral_command("--run", str(tmp_path / "run"), "pause")
    assert refused.returncode == 3
    assert "run the script again" in refused.stderr
