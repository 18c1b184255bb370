"""corral on a real Slurm cluster: what a user sees when jobs run through
sbatch/squeue/scancel.

Every test that takes the ``slurm`` fixture runs twice, once on a cluster
without accounting (the backend decides from squeue and its result files) and
once with slurmdbd (sacct). The cluster is one node of 16 CPU slots, without
``kill_invalid_depend`` or ``EnforcePartLimits``: a child of a failed job and
an impossible request pend forever unless corral acts.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import slurm_cluster
from support.cluster_jobs import (spaced_like_polls, submit_together, two_hundred_calls,
                                  wait_for_status)
from support.commandlog import counts_of, wrap_commands
from support.waiting import wait_until
from slurm_drivers import (add, fail_first_time, logged, maybe_fail, raise_lookup, read_env,
                           say_then_wait, sleep_for, square, stop_when_asked, talk, wait_for,
                           wait_and_log, wait_then_fail, wait_then_return, where_and_env)

import corral
from corral import JobStatus

DRIVER = Path(__file__).with_name("slurm_drivers.py")
NATIVE_ID = re.compile(r"\d+(_\d+)?")


# -- helpers ---------------------------------------------------------------------------------


def scontrol_job(cluster, native_id: str) -> str:
    """``scontrol show job`` for one job or array task, as text."""
    done = cluster.run("scontrol", "show", "job", native_id)
    assert done.returncode == 0, f"scontrol does not know job {native_id}: {done.stderr}"
    return done.stdout


def fields(text: str) -> dict[str, str]:
    """``Key=Value`` pairs of scontrol's output (values without spaces)."""
    return dict(re.findall(r"(\w+)=(\S*)", text))


def squeue(cluster, *native_ids: str) -> dict[str, tuple[str, str]]:
    """State and pending reason of each job, finished ones included."""
    done = cluster.run("squeue", "--noheader", "--array", "--states=all",
                       f"--jobs={','.join(native_ids)}", "--format=%i|%T|%r")
    assert done.returncode == 0, done.stderr
    rows = {}
    for line in done.stdout.splitlines():
        job_id, state, reason = line.strip().split("|", 2)
        rows[job_id] = (state, reason)
    return rows


def slurm_state(cluster, native_id: str) -> tuple[str, str]:
    return squeue(cluster, native_id).get(native_id, ("", ""))


def assert_held_back_by(cluster, native_id: str, parent: str) -> None:
    """The job waits in Slurm for its parent: pending, with an unfulfilled ``afterok``
    on it. Slurm's reason column is not asked for: it is refreshed by scheduling
    passes, and reads ``Resources`` for a moment on a busy controller."""
    state = slurm_state(cluster, native_id)[0]
    depends = fields(scontrol_job(cluster, native_id))["Dependency"]
    assert state == "PENDING" and depends.startswith(f"afterok:{parent}") \
        and "(unfulfilled)" in depends, (native_id, state, depends)


def wait_for_slurm_state(cluster, native_id: str, state: str, reason: str | None = None,
                         timeout: float = 30) -> None:
    def reached() -> bool:
        now = slurm_state(cluster, native_id)
        return now[0] == state and (reason is None or now[1] == reason)
    try:
        wait_until(reached, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"Slurm job {native_id} is {slurm_state(cluster, native_id)}, "
                             f"not {(state, reason)}") from None




def slurm_base(native_id: str) -> str:
    return native_id.split("_")[0]


@pytest.fixture
def make(slurm, tmp_path: Path, release: Path) -> Iterator[Callable[..., corral.Scheduler]]:
    """Schedulers on the Slurm backend. At the end of the test blocked jobs are
    released, everything is shut down, and no job the test submitted is left
    pending or running in Slurm."""
    made: list[corral.Scheduler] = []

    def build(*, abort_grace: float = 5.0, **options) -> corral.Scheduler:
        sched = corral.Scheduler(backend="slurm", workdir=tmp_path / f"run{len(made)}",
                                 abort_grace=abort_grace,
                                 backend_options={"poll_interval": 0.2, **options})
        made.append(sched)
        return sched

    yield build
    release.touch()
    natives = set()
    for sched in made:
        if not sched.wait(timeout=30):
            sched.interrupt()
        natives |= {job.native_id for job in sched.jobs() if job.native_id}
        sched.shutdown()
    if natives:
        def settled() -> bool:
            rows = squeue(slurm, *sorted(natives))
            return not [n for n, (state, _) in rows.items()
                        if state in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")]
        wait_until(settled, timeout=30, message=f"the test's Slurm jobs {sorted(natives)} to end")


# -- 1. what runs, and where its output goes ---------------------------------------------------


def test_calls_commands_scripts_and_module_functions_run_as_slurm_jobs(slurm, make, tmp_path):
    sched = make()
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint('script got', sys.argv[1:])\n"
                      "print('script complains', file=sys.stderr)\n")
    call = sched.submit(talk, "hello")
    command = sched.shell("echo shell says $((6 * 7)); echo shell complains >&2")
    scripted = sched.script(script, "a b", "c")
    by_name = sched.call("slurm_drivers:square", 12)

    assert call.result(timeout=60) == "hello"
    assert by_name.result(timeout=60) == 144
    command.result(timeout=60)
    scripted.result(timeout=60)
    jobs = [call, command, scripted, by_name]
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 4
    assert (command.exit_code, scripted.exit_code) == (0, 0)
    assert (call.stdout, call.stderr) == ("out hello\n", "err hello\n")
    assert (command.stdout, command.stderr) == ("shell says 42\n", "shell complains\n")
    assert (scripted.stdout, scripted.stderr) == ("script got ['a b', 'c']\n",
                                                  "script complains\n")
    for job in jobs:
        assert NATIVE_ID.fullmatch(job.native_id or ""), job.native_id
        # (corral reads a job's end from its result file, which the batch script
        # writes a moment before it exits: Slurm may still say RUNNING then)
        wait_until(lambda native=job.native_id: fields(scontrol_job(slurm, native))[
            "JobState"] != "RUNNING", timeout=60, message=f"Slurm sees job {job.native_id} end")
        shown = fields(scontrol_job(slurm, job.native_id))
        base, _, task = job.native_id.partition("_")
        if task:
            assert (shown["ArrayJobId"], shown["ArrayTaskId"]) == (base, task)
        else:
            assert shown["JobId"] == base
        assert shown["JobState"] == "COMPLETED"
        assert slurm_state(slurm, job.native_id)[0] == "COMPLETED"


def test_output_of_a_running_slurm_job_can_be_read_while_it_runs(slurm, make, release):
    sched = make()
    job = sched.submit(say_then_wait, "halfway", str(release))
    wait_until(lambda: job.stdout == "halfway\n", timeout=60, message="the job's first line")
    wait_for_status(job, JobStatus.RUNNING)
    assert job.stderr == "halfway on stderr\n"
    release.touch()
    assert job.result(timeout=60) == "halfway"
    assert job.stdout == "halfway\n"


# -- 2. job options reach Slurm ---------------------------------------------------------------


def test_resources_partition_and_extra_flags_reach_sbatch(slurm, make, release):
    sched = make()
    job = sched.options(cores=3, memory="300M", walltime="90s", partition="debug",
                        name="flagged", extra_flags=["--comment=hello"]).submit(
        wait_for, str(release), "done")
    wait_for_status(job, JobStatus.RUNNING)
    shown = fields(scontrol_job(slurm, job.native_id))
    assert shown["NumCPUs"] == "3"
    assert shown["MinMemoryNode"] == "300M"
    assert shown["TimeLimit"] == "00:02:00"  # 90 s, rounded up to whole minutes
    assert shown["Partition"] == "debug"
    assert shown["Comment"] == "hello"
    assert "flagged" in shown["JobName"]
    release.touch()
    assert job.result(timeout=60) == "done"


def test_extra_flags_as_one_string_are_split_like_a_shell(slurm, make, release):
    sched = make()
    job = sched.options(extra_flags="--comment='two words' --nice=5").submit(
        wait_for, str(release), 1)
    wait_for_status(job, JobStatus.RUNNING)
    text = scontrol_job(slurm, job.native_id)
    assert "Comment=two words" in text
    assert fields(text)["Nice"] == "5"
    release.touch()
    assert job.result(timeout=60) == 1


def test_setup_lines_run_in_the_batch_script_before_the_job(slurm, make):
    sched = make()
    one = sched.options(setup="export FROM_SETUP=yes").submit(read_env, "FROM_SETUP")
    two = sched.options(setup=["export A=1", "export B=${A}2"]).shell('echo "$A$B"')
    none = sched.submit(read_env, "FROM_SETUP")
    assert one.result(timeout=60) == {"FROM_SETUP": "yes"}
    two.result(timeout=60)
    assert two.stdout == "112\n"
    assert none.result(timeout=60) == {"FROM_SETUP": None}  # setup is per job, not global


def test_cwd_and_env_options_apply_in_the_slurm_job(slurm, make, tmp_path, monkeypatch):
    where = tmp_path / "elsewhere"
    where.mkdir()
    monkeypatch.setenv("CORRAL_TEST_INHERITED", "from the driver")
    sched = make()
    job = sched.options(cwd=where, env={"ADDED": "yes", "CORRAL_TEST_INHERITED": None}).submit(
        where_and_env, "ADDED", "CORRAL_TEST_INHERITED")
    plain = sched.submit(where_and_env, "ADDED", "CORRAL_TEST_INHERITED")
    assert job.result(timeout=60) == {"cwd": str(where), "ADDED": "yes",
                                      "CORRAL_TEST_INHERITED": None}
    assert plain.result(timeout=60) == {"cwd": os.getcwd(), "ADDED": None,
                                        "CORRAL_TEST_INHERITED": "from the driver"}


def test_a_gpu_request_the_cluster_cannot_parse_fails_with_sbatchs_message(slurm, make):
    sched = make()
    job = sched.options(gpus=1).submit(square, 2)
    with pytest.raises(corral.JobFailed):
        job.result(timeout=60)
    assert job.status is JobStatus.FAILED
    assert "sbatch refused it" in job.reason
    assert "gres" in job.reason.lower() or "generic resource" in job.reason.lower(), job.reason
    assert sched.submit(square, 3).result(timeout=60) == 9  # the scheduler goes on


# -- 3. no shell injection --------------------------------------------------------------------


def test_hostile_names_env_values_paths_and_flags_are_passed_verbatim(slurm, tmp_path, release):
    marker = tmp_path / "pwned"
    touch = f"touch {marker}"
    hostile_env = f"$({touch}) `{touch}` ; {touch}; '\"\\ $HOME"
    workdir = Path(f"{tmp_path}/a dir with \"quotes\" 'and' $({touch}) `{touch}`")
    workdir.mkdir(parents=True)
    names = [f'x"; {touch}; echo "', f"$({touch})", "first line\nsecond line", f"`{touch}`"]
    sched = corral.Scheduler(backend="slurm", workdir=workdir,
                             backend_options={"poll_interval": 0.2})
    try:
        # (different core counts: each goes out as a Slurm job of its own, under its own name)
        named = [sched.options(name=name, cores=i + 2).submit(square, i)
                 for i, name in enumerate(names)]
        env_call = sched.options(env={"HOSTILE": hostile_env}).submit(read_env, "HOSTILE")
        env_command = sched.options(env={"HOSTILE": hostile_env}).shell(
            ["python3", "-c", "import os, sys; sys.stdout.write(os.environ['HOSTILE'])"])
        comment = f"a;{touch};$({touch})"
        flagged = sched.options(extra_flags=[f"--comment={comment}"]).submit(
            wait_for, str(release), "flagged")
        bad_partition = sched.options(partition=f"debug;{touch}").submit(square, 1)

        assert [job.result(timeout=60) for job in named] == [0, 1, 4, 9]
        assert env_call.result(timeout=60) == {"HOSTILE": hostile_env}
        env_command.result(timeout=60)
        assert env_command.stdout == hostile_env
        wait_for_status(flagged, JobStatus.RUNNING)
        assert f"Comment={comment}" in scontrol_job(slurm, flagged.native_id)
        release.touch()
        assert flagged.result(timeout=60) == "flagged"
        with pytest.raises(corral.JobFailed):
            bad_partition.result(timeout=60)
        assert "sbatch refused it" in bad_partition.reason

        shown = slurm.run("squeue", "--noheader", "--states=all", "--format=%j",
                          f"--jobs={','.join(job.native_id for job in named)}").stdout
        assert shown.splitlines() == [names[0], names[1], "first line?second line", names[3]]
        assert all(job.stdout == "" for job in named)
        assert (workdir / str(named[0].id) / "result").exists()  # the job files went there
    finally:
        release.touch()
        sched.shutdown()
    assert not marker.exists(), "a value was run as shell code"


# -- 4. arrays --------------------------------------------------------------------------------




def test_equal_jobs_dispatched_together_go_out_as_one_array(slurm, make, counted_commands):
    sched = make()
    jobs = submit_together(sched, 5)
    assert [job.result(timeout=60) for job in jobs] == [0, 1, 4, 9, 16]
    assert commands_run(counted_commands, "sbatch") == 1
    base = slurm_base(jobs[0].native_id)
    assert [job.native_id for job in jobs] == [f"{base}_{i}" for i in range(5)]
    wait_until(lambda: set(squeue(slurm, base)) == {job.native_id for job in jobs}
               and {state for state, _ in squeue(slurm, base).values()} == {"COMPLETED"},
               timeout=30, message="five COMPLETED tasks of one array in squeue")


def test_arrays_are_split_below_max_array_size(slurm, make, counted_commands):
    sched = make(max_array_size=2)
    jobs = submit_together(sched, 5)
    assert [job.result(timeout=60) for job in jobs] == [0, 1, 4, 9, 16]
    assert commands_run(counted_commands, "sbatch") == 3
    bases = [slurm_base(job.native_id) for job in jobs]
    assert len(set(bases)) == 3
    assert [job.native_id for job in jobs] == [  # the last chunk, of one, is no array
        f"{bases[0]}_0", f"{bases[0]}_1", f"{bases[2]}_0", f"{bases[2]}_1", bases[4]]


def test_array_throttle_limits_how_many_tasks_run_at_once(slurm, make, release, counted_commands):
    sched = make(array_throttle=2)
    jobs = submit_together(sched, 4, wait_then_return, str(release))
    wait_until(lambda: sum(job.status is JobStatus.RUNNING for job in jobs) == 2, timeout=30)
    base = slurm_base(jobs[0].native_id)
    assert "ArrayTaskThrottle=2" in scontrol_job(slurm, base)

    def two_run_two_wait_for_the_throttle() -> bool:
        return sorted(squeue(slurm, base).values()) == [
            ("PENDING", "JobArrayTaskLimit")] * 2 + [("RUNNING", "None")] * 2
    wait_until(two_run_two_wait_for_the_throttle, timeout=30,
               message=f"two running tasks, two held back by the throttle (squeue: "
                       f"{squeue(slurm, base)})")
    assert sum(job.status is JobStatus.SUBMITTED for job in jobs) == 2
    release.touch()
    assert [job.result(timeout=60) for job in jobs] == [0, 1, 2, 3]
    assert commands_run(counted_commands, "sbatch") == 1


# -- 5. dependencies handed to Slurm ---------------------------------------------------------


def test_a_chain_goes_to_slurm_with_afterok_while_its_head_runs(slurm, make, release,
                                                                 counted_commands):
    sched = make()
    head = sched.submit(wait_for, str(release), 5)
    middle = sched.submit(add, head, 1)
    tail = sched.submit(add, middle, 1)
    wait_until(lambda: all(job.native_id for job in (head, middle, tail)), timeout=30,
               message="every job of the chain to be in Slurm")
    assert head.status in (JobStatus.SUBMITTED, JobStatus.RUNNING)
    assert (middle.status, tail.status) == (JobStatus.SUBMITTED, JobStatus.SUBMITTED)
    assert_held_back_by(slurm, middle.native_id, head.native_id)
    assert_held_back_by(slurm, tail.native_id, middle.native_id)

    release.touch()
    assert tail.result(timeout=90) == 7
    assert (head.result(), middle.result()) == (5, 6)
    assert commands_run(counted_commands, "sbatch") == 3


def test_a_child_of_a_failed_parent_is_cancelled_and_not_left_pending(slurm, make, release):
    sched = make()
    parent = sched.submit(wait_then_fail, str(release))
    child = sched.submit(add, parent, 1)
    wait_until(lambda: child.native_id, timeout=30, message="the child in Slurm")
    assert slurm_state(slurm, child.native_id)[0] == "PENDING"
    release.touch()
    with pytest.raises(ValueError, match="the parent fails on purpose"):
        parent.result(timeout=60)
    with pytest.raises(corral.CancelledError):
        child.result(timeout=60)
    assert child.status is JobStatus.CANCELLED
    assert str(parent.id) in child.reason and "wait_then_fail" in child.reason, child.reason
    wait_for_slurm_state(slurm, child.native_id, "CANCELLED")


def test_cancelling_a_parent_cancels_its_chained_child_in_slurm(slurm, make, release):
    sched = make()
    parent = sched.submit(wait_for, str(release), 1)
    child = sched.submit(add, parent, 1)
    wait_until(lambda: child.native_id, timeout=30, message="the child in Slurm")
    wait_for_status(parent, JobStatus.RUNNING)
    assert parent.cancel() is True
    with pytest.raises(corral.CancelledError):
        child.result(timeout=30)
    assert str(parent.id) in child.reason, child.reason
    for job in (parent, child):
        wait_for_slurm_state(slurm, job.native_id, "CANCELLED")


# -- 6. how jobs end --------------------------------------------------------------------------


def test_a_failing_command_reports_its_exit_code_slurm_id_and_stderr(slurm, make):
    sched = make()
    job = sched.shell("echo first words >&2; echo last words >&2; exit 3")
    with pytest.raises(corral.JobFailed) as raised:
        job.result(timeout=60)
    assert job.status is JobStatus.FAILED
    assert job.exit_code == 3
    assert job.reason == f"exit code 3 (Slurm job {job.native_id})"
    # Its stderr's last lines once, as the local backend's error has them (cold reviews:
    # twice, once in the reason, which the local backend's reason does not carry).
    assert str(raised.value).count("last words") == 1, str(raised.value)


def test_a_python_exception_comes_back_as_itself(slurm, make):
    sched = make()
    job = sched.submit(raise_lookup, "no such thing")
    with pytest.raises(LookupError, match="no such thing"):
        job.result(timeout=60)
    assert job.status is JobStatus.FAILED
    assert isinstance(job.exception(), LookupError)


def test_a_job_past_a_walltime_of_seconds_is_timed_out_to_the_second(slurm, make):
    sched = make()
    job = sched.options(walltime="2s").submit(sleep_for, 60)
    with pytest.raises(corral.JobTimedOut):
        job.result(timeout=40)  # not Slurm's whole minute
    assert job.status is JobStatus.TIMED_OUT
    assert "ran past its walltime of 2 s" in job.reason and job.native_id in job.reason, \
        job.reason
    assert fields(scontrol_job(slurm, job.native_id))["TimeLimit"] == "00:01:00"


@pytest.mark.timeout(300)
def test_a_job_past_its_walltime_is_timed_out_by_the_runtime_or_else_by_slurm(slurm, make):
    sched = make()
    # Slurm's --time=1 (minutes) leaves 10 s beyond the walltime: the runtime's watchdog
    # ends the job first, and says why (with walltime="1m" the two raced: CI saw Slurm win).
    job = sched.options(walltime="50s").submit(sleep_for, 300)
    # The batch script itself outlives --time=1 (a setup line that hangs): Slurm's TIMEOUT.
    stuck = sched.options(walltime="1m", setup="sleep 300").submit(square, 2)
    with pytest.raises(corral.JobTimedOut):
        job.result(timeout=200)
    assert job.status is JobStatus.TIMED_OUT
    assert "ran past its walltime of 50 s" in job.reason and job.native_id in job.reason, \
        job.reason
    with pytest.raises(corral.JobTimedOut):
        stuck.result(timeout=200)
    assert stuck.status is JobStatus.TIMED_OUT
    assert "TIMEOUT" in stuck.reason and stuck.native_id in stuck.reason, stuck.reason
    assert slurm_state(slurm, stuck.native_id)[0] == "TIMEOUT"


def test_cancelling_a_running_job_cancels_it_in_slurm(slurm, make, release):
    sched = make()
    job = sched.submit(wait_for, str(release))
    wait_for_status(job, JobStatus.RUNNING)
    assert slurm_state(slurm, job.native_id)[0] == "RUNNING"
    assert job.cancel() is True
    assert job.status is JobStatus.CANCELLED
    with pytest.raises(corral.CancelledError):
        job.result(timeout=10)
    wait_for_slurm_state(slurm, job.native_id, "CANCELLED")


def test_a_job_scancelled_from_outside_is_reported_cancelled(slurm, make, release):
    sched = make()
    running = sched.submit(wait_for, str(release))
    waiting = sched.options(cores=16).submit(square, 4)  # pends behind the running one
    wait_for_status(running, JobStatus.RUNNING)
    wait_until(lambda: waiting.native_id, timeout=30)
    for job in (running, waiting):
        assert slurm.run("scancel", job.native_id).returncode == 0
    for job in (running, waiting):
        with pytest.raises(corral.CancelledError):
            job.result(timeout=60)
        assert job.status is JobStatus.CANCELLED
        assert "Slurm" in job.reason and job.native_id in job.reason, job.reason


def test_a_request_no_node_can_satisfy_fails_and_is_cancelled_in_slurm(slurm, make):
    sched = make()
    job = sched.options(cores=64).submit(square, 2)
    with pytest.raises(corral.JobFailed):
        job.result(timeout=60)
    assert job.status is JobStatus.FAILED
    assert "can never start" in job.reason and "PartitionConfig" in job.reason, job.reason
    wait_for_slurm_state(slurm, job.native_id, "CANCELLED")
    assert sched.submit(square, 3).result(timeout=60) == 9


def test_a_failing_setup_line_fails_the_job_with_the_batch_log(slurm, make):
    sched = make()
    job = sched.options(setup="echo no such module >&2; exit 5").submit(square, 2)
    with pytest.raises(corral.JobFailed):
        job.result(timeout=60)
    assert job.status is JobStatus.FAILED
    assert job.exit_code == 5
    assert "exit code 5" in job.reason and "no such module" in job.reason, job.reason
    assert job.native_id in job.reason


def test_a_missing_python_fails_the_job_with_the_batch_log(slurm, make, tmp_path):
    sched = make()
    job = sched.options(python=str(tmp_path / "no-python")).submit(square, 2)
    with pytest.raises(corral.JobFailed):
        job.result(timeout=60)
    assert job.status is JobStatus.FAILED
    assert job.exit_code == 127
    assert "no-python" in job.reason and "No such file" in job.reason, job.reason


def test_a_failed_call_with_retries_is_submitted_again_and_completes(slurm, make, tmp_path,
                                                                     counted_commands):
    sched = make()
    job = sched.options(retries=1).submit(fail_first_time, str(tmp_path / "counter"))
    assert job.result(timeout=90) == "call 2"
    assert job.attempts == 2
    assert commands_run(counted_commands, "sbatch") == 2


def test_the_timeout_option_cancels_the_slurm_job(slurm, make, release):
    sched = make()
    job = sched.options(timeout="2s").submit(wait_for, str(release))
    with pytest.raises(corral.JobTimedOut):
        job.result(timeout=60)
    assert job.status is JobStatus.TIMED_OUT
    wait_for_slurm_state(slurm, job.native_id, "CANCELLED")
    assert not release.exists()


@pytest.mark.parametrize("ending", ["timeout", "cancel"])
def test_a_command_that_ignores_sigterm_is_killed_with_its_children_on_slurm(
        slurm, make, tmp_path, ending):
    """BUG (attack): this cluster tracks a job's processes by parentage
    (proctrack/linuxproc); the batch job died of scancel's SIGTERM, and the
    command, which ignored it, and its child ran on, adopted by init, though
    the job said "killed with its child processes"."""
    tag = f"300.{os.getpid()}{len(ending)}"  # what this test's processes are found by
    started = tmp_path / "started"
    command = f"trap '' TERM; sleep {tag}1 & touch {started}; sleep {tag}2; wait"
    sched = make()
    job = sched.options(**({"timeout": "3s"} if ending == "timeout" else {})).shell(command)
    wait_until(started.exists, timeout=60, message="the command to start")
    if ending == "cancel":
        assert job.cancel() is True
    corral.wait([job], timeout=60)
    assert job.status is (JobStatus.TIMED_OUT if ending == "timeout" else JobStatus.CANCELLED)

    def left() -> list[int]:
        return [process.pid for process in psutil.process_iter(["cmdline"])
                if tag in " ".join(process.info["cmdline"] or ())]
    try:
        wait_until(lambda: not left(), timeout=20, message="the command's processes to end")
    finally:
        for pid in left():
            os.kill(pid, signal.SIGKILL)


# -- 7. pause, resume, interrupt --------------------------------------------------------------

#: ``scontrol hold`` makes a user hold, or an admin hold when the driver runs as root (as here).
HELD = {("PENDING", "JobHeldUser"), ("PENDING", "JobHeldAdmin")}


def test_pause_holds_pending_slurm_jobs_and_resume_releases_them(slurm, make, release):
    sched = make()
    hog = sched.options(cores=16).submit(wait_for, str(release), "hog")
    wait_for_status(hog, JobStatus.RUNNING)
    waiting = sched.submit(square, 5)
    wait_until(lambda: waiting.native_id, timeout=30)
    assert waiting.status is JobStatus.SUBMITTED
    wait_for_slurm_state(slurm, waiting.native_id, "PENDING")

    sched.pause()
    wait_until(lambda: slurm_state(slurm, waiting.native_id) in HELD, timeout=30,
               message="the pending job to be held")
    assert hog.status is JobStatus.RUNNING  # pause lets running jobs go on
    sched.resume()
    wait_until(lambda: slurm_state(slurm, waiting.native_id) not in HELD,
               timeout=30, message="the hold to be released")
    assert slurm_state(slurm, waiting.native_id)[0] == "PENDING"  # the hog still runs
    release.touch()
    assert hog.result(timeout=60) == "hog"
    assert waiting.result(timeout=60) == 25


def test_a_job_paused_then_released_runs_once_the_cluster_has_room(slurm, make, release):
    sched = make()
    hog = sched.options(cores=16).submit(wait_for, str(release), "hog")
    wait_for_status(hog, JobStatus.RUNNING)
    waiting = sched.submit(square, 6)
    wait_until(lambda: waiting.native_id, timeout=30)
    sched.pause()
    wait_until(lambda: slurm_state(slurm, waiting.native_id) in HELD, timeout=30,
               message="the pending job to be held")
    release.touch()
    assert hog.result(timeout=60) == "hog"
    # A job submitted later starts and ends on the now free node; the held one stays held.
    probe = slurm.run("sbatch", "--parsable", "--output=/dev/null", "--wrap=true")
    assert probe.returncode == 0, probe.stderr
    wait_for_slurm_state(slurm, probe.stdout.strip(), "COMPLETED")
    assert slurm_state(slurm, waiting.native_id) in HELD
    assert waiting.status is JobStatus.SUBMITTED
    sched.resume()
    assert waiting.result(timeout=60) == 36


def test_interrupt_cancels_running_and_pending_jobs_in_slurm(slurm, make, release):
    sched = make()
    running = sched.submit(wait_for, str(release))
    pending = sched.options(cores=16).submit(square, 2)
    wait_for_status(running, JobStatus.RUNNING)
    wait_until(lambda: pending.native_id, timeout=30)
    sched.interrupt()
    assert (running.status, pending.status) == (JobStatus.CANCELLED, JobStatus.CANCELLED)
    for job in (running, pending):
        wait_for_slurm_state(slurm, job.native_id, "CANCELLED")


def test_abort_asks_the_slurm_job_to_stop(slurm, make, tmp_path):
    marker, started = tmp_path / "marker", tmp_path / "started"
    sched = make(abort_grace=60)
    polite = sched.submit(stop_when_asked, str(marker), str(started))
    wait_until(started.exists, timeout=60, message="the job to start")
    wait_for_status(polite, JobStatus.RUNNING)
    sched.abort(polite)
    with pytest.raises(corral.CancelledError, match="was cancelled: aborted"):
        polite.result(timeout=30)
    wait_until(marker.exists, timeout=30, message="the job to stop by itself")
    assert marker.read_text() == "stopped cleanly"
    assert polite.reason == "aborted"


# -- 8. a driver killed and run again ---------------------------------------------------------


def start_driver(tmp_path: Path, *args: object, output: str) -> subprocess.Popen:
    with open(tmp_path / output, "w") as sink:
        return subprocess.Popen([sys.executable, str(DRIVER), *map(str, args)], stdout=sink,
                                stderr=subprocess.STDOUT, env=dict(os.environ))


def driver_output(driver: subprocess.Popen, tmp_path: Path, output: str,
                  killed: bool = False) -> dict:
    try:
        returncode = driver.wait(timeout=150)
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.wait()
        raise
    text = (tmp_path / output).read_text()
    expected = -signal.SIGKILL if killed else 0
    assert returncode == expected, f"the driver ended with {returncode}:\n{text}"
    # Its last JSON line: corral's closing summary of failed jobs may follow it on stderr.
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


@pytest.fixture
def cancel_at_end(slurm, release: Path) -> Iterator[list[str]]:
    """Slurm ids a test's drivers printed: if the test fails half-way, its jobs
    are released and cancelled rather than left to block the next tests."""
    natives: list[str] = []
    yield natives
    release.touch()
    if natives:
        slurm.run("scancel", *natives)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.timeout(300)
def test_a_killed_driver_run_again_follows_its_slurm_jobs_without_submitting_again(
        slurm, tmp_path, release, cancel_at_end, counted_commands):
    run, side = tmp_path / "journal", tmp_path / "side"
    side.mkdir()
    args = ("chain", run, release, side)
    natives = driver_output(start_driver(tmp_path, *args, "kill", output="first.out"),
                            tmp_path, "first.out", killed=True)
    cancel_at_end.extend(natives.values())
    assert len(natives) == 4 and all(NATIVE_ID.fullmatch(n) for n in natives.values())
    rows = squeue(slurm, *natives.values())
    head, middle, tail, command = natives.values()
    assert rows[head][0] in ("PENDING", "RUNNING")  # it outlives its driver
    assert_held_back_by(slurm, middle, head)
    assert_held_back_by(slurm, tail, middle)
    wait_for_slurm_state(slurm, command, "COMPLETED")  # ran with no driver

    release.touch()
    counted_commands.write_text("")  # count what the rerun runs
    rerun = driver_output(start_driver(tmp_path, *args, "finish", output="second.out"),
                          tmp_path, "second.out")
    assert [job["value"] for job in rerun["jobs"]] == [10, 11, 12, None]
    assert [job["status"] for job in rerun["jobs"]] == ["COMPLETED"] * 4
    assert {job["id"]: job["native_id"] for job in rerun["jobs"]} == natives
    assert commands_run(counted_commands, "sbatch") == 0
    assert {name: len(lines(side / name)) for name in "abcd"} == dict.fromkeys("abcd", 1)
    for native in natives.values():
        assert slurm_state(slurm, native)[0] == "COMPLETED"


@pytest.mark.timeout(300)
def test_a_parent_that_fails_with_no_driver_gets_its_pending_child_cancelled_on_rerun(
        slurm, tmp_path, release, cancel_at_end, counted_commands):
    run = tmp_path / "journal"
    args = ("failchain", run, release)
    natives = driver_output(start_driver(tmp_path, *args, "kill", output="first.out"),
                            tmp_path, "first.out", killed=True)
    cancel_at_end.extend(natives.values())
    parent, child = natives.values()
    release.touch()
    wait_for_slurm_state(slurm, parent, "FAILED")
    wait_for_slurm_state(slurm, child, "PENDING", "DependencyNeverSatisfied")

    counted_commands.write_text("")  # count what the rerun runs
    rerun = driver_output(start_driver(tmp_path, *args, "finish", output="second.out"),
                          tmp_path, "second.out")
    failed, cancelled = rerun["jobs"]
    assert failed["status"] == "FAILED"
    assert failed["value"].startswith("ValueError: the parent fails on purpose")
    assert cancelled["status"] == "CANCELLED"
    assert re.search(r"upstream job|depends on", cancelled["reason"]), cancelled["reason"]
    assert commands_run(counted_commands, "sbatch") == 0
    wait_for_slurm_state(slurm, child, "CANCELLED")


def known_to_squeue(cluster, native_id: str) -> bool:
    done = cluster.run("squeue", "--noheader", "--array", "--states=all", f"--jobs={native_id}",
                       "--format=%i")
    return done.returncode == 0 and native_id in done.stdout.split()


@pytest.mark.timeout(300)
def test_jobs_slurm_has_forgotten_are_decided_by_their_result_files_or_accounting(
        slurm, tmp_path, release, monkeypatch, counted_commands):
    """A rerun after Slurm purged the jobs (MinJobAge): a job that completed is
    known by its result file; one cancelled in Slurm is CANCELLED if accounting
    can tell, else FAILED with a reason saying why corral cannot know more."""
    cluster = slurm_cluster.start(accounting=slurm.accounting, min_job_age=2)
    try:
        monkeypatch.setenv("SLURM_CONF", cluster.conf)
        args = ("forgotten", tmp_path / "journal", release)
        natives = driver_output(start_driver(tmp_path, *args, "kill", output="first.out"),
                                tmp_path, "first.out", killed=True)
        done, doomed = natives.values()
        wait_for_slurm_state(cluster, doomed, "RUNNING")
        assert cluster.run("scancel", doomed).returncode == 0
        release.touch()
        wait_until(lambda: not known_to_squeue(cluster, done)
                   and not known_to_squeue(cluster, doomed), timeout=120,
                   message="Slurm to forget both jobs")

        counted_commands.write_text("")  # count what the rerun runs
        rerun = driver_output(start_driver(tmp_path, *args, "finish", output="second.out"),
                              tmp_path, "second.out")
    finally:
        slurm_cluster.stop(cluster)
    completed, lost = rerun["jobs"]
    assert (completed["status"], completed["value"]) == ("COMPLETED", "done")
    assert commands_run(counted_commands, "sbatch") == 0
    if slurm.accounting:
        assert lost["status"] == "CANCELLED", lost
        assert lost["reason"] == f"cancelled in Slurm (Slurm job {doomed})"
        assert commands_run(counted_commands, "sacct") >= 1
    else:
        # Without accounting only the job's files tell: whether the runtime had
        # claimed it before the scancel depends on how fast Python started.
        assert (lost["status"], lost["reason"]) in [
            ("FAILED", f"Slurm no longer knows the job and it left no result (purged after "
                       f"MinJobAge; no accounting to ask) (Slurm job {doomed})"),
            ("CANCELLED", f"Slurm no longer lists it and it never started (cancelled outside "
                          f"corral, or ended without starting long ago) (Slurm job {doomed})"),
        ], lost
        assert commands_run(counted_commands, "sacct") == 0


# -- 9. bundles -------------------------------------------------------------------------------


def test_bundled_calls_share_array_tasks_and_keep_their_own_outcomes(slurm, make, counted_commands):
    sched = make()
    sched.pause()
    jobs = [sched.options(bundle=10).submit(maybe_fail, i, 15) for i in range(30)]
    sched.resume()
    with pytest.raises(ArithmeticError, match="call 15 fails on purpose"):
        jobs[15].result(timeout=90)
    for i, job in enumerate(jobs):
        if i != 15:
            assert job.result(timeout=90) == i * 10
    assert commands_run(counted_commands, "sbatch") == 1
    base = slurm_base(jobs[0].native_id)
    assert [job.native_id for job in jobs] == [f"{base}_{i // 10}" for i in range(30)]
    assert [job.status for job in jobs] == [
        JobStatus.FAILED if i == 15 else JobStatus.COMPLETED for i in range(30)]
    assert [(job.stdout, job.stderr) for job in jobs] == [
        (f"call {i} out\n", f"call {i} err\n") for i in range(30)]
    assert len(squeue(slurm, base)) == 3


def test_a_bundle_gets_the_time_its_calls_need(slurm, make, counted_commands):
    sched = make()
    sched.pause()
    jobs = [sched.options(bundle=6, walltime="3s").submit(sleep_for, 1, i) for i in range(6)]
    sched.resume()
    assert [job.result(timeout=90) for job in jobs] == list(range(6))
    assert commands_run(counted_commands, "sbatch") == 1
    assert len({job.native_id for job in jobs}) == 1
    assert fields(scontrol_job(slurm, jobs[0].native_id))["TimeLimit"] == "00:01:00"


def test_a_lone_bundled_call_with_a_walltime_runs(slurm, make, counted_commands):
    sched = make()
    job = sched.options(bundle=4, walltime="5s").submit(sleep_for, 0.1, "alone")
    assert job.result(timeout=90) == "alone"
    assert commands_run(counted_commands, "sbatch") == 1


@pytest.mark.timeout(300)
def test_bundled_calls_that_use_most_of_their_walltime_all_complete(slurm, make):
    # Four calls of 2.5 s with a walltime of 3 s each: the bundle must get at least 4 x 3 s
    # and the runtime's margin, or the last call is left for lack of time (and must then
    # still run, in another batch job).
    sched = make()
    sched.pause()
    jobs = [sched.options(bundle=4, walltime="3s").submit(sleep_for, 2.5, i) for i in range(4)]
    sched.resume()
    assert [job.result(timeout=150) for job in jobs] == list(range(4))
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 4


def test_a_call_past_its_walltime_ends_its_bundle_and_the_others_are_submitted_again(
        slurm, make, counted_commands):
    sched = make()
    sched.pause()
    slow = sched.options(bundle=4, walltime="3s").submit(sleep_for, 60, "slow")
    quick = [sched.options(bundle=4, walltime="3s").submit(sleep_for, 0.1, i) for i in range(3)]
    sched.resume()
    with pytest.raises(corral.JobTimedOut):
        slow.result(timeout=90)
    assert slow.status is JobStatus.TIMED_OUT
    assert "ran past its walltime of 3 s" in slow.reason and slow.native_id in slow.reason
    assert [job.result(timeout=90) for job in quick] == [0, 1, 2]
    assert commands_run(counted_commands, "sbatch") == 2
    assert len({job.native_id for job in quick}) == 1
    assert quick[0].native_id != slow.native_id


def test_cancelling_a_waiting_call_of_a_bundle_skips_it_and_the_others_run(
        slurm, make, tmp_path, release, counted_commands):
    side = tmp_path / "side"
    side.mkdir()
    sched = make()
    sched.pause()
    first = sched.options(bundle=3).submit(wait_and_log, str(release), str(side), "first", 1)
    second, third = (sched.options(bundle=3).submit(logged, str(side), name, value)
                     for name, value in (("second", 2), ("third", 3)))
    sched.resume()
    wait_for_status(first, JobStatus.RUNNING)
    assert third.cancel() is True
    release.touch()
    assert (first.result(timeout=60), second.result(timeout=60)) == (1, 2)
    assert third.status is JobStatus.CANCELLED
    assert sorted(path.name for path in side.iterdir()) == ["first", "second"]
    assert commands_run(counted_commands, "sbatch") == 1


def test_cancelling_the_running_call_of_a_bundle_leaves_the_other_calls_to_run(
        slurm, make, release):
    sched = make()
    sched.pause()
    running = sched.options(bundle=3).submit(wait_for, str(release), "never returned")
    others = [sched.options(bundle=3).submit(square, i) for i in (2, 3)]
    sched.resume()
    wait_for_status(running, JobStatus.RUNNING)
    assert running.cancel() is True
    assert [job.result(timeout=90) for job in others] == [4, 9]
    assert running.status is JobStatus.CANCELLED


def test_a_call_depending_on_bundled_calls_gets_their_results(slurm, make):
    sched = make()
    sched.pause()
    parents = [sched.options(bundle=3).submit(square, i) for i in range(3)]
    total = sched.submit(add, *parents)
    sched.resume()
    assert total.result(timeout=90) == 0 + 1 + 4
    assert len({job.native_id for job in parents}) == 1


# -- 10. how many Slurm commands a large run costs --------------------------------------------


SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")


@pytest.fixture
def counted_commands(tmp_path: Path, monkeypatch) -> Path:
    """Wrappers first on PATH that log each Slurm command's name and time."""
    log, path = wrap_commands(tmp_path / "counted", SLURM_COMMANDS, os.environ["PATH"])
    monkeypatch.setenv("PATH", path)
    return log


def commands_run(log: Path, name: str) -> int:
    """How many times the Slurm command *name* ran, by the wrappers' log."""
    return counts_of(log)[name]


@pytest.mark.timeout(300)
def test_two_hundred_calls_cost_four_sbatch_and_one_squeue_per_poll(slurm, make, counted_commands,
                                                                   tmp_path):
    mode = "acct" if slurm.accounting else "noacct"
    cost = two_hundred_calls(make, counted_commands, "squeue", SLURM_COMMANDS, mode=mode)
    (tmp_path / f"slurm_invocations_{mode}.json").write_text(
        json.dumps(cost.report, indent=2) + "\n")

    assert cost.counts["sbatch"] == math.ceil(200 / 64) == 4
    assert {slurm_base(job.native_id) for job in cost.jobs}.__len__() == 4
    assert cost.counts["squeue"] <= cost.elapsed / 0.5 + 2, cost.report
    assert spaced_like_polls(cost.gaps), cost.report
    if not slurm.accounting:
        assert cost.counts["sacct"] == 0


# -- 11. backend="auto" -----------------------------------------------------------------------


def test_auto_picks_slurm_where_the_cluster_answers_and_local_where_there_is_none(
        slurm, tmp_path, monkeypatch):
    sched = corral.Scheduler(backend="auto", workdir=tmp_path / "slurm-run")
    try:
        assert sched._backend.name == "slurm"
        job = sched.submit(square, 4)
        assert job.result(timeout=60) == 16
        assert NATIVE_ID.fullmatch(job.native_id)
    finally:
        sched.shutdown()

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    sched = corral.Scheduler(backend="auto", cores=1, workdir=tmp_path / "local-run")
    try:
        assert sched._backend.name == "local"
        assert sched.submit(square, 5).result(timeout=60) == 25
    finally:
        sched.shutdown()


def test_auto_picks_local_when_slurm_commands_exist_but_no_controller_answers(
        slurm, tmp_path, monkeypatch):
    conf = tmp_path / "slurm.conf"
    conf.write_text(Path(slurm.conf).read_text().replace(
        "SlurmctldPort=", "SlurmctldPort=1").replace("SlurmctldHost=", "SlurmctldHost=nohost"))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    only_slurm = tmp_path / "bin"  # no other scheduler answers (Grid Engine may run here)
    only_slurm.mkdir()
    for name in ("sbatch", "squeue"):
        (only_slurm / name).symlink_to(shutil.which(name))
    monkeypatch.setenv("PATH", str(only_slurm))
    sched = corral.Scheduler(backend="auto", cores=1, workdir=tmp_path / "run")
    try:
        assert sched._backend.name == "local"
    finally:
        sched.shutdown()


# -- 12. bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"poll": 1}, "unknown Slurm backend option 'poll'; did you mean 'poll_interval'?"),
    ({"poll_intervall": 1}, "unknown Slurm backend option 'poll_intervall'; did you mean "
                            "'poll_interval'?"),
    ({"array_throttle": 0}, "array_throttle=0 must be an int >= 1"),
    ({"max_array_size": 2.5}, "max_array_size=2.5 must be an int >= 1"),
    ({"poll_interval": 0}, "poll_interval=0 must be a positive duration"),
    ({"user": 7}, "user=7 must be a user name"),
], ids=["poll", "poll_intervall", "array_throttle", "max_array_size", "poll_interval", "user"])
def test_bad_backend_options_are_refused_with_a_message(tmp_path, options, message):
    with pytest.raises(ValueError) as caught:
        corral.Scheduler(backend="slurm", workdir=tmp_path / "run", backend_options=options)
    assert message in str(caught.value)


def test_a_misspelt_backend_is_refused_with_a_suggestion():
    with pytest.raises(ValueError, match=re.escape(
            "unknown backend 'slrum'; did you mean 'slurm'? "
            "(known: local, slurm, sge, pbs, lsf, dask, auto)")):
        corral.Scheduler(backend="slrum")


@pytest.mark.parametrize("options, message", [
    ({"partition": "a\nb"}, "partition='a\\nb' must be a non-empty string on one line"),
    ({"account": ""}, "account='' must be a non-empty string on one line"),
    ({"extra_flags": ["nodash"]},
     "extra_flags: 'nodash' is not a flag (one argument starting with '-', without NUL "
     "characters)"),
    ({"extra_flags": "--comment='unclosed"}, "extra_flags=\"--comment='unclosed\" cannot be "
                                              "split into flags"),
    ({"bundle": 0}, "bundle=0 must be an int >= 1"),
    ({"setup": [1]}, "setup: 1 is not a line of shell code (a string without NUL characters)"),
], ids=["partition", "account", "extra_flags", "extra_flags_string", "bundle", "setup"])
def test_bad_cluster_job_options_are_refused_at_submit(tmp_path, options, message):
    sched = corral.Scheduler(backend="slurm", workdir=tmp_path / "run")
    try:
        with pytest.raises(ValueError) as caught:
            sched.options(**options).submit(square, 1)
        assert message in str(caught.value)
        assert sched.jobs() == []
    finally:
        sched.shutdown()
