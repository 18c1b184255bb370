"""What a new user meets first: the ``corral`` command's answers to typos, no
arguments, a narrow terminal, names, an empty stdin, queued jobs, long lists,
times and tracebacks (issue 9, item 6).

Every command runs through the real ``corral`` executable (tests/support/cli.py);
jobs run in real daemons and real worker processes.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

import corral
from corral.backends import backend_info, backend_names
from corral.options import JOB_OPTIONS
from corral.core.packing import Packer
from corral.spec import Shell
from corral.status import JobStatus
from corral.units import format_span, parse_duration

import jobs
from support.cli import CORRAL, Corral, assert_one_line_error, block
from support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


# -- a typo in --run ----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["resume"], ["clear"], ["cancel", "1"], ["abort"], ["stop"]],
                         ids=lambda args: args[0])
def test_a_control_verb_on_a_run_that_does_not_exist_exits_3_and_creates_nothing(tmp_path, args):
    typo = tmp_path / "runs" / "nightyl"
    command = Corral(tmp_path, tmp_path / "unused")
    outcome = command("--run", os.fspath(typo), *args)
    assert_one_line_error(outcome, 3, rf"^corral: error: no corral run at {re.escape(str(typo))} ")
    assert not typo.exists(), "only submit and pause may create a run"
    assert command.daemon_pid() is None


def test_pause_before_the_first_submit_readies_a_run_whose_jobs_wait_for_resume(fresh):
    """Cold review: a person who wanted to line jobs up and start them together
    could not pause a run before its first job ("no corral run"), and the first
    submit started at once. The answer says the run is new, and where, so a
    mistyped --run is seen at once."""
    paused = fresh("pause")
    assert (paused.status, paused.out, paused.err) == (
        0, f"paused a new, empty run at {fresh.run}: the jobs submitted to it wait until "
           "corral resume\n", ""), str(paused)
    assert fresh.ok("status").header == (f"run {fresh.run}: driven by daemon pid "
                                         f"{fresh.daemon_pid()}, PAUSED")
    fresh.ok("stop")  # (the pause is the run's: a daemon started later holds the jobs too)
    jobs = [fresh.submit("--", "echo", str(n)) for n in range(2)]
    details = {job: row["DETAIL"] for job, row in fresh.ok("status").rows().items()}
    assert details == dict.fromkeys(jobs, "paused: starts after corral resume")
    assert fresh.ok("resume").out == "resumed\n"
    assert fresh("wait").status == 0
    assert [fresh.ok("logs", job).out for job in jobs] == ["0\n", "1\n"]


def test_a_pause_told_to_one_terminal_is_not_undone_by_another_commands_failure(fresh):
    """Attack review: a first submit refused (or cut short) on a new run undid
    the run, though a pause from another terminal had been served in it and
    said "paused": the next submit ran at once. The undo that command runs,
    run here by hand: the run, its daemon and its pause stay."""
    from corral.cli.new_run import NewRun, undo_new_run

    fresh.ok("pause")
    assert undo_new_run(NewRun(fresh.run, None, None)) is False
    assert fresh.ok("status").header == (f"run {fresh.run}: driven by daemon pid "
                                         f"{fresh.daemon_pid()}, PAUSED")


def test_pause_refuses_to_make_a_run_in_a_directory_of_other_files(tmp_path):
    busy = tmp_path / "notes"
    busy.mkdir()
    (busy / "todo.txt").write_text("keep me")
    command = Corral(tmp_path / "home", busy)
    assert_one_line_error(command("pause"), 2, rf"^corral: error: {re.escape(str(busy))} is not "
                                               r"a corral run but holds other files; give --run "
                                               r"a new or empty directory")
    assert [path.name for path in busy.iterdir()] == ["todo.txt"]
    assert command.daemon_pid() is None


def test_a_paused_run_is_said_to_be_by_wait_and_logs_and_its_stop_counts_what_it_cancels(
        fresh):
    """Cold review: `corral wait` on a paused run waited in silence (for ever,
    in a cron job), `logs --follow` said only "waiting for it", and `corral
    stop` said "stopping" while it cancelled the jobs lined up."""
    fresh.ok("pause")
    first = fresh.submit("--", "echo one")
    fresh.submit("--", "echo two")
    waited = fresh("wait", "--timeout", "0.2")
    assert waited.status == 124
    assert waited.err.splitlines()[0] == ("corral: note: the run is paused: the jobs that have "
                                          "not started wait for corral resume"), str(waited)
    following = fresh.popen("logs", "--follow", first)
    try:
        said = following.stderr.readline().decode()
    finally:
        following.kill()
        following.communicate()
    assert said == (f"corral: job {first} 'echo' has not started (QUEUED): waiting for it; the "
                    "run is paused: it starts after corral resume\n")
    assert fresh.ok("stop").out == "stopping: cancelling its 2 unfinished job(s)\n"


def test_a_run_inside_another_runs_directory_is_refused(fresh, tmp_path):
    """Cold review: a run made in ``nest/2`` shared its directory with the job 2
    of the run ``nest``, and ``corral clean 2`` deleted it."""
    assert fresh("wait", fresh.submit("true")).status == 0
    for inner in (fresh.run / "2", fresh.run / "deeper" / "run"):
        for args in (["pause"], ["submit", "true"]):
            refused = fresh("--run", os.fspath(inner), *args)
            assert_one_line_error(refused, 2, rf"^corral: error: run directory "
                                              rf"'{re.escape(str(inner))}' is inside the run at "
                                              rf"'{re.escape(str(fresh.run))}', whose jobs' "
                                              r"directories are named by their ids: give a "
                                              r"directory outside it$")
            assert not inner.exists()
    with pytest.raises(ValueError, match=r"is inside the run at .*: give a directory outside it$"):
        corral.Scheduler(journal=fresh.run / "from-a-script")


def test_clean_leaves_a_job_directory_that_holds_a_run_of_its_own(fresh):
    """A run made inside another by an earlier version is no job's file."""
    job = fresh.submit("--", "echo two")
    assert fresh("wait", job).status == 0
    inner = fresh.run / job / "inner"
    inner.mkdir()
    (inner / "journal.db").write_bytes((fresh.run / "journal.db").read_bytes())
    cleaned = fresh.ok("clean", "--yes", job)
    assert cleaned.out == "nothing to clean\n"
    assert cleaned.err == (f"corral: note: left the files of job {job} ({fresh.run / job}): its "
                           "directory holds a run of its own (a journal.db), which is no job's "
                           "file to delete\n")
    assert (inner / "journal.db").exists()


def test_a_script_may_not_take_up_a_paused_run_of_the_corral_command(fresh):
    """Cold review: a script opened a run a person had paused for the jobs
    they lined up, ran at once and dropped the pause."""
    fresh.ok("pause")
    fresh.stop_daemon()  # (gone, not stopping: else the run is in use)
    run = re.escape(str(fresh.run))
    with pytest.raises(corral.JournalError, match=(
            rf"^the run at {run} is paused \(corral pause\): the jobs submitted to it wait for "
            r"corral resume, but a script would start its own at once: resume it first "
            rf"\(corral --run {run} resume\), or give the script a journal directory of its "
            r"own$")):
        corral.Scheduler(journal=fresh.run)
    assert fresh.ok("status").header == f"run {fresh.run}: no driver running, PAUSED"
    assert fresh.ok("resume").out == "resumed\n"
    fresh.stop_daemon()
    with corral.Scheduler(journal=fresh.run) as scheduler:  # (resumed, it may)
        assert scheduler.submit(jobs.square, 3).result(timeout=30) == 9


def test_run_may_follow_the_command_as_well_as_precede_it(tmp_path):
    """`corral status --run DIR` was "No such option '--run'", where `corral
    report --run DIR` worked (cold review)."""
    run = os.fspath(tmp_path / "elsewhere")
    command = Corral(tmp_path, tmp_path / "unused")
    try:
        assert command("submit", "--run", run, "--", "echo hi").out == "1\n"
        assert command("wait", "--run", run).status == 0
        assert "echo hi" in command("status", "--run", run).out
        # A command's own --run wins over the group's.
        assert command("--run", os.fspath(tmp_path / "other"), "logs", "1", "--run",
                       run).out == "hi\n"
    finally:
        command("stop", "--run", run)
    assert not (tmp_path / "unused").exists() and not (tmp_path / "other").exists()


def test_a_run_that_is_a_file_is_named_as_given_and_a_commands_own_run_wins(tmp_path):
    """A bad $CORRAL_RUN stopped `corral status --run GOOD`, and was called
    "--run" (attack review 2)."""
    afile = tmp_path / "afile"
    afile.write_text("")
    command = Corral(tmp_path, tmp_path / "unused", env={"CORRAL_RUN": os.fspath(afile)})
    assert_one_line_error(command("status"), 2, rf"^corral: error: \$CORRAL_RUN "
                                                rf"{re.escape(str(afile))}: not a directory")
    assert_one_line_error(command("--run", os.fspath(afile), "status"), 2,
                          rf"^corral: error: --run {re.escape(str(afile))}: not a directory")
    shown = command("status", "--run", os.fspath(tmp_path / "none"))
    assert "not a directory" not in shown.err and shown.status == 3  # (no run there)
    assert command("options").status == 0  # a command that needs no run


def test_a_run_that_is_a_loop_of_links_is_one_line_not_a_traceback(tmp_path):
    """Attack review: a traceback ending in RuntimeError: Symlink loop."""
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    loop = re.escape(str(tmp_path / "loop1"))
    command = Corral(tmp_path, tmp_path / "unused", env={"CORRAL_RUN": str(tmp_path / "loop1")})
    assert_one_line_error(command("submit", "--", "true"), 2, rf"^corral: error: \$CORRAL_RUN "
                          rf"{loop}: a loop of symbolic links, which names no directory$")
    assert_one_line_error(command("status", "--run", str(tmp_path / "loop1")), 2,
                          rf"^corral: error: --run {loop}: a loop of symbolic links")
    assert command("options").status == 0  # a command that needs no run


@pytest.mark.parametrize("args", [["--run", "", "status"], ["status", "--run", ""]])
def test_an_empty_run_is_refused_not_taken_for_the_current_directory(tmp_path, args):
    command = Corral(tmp_path, tmp_path / "unused")
    assert_one_line_error(command(*args), 2, r"^corral: error: Invalid value for '--run': '' "
                                             r"names no directory; give the run directory's path")


# -- no arguments -------------------------------------------------------------------------------


def test_corral_without_arguments_prints_its_help_on_several_lines_and_exits_0(tmp_path):
    outcome = Corral(tmp_path, tmp_path / "run")()
    assert outcome.status == 0, str(outcome)
    assert outcome.err == ""
    lines = outcome.out.splitlines()
    assert lines[0] == "Usage: corral [OPTIONS] COMMAND [ARGS]..."
    assert "Commands:" in lines
    listed = {line.split()[0] for line in lines[lines.index("Commands:") + 1:] if line.strip()}
    assert {"submit", "status", "logs", "wait", "options", "clean"} <= listed


def test_python_dash_m_corral_is_the_corral_command(tmp_path):
    """Without the console script on PATH, `python -m corral` is the way in (cold review:
    it said "corral is a package and cannot be directly executed")."""
    shown = subprocess.run([sys.executable, "-m", "corral", "--help"], capture_output=True,
                           text=True, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == "Usage: corral [OPTIONS] COMMAND [ARGS]..."


# -- corral options at 80 columns ------------------------------------------------------------------


def test_options_at_80_columns_never_breaks_a_word_of_the_registry(tmp_path):
    shown = Corral(tmp_path, tmp_path / "run", env={"COLUMNS": "80"}).ok("options").out
    assert max(len(line.rstrip()) for line in shown.splitlines()) <= 80
    padded = [line for line in shown.splitlines() if line.endswith(" ")]
    assert not padded, f"lines end in the spaces that pad a table's column: {padded[:3]}"
    words = set(shown.split())
    for name, option in JOB_OPTIONS.items():
        texts = [name, option.flag if option.cli else "", option.accepts, option.units or "",
                 option.help, *(backend_info(backend).option_help[name]
                                for backend in backend_names())]
        for text in texts:
            for word in text.split():
                assert word in words, f"{word!r} of option {name!r} is broken across lines"
    assert "'1:30:00'," in words and "--cpus-per-task=N" in words


# -- --after NAME ----------------------------------------------------------------------------------


def test_submit_after_accepts_a_job_name_and_refuses_an_ambiguous_or_unknown_one(fresh, tmp_path):
    release = tmp_path / "release"
    report = fresh.submit("--name", "report", f"{block(release)}; echo report > report.txt")
    child = fresh.submit("--after", "report", "cat report.txt")
    fresh.wait_for_status(child, "WAITING")
    release.touch()
    assert fresh("wait", child).status == 0
    assert fresh.ok("logs", child).out == "report\n"

    again = fresh.submit("--name", "report", "true")
    ambiguous = fresh("submit", "--after", "report", "true")
    assert_one_line_error(ambiguous, 2, rf"the name 'report' is ambiguous: jobs {report}, "
                                        rf"{again} have it; give an id instead$")
    unknown = fresh("submit", "--after", "reprot", "true")
    assert_one_line_error(unknown, 2, r"no job reprot in this run \(neither an id nor a job's "
                                      r"name\)$")


# -- clean without a terminal, logs after clean ----------------------------------------------------


def test_clean_of_some_jobs_keeps_the_others_files_and_leaves_unfinished_ones(fresh, tmp_path):
    """Cold review (a PLAMS port): keeping the failed jobs' files and cleaning the
    rest needed Python; corral clean took no ids."""
    kept = fresh.submit("--name", "broken", "--", "echo why; exit 3")
    cleaned = [fresh.submit("--name", f"ok{n}", "--", f"echo {n}") for n in range(2)]
    release = tmp_path / "release"
    running = fresh.submit("--", f"echo running; while [ ! -e {release} ]; do sleep 0.05; done")
    assert fresh("wait", kept, *cleaned).status == 1
    done = fresh("clean", "--yes", f"{cleaned[0]}-{cleaned[1]}", running)
    assert done.status == 0, str(done)
    assert done.out == "deleted the files of 2 job(s), 0.0 MB\n"
    assert done.err == f"corral: note: left job(s) {running}: not finished\n"
    assert fresh.ok("logs", kept).out == "why\n"  # not named: kept
    assert not any((fresh.run / job).exists() for job in cleaned)
    assert_one_line_error(fresh("clean", "--yes", "nosuch"), 2, r"no job nosuch in the run")
    release.touch()
    assert fresh("wait", running).status == 0
    silent = fresh.submit("--", "true")  # wrote nothing: no files to delete
    assert fresh("wait", silent).status == 0
    # (cold review: "2 job(s)" of 5 finished read as three forgotten; two were cleaned above)
    assert fresh.ok("clean", "--yes").out == ("deleted the files of 2 job(s), 0.0 MB (the other "
                                             "3 finished have none)\n")


def test_clean_without_a_terminal_says_to_pass_yes_and_logs_after_clean_says_why_it_is_empty(fresh):
    talker = fresh.submit("echo something to keep")
    silent = fresh.submit("true")
    assert fresh("wait", talker, silent).status == 0

    refused = fresh("clean")  # stdin is an empty pipe: nobody to answer the question
    assert refused.status == 2, str(refused)
    assert "Traceback" not in refused.err and refused.out == ""
    assert refused.err.splitlines()[-1] == (
        "corral: error: refusing to delete without confirmation: no answer came (its input "
        "ended; it reads 'y' from a pipe too); pass --yes")
    assert (fresh.run / talker).is_dir()
    closed = subprocess.run(["sh", "-c", f'exec "{CORRAL}" clean <&-'], env=fresh.env,
                            cwd=fresh.cwd, capture_output=True, text=True, timeout=60)
    assert (closed.returncode, closed.stderr.splitlines()[-1:]) == (
        2, refused.err.splitlines()[-1:]), "no input at all (attack review: a traceback)"
    assert (fresh.run / talker).is_dir()

    assert fresh.ok("clean", "--yes").out.startswith("deleted the files of 1 job(s)")
    assert_one_line_error(fresh("logs", talker), 3,
                          rf"^corral: error: job {talker}'s output files were removed "
                          r"\(corral clean\)$")
    assert fresh.ok("logs", silent).out == ""  # it never wrote anything: nothing was removed


# -- why a QUEUED job waits ------------------------------------------------------------------------


def test_status_says_what_a_queued_job_waits_for_cores_a_queue_or_a_pause(fresh, tmp_path):
    fresh.config.write_text('[daemon]\ncores = 1\nqueues = { solo = 1 }\n')
    release = tmp_path / "release"
    running = fresh.submit("--queue", "solo", block(release))
    fresh.wait_for_status(running, "RUNNING")
    behind_cores = fresh.submit("true")
    wait_until(lambda: fresh("status", behind_cores).rows()[behind_cores]["DETAIL"]
               == "waiting for 1 free core", message="the reason to be recorded")
    fresh.ok("pause")
    assert (fresh("status", behind_cores).rows()[behind_cores]["DETAIL"]
            == "paused: starts after corral resume")
    waited = fresh("wait", "--timeout", "0.2", behind_cores)
    note, _, rest = waited.err.partition("\n")  # (said first: a wait without --timeout too)
    assert note == ("corral: note: the run is paused: the jobs that have not started wait for "
                    "corral resume"), str(waited)
    assert_one_line_error(replace(waited, err=rest), 124,  # (cold review)
                          r"^corral: 1 job still unfinished after 0\.2s \(corral status "
                          r"lists them\); the run is paused: corral resume lets it go on$")
    assert_one_line_error(fresh("wait", "--timeout", "0.2", running), 124,  # (a pause holds
                          r"^corral: 1 job still unfinished after 0\.2s \(corral status "
                          r"lists them\)$")                           # no running job back)
    fresh.ok("resume")
    release.touch()
    assert fresh("wait", running, behind_cores).status == 0
    assert fresh("status", behind_cores).rows()[behind_cores]["DETAIL"] == ""


@pytest.mark.parametrize(("scheduler_options", "job_options", "reason"), [
    ({"cores": 2, "memory": "1G"}, {"memory": "768M"}, "waiting for 768M of free memory"),
    ({"cores": 2, "tokens": 1}, {"tokens": 1}, "waiting for 1 free token"),
    ({"cores": 2, "max_jobs": 1}, {}, "waiting for a job slot (max_jobs=1)"),
    ({"cores": 2, "queues": {"io": 1}}, {"queue": "io"}, "queue 'io' is full (1 running)"),
    ({"cores": 2, "gpus": 1}, {"gpus": 1}, "waiting for 1 free GPU"),
], ids=["memory", "tokens", "max_jobs", "queue", "gpus"])
def test_job_reason_says_what_a_queued_job_waits_for(tmp_path, scheduler_options, job_options,
                                                      reason):
    release = tmp_path / "release"
    with corral.Scheduler(workdir=tmp_path / "run", **scheduler_options) as scheduler:
        first = scheduler.shell(block(release), **job_options)
        wait_until(lambda: first.status is corral.JobStatus.RUNNING, message="the first to run")
        second = scheduler.shell("true", **job_options)
        wait_until(lambda: second.reason == reason, message=f"{reason!r} (got {second.reason!r})")
        assert second.status is corral.JobStatus.QUEUED
        release.touch()
        second.result(timeout=30)
    assert second.reason is None  # it ran: its waiting is over


def test_a_job_waiting_through_many_passes_is_told_why_once():
    """The journal hears of a reason when it changes, not on every loop pass."""
    from corral.backends.base import Capacity

    told: list[tuple[object, str]] = []
    packer = Packer(Capacity(cores=2, memory_mb=None, gpus=None), None, {}, 0)
    packer.on_waiting = lambda job, reason: (told.append((job.id, reason)),
                                             setattr(job, "reason", reason))
    big = corral.Job(Shell("true"), cores=2, id="big")._record  # the packer works on records
    small = corral.Job(Shell("true"), cores=1, id="small")._record
    for job in (small, big):
        job.move(corral.JobStatus.QUEUED)
        packer.push(job)
    assert packer.select(0.0) == [small]  # big no longer fits
    for _ in range(1000):
        assert packer.select(1.0) == []
    assert told == [("big", "waiting for 2 free cores")]


def test_every_queued_job_says_why_it_waits_not_only_the_first_in_line(fresh, tmp_path):
    """Cold review: with one core busy, only the first of the queued jobs said
    "waiting for 1 free core"; those behind it showed nothing, as if nothing
    held them back (a pass stops at the first job that finds no core)."""
    fresh.config.write_text('[daemon]\ncores = 1\n')
    release = tmp_path / "release"
    running = fresh.submit(block(release))
    fresh.wait_for_status(running, "RUNNING")
    behind = [fresh.submit("true") for _ in range(3)]
    wanted = dict.fromkeys(behind, "waiting for 1 free core")
    wait_until(lambda: {job: row["DETAIL"] for job, row in fresh("status").rows().items()
                        if job in wanted} == wanted, message="every queued job's reason")
    release.touch()
    assert fresh("wait", running, *behind).status == 0


def test_a_newcomer_is_told_why_it_waits_once_after_the_pass():
    """The packer tells each job queued since its last pass that still waits
    why, once: O(1) a job, whatever the number of passes."""
    from corral.backends.base import Capacity

    told: list[tuple[object, str]] = []
    packer = Packer(Capacity(cores=1, memory_mb=None, gpus=None), None, {"io": 1}, 0)
    packer.on_waiting = lambda job, reason: (told.append((job.id, reason)),
                                             setattr(job, "reason", reason))
    records = [corral.Job(Shell("true"), id=f"job{number}", queue="io" if number in (0, 3)
                          else None)._record for number in range(4)]
    for job in records:
        job.move(corral.JobStatus.QUEUED)
        packer.push(job)
    assert packer.select(0.0) == [records[0]]
    records[0].move(corral.JobStatus.SUBMITTED)  # as the engine moves what starts
    packer.tell_newcomers()
    for _ in range(1000):
        assert packer.select(1.0) == []
        packer.tell_newcomers()
    assert sorted(told) == [("job1", "waiting for 1 free core"),
                            ("job2", "waiting for 1 free core"),
                            ("job3", "queue 'io' is full (1 running)")]


# -- status hides older finished jobs, and says so ------------------------------------------------


SCRIPT = """
import sys, corral
with corral.Scheduler(journal=sys.argv[1], cores=1) as scheduler:
    for number in range(13):
        scheduler.shell("true", name=f"job{number}")
"""


def test_status_says_how_many_older_finished_jobs_it_hides(tmp_path):
    command = Corral(tmp_path, tmp_path / "run")
    subprocess.run([sys.executable, "-c", SCRIPT, os.fspath(command.run)], env=command.env,
                   cwd=tmp_path, check=True, capture_output=True, timeout=60)
    default = command.ok("status")
    assert len(default.rows()) == 10
    assert default.out.splitlines()[1] == "(3 older finished jobs hidden; --all shows them)"
    everything = command.ok("status", "--all")
    assert len(everything.rows()) == 13 and "hidden" not in everything.out


FAILURES_AMONG_OLD_JOBS = """
import sys, corral
with corral.Scheduler(journal=sys.argv[1], cores=1) as scheduler:
    scheduler.shell("exit 3", name="broken")
    for number in range(12):
        scheduler.shell("true", name=f"job{number}")
"""


def test_status_lists_the_first_failures_and_counts_those_it_hides(tmp_path):
    command = Corral(tmp_path, tmp_path / "run")
    subprocess.run([sys.executable, "-c", FAILURES_AMONG_OLD_JOBS, os.fspath(command.run)],
                   env=command.env, cwd=tmp_path, capture_output=True, timeout=60)
    default = command("status")
    assert default.out.splitlines()[1] == "(2 older finished jobs hidden; --all shows them)"
    assert default.rows()["1"]["STATUS"] == "FAILED"  # listed, however old
    assert default.status == 1
    many = tmp_path / "many"  # more failures than it lists: the others are counted
    subprocess.run([sys.executable, "-c", MANY_FAILURES, os.fspath(many)],
                   env=command.env, cwd=tmp_path, capture_output=True, timeout=60)
    crowded = command("--run", os.fspath(many), "status")
    assert crowded.out.splitlines()[1] == (
        "(4 older finished jobs hidden, of them 4 FAILED; --all shows them)")
    assert list(crowded.rows()) == [str(number) for number in range(1, 25)
                                    if number not in (11, 12, 13, 14)]


NAMED_FAILURE_FIRST = """
import sys, corral
with corral.Scheduler(journal=sys.argv[1], cores=1) as scheduler:
    scheduler.dispatch([corral.Job(corral.Shell("exit 1"), id="zz")])
    for number in range(12):
        scheduler.shell("exit 1" if number < 11 else "true")
"""


def test_the_failures_status_lists_are_the_first_dispatched_whatever_their_ids(tmp_path):
    """Attack review, round 2: ids a program chose were sorted after numbered ones."""
    command = Corral(tmp_path, tmp_path / "run")
    subprocess.run([sys.executable, "-c", NAMED_FAILURE_FIRST, os.fspath(command.run)],
                   env=command.env, cwd=tmp_path, capture_output=True, timeout=60)
    assert next(iter(command("status").rows())) == "zz"


MANY_FAILURES = """
import sys, corral
with corral.Scheduler(journal=sys.argv[1], cores=1) as scheduler:
    for number in range(24):
        scheduler.shell("exit 1" if number < 14 else "true", name=f"job{number}")
"""


def test_status_of_a_big_run_lists_the_first_unfinished_jobs_and_counts_the_rest(tmp_path,
                                                                                  release):
    command = Corral(tmp_path / "home", tmp_path / "run")
    with corral.Scheduler(journal=command.run, cores=1) as scheduler:
        done = [scheduler.shell("true", name=f"done{number}") for number in range(12)]
        corral.wait(done, timeout=60)
        blocker = scheduler.submit(jobs.wait_for_file, str(release))
        waiting = [scheduler.shell("true", name=f"waits{number}") for number in range(130)]
        wait_until(blocker.running, message="the blocker to run")
        shown = command.ok("status")
        release.touch()
    rows = shown.rows()
    assert list(rows) == [str(job.id) for job in (*[blocker, *waiting][:100], *done[2:])]
    assert shown.out.splitlines()[1:3] == [
        "(2 older finished jobs hidden; --all shows them)",
        "(31 more unfinished jobs not listed; --all lists them; unfinished: 130 QUEUED, "
        "1 RUNNING)"]
    assert len(command.ok("status", "--all").rows()) == 12 + 1 + 130


# -- one time format -------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.04, "0.0s"), (5.01, "5.0s"), (59.94, "59.9s"), (59.96, "1m00s"), (77, "1m17s"),
    (3599.4, "59m59s"), (3599.6, "1h00m"), (7380, "2h03m"), (86400 + 4 * 3600, "1d04h")])
def test_times_have_one_short_format_that_parses_back(seconds, shown):
    assert format_span(seconds) == shown
    if seconds >= 1:  # (a zero duration is no valid limit)
        assert parse_duration(shown) == pytest.approx(seconds, abs=1800)


def test_status_time_and_wait_timeout_use_the_short_format(fresh, tmp_path):
    job = fresh.submit("true")
    assert fresh("wait", job).status == 0
    assert re.fullmatch(r"\d+\.\ds", fresh("status", job).rows()[job]["TIME"])
    blocked = fresh.submit(block(tmp_path / "never"))
    assert_one_line_error(fresh("wait", "--timeout", "0.5", blocked), 124,
                          r"^corral: 1 job still unfinished after 0\.5s "
                          r"\(corral status lists them\)$")


# -- tracebacks name the user's file ---------------------------------------------------------------


TRACEBACK_SCRIPT = """\
import corral


def broken(x):
    raise ValueError(f"bad input {x}")


with corral.Scheduler(cores=1) as scheduler:
    job = scheduler.submit(broken, 7)
    try:
        job.result(timeout=60)
    except ValueError as error:
        print(error.__cause__)
"""


def test_a_remote_traceback_names_the_users_file_and_line(tmp_path):
    script = tmp_path / "analysis.py"
    script.write_text(TRACEBACK_SCRIPT)
    done = subprocess.run([sys.executable, os.fspath(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert "<dynamic-code>" not in done.stdout, done.stdout
    assert f'File "{script}", line 5, in broken' in done.stdout, done.stdout
    assert 'raise ValueError(f"bad input {x}")' in done.stdout  # the line itself, read there


# -- wait draws its bar where it decided to --------------------------------------------------------


def test_wait_draws_its_progress_bar_on_a_terminal_stderr_and_keeps_stdout_clean(fresh, tmp_path):
    release = tmp_path / "release"
    job = fresh.submit(block(release))
    controller, terminal = pty.openpty()
    try:
        waiting = subprocess.Popen([CORRAL, "wait", job], cwd=fresh.cwd, env=fresh.env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=terminal)
        os.close(terminal)
        terminal = -1
        drawn = _read_terminal_until(controller, b"1 to go")
        release.touch()
        out, _ = waiting.communicate(timeout=30)
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    assert waiting.returncode == 0
    assert b"1 to go" in drawn
    assert out == b"", "the progress bar must not go to stdout"


def test_the_progress_bar_names_timed_out_and_cancelled_jobs_apart_from_failed_ones():
    """Cold review: "0 to go, 2 failed" for 1 failed, 1 timed out and 8 cancelled."""
    from corral.cli.waiting import progress_words

    S = JobStatus
    ended = [S.FAILED, S.TIMED_OUT, *[S.CANCELLED] * 8, S.COMPLETED, S.COMPLETED]
    assert progress_words(Counter(ended)) == "0 to go, 1 failed, 1 timed out, 8 cancelled"
    assert progress_words(Counter([S.RUNNING, S.QUEUED, S.COMPLETED])) == "2 to go, 0 failed"


def _read_terminal_until(fd: int, wanted: bytes, timeout: float = 20) -> bytes:
    import select
    import time

    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {wanted!r} on the terminal; got {seen!r}")
        if select.select([fd], [], [], left)[0]:
            seen += os.read(fd, 65536)
    return seen


# -- the README ------------------------------------------------------------------------------------


def test_the_readme_says_where_corral_is_and_promises_nothing_already_there():
    readme = (ROOT / "README.md").read_text()
    assert "Still to come: the Slurm backend" not in readme
    set_up = readme.split("## What corral is")[0]
    assert "`corral` command in `.venv/bin`" in " ".join(set_up.split())


LONG_NAMES = """
import sys, corral
with corral.Scheduler(journal=sys.argv[1], cores=1) as scheduler:
    for number in range(4):
        scheduler.shell(f"echo {number}; exit {number % 2}",
                        name=f"a-rather-long-job-name-{number}")
"""


@pytest.mark.parametrize("columns", [50, 80, 120])
def test_status_keeps_ids_statuses_times_and_tries_whole_on_a_narrow_terminal(tmp_path, columns):
    command = Corral(tmp_path, tmp_path / "run")
    subprocess.run([sys.executable, "-c", LONG_NAMES, os.fspath(command.run)], env=command.env,
                   cwd=tmp_path, capture_output=True, timeout=60)
    shown = command("status", env={"COLUMNS": str(columns)})
    lines = shown.out.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("ID "))
    assert lines[header].split()[:5] == ["ID", "NAME", "STATUS", "TIME", "TRIES"]
    for number, line in enumerate(lines[header + 1:header + 5], start=1):
        assert len(line.rstrip()) <= columns
        words = line.split()
        assert words[0] == str(number)
        assert words[2] == ("COMPLETED" if number % 2 else "FAILED")
        assert re.fullmatch(r"\d+\.\ds", words[3]) and words[4] == "1"


# -- corral submit's own options and its first job ------------------------------------------------


def test_submit_takes_its_options_only_before_the_command(fresh):
    job = fresh.submit("echo", "hi", "--name", "x")
    fresh.wait_for_status(job, "COMPLETED")
    assert fresh.ok("logs", job).out == "hi --name x\n"
    assert fresh.ok("status").rows()[job]["NAME"] == "echo"


@pytest.mark.parametrize("flags", [["--cores", "99"], ["--notify", "me@example.org"]],
                         ids=["too many cores", "notify without smtp"])
def test_a_refused_first_submit_leaves_no_run_and_no_daemon(tmp_path, flags):
    command = Corral(tmp_path / "home", tmp_path / "run", cwd=tmp_path)
    outcome = command("submit", *flags, "--", "true")
    assert_one_line_error(outcome, 2, r"^corral: error: job 'true'")
    assert not command.run.exists()
    assert command.daemon_pid() is None


@pytest.mark.parametrize("flag", ["--name", "--queue", "--walltime"])
def test_a_job_option_left_without_its_value_is_refused_not_given_the_next_word(fresh, flag):
    """Attack review: `corral submit --name -- echo hi` named the job "--" (a
    name that could not be typed back to cancel or logs)."""
    refused = fresh("submit", flag, "--", "echo", "hi")
    assert_one_line_error(refused, 2, (
        rf"^corral: error: {flag} '--': no value of {flag} begins with '-'; was {flag}'s value "
        r"left out\?$"))
    assert fresh.daemon_pid() is None  # nothing was submitted, no run made
    assert not fresh.run.exists()


def test_a_name_that_is_a_number_is_refused_as_it_would_be_read_as_an_id(fresh):
    """Attack review: `corral submit --name 5` was taken; logs and cancel 5 then
    acted on job 5, never on the job named "5", without a word."""
    refused = fresh("submit", "--name", "5", "--", "true")
    assert_one_line_error(refused, 2, (
        r"^corral: error: --name 5: a name that is a number would be taken for a job's id by "
        r"logs, cancel, status and --after; give a name with a letter in it$"))
    assert not fresh.run.exists()
    assert_one_line_error(fresh("submit", "--name", " 5", "--", "true"), 2,
                          r"^corral: error: --name  5: a name that is a number")  # (shown as 5)
    assert fresh.submit("--name", "5b", "--", "true") == "1"  # (a letter in it: taken)
    # Nor one that is a range (attack review: `corral cancel 2-3` cancelled jobs 2 and 3,
    # not the job named "2-3", which --after took for that job).
    assert_one_line_error(fresh("submit", "--name", "2-3", "--", "true"), 2, (
        r"^corral: error: --name 2-3: a name that is a range of ids would be taken for the "
        r"jobs numbered in it by cancel, status and logs; give a name with a letter in it$"))
    assert fresh.submit("--name", "2-3b", "--", "true") == "2"


def test_submit_refuses_a_directory_that_holds_other_files(tmp_path):
    project = tmp_path / "project"
    project.mkdir(mode=0o755)
    (project / "data.csv").write_text("1,2\n")
    command = Corral(tmp_path / "home", project, cwd=tmp_path)
    outcome = command("submit", "--", "true")
    assert_one_line_error(outcome, 2, rf"^corral: error: {re.escape(str(project))} is not a "
                                      "corral run but holds other files; give --run a new or "
                                      "empty directory")
    assert sorted(path.name for path in project.iterdir()) == ["data.csv"]
    assert project.stat().st_mode & 0o777 == 0o755


def test_a_process_that_holds_the_run_but_never_answers_is_named(tmp_path, monkeypatch, capsys):
    """The command waits for a driver that holds the run and is starting; one that
    never answers was reported as "a script, which is not running" after 30 s, or
    after 90 s as a daemon that "exited (0) at start" (round-4 review)."""
    import fcntl
    import json

    from corral.cli.main import main

    monkeypatch.setattr("corral.control.server.STARTING_DRIVER_PATIENCE_S", 0.3)
    run = tmp_path / "run"
    corral.Scheduler(cores=1, journal=run).shutdown()
    with open(run / "owner.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(json.dumps({"pid": 4242, "kind": "script"}))
        lock.flush()
        with pytest.raises(SystemExit) as ended:
            main(["--run", str(run), "pause"])
    assert ended.value.code == 3
    assert capsys.readouterr().err == (
        f"corral: error: process 4242 (script) holds the run at {run} but has not answered "
        "within 0.3 s\n")


def test_a_driver_whose_queue_of_connections_is_full_is_tried_again(tmp_path):
    """Twenty `corral submit &` at once: two failed with "[Errno 11] Resource
    temporarily unavailable", the daemon's queue of connections being full
    (round-4 review). A full queue is waited on; one never emptied is said so."""
    import socket
    import threading

    from corral.control.server import SOCKET_FILE, send_request
    from corral.errors import CorralError

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(os.fspath(tmp_path / SOCKET_FILE))
        listener.listen(0)
        waiting: list[socket.socket] = []
        while True:  # fill the queue: a connection that cannot wait in it is refused
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            filler.setblocking(False)
            try:
                filler.connect(os.fspath(tmp_path / SOCKET_FILE))
            except BlockingIOError:
                filler.close()
                break
            waiting.append(filler)
        with pytest.raises(CorralError, match=r"^the process driving .+ takes no connection: "
                                              r"it is too busy$"):
            send_request(tmp_path, {"verb": "ping"}, timeout=0.3)

        def serve_one() -> None:
            for _ in waiting:
                listener.accept()[0].close()
            connection, _ = listener.accept()
            with connection:
                connection.recv(1024)
                connection.sendall(b'{"ok": true}\n')

        server = threading.Timer(0.2, serve_one)
        server.start()
        assert send_request(tmp_path, {"verb": "ping"}, timeout=5) == {"ok": True}
        server.join()
        for filler in waiting:
            filler.close()


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_first_submit_cut_short_takes_its_new_run_away_and_says_so(
        tmp_path, monkeypatch, capsys, signal_name):
    """Cold review (a sysadmin): `timeout 0.3 corral submit` (SIGTERM) left a
    run with no job and a daemon idling for five minutes; a Ctrl-C took the run
    away but said "the run and its jobs go on"."""
    import signal

    from corral.cli import main as cli_main
    from corral.cli.exits import Terminated

    def cut_short(*args, **kwargs):
        if signal_name == "SIGINT":
            raise KeyboardInterrupt
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # the command's own handler
        raise AssertionError("SIGTERM did not end the submit")

    monkeypatch.setattr(cli_main, "control_request", cut_short)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as ended:
        cli_main.main(["--run", str(run), "submit", "--", "true"])
    assert ended.value.code == (143 if signal_name == "SIGTERM" else 130)
    assert capsys.readouterr().err == ("corral: interrupted: nothing was submitted, and the "
                                       "run this command was making is taken away again\n")
    assert not run.exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the process's own again"
    assert Terminated  # (the exception SIGTERM raises in the command)
