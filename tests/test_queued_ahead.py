"""Workers are handed their next jobs before they finish the current one.

Such jobs are SUBMITTED, not RUNNING, until their worker starts them; they
come back unstarted on pause, cancel, a worker's death, or when the job
before them runs long; each keeps its own status, events, output and result.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import pytest

import corral
from corral import JobStatus

import jobs
from support.waiting import loop_barrier, wait_until

_S = JobStatus


@pytest.fixture
def patient_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers that keep queued jobs however long the job before them runs, so
    that a test can act on jobs while they wait in a worker's queue."""
    monkeypatch.setenv("CORRAL_WORKER_PATIENCE_S", "600")


def known_to_be_short(scheduler: corral.Scheduler, tmp_path: Path) -> None:
    """Run each kind of job these tests use once, quickly: jobs are queued
    ahead only behind and as jobs of kinds known to be short."""
    done = tmp_path / "done"
    done.touch()
    corral.wait([scheduler.submit(jobs.wait_for_file, str(done)),
                 scheduler.submit(jobs.write_pid_and_wait, str(tmp_path / "warm-pid"), str(done)),
                 scheduler.submit(jobs.touch, str(tmp_path / "warm")),
                 scheduler.submit(jobs.square, 1)], timeout=30)
    for _ in range(5):  # a process start may be slow the first time
        scheduler.shell(f"touch {tmp_path}/warm").result(timeout=30)


def test_tiny_calls_are_handed_ahead_yet_each_has_its_own_events_and_one_worker_never_overlaps():
    seen: dict[object, list[tuple[JobStatus | None, JobStatus | None]]] = defaultdict(list)
    handed_out = [0, 0]  # now, most at once
    lock = threading.Lock()

    def listen(event: corral.Event) -> None:
        if event.kind != "status":
            return
        with lock:
            seen[event.job.id].append((event.old, event.new))
            if event.new is _S.SUBMITTED:
                handed_out[0] += 1
                handed_out[1] = max(handed_out)
            elif event.old in (_S.SUBMITTED, _S.RUNNING) and event.new not in (_S.SUBMITTED,
                                                                                 _S.RUNNING):
                handed_out[0] -= 1

    with corral.Scheduler(cores=2) as scheduler:
        scheduler.on_event(listen)
        handles = [scheduler.submit(jobs.square, number) for number in range(400)]
        assert [job.result(timeout=60) for job in handles] == [n * n for n in range(400)]
        loop_barrier(scheduler)

    assert handed_out[1] > 2, "never more jobs handed out than cores: nothing was queued ahead"
    for job in handles:
        assert seen[job.id] == [(_S.NEW, _S.QUEUED), (_S.QUEUED, _S.SUBMITTED),
                                (_S.SUBMITTED, _S.RUNNING), (_S.RUNNING, _S.COMPLETED)], job
        assert job.started <= job.ended
    by_worker = defaultdict(list)
    for job in handles:
        by_worker[job.native_id].append(job)
    for worker_jobs in by_worker.values():
        worker_jobs.sort(key=lambda job: job.started)
        for earlier, later in pairwise(worker_jobs):
            assert later.started >= earlier.ended, (earlier, later)


def test_commands_queued_in_one_worker_each_get_their_own_environment(tmp_path: Path):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        handles = [scheduler.shell('echo "$CORRAL_JOB_ID $WHO"', env={"WHO": f"w{number % 3}"})
                   for number in range(30)]
        corral.wait(handles, timeout=60)
    assert [job.stdout for job in handles] == [f"{job.id} w{number % 3}\n"
                                               for number, job in enumerate(handles)]


def test_pause_takes_back_the_jobs_waiting_in_a_worker(tmp_path: Path, patient_workers, release):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        known_to_be_short(scheduler, tmp_path)
        blocker = corral.Job(jobs.wait_for_file, (str(release),))
        after = corral.Job(jobs.touch, (str(tmp_path / "ran"),))
        scheduler.dispatch([blocker, after])
        wait_until(lambda: blocker.running() and after.status is _S.SUBMITTED,
                   message="the second job to be queued in the worker")
        scheduler.pause()  # asks for it back; the worker answers between two jobs
        release.touch()
        blocker.result(timeout=30)
        wait_until(lambda: after.status is _S.QUEUED, message="the queued job to come back")
        assert after.record.reason == "given back unstarted by its worker"
        loop_barrier(scheduler)
        assert after.status is _S.QUEUED and not (tmp_path / "ran").exists()
        scheduler.resume()
        after.result(timeout=30)
    assert (tmp_path / "ran").exists() and after.attempts == 1


def test_a_job_cancelled_while_queued_in_a_worker_never_runs(tmp_path: Path, patient_workers,
                                                            release):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        known_to_be_short(scheduler, tmp_path)
        blocker = corral.Job(jobs.wait_for_file, (str(release),))
        command = corral.Job(corral.Shell(f"touch {tmp_path}/command-ran"))
        call = corral.Job(jobs.touch, (str(tmp_path / "call-ran"),))
        scheduler.dispatch([blocker, command, call])
        wait_until(lambda: command.status is _S.SUBMITTED, message="the command to be queued")
        assert command.cancel() and command.status is _S.CANCELLED
        release.touch()
        call.result(timeout=30)
    assert not (tmp_path / "command-ran").exists()
    assert (tmp_path / "call-ran").exists()


def test_jobs_queued_behind_a_worker_that_dies_run_elsewhere_unharmed(tmp_path: Path,
                                                                     patient_workers, release):
    pidfile = tmp_path / "pid"
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        known_to_be_short(scheduler, tmp_path)
        doomed = corral.Job(jobs.write_pid_and_wait, (str(pidfile), str(release)))
        behind = corral.Job(jobs.square, (7,))
        scheduler.dispatch([doomed, behind])
        wait_until(lambda: pidfile.exists() and behind.status is _S.SUBMITTED,
                   message="the second job to be queued behind the first")
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        assert behind.result(timeout=30) == 49
        with pytest.raises(corral.WorkerLost):
            doomed.result(timeout=30)
    assert behind.attempts == 1 and behind.status is _S.COMPLETED


def test_a_slow_call_gives_back_the_tiny_calls_queued_behind_it(tmp_path: Path):
    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        warm = [scheduler.submit(jobs.sleep_for, 0) for _ in range(100)]  # learn: they are tiny
        corral.wait(warm, timeout=60)
        batch = [corral.Job(jobs.sleep_for, (2.0 if number == 20 else 0,))
                 for number in range(200)]
        scheduler.dispatch(batch)
        corral.wait(batch, timeout=60)
    slow = batch[20]
    late = [job for job in batch if job is not slow and job.ended > slow.ended]
    assert not late, f"{len(late)} tiny calls waited behind the slow one"
    assert all(job.status is _S.COMPLETED and job.attempts == 1 for job in batch)
