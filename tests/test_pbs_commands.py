"""PBS's argv builders and parsers, on output recorded from real servers.

``recorded/pbs/openpbs_{running,history}.txt``: ``qstat -f -x -t workq`` of the
OpenPBS 23.06.06 that ``scripts/openpbs`` builds from the bundled source, while the
jobs ran and after they ended (jobs: 0 ok, 1 ``exit 3``, 2[] an array of 4, 3 past
its walltime (Exit_status -29), 4 qdel while running, 5 a failed parent and 6 its
afterok child (deleted by the server), 7 held then deleted, 8 "Can Never Run" then
deleted, 9[] an array deleted while one subjob ran and three were queued);
``openpbs_qmgr_print_server.txt``: ``qmgr -c "print server"`` of that server with a
second queue. ``recorded/pbs/torque_wrappers_qstat_f.txt``: ``qstat -f`` of
Slurm's Torque wrappers (slurm-wlm-torque 22.05.8) on a real Slurm: 1 done, 2
running, 3 held (the wrappers print it Q), 4-6 the tasks of an array of 3.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import corral
from corral.backends import backend_info
from corral.backends.batch.base import BatchBackend
from corral.backends.batch.pbs import probe_dialect
from corral.backends.batch.pbs.scheduler import (PbsProScheduler, TorqueScheduler,
                                                 parse_server, parse_status_text,
                                                 pbs_name, scheduler_for)
from corral.backends.batch.scheduler import NeverKind, SubmitRequest
from corral.spec import Placement, Resources
from corral.status import JobStatus

RECORDED = Path(__file__).with_name("recorded") / "pbs"
PRO, TORQUE = PbsProScheduler(), TorqueScheduler()


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def request(**changes) -> SubmitRequest:
    values = dict(script="/runs/pbs/1/job.sh", name="train model (+4)",
                  resources=Resources(cores=4, memory_mb=2048, walltime_s=3661.2, gpus=1),
                  placement=Placement(partition="long", account="proj7",
                                      extra_flags=("-m", "n")),
                  output="/dev/null", array_size=5, throttle=2,
                  dependencies=("12.pbshost", "13[2].pbshost"), time_limit_s=3661.2)
    values.update(changes)
    return SubmitRequest(**values)


# -- submitting ---------------------------------------------------------------------------------


def test_pbs_pro_qsub_asks_one_chunk_a_walltime_an_array_from_zero_and_afterok():
    assert PRO.submit_argv(request()) == [
        "qsub", "-N", "train_model+4", "-j", "oe", "-o", "/dev/null",
        "-l", "select=1:ncpus=4:mem=2048mb:ngpus=1", "-l", "walltime=01:01:02",
        "-J", "0-4%2", "-q", "long", "-A", "proj7",
        "-W", "depend=afterok:12.pbshost:13[2].pbshost", "-m", "n", "/runs/pbs/1/job.sh"]


def test_a_lone_pbs_job_is_no_array_and_is_never_rerun():
    argv = PRO.submit_argv(request(array_size=None, throttle=None, dependencies=(),
                                   resources=Resources(), time_limit_s=None,
                                   placement=Placement()))
    assert argv == ["qsub", "-N", "train_model+4", "-j", "oe", "-o", "/dev/null",
                    "-l", "select=1:ncpus=1", "-r", "n", "/runs/pbs/1/job.sh"]


def test_torque_qsub_asks_nodes_ppn_mem_walltime_in_one_list_and_t_arrays():
    assert TORQUE.submit_argv(request()) == [
        "qsub", "-N", "train_model+4", "-j", "oe", "-o", "/dev/null",
        "-l", "nodes=1:gpus=1:ppn=4,mem=2048mb,walltime=01:01:02", "-t", "0-4%2",
        "-q", "long", "-A", "proj7", "-W", "depend=afterok:12.pbshost:13[2].pbshost",
        "-m", "n", "/runs/pbs/1/job.sh"]


@pytest.mark.parametrize("changes, shown", [
    ({"placement": Placement(partition="short;touch x")}, "'short;touch x'"),
    ({"placement": Placement(account="lab$(touch x)")}, "'lab$(touch x)'"),
    ({"placement": Placement(extra_flags=("-v", "A=`id`"))}, "'A=`id`'"),
    ({"script": "/home/me/my runs/pbs/1/job.sh"}, "'/home/me/my runs/pbs/1/job.sh'"),
])
def test_torque_refuses_an_argument_its_wrappers_shell_would_read_as_more(changes, shown):
    """Attack review: Slurm's Torque wrapper (qsub.pl) runs its arguments through a
    shell: a partition "short;touch x" ran touch. PBS Pro's qsub takes them as they are."""
    argv = TORQUE.submit_argv(request(**changes))
    assert TORQUE.unsafe_argument(argv) == (
        f"Torque's qsub (Slurm's Torque wrapper passes its arguments through a shell) cannot "
        f"be given {shown}: letters, digits and _.,:=@%+/-[] only (for a path, a run directory "
        "without spaces or shell characters)")
    assert PRO.unsafe_argument(PRO.submit_argv(request(**changes))) is None
    assert TORQUE.unsafe_argument(TORQUE.submit_argv(request())) is None


@pytest.mark.parametrize("name, expected", [
    ("train", "train"), ("a b; rm -rf ~ $(x)", "a_b__rm_-rf_____x_"), ("3d", "j3d"),
    ("", "j"), ("x" * 300, "x" * 200), ("train (+4)", "train+4")])
def test_job_names_keep_only_what_qsub_and_a_shell_take(name, expected):
    assert pbs_name(name) == expected


@pytest.mark.parametrize("printed, job_id", [
    ("0.pbshost\n", "0.pbshost"), ("2[].pbshost\n", "2[].pbshost"), ("44\n", "44")])
def test_the_job_id_is_what_qsub_printed(printed, job_id):
    assert PRO.parse_submit(printed) == job_id


def test_qsub_output_without_a_job_id_is_an_error_that_quotes_it():
    with pytest.raises(ValueError, match="qsub printed no job id: 'qsub: illegal -N value'"):
        PRO.parse_submit("qsub: illegal -N value")


def test_an_array_task_of_pbs_is_named_with_its_index_in_the_brackets():
    assert PRO.array_task_id("13[].pbshost", 2) == "13[2].pbshost"
    assert "9[2].pbshost" in parse_status_text(recorded("openpbs_running.txt"))


# -- status from qstat -f -x -t QUEUE... (OpenPBS) ------------------------------------------------


def meanings(name: str) -> dict[str, tuple[JobStatus, str] | None]:
    return {native: PRO.meaning(row)
            for native, row in parse_status_text(recorded(name)).items()}


def test_finished_pbs_jobs_end_as_their_exit_status_walltime_or_qdel_says():
    found = meanings("openpbs_history.txt")
    assert found["0.pbshost"] == (JobStatus.COMPLETED, "")
    assert found["1.pbshost"] == (JobStatus.FAILED, "exit code 3 (PBS)")
    assert found["3.pbshost"] == (JobStatus.TIMED_OUT,
                                  "ran past its walltime (PBS Exit_status -29)")
    # qdel of a running job: Exit_status 0, "... and terminated" (substate 91).
    assert found["4.pbshost"] == (JobStatus.CANCELLED, "deleted with qdel (PBS)")
    # Held, then deleted: no Exit_status, no comment, substate 91.
    assert found["7.pbshost"] == (JobStatus.CANCELLED, "deleted with qdel (PBS)")
    # The subjobs of a deleted array, running or queued: Exit_status 0, substate 91.
    assert {found[f"9[{i}].pbshost"] for i in range(4)} == {
        (JobStatus.CANCELLED, "deleted with qdel (PBS)")}
    assert {found[f"2[{i}].pbshost"] for i in range(4)} == {(JobStatus.COMPLETED, "")}


def test_a_wrapped_value_is_joined_and_never_read_as_an_attribute():
    rows = parse_status_text(recorded("openpbs_history.txt"))
    assert rows["3.pbshost"].reason.endswith("and exceeded resource walltime")
    # A variable's value wrapped onto a tab-indented line that looks like an attribute.
    text = recorded("openpbs_running.txt").replace(
        "PBS_O_SHELL=/bin/bash,", "PBS_O_SHELL=/bin/bash,\n\tjob_state = F,", 1)
    assert parse_status_text(text)["0.pbshost"].state == "F"
    running = parse_status_text(recorded("openpbs_running.txt"))
    tricked = parse_status_text(text.replace("\n    job_state = F", "\n    job_state = R", 1))
    assert tricked["0.pbshost"].state == "R" == running["3.pbshost"].state


def test_the_afterok_child_pbs_deleted_for_its_failed_parent_ends_cancelled_saying_so():
    found = meanings("openpbs_history.txt")
    assert found["5.pbshost"] == (JobStatus.FAILED, "exit code 1 (PBS)")
    assert found["6.pbshost"] == (JobStatus.CANCELLED, "a job it depends on failed "
                                                       "(PBS deleted it)")


def test_running_queued_held_and_array_rows():
    rows = parse_status_text(recorded("openpbs_running.txt"))
    assert PRO.meaning(rows["3.pbshost"]) == (JobStatus.RUNNING, "")
    assert PRO.is_held(rows["7.pbshost"]) and PRO.is_pending(rows["7.pbshost"])
    assert PRO.is_held(rows["6.pbshost"])  # held by its dependency
    assert not PRO.is_pending(rows["3.pbshost"])
    assert [PRO.meaning(rows[f"9[{i}].pbshost"])[0] for i in range(4)] == [
        JobStatus.RUNNING, JobStatus.SUBMITTED, JobStatus.SUBMITTED, JobStatus.SUBMITTED]


def test_the_status_query_names_the_runs_jobs_an_array_by_its_parent():
    argv = PRO.status_argv_for("ann", ["7.pbshost", "9[2].pbshost", "9[0].pbshost"])
    assert argv == ["qstat", "-f", "-x", "-t", "7.pbshost", "9[].pbshost"]
    assert TORQUE.status_argv_for("ann", ["7"]) == ["qstat", "-f"]


def test_a_job_the_server_forgot_leaves_the_others_answer_usable():
    assert PRO.status_answer_usable(153, "qstat: Unknown Job Id 99.pbshost\n")
    assert not PRO.status_answer_usable(2, "qstat: cannot connect to server pbshost\n")


def test_a_child_is_chained_in_pbs_only_to_a_whole_job():
    """PBS refuses afterok on a subjob ("illegal -W value"): its child waits in corral."""
    assert PRO.chains_on("7.pbshost") and not PRO.chains_on("9[2].pbshost")


def test_the_servers_limits_come_from_qmgr():
    server = parse_server(recorded("openpbs_qmgr_print_server.txt"))
    assert server["job_history_duration"] == "24:00:00"
    limits = PRO.parse_limits(recorded("openpbs_qmgr_print_server.txt"))
    assert (limits.max_array_tasks, limits.forget_after_s) == (10000, 86400.0)


def test_a_request_no_node_can_hold_never_starts():
    rows = parse_status_text(recorded("openpbs_running.txt"))
    never = PRO.never_starts(rows["8.pbshost"])
    assert never is not None and never.kind is NeverKind.IMPOSSIBLE
    assert never.words == "Insufficient amount of resource: ncpus (R: 64 A: 4 T: 4)"
    assert PRO.never_starts(rows["9[1].pbshost"]) is None  # queued behind others: may run


def test_an_unknown_pbs_state_has_no_meaning_for_the_base_to_log():
    # M (moved to another server) is not in corral's table: the base logs it and polls on.
    text = recorded("openpbs_running.txt").replace("job_state = R", "job_state = M", 1)
    moved = [row for row in parse_status_text(text).values() if row.state == "M"]
    assert len(moved) == 1 and PRO.meaning(moved[0]) is None


@pytest.mark.parametrize("printed", ["qstat: cannot connect to server pbshost (errno=15010)",
                                     "[1, 2]"])
def test_qstat_output_that_is_no_job_is_an_error_that_quotes_it(printed):
    with pytest.raises(ValueError, match="qstat printed no job corral can read"):
        parse_status_text(printed)


def test_no_jobs_is_an_empty_answer():
    assert parse_status_text("") == {}


# -- status from Torque's qstat -f (Slurm's wrappers) ----------------------------------------


def test_torque_rows_from_the_wrappers_text():
    rows = parse_status_text(recorded("torque_wrappers_qstat_f.txt"))
    assert sorted(rows) == ["1", "2", "3", "4", "5", "6"]
    assert TORQUE.meaning(rows["2"]) == (JobStatus.RUNNING, "")
    assert TORQUE.meaning(rows["3"]) == (JobStatus.SUBMITTED, "")
    assert TORQUE.is_held(rows["3"])  # the wrappers print a held job as Q
    # C with no exit status: the result file decides (none: "ended without running it").
    assert TORQUE.meaning(rows["1"]) == (JobStatus.COMPLETED, "")


def test_torque_lists_array_tasks_with_t_and_the_wrappers_without_it():
    """Review: with arrays on (a real Torque, max_array_size set) the query
    without -t listed only an array's summary, never its tasks, so a running
    task was taken as forgotten after 300 s and deleted."""
    assert TORQUE.status_argv_for("me", ["7", "8"]) == ["qstat", "-f"]  # (wrappers: no -t)
    assert TORQUE.status_argv_for("me", ["7", "12[0].srv", "12[1].srv"]) == [
        "qstat", "-f", "-t"]


def test_a_torque_exit_status_is_read_when_the_server_prints_one():
    text = recorded("torque_wrappers_qstat_f.txt").replace(
        "\tjob_state = C\n", "\tjob_state = C\n\texit_status = 271\n", 1)
    row = parse_status_text(text)["1"]
    assert TORQUE.meaning(row) == (JobStatus.CANCELLED, "deleted with qdel (PBS)")


def test_the_wrappers_unknown_state_u_has_no_meaning():
    text = recorded("torque_wrappers_qstat_f.txt").replace("job_state = R", "job_state = U", 1)
    assert TORQUE.meaning(parse_status_text(text)["2"]) is None


def test_torque_output_without_a_job_is_an_error_that_quotes_it():
    with pytest.raises(ValueError, match="qstat printed no job corral can read: 'Usage"):
        parse_status_text("Usage:\n    qstat [-f] [-a|-i|-r]")
    assert parse_status_text("") == {}


# -- the dialect option and the probe ----------------------------------------------------------


def test_the_dialect_option_picks_the_scheduler():
    assert type(BatchBackend(scheduler=PRO, options={"dialect": "torque"}).scheduler) \
        is TorqueScheduler
    assert type(BatchBackend(scheduler=TORQUE, options={"dialect": "pro"}).scheduler) \
        is PbsProScheduler
    assert TorqueScheduler().settings == {"dialect": "torque"}


def test_a_bad_dialect_is_refused_naming_what_is_accepted(tmp_path):
    with pytest.raises(ValueError, match=r"dialect='slurm' is not a PBS dialect "
                                         r"\(one of: 'auto', 'pro', 'torque'\)"):
        corral.Scheduler(backend="pbs", workdir=tmp_path, backend_options={"dialect": "slurm"})


def test_a_misspelt_option_gets_a_did_you_mean(tmp_path):
    with pytest.raises(ValueError, match="unknown PBS backend option 'dialekt'; did you mean "
                                         "'dialect'"):
        corral.Scheduler(backend="pbs", workdir=tmp_path, backend_options={"dialekt": "pro"})


def test_auto_without_any_qstat_says_why_and_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert probe_dialect().why == "qstat is not on PATH"
    assert backend_info("pbs").answers().why == "qsub is not on PATH"
    with pytest.raises(ValueError, match=r"PBS dialect 'auto' found none here: qstat is not "
                                         r"on PATH \(set backend_options dialect='pro' or "
                                         r"'torque'\)"):
        scheduler_for("auto")


@pytest.mark.skipif(not Path("/usr/bin/qstat").exists(), reason="no Grid Engine qstat here")
def test_grid_engines_qstat_is_never_taken_for_pbs(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    if "SGE" not in backend_info("pbs").answers().why + probe_dialect().why:
        pytest.skip("/usr/bin/qstat is not Grid Engine's here")
    found = backend_info("pbs").answers()
    assert not found.answers and found.why.startswith("qstat is Grid Engine's (qstat -help says")


def test_every_option_has_its_pbs_form_and_the_dialect_is_listed():
    info = backend_info("pbs")
    assert info.option_help["cores"].startswith("-l select=1:ncpus=N")
    assert "dialect" in info.backend_options and "'auto'" in info.backend_options["dialect"]


def test_a_qstat_that_hangs_is_given_up_at_once_naming_the_question(tmp_path, monkeypatch):
    for name, body in (("qsub", "exit 0"), ("qstat", "exec /bin/sleep 300")):
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = probe_dialect(timeout=0.5)
    assert found.dialect is None
    assert found.why == "qstat --version did not answer within 0.5 s"
