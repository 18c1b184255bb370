"""A crashed worker fails only its own job; the rest of the queue goes on."""

from __future__ import annotations

import os
import signal

import pytest

import corral
from corral import JobStatus

import jobs
from support.waiting import wait_until


@pytest.mark.parametrize("how, killed_by", [
    ("exit", "exited with code 3"), ("sigkill", "was killed by SIGKILL"),
    ("segfault", "was killed by SIGSEGV"),
])
def test_a_worker_that_dies_fails_only_its_job(scheduler, how, killed_by):
    victim = scheduler.submit(jobs.die, how)
    others = [scheduler.submit(jobs.square, i) for i in range(8)]
    with pytest.raises(corral.WorkerLost, match=rf"job 1 'die' failed: worker lost: its process "
                                                rf"\(pid \d+\) {killed_by}"):
        victim.result(timeout=30)
    assert [job.result(timeout=30) for job in others] == [i * i for i in range(8)]
    assert victim.status is JobStatus.FAILED and victim.reason.startswith("worker lost")


def test_a_worker_killed_from_outside_mid_job_is_replaced(scheduler, tmp_path, release):
    pidfile = tmp_path / "pid"
    victim = scheduler.submit(jobs.write_pid_and_wait, str(pidfile), str(release))
    bystander = scheduler.submit(jobs.wait_for_file, str(release), "survived")
    wait_until(pidfile.exists)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)  # what the OOM killer does
    with pytest.raises(corral.WorkerLost):
        victim.result(timeout=30)
    release.touch()
    assert bystander.result(timeout=30) == "survived"
    assert [scheduler.submit(jobs.square, i).result(timeout=30) for i in range(3)] == [0, 1, 4]


def test_a_lost_worker_counts_as_a_failure_for_retries(scheduler, tmp_path):
    counter = tmp_path / "calls"
    script = tmp_path / "crash_once.py"
    script.write_text(
        "import os, sys\n"
        f"path = {str(counter)!r}\n"
        "calls = int(open(path).read()) + 1 if os.path.exists(path) else 1\n"
        "open(path, 'w').write(str(calls))\n"
        "if calls == 1:\n"
        "    os.kill(os.getpid(), 9)\n")
    job = scheduler.script(script, retries=1)
    job.result(timeout=30)
    assert job.attempts == 2


SHORT_OF_DESCRIPTORS = """
import os, resource, sys, time, corral
with corral.Scheduler(cores=16) as scheduler:
    scheduler.submit(abs, 1).result()   # its reaper and a first worker are started
    corral.wait, corral.JobStatus   # (imported now: an import needs a descriptor)
    used = len(os.listdir("/proc/self/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 12, hard))  # room for a few workers
    held = []  # the driver's descriptors after each round: no start that failed leaks any
    for _ in range(2):
        jobs = ([scheduler.shell("sleep 0.1") for _ in range(24)]
                + [scheduler.submit(time.sleep, 0.05) for _ in range(12)])
        corral.wait(jobs)
        held.append(len(os.listdir("/proc/self/fd")))
    print(sorted({job.status.name for job in jobs}),
          len({job._record.native_id for job in jobs}) < 16, held[0] == held[1])
"""


def test_jobs_that_cannot_start_for_want_of_descriptors_wait_for_running_ones(tmp_path):
    """Attack review (``ulimit -n 64`` and 16 cores): the jobs that could not
    start a worker (EMFILE) failed at once, 189 of 200 in 1.5 s, retries and
    all, while 11 workers ran. They now wait for a running job's end, and run
    on its worker."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SHORT_OF_DESCRIPTORS], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['COMPLETED'] True True\n", done.stderr
    assert done.stderr.count("Too many open files") == 1, "said once, on stderr"
    assert "it waits for a running job to end" in done.stderr


PAUSED_WHILE_SHORT = """
import os, resource, time, corral
with corral.Scheduler(cores=16) as scheduler:
    scheduler.submit(abs, 1).result()
    corral.wait, corral.JobStatus   # (imported now: an import needs a descriptor)
    used = len(os.listdir("/proc/self/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 12, hard))
    jobs = [scheduler.shell("sleep 0.3") for _ in range(16)]
    deadline = time.monotonic() + 30
    def kept():  # by the backend, which could not start them yet (and says so: a job
        # handed ahead to a worker behind a running one is SUBMITTED too, with no reason)
        return [job for job in jobs if job.status is corral.JobStatus.SUBMITTED
                and job._record.handed_ahead and job.reason is not None]
    while len(kept()) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    waiting = kept()
    print(waiting[0].reason.replace(__import__("sys").executable, "PYTHON"))
    waiting[-1].cancel()
    scheduler.pause()
    while any(job.status is corral.JobStatus.RUNNING for job in jobs):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    print(sorted({job.status.name for job in jobs}), len(waiting) > 2)
    scheduler.resume()
    corral.wait(jobs)
    print(sorted({job.status.name for job in jobs if job is not waiting[-1]}),
          waiting[-1].status.name)
"""


def test_jobs_waiting_for_descriptors_go_back_to_the_queue_on_pause(tmp_path):
    """A job the backend could not start yet is not running, and says why it
    waits (its row said SUBMITTED and nothing more); a pause gives it back
    (nothing new starts while paused), a cancel ends it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PAUSED_WHILE_SHORT], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "waits to start: cannot start a worker with PYTHON: [Errno 24] Too many open files; "
        "tried again when a running job ends",
        "['CANCELLED', 'COMPLETED', 'QUEUED'] True", "['COMPLETED'] CANCELLED"], done.stderr


A_START_SHORT_OF_DESCRIPTORS = """
import os, resource, sys
from corral.runtime.worker_process import WorkerStartError, start_worker
used = len(os.listdir("/proc/self/fd")) - 1   # (less the one listdir itself opens)
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 3, hard))  # one pipe, not two
try:
    start_worker(sys.executable, os.path.join(sys.argv[1], "spool"), dict(os.environ))
except WorkerStartError as error:
    print(error)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
print(len(os.listdir("/proc/self/fd")) - 1 - used)
"""


def test_a_worker_start_short_of_descriptors_leaks_none(tmp_path):
    """Diff review: a start that made one pipe and not the next left that pipe
    open, and the backend tries again every half second while short."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", A_START_SHORT_OF_DESCRIPTORS, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    said, left = done.stdout.splitlines()
    assert "Too many open files" in said
    assert left == "0", "no descriptor of the failed start is left open"


IDLE_WORKERS_HOLD_THE_DESCRIPTORS = """
import os, resource, time, corral
with corral.Scheduler(cores=4, gpus=2) as scheduler:
    corral.wait([scheduler.submit(time.sleep, 0.3) for _ in range(3)])  # three workers, idle now
    corral.wait, corral.JobStatus
    used = len(os.listdir("/proc/self/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 2, hard))  # no room for a new worker
    gpu_job = scheduler.options(gpus=1).submit(os.getenv, "CUDA_VISIBLE_DEVICES")
    print(gpu_job.result(timeout=60))
"""


def test_idle_workers_make_room_for_a_job_that_needs_a_worker_of_its_own(tmp_path):
    """Re-attack review: a GPU job (which needs a worker started for its GPU)
    failed "Too many open files" while three idle workers held the descriptors."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", IDLE_WORKERS_HOLD_THE_DESCRIPTORS],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n", done.stderr


#: Modules a worker imports, each bounded by a variable its workers inherit,
#: so that without the refusal under test they start one generation of
#: workers, not workers without end.
_SUBMITS_ON_IMPORT = """
import os
import corral

def work(value):
    return value

if os.environ.get("SUBMITTED_ON_IMPORT") is None:
    os.environ["SUBMITTED_ON_IMPORT"] = "1"
    runner = corral.Scheduler(cores=1)
    runner.submit(work, 1)
"""

_SUBMITS_FROM_A_THREAD_ON_IMPORT = """
import os
import threading
import corral

def work(value):
    return value

def submit():
    if os.environ.get("SUBMITTED_FROM_A_THREAD") is None:
        os.environ["SUBMITTED_FROM_A_THREAD"] = "1"
        with corral.Scheduler(cores=1) as runner:
            runner.submit(work, 1).result(timeout=60)

helper = threading.Thread(target=submit)
helper.start()
helper.join()
"""

_EXECS_A_SUBMISSION = """
import corral

def leaf(value):
    return value * 2

def run_leaf():
    with corral.Scheduler(cores=1) as inner:
        return inner.submit(leaf, 21).result(timeout=60)

def through_exec():
    found = {}
    exec("found['value'] = run_leaf()", globals(), {"found": found})
    return found["value"]
"""

_IMPORTS_IT_AS_IT_RUNS = """
def work(value):
    from submits_on_import import work as inner  # (a lazy import: no import cycle)
    return inner(value)
"""

_UNPICKLING_SUBMITS = """
import os
import corral

class Restless:
    def __getstate__(self):
        return {"restless": True}

    def __setstate__(self, state):
        if os.environ.get("SUBMITTED_ON_LOAD") is None:
            os.environ["SUBMITTED_ON_LOAD"] = "1"
            corral.Scheduler(cores=1).submit(abs, -1)

def kind(value):
    return type(value).__name__
"""

_HOLDS_A_SCHEDULER = """
import corral

scheduler = corral.Scheduler(cores=1)

def helper(value):
    return value + 1

@scheduler.job
def train(value):
    return helper(value) * 2
"""

_REFUSED = (r"^jobs were submitted while a corral worker was importing module "
            r"'submits_on_import', whose top level submits them, and each worker that imports it "
            r"would submit them again: workers without end\. Submit only where the module runs "
            r"as the program \(under `if __name__ == \"__main__\":`\) or inside a function$")


@pytest.fixture
def modules(tmp_path, monkeypatch):
    for name, source in [("submits_on_import", _SUBMITS_ON_IMPORT),
                         ("imports_it_as_it_runs", _IMPORTS_IT_AS_IT_RUNS),
                         ("unpickling_submits", _UNPICKLING_SUBMITS),
                         ("holds_a_scheduler", _HOLDS_A_SCHEDULER),
                         ("submits_from_a_thread", _SUBMITS_FROM_A_THREAD_ON_IMPORT),
                         ("execs_a_submission", _EXECS_A_SUBMISSION)]:
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))  # (workers get the driver's sys.path)


def test_a_module_that_submits_jobs_as_it_is_imported_fails_its_job_not_the_machine(
        scheduler, modules):
    job = scheduler.call("submits_on_import:work", 7)
    with pytest.raises(RuntimeError, match=_REFUSED):
        job.result(timeout=60)
    assert scheduler.submit(jobs.identity, "next").result(timeout=60) == "next"


def test_a_thread_a_module_starts_and_joins_as_it_is_imported_may_not_submit_either(
        scheduler, modules):
    """Attack review: a thread started at import had no import in its own
    stack, and each worker's thread started the next generation of workers.
    Refused in that thread, whose exception Python prints to the job's stderr."""
    job = scheduler.call("submits_from_a_thread:work", 7)
    assert job.result(timeout=60) == 7
    assert ("RuntimeError: jobs were submitted while a corral worker was importing module "
            "'submits_from_a_thread'") in job.stderr


def test_a_job_may_submit_through_exec_in_its_modules_namespace(scheduler, modules):
    """Attack review: exec'd code runs as '<module>' in the module's globals,
    and was taken for the module's import."""
    assert scheduler.call("execs_a_submission:through_exec").result(timeout=120) == 42


def test_a_module_imported_by_a_running_job_may_not_submit_as_it_is_imported_either(
        scheduler, modules):
    """Attack review: a lazy import inside the job's function escaped the
    check of the job's loading, and started a generation of workers each."""
    job = scheduler.call("imports_it_as_it_runs:work", 7)
    with pytest.raises(RuntimeError, match=_REFUSED):
        job.result(timeout=60)


def test_an_argument_whose_unpickling_submits_fails_its_job_saying_so(scheduler, modules):
    import unpickling_submits

    job = scheduler.submit(unpickling_submits.kind, unpickling_submits.Restless())
    with pytest.raises(RuntimeError, match=r"^jobs were submitted while a corral worker was "
                                           r"loading a job's function or arguments, whose "
                                           r"unpickling submits them"):
        job.result(timeout=60)


def test_a_module_that_only_holds_a_scheduler_for_its_decorated_functions_runs_them(modules):
    """Attack review: a module's Scheduler for its @scheduler.job functions,
    made when a worker imported the module, was refused: every job failed."""
    import holds_a_scheduler

    try:
        assert holds_a_scheduler.train(2).result(timeout=60) == 6
    finally:
        holds_a_scheduler.scheduler.shutdown()


def test_a_job_may_make_a_scheduler_of_its_own_as_it_runs(scheduler):
    assert scheduler.submit(jobs.run_a_job_of_its_own, 5).result(timeout=120) == 5


@pytest.mark.parametrize("how, status", [("return", 0), ("raise", 1), ("exit", 0)])
def test_a_forked_child_that_returns_into_the_worker_ends_there(tmp_path, how, status):
    """Attack review: a call's forked child that returned, raised or called
    sys.exit (where os._exit was meant) came back into the worker's loop: its
    outcome was reported as the job's, it served the worker's next jobs, and
    the job itself ran on in the real worker, unwatched past its timeout."""
    with corral.Scheduler(cores=1) as sched:
        forked = sched.options(timeout=30).submit(jobs.fork_and_leave_the_child, how)
        said, parent, child_status = forked.result(timeout=30)
        assert (said, child_status) == ("parent", status)
        assert {sched.submit(os.getpid).result(timeout=30) for _ in range(5)} == {parent}
    if how == "raise":
        assert "ValueError: the child raised" in forked.stderr


def test_a_forked_child_in_a_chunk_runs_none_of_the_chunks_next_calls(tmp_path):
    log = tmp_path / "log"
    with corral.Scheduler(cores=1) as sched:
        values = list(sched.map(jobs.fork_on_zero_and_note_pid, [str(log)] * 5, range(5),
                                chunksize=5))
        worker = sched.submit(os.getpid).result(timeout=30)
    assert values == list(range(5))
    lines = log.read_text().splitlines()
    # The child notes call 0 as its own, and ends there: calls 1 to 4 ran once, in the worker.
    assert sorted(lines) == sorted([f"0 {lines[0].split()[1]}"] + [
        f"{x} {worker}" for x in range(5)]) and lines[0].split()[1] != str(worker), lines


def test_a_kill_that_came_as_a_command_ended_on_its_own_does_not_kill_its_retry():
    """The driver kills a command (its timeout) just as it ends on its own,
    fails, and is retried on the same worker under the same id: the kill was
    the first attempt's, and the retry must run."""
    from multiprocessing import Pipe

    from corral.runtime.command import KILL
    from corral.runtime.worker import _Queue

    requests_out, requests_in = Pipe(duplex=False)
    replies_out, replies_in = Pipe(duplex=False)
    doorbell_out, doorbell_in = os.pipe()
    try:
        queue = _Queue(requests_out, replies_in, doorbell_out)
        attempt = ("command", 7, ["true"], None, {}, None)
        with queue.lock:
            queue._begin(attempt)
        queue._take((KILL, 7))  # filed while the first attempt was still running
        with queue.lock:
            queue._begin(attempt)  # it ended, failed, and its retry starts here
        assert queue.stop_requests.take(7) == []
        queue._take((KILL, 7))  # a kill of the retry itself still reaches it
        assert queue.stop_requests.take(7) == [KILL]
    finally:
        os.close(doorbell_in)  # (the doorbell thread ends with it)
        for end in (requests_out, requests_in, replies_out, replies_in):
            end.close()
