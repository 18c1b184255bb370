"""The Slurm command builders and parsers, against output recorded from a real
Slurm 22.05 (the commands that printed it are in each test)."""

from __future__ import annotations

import pytest

from corral.backends.batch import arrays
from corral.backends.batch.slurm import commands
from corral.backends.batch.slurm.backend import SlurmBackend
from corral.spec import Placement, Resources
from corral.status import JobStatus

# squeue --noheader --array --states=all --user=root
#   --Format=JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,exit_code:|
SQUEUE = """\
244|244|N/A|FAILED|NonZeroExitCode|1792|
245|245|N/A|FAILED|JobLaunchFailure|9|
246|246|0|PENDING|JobHeldUser|0|
246|246|1|PENDING|JobHeldUser|0|
5|2|0|COMPLETED|None|0|
3|3|N/A|PENDING|DependencyNeverSatisfied|0|
4|4|N/A|PENDING|PartitionConfig|0|
9|9|N/A|TIMEOUT|TimeLimit|15|
garbage line
"""

# sacct --noheader --parsable2 --allocations --format=JobID,State,ExitCode,Reason --jobs=...
SACCT = """\
12|FAILED|7:0|None
13|CANCELLED by 0|0:15|None
14_3|TIMEOUT|0:15|TimeLimit
15|OUT_OF_MEMORY|0:125|OutOfMemory
"""


def test_squeue_rows_are_keyed_by_the_id_corral_records():
    rows = commands.parse_squeue(SQUEUE)
    assert set(rows) == {"244", "245", "246_0", "246_1", "2_0", "3", "4", "9"}
    assert rows["244"] == commands.SlurmRow("244", "FAILED", "NonZeroExitCode", 7, None)
    assert rows["245"].signal == 9 and rows["245"].exit_status == 0
    assert rows["246_1"].state == "PENDING" and rows["246_1"].reason == "JobHeldUser"
    assert rows["2_0"].reason == ""  # "None" means no reason


def test_squeue_output_with_lines_but_no_row_is_refused_not_read_as_no_jobs():
    """Read as "no jobs", a banner would end every job early; an empty answer is
    still "no jobs" and a banner beside rows is skipped."""
    with pytest.raises(ValueError, match=r"^squeue printed no row corral can read: "
                                         r"'Welcome to the cluster!'$"):
        commands.parse_squeue("Welcome to the cluster!\n\n")
    assert commands.parse_squeue("") == {}
    assert set(commands.parse_squeue("Welcome!\n" + SQUEUE)) == set(
        commands.parse_squeue(SQUEUE))


def test_squeue_asks_once_for_every_job_of_the_user_with_finished_ones():
    argv = commands.squeue_argv("alice")
    assert argv[0] == "squeue" and "--user=alice" in argv and "--states=all" in argv
    assert "--array" in argv  # one line per array task


def test_sacct_parsable_output_keeps_the_real_exit_code():
    rows = commands.parse_sacct(SACCT)
    assert rows["12"].exit_status == 7 and rows["12"].signal is None
    assert rows["13"].state == "CANCELLED" and rows["13"].signal == 15
    assert commands.state_of(rows["14_3"])[0] is JobStatus.TIMED_OUT
    assert commands.state_of(rows["15"]) == (JobStatus.FAILED,
                                             "out of memory (Slurm OUT_OF_MEMORY)")


@pytest.mark.parametrize("state, expected", [
    ("PENDING", JobStatus.SUBMITTED), ("RUNNING", JobStatus.RUNNING),
    ("COMPLETING", JobStatus.RUNNING), ("COMPLETED", JobStatus.COMPLETED),
    ("FAILED", JobStatus.FAILED), ("TIMEOUT", JobStatus.TIMED_OUT),
    ("CANCELLED", JobStatus.CANCELLED), ("OUT_OF_MEMORY", JobStatus.FAILED),
    ("NODE_FAIL", JobStatus.FAILED), ("PREEMPTED", JobStatus.FAILED),
])
def test_every_slurm_state_has_a_meaning(state, expected):
    assert commands.state_of(commands.SlurmRow("1", state))[0] is expected


def test_failure_reasons_say_how_it_failed():
    assert commands.state_of(commands.SlurmRow("1", "FAILED", "NonZeroExitCode", 7))[1] == \
        "exit code 7 (Slurm FAILED)"
    killed = commands.SlurmRow("1", "FAILED", "JobLaunchFailure", 0, 9)
    assert commands.state_of(killed)[1] == \
        "killed by signal 9 (Slurm FAILED, reason JobLaunchFailure)"
    assert commands.exit_code_of(killed) == -9
    assert "NODE_FAIL" in commands.state_of(commands.SlurmRow("1", "NODE_FAIL"))[1]
    assert "PREEMPTED" in commands.state_of(commands.SlurmRow("1", "PREEMPTED"))[1]


def test_an_unknown_state_is_not_guessed():
    assert commands.state_of(commands.SlurmRow("1", "SOMETHING_NEW")) is None


def test_pending_reasons_that_mean_never():
    assert "partition" in commands.describe_pending("PartitionConfig")
    assert commands.describe_pending("Resources") is None
    assert commands.describe_pending("Priority") is None


def test_sbatch_gets_one_argument_per_setting():
    argv = commands.sbatch_argv(
        script="/runs/x/job.sh", name='a"; rm -rf / #', resources=Resources(4, 2048, 90.0, 1),
        placement=Placement(partition="short", account="lab", qos="high", constraint="avx",
                            extra_flags=("--exclusive",)),
        output="/runs/x/slurm.out", array_size=10, throttle=3, dependencies=("7", "8_1"),
        time_limit_s=90.0)
    assert argv[0] == "sbatch" and argv[-1] == "/runs/x/job.sh"
    for flag in ('--job-name=a"; rm -rf / #', "--no-requeue", "--cpus-per-task=4", "--mem=2048M",
                 "--time=2",
                 "--gres=gpu:1", "--partition=short", "--account=lab", "--qos=high",
                 "--constraint=avx", "--array=0-9%3", "--dependency=afterok:7:8_1",
                 "--exclusive"):
        assert flag in argv


def test_walltime_is_rounded_up_to_whole_minutes():
    assert commands.walltime_minutes(1) == 1
    assert commands.walltime_minutes(60) == 1
    assert commands.walltime_minutes(61) == 2
    assert commands.walltime_minutes(5400) == 90


def test_arrays_are_split_below_the_limit():
    assert arrays.array_ranges(5, 2) == [(0, 2), (2, 2), (4, 1)]
    assert arrays.array_ranges(3, 10) == [(0, 3)]


def test_sbatch_output_without_an_id_is_an_error():
    assert commands.parse_sbatch("1234\n") == "1234"
    assert commands.parse_sbatch("1234;cluster\n") == "1234"
    with pytest.raises(ValueError, match="sbatch printed no job id"):
        commands.parse_sbatch("sbatch: error: something\n")


def test_config_is_read_as_key_values():
    text = ("Configuration data as of 2026-11-25T19:12:50\n"
            "AccountingStorageType   = accounting_storage/none\n"
            "MaxArraySize            = 10001\nMinJobAge               = 300 sec\n")
    settings = commands.parse_config(text)
    assert settings["MaxArraySize"] == "10001"
    assert settings["MinJobAge"] == "300 sec"
    assert settings["AccountingStorageType"] == "accounting_storage/none"


@pytest.mark.parametrize("options, message", [
    ({"poll": 1}, "unknown Slurm backend option 'poll'; did you mean 'poll_interval'?"),
    ({"array_throttle": 0}, "array_throttle=0 must be an int >= 1"),
    ({"max_array_size": "10"}, "max_array_size='10' must be an int >= 1"),
    ({"poll_interval": "soon"}, "poll_interval"),
    ({"user": 3}, "user=3 must be a user name"),
])
def test_bad_backend_options_are_named(options, message):
    with pytest.raises(ValueError) as caught:
        SlurmBackend(options=options)
    assert message in str(caught.value)
