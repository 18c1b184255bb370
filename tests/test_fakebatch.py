"""The fake batch scheduler the tests ship (tests/support/fakebatch): each
command against real processes, as the batch backend will use it."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from jobs import (add, note_run_then_wait, square, stop_as_if_aborted, wait_for_file,
                  write_pid_and_wait)
from support.processes import pids_alive
from support.waiting import wait_until
from support.fakebatch.cluster import FakeBatch
from support.fakebatch.scheduler import BIN, FakeBatchScheduler, registered

import corral
from corral.backends.batch.base import UNREADABLE_STATUS_LIMIT
from corral.backends.batch.scheduler import NativeRow, SubmitRequest
from corral.spec import Placement, Resources
from corral.status import JobStatus


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeBatch]:
    fake = FakeBatch(tmp_path / "fakebatch", forget_s=30.0)
    fake.root.mkdir()
    yield fake
    fake.stop()


def script(tmp_path: Path, body: str, name: str = "job.sh") -> str:
    path = tmp_path / name
    path.write_text(body)
    return os.fspath(path)


def submit(cluster: FakeBatch, *argv: str) -> str:
    done = cluster.run("qsub", *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def ended(cluster: FakeBatch, native: str) -> dict:
    """The job's qstat record once it says it ended (as seen then: a cluster that
    forgets finished jobs soon may have forgotten it by the next look)."""
    seen: dict = {}

    def finished() -> bool:
        seen.clear()
        seen.update(cluster.qstat(native).get(native, {}))
        return seen.get("state") == "F"

    wait_until(finished, message=f"fakebatch job {native} to end")
    return seen


def test_a_submitted_script_runs_as_a_real_process_with_its_variables(cluster, tmp_path):
    job = submit(cluster, "-N", "hello", "-o", os.fspath(tmp_path / "out"),
                 script(tmp_path, "echo job $FAKEBATCH_JOBID index ${FAKEBATCH_ARRAY_INDEX-none}\n"
                                  "exit 3\n"))
    task = ended(cluster, job)
    assert (task["name"], task["exit_status"], task["signal"]) == ("hello", 3, None)
    assert (tmp_path / "out").read_text() == f"job {job} index none\n"
    assert cluster.calls("qsub") == [("qsub", cluster.calls()[0][1],
                                      ["-N", "hello", "-o", os.fspath(tmp_path / "out"),
                                       os.fspath(tmp_path / "job.sh")])]


def test_qdel_kills_a_running_job_with_every_process_it_started(cluster, tmp_path):
    pids = tmp_path / "pids"
    job = submit(cluster, script(tmp_path, f"(setsid sleep 300 & echo $! >> {pids})\n"
                                           f"sleep 300 & echo $! >> {pids}\nwait\n"))
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2)
    started = [int(pid) for pid in pids.read_text().split()]
    assert cluster.qstat(job)[job]["state"] == "R"
    assert cluster.run("qdel", job).returncode == 0
    task = cluster.qstat(job)[job]
    assert (task["state"], task["reason"], task["signal"]) == ("F", "deleted", 9)
    wait_until(lambda: not pids_alive(started), timeout=5, message="the job's processes to die")


def test_an_array_runs_each_index_from_one_and_one_qstat_lists_every_task(cluster, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    job = submit(cluster, "-t", "1-5%2", "-o", os.fspath(out / "%I"),
                 script(tmp_path, "echo $FAKEBATCH_TASKID\n"))
    natives = [f"{job}_{index}" for index in range(1, 6)]
    wait_until(lambda: all(task["state"] == "F" for task in cluster.qstat(job).values()))
    assert sorted(cluster.qstat(job)) == natives == sorted(cluster.qstat(*natives))
    assert {path.name: path.read_text() for path in out.iterdir()} == {
        str(index): f"{job}_{index}\n" for index in range(1, 6)}


def test_a_child_waits_for_its_parent_and_a_failed_parents_children_are_removed(
        cluster, tmp_path):
    gate, doom, log = tmp_path / "gate", tmp_path / "doom", tmp_path / "log"
    parent = submit(cluster, script(tmp_path, f"while [ ! -e {gate} ]; do sleep 0.01; done\n"
                                              f"echo parent >> {log}\n", "parent.sh"))
    child = submit(cluster, "-W", f"depend=afterok:{parent}",
                   script(tmp_path, f"echo child >> {log}\n", "child.sh"))
    doomed = submit(cluster, "-t", "1-2", script(
        tmp_path, f"while [ ! -e {doom} ]; do sleep 0.01; done\nexit $FAKEBATCH_ARRAY_INDEX\n",
        "doomed.sh"))
    orphan = submit(cluster, "-W", f"depend=afterok:{doomed}_2:{parent}",
                    script(tmp_path, f"echo orphan >> {log}\n", "orphan.sh"))
    grandchild = submit(cluster, "-W", f"depend=afterok:{orphan}",
                        script(tmp_path, f"echo grandchild >> {log}\n", "grandchild.sh"))
    assert cluster.qstat(child)[child]["state"] == "Q"
    doom.touch()
    wait_until(lambda: orphan not in cluster.qstat(), message="the failed parent's child to go")
    assert grandchild not in cluster.qstat()
    gate.touch()
    assert ended(cluster, child)["exit_status"] == 0
    assert log.read_text() == "parent\nchild\n"


def test_a_held_job_waits_until_released_and_a_running_one_cannot_be_held(tmp_path):
    cluster = FakeBatch(tmp_path / "fakebatch", slots=1)
    cluster.root.mkdir()
    try:
        gate = tmp_path / "gate"
        hog = submit(cluster, script(tmp_path, f"while [ ! -e {gate} ]; do sleep 0.01; done\n",
                                     "hog.sh"))
        waiting = submit(cluster, script(tmp_path, "true\n", "waiting.sh"))
        wait_until(lambda: cluster.qstat(hog)[hog]["state"] == "R")
        assert cluster.run("qhold", waiting).returncode == 0
        refused = cluster.run("qhold", hog)
        assert (refused.returncode, refused.stderr) == (
            1, f"qhold: Request invalid for state of job {hog}\n")
        gate.touch()
        ended(cluster, hog)
        assert cluster.qstat(waiting)[waiting]["state"] == "H"  # a free slot, still held
        assert cluster.run("qrls", waiting).returncode == 0
        assert ended(cluster, waiting)["exit_status"] == 0
    finally:
        cluster.stop()


def test_a_job_past_its_walltime_is_killed(cluster, tmp_path):
    job = submit(cluster, "-l", "walltime=0.3", script(tmp_path, "sleep 300\n"))
    task = ended(cluster, job)
    assert (task["reason"], task["signal"]) == ("walltime", 9)


def test_qsig_signals_the_running_script(cluster, tmp_path):
    marker = tmp_path / "marker"
    job = submit(cluster, script(tmp_path, f"trap 'echo got it > {marker}; exit 0' USR1\n"
                                           f"touch {marker}.ready\n"
                                           "while true; do sleep 0.01; done\n"))
    wait_until(lambda: Path(f"{marker}.ready").exists())
    assert cluster.run("qsig", "-s", "USR1", job).returncode == 0
    assert ended(cluster, job)["exit_status"] == 0
    assert marker.read_text() == "got it\n"


def test_finished_jobs_are_forgotten_after_a_while(tmp_path):
    cluster = FakeBatch(tmp_path / "fakebatch", forget_s=0.5)
    cluster.root.mkdir()
    try:
        job = submit(cluster, script(tmp_path, "true\n"))
        # Listed from its submission on, so gone only once it ended and was
        # forgotten (a look for its end may fall between the two: 0.5 s apart).
        wait_until(lambda: job not in cluster.qstat(), timeout=30,
                   message="the finished job to be forgotten")
        refused = cluster.run("qsub", "-W", f"depend=afterok:{job}", script(tmp_path, "true\n"))
        assert (refused.returncode, refused.stderr) == (1, f"qsub: Unknown Job Id {job}\n")
    finally:
        cluster.stop()


@pytest.mark.parametrize(("argv", "message"), [
    (["-t", "5-1"], "qsub: bad array '5-1': 1 to 1000 tasks\n"),
    (["-t", "a-b"], "qsub: bad array 'a-b': expected FIRST-LAST[%THROTTLE]\n"),
    (["-W", "depend=afterany:1"], "qsub: bad dependency 'depend=afterany:1': "
                                  "expected depend=afterok:ID[:ID]\n"),
    (["-l", "walltime=soon"], "qsub: bad resource value: could not convert string to float: "
                              "'soon'\n"),
    (["-l", "colour=red"], "qsub: unknown resource 'colour'\n"),
    (["-l", "ncpus=65"], "qsub: Job exceeds queue resource limits (ncpus=65 > 64)\n"),
    (["--bogus"], "qsub: unknown argument '--bogus'\n"),
])
def test_qsub_refuses_bad_input_with_a_message(cluster, tmp_path, argv, message):
    refused = cluster.run("qsub", *argv, script(tmp_path, "true\n"))
    assert refused.stderr == message and refused.returncode in (1, 2)
    assert cluster.qstat() == {}


def test_a_command_without_its_state_file_says_so(tmp_path):
    cluster = FakeBatch(tmp_path)
    done = cluster.run("env", "-u", "FAKEBATCH_STATE", "qstat")
    assert (done.returncode, done.stderr) == (2, "qstat: FAKEBATCH_STATE is not set\n")


# -- corral's side: the pure pieces of FakeBatchScheduler ------------------------------------


def test_the_scheduler_builds_qsub_arguments_from_a_request():
    request = SubmitRequest(script="/run/1/job.sh", name="train", output="/run/1/out",
                            resources=Resources(cores=2, memory_mb=512, walltime_s=61),
                            placement=Placement(extra_flags=("-p", "5")), array_size=50,
                            throttle=8, dependencies=("7", "8_2"), time_limit_s=63.5)
    assert FakeBatchScheduler().submit_argv(request) == [
        "qsub", "-N", "train", "-o", "/run/1/out", "-l", "ncpus=2", "-l", "mem=512",
        "-l", "walltime=64", "-t", "1-50%8", "-W", "depend=afterok:7:8_2", "-p", "5",
        "/run/1/job.sh"]


def test_the_scheduler_reads_qstat_rows_and_what_they_mean():
    fake = FakeBatchScheduler()
    rows = fake.parse_status('{"3": {"state": "F", "exit_status": 0, "signal": null, '
                             '"reason": ""}, "4_1": {"state": "F", "exit_status": null, '
                             '"signal": 9, "reason": "walltime"}, "5": {"state": "H"}, '
                             '"6": {"state": "Z"}, "7": "garbage"}')
    assert sorted(rows) == ["3", "4_1", "5", "6"]
    assert fake.meaning(rows["3"]) == (JobStatus.COMPLETED, "")
    assert fake.meaning(rows["4_1"])[0] is JobStatus.TIMED_OUT
    assert fake.meaning(rows["5"]) == (JobStatus.SUBMITTED, "") and fake.is_held(rows["5"])
    assert fake.meaning(rows["6"]) is None  # an unknown state is skipped, never a crash
    assert fake.meaning(NativeRow("8", "F", "", 2)) == (JobStatus.FAILED, "exit status 2")
    with pytest.raises(ValueError, match="qstat printed no JSON: 'oops'"):
        fake.parse_status("oops")
    with pytest.raises(ValueError, match="qsub printed no job id: 'qsub: down'"):
        fake.parse_submit("qsub: down\n")


# -- the batch base on the fake: what a user of a batch backend notices ----------------------








@contextmanager
def on_fakebatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_s: float = 30.0,
                 shadows: dict[str, str] | None = None, slots: int = 64,
                 journal: Path | None = None, workdir: Path | None = None,
                 max_jobs: int | None = None, **options: object
                 ) -> Iterator[tuple[FakeBatch, corral.Scheduler]]:
    """A fake cluster of *slots*, and a Scheduler of this process on it that
    polls often (with more backend *options*), journaled at *journal* if
    given; *shadows* break some of its commands for the driver (see :func:`shadow`)."""
    cluster = FakeBatch(tmp_path / "fakebatch", forget_s=forget_s, slots=slots)
    cluster.root.mkdir()
    for name, value in cluster.environ().items():
        monkeypatch.setenv(name, value)
    for command, shell in (shadows or {}).items():
        shadow(tmp_path, monkeypatch, command, shell)
    try:
        where: dict[str, Path] = {} if journal is None else {"journal": journal}
        if workdir is not None or journal is None:
            where["workdir"] = workdir if workdir is not None else tmp_path / "run"
        with registered(), corral.Scheduler(
                backend="fakebatch", max_jobs=max_jobs, **where,
                backend_options={"poll_interval": 0.05, "max_poll_interval": 0.1,
                                 **options}) as sched:
            yield cluster, sched
    finally:
        cluster.stop()


def test_a_child_the_cluster_could_hold_that_corral_holds_for_max_jobs_says_so(tmp_path,
                                                                               monkeypatch):
    """Cold review (a PLAMS port): such children said "held by the cluster until its
    dependencies complete", with no cluster id: corral held them, for max_jobs."""
    release = tmp_path / "release"
    with on_fakebatch(tmp_path, monkeypatch, max_jobs=1) as (_, sched):
        parent = corral.Job(wait_for_file, (os.fspath(release),))
        children = [corral.Job(corral.Shell("true"), after=parent) for _ in range(2)]
        sched.dispatch([parent, *children])  # (made together: chained once it is submitted)
        try:
            wait_until(lambda: [(child.status, child.reason) for child in children] == [
                (JobStatus.QUEUED, "waiting for a job slot (max_jobs=1)")] * 2, timeout=30,
                message="the children to say why they wait")
        finally:
            release.touch()
        corral.wait(children, timeout=60)
        assert [child.status for child in children] == [JobStatus.COMPLETED] * 2


def test_clean_removes_the_batch_submissions_that_ran_only_the_jobs_it_cleans(tmp_path,
                                                                            monkeypatch):
    """Cold review (a PLAMS port): clean left every submission's job.sh, bundle
    files and batch log behind."""
    run = tmp_path / "run"
    with on_fakebatch(tmp_path, monkeypatch, journal=run) as (_, sched):
        first = sched.submit(square, 3)
        assert first.result(timeout=60) == 9  # (alone in its submission)
        together = sched.dispatch([corral.Job(square, (n,)) for n in (4, 5)])  # (an array)
        assert [job.result(timeout=60) for job in together] == [16, 25]
    submissions = run / "fakebatch"

    def ran() -> list[set[str]]:
        return [{os.path.basename(jobdir) for bundle in directory.glob("*.json")
                 for jobdir in json.loads(bundle.read_text())["jobdirs"]}
                for directory in sorted(submissions.iterdir())]

    assert sorted(map(sorted, ran())) == sorted(
        [[str(first.id)], sorted(str(job.id) for job in together)])
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, symlinks=True)
    # Nothing of a run is run by cleaning it (attack review: a task file was unpickled).
    pwned = tmp_path / "pwned"
    (copy / str(first.id) / "task").write_bytes(
        b"cposix\nsystem\n(S'touch " + os.fsencode(pwned) + b"'\ntR.")
    done = corral.Run(run).clean([first.id, together[0].id, first.id])
    assert (done.jobs, done.failures) == ([first.id, together[0].id], [])  # (each once)
    assert ran() == [{str(job.id) for job in together}]  # the array ran one not cleaned
    mine = run / "mydata" / "0"  # shaped like a submission, but in no backend's folder
    mine.mkdir(parents=True)
    (mine / "job.sh").write_text("echo mine\n")
    (mine / "0.json").write_text('{"jobdirs": ["gone"]}')
    corral.Run(run).clean()
    assert not submissions.exists()
    assert (mine / "job.sh").exists()  # (attack review: it went, and its folder)
    corral.Run(copy).clean()  # a copy's own submissions go (its files name the original)
    assert not (copy / "fakebatch").exists() and not pwned.exists()


def test_clean_finds_the_submissions_where_the_job_files_are_with_a_workdir_elsewhere(
        tmp_path, monkeypatch):
    """Docs review: with workdir= apart from the journal, submissions are made
    beside the job files, where clean did not look."""
    files = tmp_path / "files"
    with on_fakebatch(tmp_path, monkeypatch, journal=tmp_path / "run", workdir=files) as (
            _, sched):
        assert sched.submit(square, 3).result(timeout=60) == 9
    assert any((files / "fakebatch").iterdir())
    corral.Run(tmp_path / "run").clean()
    assert not (files / "fakebatch").exists()


def shadow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, shell: str) -> None:
    """Put a *command* first on the driver's PATH that runs *shell* and then
    the fake's own command (unless *shell* exits first): a broken cluster.
    The test's own calls (:meth:`FakeBatch.run`) still reach the real one."""
    folder = tmp_path / "shadow"
    folder.mkdir(exist_ok=True)
    script = folder / command
    script.write_text(f"#!/bin/sh\n{shell}\nexec {shlex.quote(os.fspath(BIN / command))} \"$@\"\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def _server_down_while(flag: Path) -> str:
    """A qsub that cannot reach its server while *flag* exists, as PBS's says it."""
    return (f"if [ -e {shlex.quote(os.fspath(flag))} ]; then echo 'qsub: cannot connect to "
            "server fakebatch (errno=111) Connection refused' >&2; exit 1; fi")


def test_a_submission_that_cannot_reach_the_scheduler_is_tried_again_until_it_can(
        tmp_path, monkeypatch, caplog):
    """BUG (attack on a real Slurm): jobs submitted while slurmctld restarted
    failed for good ("sbatch refused it: ... Unable to contact slurm
    controller"); only the status query was asked again."""
    down = tmp_path / "down"
    down.touch()
    with on_fakebatch(tmp_path, monkeypatch, shadows={"qsub": _server_down_while(down)}) as (
            cluster, sched):
        job = sched.submit(square, 7)
        wait_until(lambda: "trying again for up to 10m00s" in caplog.text,
                   message="the refusal to be noted as one to try again")
        assert not job.done() and cluster.calls("qsub") == []
        down.unlink()
        assert job.result(timeout=60) == 49
    assert caplog.text.count("cannot connect to server") == 1  # said once, not at every try


@pytest.mark.parametrize("retry, ending", [
    (0.5, r" \(tried again for 0\.5s\)"),
    (0, ""),  # no retry at all (the attack found 0 refused: no way to turn them off)
])
def test_a_scheduler_unreachable_past_submit_retry_fails_the_jobs_saying_so(
        tmp_path, monkeypatch, retry, ending):
    down = tmp_path / "down"
    down.touch()
    with on_fakebatch(tmp_path, monkeypatch, shadows={"qsub": _server_down_while(down)},
                      submit_retry=retry) as (_, sched):
        job = sched.submit(square, 7)
        with pytest.raises(corral.JobFailed, match=r"qsub refused it: qsub exited 1: qsub: "
                                                   r"cannot connect to server fakebatch "
                                                   rf"\(errno=111\) Connection refused{ending}$"):
            job.result(timeout=60)


def test_a_cancelled_job_the_scheduler_starts_all_the_same_does_not_run(tmp_path, monkeypatch):
    """A cancel whose qdel did not reach the scheduler (or a job it starts before
    the delete lands): the runtime must not run a job corral reported CANCELLED.
    It is marked before the delete is sent, as a bundled job always was."""
    broken = tmp_path / "qdel-broken"
    broken.touch()
    release, ran = tmp_path / "release", tmp_path / "ran"
    qdel_down = (f"if [ -e {shlex.quote(os.fspath(broken))} ]; then echo 'qdel: cannot "
                 "connect to server fakebatch (errno=111)' >&2; exit 1; fi")
    with on_fakebatch(tmp_path, monkeypatch, shadows={"qdel": qdel_down}, slots=1) as (
            cluster, sched):
        blocker = sched.submit(wait_for_file, os.fspath(release), 1)
        wait_until(lambda: blocker.status is JobStatus.RUNNING, message="the blocker to run")
        waiting = sched.shell(f"touch {shlex.quote(os.fspath(ran))}")
        wait_until(lambda: waiting.native_id is not None, message="the job to be submitted")
        assert waiting.cancel() and waiting.status is JobStatus.CANCELLED
        release.touch()
        assert blocker.result(timeout=60) == 1
        native = waiting.native_id
        wait_until(lambda: cluster.qstat(native)[native]["state"] == "F", timeout=60,
                   message="the fake cluster to start and end the cancelled job")
    assert not ran.exists(), "a job reported CANCELLED ran"


def test_a_refusal_that_is_not_about_reaching_the_scheduler_fails_at_once(
        tmp_path, monkeypatch):
    with on_fakebatch(tmp_path, monkeypatch, shadows={
            "qsub": "echo 'qsub: Job exceeds queue resource limits' >&2; exit 1"}) as (_, sched):
        job = sched.submit(square, 7)
        with pytest.raises(corral.JobFailed, match=r"qsub refused it: qsub exited 1: qsub: "
                                                   r"Job exceeds queue resource limits$"):
            job.result(timeout=60)


def test_the_schedulers_sigterm_ends_what_a_jobs_child_started_too(tmp_path, monkeypatch):
    """BUG (attack): on the scheduler's SIGTERM the batch job ended its
    children, but a child that died at once (a shell) left its own children
    running, adopted by init, where a scheduler tracking processes by
    parentage would never find them."""
    from jobs import run_shell

    tag = f"300.{os.getpid()}9"

    def sleeping() -> list[psutil.Process]:
        return [process for process in psutil.process_iter(["cmdline"])
                if (process.info["cmdline"] or [""])[-1].startswith(tag)]

    with on_fakebatch(tmp_path, monkeypatch) as (_, sched):
        job = sched.submit(run_shell, f"sleep {tag}1 & sleep {tag}2; wait")
        try:
            wait_until(lambda: len(sleeping()) == 2, timeout=30, message="the grandchildren")
            batch_job = sleeping()[0].parent().parent()  # sleep <- sh <- the batch runtime
            assert "corral.runtime.batch" in " ".join(batch_job.cmdline())
            batch_job.send_signal(signal.SIGTERM)
            wait_until(lambda: not sleeping(), timeout=20,
                       message="the job's grandchildren to be killed with it")
            corral.wait([job], timeout=30)
        finally:
            for process in sleeping():
                process.kill()


def test_a_status_query_printing_garbage_is_asked_again_and_the_job_goes_on(
        tmp_path, monkeypatch, caplog):
    answers = tmp_path / "answers"
    banners_then_answers = (
        f"echo answer >> {answers}\n"
        f"if [ $(wc -l < {answers}) -le 2 ]; then echo 'Welcome to the cluster!'; exit 0; fi")
    caplog.set_level(logging.WARNING, logger="corral")
    with on_fakebatch(tmp_path, monkeypatch, shadows={"qstat": banners_then_answers}) as (_, sched):
        assert sched.submit(square, 6).result(timeout=60) == 36
    assert (f"qstat printed what corral cannot read (1 of {UNREADABLE_STATUS_LIMIT} in a row "
            "before its jobs fail): qstat printed no JSON: 'Welcome to the cluster!") in caplog.text


def test_a_status_query_that_keeps_printing_garbage_fails_the_jobs_quoting_it(
        tmp_path, monkeypatch):
    banner = "echo 'Welcome to the cluster!'; exit 0"
    with on_fakebatch(tmp_path, monkeypatch, shadows={"qstat": banner}) as (cluster, sched):
        job = sched.submit(wait_for_file, os.fspath(tmp_path / "never"), 1)
        with pytest.raises(corral.JobFailed):
            job.result(timeout=60)
        native = job.native_id
    assert job.status is JobStatus.FAILED
    assert job.reason == (f"qstat printed what corral cannot read {UNREADABLE_STATUS_LIMIT} "
                          "times in a row, so the job could not be followed (its batch job is "
                          "cancelled): 'Welcome to the cluster!'")
    assert cluster.qstat(native)[native]["reason"] == "deleted"  # not left running unseen


def test_a_configuration_that_cannot_be_read_means_the_schedulers_defaults(
        tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="corral")
    with on_fakebatch(tmp_path, monkeypatch, shadows={"qmgr": "echo '{}'; exit 0"}) as (_, sched):
        assert sched.submit(square, 3).result(timeout=60) == 9
    assert ("cannot read fakebatch's configuration (KeyError: 'max_array_size' in '{}'); "
            "assuming defaults") in caplog.text


def test_pausing_with_no_driver_when_qstat_prints_garbage_says_so(tmp_path, monkeypatch):
    from corral.backends.batch.control import control_without_driver
    from corral.errors import BackendError

    cluster = FakeBatch(tmp_path / "fakebatch")
    for name, value in cluster.environ().items():
        monkeypatch.setenv(name, value)
    shadow(tmp_path, monkeypatch, "qstat", "echo 'Welcome to the cluster!'; exit 0")
    with pytest.raises(BackendError) as caught:
        control_without_driver(FakeBatchScheduler(), "pause", ["1"])
    assert str(caught.value) == ("qstat printed what corral cannot read (qstat printed no JSON: "
                                 "'Welcome to the cluster!\\n'): 'Welcome to the cluster!'")


def test_a_submission_that_prints_no_job_id_fails_its_jobs_with_the_output(
        tmp_path, monkeypatch):
    no_id = "echo 'your job is welcome'; exit 0"
    with on_fakebatch(tmp_path, monkeypatch, shadows={"qsub": no_id}) as (cluster, sched):
        job = sched.submit(square, 2)
        with pytest.raises(corral.JobFailed):
            job.result(timeout=60)
    assert job.reason.startswith(
        "qsub ran, but qsub printed no job id: 'your job is welcome'; if it submitted the "
        "job, corral cannot follow it: look for it in fakebatch (its script: ")
    assert job.reason.endswith("/job.sh)") and cluster.qstat() == {}


def die_when(path: str) -> None:
    """Wait for *path*, then die as a crashed node would: no result file."""
    wait_for_file(path, 0)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_child_is_not_chained_to_a_parent_the_scheduler_may_have_forgotten(
        tmp_path, monkeypatch):
    """The fake refuses a dependency on a job it forgot, as PBS does. Polling
    last saw the parent running long before it died (leaving no result) and
    was forgotten: the child waits for the parent's outcome instead of being
    refused, and is cancelled for it as on every backend."""
    down, release = tmp_path / "down", tmp_path / "release"
    unreachable = f"if [ -e {down} ]; then echo 'qstat: cannot connect' >&2; exit 1; fi"
    with on_fakebatch(tmp_path, monkeypatch, forget_s=0.5,
                      shadows={"qstat": unreachable}) as (cluster, sched):
        parent = sched.submit(die_when, os.fspath(release))
        wait_until(lambda: parent.status is JobStatus.RUNNING, timeout=60,
                   message="the parent to run")
        down.touch()  # the driver's status queries fail from now on
        release.touch()
        native = parent.native_id
        wait_until(lambda: native not in cluster.qstat(), timeout=30,
                   message="fakebatch to forget the parent")
        child = sched.submit(add, parent, 1)
        # Held back by corral (WAITING), or sent chained and refused: nothing between.
        wait_until(lambda: child.status is JobStatus.WAITING or child.done(), timeout=30,
                   message="the child to wait for its parent or to end")
        down.unlink()
        with pytest.raises(corral.CancelledError):
            child.result(timeout=60)
    assert parent.status is JobStatus.FAILED
    assert (child.status, child.reason) == (JobStatus.CANCELLED,
                                            f"upstream job {parent.id} 'die_when' failed")
    assert not [argv for _, _, argv in cluster.calls("qsub") if f"depend=afterok:{native}" in argv]


def test_a_running_job_missing_from_a_status_answer_sooner_than_the_forget_time_goes_on(
        tmp_path, monkeypatch):
    """A scheduler lists a job for its forget time after the job ends, so a job that
    is missing sooner was dropped by a bad answer (an empty or cut-off listing, a
    controller restarting), not forgotten: corral asks again instead of failing a
    job that still runs (it once ended FAILED "no longer knows the job")."""
    armed, emptied, empties = (tmp_path / name for name in ("armed", "emptied", "empties"))
    three_empty_answers_once_armed = (
        f"if [ -e {armed} ] && [ ! -e {emptied} ]; then echo x >> {empties}; "
        f"if [ $(wc -l < {empties}) -ge 3 ]; then touch {emptied}; fi; echo '{{}}'; exit 0; fi")
    go = tmp_path / "go"
    with on_fakebatch(tmp_path, monkeypatch, forget_s=30,
                      shadows={"qstat": three_empty_answers_once_armed}) as (_, sched):
        job = sched.submit(wait_for_file, os.fspath(go), 7)
        wait_until(lambda: job.status is JobStatus.RUNNING, timeout=60)
        armed.touch()
        wait_until(emptied.exists, timeout=60, message="qstat gave its three empty answers")
        assert job.status is JobStatus.RUNNING, job.reason
        go.touch()
        assert job.result(timeout=60) == 7


def test_a_cancel_is_not_held_up_by_a_status_query_that_hangs(tmp_path, monkeypatch):
    """The status query runs beside the control loop: a controller that does not
    answer delays the news, not a cancel (which once waited for the query's
    60 s time-out, and so did pause and every other request)."""
    hang, hanging = tmp_path / "hang", tmp_path / "hanging"
    hangs_while_told = (f"if [ -e {hang} ]; then touch {hanging}; "
                        f"while [ -e {hang} ]; do sleep 0.05; done; fi")
    with on_fakebatch(tmp_path, monkeypatch, shadows={"qstat": hangs_while_told}) as (_, sched):
        job = sched.submit(wait_for_file, os.fspath(tmp_path / "never"), 1)
        wait_until(lambda: job.status is JobStatus.RUNNING, timeout=60)
        hang.touch()
        wait_until(hanging.exists, timeout=60, message="a status query hangs")
        try:
            # From another thread: a cancel waits for the loop to take note, and
            # this test must see the loop free while qstat hangs (up to 60 s).
            threading.Thread(target=job.cancel, daemon=True).start()
            wait_until(job.done, timeout=20, message="the cancel went through while qstat hangs")
            assert job.status is JobStatus.CANCELLED
            assert hang.exists()  # the query still hangs: the cancel did not wait for it
        finally:
            hang.unlink()


REFUSES_CHAINS = ('case "$*" in *depend=*) echo "qsub: Unknown Job Id 99" >&2; exit 1;; esac')


@contextmanager
def held_back_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    caplog: pytest.LogCaptureFixture
                    ) -> Iterator[tuple[corral.Scheduler, corral.Job, corral.Job, Path]]:
    """A scheduler that refuses every chained submission, a parent that waits for
    the file *go* (not made yet), and its child, refused and held back by corral."""
    caplog.set_level(logging.INFO, logger="corral")
    go = tmp_path / "go"
    with on_fakebatch(tmp_path, monkeypatch, shadows={"qsub": REFUSES_CHAINS}) as (_, sched):
        parent = sched.submit(wait_for_file, os.fspath(go), 5)
        child = sched.submit(add, parent, 1)
        wait_until(lambda: "wait for their parents here" in caplog.text, timeout=60,
                   message="the chained child was refused and held back")
        yield sched, parent, child, go


def test_a_chained_child_the_scheduler_refuses_waits_for_its_parent_and_runs_unchained(
        tmp_path, monkeypatch, caplog):
    """A scheduler refuses a child chained to a job it dropped or forgot; the child
    is not failed for that: it waits for its parent's result and goes out again."""
    with held_back_child(tmp_path, monkeypatch, caplog) as (_, parent, child, go):
        go.touch()
        assert child.result(timeout=60) == 6
    assert ("qsub refused it: qsub exited 1: qsub: Unknown Job Id 99; 1 job(s) chained to "
            f"{parent.native_id} wait for their parents here") in caplog.text


def test_a_held_back_child_can_be_cancelled(tmp_path, monkeypatch, caplog):
    with held_back_child(tmp_path, monkeypatch, caplog) as (_, parent, child, go):
        assert child.cancel()
        assert child.status is JobStatus.CANCELLED
        go.touch()
        assert parent.result(timeout=60) == 5


def test_a_held_back_child_stays_back_while_the_run_is_paused(tmp_path, monkeypatch, caplog):
    with held_back_child(tmp_path, monkeypatch, caplog) as (sched, parent, child, go):
        sched.pause()
        go.touch()
        assert parent.result(timeout=60) == 5
        wait_until(lambda: "may go out now, but the run is paused" in caplog.text, timeout=60)
        assert child.status is JobStatus.SUBMITTED and child.native_id is None
        sched.resume()
        assert child.result(timeout=60) == 6


def test_a_running_job_missing_from_one_answer_long_after_it_was_listed_goes_on(
        tmp_path, monkeypatch):
    """Also past the forget time (a controller that was down, a resumed driver's
    first answer), one answer that lacks a job decides nothing: it must be
    missing from two in a row."""
    answers, armed, emptied = (tmp_path / name for name in ("answers", "armed", "emptied"))
    one_empty_answer_once_armed = (
        f"echo x >> {answers}; "
        f"if [ -e {armed} ] && [ ! -e {emptied} ]; then touch {emptied}; echo '{{}}'; exit 0; fi")
    go = tmp_path / "go"
    with on_fakebatch(tmp_path, monkeypatch, forget_s=0.5,
                      shadows={"qstat": one_empty_answer_once_armed}) as (_, sched):
        job = sched.submit(wait_for_file, os.fspath(go), 7)
        wait_until(lambda: job.status is JobStatus.RUNNING, timeout=60)
        listed_since = len(answers.read_text().splitlines())
        # Past the forget time: twenty more answers at 0.05-0.1 s each.
        wait_until(lambda: len(answers.read_text().splitlines()) > listed_since + 20, timeout=60)
        armed.touch()
        wait_until(emptied.exists, timeout=60)
        count = len(answers.read_text().splitlines())
        wait_until(lambda: len(answers.read_text().splitlines()) > count + 2, timeout=60,
                   message="the next answers, which list the job again, came")
        assert job.status is JobStatus.RUNNING, job.reason
        go.touch()
        assert job.result(timeout=60) == 7


def hanging_wrapper(armed: Path, pids: Path) -> str:
    """A site's qstat wrapper that, once *armed*, starts a child holding its output
    and waits for it (a hung controller seen through a script)."""
    return f"if [ -e {armed} ]; then sleep 300 & echo $! >> {pids}; wait; fi"


def test_a_status_query_past_its_time_limit_is_killed_with_what_it_started(
        tmp_path, monkeypatch):
    from corral.backends.batch import invoke

    monkeypatch.setattr(invoke, "COMMAND_TIMEOUT_S", 1.0)
    armed, pids, go = tmp_path / "armed", tmp_path / "pids", tmp_path / "go"
    with on_fakebatch(tmp_path, monkeypatch,
                      shadows={"qstat": hanging_wrapper(armed, pids)}) as (_, sched):
        job = sched.submit(wait_for_file, os.fspath(go), 3)
        wait_until(lambda: job.status is JobStatus.RUNNING, timeout=60)
        armed.touch()
        wait_until(pids.exists, timeout=60, message="a status query hangs")
        armed.unlink()
        go.touch()
        # Once killed with its child, the next query answers: the job's end is seen
        # (it once waited for the child to let go of the pipe, 300 s).
        assert job.result(timeout=30) == 3
        first = int(pids.read_text().split()[0])
        wait_until(lambda: not pids_alive([first]), timeout=10,
                   message="the hung query's child was killed with it")


def test_closing_while_a_status_query_hangs_leaves_nothing_of_it_running(tmp_path, monkeypatch):
    armed, pids = tmp_path / "armed", tmp_path / "pids"
    with on_fakebatch(tmp_path, monkeypatch,
                      shadows={"qstat": hanging_wrapper(armed, pids)}) as (_, sched):
        job = sched.submit(wait_for_file, os.fspath(tmp_path / "never"), 3)
        wait_until(lambda: job.status is JobStatus.RUNNING, timeout=60)
        armed.touch()
        wait_until(pids.exists, timeout=60, message="a status query hangs")
        job.cancel()
    child = int(pids.read_text().split()[0])
    wait_until(lambda: not pids_alive([child]), timeout=10,
               message="closing killed the hung query and its child")


def test_a_run_directory_with_a_line_break_is_refused_before_anything_is_submitted(
        tmp_path, monkeypatch):
    """Schedulers print paths raw in their status answers (OpenPBS's Submit_arguments):
    a line break there could be read as the job's state."""
    cluster = FakeBatch(tmp_path / "fakebatch")
    cluster.root.mkdir()
    for name, value in cluster.environ().items():
        monkeypatch.setenv(name, value)
    try:
        with registered(), corral.Scheduler(backend="fakebatch",
                                            workdir=tmp_path / "run\n    job_state = F") as sched:
            job = sched.submit(square, 2)
            with pytest.raises(corral.JobFailed):
                job.result(timeout=60)
        assert job.reason.startswith("not submitted: the run directory ")
        assert job.reason.endswith("holds a line break, which a scheduler's answer would "
                                   "not keep apart")
        assert cluster.calls("qsub") == []
    finally:
        cluster.stop()


@pytest.mark.parametrize("owner, words", [("script", ("queue=", "partition=")),
                                          ("daemon", ("--queue", "--partition"))])
def test_a_clusters_queue_asked_as_queue_is_pointed_to_partition(tmp_path, monkeypatch, owner,
                                                                 words):
    """Cold review (a Torque user): ``queue="batch"`` was "unknown queue", with
    nothing to say that corral's queue= is its own and the cluster's is partition=;
    ``corral submit --queue`` is told the flags (fyrd review: it was told partition=)."""
    refused = (rf"^job 'add' asks for unknown queue 'batch'; this scheduler has no queues "
               rf"\(.*\); {words[0]} is one of corral's own queues: a cluster's queue is "
               rf"{words[1]}$")
    with on_fakebatch(tmp_path, monkeypatch) as (_, sched), \
            pytest.raises(ValueError, match=refused):
        sched._owner_kind = owner  # (the daemon's Scheduler is made so: see corral.cli.daemon)
        sched.options(queue="batch").submit(add, 1, 2)


def test_a_cancel_the_scheduler_does_not_answer_holds_neither_cancel_nor_other_jobs(
        tmp_path, monkeypatch, caplog):
    """A sysadmin's review: a qdel that hung held ``cancel()``, and every other
    job of the run, for the command's whole minute. Now the loop waits a few
    seconds, says the job may still run, and logs the late answer."""
    caplog.set_level(logging.INFO, logger="corral")
    monkeypatch.setattr("corral.backends.batch.base.CANCEL_PATIENCE_S", 0.5)
    release, answer = tmp_path / "release", tmp_path / "answer"
    hung = f"while [ ! -e {shlex.quote(os.fspath(answer))} ]; do sleep 0.05; done"
    pidfile = tmp_path / "pid"
    with on_fakebatch(tmp_path, monkeypatch, shadows={"qdel": hung}) as (_, sched):
        job = sched.submit(write_pid_and_wait, os.fspath(pidfile), os.fspath(release))
        # (its call under way: a job whose runtime has not begun is taken back, no doubt)
        wait_until(lambda: job.status is JobStatus.RUNNING and pidfile.exists(),
                   message="the job to run")
        asked = time.monotonic()
        assert job.cancel() and job.status is JobStatus.CANCELLED
        assert time.monotonic() - asked < 10  # (the command's own limit is 60 s)
        assert job.reason == ("cancelled by user; but the scheduler has not answered the cancel "
                              "yet (qdel still runs after 0.5 s; its answer goes to the log): it "
                              "may still run; check with the scheduler")
        assert sched.submit(add, 2, 3).result(timeout=60) == 5  # the run goes on meanwhile
        answer.touch()
        wait_until(lambda: re.search(r"qdel \S+ answered late: the cancel went through",
                                     caplog.text),
                   message="the late answer to be logged")
    release.touch()


def test_a_program_that_closes_while_a_cancel_hangs_waits_a_few_seconds_not_a_minute(
        tmp_path, monkeypatch, caplog):
    """Re-attack: the close waited for each unanswered cancel's whole minute."""
    monkeypatch.setattr("corral.backends.batch.base.CANCEL_PATIENCE_S", 0.5)
    release = tmp_path / "release"
    pidfile = tmp_path / "pid"
    with on_fakebatch(tmp_path, monkeypatch, shadows={"qdel": "sleep 600"}) as (_, sched):
        job = sched.submit(write_pid_and_wait, os.fspath(pidfile), os.fspath(release))
        wait_until(lambda: job.status is JobStatus.RUNNING and pidfile.exists(),
                   message="the job to run")
        job.cancel()
        closing = time.monotonic()
    assert time.monotonic() - closing < 20  # (the close's own cancel waits on qdel too)
    assert "has not answered at the close: its jobs may still run" in caplog.text
    release.touch()


def test_a_job_over_the_runs_own_cap_on_a_cluster_is_refused_not_left_waiting(tmp_path,
                                                                               monkeypatch):
    """A sysadmin's review: with ``[daemon] cores = 2`` (or ``Scheduler(cores=2)``)
    on a cluster backend, a 4-core job waited for ever, never submitted and
    never said why; the local backend refuses such a job at once."""
    with on_fakebatch(tmp_path, monkeypatch) as (cluster, sched):
        sched._engine.backend._capacity = type(sched._engine.backend._capacity)(2, 2048, None)
        with pytest.raises(corral.ResourceError, match=r"asks for 4 cores but cores=2 caps what "
                                                       r"this run has in flight on fakebatch"):
            sched.options(cores=4).submit(add, 1, 2)
        with pytest.raises(corral.ResourceError, match=r"asks for 4096 MB of memory but "
                                                       r"memory=2048 MB caps"):
            sched.options(memory="4G").submit(add, 1, 2)
        assert sched.options(cores=2).submit(add, 1, 2).result(timeout=60) == 3
        assert cluster.calls("qsub")


def test_a_cancel_the_scheduler_refuses_says_the_job_may_still_run(tmp_path, monkeypatch):
    """Cold review (a site's scheduler): a qdel that answered "permission denied"
    left the job running in the cluster, and corral said it was cancelled."""
    release, started = tmp_path / "release", tmp_path / "started"
    with on_fakebatch(tmp_path, monkeypatch, shadows={
            "qdel": "echo 'qdel: permission denied' >&2; exit 3"}) as (_, sched):
        job = sched.submit(note_run_then_wait, os.fspath(started), os.fspath(release), 1)
        # Begun in the cluster, not only RUNNING as the cluster says: one the cancel
        # claims before its runtime does never starts, and is no doubt (a loaded
        # machine's CI run).
        wait_until(started.exists, message="the job to begin")
        wait_until(lambda: job.status is JobStatus.RUNNING, message="the job to run")
        assert job.cancel() and job.status is JobStatus.CANCELLED
        assert job.reason == ("cancelled by user; but the scheduler refused to end it (qdel "
                              "exited 3: qdel: permission denied): it may still run; check with "
                              "the scheduler")
        release.touch()  # (the fake cluster runs it to its end)


def test_a_job_its_runtime_saw_aborted_ends_aborted_for_any_driver_and_runs_again(
        tmp_path, monkeypatch):
    """Re-attack review: after `corral abort`, a driver killed before it read the
    aborted chunk's result file left it to the next driver, which took the chunk's
    partial work for a completion and restored it: the map lost calls silently.
    The runtime notes the abort in the result file; any driver ends the job as
    aborted (here one that never asked), and a rerun runs it again."""
    run = tmp_path / "run"
    with on_fakebatch(tmp_path, monkeypatch, journal=run) as (_, sched):
        job = sched.submit(stop_as_if_aborted)
        corral.wait([job], timeout=60)
    assert (job.status, job.reason) == (JobStatus.CANCELLED, "aborted")
    (tmp_path / "again").mkdir()
    with on_fakebatch(tmp_path / "again", monkeypatch, journal=run) as (_, sched):
        again = sched.submit(stop_as_if_aborted)
        corral.wait([again], timeout=60)
    assert (again.status, again.reason) == (JobStatus.CANCELLED, "aborted")  # ran, not restored
    assert corral.Scheduler.open(run).job(again.id).attempts == 2
