"""LSF's command builders and parsers (:mod:`corral.backends.batch.lsf.commands`),
on output in the formats IBM's documentation and public projects show
(``tests/recorded/lsf/README.md`` names the source of each file)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import corral
from corral.backends import backend_info
from corral.backends.batch.lsf.scheduler import LsfLimits, LsfScheduler
from corral.backends.batch.scheduler import NativeRow, NeverKind, SubmitRequest
from corral.spec import Placement, Resources
from corral.status import JobStatus

RECORDED = Path(__file__).with_name("recorded") / "lsf"
LSF = LsfScheduler()


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def request(**changes) -> SubmitRequest:
    values = dict(script="/home/ann/run's/lsf/1/job.sh", name="train", output="/dev/null",
                  resources=Resources(cores=1), placement=Placement(), array_size=None,
                  throttle=None, dependencies=(), time_limit_s=None)
    values.update(changes)
    return SubmitRequest(**values)


# -- bsub ------------------------------------------------------------------------------------


def test_bsub_gets_one_argument_per_setting_and_the_script_as_a_quoted_command():
    argv = LSF.submit_argv(request(
        resources=Resources(cores=4, memory_mb=512, gpus=2), time_limit_s=61,
        placement=Placement(partition="short", account="proj1", constraint="avx2",
                            extra_flags=("-G", "lab")),
        array_size=50, throttle=8, dependencies=("7", "8[2]")))
    assert argv == [
        "bsub", "-rn", "-J", "train[1-50]%8", "-o", "/dev/null", "-n", "4",
        "-M", "512MB", "-R", "select[avx2] rusage[mem=512MB] span[hosts=1]", "-W", "2",
        "-gpu", "num=2", "-q", "short", "-P", "proj1", "-w", "done(7) && done(8[2])",
        "-G", "lab", "/bin/bash", "'/home/ann/run'\"'\"'s/lsf/1/job.sh'"]


def test_a_lone_job_on_one_core_asks_for_nothing_more():
    assert LSF.submit_argv(request()) == [
        "bsub", "-rn", "-J", "train", "-o", "/dev/null", "-n", "1", "/bin/bash",
        "'/home/ann/run'\"'\"'s/lsf/1/job.sh'"]


def test_memory_goes_in_megabytes_with_the_unit_written_out():
    """A plain number is read in the site's LSF_UNIT_FOR_LIMITS, KB unless set:
    32G went out as 33554432, 32 TB where the site says MB (review F5). LSF
    10.1.0.2, the first with bjobs -json, reads a unit after the number."""
    argv = LSF.submit_argv(request(resources=Resources(cores=8, memory_mb=32 * 1024)))
    assert argv[argv.index("-M") + 1] == "32768MB"
    assert argv[argv.index("-R") + 1] == "rusage[mem=32768MB] span[hosts=1]"


@pytest.mark.parametrize(("unit", "amount"), [("KB", "1536000KB"), ("MB", "1500MB"),
                                              ("GB", "2GB"), ("tb", "1TB"), ("M", "1500MB")])
def test_memory_goes_in_unit_for_limits_rounded_up_naming_the_unit(unit, amount):
    argv = LsfScheduler(unit_for_limits=unit).submit_argv(
        request(resources=Resources(cores=1, memory_mb=1500)))
    assert argv[argv.index("-M") + 1] == amount
    assert argv[argv.index("-R") + 1] == f"rusage[mem={amount}]"


def test_a_bad_unit_for_limits_is_refused_naming_what_it_accepts():
    with pytest.raises(ValueError, match=r"^unit_for_limits='bytes' is not an "
                                         r"LSF_UNIT_FOR_LIMITS unit \(one of KB, MB, GB, TB, "
                                         r"PB, EB\)$"):
        LsfScheduler(unit_for_limits="bytes")
    for wrong in (["MB"], {"MB": 1}, 7):  # not a string, not hashable: the same message
        with pytest.raises(ValueError, match=r"^unit_for_limits=.* is not an LSF_UNIT"):
            LsfScheduler(unit_for_limits=wrong)
    with pytest.raises(ValueError, match="unknown LSF backend option 'unit_for_limit'; did "
                                         "you mean 'unit_for_limits'"):
        corral.Scheduler(backend="lsf", backend_options={"unit_for_limit": "MB"})


def test_a_name_with_brackets_or_percent_cannot_become_an_array_spec():
    assert LSF.submit_argv(request(name="fit[3] 100%"))[3] == "fit_3_ 100_"
    assert LSF.submit_argv(request(name="fit[3]", array_size=2))[3] == "fit_3_[1-2]"


def test_the_walltime_is_granted_in_whole_minutes():
    assert LSF.granted_time_s(61) == 120.0 and LSF.granted_time_s(1) == 60.0
    assert LSF.submit_argv(request(time_limit_s=120.0))[-3:-2] == ["2"]


def test_the_job_id_is_read_from_what_bsub_says_also_after_please_wait_lines():
    replies = recorded("bsub.txt").split("\n")
    assert LSF.parse_submit(replies[0]) == "1234"  # "submitted to default queue"
    assert LSF.parse_submit(replies[1]) == "88"
    assert LSF.parse_submit("\n".join(replies[2:5])) == "12345678"
    with pytest.raises(ValueError, match=r"^bsub printed no job id: 'Bad resource requirement "
                                         r"syntax. Job not submitted.'$"):
        LSF.parse_submit(replies[5])


def test_array_elements_are_named_as_bkill_and_done_take_them():
    assert LSF.array_task_id("123", 4) == "123[4]" and LSF.array_index_base == 1


# -- bjobs -----------------------------------------------------------------------------------


def test_one_bjobs_asks_for_every_job_of_the_user_finished_ones_included():
    assert LSF.status_argv("alice") == [
        "bjobs", "-json", "-o", "jobid jobindex stat exit_code exit_reason pend_reason",
        "-a", "-u", "alice"]


def test_bjobs_records_are_keyed_by_job_and_array_element():
    rows = LSF.parse_status(recorded("bjobs_states.json"))
    assert len(rows) == 20 and "22099" not in rows  # a record with ERROR is skipped
    assert {"22020[1]", "22020[2]", "22020[3]"} <= set(rows) and "22020" not in rows
    assert rows["22009"] == NativeRow("22009", "EXIT", "", 1, None)
    assert rows["22003"].reason == "Dependency condition invalid or never satisfied"
    assert rows["22010"] == NativeRow(
        "22010", "EXIT", "TERM_RUNLIMIT: job killed after reaching LSF run time limit", 140)
    assert rows["22008"].exit_status is None  # DONE prints an empty EXIT_CODE


def test_every_lsf_state_has_a_meaning_and_an_unknown_one_has_none():
    rows = LSF.parse_status(recorded("bjobs_states.json"))
    meanings = {native: LSF.meaning(row) for native, row in rows.items()}
    assert {native for native, m in meanings.items() if m == (JobStatus.SUBMITTED, "")} == {
        "22001", "22002", "22003", "22004", "22016", "22020[3]"}
    assert {native for native, m in meanings.items() if m == (JobStatus.RUNNING, "")} == {
        "22005", "22006", "22007", "22014", "22015"}
    assert meanings["22008"] == meanings["22020[1]"] == (JobStatus.COMPLETED, "")
    assert meanings["22009"] == (JobStatus.FAILED, "exit code 1 (LSF EXIT)")
    assert meanings["22020[2]"] == (JobStatus.FAILED, "exit code 3 (LSF EXIT)")
    assert meanings["22010"] == (JobStatus.TIMED_OUT, "ran past its run limit (LSF TERM_RUNLIMIT)")
    assert meanings["22011"] == meanings["22012"] == (
        JobStatus.CANCELLED, "killed by its owner (LSF TERM_OWNER)")
    assert meanings["22013"] == (JobStatus.FAILED, "out of memory (LSF TERM_MEMLIMIT)")
    assert LSF.meaning(NativeRow("1", "EXIT", "TERM_BUCKET_KILL: job killed by bkill -b")) == (
        JobStatus.CANCELLED, "killed with bkill -b (LSF TERM_BUCKET_KILL)")
    assert meanings["22017"] is None  # FROZEN: logged by the base, never a crash
    assert LSF.meaning(NativeRow("1", "EXIT", "TERM_CHKPNT: job killed after checkpointing")) \
        == (JobStatus.FAILED, "exited (LSF EXIT, TERM_CHKPNT: job killed after checkpointing)")


def test_exit_codes_above_128_are_read_as_the_signal_that_killed_the_job():
    rows = LSF.parse_status(recorded("bjobs_states.json"))
    assert LSF.exit_code(rows["22011"]) == -2  # bkill: SIGINT first
    assert LSF.exit_code(rows["22010"]) == -12  # the run limit: SIGUSR2
    assert LSF.exit_code(rows["22009"]) == 1 and LSF.exit_code(rows["22008"]) is None


def test_a_child_whose_dependency_can_never_be_met_never_starts():
    rows = LSF.parse_status(recorded("bjobs_states.json"))
    never = LSF.never_starts(rows["22003"])
    assert never is not None and never.kind is NeverKind.DEPENDENCY_FAILED
    assert LSF.never_starts(rows["22002"]) is None  # its parent still runs
    assert LSF.never_starts(rows["22001"]) is None


def test_pending_and_held_are_told_apart():
    rows = LSF.parse_status(recorded("bjobs_states.json"))
    assert [n for n, row in rows.items() if LSF.is_pending(row)] == [
        "22001", "22002", "22003", "22004", "22020[3]"]
    # USUSP too: a running job bstop reached (resume must bresume it).
    assert [n for n, row in rows.items() if LSF.is_held(row)] == ["22004", "22006"]


def test_no_job_found_is_no_jobs_but_other_text_is_refused():
    assert LSF.parse_status(recorded("bjobs_none.txt")) == {}
    assert LSF.parse_status("") == {}
    assert LSF.parse_status('{"COMMAND":"bjobs","JOBS":0,"RECORDS":[]}') == {}
    with pytest.raises(ValueError, match=r"^bjobs printed no JSON: 'LSF is down'$"):
        LSF.parse_status("LSF is down\n")
    banner = "Cannot connect to LSF. Please wait ...\n" + recorded("bjobs_states.json")
    assert LSF.parse_status(banner) == LSF.parse_status(recorded("bjobs_states.json"))
    # (attack review: a line after the object was "Extra data", five polls of it the end)
    trailer = recorded("bjobs_states.json") + "\nWarning: LSF license expires in 5 days\n"
    assert LSF.parse_status(trailer) == LSF.parse_status(recorded("bjobs_states.json"))


@pytest.mark.parametrize(("stderr", "usable"), [
    (recorded("bjobs_none.txt"), True),  # bjobs -a -u alice: exit status 255
    ("No unfinished job found\n", True),  # without -a
    ("Job <7> is not found\nJob <8[2]> is not found\n", True),  # asked for by id
    ("No job found\nLSF is down. Please wait ...\n", False),
    ("-json: Illegal option\n", False),
    ("", False),
])
def test_bjobs_that_found_no_job_says_so_on_stderr_and_that_is_an_answer(stderr, usable):
    """LSF says it on stderr and exits 255 (batchtools, OSC's ood_core): read as
    a failed query, a rerun whose jobs LSF cleaned after CLEAN_PERIOD polled for
    ever (review F2). Its stdout, nothing, is then no jobs."""
    assert LSF.status_answer_usable(255, stderr) is usable
    assert LSF.parse_status("") == {}


def test_an_unknown_state_is_logged_and_polling_goes_on(tmp_path, caplog):
    """The base's poller on a FROZEN row: a warning naming it, no update, no crash."""
    from corral.backends.batch.lsf.backend import LsfBackend
    from corral.backends.batch.records import BatchJob

    backend = LsfBackend()
    job = BatchJob("22017", "", row=LSF.parse_status(recorded("bjobs_states.json"))["22017"])
    with caplog.at_level(logging.WARNING):
        backend._follow(job)
    assert "LSF job 22017 is in a state corral does not know: 'FROZEN'" in caplog.text
    assert backend.updates(0) == []


# -- the cluster, control, the probe -------------------------------------------------------


def test_bparams_gives_the_array_limit_and_the_clean_period():
    limits = LSF.parse_limits(recorded("bparams_a.txt"))
    assert (limits.max_array_tasks, limits.forget_after_s, limits.accounting) == (
        10000, 1800.0, False)
    assert LSF.limits_argv() == ["bparams", "-a"]
    assert LSF.parse_limits("nothing here") == LSF.default_limits  # LSF's defaults


def test_bparams_tells_whether_lsf_reserves_memory_per_task():
    assert LSF.parse_limits(recorded("bparams_a_per_task.txt")) == LsfLimits(
        4000, 3600.0, False, reserve_per_task=True)
    assert LSF.parse_limits(recorded("bparams_a.txt")).reserve_per_task is False
    assert LSF.parse_limits("RESOURCE_RESERVE_PER_SLOT = y").reserve_per_task is True
    assert LSF.parse_limits("RESOURCE_RESERVE_PER_TASK = N").reserve_per_task is False
    assert LSF.default_limits.reserve_per_task is False  # bparams unreadable: per host


def test_where_lsf_reserves_per_task_the_rusage_is_the_jobs_memory_divided_by_its_cores():
    """Sent whole, 8 cores and 32G reserved 256 GB there, and maybe never
    started (review F6). -M stays the total: it limits a process, or the job."""
    per_task = LSF.for_cluster(LSF.parse_limits(recorded("bparams_a_per_task.txt")))
    argv = per_task.submit_argv(request(resources=Resources(cores=8, memory_mb=32 * 1024)))
    assert (argv[argv.index("-M") + 1], argv[argv.index("-R") + 1]) == (
        "32768MB", "rusage[mem=4096MB] span[hosts=1]")
    argv = per_task.submit_argv(request(resources=Resources(cores=8, memory_mb=1500)))
    assert argv[argv.index("-R") + 1] == "rusage[mem=188MB] span[hosts=1]"  # rounded up
    argv = per_task.submit_argv(request(resources=Resources(cores=1, memory_mb=1500)))
    assert argv[argv.index("-R") + 1] == "rusage[mem=1500MB]"
    # Per host (the default, and this cluster): the job's total, and LSF itself unchanged.
    per_host = LSF.for_cluster(LSF.parse_limits(recorded("bparams_a.txt")))
    assert per_host is LSF and LSF.reserve_per_task is False
    argv = per_host.submit_argv(request(resources=Resources(cores=8, memory_mb=32 * 1024)))
    assert argv[argv.index("-R") + 1] == "rusage[mem=32768MB] span[hosts=1]"


def test_control_commands():
    assert LSF.cancel_argv(["12", "13[2]"]) == ["bkill", "12", "13[2]"]
    assert LSF.signal_argv(["12"]) == ["bkill", "-s", "USR1", "12"]
    assert LSF.hold_argv(["12"]) == ["bstop", "12"]
    assert LSF.release_argv(["12"]) == ["bresume", "12"]


@pytest.mark.parametrize(("stderr", "usable"), [
    ("Job <4242>: No matching job found\n", True),  # cleaned after CLEAN_PERIOD
    ("Job <11>: Job has already finished\n", True),
    ("Job <4242>: No matching job found\nJob <11>: Job has already finished\n", True),
    ("Job <4242>: No matching job found\nJob <12>: Permission denied\n", False),
    ("", False),
])
def test_bkill_of_a_job_lsf_no_longer_knows_did_what_was_asked(stderr, usable):
    """(Review F3: read as a refusal, a driverless cancel of a run holding one
    cleaned job failed, and left unrecorded the kills it made.)"""
    assert LSF.cancel_answer_usable(255, stderr) is usable


def write_command(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize(("lsid", "answers", "why"), [
    (f"cat {RECORDED / 'lsid.txt'}", True,
     "lsid says IBM Spectrum LSF Standard 10.1.0.14, April 20 2023"),
    ("echo 'ls_getclustername(): LIM is down; try later' >&2; exit 255", False,
     "lsid failed: ls_getclustername(): LIM is down; try later"),
    ("echo 'OpenPBS 23.06'", False, "lsid does not name LSF: OpenPBS 23.06"),
    # No bjobs -json before 10.1.0.2: every job would be submitted, then never
    # followed (review F1: the status query failed and was asked again for ever).
    (f"cat {RECORDED / 'lsid_9.1.txt'}", False,
     "lsid says LSF 9.1.3.0, but corral needs LSF 10.1.0.2 or later (the first whose bjobs "
     "has -json)"),
    (f"cat {RECORDED / 'lsid_10.1.0.0.txt'}", False,
     "lsid says LSF 10.1.0.0, but corral needs LSF 10.1.0.2 or later (the first whose bjobs "
     "has -json)"),
    ("echo 'IBM Spectrum LSF Standard 10.1, May 25 2016'", False,
     "lsid says LSF 10.1, but corral needs LSF 10.1.0.2 or later (the first whose bjobs "
     "has -json)"),
    ("echo 'IBM Spectrum LSF Standard 10.1.0.2, Dec 1 2016'", True,
     "lsid says IBM Spectrum LSF Standard 10.1.0.2, Dec 1 2016"),
    ("echo 'IBM Spectrum LSF Standard, no version'", True,  # cannot tell: not refused
     "lsid says IBM Spectrum LSF Standard, no version"),
    ("sleep 30", False, "lsid did not answer within 0.5 s"),
])
def test_the_probe_says_what_lsid_answered(tmp_path, monkeypatch, lsid, answers, why):
    for name in ("bsub", "bjobs"):
        write_command(tmp_path, name, "exit 0")
    write_command(tmp_path, "lsid", f"exec {lsid}" if lsid.startswith("sleep") else lsid)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    probe = backend_info("lsf").answers(timeout=0.5)
    assert (probe.answers, probe.why) == (answers, why)


def test_the_probe_says_which_command_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", os.fspath(tmp_path))
    assert backend_info("lsf").answers().why == "bsub is not on PATH"


def test_every_job_option_and_own_option_is_described():
    info = backend_info("lsf")
    assert "unit_for_limits" in info.backend_options and "KB" in \
        info.backend_options["unit_for_limits"]
    assert info.option_help["memory"] == \
        "-R rusage[mem=<N>MB] (per core where LSF reserves per task) and -M <N>MB"


