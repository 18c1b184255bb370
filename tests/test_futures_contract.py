"""Scheduler is a concurrent.futures Executor and Job a Future: CPython's own
tests say so, and corral's own tests below pin what they found.

CPython's test classes are imported from its ``test.test_concurrent_futures``
package (see :mod:`cpython_futures` for how a copy is found) and run
unchanged against :class:`cpython_futures.CorralPool`, a Scheduler made like a
pool. Where a test needs a pool's name or a bare Future, the test function is
rebound, not rewritten: its own code runs with ``futures.ThreadPoolExecutor``,
``Future`` or ``assert_python_ok`` meaning the corral equivalent.

Not run, and why:

* ``ExecutorTest.test_max_workers_negative``: checks a pool's constructor
  (``max_workers must be greater than 0``); a Scheduler has ``cores=`` and
  ``max_jobs=``, whose checks test_edge_cases covers.
* ``FutureTests.test_repr``, ``test_multiple_set_result``,
  ``test_multiple_set_exception``: match ``<Future at 0x… state=…>``; a Job's
  repr is its own by design (``<Job 3 'train' RUNNING>``).
* ``FutureTests.test_cancel``, ``test_running``: put a Future in the RUNNING
  state by hand. A Job's Future never is in it (it stays pending while the
  job runs, so that ``cancel()`` can still kill it; ``running()`` reads
  ``job.status``): a documented difference, tested below with real jobs.
* The thread pool's tests of its threads (``test_threads_terminate``,
  ``test_saturation``, ``test_idle_thread_reuse``, ``test_thread_names_*``,
  ``test_default_workers``, ``test_del_shutdown``,
  ``test_hang_global_shutdown_lock``, ``test_pending_calls_race`` (jobs
  waiting on a ``threading.Event`` of the test's process),
  ``test_executor_map_current_future_cancel``), and every process-pool,
  deadlock and initializer test: pool internals.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import time
import types
import unittest
import weakref
from concurrent import futures
from pathlib import Path

import pytest

import corral
from corral import Job, JobStatus

import cpython_futures
import jobs
from support.waiting import wait_until

TESTS = Path(__file__).resolve().parent

if cpython_futures.MISSING is not None:  # loud: the summary shows it (-ra)
    pytest.skip(f"CPython's concurrent.futures tests NOT RUN: {cpython_futures.MISSING}",
                allow_module_level=True)

# Modules, not classes: a TestCase class in this module's namespace would be collected.
from cpython_futures import CorralPool  # noqa: E402
from cpython_futures import executor as cpython_executor  # noqa: E402
from cpython_futures import test_as_completed as cpython_as_completed  # noqa: E402
from cpython_futures import test_future as cpython_future  # noqa: E402
from cpython_futures import test_shutdown as cpython_shutdown  # noqa: E402
from cpython_futures import test_wait as cpython_wait  # noqa: E402
from cpython_futures import util as cpython_util  # noqa: E402

ExecutorTest = cpython_executor.ExecutorTest
ExecutorShutdownTest = cpython_shutdown.ExecutorShutdownTest
WaitTests = cpython_wait.WaitTests
AsCompletedTests = cpython_as_completed.AsCompletedTests


def _rebound(test: types.FunctionType, **names: object) -> types.FunctionType:
    """CPython's *test* function itself, with some of its module's names replaced."""
    return types.FunctionType(test.__code__, {**test.__globals__, **names}, test.__name__,
                              test.__defaults__, test.__closure__)


def _run_with_corral(*args: str, **env: str) -> tuple[int, bytes, bytes]:
    """``assert_python_ok`` for CPython's ``-c`` scripts, with the pool they import
    replaced by CorralPool and their helpers imported from this package."""
    *options, script = args
    script = (script
              .replace("from concurrent.futures import ThreadPoolExecutor",
                       "from cpython_futures import CorralPool as ThreadPoolExecutor")
              .replace("from concurrent.futures import CorralPool",
                       "from cpython_futures import CorralPool")
              .replace("from test.test_concurrent_futures.", "from cpython_futures."))
    environment = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(
        [os.fspath(TESTS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    done = subprocess.run([sys.executable, "-X", "faulthandler", *options, script],
                          capture_output=True, env=environment, timeout=120, cwd=TESTS)
    if done.returncode:
        raise AssertionError(f"the script exited {done.returncode}:\n{done.stderr.decode()}")
    return done.returncode, done.stdout, done.stderr


_skip_pool_constructor = unittest.skip(
    "a pool's max_workers check; a Scheduler has cores=/max_jobs= (test_edge_cases)")


class CorralMixin(cpython_util.ExecutorMixin):
    executor_type = CorralPool


class CorralExecutorTest(CorralMixin, ExecutorTest, cpython_util.BaseTestCase):
    test_max_workers_negative = _skip_pool_constructor(ExecutorTest.test_max_workers_negative)
    # map(timeout=5) must give up after its 5 s; a copy is marked, not CPython's function.
    test_map_timeout = pytest.mark.slow(_rebound(ExecutorTest.test_map_timeout))


_in_scripts = {"assert_python_ok": _run_with_corral}
# The thread pool's own context-manager and shutdown(wait=False[, cancel_futures]) tests.
_as_the_pool = {"futures": types.SimpleNamespace(**{**vars(futures),
                                                    "ThreadPoolExecutor": CorralPool}),
                **_in_scripts}


class CorralShutdownTest(CorralMixin, ExecutorShutdownTest, cpython_util.BaseTestCase):
    test_interpreter_shutdown = _rebound(ExecutorShutdownTest.test_interpreter_shutdown,
                                         **_in_scripts)
    test_submit_after_interpreter_shutdown = _rebound(
        ExecutorShutdownTest.test_submit_after_interpreter_shutdown, **_in_scripts)
    test_hang_gh83386 = _rebound(ExecutorShutdownTest.test_hang_gh83386, **_in_scripts)

    test_context_manager_shutdown = _rebound(
        cpython_shutdown.ThreadPoolShutdownTest.test_context_manager_shutdown, **_as_the_pool)
    test_shutdown_no_wait = _rebound(
        cpython_shutdown.ThreadPoolShutdownTest.test_shutdown_no_wait, **_as_the_pool)
    test_cancel_futures_wait_false = _rebound(
        cpython_shutdown.ThreadPoolShutdownTest.test_cancel_futures_wait_false, **_as_the_pool)


class CorralWaitTest(CorralMixin, WaitTests, cpython_util.BaseTestCase):
    pass


class CorralAsCompletedTest(CorralMixin, AsCompletedTests, cpython_util.BaseTestCase):
    pass


def _unsubmitted_job() -> Job:
    return Job(jobs.noop)


def _create_job(state: str = cpython_util.PENDING, exception: BaseException | None = None,
                result: object = None) -> Job:
    return _rebound(cpython_util.create_future, Future=_unsubmitted_job)(state, exception, result)


_as_jobs = {
    "Future": _unsubmitted_job, "create_future": _create_job,
    **{name: _create_job(getattr(cpython_util, name)._state,
                         getattr(cpython_util, name)._exception,
                         getattr(cpython_util, name)._result)
       for name in ("PENDING_FUTURE", "RUNNING_FUTURE", "CANCELLED_FUTURE",
                    "CANCELLED_AND_NOTIFIED_FUTURE", "EXCEPTION_FUTURE", "SUCCESSFUL_FUTURE")}}
_job_repr = unittest.skip("a Job's repr is its own: <Job 3 'train' RUNNING>")
_never_running_state = unittest.skip(
    "a Job's Future stays pending while it runs (cancel() kills a running job); "
           "see test_cancel_of_a_running_job_kills_it_and_returns_true")


class _ToCurrentStderr(logging.Handler):
    """What logging does with no handler (its last resort): write to the
    sys.stderr of the moment, which CPython's callback tests capture. pytest's
    log capture takes that place, so the test brings it back for them."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


class JobFutureTests(cpython_future.FutureTests):
    """CPython's FutureTests with every Future a corral Job (unsubmitted, as
    they set results themselves)."""

    locals().update({name: _rebound(getattr(cpython_future.FutureTests, name), **_as_jobs)
                     for name in dir(cpython_future.FutureTests) if name.startswith("test_")})

    def setUp(self) -> None:
        super().setUp()
        self._stderr_handler = _ToCurrentStderr()
        logging.getLogger("concurrent.futures").addHandler(self._stderr_handler)

    def tearDown(self) -> None:
        logging.getLogger("concurrent.futures").removeHandler(self._stderr_handler)
        super().tearDown()

    test_repr = _job_repr(cpython_future.FutureTests.test_repr)
    test_multiple_set_result = _job_repr(cpython_future.FutureTests.test_multiple_set_result)
    test_multiple_set_exception = _job_repr(cpython_future.FutureTests.test_multiple_set_exception)
    test_cancel = _never_running_state(cpython_future.FutureTests.test_cancel)
    test_running = _never_running_state(cpython_future.FutureTests.test_running)


# -- what CPython's tests found, pinned in corral's own words ----------------------------------

def test_a_finished_job_nobody_holds_is_freed_with_its_arguments_and_result(scheduler):
    argument = jobs.CustomError("an argument")  # any object a weak reference can follow
    job = scheduler.submit(jobs.identity, argument)
    result = job.result(timeout=30)
    assert result.args == argument.args and result is not argument  # a copy came back
    job_ref, argument_ref, result_ref = weakref.ref(job), weakref.ref(argument), weakref.ref(result)
    del job, argument, result
    gc.collect()
    assert (job_ref(), argument_ref(), result_ref()) == (None, None, None)
    assert scheduler.jobs() == [] and scheduler.qsize() == 0


def test_jobs_lists_what_is_unfinished_or_still_held(scheduler, release):
    blocked = scheduler.submit(jobs.wait_for_file, str(release))
    kept = scheduler.submit(jobs.square, 3)
    dropped = scheduler.submit(jobs.square, 4)
    assert (kept.result(timeout=30), dropped.result(timeout=30)) == (9, 16)
    del dropped, blocked
    gc.collect()
    assert [job.id for job in scheduler.jobs()] == [1, 2]  # 1 still runs, 2 is held
    assert scheduler.qsize("finished") == 1
    release.touch()


def test_a_child_still_gets_the_result_of_a_parent_nobody_holds(scheduler, release):
    gate = scheduler.submit(jobs.wait_for_file, str(release))
    parent = scheduler.submit(jobs.square, 5)
    child = scheduler.options(after=[gate]).submit(jobs.add, parent, 1)
    parent_ref = weakref.ref(parent)
    assert parent.result(timeout=30) == 25
    del parent
    gc.collect()
    release.touch()
    assert child.result(timeout=30) == 26
    del child, gate
    gc.collect()
    assert parent_ref() is None


def test_after_a_name_still_sees_finished_jobs_of_that_name_nobody_holds(scheduler):
    scheduler.submit(jobs.noop).exception(timeout=30)  # name 'noop', completed, dropped
    failed = scheduler.options(name="prepare").submit(jobs.raise_custom, "bad")
    failed_id = failed.id
    assert failed.exception(timeout=30) is not None
    del failed
    gc.collect()
    assert scheduler.options(after=["noop"]).submit(jobs.square, 2).result(timeout=30) == 4
    doomed = scheduler.options(after=["prepare"]).submit(jobs.square, 2)
    with pytest.raises(futures.CancelledError):
        doomed.result(timeout=30)
    assert doomed.reason == f"upstream job {failed_id} 'prepare' failed"


def test_after_the_name_of_a_cancelled_job_nobody_holds_is_cancelled_naming_it(scheduler,
                                                                                 release):
    """A review of the day's diff: the loop's request failed on such a job's
    record, which keeps no reason (an AttributeError, and the job hung)."""
    cancelled = scheduler.options(name="prepare").submit(jobs.wait_for_file, str(release))
    cancelled_id = cancelled.id
    assert cancelled.cancel()
    del cancelled
    gc.collect()
    doomed = scheduler.options(after=["prepare"]).submit(jobs.square, 2)
    with pytest.raises(futures.CancelledError):
        doomed.result(timeout=30)
    assert doomed.reason == f"upstream job {cancelled_id} 'prepare' was cancelled"


def test_the_id_of_a_finished_job_nobody_holds_stays_taken(scheduler):
    scheduler.submit(jobs.noop).result(timeout=30)  # job 1
    scheduler.dispatch([Job(jobs.noop, id="mine")])
    scheduler.collect(1, timeout=30)
    gc.collect()
    for taken in (1, "1", "mine"):
        with pytest.raises(ValueError, match=rf"job id {taken!r} is already used"):
            scheduler.dispatch([Job(jobs.noop, id=taken)])
    assert scheduler.submit(jobs.noop).id == 2  # numbering goes on after the refusals


def test_acting_on_the_id_of_a_finished_job_nobody_holds_says_so(scheduler):
    scheduler.submit(jobs.noop).result(timeout=30)
    gc.collect()
    with pytest.raises(ValueError, match=r"job 1 has finished and this program no longer "
                                         r"holds it; pass the Job itself"):
        scheduler.abort(1)
    with pytest.raises(ValueError, match=r"no job with id 99 in this scheduler"):
        scheduler.abort(99)


def test_a_shut_down_scheduler_is_garbage_even_while_its_jobs_are_held(tmp_path):
    scheduler = corral.Scheduler(cores=2, workdir=tmp_path / "run")
    job = scheduler.submit(jobs.square, 6)
    assert job.result(timeout=30) == 36
    scheduler.shutdown()
    scheduler_ref = weakref.ref(scheduler)
    del scheduler
    gc.collect()
    assert scheduler_ref() is None
    assert job.result() == 36 and job.status is JobStatus.COMPLETED


def test_submit_results_are_not_kept_for_collect_but_dispatched_ones_are(scheduler):
    submitted = scheduler.submit(jobs.square, 2)
    scheduler.dispatch([Job(jobs.square, (3,))])
    assert [result.data for result in scheduler.collect(1, timeout=30)] == [9]
    assert submitted.result(timeout=30) == 4
    assert scheduler.collect() == []
    with pytest.raises(ValueError, match=r"collect\(1\) cannot be satisfied: 0 results"):
        scheduler.collect(1)


def test_cancel_of_a_finished_job_after_shutdown_without_wait_returns_false(tmp_path):
    """Executor.map cancels every future it has read: it must not raise."""
    for round in range(10):
        scheduler = corral.Scheduler(cores=2, workdir=tmp_path / f"run{round}")
        results = scheduler.map(jobs.square, range(20))
        scheduler.shutdown(wait=False)
        assert list(results) == [x * x for x in range(20)]
        scheduler.shutdown()


def test_cancel_of_a_running_job_kills_it_and_returns_true(scheduler, release):
    job = scheduler.submit(jobs.wait_for_file, str(release))
    wait_until(job.running, message="the job to run")
    assert job.cancel() is True and job.cancelled() and job.status is JobStatus.CANCELLED
    assert job.cancel() is True  # as Future.cancel: True for a cancelled future
    done = scheduler.submit(jobs.square, 2)
    assert done.result(timeout=30) == 4 and done.cancel() is False


def test_a_program_cannot_mark_a_job_running_itself(scheduler, release):
    """Attack review: set_running_or_notify_cancel() marked the Future running,
    and a cancel() then raised and left a Job whose result() never returned."""
    job = scheduler.submit(jobs.wait_for_file, str(release))
    with pytest.raises(RuntimeError, match=r"^<Job \d+ 'wait_for_file' .*> is started by its "
                                           r"scheduler: set_running_or_notify_cancel\(\) is for "
                                           r"an Executor's own futures \(job.running\(\) says"):
        job.set_running_or_notify_cancel()
    assert job.cancel() is True
    with pytest.raises(futures.CancelledError):
        job.result(timeout=30)


def test_cancelling_jobs_one_by_one_in_order_starts_none_of_those_still_queued(
        scheduler, release, monkeypatch):
    """Each cancel of a running job freed the room that the next queued job was
    started in, only for the next cancel to kill it: 1,000 such cancels took
    21 s, every job begun (attack review). A cancel that kills now holds
    starts back a moment (long here: the loop of cancels may be slow)."""
    from corral.core import engine

    monkeypatch.setattr(engine, "CANCEL_SETTLE_S", 2.0)
    monkeypatch.setattr(engine, "CANCEL_SETTLE_MAX_S", 10.0)
    handles = [scheduler.submit(jobs.wait_for_file, str(release)) for _ in range(20)]
    wait_until(lambda: sum(job.running() for job in handles) == 2, message="two jobs to run")
    running = [job for job in handles if job.running()]
    assert all(job.cancel() for job in handles)
    begun = [job.id for job in handles if job.started is not None and job not in running]
    assert begun == [], "queued jobs were started, to be killed by the next cancel"
    assert [job.status for job in handles] == [JobStatus.CANCELLED] * 20
    # The hold ends: the next job runs.
    assert scheduler.submit(jobs.square, 3).result(timeout=30) == 9


def test_the_control_loop_rests_after_a_cancel_leaves_nothing_to_start(scheduler, release):
    """A cancel that kills holds starts back a moment; with no job waiting to
    start, the hold must still end, or the loop would wake at once, ever after,
    to find it over (a whole core for nothing)."""
    job = scheduler.submit(jobs.wait_for_file, str(release))
    wait_until(job.running, message="the job to run")
    assert job.cancel()
    loop = scheduler._engine._thread
    clock = time.pthread_getcpuclockid(loop.ident)
    time.sleep(0.5)  # (the hold, CANCEL_SETTLE_S, ends in this)
    before = time.clock_gettime(clock)
    time.sleep(1.0)  # the interval measured, not a wait for an event
    spent = time.clock_gettime(clock) - before
    assert spent < 0.2, f"the idle control loop used {spent:.2f} s of CPU in 1 s"


SUBMIT_AT_EXIT = """
import atexit, corral

@atexit.register
def submit_last():
    try:
        scheduler.submit(abs, -1)
    except RuntimeError as error:
        print(f"refused: {error}; jobs: {scheduler.qsize()}")

scheduler = corral.Scheduler(cores=1)
"""


def test_submit_after_interpreter_shutdown_is_refused_before_the_job_is_registered(tmp_path):
    script = tmp_path / "late.py"
    script.write_text(SUBMIT_AT_EXIT)
    done = subprocess.run([sys.executable, os.fspath(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == ("refused: cannot schedule new futures after interpreter "
                                   "shutdown; jobs: 0"), done.stderr


ENDS_WITHOUT_SHUTDOWN = """\
import corral
scheduler = corral.Scheduler(cores=2)
scheduler.shell("sleep 0.5 && echo first > first.txt")
scheduler.shell("sleep 0.5 && echo second > second.txt")
"""


def test_a_program_ending_without_shutdown_tells_a_person_at_a_terminal_what_it_waits_for(
        tmp_path):
    """Cold review (a Parsl user): the program sat silent while its jobs ran on.
    Its jobs still run to the end, as an Executor's do, and a stderr that is not
    a terminal stays silent (CPython's test_interpreter_shutdown above)."""
    script = tmp_path / "no_shutdown.py"
    script.write_text(ENDS_WITHOUT_SHUTDOWN)
    main, terminal = os.openpty()
    try:
        done = subprocess.run([sys.executable, os.fspath(script)], stdout=subprocess.PIPE,
                              stderr=terminal, text=True, timeout=60, cwd=tmp_path)
        os.close(terminal)
        terminal = -1
        said = b""
        while chunk := _read_or_nothing(main):
            said += chunk
    finally:
        os.close(main)
        if terminal >= 0:
            os.close(terminal)
    assert done.returncode == 0
    assert said.decode().strip() == (
        "corral: the program ended with 2 jobs not finished; waiting for them (end a "
        "with-block or call shutdown() to say when; shutdown(cancel_futures=True) drops "
        "those not started)")
    assert (tmp_path / "first.txt").read_text() == "first\n"
    assert (tmp_path / "second.txt").read_text() == "second\n"


def _read_or_nothing(fd: int) -> bytes:
    """Read a pty whose other end is closed: Linux says EIO at its end."""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""
