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
