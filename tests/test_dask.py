"""The Dask backend on a real ``dask scheduler`` with two ``dask worker`` processes on
loopback (``tests/dask_cluster.py``: the first declares ``cores=2,GPU=1``, the second
nothing), and on LocalClusters. The user stories every backend passes are in
``test_backend_contract.py``; these are what is Dask's own: connecting, resources,
chaining in Dask, a worker or the scheduler dying, and the daemon on Dask."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import corral
from corral.journal.reading import read_jobs
import dask_cluster
from corral import JobStatus
from jobs import (add, append_line, clean_up_when_stopped, hold_the_gil_after_a_child,
                  mark_if_aborted_within, raise_custom, report_environment, sleep_then_note,
                  spawn_tree_and_wait, square,
                  stop_myself_then_clean_up, stop_when_asked, talk,
                  touch, wait_for_file, write_pid_and_wait)
from support.cli import Corral
from support.readme import example_blocks, run_example
from support.processes import pids_alive
from support.waiting import loop_barrier, wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(contract_dask: dask_cluster.DaskCluster) -> dask_cluster.DaskCluster:
    """The session's Dask cluster (shared with the contract stories)."""
    return contract_dask


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[dask_cluster.DaskCluster]:
    """A cluster of this test's own, for a test that kills part of it."""
    started = dask_cluster.start(tmp_path / "own-dask")
    try:
        yield started
    finally:
        dask_cluster.stop(started)


def on(cluster: dask_cluster.DaskCluster, tmp_path: Path, **options) -> corral.Scheduler:
    return corral.Scheduler(backend="dask", address=cluster.address, workdir=tmp_path / "run",
                            **options)


def dask_worker_of(job_pid: int) -> int:
    """The Dask worker process that ran a job: the parent of the job's process."""
    return psutil.Process(job_pid).ppid()


def worker_with_gpu(cluster: dask_cluster.DaskCluster) -> int:
    from distributed import Client

    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        address = next(address for address, info in workers.items() if info["resources"])
        return int(client.run(os.getpid, workers=[address])[address])


# -- connecting -------------------------------------------------------------------------------


def test_the_dask_example_in_the_readme_runs_on_a_local_cluster(tmp_path):
    [block] = [block for block in example_blocks() if 'backend="dask"' in block]
    done = run_example(block, tmp_path, "dask_example")
    assert done.stdout == "CORRAL ON DASK 3\n"


def test_a_job_sees_its_env_cwd_and_id_and_a_failure_keeps_its_remote_traceback(cluster,
                                                                                 tmp_path):
    with on(cluster, tmp_path) as sched:
        seen = sched.options(env={"GREETING": "hi"}, cwd=tmp_path).submit(
            report_environment, "GREETING", "CORRAL_JOB_ID")
        failing = sched.submit(raise_custom, "no such sample")
        assert seen.result(timeout=60) == {"GREETING": "hi", "CORRAL_JOB_ID": str(seen.id),
                                           "cwd": os.fspath(tmp_path)}
        with pytest.raises(Exception, match="no such sample") as raised:
            failing.result(timeout=60)
    assert "raise_custom" in str(raised.value.__cause__)  # the worker's traceback
    assert failing.status is JobStatus.FAILED


def test_the_programs_own_modules_beside_its_script_import_on_the_workers(
        cluster, tmp_path, monkeypatch):
    """Cold review: a module beside the script (pkg/mymod.py) imported in the
    local backend's workers, whose sys.path is the driver's, but not on Dask's,
    whose runners had the Dask worker's: ModuleNotFoundError, though the job
    ran in the driver's directory."""
    beside = tmp_path / "project"
    (beside / "lab").mkdir(parents=True)
    (beside / "lab" / "__init__.py").write_text("")
    (beside / "lab" / "steps.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(os.fspath(beside))  # (as `python project/run.py` has it)
    monkeypatch.delitem(sys.modules, "lab.steps", raising=False)
    from lab.steps import triple  # type: ignore[import-not-found]

    try:
        with on(cluster, tmp_path) as sched:
            assert sched.submit(triple, 5).result(timeout=60) == 15
    finally:
        sys.modules.pop("lab.steps", None)
        sys.modules.pop("lab", None)


def test_a_client_the_user_made_is_used_and_left_open(cluster, tmp_path):
    from distributed import Client

    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        with corral.Scheduler(backend="dask", address=client, workdir=tmp_path / "run") as sched:
            assert sched.submit(square, 6).result(timeout=60) == 36
        assert client.status == "running"
        assert client.submit(square, 5, pure=False).result(timeout=30) == 25


def test_without_an_address_a_local_cluster_runs_the_jobs_and_goes_at_shutdown(tmp_path):
    with corral.Scheduler(backend="dask", cores=2, workdir=tmp_path / "run") as sched:
        pid_file = tmp_path / "pid"
        job = sched.submit(write_pid_and_wait, os.fspath(pid_file), os.fspath(tmp_path / "go"))
        wait_until(pid_file.exists, timeout=60, message="the job to start")
        worker = dask_worker_of(int(pid_file.read_text()))
        (tmp_path / "go").touch()
        job.result(timeout=60)
        assert job.native_id.startswith("corral_write_pid_and_wait-")
    wait_until(lambda: not pids_alive([worker]), timeout=30,
               message="the LocalCluster's worker to end with the scheduler")


def test_a_program_that_ends_with_a_job_running_waits_for_it_and_exits(cluster, tmp_path):
    """As on this machine, outside a with block (a notebook's pattern). Dask
    review: the exit hung for ever, "cannot schedule new futures after
    interpreter shutdown", and the job was recorded as ended by a SIGTERM."""
    program = tmp_path / "program.py"
    program.write_text(
        "import sys, time, corral\n"
        "sched = corral.Scheduler(backend='dask', address=sys.argv[1], journal=sys.argv[2])\n"
        "sched.submit(time.sleep, 1.5)\n"
        "time.sleep(0.3)\n")
    done = subprocess.run([sys.executable, os.fspath(program), cluster.address,
                           os.fspath(tmp_path / "run")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "cannot schedule new futures" not in done.stderr
    assert [job.status for job in read_jobs(tmp_path / "run")] == [JobStatus.COMPLETED]


def test_the_runs_own_caps_hold_on_dask_too(cluster, tmp_path):
    """Dask review: cores=1 ran three jobs at once, and a job asking for more
    than the cap was accepted; the README says neither happens on any backend."""
    with on(cluster, tmp_path, cores=1) as sched:
        with pytest.raises(corral.ResourceError, match=r"asks for 2 cores but cores=1 caps what "
                                                       r"this run has in flight on Dask at once"):
            sched.options(cores=2).submit(add, 1, 2)
        first = sched.submit(write_pid_and_wait, os.fspath(tmp_path / "pid"),
                             os.fspath(tmp_path / "go"))
        second = sched.submit(add, 1, 2)
        wait_until((tmp_path / "pid").exists, timeout=60, message="the first job to start")
        assert second.status is JobStatus.QUEUED  # the cap's one core is taken
        (tmp_path / "go").touch()
        assert (first.result(timeout=60), second.result(timeout=60)) == (None, 3)


def test_with_no_address_the_scheduler_dasks_configuration_names_is_used(cluster, tmp_path,
                                                                          monkeypatch):
    """As a plain Client() does (dask review: a LocalCluster was started instead)."""
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.address)
    import dask

    dask.config.refresh()
    try:
        with corral.Scheduler(backend="dask", workdir=tmp_path / "run") as sched:
            assert sched.submit(add, 1, 2).result(timeout=60) == 3
            assert sched._backend._owned_cluster is None
            assert sched._backend._client.scheduler.address == cluster.address
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()


def test_a_cluster_object_is_connected_to_and_left_running(tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as dask_cluster_object:
        with corral.Scheduler(backend="dask", address=dask_cluster_object,
                              workdir=tmp_path / "run") as sched:
            assert sched.shell("echo from a LocalCluster").result(timeout=60) is None
        with Client(dask_cluster_object, set_as_default=False) as client:
            assert len(client.scheduler_info()["workers"]) == 1


def test_corral_submit_runs_on_dask_when_the_daemon_table_says_so(cluster, tmp_path):
    cli = Corral(tmp_path / "home", tmp_path / "journal")
    cli.config.write_text(f'[daemon]\nbackend = "dask"\naddress = "{cluster.address}"\n')
    job = cli.submit("echo on dask")
    assert cli("wait", job).status == 0
    assert cli.ok("logs", job).out == "on dask\n"
    assert cli.ok("status", "--all").rows()[job]["STATUS"] == "COMPLETED"
    cli.ok("stop")


# -- resources --------------------------------------------------------------------------------


def test_a_gpu_job_runs_on_the_worker_that_declares_a_gpu(cluster, tmp_path):
    gpu_worker = worker_with_gpu(cluster)
    with on(cluster, tmp_path) as sched:
        jobs = [sched.options(gpus=1).submit(os.getppid) for _ in range(4)]
        assert {job.result(timeout=60) for job in jobs} == {gpu_worker}


def test_a_request_no_worker_can_ever_meet_is_refused_naming_each_worker(cluster, tmp_path):
    with on(cluster, tmp_path) as sched:
        for options, asked in (({"gpus": 2}, "2 GPUs"), ({"cores": 3, "gpus": 1}, "3 cores, 1 GPU"),
                               ({"cores": 2, "gpus": 2}, "2 cores, 2 GPUs")):
            with pytest.raises(corral.ResourceError) as refused:
                sched.options(**options).submit(square, 1)
            message = str(refused.value)
            assert f"asks for {asked} but no Dask worker has that much: " in message
            assert re.search(r"tcp://127\.0\.0\.1:\d+ has GPU=1, cores=2 \(2 threads", message)
            assert re.search(r"tcp://127\.0\.0\.1:\d+ has no resources declared", message)
        with pytest.raises(corral.ResourceError,
                           match=r"asks for 1024G of memory but the largest Dask worker's memory "
                                 r"limit is \d"):
            sched.options(memory="1T").submit(square, 1)


def test_a_gpu_request_where_no_worker_declares_gpus_is_refused(tmp_path):
    refused = pytest.raises(corral.ResourceError,
                            match=r"asks for 1 GPU but no Dask worker declares a GPU resource "
                                  r"\(start one with --resources \"GPU=1\"\): tcp://")
    with corral.Scheduler(backend="dask", cores=1, gpus=0, workdir=tmp_path / "run") as sched, \
            refused:
        sched.options(gpus=1).submit(square, 1)


def test_plain_jobs_use_the_worker_that_declares_nothing_too(cluster, tmp_path):
    """A one-core job must not be kept to the workers that declare ``cores``."""
    from distributed import Client

    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        workers = {int(pid) for pid in client.run(os.getpid).values()}
    release = tmp_path / "release"
    with on(cluster, tmp_path) as sched:
        # Four jobs held until all four run: two threads per worker, so both workers.
        jobs = [sched.submit(write_pid_and_wait, os.fspath(tmp_path / f"pid{i}"),
                             os.fspath(release)) for i in range(4)]
        wait_until(lambda: all((tmp_path / f"pid{i}").exists() for i in range(4)), timeout=60,
                   message="four jobs to run at once")
        ran_on = {dask_worker_of(int((tmp_path / f"pid{i}").read_text())) for i in range(4)}
        release.touch()
        for job in jobs:
            job.result(timeout=60)
    assert ran_on == workers


# -- dependencies -----------------------------------------------------------------------------


def test_a_child_waits_for_its_parent_in_dask_not_in_corral(cluster, tmp_path):
    release = tmp_path / "release"
    with on(cluster, tmp_path) as sched:
        parent = sched.submit(wait_for_file, os.fspath(release), 3)
        child = sched.submit(add, parent, 1)
        wait_until(lambda: parent.status is JobStatus.RUNNING, timeout=60,
                   message="the parent to run")
        loop_barrier(sched)
        # Handed to Dask already, with the parent's future: no round trip when it ends.
        assert child.status is JobStatus.SUBMITTED and child.native_id.startswith("corral_add-")
        release.touch()
        assert child.result(timeout=60) == 4


def test_a_job_cancelled_in_dasks_queue_before_it_began_counts_no_try(cluster, tmp_path):
    """Cold review (a Parsl port): a dependent cancelled because its parent
    failed, which never ran, showed TRIES 1 on Dask and 0 locally."""
    with on(cluster, tmp_path) as sched:
        parent = sched.submit(raise_custom, "parent fails")
        child = sched.submit(add, parent, 1)
        with pytest.raises(corral.CancelledError):
            child.result(timeout=60)
    assert (parent.attempts, child.attempts) == (1, 0)
    assert child.reason.startswith(f"upstream job {parent.id} 'raise_custom' failed")


def test_fifty_equal_jobs_dispatched_together_go_to_dask_as_one_graph(cluster, tmp_path):
    """One ``client.map``: the Dask scheduler logs one graph update for all fifty."""
    from distributed import Client

    def graph_updates(client) -> int:
        return sum(1 for _, event in client.get_events("scheduler")
                   if isinstance(event, dict) and event.get("action") == "update-graph")

    with Client(cluster.address, timeout=30, set_as_default=False) as watcher, \
            on(cluster, tmp_path) as sched:
        before = graph_updates(watcher)
        jobs = [corral.Job(square, (i,)) for i in range(50)]
        sched.dispatch(jobs)
        assert [job.result(timeout=60) for job in jobs] == [i * i for i in range(50)]
        assert graph_updates(watcher) - before == 1


def test_an_automatic_map_runs_tiny_calls_in_chunks_on_dask(cluster, tmp_path):
    with corral.Scheduler(backend="dask", address=cluster.address,
                          journal=tmp_path / "run") as sched:
        assert list(sched.map(square, range(5000), chunksize="auto")) == [
            i * i for i in range(5000)]
    assert len(read_jobs(tmp_path / "run")) < 500  # a job per call would be 5,000


# -- pause and priority -----------------------------------------------------------------------


def test_pause_holds_what_waits_in_dask_and_resume_runs_it(cluster, tmp_path):
    """Four running parents fill the cluster's four threads; a chained child and a
    plain job wait in Dask. Paused, neither runs when the threads come free."""
    from distributed import Client

    gate = tmp_path / "gate"
    with on(cluster, tmp_path) as sched, \
            Client(cluster.address, timeout=30, set_as_default=False) as watcher:
        parents = [sched.submit(write_pid_and_wait, os.fspath(tmp_path / f"p{i}"),
                                os.fspath(gate)) for i in range(4)]
        wait_until(lambda: all((tmp_path / f"p{i}").exists() for i in range(4)), timeout=60,
                   message="the parents to fill every thread")
        child = sched.options(after=[parents[0]]).submit(add, 1, 1)
        waiting = sched.submit(touch, os.fspath(tmp_path / "waiting-ran"))
        wait_until(lambda: (child.status, waiting.status) == (JobStatus.SUBMITTED,) * 2,
                   timeout=30, message="both to be handed to Dask")
        sched.pause()
        gate.touch()
        for parent in parents:
            parent.result(timeout=60)
        # Dask starts what it was given before what it is given later: once a task of
        # the watcher's ran, the held ones came to their turn.
        assert watcher.submit(square, 2, pure=False).result(timeout=60) == 4
        loop_barrier(sched)
        assert not (tmp_path / "waiting-ran").exists()
        assert (child.status, waiting.status) == (JobStatus.SUBMITTED, JobStatus.SUBMITTED)
        sched.resume()
        assert child.result(timeout=60) == 2 and waiting.result(timeout=60) is None
        assert (tmp_path / "waiting-ran").exists()


def test_dask_starts_the_higher_priority_jobs_first(tmp_path):
    """One worker thread, busy: of the jobs waiting in Dask, the higher priority
    ones start first, whatever the order they were submitted in."""
    started = dask_cluster.start(tmp_path / "dask", workers=(None,), nthreads=1)
    order = tmp_path / "order"
    try:
        with on(started, tmp_path) as sched:
            gate = sched.submit(write_pid_and_wait, os.fspath(tmp_path / "pid"),
                                os.fspath(tmp_path / "gate"))
            wait_until((tmp_path / "pid").exists, timeout=60, message="the gate to run")
            jobs = [sched.options(priority=priority, name=f"{name}").submit(
                        append_line, os.fspath(order), name)
                    for name, priority in (("low1", 0), ("low2", 0), ("high1", 5), ("high2", 9))]
            wait_until(lambda: all(job.status is JobStatus.SUBMITTED for job in jobs),
                       timeout=30, message="every job to be handed to Dask")
            (tmp_path / "gate").touch()
            gate.result(timeout=60)
            for job in jobs:
                job.result(timeout=60)
        assert order.read_text().split() == ["high2", "high1", "low1", "low2"]
    finally:
        dask_cluster.stop(started)


# -- killing ----------------------------------------------------------------------------------


def test_a_commands_grandchildren_are_killed_on_timeout(cluster, tmp_path):
    pids = tmp_path / "pids"
    command = (f"sleep 300 & echo $! >> {pids}; setsid sleep 300 & echo $! >> {pids}; "
               f"sh -c 'sleep 300 & echo $! >> {pids}; wait' & wait")
    with on(cluster, tmp_path) as sched:
        job = sched.options(timeout=2).shell(command)
        with pytest.raises(corral.JobTimedOut):
            job.result(timeout=60)
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(started) == 3
    wait_until(lambda: not pids_alive(started), timeout=10,
               message="the command's whole tree to be killed")


def test_a_calls_process_tree_is_killed_on_timeout(cluster, tmp_path):
    pid_file = tmp_path / "pids"
    with on(cluster, tmp_path) as sched:
        job = sched.options(timeout=2).submit(spawn_tree_and_wait, os.fspath(pid_file))
        with pytest.raises(corral.JobTimedOut):
            job.result(timeout=60)
    started = [int(pid) for pid in pid_file.read_text().split()]
    wait_until(lambda: not pids_alive(started), timeout=10,
               message="the call's process and its children to be killed")


def test_a_call_past_its_timeout_runs_its_finally_and_its_runner_takes_the_next_job(
        cluster, tmp_path):
    """A call Dask's cancel reached was killed with its runner at once: no
    finally block ran, and a call that had just returned could be killed before
    its outcome was logged, for a rerun to run it again (CI, once). It gets
    JobStopped raised in it, as on the local backend, and its runner goes on."""
    marker, started = tmp_path / "cleaned", tmp_path / "started"
    with on(cluster, tmp_path) as sched:
        job = sched.options(timeout=1).submit(clean_up_when_stopped, str(marker), str(started))
        with pytest.raises(corral.JobTimedOut) as raised:
            job.result(timeout=60)
        assert job.status is JobStatus.TIMED_OUT
        assert job.reason == ("timed out after 1.0s; stopped by JobStopped raised in it, its "
                              "child processes killed")
        # Where it hung, as on the local backend:
        assert "time.sleep(60)" in str(raised.value.__cause__)
        assert marker.read_text() == "cleaned up"
        runner = int(started.read_text())
        assert pids_alive([runner]), "its runner goes on to the next job"


def _driver_program(cluster: dask_cluster.DaskCluster, run: Path, names: str, body: str) -> str:
    """A driver program on *cluster*, journaled in *run*, that imports *names*
    from the tests' jobs and runs *body* (its lines indented as in a module)
    with the Scheduler ``s`` open; ``sys.argv[1:]`` tells a rerun from a run."""
    return (f"import corral, functools, os, signal, sys, time; sys.path.insert(0, "
            f"{str(Path(__file__).parent)!r})\n"
            f"from jobs import {names}\n"
            f"with corral.Scheduler(backend='dask', address={cluster.address!r}, "
            f"journal={str(run)!r}) as s:\n" + textwrap.indent(textwrap.dedent(body), "    "))


def _kill_once(started: Path) -> str:
    """Driver lines that SIGKILL the driver once *started* exists."""
    return (f"deadline = time.monotonic() + 60\n"
            f"while not os.path.exists({str(started)!r}) and time.monotonic() < deadline:\n"
            "    time.sleep(0.01)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")


def test_a_call_stopped_because_its_driver_was_killed_reads_as_ended_with_its_driver(
        cluster, tmp_path):
    """Dask cancels the tasks of a killed driver, and the call gets JobStopped;
    its runner logged that failure, and the next session read it as the call's
    own: FAILED, "raised JobStopped" (re-attack review)."""
    run, marker, started = tmp_path / "run", tmp_path / "cleaned", tmp_path / "started"
    driver_code = _driver_program(
        cluster, run, "clean_up_when_stopped",
        f"s.submit(clean_up_when_stopped, {str(marker)!r}, {str(started)!r})\n"
        + _kill_once(started))
    subprocess.run([sys.executable, "-c", driver_code], timeout=120)
    assert started.exists(), "the call never started"
    wait_until(marker.exists, timeout=30, message="the call's finally block")
    with on(cluster, tmp_path, journal=run):
        pass
    (job,) = corral.Run(run).jobs()
    assert job.status is JobStatus.CANCELLED, job.reason
    assert "its driver ended before it did" in job.reason


def test_a_call_that_swallowed_the_stop_of_its_killed_driver_runs_again_in_the_rerun(
        cluster, tmp_path):
    """Attack review: a call whose bare except: swallowed the JobStopped of its
    killed driver's cancelled task returned its partial work; the runner logged
    it as the call's outcome, and the rerun restored it as the job's result."""
    run, started, release = tmp_path / "run", tmp_path / "started", tmp_path / "release"
    driver_code = _driver_program(
        cluster, run, "partial_unless_released",
        f"job = s.submit(partial_unless_released, {str(started)!r}, {str(release)!r})\n"
        "if len(sys.argv) > 1:\n"
        "    print(job.result(timeout=60), job.reason)\n"
        "else:\n" + textwrap.indent(_kill_once(started), "    "))
    subprocess.run([sys.executable, "-c", driver_code], timeout=120)
    assert started.exists(), "the call never started"
    wait_until(Path(f"{started}.caught").exists, timeout=30,
               message="the call to catch its stop and return")
    release.touch()
    rerun = subprocess.run([sys.executable, "-c", driver_code, "again"], capture_output=True,
                           text=True, timeout=120)
    assert rerun.stdout.split()[0] == "whole", (rerun.stdout, rerun.stderr)


def test_a_cancelled_call_that_stopped_its_own_process_still_runs_its_finally(cluster,
                                                                             tmp_path):
    """Attack review: the runner a call had stopped (SIGSTOP) read no stop, and
    was killed after the grace with no finally run; the local backend wakes it."""
    marker, started = tmp_path / "cleaned", tmp_path / "started"
    with on(cluster, tmp_path) as sched:
        job = sched.submit(stop_myself_then_clean_up, str(marker), str(started))
        wait_until(lambda: started.exists() and job.status is JobStatus.RUNNING, timeout=60,
                   message="the call to start and stop itself")
        assert job.cancel()
        wait_until(marker.exists, timeout=10, message="the call's finally block")


def test_a_rerun_waits_for_the_killed_drivers_calls_to_end_their_finally_blocks(cluster,
                                                                                tmp_path):
    """Attack review: a killed driver's calls get JobStopped and their grace,
    and a rerun started meanwhile ran the same job beside the old one's
    finally blocks (which could remove what the new one had just made)."""
    run, log, release = tmp_path / "run", tmp_path / "log", tmp_path / "release"
    driver_code = _driver_program(
        cluster, run, "note_with_a_slow_finally",
        "if len(sys.argv) > 1:\n"
        f"    open({str(release)!r}, 'w').close()\n"
        f"job = s.submit(note_with_a_slow_finally, {str(log)!r}, {str(release)!r}, 1.8)\n"
        "if len(sys.argv) > 1:\n"
        "    job.result(timeout=60)\n"
        "else:\n" + textwrap.indent(_kill_once(log), "    "))
    subprocess.run([sys.executable, "-c", driver_code], timeout=120)
    rerun = subprocess.run([sys.executable, "-c", driver_code, "again"], capture_output=True,
                           text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert log.read_text().split() == ["begin", "end", "begin", "end"]
    # The killed driver's Dask directory went once waited for: no later session waits.
    assert not list(run.glob(".dask-*"))


def test_a_session_beside_another_in_one_directory_leaves_its_dask_directory_alone(
        cluster, tmp_path):
    """A session that finds another's Dask directory waits for that one's jobs
    and removes it only where its driver is dead: two programs with one
    workdir each keep theirs."""
    release = tmp_path / "release"
    def session() -> corral.Scheduler:
        return corral.Scheduler(backend="dask", address=cluster.address,
                                workdir=tmp_path / "shared")

    with session() as first:
        waiting = first.submit(wait_for_file, str(release))
        wait_until(lambda: waiting.status is JobStatus.RUNNING, timeout=60,
                   message="the first session's job to run")
        (theirs,) = (tmp_path / "shared").glob(".dask-*")
        dead = tmp_path / "shared" / ".dask-0000000000"  # (a killed driver's, long gone)
        (dead / "claims").mkdir(parents=True)
        (dead / "driver").write_text(f"{socket.gethostname()} 999999999 1")
        with session() as second:
            assert second.submit(square, 3).result(timeout=60) == 9
            assert theirs.is_dir()
            # Removed: the first session's running job is not the dead one's to wait for
            # (re-attack review: it was waited for, and the dead directory stayed).
            assert not dead.exists()
        release.touch()
        assert waiting.result(timeout=60) is None


def test_a_call_that_goes_on_after_jobstopped_is_killed_with_its_runner(cluster, tmp_path):
    marker, started = tmp_path / "cleaned", tmp_path / "started"
    with on(cluster, tmp_path) as sched:
        job = sched.options(timeout=1).submit(clean_up_when_stopped, str(marker), str(started),
                                              go_on=True)
        with pytest.raises(corral.JobTimedOut):
            job.result(timeout=60)
    runner = int(started.read_text())
    wait_until(lambda: not pids_alive([runner]), timeout=15,
               message="the call that went on to be killed with its runner")
    assert not marker.exists(), "killed: its finally did not run"


def test_an_aborted_call_sees_its_abort_and_stops_cleanly(cluster, tmp_path):
    marker, started = tmp_path / "marker", tmp_path / "started"
    with on(cluster, tmp_path, abort_grace=30) as sched:
        job = sched.submit(stop_when_asked, str(marker), str(started))
        wait_until(started.exists, timeout=60, message="the call to start")
        assert sched.abort(job) == 1
        assert not corral.wait([job], timeout=20).not_done, "not stopped well within its grace"
    assert marker.read_text() == "stopped cleanly"
    assert (job.status, job.record.reason) == (JobStatus.CANCELLED, "aborted")


def test_abort_stops_the_running_calls_and_the_calls_waiting_in_dask_run_on(cluster,
                                                                               tmp_path):
    """BUG (attack review): abort() asked the calls still waiting in Dask's
    queue too: they were counted, never told, and ended CANCELLED "aborted"
    all the same, killed or not (the queue was to go on)."""
    with on(cluster, tmp_path, abort_grace=30) as sched:
        calls = [sched.submit(mark_if_aborted_within, str(tmp_path / f"aborted-{n}"), 1.5)
                 for n in range(10)]  # (the cluster has 4 slots)
        wait_until(lambda: any(job.status is JobStatus.RUNNING for job in calls), timeout=60,
                   message="calls to run")
        asked = sched.abort()
        assert sched.wait(timeout=120)
    aborted = [job for job in calls if job.status is JobStatus.CANCELLED]
    assert len(aborted) == asked and 0 < asked < len(calls)
    for n, job in enumerate(calls):  # each aborted call saw its abort; none other did
        assert (job in aborted) == (tmp_path / f"aborted-{n}").exists(), (job, job.reason)
    assert [job.result() for job in calls if job not in aborted] == \
        ["ran on"] * (len(calls) - asked)


# -- faults -----------------------------------------------------------------------------------


def test_a_sigkilled_drivers_jobs_are_killed_on_the_workers(cluster, tmp_path):
    """The Dask scheduler forgets a client that went away; the task sees its key
    cancelled and kills the job's tree: nothing of the run keeps running."""
    pid_file = tmp_path / "pids"
    driver_code = (
        "import corral, sys, time\n"
        f"s = corral.Scheduler(backend='dask', address={cluster.address!r}, "
        f"workdir={str(tmp_path / 'run')!r})\n"
        f"s.shell('sleep 300 & echo $! >> {pid_file}; sleep 300 & echo $! >> {pid_file}; wait')\n"
        "time.sleep(600)\n")
    driver = subprocess.Popen([sys.executable, "-c", driver_code])
    try:
        wait_until(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2,
                   timeout=60, message="the command to start its children")
        started = [int(pid) for pid in pid_file.read_text().split()]
        driver.kill()
        driver.wait()
        wait_until(lambda: not pids_alive(started), timeout=20,
                   message="the dead driver's command to be killed on the worker")
    finally:
        driver.kill()
        driver.wait()


def test_a_job_left_waiting_in_dask_by_a_killed_driver_counts_one_try_after_the_rerun(
        cluster, tmp_path):
    """Cold review (a Parsl port): each job that waited in Dask's queue when
    the driver was killed showed TRIES 2 after the rerun, having run once."""
    run, release = tmp_path / "run", tmp_path / "release"
    driver_code = (
        f"import corral, sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from jobs import add, wait_for_file\n"
        f"with corral.Scheduler(backend='dask', address={cluster.address!r}, "
        f"journal={str(run)!r}) as s:\n"
        f"    print(s.submit(add, s.submit(wait_for_file, {str(release)!r}, 1), 1).result())\n")
    driver = subprocess.Popen([sys.executable, "-c", driver_code], stdout=subprocess.PIPE)
    def statuses() -> list[JobStatus]:
        try:
            return [job.status for job in corral.Run(run).jobs()]
        except FileNotFoundError:  # (no journal yet)
            return []

    try:
        wait_until(lambda: statuses() == [JobStatus.RUNNING, JobStatus.SUBMITTED], timeout=60,
                   message="the parent to run and its child to wait in Dask")
    finally:
        driver.kill()
        driver.wait()
    release.touch()
    rerun = subprocess.run([sys.executable, "-c", driver_code], capture_output=True, text=True,
                           timeout=120)
    assert rerun.stdout == "2\n", rerun.stderr
    _parent, child = corral.Run(run).jobs()
    assert child.attempts == 1  # (the parent ran once or twice: its first try may have ended)


def test_a_sigkilled_worker_fails_its_job_as_worker_lost_and_the_rest_finish(own_cluster,
                                                                               tmp_path):
    release = tmp_path / "release"
    with on(own_cluster, tmp_path) as sched:
        victim = sched.submit(write_pid_and_wait, os.fspath(tmp_path / "victim"),
                              os.fspath(release))
        retried = sched.options(retries=1).submit(write_pid_and_wait,
                                                  os.fspath(tmp_path / "retried"),
                                                  os.fspath(release))
        for pid_file in ("victim", "retried"):
            wait_until((tmp_path / pid_file).exists, timeout=60, message=f"{pid_file} to start")
        job_pids = [int((tmp_path / name).read_text()) for name in ("victim", "retried")]
        workers = {dask_worker_of(pid) for pid in job_pids}
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        others = [sched.submit(square, i) for i in range(20)]
        with pytest.raises(corral.WorkerLost, match="worker lost"):
            victim.result(timeout=60)
        assert victim.status is JobStatus.FAILED and victim.reason.startswith("worker lost")
        release.touch()
        assert retried.result(timeout=60) is None and retried.attempts == 2
        assert [job.result(timeout=60) for job in others] == [i * i for i in range(20)]
    wait_until(lambda: not pids_alive(job_pids), timeout=10,
               message="the lost jobs' processes to die with their worker")


def test_a_call_holding_the_gil_dies_with_its_sigkilled_dask_worker(own_cluster, tmp_path):
    """Its corral worker cannot notice its parent's death (its guard thread never
    gets the GIL): the Dask worker's reaper process kills it and its child."""
    pid_file = tmp_path / "pids"
    with on(own_cluster, tmp_path) as sched:
        job = sched.submit(hold_the_gil_after_a_child, os.fspath(pid_file))
        wait_until(pid_file.exists, timeout=60, message="the job to start")
        pids = [int(pid) for pid in pid_file.read_text().split()]
        os.kill(dask_worker_of(pids[0]), signal.SIGKILL)
        with pytest.raises(corral.WorkerLost):
            job.result(timeout=60)
        wait_until(lambda: not pids_alive(pids), timeout=20,
                   message="the GIL-holding job and its child to be killed")


def test_jobs_only_assigned_to_a_worker_that_dies_run_when_it_is_back(own_cluster, tmp_path):
    """Dask assigns GPU jobs to the one GPU worker at once, queued behind each other:
    when it dies, only the job it was running is lost; the queued ones run later."""
    release = tmp_path / "release"
    with on(own_cluster, tmp_path) as sched:
        running = sched.options(gpus=1).submit(write_pid_and_wait, os.fspath(tmp_path / "pid"),
                                               os.fspath(release))
        queued = [sched.options(gpus=1).submit(square, i) for i in range(3)]
        wait_until((tmp_path / "pid").exists, timeout=60, message="the GPU job to start")
        wait_until(lambda: running.status is JobStatus.RUNNING, timeout=60,
                   message="the GPU job to be seen running")
        os.kill(dask_worker_of(int((tmp_path / "pid").read_text())), signal.SIGKILL)
        with pytest.raises(corral.WorkerLost):
            running.result(timeout=60)
        assert [job.result(timeout=90) for job in queued] == [0, 1, 4]
        assert [job.attempts for job in queued] == [1, 1, 1]
    release.touch()


def test_a_scheduler_that_goes_away_fails_the_unfinished_jobs_instead_of_hanging(own_cluster,
                                                                                   tmp_path):
    release = tmp_path / "release"
    sched = on(own_cluster, tmp_path)
    try:
        running = sched.submit(write_pid_and_wait, os.fspath(tmp_path / "pid"),
                               os.fspath(release))
        waiting = sched.submit(add, running, 1)
        wait_until(lambda: running.status is JobStatus.RUNNING, timeout=60,
                   message="the job to run")
        wait_until((tmp_path / "pid").exists, timeout=60, message="the job's pid")
        scheduler_process = own_cluster.processes[0]
        scheduler_process.send_signal(signal.SIGKILL)
        scheduler_process.wait()
        with pytest.raises(corral.JobFailed) as failed:
            running.result(timeout=60)
        assert re.fullmatch(rf"the Dask scheduler at {own_cluster.address} went away",
                            running.reason), running.reason
        assert failed.value.status is JobStatus.FAILED
        with pytest.raises(corral.CancelledError):
            waiting.result(timeout=60)
        later = sched.submit(square, 2)
        with pytest.raises(corral.JobFailed, match="went away"):
            later.result(timeout=30)
        # The worker, its scheduler gone, closes: the job must not run on unseen.
        wait_until(lambda: not pids_alive([int((tmp_path / "pid").read_text())]), timeout=30,
                   message="the job's process to end with its worker")
    finally:
        release.touch()
        sched.shutdown()


# -- one cluster, many runs -------------------------------------------------------------------


def test_a_later_run_on_the_same_workers_runs_the_code_as_it_is_now(tmp_path, monkeypatch):
    """Each run gets corral worker processes of its own in the Dask workers, which
    import the run's modules afresh: an edited module is not served stale."""
    code = tmp_path / "code"
    code.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, (str(code), os.environ.get("PYTHONPATH")))))
    monkeypatch.syspath_prepend(str(code))
    module = code / "edited_job.py"
    started = dask_cluster.start(tmp_path / "dask", workers=(None,))
    try:
        for version in ("first", "second"):
            module.write_text(f"def which():\n    return {version!r}\n")
            sys.modules.pop("edited_job", None)
            import edited_job

            with on(started, tmp_path / version) as sched:
                assert sched.submit(edited_job.which).result(timeout=60) == version
    finally:
        dask_cluster.stop(started)


# -- workers without the shared filesystem ----------------------------------------------------


def test_workers_that_do_not_see_the_run_directory_send_the_output_back(tmp_path):
    """Workers in a mount namespace where the run directory is covered by an empty
    tmpfs, as on machines without the driver's filesystem: output travels with the
    result, and nothing of the run is written on the workers' side."""
    hidden = tmp_path / "shared"
    cluster = dask_cluster.start(tmp_path / "dask", workers=(None,), hide=hidden)
    try:
        with corral.Scheduler(backend="dask", address=cluster.address,
                              workdir=hidden / "run") as sched:
            call = sched.submit(talk, "far away")
            command = sched.shell("echo command out; echo command err >&2; exit 4")
            assert call.result(timeout=60) == "far away"
            with pytest.raises(corral.JobFailed, match="exit code 4"):
                command.result(timeout=60)
            assert call.stdout == "py-out far away\nchild-out far away\n"
            assert call.stderr == "py-err far away\nchild-err far away\n"
            assert (command.stdout, command.stderr) == ("command out\n", "command err\n")
            first = sched.submit(square, 3)
            assert sched.submit(add, first, 1).result(timeout=60) == 10
            # (A review: the command's result file was written where nobody read it.)
            script = sched.shell('echo \'{"loss": 0.25}\' > "$CORRAL_RESULT_FILE"')
            assert script.result(timeout=60) == {"loss": 0.25}
            not_json = sched.shell('echo oops > "$CORRAL_RESULT_FILE"')
            with pytest.raises(corral.JobFailed, match=r"result file .*/result\.json is not JSON"):
                not_json.result(timeout=60)
    finally:
        dask_cluster.stop(cluster)


# -- found by the second review -----------------------------------------------------------------


def test_jobs_waiting_for_a_worker_that_left_for_good_fail_naming_why(own_cluster, tmp_path):
    """The only GPU worker is retired: the GPU jobs waiting for it would wait in Dask
    for ever. A while later (a killed worker comes back by then) they fail."""
    from distributed import Client

    release = tmp_path / "release"
    with on(own_cluster, tmp_path) as sched, \
            Client(own_cluster.address, timeout=30, set_as_default=False) as admin:
        running = sched.options(gpus=1).submit(write_pid_and_wait, os.fspath(tmp_path / "pid"),
                                               os.fspath(release))
        waiting = sched.options(gpus=1).submit(square, 3)
        wait_until(lambda: running.status is JobStatus.RUNNING, timeout=60,
                   message="the GPU job to run")
        gpu_worker = next(address for address, info
                          in admin.scheduler_info(n_workers=-1)["workers"].items()
                          if info["resources"])
        release.touch()
        admin.retire_workers([gpu_worker], close_workers=True)
        with pytest.raises(corral.JobFailed, match=r"no Dask worker left can run it: it asks "
                                                   r"for 1 GPU but no Dask worker declares a GPU"):
            waiting.result(timeout=60)


def test_a_scheduler_that_went_away_is_reported_once_not_again_by_dask_at_shutdown(
        own_cluster, tmp_path, capfd, caplog):
    """distributed's client, closed while it tries to reconnect, logged its
    cancelled attempt as an error with two tracebacks (about 35 lines)."""
    release = tmp_path / "release"
    sched = on(own_cluster, tmp_path)
    try:
        running = sched.submit(write_pid_and_wait, os.fspath(tmp_path / "pid"),
                               os.fspath(release))
        wait_until((tmp_path / "pid").exists, timeout=60, message="the job's pid")
        own_cluster.processes[0].send_signal(signal.SIGKILL)
        own_cluster.processes[0].wait()
        with pytest.raises(corral.JobFailed, match="went away"):
            running.result(timeout=60)
    finally:
        release.touch()
        capfd.readouterr()
        sched.shutdown()
    said = capfd.readouterr().err
    assert "Traceback" not in said and "distributed.client - ERROR" not in said, said
    dask_said = [record.getMessage() for record in caplog.records
                 if record.name.startswith("distributed") and record.levelno >= logging.ERROR]
    assert not dask_said, dask_said
    assert "1 failed (job 1 'write_pid_and_wait': the Dask scheduler at" in caplog.text  # corral's


def test_an_address_that_is_not_a_dask_scheduler_is_an_error_not_a_hang(tmp_path):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
    try:
        with pytest.raises(corral.BackendError, match=rf"^no Dask scheduler answered at "
                                                      rf"{address} within 1 s"):
            corral.Scheduler(backend="dask", address=address,
                             backend_options={"connect_timeout": 1}, workdir=tmp_path / "run")
    finally:
        silent.close()


def test_a_child_that_dropped_its_environment_dies_with_a_sigkilled_worker(own_cluster,
                                                                            tmp_path):
    """`env -i` removes the mark the reaper finds processes by: it kills the marked
    processes' descendants too, frozen first, so none is orphaned on the way."""
    pids = tmp_path / "pids"
    with on(own_cluster, tmp_path) as sched:
        job = sched.shell(f"env -i setsid sleep 4319 & echo $! >> {pids}; "
                          f"env -i sleep 4320 & echo $! >> {pids}; echo $$ >> {pids}; wait")
        wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 3, timeout=60,
                   message="the job's children to start")
        started = [int(pid) for pid in pids.read_text().split()]
        runner = dask_worker_of(started[2])  # the shell's parent: corral's worker process
        os.kill(dask_worker_of(runner), signal.SIGKILL)
        with pytest.raises(corral.WorkerLost):
            job.result(timeout=60)
    wait_until(lambda: not pids_alive(started), timeout=20,
               message="every process of the job to be killed")


def test_a_runner_busy_with_a_cancelled_command_as_its_run_ends_goes_with_it(cluster, tmp_path):
    """Attack review: a runner still busy with a task cancelled a moment ago
    when its driver ended normally stayed three minutes (its idle exit), then
    as a zombie of the Dask worker; it now goes once that task has ended."""
    shell_pid = tmp_path / "pid"
    with on(cluster, tmp_path) as sched:
        job = sched.shell(f"echo $$ > {shell_pid}; exec sleep 4321")
        wait_until(lambda: shell_pid.exists() and shell_pid.read_text().strip(), timeout=60,
                   message="the command to start")
        runner = dask_worker_of(int(shell_pid.read_text()))  # corral's worker process
        assert job.cancel()
    # (the driver told the workers its run ended as the cancel reached the task)
    wait_until(lambda: not pids_alive([runner]), timeout=30,
               message="the runner to go with its run")


def assert_each_ran_to_its_end_once(log: Path, calls: int) -> None:
    """Each of the *calls* calls of sleep_then_note noted in *log* once, or more
    often only where corral stopped it after its note (it did not complete)."""
    lines = log.read_text().split()
    stopped_file = Path(f"{log}.stopped")
    stopped = set(stopped_file.read_text().split()) if stopped_file.exists() else set()
    assert sorted(set(lines), key=int) == [str(x) for x in range(calls)]
    twice = sorted({x for x in lines if lines.count(x) > 1} - stopped, key=int)
    assert not twice, f"ran to its end twice: {twice}"


def test_calls_of_a_map_left_early_that_ran_to_their_end_do_not_run_again_in_the_rerun(
        cluster, tmp_path):
    """Attack review: leaving a journaled map's loop early cancels its unread
    calls, and Dask drops the result of a task cancelled as it ends; 7 to 19 calls
    of 20 ms that had run to their end were recorded CANCELLED with no try, and
    the rerun ran them again. They are recorded as having completed all the same
    (from the task's word, or the run's outcome log), as the local backend does."""
    from functools import partial

    log = tmp_path / "log"  # a line per call that ran to its end
    calls = partial(sleep_then_note, str(log), 0.02)
    with on(cluster, tmp_path, journal=tmp_path / "run") as sched:
        for result in sched.map(calls, range(400)):
            if result == 100:
                break
    ran_on = len(log.read_text().split())
    assert ran_on > 101  # (the map's calls in flight ran on)
    with on(cluster, tmp_path, journal=tmp_path / "run") as sched:
        assert list(sched.map(calls, range(400))) == list(range(400))
    assert_each_ran_to_its_end_once(log, 400)


def test_the_dependents_of_a_job_killed_by_its_timeout_name_it_as_their_cause(cluster, tmp_path):
    """Attack review: a killed job whose task may run is settled once its task
    can say how it ended, and Dask cancels its dependents meanwhile: they read
    "cancelled in Dask" instead of naming the job that timed out."""
    import time

    with on(cluster, tmp_path) as sched:
        parent = sched.options(timeout=0.5).submit(time.sleep, 30)
        child = sched.submit(add, parent, 1)
        grandchild = sched.submit(add, child, 1)
        corral.wait([parent, child, grandchild], timeout=60)
    assert parent.status is JobStatus.TIMED_OUT
    for job in (child, grandchild):
        assert (job.status, job.reason) == (
            JobStatus.CANCELLED, f"upstream job {parent.id} 'sleep' timed out"), job.reason


def test_calls_a_driver_killed_just_after_leaving_a_map_had_run_do_not_run_again(cluster,
                                                                                  tmp_path):
    """Attack review: a killed job whose task may run is settled only half a
    second later (see the test above), and the journal records it CANCELLED at
    once; a driver killed in between left calls that had completed for the
    rerun to run again. The next session finds them in the run's outcome log."""
    import time

    run, log = tmp_path / "run", tmp_path / "log"
    driver_code = (
        f"import corral, functools, os, signal, sys; sys.path.insert(0, "
        f"{str(Path(__file__).parent)!r})\n"
        "from jobs import sleep_then_note\n"
        f"calls = functools.partial(sleep_then_note, {str(log)!r}, 0.02)\n"
        f"with corral.Scheduler(backend='dask', address={cluster.address!r}, "
        f"journal={str(run)!r}) as s:\n"
        "    if len(sys.argv) > 1:\n"
        "        print(len(list(s.map(calls, range(200)))))\n"
        "    else:\n"
        "        for result in s.map(calls, range(200)):\n"
        "            if result == 60:\n"
        "                break  # (which cancels the calls not read)\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", driver_code], timeout=120)
    seen = [log.stat().st_size, time.monotonic()]

    def written_out() -> bool:  # (the tasks of the dead driver end or are killed)
        size = log.stat().st_size
        if size != seen[0]:
            seen[:] = [size, time.monotonic()]
        return time.monotonic() - seen[1] > 1.0
    wait_until(written_out, timeout=30, message="the first run's calls to end")
    rerun = subprocess.run([sys.executable, "-c", driver_code, "again"], capture_output=True,
                           text=True, timeout=120)
    assert rerun.stdout == "200\n", rerun.stderr
    assert_each_ran_to_its_end_once(log, 200)
