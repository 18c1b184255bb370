"""``corral rerun``: ended jobs run again as new jobs, with what they had.

Through the real ``corral`` executable (tests/support/cli.py), a real daemon
and real shell jobs; one test drives the run from a real Scheduler instead.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path


import corral

import jobs
from support.cli import Corral, assert_one_line_error, block, kill_and_wait

#: A job that fails while the flag file exists, and says where it ran once it does not.
_FLAGGED = "test ! -e {flag} && echo ran in $(pwd) with FOO=$FOO"


def _failed_and_its_dependent(fresh: Corral, tmp_path: Path) -> tuple[str, str, Path]:
    """Job "prepare" fails (its flag exists) in *tmp_path*/data with FOO=bar,
    and job "train", after it, is cancelled: (their ids, the flag)."""
    flag, data = tmp_path / "flag", tmp_path / "data"
    flag.touch()
    data.mkdir()
    prepare = fresh.submit("--name", "prepare", "--workdir", os.fspath(data), "--",
                           _FLAGGED.format(flag=shlex.quote(os.fspath(flag))),
                           env={"FOO": "bar"})
    train = fresh.submit("--name", "train", "--after", "prepare", "--", "echo trained")
    assert fresh("wait").status == 1
    return prepare, train, flag


def test_a_failed_job_and_the_one_cancelled_after_it_run_again_in_order(fresh, tmp_path):
    prepare, train, flag = _failed_and_its_dependent(fresh, tmp_path)
    flag.unlink()
    rerun = fresh.ok("rerun", train, prepare)  # (given in any order: made parents first)
    new_train, new_prepare = rerun.out.split()  # (printed in the order given)
    assert rerun.err == ""
    assert fresh("wait", new_prepare, new_train).status == 0
    rows = fresh("status", "--all").rows()
    assert {job: (rows[job]["NAME"], rows[job]["STATUS"]) for job in rows} == {
        prepare: ("prepare", "FAILED"), train: ("train", "CANCELLED"),
        new_prepare: ("prepare", "COMPLETED"), new_train: ("train", "COMPLETED")}
    # The same directory and environment, though rerun from elsewhere, without FOO.
    assert fresh.ok("logs", new_prepare).out == f"ran in {tmp_path / 'data'} with FOO=bar\n"
    history = [(job, new) for job, _, _, new, _ in corral.Run(fresh.run).events()]
    assert history.index((new_train, "running")) > history.index((new_prepare, "completed"))


def test_a_rerun_by_a_later_daemon_runs_with_the_environment_the_job_had(fresh, tmp_path):
    """Re-attack review: the row keeps the environment as what differed from
    its daemon's; applied to a later daemon's, started from another shell,
    the submitter's variables were lost."""
    prepare, _, flag = _failed_and_its_dependent(fresh, tmp_path)
    flag.unlink()
    fresh.ok("stop")  # (the next daemon starts from this test's shell: no FOO)
    new = fresh.ok("rerun", prepare, env={"FOO": "other"}).out.strip()
    assert fresh("wait", new).status == 0
    assert fresh.ok("logs", new).out == f"ran in {tmp_path / 'data'} with FOO=bar\n"


def test_a_rerun_keeps_parents_first_where_a_takeover_reordered_the_journal(fresh, tmp_path):
    """Re-attack review: the journal's order, which a daemon's takeover
    changes, made a child's new job before its parent's, and it ran at once
    although the parent failed again."""
    release = tmp_path / "release"
    parent = fresh.submit("--name", "parent", "--", f"{block(release)}; exit 1")
    child = fresh.submit("--name", "child", "--after", parent, "--", "echo child")
    fresh.ok("cancel", child)
    fresh.wait_for_status(parent, "RUNNING")
    kill_and_wait(fresh.daemon_pid())
    release.touch()
    assert fresh("wait", parent).status == 1  # (a new daemon ran it again, after the child)
    new_parent, new_child = fresh.ok("rerun", parent, child).out.split()
    assert fresh("wait", new_parent, new_child).status == 1
    rows = fresh("status", "--all").rows()
    assert (rows[new_child]["STATUS"], rows[new_child]["DETAIL"]) == (
        "CANCELLED", f"rerun of job {child}; upstream job {new_parent} 'parent' failed")


def test_a_job_whose_upstream_failed_is_refused_alone_and_told_to_run_both(fresh, tmp_path):
    prepare, train, _ = _failed_and_its_dependent(fresh, tmp_path)
    assert_one_line_error(fresh("rerun", train), 2, rf"^corral: error: job {train} 'train' came "
                                                    rf"after job {prepare}, which did not "
                                                    rf"complete: run them again together "
                                                    rf"\(corral rerun {prepare} {train}\)$")
    assert len(fresh("status", "--all").rows()) == 2, "all or none: nothing was made"


def test_a_range_runs_again_those_in_it_that_went_wrong_and_says_which_it_left(fresh, tmp_path):
    prepare, _, flag = _failed_and_its_dependent(fresh, tmp_path)
    done = fresh.submit("--", "echo done")
    assert fresh("wait", done).status == 0
    flag.unlink()
    fresh.ok("pause")
    rerun = fresh.ok("rerun", f"{prepare}-{done}")
    assert len(rerun.out.split()) == 2
    assert rerun.err == (f"corral: note: left {done}: completed, or not ended\n"
                         "corral: note: the run is paused: the new jobs start once it is "
                         "resumed (corral resume)\n")
    statuses = {job: row["STATUS"] for job, row in fresh("status").rows().items()
                if job in rerun.out.split()}
    assert sorted(statuses.values()) == ["QUEUED", "WAITING"]  # (the second after the first)
    fresh.ok("resume")
    assert fresh("wait", *rerun.out.split()).status == 0
    nothing = fresh.ok("rerun", f"{done}-{done}")  # (on stderr: `wait $(rerun 3-7)` reads out)
    assert (nothing.out, nothing.err) == ("", f"corral: note: left {done}: completed, or not "
                                              "ended\ncorral: nothing to run again: every job in "
                                              "the range completed, has not ended, or was run "
                                              "again already\n")


def test_a_job_run_again_is_stood_for_by_its_rerun_in_ranges_names_status_and_wait(
        fresh, tmp_path):
    """Cold review: a range ran a failed job a second time, beside its rerun;
    after one rerun every command refused the job's name as ambiguous; nothing
    said which job reran which; and a whole-run wait failed for ever for
    failures fixed by reruns."""
    prepare, train, flag = _failed_and_its_dependent(fresh, tmp_path)
    first = fresh.ok("rerun", f"{prepare}-{train}").out.split()  # (they fail again)
    assert fresh("wait", *first).status == 1
    flag.unlink()
    again = fresh.ok("rerun", f"{prepare}-{first[1]}")
    assert again.err == (f"corral: note: left {prepare}, {train}: run again already (corral "
                         "status shows as which)\n")
    second = again.out.split()
    assert len(second) == 2 and fresh("wait").status == 0  # (the whole run: by its reruns)
    rows = fresh("status", "--all").rows()
    assert rows[prepare]["DETAIL"] == f"exit code 1; run again as job {first[0]}"
    assert rows[first[0]]["DETAIL"] == (f"rerun of job {prepare}; exit code 1; run again as job "
                                        f"{second[0]}")
    assert rows[second[0]]["DETAIL"] == f"rerun of job {first[0]}"
    assert fresh.ok("logs", "prepare").out.startswith("ran in ")  # (the name: its latest run)
    assert_one_line_error(fresh("rerun", prepare), 2, (
        rf"^corral: error: job {prepare} 'prepare' was run again already, as job {first[0]} "
        rf"\(the latest: job {second[0]}\); run that one again \(corral rerun {second[0]}\)$"))
    summary = fresh("wait").err
    assert summary == ("corral: 2 jobs ended: 2 completed (4 more ran again, counted by their "
                       "reruns)\n")


def test_the_hint_names_every_job_up_the_line_that_did_not_complete(fresh, tmp_path):
    flag = tmp_path / "flag"
    flag.touch()
    first = fresh.submit("--name", "one", "--", f"test ! -e {shlex.quote(os.fspath(flag))}")
    second = fresh.submit("--name", "two", "--after", first, "--", "true")
    third = fresh.submit("--name", "three", "--after", second, "--", "true")
    assert fresh("wait").status == 1
    assert_one_line_error(fresh("rerun", third), 2, (
        rf"^corral: error: job {third} 'three' came after job {second}, which did not complete: "
        rf"run them again together \(corral rerun {first} {second} {third}\)$"))


def test_a_job_whose_directory_is_gone_is_refused_and_none_is_made(fresh, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    kept = fresh.submit("--", "exit 1")
    lost = fresh.submit("--workdir", os.fspath(gone), "--", "exit 1")
    assert fresh("wait").status == 1
    gone.rmdir()
    assert_one_line_error(fresh("rerun", kept, lost), 2, (
        rf"^corral: error: job {lost} 'exit' cannot run again: cwd='{re.escape(str(gone))}' is "
        r"not an existing directory"))
    assert len(fresh("status", "--all").rows()) == 2, "all or none: nothing was made"


def test_a_job_run_in_a_directory_its_parent_makes_runs_again_with_it(fresh, tmp_path):
    """Second re-attack review: the check of all before any refused a child
    whose directory its parent makes, as a submit with --after takes it."""
    out = tmp_path / "out"
    maker = fresh.submit("--name", "mk", "--", f"mkdir -p {shlex.quote(os.fspath(out))}; exit 1")
    fresh.submit("--name", "use", "--after", "mk", "--workdir", os.fspath(out), "--",
                 "pwd")
    assert fresh("wait").status == 1
    out.rmdir()
    again = fresh.ok("rerun", "mk", "use", "use").out.split()  # (a new id a name given)
    assert again[1] == again[2] and len(set(again)) == 2
    assert fresh("wait", *again).status == 1  # (mk fails again, after making out)
    status = fresh("status")
    assert status.rows()[again[1]]["STATUS"] == "CANCELLED" and status.status == 1
    assert out.is_dir()
    fixed = fresh.ok("rerun", again[0], again[1]).out.split()
    assert fresh("wait", *fixed).status == 1  # (mk still exits 1: the person fixes nothing)
    assert fresh("status", maker).status == 1  # (asked for: it failed)


def test_what_cannot_run_again_is_refused_naming_the_job(fresh, tmp_path):
    release = tmp_path / "release"
    running = fresh.submit("--", f"while [ ! -e {shlex.quote(os.fspath(release))} ]; do "
                                 "sleep 0.02; done")
    fresh.wait_for_status(running, "RUNNING")
    assert_one_line_error(fresh("rerun", running), 2, rf"^corral: error: job {running} 'while' "
                                                      r"is RUNNING: only an ended job runs again$")
    release.touch()
    assert_one_line_error(fresh("rerun", "nosuch"), 2, r"^corral: error: no job nosuch in this "
                                                       r"run \(neither an id nor a job's name\)$")
    assert_one_line_error(fresh("rerun", "1-"), 2, r"^corral: error: no job 1- in this run .*; a "
                                                   r"range of ids needs both ends, as in 3-7$")


def test_a_python_call_is_refused_its_script_runs_it_again(tmp_path):
    """A script's run, driven by its Scheduler, takes a rerun of a command,
    not of a call: the journal does not hold a call's function and arguments."""
    run = tmp_path / "run"
    command = Corral(tmp_path / "home", run)
    with corral.Scheduler(journal=run, cores=1) as scheduler:
        call = scheduler.submit(jobs.square_unless_negative, -1)
        echo = scheduler.shell("echo again", name="echo")
        corral.wait([call, echo])
        assert_one_line_error(command("rerun", str(call.id)), 2, (
            rf"^corral: error: job {call.id} 'square_unless_negative' is a Python call, whose "
            r"function and arguments the journal does not hold: its script runs it again when "
            r"run again$"))
        again = command.ok("rerun", str(echo.id)).out.strip()
        assert re.fullmatch(r"\d+", again)
        assert command("wait", again).status == 0
        assert command.ok("logs", again).out == "again\n"
