"""The runtime inside a batch job (corral.runtime.batch), run as a real process
the way a batch script runs it, with a scheduler's variables given through the
table the script exports — no scheduler needed."""

from __future__ import annotations

import json
import os
import re
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from corral.backends.base import Submission
from corral.backends.batch import taskfiles
from corral.runtime import batch
from corral.runtime.batch import BatchOutcome, read_result
from corral.spec import Resources
from support.processes import pids_alive
from support.waiting import wait_until

#: What a PBS-like template would export: names that are no Slurm's.
PBS_LIKE = {"CORRAL_BATCH_JOB_ID_VAR": "PBS_JOBID", "CORRAL_ARRAY_JOB_ID_VAR": "PBS_ARRAY_ID",
            "CORRAL_ARRAY_INDEX_VAR": "PBS_ARRAY_INDEX",
            "CORRAL_RESTART_COUNT_VAR": "PBS_RUN_COUNT", "CORRAL_FAILED_EXIT_STATUS": "100"}


def write_job(run: Path, name: str, argv: list[str], walltime_s: float | None = None) -> Path:
    jobdir = run / name
    taskfiles.write_task(Submission(name, name, jobdir, Resources(walltime_s=walltime_s),
                                    argv=tuple(argv)), batch_log="")
    return jobdir


def run_runtime(run: Path, jobdirs: list[Path], env: dict[str, str],
                time_limit_s: float | None = None, home: str | None = None,
                started_in: Path | None = None) -> subprocess.CompletedProcess:
    """Run the runtime on a bundle of *jobdirs*, as a batch script would
    (started in *started_in*, the driver's directory being *home*)."""
    bundle = run / "0.json"
    bundle.write_text(json.dumps({"jobdirs": [os.fspath(d) for d in jobdirs],
                                  "time_limit_s": time_limit_s, "sys_path": sys.path,
                                  **({} if home is None else {"home": home})}))
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("SLURM_", "CORRAL_"))}
    return subprocess.run([sys.executable, "-c", "from corral.runtime.batch import main; main()",
                           os.fspath(bundle)], env={**clean, **env}, capture_output=True,
                          text=True, timeout=120, cwd=started_in)


def test_jobs_run_where_the_scheduler_started_them_when_the_drivers_directory_is_not_here(
        tmp_path):
    """A node without the driver's file system: said in the batch job's log."""
    jobdir = write_job(tmp_path, "job", ["pwd"])
    done = run_runtime(tmp_path, [jobdir], PBS_LIKE, home="/nonexistent/project",
                       started_in=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (jobdir / "stdout").read_text() == f"{tmp_path}\n"
    assert done.stderr == (f"corral: jobs without a cwd run in {tmp_path}: the driver's "
                           "directory /nonexistent/project cannot be entered here (No such "
                           "file or directory)\n")


def test_a_requeued_batch_job_runs_again_the_job_it_had_claimed_on_any_scheduler(tmp_path):
    # The first run of array task 77[3] claimed the job, then the node died.
    jobdir = write_job(tmp_path, "job", ["sh", "-c", "echo ran again"])
    (jobdir / batch.STARTED_FILE).write_text(json.dumps({"time": 1.0, "batch_job": "77_3"}))
    scheduler = {**PBS_LIKE, "PBS_ARRAY_ID": "77", "PBS_ARRAY_INDEX": "3", "PBS_RUN_COUNT": "1"}
    done = run_runtime(tmp_path, [jobdir], scheduler)
    assert done.returncode == 0, done.stderr
    assert read_result(os.fspath(jobdir)) == BatchOutcome(True, exit_code=0)
    assert (jobdir / "stdout").read_text() == "ran again\n"


def test_a_job_claimed_by_another_batch_job_is_not_run_twice(tmp_path):
    jobdir = write_job(tmp_path, "job", ["sh", "-c", "echo must not run"])
    (jobdir / batch.STARTED_FILE).write_text(json.dumps({"time": 1.0, "batch_job": "76_3"}))
    scheduler = {**PBS_LIKE, "PBS_ARRAY_ID": "77", "PBS_ARRAY_INDEX": "3", "PBS_RUN_COUNT": "1"}
    done = run_runtime(tmp_path, [jobdir], scheduler)
    assert done.returncode == 0, done.stderr
    assert read_result(os.fspath(jobdir)) is None
    assert not (jobdir / "stdout").exists()


def test_a_failed_job_ends_the_batch_job_with_the_schedulers_failure_status(tmp_path):
    jobdirs = [write_job(tmp_path, "fails", ["sh", "-c", "exit 3"]),
               write_job(tmp_path, "works", ["true"])]
    done = run_runtime(tmp_path, jobdirs, PBS_LIKE)
    assert done.returncode == 100, done.stderr  # SGE-like: 100 holds dependents back
    assert read_result(os.fspath(jobdirs[0])) == BatchOutcome(False, exit_code=3,
                                                             reason="exit code 3")
    assert read_result(os.fspath(jobdirs[1])) == BatchOutcome(True, exit_code=0)


def test_without_a_failure_status_from_the_script_a_failed_job_ends_it_with_1(tmp_path):
    done = run_runtime(tmp_path, [write_job(tmp_path, "fails", ["false"])], {})
    assert done.returncode == 1, done.stderr


def test_a_job_past_its_walltime_leaves_a_timed_out_outcome(tmp_path):
    jobdir = write_job(tmp_path, "slow", ["sleep", "60"], walltime_s=0.5)
    done = run_runtime(tmp_path, [jobdir], PBS_LIKE)
    assert done.returncode == 100, done.stderr  # the failure status: dependents held
    outcome = read_result(os.fspath(jobdir))
    assert outcome is not None and outcome.timed_out and not outcome.ok
    assert outcome.reason == ("ran past its walltime of 0.5 s; killed with its child "
                              "processes")


def test_a_command_past_its_walltime_gets_sigterm_and_its_grace(tmp_path):
    """As a cancel or the scheduler's own kill does (review: killed at once, its
    trap never ran); one that ignores SIGTERM is killed after the grace."""
    marker = tmp_path / "trapped"
    trapping = write_job(tmp_path, "trapping", [
        "sh", "-c", f"trap 'echo bye > {marker}; exit 0' TERM; sleep 60 & wait"], walltime_s=0.5)
    done = run_runtime(tmp_path, [trapping], PBS_LIKE)
    assert done.returncode == 100, done.stderr
    assert marker.read_text() == "bye\n"
    outcome = read_result(os.fspath(trapping))
    assert outcome is not None and outcome.timed_out
    stubborn = write_job(tmp_path, "stubborn", [
        "sh", "-c", f"trap '' TERM; echo $$ > {tmp_path}/pid; sleep 60"], walltime_s=0.5)
    assert run_runtime(tmp_path, [stubborn], PBS_LIKE).returncode == 100
    stubborn_pid = int((tmp_path / "pid").read_text())  # (killed: gone once the kernel is done)
    wait_until(lambda: not pids_alive([stubborn_pid]), 10, "the stubborn command to be gone")


def test_a_job_as_long_as_its_batch_jobs_limit_is_ended_by_corral_before_the_scheduler_does(
        tmp_path):
    # The scheduler's clock started before the interpreter did: waiting the whole walltime
    # would let the scheduler kill the job first, leaving no result file and no reason.
    jobdir = write_job(tmp_path, "slow", ["sleep", "60"], walltime_s=30)
    done = run_runtime(tmp_path, [jobdir], PBS_LIKE, time_limit_s=5)
    assert done.returncode == 100, done.stderr  # the failure status: dependents held
    outcome = read_result(os.fspath(jobdir))
    assert outcome is not None and outcome.timed_out, outcome
    # (Review: it said "ran past its walltime of 30 s" after a second of its 30.)
    assert re.fullmatch(r"reached its batch job's time limit, which counts from the batch job's "
                        r"start \(\d+\.\d s before this job's\), less 4 s to record this, "
                        r"before its walltime of 30 s; killed with its child processes",
                        outcome.reason), outcome.reason


def test_a_result_file_is_synced_to_disk_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    # Job directories live on network filesystems: a result renamed into place
    # before its data reached the disk can be read back empty after a crash.
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target) -> None:
        events.append(("rename", os.fspath(source)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "result"
    batch.write_atomically(os.fspath(target), pickle.dumps(BatchOutcome(True)))
    temporary = next(path for kind, path in events if kind == "rename")
    assert events.index(("fsync", temporary)) < events.index(("rename", temporary)), events
    assert ("fsync", os.fspath(tmp_path)) in events, "the directory entry is synced too"
    assert read_result(os.fspath(tmp_path)) == BatchOutcome(True)


@pytest.mark.parametrize("content, message", [
    (b"not a pickle", "its result file cannot be read: "),
    (pickle.dumps((True, None, 0, None)), "its result file holds no outcome corral knows"),
    # A job's pickle naming a module the driver lacks once crashed the driver's loop.
    (pickle.dumps(BatchOutcome(True), protocol=0).replace(b"corral.runtime.batch",
                                                           b"no_such_module_x", 1),
     "its result file cannot be read: ModuleNotFoundError: No module named 'no_such_module_x'"),
], ids=["garbage", "an old tuple", "a module the driver lacks"])
def test_a_result_file_corral_cannot_read_is_a_failure_saying_so(tmp_path, content, message):
    (tmp_path / batch.RESULT_FILE).write_bytes(content)
    outcome = read_result(os.fspath(tmp_path))
    assert outcome is not None and not outcome.ok
    assert outcome.reason.startswith(message), outcome.reason
