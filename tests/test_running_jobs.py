"""Running jobs and getting their results back, the way a user would."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import corral
from corral import JobStatus

import jobs
from support.processes import pids_alive
from support.waiting import wait_until


def test_submitted_calls_return_their_results(scheduler):
    handles = [scheduler.submit(jobs.square, i) for i in range(20)]
    assert [job.result(timeout=30) for job in handles] == [i * i for i in range(20)]
    assert all(job.status is JobStatus.COMPLETED for job in handles)


def test_a_call_sees_the_drivers_command_line_as_its_sys_argv(scheduler):
    """Cold review: it saw the worker's (file descriptors and paths), so a
    function that read its options with argparse read those."""
    assert scheduler.submit(jobs.command_line).result(timeout=30) == sys.argv


def test_a_worker_gets_the_drivers_sys_path_and_argv_whatever_their_entries_hold(tmp_path):
    """They travel as the worker's arguments, one entry each: an empty entry, one
    with spaces, a newline or a leading dash, and an argument that looks like a
    number of entries, all arrive as they were."""
    odd = tmp_path / "a b\nc -x"
    odd.mkdir()
    (odd / "oddly_placed.py").write_text("WHERE = 'odd'\n")
    script = tmp_path / "driver.py"
    script.write_text(
        "import sys, corral\n"
        f"sys.path[:0] = ['', {str(odd)!r}, '--']\n"
        "def where():\n"
        "    import oddly_placed\n"
        "    return oddly_placed.WHERE, sys.path, sys.argv\n"
        "if __name__ == '__main__':\n"
        "    with corral.Scheduler(cores=1) as scheduler:\n"
        "        found, path, argv = scheduler.submit(where).result(timeout=60)\n"
        "    print(found, path == sys.path, argv == sys.argv, argv[1:])\n")
    done = subprocess.run([sys.executable, str(script), "3", "", "-c", "x\ny"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.stdout == "odd True True ['3', '', '-c', 'x\\ny']\n", done.stderr


SCRIPT_OF_ITS_OWN_CLASSES = """
import dataclasses, functools, json, corral

@dataclasses.dataclass
class Point:
    x: int

def double(point):
    return point.x * 2

def add(a, b):
    return a + b

with corral.Scheduler(cores=1) as scheduler:
    print(json.dumps([scheduler.submit(double, Point(21)).result(timeout=30),
                      scheduler.submit(functools.partial(add, 5), 1).result(timeout=30),
                      list(scheduler.map(double, [Point(1), Point(2)])),
                      list(scheduler.map(double, [Point(3)] * 3, chunksize=2))]))
"""


def test_arguments_of_the_scripts_own_classes_and_partials_of_its_functions_travel(
        tmp_path: Path):
    """BUG (attack): an argument naming the script's __main__ (an instance of a
    class it defines, a partial of its function) pickled by reference, and the
    worker, whose __main__ is not the script, failed to load it;
    ProcessPoolExecutor runs them."""
    (tmp_path / "own.py").write_text(SCRIPT_OF_ITS_OWN_CLASSES)
    done = subprocess.run([sys.executable, "own.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == [42, 6, [2, 4], [6, 6, 6]]


def test_a_nan_timeout_waits_not_at_all_and_an_endless_one_waits_in_every_thread(scheduler,
                                                                                  release):
    """BUG (attack): result(timeout=nan) in the main thread waited for the job
    (ProcessPoolExecutor raises TimeoutError at once), and timeout=inf waited
    there but raised OverflowError in other threads."""
    held = scheduler.submit(jobs.wait_for_file, str(release), value="done")
    seen: dict[str, object] = {}

    def in_a_thread() -> None:
        try:
            held.result(timeout=float("nan"))
        except TimeoutError:
            seen["nan"] = "TimeoutError"
        seen["inf"] = held.result(timeout=float("inf"))

    with pytest.raises(TimeoutError):
        held.result(timeout=float("nan"))
    waiter = threading.Thread(target=in_a_thread)
    waiter.start()
    wait_until(lambda: "nan" in seen, message="the thread's nan timeout")
    release.touch()
    assert held.result(timeout=1e300) == "done"
    waiter.join(timeout=30)
    assert seen == {"nan": "TimeoutError", "inf": "done"}


def test_corral_wait_as_completed_and_collect_read_nan_and_inf_as_result_does(scheduler,
                                                                              release):
    """BUG (attack): corral.wait and corral.as_completed (concurrent.futures'
    own) raised OverflowError for timeout=inf, as collect() did, and collect()
    and as_completed waited without limit for NaN."""
    held = scheduler.submit(jobs.wait_for_file, str(release), value="done")
    assert corral.wait([held], timeout=float("nan")).not_done == {held}
    with pytest.raises(TimeoutError):
        next(corral.as_completed([held], timeout=float("nan")))
    scheduler.dispatch([corral.Job(jobs.wait_for_file, (str(release),))])
    with pytest.raises(TimeoutError):
        scheduler.collect(1, timeout=float("nan"))
    release.touch()
    assert corral.wait([held], timeout=float("inf")).done == {held}
    assert list(corral.as_completed([held], timeout=1e300)) == [held]
    assert len(scheduler.collect(1, timeout=float("inf"))) == 1


def test_map_returns_results_in_order(scheduler):
    assert list(scheduler.map(jobs.add, range(5), range(5))) == [0, 2, 4, 6, 8]


def test_closures_and_lambdas_from_the_script_run_too(scheduler):
    offset = 10
    assert scheduler.submit(lambda x: x + offset, 5).result(timeout=30) == 15


def test_a_raised_exception_comes_back_as_itself_with_the_remote_traceback(scheduler):
    job = scheduler.submit(jobs.raise_custom, "the sample was empty")
    with pytest.raises(jobs.CustomError, match="the sample was empty") as caught:
        job.result(timeout=30)
    assert isinstance(caught.value.__cause__, corral.RemoteTraceback)
    assert "raise_custom" in str(caught.value.__cause__)
    assert job.status is JobStatus.FAILED
    assert job.reason == "raised CustomError: the sample was empty"


def test_an_exception_that_refuses_to_be_pickled_comes_back_as_itself_less_what_cannot_travel(
        scheduler):
    job = scheduler.submit(jobs.raise_unpicklable)
    with pytest.raises(jobs.UnpicklableError, match=r"^cannot travel\n") as caught:
        job.result(timeout=30)
    assert caught.value.__notes__ == [
        "corral: attributes that could not travel from the worker: handle (TypeError: cannot "
        "pickle '_thread.lock' object)"]
    assert isinstance(caught.value.__cause__, corral.RemoteTraceback)
    assert job.reason == "raised UnpicklableError: cannot travel"


def test_an_exception_whose_class_takes_other_arguments_comes_back_as_itself(scheduler):
    """Cold review: an exception made as CodedError(42, "boom") (its class
    gives Exception one argument of two) or with keyword-only arguments came
    back as JobFailed: `except CodedError` missed it and its attributes were
    lost. Unpickled as pickle does it, it would call CodedError("boom")."""
    with pytest.raises(jobs.CodedError, match=r"^boom$") as coded:  # (no note)
        scheduler.submit(jobs.raise_coded, 42, "boom").result(timeout=30)
    assert (coded.value.args, coded.value.code) == (("boom",), 42)
    assert "raise_coded" in str(coded.value.__cause__)
    with pytest.raises(jobs.KeywordError, match=r"^why$") as keyword:
        scheduler.submit(jobs.raise_keyword, "why").result(timeout=30)
    assert keyword.value.reason == "why" and not hasattr(keyword.value, "__notes__")


def test_a_return_value_that_cannot_be_pickled_fails_the_job_clearly(scheduler):
    job = scheduler.submit(jobs.return_unpicklable)
    with pytest.raises(corral.NotPicklable, match="the job's return value cannot be pickled"):
        job.result(timeout=30)


def test_shell_commands_and_argv_lists_run(scheduler, tmp_path):
    target = tmp_path / "made"
    ok = scheduler.shell(f"echo made > {target}")
    listed = scheduler.shell(["sh", "-c", "echo $0", "arg zero"])
    assert ok.result(timeout=30) is None and target.read_text() == "made\n"
    listed.result(timeout=30)
    assert listed.stdout == "arg zero\n"
    assert ok.record.exit_code == 0


def test_a_failing_command_reports_exit_code_and_stderr_tail(scheduler):
    job = scheduler.shell("echo first >&2; echo 'disk full' >&2; exit 7", name="copy")
    with pytest.raises(corral.JobFailed,
                       match=r"job 1 'copy' failed: exit code 7\n"
                             r"last lines of its stderr .*\nfirst\ndisk full") as caught:
        job.result(timeout=30)
    assert caught.value.exit_code == 7
    assert job.record.exit_code == 7 and job.reason == "exit code 7"


def test_a_call_that_exits_with_a_status_reports_that_status(scheduler):
    """A call's sys.exit(2) read exit code 1, where the same code as a script
    exits 2 (a review, stop 55)."""
    exited = scheduler.submit(sys.exit, 2)
    with pytest.raises(SystemExit):
        exited.result(timeout=30)
    assert exited.record.exit_code == 2 and exited.reason == "raised SystemExit: 2"
    raised = scheduler.submit(jobs.raise_custom, "no")
    with pytest.raises(jobs.CustomError):
        raised.result(timeout=30)
    assert raised.record.exit_code == 1


def test_the_stderr_tail_of_a_huge_stderr_is_its_last_lines_cut_short(scheduler):
    """Attack review: 200 MB of stderr were read whole into the error message
    (and the notice mail), on the control thread."""
    job = scheduler.shell("head -c 3000000 /dev/zero | tr '\\0' y >&2; echo >&2; "
                          "head -c 20000 /dev/zero | tr '\\0' x >&2; "
                          "echo ' error: at its end' >&2; "
                          "echo the last words >&2; exit 1")
    with pytest.raises(corral.JobFailed) as caught:
        job.result(timeout=60)
    message = str(caught.value)
    # A long line keeps its end, where an error says what went wrong (re-attack review).
    assert message.endswith("[line cut short ...] " + "x" * 982 + " error: at its end\n"
                            "the last words"), message[-200:]
    assert len(message) < 2000 and "y" not in message.partition("\n")[2].partition(":")[2]
    assert len(job.stderr) == 3_020_035  # all of it is still in job.stderr


def test_a_command_that_cannot_start_fails_with_the_reason(scheduler):
    job = scheduler.shell(["/no/such/program"])
    with pytest.raises(corral.JobFailed, match=r"could not start: .*No such file"):
        job.result(timeout=30)


def test_scripts_run_in_a_fresh_interpreter_with_argv(scheduler, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import sys\nprint(' '.join(sys.argv[1:]))\nsys.exit(int(sys.argv[1]))\n")
    ok = scheduler.script(script, 0, "fine")
    bad = scheduler.script(script, 3, "broken")
    ok.result(timeout=30)
    assert ok.stdout == "0 fine\n"
    with pytest.raises(corral.JobFailed, match="exit code 3"):
        bad.result(timeout=30)


def test_module_functions_run_by_name(scheduler):
    dumped = scheduler.call("json:dumps", [1, 2], kwargs={"indent": None})
    assert dumped.result(timeout=30) == "[1, 2]"
    assert scheduler.call("os.path:join", "a", "b").result(timeout=30) == "a/b"


def test_stdout_and_stderr_of_python_and_its_children_go_to_the_job(scheduler):
    job = scheduler.submit(jobs.talk, "hello")
    job.result(timeout=30)
    assert job.stdout == "py-out hello\nchild-out hello\n"
    assert job.stderr == "py-err hello\nchild-err hello\n"
    assert (job.jobdir / "stdout").read_text() == job.stdout
    assert scheduler.submit(jobs.noop).stdout == ""


def test_output_of_a_running_job_can_be_read_while_it_runs(scheduler, release):
    job = scheduler.submit(jobs.wait_for_file, str(release), say="halfway")
    command = scheduler.shell(f"echo step one; while [ ! -e {release} ]; do sleep 0.01; done")
    wait_until(lambda: job.stdout == "halfway\n" and command.stdout == "step one\n")
    release.touch()
    job.result(timeout=30)
    command.result(timeout=30)
    assert job.stdout == "halfway\n" and command.stdout == "step one\n"


@pytest.mark.parametrize("ended_by", ["its timeout", "a cancel", "its worker's death"])
def test_a_call_killed_or_lost_while_it_runs_keeps_what_it_wrote(scheduler, ended_by):
    """BUG (cold review): a call is stopped by killing its worker, and what it
    had written stayed in the worker's spool files: `job.stdout` and `corral
    logs` said it wrote nothing, for the very jobs whose output is read most."""
    options = {"timeout": "1s"} if ended_by == "its timeout" else {}
    job = scheduler.options(**options).submit(
        jobs.say_then, "last words", "exit" if ended_by == "its worker's death" else "wait")
    if ended_by == "a cancel":
        # (Both lines whole: print() writes its newline apart, and a cancel between the
        # two left "err last words" without it: a flaky run under load.)
        wait_until(lambda: job.stdout == "out last words\n" and job.stderr == "err last words\n",
                   message="the job's lines")
        assert job.cancel()
        read = set()  # (attack review: read as "" while its worker's spool was moved)
        deadline = time.monotonic() + 30
        while not (job.jobdir / "stdout").exists() and time.monotonic() < deadline:
            read.add(job.stdout)
        assert read <= {"out last words\n"}
    corral.wait([job], timeout=30)
    assert job.status is {"its timeout": JobStatus.TIMED_OUT, "a cancel": JobStatus.CANCELLED,
                          "its worker's death": JobStatus.FAILED}[ended_by]
    assert job.stdout == "out last words\n" and job.stderr == "err last words\n"
    # (A cancel ends the job at once; its worker's end, and so the move, follows.)
    wait_until(lambda: (job.jobdir / "stdout").exists(), message="the job's own stdout file")
    assert (job.jobdir / "stdout").read_text() == "out last words\n"
    assert job.stdout == "out last words\n" and job.stderr == "err last words\n"
    after = scheduler.submit(jobs.talk, "next")  # the next job on a new worker: its own output
    after.result(timeout=30)
    assert after.stdout == "py-out next\nchild-out next\n"


def test_output_is_kept_after_a_temporary_workdir_is_removed():
    with corral.Scheduler(cores=1) as sched:
        job = sched.submit(jobs.talk, "kept")
        large = sched.shell("head -c 5000000 /dev/zero")  # (its files stay: see below)
        corral.wait([job, large], timeout=30)
        run_dir = sched._run_dir
        sched.shutdown()  # and again leaving the block (review: the second emptied job.stdout)
    assert job.stdout.startswith("py-out kept")
    del large
    __import__("gc").collect()
    assert not run_dir.exists()


def test_a_large_output_stays_in_its_file_until_its_job_is_freed_not_in_memory():
    """Attack review: a temporary run copied every held job's output into memory
    as it removed its files; 200 MB of stderr became 400 MB of the driver's."""
    import gc

    with corral.Scheduler(cores=1) as sched:
        large = sched.shell("head -c 6000000 /dev/zero | tr '\\0' x")
        small = sched.shell("echo small")
        corral.wait([large, small], timeout=60)
        run_dir = sched._run_dir
    assert [path.name for path in run_dir.iterdir()] == [str(large.id)]
    assert large._record.kept_output is None and small._record.kept_output is not None
    assert len(large.stdout) == 6_000_000 and small.stdout == "small\n"
    del large
    gc.collect()
    assert not run_dir.exists()


def test_env_and_cwd_options_reach_python_calls_and_commands(scheduler, tmp_path):
    call = scheduler.options(env={"STAGE": "two"}, cwd=tmp_path).submit(
        jobs.report_environment, "STAGE", "CORRAL_JOB_ID")
    assert call.result(timeout=30) == {"STAGE": "two", "CORRAL_JOB_ID": str(call.id),
                                       "cwd": str(tmp_path)}
    command = scheduler.shell("echo $STAGE $(pwd)", env={"STAGE": "three"}, cwd=tmp_path)
    command.result(timeout=30)
    assert command.stdout == f"three {tmp_path}\n"
    assert scheduler.submit(jobs.report_environment, "STAGE").result(timeout=30)["STAGE"] is None


def test_the_record_describes_a_finished_job(scheduler):
    job = scheduler.submit(jobs.square, 4)
    job.result(timeout=30)
    record = job.record
    assert (record.id, record.name, record.data, record.status, record.exit_code,
            record.attempts) == (job.id, "square", 16, JobStatus.COMPLETED, 0, 1)
    assert record.started <= record.ended and record.ok


def test_repr_tells_the_state_at_a_glance(scheduler, release):
    job = scheduler.options(name="train").submit(jobs.wait_for_file, str(release))
    wait_until(job.running)
    assert repr(job) == f"<Job 1 'train' RUNNING on local:{job.native_id}>"
    release.touch()
    job.result(timeout=30)
    assert repr(job) == "<Job 1 'train' COMPLETED>"
    cores = scheduler._slots
    assert repr(scheduler) == f"<Scheduler local, {cores} core{'s' * (cores != 1)}: 1 completed>"
    with corral.Scheduler(cores=2) as other:
        assert repr(other) == "<Scheduler local, 2 cores: no jobs>"


def test_result_with_a_timeout_raises_timeout_error_and_the_job_goes_on(scheduler, release):
    job = scheduler.submit(jobs.wait_for_file, str(release), value="late")
    with pytest.raises(TimeoutError):
        job.result(timeout=0.05)
    release.touch()
    assert job.result(timeout=30) == "late"


def test_concurrent_futures_wait_and_as_completed_work_on_jobs(scheduler):
    handles = [scheduler.submit(jobs.square, i) for i in range(6)]
    done, not_done = concurrent.futures.wait(handles, timeout=30)
    assert not not_done and len(done) == 6
    finished = corral.as_completed(handles, timeout=30)
    assert sorted(job.result() for job in finished) == [0, 1, 4, 9, 16, 25]


def test_jobs_can_be_awaited_from_asyncio(scheduler):
    async def main():
        first = await scheduler.submit(jobs.square, 3)
        second = await asyncio.wrap_future(scheduler.submit(jobs.square, 4))
        return first, second

    assert asyncio.run(main()) == (9, 16)


def test_asyncio_wait_given_a_job_says_to_pass_a_task_and_takes_one(scheduler):
    """Race review: asyncio.wait([job]) put its loop's callback on the Job, which
    corral's thread ran: the program hung for good."""
    async def main():
        job = scheduler.submit(jobs.square, 5)
        with pytest.raises(TypeError, match=r"^<Job \d+ 'square' [^>]+> is no asyncio future: "
                                            r"asyncio\.wait\(\) takes tasks; pass "
                                            r"asyncio\.ensure_future\(job\), or await the job$"):
            await asyncio.wait_for(asyncio.wait([job]), 30)
        done, _ = await asyncio.wait([asyncio.ensure_future(job)], timeout=30)
        return [task.result() for task in done]

    assert asyncio.run(main()) == [25]


def test_async_with_waits_for_the_jobs_while_the_event_loop_goes_on(tmp_path):
    """Cold review: `async with corral.Scheduler()` raised TypeError (no
    asynchronous context manager); it waits for the jobs as `with` does, in a
    thread, and an exception leaving it cancels those left."""
    release = tmp_path / "release"

    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while not release.exists():
                ticks += 1
                if ticks == 3:
                    release.touch()  # (the loop ran while the block was being left)
                await asyncio.sleep(0.05)

        async with corral.Scheduler(cores=1) as scheduler:
            waited = scheduler.submit(jobs.wait_for_file, str(release), 7)
            ticker = asyncio.create_task(tick())
        await ticker
        with pytest.raises(ZeroDivisionError):
            async with corral.Scheduler(cores=1) as scheduler:
                left = scheduler.submit(jobs.sleep_for, 60)
                raise ZeroDivisionError("the block fails")
        return waited, left

    waited, left = asyncio.run(main())
    assert waited.result(timeout=0) == 7
    assert left.status is JobStatus.CANCELLED
    assert left.reason == "interrupted: the with block raised ZeroDivisionError"


async def left_with_jobs_waiting(tmp_path, count: int) -> tuple[asyncio.Task, list]:
    """A task that left an ``async with Scheduler()`` block holding *count*
    jobs that wait for ever: it waits in ``__aexit__`` when this returns."""
    started = asyncio.Event()
    handles: list = []

    async def leave_the_block():
        async with corral.Scheduler(cores=2) as scheduler:
            handles.extend(scheduler.submit(jobs.wait_for_file, str(tmp_path / "never"))
                           for _ in range(count))
            started.set()

    task = asyncio.create_task(leave_the_block())
    await started.wait()
    return task, handles


def test_a_task_cancelled_while_its_async_with_block_waits_cancels_the_jobs(tmp_path):
    """Attack review: the thread waiting for the jobs went on unseen, so Ctrl-C
    under asyncio.run (which cancels the main task) or a timeout around the
    block ended the program only once every job had ended."""
    async def main():
        task, handles = await left_with_jobs_waiting(tmp_path, 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return handles

    handles = asyncio.run(asyncio.wait_for(main(), 60))
    assert [job.status for job in handles] == [JobStatus.CANCELLED] * 3
    assert handles[0].reason == (
        "interrupted: the task leaving the async with block was cancelled "
        "(Ctrl-C under asyncio.run, a timeout, or Task.cancel())")


def test_leaving_async_with_needs_no_thread_of_the_loops_executor_and_a_second_cancel_waits(
        tmp_path, monkeypatch):
    """Re-attack review: the wait ran in the loop's default executor, so a
    program whose own run_in_executor calls filled it cancelled nothing until
    they ended; and a second cancel left the block before the jobs had ended."""
    cancelling, cancelled_again = threading.Event(), threading.Event()
    interrupt = corral.Scheduler._interrupt

    def interrupt_once_asked_again(self, reason):  # (the second cancel comes meanwhile)
        cancelling.set()
        cancelled_again.wait(30)
        return interrupt(self, reason)

    monkeypatch.setattr(corral.Scheduler, "_interrupt", interrupt_once_asked_again)

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        unblock = threading.Event()
        blocker = loop.run_in_executor(None, unblock.wait, 60)  # (the pool's one thread)
        task, handles = await left_with_jobs_waiting(tmp_path, 2)
        task.cancel()
        while not cancelling.is_set():  # (no thread of the pool to wait on: it is taken)
            await asyncio.sleep(0.01)
        task.cancel()
        cancelled_again.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        ended = [job.done() for job in handles]
        unblock.set()
        await blocker
        return handles, ended

    handles, ended = asyncio.run(asyncio.wait_for(main(), 60))
    assert ended == [True, True]
    assert [job.status for job in handles] == [JobStatus.CANCELLED] * 2


def test_a_timeout_of_asyncio_wait_for_cancels_the_job_and_says_so_and_shield_keeps_it(
        scheduler, tmp_path):
    release = tmp_path / "release"

    async def main():
        abandoned = scheduler.submit(jobs.wait_for_file, str(tmp_path / "never"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(abandoned, 0.5)
        kept = scheduler.submit(jobs.wait_for_file, str(release), "kept")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(kept), 0.5)
        assert not kept.done()
        release.write_text("go")
        return abandoned, await kept

    abandoned, value = asyncio.run(main())
    assert value == "kept"
    with pytest.raises(concurrent.futures.CancelledError):
        abandoned.result(timeout=30)
    assert abandoned.status is JobStatus.CANCELLED
    assert abandoned.reason == ("cancelled by asyncio: the task awaiting it was cancelled "
                                "(a timeout of asyncio.wait_for, or Task.cancel())")


def test_dispatch_then_collect_results_as_they_come(scheduler):
    batch = [corral.Job(jobs.square, (i,), id=f"run-{i}") for i in range(5)]
    scheduler.dispatch(batch)
    results = scheduler.collect(5, timeout=30)
    assert sorted((r.id, r.data) for r in results) == [(f"run-{i}", i * i) for i in range(5)]
    assert scheduler.collect() == []  # each result is collected once


def test_collect_times_out_when_results_are_late(scheduler, release):
    scheduler.dispatch([corral.Job(jobs.wait_for_file, (str(release),))])
    with pytest.raises(TimeoutError, match=r"only 0 of 1 results arrived within 0.05 s"):
        scheduler.collect(1, timeout=0.05)
    release.touch()
    assert len(scheduler.collect(1, timeout=30)) == 1


def test_collect_refuses_to_wait_for_results_that_can_never_come(scheduler):
    scheduler.dispatch([corral.Job(jobs.noop)])
    with pytest.raises(ValueError, match=r"collect\(3\) cannot be satisfied"):
        scheduler.collect(3)


def test_collect_also_reports_failures(scheduler):
    scheduler.dispatch([corral.Job(jobs.raise_custom, ("bad",), id="x")])
    [result] = scheduler.collect(1, timeout=30)
    assert result.status is JobStatus.FAILED and result.reason == "raised CustomError: bad"
    assert not result.ok


def test_dispatching_a_job_twice_is_refused(scheduler):
    job = corral.Job(jobs.noop)
    scheduler.dispatch([job])
    with pytest.raises(ValueError, match=r"<Job 1 'noop' .*> was already dispatched"):
        scheduler.dispatch([job])


def test_user_ids_must_be_unique(scheduler):
    scheduler.dispatch([corral.Job(jobs.noop, id="a")])
    with pytest.raises(ValueError, match=r"job id 'a' is already used in this scheduler"):
        scheduler.dispatch([corral.Job(jobs.noop, id="a")])


def test_leaving_the_with_block_waits_for_every_job(tmp_path):
    with corral.Scheduler(cores=2) as sched:
        handles = [sched.submit(jobs.sleep_for, 0.2) for _ in range(3)]
    assert all(job.done() and job.result() == 0.2 for job in handles)


def test_nothing_can_be_submitted_after_shutdown():
    sched = corral.Scheduler(cores=1)
    sched.shutdown()
    with pytest.raises(RuntimeError,
                       match="cannot dispatch jobs after the scheduler was shut down"):
        sched.submit(jobs.noop)


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": 4}, r"backend=4 must be a backend name such as 'local'; to set how many jobs run "
                     r"at once use Scheduler\(cores=N\)"),
    ({"backend": "lokal"}, r"unknown backend 'lokal'; did you mean 'local'\?"),
    ({"cores": 0}, r"cores=0 must be an int from 1 to 2147483647, or None for the backend's "
                   r"own \(on this machine: all its CPUs but one\)$"),
    ({"cores": -1}, r"cores=-1 must be an int from 1 to 2147483647, or None for the backend's "
                    r"own \(on this machine: all its CPUs but one\) \(-1 means all CPUs to "
                    r"joblib\)$"),
    ({"cores": 10**20}, r"cores=100000000000000000000 must be an int from 1 to 2147483647"),
    # (Attack review: 10**8 took a minute and 12 GB, each GPU numbered.)
    ({"gpus": 10**8}, r"gpus=100000000: no machine has that many; the local backend counts at "
                      r"most 4096"),
    ({"memory": "much"}, r"memory='much' is not a memory size"),
    ({"queues": {"io": 0}}, r"queues: capacity of 'io' is 0; it must be an int >= 1"),
    ({"queues": ["io"]}, r"queues=\['io'\] must be a dict of queue names to capacities"),
    ({"tokens": -2}, r"tokens=-2 must be an int from 0 to 2147483647"),
    ({"on_finish": "yes"}, r"on_finish='yes' must be a callable taking a Job"),
    ({"abort_grace": "0"}, r"abort_grace='0' is ambiguous"),
])
def test_bad_scheduler_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        corral.Scheduler(**kwargs)


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "afile"
    path.write_text("")
    with pytest.raises(ValueError, match=r"workdir=.* exists and is not a directory"):
        corral.Scheduler(workdir=path)


def test_jobs_and_qsize_filter_by_status_or_group(scheduler, release):
    blocker = scheduler.submit(jobs.wait_for_file, str(release))
    done = scheduler.submit(jobs.noop)
    done.result(timeout=30)
    wait_until(blocker.running)
    assert scheduler.jobs("running") == [blocker]
    assert scheduler.qsize("history") == 1 and scheduler.qsize(JobStatus.COMPLETED) == 1
    assert scheduler.qsize() == 2
    with pytest.raises(ValueError, match=r"unknown status 'runing' \(did you mean "
                                         r"'running'\?\); use a JobStatus or one of"):
        scheduler.jobs("runing")
    release.touch()


def test_python_version_is_supported():
    assert sys.version_info >= (3, 11)


def test_a_fork_based_pool_in_the_same_program_does_not_disturb_corral(scheduler):
    import multiprocessing

    assert scheduler.submit(jobs.square, 2).result(timeout=30) == 4  # workers exist before the fork
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        assert list(pool.map(jobs.square, range(4))) == [0, 1, 4, 9]
        commands = [scheduler.shell(["true"]) for _ in range(30)]
        calls = [scheduler.submit(jobs.square, i) for i in range(30)]
        assert [job.result(timeout=60) for job in calls] == [i * i for i in range(30)]
        assert all(job.result(timeout=60) is None for job in commands)


WRITE_AND_SAY_WHERE = """
import os, sys
sys.stdout.write(TEXT)
sys.stdout.flush()
result = os.fstat(1).st_ino
"""


def test_a_large_output_is_moved_to_the_jobs_file_not_copied_and_the_next_job_writes_afresh(
        tmp_path):
    """Attack review: a job that wrote 600 MB took 1.2 GB of disk while its
    spool file was copied to its own. From 1 MB the spool file is renamed and
    made anew; a small output is still copied (cheaper than a new file)."""
    with corral.Scheduler(cores=1, workdir=tmp_path) as scheduler:
        def run(text: str) -> tuple[corral.Job, int]:
            job = scheduler.submit(jobs.run_code, WRITE_AND_SAY_WHERE.replace("TEXT", text))
            return job, job.result(timeout=60)

        large, large_spool = run("'x' * 3_000_000")
        small, small_spool = run("'small'")
        after, after_spool = run("'after'")
    assert os.stat(large.jobdir / "stdout").st_ino == large_spool  # the very file it wrote
    assert large.stdout == "x" * 3_000_000
    assert small_spool != large_spool and os.stat(small.jobdir / "stdout").st_ino != small_spool
    assert (small.stdout, after.stdout) == ("small", "after")
    assert after_spool == small_spool  # (copied and emptied: the same spool goes on)


def test_a_jobs_own_keyboard_interrupt_is_not_said_to_be_a_ctrl_c(tmp_path):
    """Cold review: a job that raised KeyboardInterrupt, re-raised by result()
    as ProcessPoolExecutor does, left the other jobs cancelled for "the driver
    was interrupted (Ctrl-C, SIGINT)", where nobody pressed Ctrl-C."""
    with pytest.raises(KeyboardInterrupt), corral.Scheduler(cores=2, workdir=tmp_path) as scheduler:
        other = scheduler.submit(jobs.sleep_for, 60)
        scheduler.submit(jobs.run_code, "raise KeyboardInterrupt").result(timeout=60)
    assert other.status is JobStatus.CANCELLED
    assert other.reason == "interrupted: the with block raised KeyboardInterrupt"


@pytest.mark.parametrize("how", ["chdir", "chdir-and-delete", "close-fd-1", "devnull",
                                 "close-sys-stdout", "replace-sys-stdout", "alarm",
                                 "rebind-environ"])
def test_what_a_job_changes_in_its_worker_does_not_reach_the_next_job(tmp_path, how):
    """Attack review: a worker runs job after job, and the next job, even a
    command, ran in the directory an earlier call moved to (or failed, it
    deleted), with its environment; after one closed fd 1 or sys.stdout every
    later job failed "cannot save the job's output"; after one pointed them at
    /dev/null or replaced sys.stdout their output was lost; an alarm left set
    killed the next job."""
    where = tmp_path / "moved-to"
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        first = scheduler.submit(jobs.unsettle_the_worker, how, str(where))
        assert first.result(timeout=60) == how
        if how not in ("close-fd-1", "devnull", "close-sys-stdout", "replace-sys-stdout"):
            assert first.stdout == "before\n"
        call = scheduler.submit(jobs.what_the_worker_holds, 1.5 if how == "alarm" else 0)
        command = scheduler.shell("pwd; echo ${CORRAL_TEST_LEAKED-unset} $HOME")
        assert call.result(timeout=60) == (os.getcwd(), None, os.environ.get("HOME"))
        assert call.stdout == "hello\n"
        assert command.result(timeout=60) is None
        assert command.stdout == f"{os.getcwd()}\nunset {os.environ.get('HOME')}\n"
        assert call.record.data[0] == os.getcwd()


def test_a_command_that_stops_its_worker_is_still_killed_at_its_timeout(tmp_path):
    """Attack review: ``kill -STOP $PPID`` in a command stopped the worker that
    was to kill it: its timeout never fired (the job RUNNING 20 s later), and a
    SIGTERM of the driver did not end it."""
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        stopper = scheduler.options(timeout="1s").shell(
            "echo $$ > pid; kill -STOP $PPID; sleep 600", cwd=str(tmp_path))
        with pytest.raises(corral.JobTimedOut, match=r"timed out after 1\.0s"):
            stopper.result(timeout=30)
        assert scheduler.shell("echo after").result(timeout=30) is None
    wait_until(lambda: not pids_alive([int((tmp_path / "pid").read_text())]))


def test_a_timed_out_commands_retry_on_the_same_worker_is_not_killed_for_it(tmp_path,
                                                                           monkeypatch):
    """Attack review: the worker of a command killed at its timeout was itself
    to be killed if the command outlived the kill; the retry, started there
    under the same id, was killed in its place ("worker lost ... SIGKILL")."""
    from corral.backends.local import backend

    monkeypatch.setattr(backend, "_COMMAND_KILL_GRACE_S", 0.5)
    marker = tmp_path / "marker"
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        job = scheduler.options(timeout=2, retries=1).shell(
            f"if [ -e {marker} ]; then sleep 1; echo second; "
            f"else touch {marker}; sleep 100; fi")
        assert job.result(timeout=60) is None
    assert (job.attempts, job.stdout) == (2, "second\n")


@pytest.mark.parametrize("how", ["ignore-signals", "umask"])
def test_signals_a_job_ignored_and_its_umask_do_not_reach_the_next_command(tmp_path, how):
    """Attack review: a call's signal.signal(SIGTERM, SIG_IGN) made a later
    command of its worker ignore SIGTERM (an abort waited out its grace);
    its os.umask(0o777) made later jobs' files unreadable."""
    probe = "umask; grep SigIgn /proc/$$/status; touch made; stat -c %a made"
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        before = scheduler.shell(probe, cwd=str(tmp_path))
        assert before.result(timeout=60) is None
        (tmp_path / "made").unlink()
        assert scheduler.submit(jobs.unsettle_the_worker, how, "").result(timeout=60) == how
        after = scheduler.shell(probe, cwd=str(tmp_path))
        assert after.result(timeout=60) is None
        assert (scheduler.submit(jobs.what_the_worker_holds).result(timeout=60)[0]
                == os.getcwd())
    assert after.stdout == before.stdout


HOME_REMOVED = """
import os, shutil, sys, corral
def remove_the_home():
    shutil.rmtree(os.getcwd())
    return "removed"
def hello():
    return "hello"
with corral.Scheduler(cores=1) as scheduler:
    print(scheduler.submit(remove_the_home).result(), scheduler.submit(hello).result(),
          scheduler.shell("echo hi").result(), flush=True)
"""


def test_jobs_run_on_after_the_drivers_directory_was_removed(tmp_path):
    """Attack review: once every job went back to the driver's directory, one
    removed under them failed every job after, and the one that removed it."""
    home = tmp_path / "home"
    home.mkdir()
    ran = subprocess.run([sys.executable, "-c", HOME_REMOVED], cwd=home, capture_output=True,
                         text=True, timeout=60, env={**os.environ,
                                                     "PYTHONPATH": os.pathsep.join(sys.path)})
    assert (ran.returncode, ran.stdout) == (0, "removed hello None\n"), ran.stderr
    assert not home.exists()


SCRIPTS_OWN_TEXT = """
import enum, os, pathlib, sys, corral

class Mode(enum.StrEnum):
    FAST = "fast"

class Where(pathlib.PurePosixPath):
    pass

class Text(str):
    pass

with corral.Scheduler(cores=1) as scheduler:
    jobs = [scheduler.options(env={"MODE": Mode.FAST}).call("os:getenv", "MODE"),
            scheduler.options(env={"MODE": Mode.FAST}).shell('echo "$MODE"'),
            scheduler.shell(Text("echo text")),
            scheduler.shell(["echo", Mode.FAST, Where("/tmp")])]
    for job in jobs:
        print(job.result(timeout=60), job.stdout, end="|")
"""


def test_commands_and_env_of_the_scripts_own_text_types_run(tmp_path):
    """Hostile-input review: a str subclass of the script's own (an enum.StrEnum
    member) in a call's env= or as a command killed the worker ("worker
    lost"): the worker cannot unpickle a class that lives in the script."""
    done = subprocess.run([sys.executable, "-c", SCRIPTS_OWN_TEXT], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (
        0, "fast |None fast\n|None text\n|None fast /tmp\n|"), done.stderr


# -- a call corral stops: JobStopped, its finally blocks, its worker ----------------------------


@pytest.mark.parametrize("stopped_by", ["its timeout", "a cancel"])
def test_a_call_corral_stops_runs_its_finally_blocks_and_its_worker_goes_on(
        scheduler, tmp_path, stopped_by):
    """Before, a timed-out or cancelled call was stopped by killing its worker:
    no finally block or with block of the call ran (a lock file, a temporary
    directory, a half-written output stayed behind)."""
    marker, started = tmp_path / "cleaned", tmp_path / "started"
    options = {"timeout": "1s"} if stopped_by == "its timeout" else {}
    job = scheduler.options(**options).submit(jobs.clean_up_when_stopped, str(marker),
                                              str(started))
    wait_until(started.exists, message="the call to start")
    if stopped_by == "a cancel":
        assert job.cancel()
    corral.wait([job], timeout=30)
    wait_until(lambda: marker.exists() and marker.read_text() == "cleaned up", timeout=10,
               message="the call's finally block")
    if stopped_by == "its timeout":
        assert job.status is JobStatus.TIMED_OUT
        assert job.reason == ("timed out after 1.0s; stopped by JobStopped raised in it, its "
                              "child processes killed")
        error = job.exception()
        assert isinstance(error, corral.JobTimedOut)
        # Where the call was when it was stopped: its own line, not corral's handler.
        assert "time.sleep(60)" in str(error.__cause__)
        assert "interrupt.py" not in str(error.__cause__)
    else:
        assert job.status is JobStatus.CANCELLED
    worker = int(started.read_text())
    assert scheduler.submit(os.getpid).result(timeout=30) == worker, "the same worker goes on"


def test_a_call_that_goes_on_after_jobstopped_is_killed_after_its_grace(scheduler, tmp_path):
    marker, started = tmp_path / "cleaned", tmp_path / "started"
    job = scheduler.options(timeout="1s").submit(jobs.clean_up_when_stopped, str(marker),
                                                 str(started), go_on=True)
    wait_until(started.exists, message="the call to start")
    corral.wait([job], timeout=30)
    assert job.status is JobStatus.TIMED_OUT
    assert job.reason == "timed out after 1.0s; killed with its child processes"
    assert not marker.exists(), "killed: its finally block never ran"
    wait_until(lambda: not pids_alive([int(started.read_text())]), timeout=10,
               message="its worker to be killed")
    assert scheduler.submit(jobs.square, 3).result(timeout=30) == 9  # on a new worker


def test_stops_that_race_the_end_of_calls_never_fail_a_job_or_lose_a_worker(scheduler):
    """A stop that arrives as a call returns lands in the worker's own code, or
    in the next call of the same worker (a retry has the same id): each call
    here ends COMPLETED or TIMED_OUT, none FAILED or its worker lost."""
    made = [scheduler.options(timeout=0.05 + 0.002 * (index % 10)).submit(
        jobs.sleep_then_return, 0.05 + 0.002 * (index % 7)) for index in range(60)]
    corral.wait(made, timeout=120)
    endings = {job.status for job in made}
    assert endings <= {JobStatus.COMPLETED, JobStatus.TIMED_OUT}, [
        (job.status, job.reason) for job in made if job.status not in (
            JobStatus.COMPLETED, JobStatus.TIMED_OUT)]
    assert scheduler.submit(jobs.square, 4).result(timeout=30) == 16


def test_where_a_journaled_call_was_when_its_timeout_stopped_it_is_shown_from_the_journal(
        tmp_path):
    """Cold review: the line a hung call hung on was in its error's __cause__ in
    Python only; `corral status ID` and the journal's StoredJob said nothing."""
    from support.cli import Corral

    run, started = tmp_path / "run", tmp_path / "started"
    with corral.Scheduler(cores=1, journal=run) as scheduler:
        job = scheduler.options(timeout="1s", name="hangs").submit(
            jobs.clean_up_when_stopped, str(tmp_path / "cleaned"), str(started))
        corral.wait([job], timeout=30)
    stored = corral.Run(run).job(job.id)
    with pytest.raises(corral.JobTimedOut) as caught:
        stored.result_value()
    assert "time.sleep(60)" in str(caught.value.__cause__)
    outcome = Corral(tmp_path / "home", run)("status", str(job.id))
    assert outcome.status == 1, str(outcome)  # (a job of it did not complete)
    shown = outcome.out
    assert f"job {job.id} 'hangs' was on this line when its timeout stopped it:" in shown
    assert "time.sleep(60)" in shown and "corral.errors.JobStopped" in shown


def test_a_stopped_call_whose_work_goes_on_in_a_thread_ends_with_its_worker(scheduler, tmp_path):
    """Attack review: the main thread, waiting on join(), took JobStopped; the
    thread it waited for ran on in the worker, and printed into the next job's output."""
    started = tmp_path / "started"
    job = scheduler.options(timeout="1s").submit(jobs.wait_on_a_thread_that_talks, str(started))
    wait_until(started.exists, message="the call to start")
    corral.wait([job], timeout=30)
    assert job.status is JobStatus.TIMED_OUT
    assert job.reason == "timed out after 1.0s; killed with its child processes"
    wait_until(lambda: not pids_alive([int(started.read_text())]), timeout=10,
               message="its worker, and the thread, to end")
    after = scheduler.submit(jobs.talk, "next")
    after.result(timeout=30)
    assert after.stdout == "py-out next\nchild-out next\n"


def test_a_stopped_chunk_runs_none_of_its_later_calls(scheduler, tmp_path):
    """Attack review: a map's chunk took JobStopped for one call's failure and
    went on with the next calls."""
    log = tmp_path / "calls"
    with pytest.raises(corral.JobTimedOut):
        list(scheduler.options(timeout="1s").map(jobs.log_then_sleep, [str(log)] * 20,
                                                 range(20), chunksize=20))
    ran = log.read_text().split("\n")[:-1]
    assert 5 <= len(ran) <= 8, ran  # 1 s of 0.15 s calls, and none after the stop


def test_a_call_stopped_while_in_a_finalizer_is_stopped_as_it_leaves_it(scheduler, tmp_path):
    """Attack review: raised in a __del__, JobStopped was printed and dropped:
    the call ran on, was killed 2 s later, and its finally never ran."""
    marker, started = tmp_path / "cleaned", tmp_path / "started"
    job = scheduler.options(timeout="1s").submit(jobs.make_garbage_slow_to_free, str(marker),
                                                 str(started))
    corral.wait([job], timeout=30)
    assert job.reason == ("timed out after 1.0s; stopped by JobStopped raised in it, its child "
                          "processes killed")
    assert marker.read_text() == "cleaned up"
    assert "JobStopped" not in job.stderr  # (no "Exception ignored in __del__")


def test_a_call_that_blocks_signals_leaves_the_next_call_stoppable(tmp_path):
    """Attack review: the mask a call set stayed on its worker: the next job's
    timeout could not raise JobStopped, and its finally never ran."""
    marker, started = tmp_path / "cleaned", tmp_path / "started"
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        worker = scheduler.submit(jobs.block_every_signal).result(timeout=30)
        job = scheduler.options(timeout="1s").submit(jobs.clean_up_when_stopped, str(marker),
                                                     str(started))
        corral.wait([job], timeout=30)
    assert int(started.read_text()) == worker
    assert job.reason == ("timed out after 1.0s; stopped by JobStopped raised in it, its child "
                          "processes killed")
    assert marker.read_text() == "cleaned up"


def test_a_second_stop_of_a_call_does_not_cut_its_finally_blocks_short(scheduler, tmp_path):
    """Re-attack review: a cancel after the timeout raised a second JobStopped
    inside the call's finally block."""
    marks = tmp_path / "marks"
    job = scheduler.options(timeout="0.5s").submit(jobs.clean_up_slowly_when_stopped, str(marks))
    wait_until(lambda: marks.exists(), message="the finally block to begin")
    job.cancel()
    # (The job reads CANCELLED at once; its finally block goes on.)
    wait_until(lambda: marks.read_text().count("\n") == 2, message="the finally block to end")
    assert marks.read_text() == "cleanup begins\ncleanup done\n"


def test_threads_an_earlier_job_left_do_not_end_the_worker_of_a_stopped_call(tmp_path):
    """Re-attack review: any thread in the worker counted as the stopped call's."""
    marker, started = tmp_path / "cleaned", tmp_path / "started"
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        assert scheduler.submit(jobs.leave_a_thread_pool).result(timeout=30) == 9
        job = scheduler.options(timeout="1s").submit(jobs.clean_up_when_stopped, str(marker),
                                                     str(started))
        corral.wait([job], timeout=30)
        assert job.reason == ("timed out after 1.0s; stopped by JobStopped raised in it, its "
                              "child processes killed")
        assert scheduler.submit(os.getpid).result(timeout=30) == int(started.read_text())


def test_a_chunk_stops_whole_when_a_call_turns_jobstopped_into_its_own_error(scheduler, tmp_path):
    """Re-attack review: only a JobStopped itself stopped the chunk; a call that
    raised its own error in its place let the later calls run."""
    log = tmp_path / "calls"
    with pytest.raises(corral.JobTimedOut):
        list(scheduler.options(timeout="0.5s").map(
            jobs.stopped_or_turned_into_an_error, [str(log)] * 10, range(10), chunksize=10))
    assert log.read_text().split("\n")[:-1] == ["call 0", "call 1"]


def test_a_call_stopped_in_the_middle_of_an_import_ends_its_worker(scheduler, tmp_path):
    """Re-attack review: JobStopped in an import leaves modules half made in a
    worker that lives on (an extension that loads once per process then fails
    every later job there): the worker ends, and a new one runs the next job."""
    (tmp_path / "slow_to_import.py").write_text(
        f"import pathlib, time\npathlib.Path({str(tmp_path / 'started')!r}).write_text("
        "__import__('os').getpid().__str__())\ntime.sleep(60)\n")
    job = scheduler.options(timeout="1s").submit(jobs.import_slowly, str(tmp_path))
    corral.wait([job], timeout=30)
    assert job.status is JobStatus.TIMED_OUT
    wait_until(lambda: not pids_alive([int((tmp_path / "started").read_text())]), timeout=10,
               message="the worker whose import was cut short to end")
    assert scheduler.submit(jobs.square, 5).result(timeout=30) == 25


def test_a_call_stopped_while_a_dropped_generator_closes_is_stopped_after(scheduler, tmp_path):
    """Re-attack review: a JobStopped raised in a generator's finalizer (or a
    weakref or gc callback) was printed and dropped; the call was killed later."""
    marker, started = tmp_path / "cleaned", tmp_path / "started"
    job = scheduler.options(timeout="1s").submit(jobs.drop_generators_slow_to_close,
                                                 str(marker), str(started))
    corral.wait([job], timeout=30)
    assert job.reason == ("timed out after 1.0s; stopped by JobStopped raised in it, its child "
                          "processes killed")
    assert marker.read_text() == "cleaned up"
    assert "Exception ignored" not in job.stderr


def test_a_stop_dropped_in_a_finalizer_does_not_make_a_call_that_returned_look_caught(
        scheduler):
    """Re-attack review: the stop, raised in a generator's finalizer and dropped
    there, counted as taken; the call that then returned was said to have
    caught JobStopped, and its whole value was called partial."""
    job = scheduler.options(timeout="0.5s").submit(jobs.close_a_generator_slowly_then_return)
    corral.wait([job], timeout=30)
    assert job.status is JobStatus.TIMED_OUT
    # (the stop sent again may reach the call as it returns, or not)
    assert job.reason in ("timed out after 0.5s; it returned as it was being stopped",
                          "timed out after 0.5s; stopped by JobStopped raised in it, its "
                          "child processes killed"), job.reason


def test_a_stopped_call_whose_own_scheduler_goes_on_ends_with_its_worker(scheduler, tmp_path):
    """Re-attack review: threads named corral-... were taken for the worker's
    own, so a stopped call's Scheduler went on beside the next job."""
    started = tmp_path / "started"
    job = scheduler.options(timeout="2s").submit(jobs.run_a_scheduler_of_its_own, str(started))
    corral.wait([job], timeout=30)
    assert job.status is JobStatus.TIMED_OUT
    wait_until(lambda: not pids_alive([int(started.read_text())]), timeout=10,
               message="the worker, and the call's own Scheduler, to end")


def test_a_hook_an_earlier_call_set_does_not_keep_the_next_call_from_being_stopped(tmp_path):
    """Re-attack review: the unraisable hook a call set stayed on its worker, and
    a later call's JobStopped, dropped in a generator's finalizer, was lost."""
    marker, started = tmp_path / "cleaned", tmp_path / "started"
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        worker = scheduler.submit(jobs.set_an_unraisable_hook).result(timeout=30)
        job = scheduler.options(timeout="1s").submit(jobs.drop_generators_slow_to_close,
                                                     str(marker), str(started))
        corral.wait([job], timeout=30)
    assert int(started.read_text()) == worker
    assert job.reason == ("timed out after 1.0s; stopped by JobStopped raised in it, its child "
                          "processes killed")
    assert marker.read_text() == "cleaned up"
