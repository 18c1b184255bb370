"""The user stories every backend must pass, written once.

Each story takes the ``backend`` fixture, a :class:`Harness` for one backend:
``local``, ``fakebatch`` (the fake batch scheduler the tests ship, see
``tests/support/fakebatch``) and ``slurm`` (a real one-node cluster, marked
``cluster``). A new backend gets the whole suite by adding one entry to
:data:`HARNESSES`. A story that needs something only some backends do says so
with :func:`needs` and a capability name; backends without it do not get the
story at all (never a skip).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import corral
from corral import JobStatus

HERE = Path(__file__).parent
if os.fspath(HERE) not in sys.path:  # run as a script: tests/ holds the support package
    sys.path.insert(0, os.fspath(HERE))

from jobs import add, square, wait_for_file  # noqa: E402
from support.fakebatch import scheduler as fakebatch  # noqa: E402
from support.processes import pids_alive  # noqa: E402
from support.waiting import loop_barrier, wait_until  # noqa: E402

from corral.backends import BackendInfo, backend_info  # noqa: E402

#: Seconds between a batch backend's status queries (backing off to twice that).
POLL_S = 0.1
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
    """Say it runs (its pid in *pid_file*), wait for *release*, then log and return."""
    Path(pid_file + ".partial").write_text(str(os.getpid()))
    os.replace(pid_file + ".partial", pid_file)
    wait_for_file(release)
    return logged(side, name, value)


# -- the backends ----------------------------------------------------------------------------


@dataclass
class Harness:
    """One backend as the stories use it."""

    name: str
    root: Path
    #: Variables every process of the story needs (a fake scheduler's PATH...).
    environ: dict[str, str] = field(default_factory=dict)
    #: How many status queries the backend ran so far, as a user could count
    #: them; None where it runs none (local) or they cannot be counted.
    status_queries: Callable[[], int] | None = None
    made: list[corral.Scheduler] = field(default_factory=list)

    def scheduler(self, **options: Any) -> corral.Scheduler:
        """A Scheduler on this backend, shut down at the end of the story."""
        made = corral.Scheduler(**scheduler_options(self.name),
                                workdir=self.root / f"run{len(self.made)}", **options)
        self.made.append(made)
        return made

    def close(self) -> None:
        for made in self.made:
            if not made.wait(timeout=30):
                made.interrupt()
            made.shutdown()


def info_of(name: str) -> BackendInfo:
    """The backend *name*: one the tests ship is registered only while a story
    uses it (see :data:`TEST_BACKENDS`), so it is described from here."""
    return TEST_BACKENDS.get(name) or backend_info(name)


def scheduler_options(name: str) -> dict[str, Any]:
    """What a Scheduler on *name* is given: room for a few jobs where corral
    packs them, quick polls where a batch scheduler is asked."""
    if info_of(name).capabilities.packs_locally:
        return {"backend": name, "cores": 4}
    return {"backend": name, "backend_options": {"poll_interval": POLL_S,
                                                 "max_poll_interval": 2 * POLL_S}}


def local_harness(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    yield Harness("local", root)


def fakebatch_harness(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    from support.fakebatch.cluster import FakeBatch

    cluster = FakeBatch(root / "fakebatch", forget_s=3.0)
    cluster.root.mkdir()
    monkeypatch = request.getfixturevalue("monkeypatch")
    for name, value in cluster.environ().items():
        monkeypatch.setenv(name, value)
    try:
        with fakebatch.registered():
            yield Harness("fakebatch", root, cluster.environ(),
                          status_queries=lambda: len(cluster.calls("qstat")))
    finally:
        cluster.stop()


def slurm_harness(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    cluster = request.getfixturevalue("contract_slurm")
    request.getfixturevalue("monkeypatch").setenv("SLURM_CONF", cluster.conf)
    yield Harness("slurm", root, {"SLURM_CONF": cluster.conf})


#: Every backend the stories run on, and how a story gets one. Add a backend here.
HARNESSES: dict[str, Callable[[pytest.FixtureRequest, Path], Iterator[Harness]]] = {
    "local": local_harness,
    "fakebatch": fakebatch_harness,
    "slurm": slurm_harness,
}
#: Backends that need a real cluster: the fast lane (-m "not cluster") leaves them out.
NEEDS_A_CLUSTER = {"slurm"}
#: Backends the tests ship, registered only while a story runs on one (and in
#: this file's driver process), so that no other test sees them.
TEST_BACKENDS: dict[str, BackendInfo] = {"fakebatch": fakebatch.BACKEND}


@pytest.fixture(scope="session")
def contract_slurm() -> Iterator[Any]:
    """A real one-node Slurm without accounting for the stories (the session's
    ``slurm`` fixture is parametrized, so a story cannot ask for it per backend)."""
    import slurm_cluster

    reason = slurm_cluster.why_slurm_cannot_run()
    if reason is not None:  # as conftest's slurm fixture does: the cluster lane says why
        pytest.skip(f"NO SLURM TESTS: {reason}")
    cluster = slurm_cluster.start(accounting=False)
    try:
        yield cluster
    finally:
        slurm_cluster.stop(cluster)


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
                           marks=[pytest.mark.cluster] if name in NEEDS_A_CLUSTER else [])
              for name in HARNESSES
              if all(getattr(info_of(name).capabilities, c) for c in wanted)]
    metafunc.parametrize("backend", params, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    making = HARNESSES[request.param](request, tmp_path)
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


def test_a_failing_command_fails_with_its_exit_code_as_reason(backend):
    job = backend.scheduler().shell("echo bad news >&2; exit 3")
    with pytest.raises(corral.JobFailed, match="exit code 3"):
        job.result(timeout=60)
    assert job.status is JobStatus.FAILED
    assert job.reason.startswith("exit code 3") and job.stderr == "bad news\n"


def test_stdout_and_stderr_are_the_jobs_own(backend):
    job = backend.scheduler().submit(talk, "hello")
    assert job.result(timeout=60) == "hello"
    assert (job.stdout, job.stderr) == ("out hello\n", "err hello\n")


def test_cancelling_a_running_job_ends_it_and_its_process(backend, tmp_path, release):
    pid_file = tmp_path / "pid"
    job = backend.scheduler().submit(mark_then_wait, os.fspath(pid_file), os.fspath(release),
                                     os.fspath(tmp_path), "never", 1)
    wait_until(pid_file.exists, timeout=60, message="the job to start")
    wait_for_status(job, JobStatus.RUNNING)
    assert job.cancel()
    with pytest.raises(corral.CancelledError):
        job.result(timeout=30)
    assert job.status is JobStatus.CANCELLED
    wait_until(lambda: not pids_alive([int(pid_file.read_text())]), timeout=10,
               message="the cancelled job's process to end")


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
            env={**os.environ, **backend.environ, "TMPDIR": os.fspath(tmp_path)})


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
    (tmp_path / "release").touch()
    second = driver_report(start_driver(backend, tmp_path, "finish"), tmp_path, "finish")
    assert [job["value"] for job in second["jobs"]] == [1, 2]
    assert [job["status"] for job in second["jobs"]] == ["COMPLETED", "COMPLETED"]
    assert second["jobs"][0]["reason"] == RESTORED  # it completed before the kill
    assert {name: len(lines(tmp_path / "side" / name)) for name in "ab"} == {"a": 1, "b": 1}
    assert first["journaled"] == "RUNNING"


@needs("outlives_driver")
def test_a_job_outlives_its_killed_driver_and_the_next_driver_attaches_to_it(backend, tmp_path):
    (tmp_path / "side").mkdir()
    first = driver_report(start_driver(backend, tmp_path, "kill"), tmp_path, "kill")
    (tmp_path / "release").touch()
    wait_until((tmp_path / "side" / "b").exists, timeout=60,
               message="the job to finish with no driver")
    second = driver_report(start_driver(backend, tmp_path, "finish"), tmp_path, "finish")
    assert first["running"]  # the backend's id of the job that outlived its driver
    waiting = second["jobs"][1]
    assert (waiting["status"], waiting["value"]) == ("COMPLETED", 2)
    assert waiting["native_id"] == first["running"]  # followed, not submitted again
    assert len(lines(tmp_path / "side" / "b")) == 1


def drive(name: str, run: str, release: str, side: str, mode: str) -> None:
    """The driver: job ``a`` logs and returns 1; job ``b`` marks that it runs,
    waits for RELEASE, logs and returns 2. With ``kill`` it SIGKILLs itself
    once ``a`` completed and ``b`` runs, after printing b's native id; with
    ``finish`` it prints every job's outcome."""
    import test_backend_contract as stories  # jobs go by reference, not as __main__

    with corral.Scheduler(**scheduler_options(name), journal=run) as sched:
        done = sched.submit(stories.logged, side, "a", 1)
        waiting = sched.submit(stories.mark_then_wait, os.path.join(side, "b.pid"), release,
                               side, "b", 2)
        if mode == "kill":
            done.result(timeout=60)
            wait_for_file(os.path.join(side, "b.pid"), limit=60)
            stored = _journaled_status(run, waiting.id, JobStatus.RUNNING)
            print(json.dumps({"running": waiting.native_id, "journaled": stored}), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        outcomes = []
        for job in (done, waiting):
            try:
                value = job.result(timeout=60)
            except Exception as error:  # reported to the test
                value = f"{type(error).__name__}: {error}"
            outcomes.append({"status": job.status.name, "reason": job.reason,
                             "native_id": job.native_id, "value": value})
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
    fakebatch.register()  # this driver's own process: nothing else to leave clean
    drive(*sys.argv[1:])
