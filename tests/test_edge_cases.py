"""Corners found in review: each was a hang, a crash or a confusing message once."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import shutil
from pathlib import Path

import pytest

import corral
from corral import Job, JobStatus

import jobs
from support.waiting import wait_until


def test_collect_right_after_submit_waits_for_that_job(scheduler):
    scheduler.dispatch([Job(jobs.square, (7,))])
    [result] = scheduler.collect(1, timeout=30)
    assert result.data == 49


@pytest.mark.parametrize("chunksize", [1, "auto"])
def test_scheduler_wait_waits_for_every_call_of_a_map(scheduler, chunksize):
    """Cold review (a futures user): wait() after a map of 5,000 calls returned
    with a quarter of them run, the later ones not yet dispatched."""
    results = scheduler.map(jobs.square, range(5000), chunksize=chunksize)
    assert scheduler.wait(timeout=120) is True
    scheduler.shutdown(cancel_futures=True)  # (would cancel what had not been dispatched)
    assert list(results) == [n * n for n in range(5000)]


def test_a_job_cancelled_before_dispatch_is_refused(scheduler):
    job = Job(jobs.noop)
    job.cancel()
    with pytest.raises(ValueError, match=r"cannot be dispatched: it is CANCELLED"):
        scheduler.dispatch([job])


def test_shutting_down_a_paused_scheduler_finishes_its_queued_jobs():
    with corral.Scheduler(cores=1) as sched:
        sched.pause()
        queued = [sched.submit(jobs.square, i) for i in range(3)]
    assert [job.result(timeout=0) for job in queued] == [0, 1, 4]


@pytest.mark.parametrize("chunksize", [1, "auto"])
def test_shutting_down_a_paused_scheduler_finishes_a_map_it_was_running(
        monkeypatch: pytest.MonkeyPatch, chunksize):
    """BUG: the map's feeder, which dispatches the next calls as the ones
    before end, was waited for before the scheduler resumed: it hung for ever."""
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 5)
    with corral.Scheduler(cores=1) as sched:
        squares = sched.map(jobs.square, range(40), chunksize=chunksize)
        assert next(squares) == 0
        sched.pause()
    assert list(squares) == [number * number for number in range(1, 40)]


def test_cancelling_the_next_job_of_a_full_queue_does_not_strand_the_rest(tmp_path, release):
    with corral.Scheduler(cores=2, queues={"io": 1}) as sched:
        first = sched.options(queue="io").submit(jobs.wait_for_file, str(release))
        wait_until(first.running)
        second = sched.options(queue="io").submit(jobs.noop)
        third = sched.options(queue="io").submit(jobs.square, 3)
        sched.pause()
        release.touch()
        first.result(timeout=30)
        second.cancel()
        sched.resume()
        assert third.result(timeout=30) == 9


def test_waiting_from_a_callback_is_refused_instead_of_hanging(scheduler):
    problems: list[BaseException] = []

    def impatient(event):
        if event.new is JobStatus.COMPLETED:
            try:
                scheduler.wait()
            except RuntimeError as error:
                problems.append(error)

    scheduler.on_event(impatient)
    scheduler.submit(jobs.noop).result(timeout=30)
    wait_until(lambda: problems)
    refusal = "wait() cannot be called from an on_event, on_finish or done callback"
    assert refusal in str(problems[0])


def test_a_job_whose_directory_vanished_fails_without_leaking_its_environment(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    with corral.Scheduler(cores=1) as sched:
        sched.submit(jobs.noop).result(timeout=30)
        sched.pause()
        doomed = sched.options(cwd=gone, env={"LEAK": "yes"}).submit(jobs.noop)
        shutil.rmtree(gone)
        sched.resume()
        with pytest.raises(corral.JobFailed, match=r"^job 2 'noop' failed: could not start: cannot "
                                                   r"enter its cwd '.*/gone': No such file"):
            doomed.result(timeout=30)
        assert sched.submit(jobs.report_environment, "LEAK").result(timeout=30)["LEAK"] is None


def test_a_journaled_job_whose_cwd_vanished_reads_back_as_not_started(tmp_path):
    """Attack review: read back from the journal, it was corral's own OSError
    subclass (not a JobFailed), and corral status said it "raised"."""
    gone, run = tmp_path / "gone", tmp_path / "run"
    gone.mkdir()
    with corral.Scheduler(cores=1, journal=run) as sched:
        removed = sched.submit(os.rmdir, os.fspath(gone))
        doomed = sched.options(cwd=gone, after=[removed]).submit(jobs.noop)
        with pytest.raises(corral.JobFailed):
            doomed.result(timeout=30)
    [result] = [r for r in corral.Run(run).results() if r.id == doomed.id]
    assert isinstance(result.error, corral.JobFailed), repr(result.error)
    assert "could not start: cannot enter its cwd" in str(result.error)
    shown = subprocess.run([os.fspath(Path(sys.executable).with_name("corral")), "--run",
                            os.fspath(run), "status", str(doomed.id)], capture_output=True,
                           text=True, timeout=60)
    assert "raised" not in shown.stdout and "could not start: cannot enter its cwd" in \
        shown.stdout, shown.stdout


def test_a_return_value_the_driver_cannot_load_fails_only_that_job(scheduler, tmp_path):
    module_dir = tmp_path / "only_in_worker"
    module_dir.mkdir()
    (module_dir / "private_kind.py").write_text("class Thing:\n    pass\n")
    code = (f"import sys; sys.path.insert(0, {str(module_dir)!r}); "
            "import private_kind; result = private_kind.Thing()")
    job = scheduler.submit(jobs.run_code, code)
    with pytest.raises(corral.JobFailed, match=r"^job \d+ 'run_code': its return value cannot "
                                               r"be unpickled here: ModuleNotFoundError"):
        job.result(timeout=30)
    assert scheduler.submit(jobs.square, 3).result(timeout=30) == 9


@pytest.mark.parametrize("command, message", [
    (b"ls", r"shell\(\) takes a command string or a list of arguments, not b'ls'"),
    (5, r"shell\(\) takes a command string or a list of arguments, not 5"),
    (None, r"shell\(\) takes a command string or a list of arguments, not None"),
])
def test_shell_refuses_what_is_not_a_command(scheduler, command, message):
    with pytest.raises(ValueError, match=message):
        scheduler.shell(command)


@pytest.mark.parametrize("job_id", ["", ".", "..", "../x", "a/b"])
def test_job_ids_that_would_escape_the_workdir_are_refused(scheduler, job_id):
    with pytest.raises(ValueError, match=r"cannot name a directory"):
        scheduler.dispatch([Job(jobs.noop, id=job_id)])


def test_absurd_sizes_get_a_message_not_an_overflow():
    with pytest.raises(ValueError, match=r"memory=.* must be a positive memory size below 1 EB"):
        Job(jobs.noop, memory=10**400)
    with pytest.raises(ValueError,
                       match=r"timeout=.* must be a positive duration of at most 100 years"):
        Job(jobs.noop, timeout=10**400)


@pytest.mark.parametrize("moment", [JobStatus.SUBMITTED, JobStatus.RUNNING])
def test_cancel_from_an_event_callback_does_not_deadlock(scheduler, release, moment):
    cancelled: list[bool] = []

    def cancel_on_start(event):
        if event.new is moment and event.job.name == "wait_for_file":
            cancelled.append(event.job.cancel())

    scheduler.on_event(cancel_on_start)
    job = scheduler.submit(jobs.wait_for_file, str(release))
    with pytest.raises(concurrent.futures.CancelledError):
        job.result(timeout=30)
    assert cancelled == [True]
    assert scheduler.submit(jobs.square, 2).result(timeout=30) == 4


def test_a_job_that_deletes_its_own_directory_does_not_break_the_worker(tmp_path):
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    with corral.Scheduler(cores=1) as sched:
        sched.options(cwd=doomed).submit(shutil.rmtree, str(doomed)).result(timeout=30)
        assert sched.submit(jobs.report_environment).result(timeout=30)["cwd"] != str(doomed)
