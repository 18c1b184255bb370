"""The user stories every backend must pass, written once.

Each story takes the ``backend`` fixture, a :class:`Harness` for one backend:
``local``, ``fakebatch`` (the fake batch scheduler the tests ship, see
``tests/support/fakebatch``), ``slurm`` (a real one-node cluster, marked
``cluster``) and every other module of ``tests/support/harnesses``. A new backend
gets the whole suite by adding one module there. A story that needs something
only some backends do says so with :func:`needs` and a capability name; backends
without it do not get the story at all (never a skip).

Run as a script, this file is a user's journaled driver, for the stories that
SIGKILL a driver and run it again::

    python test_backend_contract.py BACKEND RUN RELEASE SIDE kill|finish
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import corral
from corral import JobStatus

HERE = Path(__file__).parent
if os.fspath(HERE) not in sys.path:  # run as a script: tests/ holds the support package
    sys.path.insert(0, os.fspath(HERE))

from jobs import add, square, wait_for_file  # noqa: E402
from support.harnesses import POLL_S, Harness, harnesses, info_of, scheduler_options  # noqa: E402
from support.processes import pids_alive  # noqa: E402
from support.waiting import loop_barrier, wait_until  # noqa: E402

RESTORED = "completed in an earlier run (from the journal)"


# -- job functions (imported by reference by workers and batch runtimes) ---------------------






def talk(text: str) -> str:
    print(f"out {text}", flush=True)
    print(f"err {text}", file=sys.stderr, flush=True)
    return text


def raise_lookup(message: str) -> None:
    raise LookupError(message)




def logged(side: str, name: str, value: int) -> int:
    """A side effect the stories count: one line in SIDE/name per run."""
    with open(os.path.join(side, name), "a") as handle:
        handle.write(f"ran in pid {os.getpid()}\n")
    return value


def mark_then_wait(pid_file: str, release: str, side: str, name: str, value: int) -> int:
    """Say it runs (its pid in *pid_file*), wait for *release*, then log and
    return; stopped by corral meanwhile, say so in ``<pid_file>.stopped``."""
    Path(pid_file + ".partial").write_text(str(os.getpid()))
    os.replace(pid_file + ".partial", pid_file)
    try:
        wait_for_file(release)
    except corral.JobStopped:
        Path(pid_file + ".stopped").touch()
        raise
    return logged(side, name, value)


def mark_then_wait_changed(pid_file: str, release: str, side: str, name: str, value: int) -> int:
    """:func:`mark_then_wait` edited (its code, as a rerun's driver has it)."""
    Path(pid_file + ".partial").write_text(str(os.getpid()))
    os.replace(pid_file + ".partial", pid_file)
    wait_for_file(release)
    return logged(side, name, value) + 0 * len(name)


# -- the backends (one module each in tests/support/harnesses) --------------------------------


def needs(*capabilities: str) -> Callable[[Callable], Callable]:
    """Give the story only to backends with every one of *capabilities*."""
    def mark(story: Callable) -> Callable:
        story.needs = capabilities  # type: ignore[attr-defined]
        return story
    return mark


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    wanted = getattr(metafunc.function, "needs", ())
    params = [pytest.param(name, id=name,
                           marks=[pytest.mark.cluster] if spec.needs_cluster else [])
              for name, spec in harnesses().items()
              if all(getattr(info_of(name).capabilities, c) for c in wanted)]
    metafunc.parametrize("backend", params, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    making = harnesses()[request.param].start(request, tmp_path)
    harness = next(making)
    try:
        yield harness
    finally:
        harness.close()
        next(making, None)


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Path]:
    """A file whose creation lets blocked jobs end; created at the end of every story."""
    path = tmp_path / "release"
    yield path
    path.touch()


def wait_for_status(job: corral.Job, status: JobStatus, timeout: float = 30) -> None:
    wait_until(lambda: job.status is status, timeout=timeout,
               message=f"{job!r} to become {status.name} (reason: {job.reason})")


# -- what runs, and what comes back ----------------------------------------------------------


def test_a_python_call_returns_its_value(backend):
    assert backend.scheduler().submit(square, 7).result(timeout=60) == 49


def test_a_command_runs_in_a_shell(backend):
    job = backend.scheduler().shell("echo shell says $((6 * 7))")
    job.result(timeout=60)
    assert (job.status, job.stdout) == (JobStatus.COMPLETED, "shell says 42\n")


def test_a_script_gets_its_arguments(backend, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint('script got', sys.argv[1:])\n")
    job = backend.scheduler().script(script, "a b", "c")
    job.result(timeout=60)
    assert job.stdout == "script got ['a b', 'c']\n"


def test_a_scripts_result_is_the_json_it_left_where_corral_said(backend, tmp_path):
    """hypertunity's output_file: a script's data reaches result(), Result.data
    and a job that takes it as an argument (which waits for it in the driver)."""
    script = tmp_path / "trial.py"
    script.write_text("import json, os, sys\n"
                      "x = float(sys.argv[1])\n"
                      "with open(os.environ['CORRAL_RESULT_FILE'], 'w') as out:\n"
                      "    json.dump({'x': x, 'loss': (x - 2) ** 2}, out)\n")
    scheduler = backend.scheduler()
    trial = scheduler.script(script, "3")
    taken = scheduler.submit(dict, trial, seen=True)
    assert trial.result(timeout=60) == {"x": 3.0, "loss": 1.0}
    assert taken.result(timeout=60) == {"x": 3.0, "loss": 1.0, "seen": True}


def test_a_job_without_a_cwd_runs_in_the_drivers_directory(backend, tmp_path, monkeypatch):
    """As the README says, on every backend (fyrd review: on PBS they ran in
    $HOME, where ./step.sh and data/ were not found)."""
    here = tmp_path / "project"
    here.mkdir()
    monkeypatch.chdir(here)
    scheduler = backend.scheduler()
    command = scheduler.shell("pwd")
    assert scheduler.submit(os.getcwd).result(timeout=60) == str(here)
    command.result(timeout=60)
    assert command.stdout == f"{here}\n"


def test_a_failing_command_fails_with_its_exit_code_as_reason(backend):
    job = backend.scheduler().shell("echo bad news >&2; exit 3")
    with pytest.raises(corral.JobFailed, match="exit code 3"):
        job.result(timeout=60)
    assert job.status is JobStatus.FAILED
    assert job.reason.startswith("exit code 3") and job.stderr == "bad news\n"


def test_a_job_whose_cwd_is_gone_could_not_start_and_says_so(backend, tmp_path):
    """A call read "raised FileNotFoundError", as if its function had raised
    (hostile-input review): the job never ran."""
    gone = tmp_path / "gone"
    gone.mkdir()
    scheduler = backend.scheduler()
    removed = scheduler.submit(os.rmdir, os.fspath(gone))
    call = scheduler.options(cwd=gone, after=[removed]).submit(square, 3)
    command = scheduler.shell("echo ran", cwd=gone, after=[removed])
    said = f"could not start: cannot enter its cwd '{gone}': No such file or directory"
    for job in (call, command):
        with pytest.raises(corral.JobFailed, match=f"failed: {said}"):
            job.result(timeout=60)
        assert job.reason.startswith(said)  # (a cluster's job id may follow)


def test_a_job_may_run_in_the_directory_a_job_before_it_makes(backend, tmp_path):
    """A build's `mkdir build`, then a command in `build` (review: refused when
    it was made, as not an existing directory); without after= it still is."""
    build = tmp_path / "build"
    scheduler = backend.scheduler()
    made = scheduler.shell(f"mkdir {build}")
    inside = scheduler.shell("pwd", cwd=build, after=[made])
    inside.result(timeout=60)
    assert inside.stdout == f"{build}\n"
    with pytest.raises(ValueError, match=r"cwd='.*/nowhere' is not an existing directory \(a "
                                         r"job that runs after the one that makes it may "
                                         r"name it: after=\)"):
        scheduler.shell("pwd", cwd=tmp_path / "nowhere")


def test_stdout_and_stderr_are_the_jobs_own(backend):
    job = backend.scheduler().submit(talk, "hello")
    assert job.result(timeout=60) == "hello"
    assert (job.stdout, job.stderr) == ("out hello\n", "err hello\n")


def wait_noting_a_stop(pid_file: str, release: str, stopped: str) -> None:
    """Say it runs (its pid in *pid_file*) and wait for *release*; stopped by
    corral meanwhile (:class:`corral.JobStopped`), say so in *stopped*."""
    Path(pid_file + ".partial").write_text(str(os.getpid()))
    os.replace(pid_file + ".partial", pid_file)
    try:
        wait_for_file(release)
    except corral.JobStopped:
        Path(stopped).write_text("its finally blocks ran")
        raise


#: The harnesses whose calls run in a corral worker, which raises JobStopped in
#: a call it is told to stop and goes on to its next job.
_STOPPED_IN_PLACE = ("local", "dask", "dask_local")


def test_cancelling_a_running_job_ends_it_and_its_process(backend, tmp_path, release):
    """A call run by a corral worker (local, Dask) is stopped by JobStopped
    raised in it, and its worker goes on; a batch job's process is killed."""
    pid_file, stopped = tmp_path / "pid", tmp_path / "stopped"
    job = backend.scheduler().submit(wait_noting_a_stop, os.fspath(pid_file),
                                     os.fspath(release), os.fspath(stopped))
    wait_until(pid_file.exists, timeout=60, message="the job to start")
    wait_for_status(job, JobStatus.RUNNING)
    assert job.cancel()
    with pytest.raises(corral.CancelledError):
        job.result(timeout=30)
    assert job.status is JobStatus.CANCELLED
    if backend.name in _STOPPED_IN_PLACE:
        wait_until(stopped.exists, timeout=10, message="the cancelled call to be stopped")
        assert pids_alive([int(pid_file.read_text())]), "its worker goes on to the next job"
    else:
        wait_until(lambda: not pids_alive([int(pid_file.read_text())]), timeout=10,
                   message="the cancelled job's process to end")


def test_a_command_cancelled_while_it_runs_ends_with_its_children(backend, tmp_path):
    """Cold review (Grid Engine): qdel's SIGKILL ended the batch job, and the
    command, which leads a session of its own, ran on with its child, outside
    the cluster's accounting."""
    job, started = _command_with_a_child(backend.scheduler(), tmp_path)
    wait_for_status(job, JobStatus.RUNNING)
    assert job.cancel()
    with pytest.raises(corral.CancelledError):
        job.result(timeout=60)
    wait_until(lambda: not pids_alive(started), timeout=15,
               message="the cancelled command and its child to end")


def test_a_command_past_its_timeout_ends_with_its_children(backend, tmp_path):
    job, started = _command_with_a_child(backend.scheduler().options(timeout=3), tmp_path)
    with pytest.raises(corral.JobTimedOut):
        job.result(timeout=60)
    wait_until(lambda: not pids_alive(started), timeout=15,
               message="the timed-out command and its child to end")


def _command_with_a_child(scheduler: Any, tmp_path: Path) -> tuple[corral.Job, list[int]]:
    """A command that starts a child and waits for it; its pid and the child's,
    once both run."""
    pids = tmp_path / "pids"
    job = scheduler.shell(f"sleep 300 & echo $$ $! > {pids}.tmp && mv {pids}.tmp {pids}; wait")
    wait_until(pids.exists, timeout=60, message="the command to start its child")
    return job, [int(pid) for pid in pids.read_text().split()]


def test_a_job_past_its_timeout_is_timed_out(backend, release):
    job = backend.scheduler().options(timeout=1).submit(wait_for_file, os.fspath(release))
    with pytest.raises(corral.JobTimedOut):
        job.result(timeout=60)
    assert job.status is JobStatus.TIMED_OUT


# -- dependencies and arrays -----------------------------------------------------------------


def test_a_dependency_chain_passes_results_along(backend):
    sched = backend.scheduler()
    first = sched.submit(square, 3)
    second = sched.submit(add, first, 1)
    third = sched.submit(add, second, first, 1)
    assert third.result(timeout=60) == 20


def test_a_failed_parent_cancels_its_child(backend):
    """Every backend names the root cause, whether corral held the child back
    (local), the scheduler removed it (fakebatch, as PBS does) or left it
    pending for ever (Slurm): the grandchild too names the parent."""
    sched = backend.scheduler()
    parent = sched.submit(raise_lookup, "no such thing")
    child = sched.submit(add, parent, 1)
    grandchild = sched.submit(add, child, 1)
    with pytest.raises(LookupError, match="no such thing"):
        parent.result(timeout=60)
    for doomed in (child, grandchild):
        with pytest.raises(corral.CancelledError):
            doomed.result(timeout=60)
        assert doomed.status is JobStatus.CANCELLED
        assert doomed.reason == f"upstream job {parent.id} 'raise_lookup' failed"


def test_fifty_jobs_dispatched_together_cost_one_status_query_per_poll(backend):
    sched = backend.scheduler()
    before = backend.status_queries() if backend.status_queries else 0
    begun = time.monotonic()
    jobs = [corral.Job(square, (i,)) for i in range(50)]
    sched.dispatch(jobs)
    assert [job.result(timeout=90) for job in jobs] == [i * i for i in range(50)]
    elapsed = time.monotonic() - begun
    if backend.status_queries is not None:  # one query for all 50 at each poll
        queries = backend.status_queries() - before
        assert 1 <= queries <= elapsed / POLL_S + 2, (queries, elapsed)


# -- control ---------------------------------------------------------------------------------


def test_pause_starts_nothing_new_and_resume_runs_it(backend):
    sched = backend.scheduler()
    sched.pause()
    job = sched.submit(square, 5)
    loop_barrier(sched)
    assert job.status in (JobStatus.NEW, JobStatus.WAITING, JobStatus.QUEUED)
    sched.resume()
    assert job.result(timeout=60) == 25


# -- a driver killed with SIGKILL, and run again ---------------------------------------------


def start_driver(backend: Harness, tmp_path: Path, mode: str) -> subprocess.Popen:
    out = tmp_path / f"{mode}.out"
    with open(out, "w") as sink:
        return subprocess.Popen(
            [sys.executable, __file__, backend.name, os.fspath(tmp_path / "journal"),
             os.fspath(tmp_path / "release"), os.fspath(tmp_path / "side"), mode],
            stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, **backend.environ, "TMPDIR": os.fspath(tmp_path),
                 "CORRAL_TEST_BACKEND_OPTIONS": json.dumps(backend.backend_options)})


def driver_report(driver: subprocess.Popen, tmp_path: Path, mode: str) -> dict:
    """The last JSON line the driver printed; it must have ended as *mode* says."""
    try:
        returncode = driver.wait(timeout=120)
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.wait()
        raise
    text = (tmp_path / f"{mode}.out").read_text()
    assert returncode == (-signal.SIGKILL if mode == "kill" else 0), text
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_run_whose_driver_was_sigkilled_resumes_and_runs_each_job_once(backend, tmp_path):
    (tmp_path / "side").mkdir()
    first = driver_report(start_driver(backend, tmp_path, "kill"), tmp_path, "kill")
    if not info_of(backend.name).capabilities.outlives_driver:
        # Its job ends with it, a moment later (stopped, or killed with its
        # process): released before that, it could log its line and end before
        # logging its outcome (and rightly run again).
        job_b = int((tmp_path / "side" / "b.pid").read_text())
        stopped = tmp_path / "side" / "b.pid.stopped"
        wait_until(lambda: stopped.exists() or not pids_alive([job_b]), timeout=10,
                   message="job b to end with its driver")
    (tmp_path / "release").touch()
    second = driver_report(start_driver(backend, tmp_path, "finish"), tmp_path, "finish")
    assert [job["value"] for job in second["jobs"]] == [1, 2]
    assert [job["status"] for job in second["jobs"]] == ["COMPLETED", "COMPLETED"]
    assert second["jobs"][0]["reason"] == RESTORED  # it completed before the kill
    assert {name: len(lines(tmp_path / "side" / name)) for name in "ab"} == {"a": 1, "b": 1}
    assert first["journaled"] == "RUNNING"


@needs("outlives_driver")
def test_a_jobs_cluster_id_is_in_the_journal_as_soon_as_it_is_submitted(
        backend, release, tmp_path, monkeypatch):
    """The id waited for the journal's next batch: a driver killed as its
    program saw job.native_id left a job in the cluster that no journal row
    named (test_sge, once in CI). Here batches are a minute apart."""
    monkeypatch.setattr("corral.journal.store.SEND_INTERVAL_S", 60.0)
    run = tmp_path / "journaled"
    sched = corral.Scheduler(**scheduler_options(backend.name, backend.backend_options),
                             journal=run)
    try:
        job = sched.submit(wait_for_file, str(release))
        wait_until(lambda: job.native_id is not None, timeout=60, message="the job's cluster id")

        def journaled() -> bool:
            return any(stored.native_id == job.native_id
                       for stored in corral.Scheduler.open(run).jobs(results=False))

        wait_until(journaled, timeout=10, message="the cluster id in the journal")
    finally:
        release.touch()
        sched.wait(timeout=60)
        sched.shutdown()


@needs("outlives_driver")
def test_a_job_outlives_its_killed_driver_and_the_next_driver_attaches_to_it(backend, tmp_path):
    (tmp_path / "side").mkdir()
    launched_at = time.time()
    first = driver_report(start_driver(backend, tmp_path, "kill"), tmp_path, "kill")
    released_at = time.time()
    (tmp_path / "release").touch()
    wait_until((tmp_path / "side" / "b").exists, timeout=60,
               message="the job to finish with no driver")
    second = driver_report(start_driver(backend, tmp_path, "finish"), tmp_path, "finish")
    assert first["running"]  # the backend's id of the job that outlived its driver
    waiting = second["jobs"][1]
    assert (waiting["status"], waiting["value"]) == ("COMPLETED", 2)
    # Followed, not submitted again, though its code changed (submitit review: the new
    # code ran beside the old, and the old row stayed RUNNING for good); told so.
    assert waiting["native_id"] == first["running"]
    assert len(lines(tmp_path / "side" / "b")) == 1
    assert ("its code changed since an earlier driver submitted it to the cluster "
            f"({first['running']}) with the code it had then") in (
                tmp_path / "finish.out").read_text()
    assert [job.status for job in corral.Run(tmp_path / "journal").jobs()] == [
        JobStatus.COMPLETED] * 2
    # When it ran, not when the next driver took it up (cold review: its start was the
    # rerun's, after its end, and corral status showed 0.0s for a 6 s job). b waits for
    # the release, so it started between the first driver's launch and the release.
    # (Not "equal to the first driver's": a cluster reports R before the job's shell
    # and Python are up, so the two clocks differ by a login shell's start, >1 s on PBS.)
    assert waiting["started"] <= waiting["ended"]
    assert launched_at <= waiting["started"] <= released_at, (waiting, first, released_at)


def drive(name: str, run: str, release: str, side: str, mode: str) -> None:
    """The driver: job ``a`` logs and returns 1; job ``b`` marks that it runs,
    waits for RELEASE, logs and returns 2. With ``kill`` it SIGKILLs itself
    once ``a`` completed and ``b`` runs, after printing b's native id; with
    ``finish`` it prints every job's outcome."""
    import test_backend_contract as stories  # jobs go by reference, not as __main__

    spec = harnesses()[name]
    if spec.prepare_driver is not None:  # this driver's own process: nothing to leave clean
        spec.prepare_driver()
    options = json.loads(os.environ.get("CORRAL_TEST_BACKEND_OPTIONS", "{}"))
    if mode == "finish":  # b's code changed since the killed driver submitted it
        stories.mark_then_wait.__code__ = stories.mark_then_wait_changed.__code__
    with corral.Scheduler(**scheduler_options(name, options), journal=run) as sched:
        done = sched.submit(stories.logged, side, "a", 1)
        waiting = sched.submit(stories.mark_then_wait, os.path.join(side, "b.pid"), release,
                               side, "b", 2)
        if mode == "kill":
            done.result(timeout=60)
            wait_for_file(os.path.join(side, "b.pid"), limit=60)
            # Both as the journal holds them, or the kill could land before the writer
            # committed a's completion (then a is found in the backend, not restored).
            _journaled_status(run, done.id, JobStatus.COMPLETED)
            stored = _journaled_status(run, waiting.id, JobStatus.RUNNING)
            print(json.dumps({"running": waiting.native_id, "journaled": stored,
                              "started": waiting.started}), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        outcomes = []
        for job in (done, waiting):
            try:
                value = job.result(timeout=60)
            except Exception as error:  # reported to the test
                value = f"{type(error).__name__}: {error}"
            outcomes.append({"status": job.status.name, "reason": job.reason,
                             "native_id": job.native_id, "value": value,
                             "started": job.started, "ended": job.ended})
        print(json.dumps({"jobs": outcomes}), flush=True)


def _journaled_status(run: str, job_id: object, wanted: JobStatus, limit: float = 30) -> str:
    """Wait until the journal holds *wanted* for the job (it lags the driver by
    a few milliseconds); return what it holds at the end."""
    deadline = time.monotonic() + limit
    while True:
        stored = {str(job.id): job for job in corral.Scheduler.open(run).jobs()}.get(str(job_id))
        if (stored is not None and stored.status is wanted) or time.monotonic() > deadline:
            return stored.status.name if stored is not None else "missing"
        time.sleep(0.01)


if __name__ == "__main__":
    drive(*sys.argv[1:])
