"""Packing jobs by cores, memory, GPUs, queues and tokens, with priorities and backfill."""

from __future__ import annotations

import os
import time
from itertools import pairwise

import pytest

import corral
from corral import Job, JobStatus
from corral.backends.base import Capacity
from corral.core.packing import MAX_BYPASS, Packer

import jobs
from support.waiting import loop_barrier, wait_until


def ran_one_after_another(*handles: Job) -> bool:
    ordered = sorted(handles, key=lambda job: job.record.started)
    return all(later.record.started >= earlier.record.ended
               for earlier, later in pairwise(ordered))


def test_by_default_all_cpus_but_one_are_used():
    with corral.Scheduler() as sched:
        assert sched._backend.capacity().cores == max(1, len(os.sched_getaffinity(0)) - 1)


def test_more_cores_than_the_machine_has_run_that_many_jobs_at_once(tmp_path):
    """``cores`` is what the packer hands out: jobs that mostly wait may ask the
    machine for more than its CPUs (as the README says)."""
    release = tmp_path / "release"
    many = len(os.sched_getaffinity(0)) + 3
    with corral.Scheduler(cores=many) as sched:
        waiting = [sched.submit(jobs.wait_for_file, str(release)) for _ in range(many)]
        wait_until(lambda: all(job.running() for job in waiting),
                   message=f"all {many} jobs to run at once")
        release.touch()
        for job in waiting:
            job.result(timeout=30)


def test_jobs_share_the_cores_they_fit_in(scheduler, release):
    both = [scheduler.submit(jobs.wait_for_file, str(release)) for _ in range(2)]
    third = scheduler.submit(jobs.noop)
    wait_until(lambda: all(job.running() for job in both))
    loop_barrier(scheduler)
    assert third.status is JobStatus.QUEUED  # two cores, two running jobs
    release.touch()
    third.result(timeout=30)
    for job in both:
        job.result(timeout=30)
    assert third.record.started >= min(job.record.ended for job in both)


def test_a_job_larger_than_the_machine_is_refused_with_a_clear_error(scheduler):
    with pytest.raises(corral.ResourceError,
                       match=r"job 'noop' asks for 4 cores but the local backend has 2; "
                             r"ask for less or raise Scheduler\(cores=...\)"):
        scheduler.options(cores=4).submit(jobs.noop)
    with pytest.raises(corral.ResourceError,
                       match=r"asks for 1048576 MB of memory but the local backend has"):
        scheduler.options(memory="1T").submit(jobs.noop)
    with pytest.raises(corral.ResourceError, match=r"asks for 1 GPU but the local backend has 0"):
        scheduler.shell("true", gpus=1)


def test_memory_is_packed_too(tmp_path, release):
    with corral.Scheduler(cores=2, memory="1G") as sched:
        big = sched.options(memory="800M").submit(jobs.wait_for_file, str(release))
        other = sched.options(memory="400M").submit(jobs.noop)
        wait_until(big.running)
        loop_barrier(sched)
        assert other.status is JobStatus.QUEUED
        release.touch()
    assert ran_one_after_another(big, other)


def test_a_small_job_backfills_while_a_big_one_waits_for_room(scheduler, release):
    long = scheduler.submit(jobs.wait_for_file, str(release))
    wait_until(long.running)
    big = scheduler.options(cores=2).submit(jobs.noop)
    small = scheduler.submit(jobs.square, 2)
    assert small.result(timeout=30) == 4
    assert long.running() and big.status is JobStatus.QUEUED
    release.touch()
    big.result(timeout=30)
    assert big.record.started >= long.record.ended


def test_a_big_job_is_not_starved_by_a_stream_of_small_ones(scheduler, release):
    long = scheduler.submit(jobs.wait_for_file, str(release))
    wait_until(long.running)
    big = scheduler.options(cores=2, name="big").submit(jobs.noop)
    small = [scheduler.submit(jobs.noop) for _ in range(MAX_BYPASS + 10)]
    wait_until(lambda: sum(job.done() for job in small) >= MAX_BYPASS)
    loop_barrier(scheduler)
    assert sum(job.done() for job in small) == MAX_BYPASS  # then the big job's room is held
    assert big.status is JobStatus.QUEUED
    release.touch()
    assert scheduler.wait(timeout=60)
    assert all(job.record.started >= big.record.ended for job in small[MAX_BYPASS:])


def test_jobs_whose_walltime_ends_before_the_big_job_could_start_backfill_freely():
    long, big, short, unknown = (Job(jobs.noop, cores=c, walltime=w)._record for c, w in
                                 ((1, "1h"), (2, None), (1, "10m"), (1, None)))
    packer = Packer(Capacity(cores=2, memory_mb=None, gpus=0), max_jobs=None, queues={}, tokens=0)
    for job in (long, big, short, unknown):
        job.move(JobStatus.QUEUED)  # the packer works on the engine's records
    packer.push(long)
    assert packer.select(now=0.0) == [long]
    packer.push(big)
    packer.push(short)
    assert packer.select(now=0.0) == [short]
    assert big.bypassed == 0  # ends at 10 min, long before the big job's 1 h: delays nobody
    packer.release(short)
    packer.push(unknown)
    assert packer.select(now=0.0) == [unknown]
    assert big.bypassed == 1  # no walltime: it might delay the big job, so it counts


def queued_records(*specs: dict) -> list:
    records = [Job(jobs.noop, **spec)._record for spec in specs]
    for job in records:
        job.move(JobStatus.QUEUED)  # the packer works on the engine's records
    return records


def test_a_head_waiting_for_a_token_holds_its_own_cores_once_passed_over_not_every_core():
    """Attack review: once a head had been passed over MAX_BYPASS times the
    whole pass stopped, so a job waiting for a licence token left three of
    four cores idle for as long as the token's holder ran."""
    holder, head, *others = queued_records({"tokens": 1}, {"tokens": 1},
                                           *({} for _ in range(MAX_BYPASS + 5)))
    packer = Packer(Capacity(cores=4, memory_mb=None, gpus=0), max_jobs=None, queues={}, tokens=1)
    packer.push(holder)
    assert packer.select(now=0.0) == [holder]
    packer.push(head)
    for job in others:
        packer.push(job)
    while head.bypassed < MAX_BYPASS:  # three free cores: they pass, three at a time
        started = packer.select(now=0.0)
        assert started and head not in started
        for passed in started:
            packer.release(passed)
    assert len(packer.select(now=0.0)) == 2  # of three free cores, the head holds one
    packer.release(holder)
    assert packer.select(now=0.0)[0] is head  # (and one more in the core left)


def test_a_head_waiting_for_memory_holds_its_share_of_memory_and_one_core():
    big, head, small, light = queued_records({"memory": "3G"}, {"memory": "2G"},
                                             {"memory": "1G"}, {})
    head.bypassed = MAX_BYPASS
    packer = Packer(Capacity(cores=4, memory_mb=4096, gpus=0), max_jobs=None, queues={}, tokens=0)
    packer.push(big)
    assert packer.select(now=0.0) == [big]
    for job in (head, small, light):
        packer.push(job)
    assert packer.select(now=0.0) == [light]  # the free 1G is the head's: small waits


def test_jobs_that_end_before_the_head_could_start_still_pass_once_it_was_passed_over():
    """Attack review: after MAX_BYPASS passes the pass stopped at the head,
    and short-walltime jobs the README lets through waited behind it."""
    long, big, *short = queued_records({"walltime": "1h"}, {"cores": 2},
                                       *({"walltime": "10m"} for _ in range(3)))
    big.bypassed = MAX_BYPASS
    packer = Packer(Capacity(cores=2, memory_mb=None, gpus=0), max_jobs=None, queues={}, tokens=0)
    packer.push(long)
    assert packer.select(now=0.0) == [long]
    for job in (big, *short):
        packer.push(job)
    assert packer.select(now=0.0) == short[:1]
    packer.release(short[0])
    assert packer.select(now=0.0) == short[1:2]


def test_a_line_behind_a_running_job_is_refilled_in_bulk_once_it_is_down_to_half():
    """Jobs handed ahead go in batches: one pass and one message to a worker
    carry many of them, not one job after every job that ends."""
    records = [Job(jobs.noop)._record for _ in range(30)]
    packer = Packer(Capacity(cores=1, memory_mb=None, gpus=0), max_jobs=None, queues={}, tokens=0)
    for job in records:
        job.move(JobStatus.QUEUED)
        packer.push(job)
    first = packer.select(now=0.0)
    assert first == records[:1]
    first[0].taken_at = time.monotonic()

    def ahead() -> list:
        return [job for job, _ in packer.select_ahead(lambda job: 8, lambda holder: True)]

    assert ahead() == records[1:9]  # a full line of 8 behind the running job
    for number, ended in enumerate(records[:4]):  # 4 end: 4 queued, half the line
        packer.release(ended)
        assert ahead() == ([] if number < 3 else records[9:13]), number
    packer.release(records[4])
    assert ahead() == []  # 7 queued: more than half


def test_higher_priority_runs_first(tmp_path, release):
    with corral.Scheduler(cores=1) as sched:
        blocker = sched.submit(jobs.wait_for_file, str(release))
        wait_until(blocker.running)
        low = sched.options(priority=0).submit(jobs.noop)
        high = sched.options(priority=5).submit(jobs.noop)
        release.touch()
    assert high.record.started <= low.record.started
    assert ran_one_after_another(blocker, high, low)


def test_a_job_whose_dependency_completes_goes_ahead_of_the_jobs_submitted_after_it(
        tmp_path, release):
    """Cold review: a pipeline's next step, waiting for the step before, joined
    the line behind the 300 calls of a map submitted after it, where Dask (and
    a cluster's age priority) starts it first. It keeps its place from when
    it was submitted."""
    log = tmp_path / "log"
    with corral.Scheduler(cores=1) as sched:
        first = sched.submit(jobs.wait_for_file, str(release))
        step = sched.options(after=[first]).submit(jobs.append_line, str(log), "step")
        later = [sched.submit(jobs.append_line, str(log), f"later-{number}")
                 for number in range(20)]
        wait_until(first.running)
        release.touch()
    assert log.read_text().split() == ["step"] + [f"later-{number}" for number in range(20)]
    assert ran_one_after_another(first, step, *later)


def test_a_named_queue_limits_how_many_of_its_jobs_run_at_once(tmp_path, release):
    with corral.Scheduler(cores=2, queues={"io": 1}) as sched:
        io_jobs = [sched.options(queue="io").submit(jobs.sleep_for, 0.05) for _ in range(3)]
        free = sched.submit(jobs.wait_for_file, str(release))
        wait_until(free.running)  # a job outside the queue still runs beside it
        release.touch()
    assert ran_one_after_another(*io_jobs)


def test_an_unknown_queue_is_refused_with_a_suggestion(tmp_path):
    with (corral.Scheduler(cores=1, queues={"io": 2, "gpu": 1}) as sched,
          pytest.raises(ValueError,
                        match=r"job 'noop' asks for unknown queue 'oi'; did you mean 'io'\?")):
        sched.options(queue="oi").submit(jobs.noop)
    with (corral.Scheduler(cores=1) as sched,
          pytest.raises(ValueError, match=r"this scheduler has no queues")):
        sched.options(queue="io").submit(jobs.noop)


def test_tokens_are_held_while_a_job_runs(tmp_path):
    with corral.Scheduler(cores=2, tokens=3) as sched:
        heavy = [sched.options(tokens=2).submit(jobs.sleep_for, 0.05) for _ in range(3)]
    assert ran_one_after_another(*heavy)


def test_asking_for_more_tokens_than_the_pool_has_is_refused(scheduler):
    with pytest.raises(corral.ResourceError,
                       match=r"job 'noop' asks for 1 tokens but the scheduler's "
                             r"pool has 0 \(Scheduler\(tokens=N\)\)"):
        scheduler.options(tokens=1).submit(jobs.noop)


def test_max_jobs_caps_running_jobs_whatever_their_size(tmp_path):
    with corral.Scheduler(cores=2, max_jobs=1) as sched:
        handles = [sched.submit(jobs.sleep_for, 0.05) for _ in range(3)]
    assert ran_one_after_another(*handles)


def test_gpu_jobs_see_only_the_gpus_they_hold(tmp_path, release):
    with corral.Scheduler(cores=2, gpus=2) as sched:
        holders = [sched.options(gpus=1).submit(jobs.wait_for_file, str(release), "held")
                   for _ in range(2)]
        wait_until(lambda: all(job.running() for job in holders))
        seen = [sched.options(gpus=1).submit(jobs.report_environment, "CUDA_VISIBLE_DEVICES")
                for _ in range(2)]
        none = sched.submit(jobs.report_environment, "CUDA_VISIBLE_DEVICES")
        command = sched.shell("echo $CUDA_VISIBLE_DEVICES", gpus=2)
        release.touch()
        assert sorted(job.result(timeout=30)["CUDA_VISIBLE_DEVICES"] for job in seen) in (
            ["0", "0"], ["0", "1"], ["1", "1"])
        assert none.result(timeout=30)["CUDA_VISIBLE_DEVICES"] == ""
        command.result(timeout=30)
        assert command.stdout == "0,1\n"
        with pytest.raises(corral.ResourceError,
                           match="asks for 3 GPUs but the local backend has 2"):
            sched.options(gpus=3).submit(jobs.noop)


@pytest.mark.parametrize("visible, expected", [
    ("2,3", ["2\n", "3\n"]),
    ("GPU-8f2a,GPU-1111", ["GPU-1111\n", "GPU-8f2a\n"]),
    ("5,7,-1,2", ["5\n", "7\n"]),
    ("4,4,6", ["4\n", "6\n"]),
])
def test_gpu_jobs_get_the_drivers_own_gpus_by_their_names(tmp_path, monkeypatch, visible,
                                                            expected):
    """Attack review: with CUDA_VISIBLE_DEVICES=2,3 the jobs got GPUs 0 and 1
    (another user's, perhaps): the list was counted, and its ids numbered anew."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    gate = tmp_path / "gate"
    with corral.Scheduler(cores=2) as sched:
        command = ("echo $CUDA_VISIBLE_DEVICES; "
                   f"while [ ! -e {gate} ]; do sleep 0.01; done")
        pair = [sched.shell(command, gpus=1) for _ in range(2)]
        wait_until(lambda: all(job.running() for job in pair))
        gate.touch()
        with pytest.raises(corral.ResourceError, match="asks for 3 GPUs but the local backend "
                                                       "has 2"):
            sched.options(gpus=3).submit(jobs.noop)
    assert sorted(job.stdout for job in pair) == expected


def test_more_gpus_than_cuda_visible_devices_gives_is_refused(monkeypatch):
    """Attack review: gpus=4 with CUDA_VISIBLE_DEVICES=2,3 gave four jobs 2, 3, 2, 3."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with pytest.raises(ValueError, match=r"^gpus=4, but CUDA_VISIBLE_DEVICES gives this process "
                                         r"2 GPU\(s\) \(2,3\): a job would share one"):
        corral.Scheduler(gpus=4)


def test_two_gpu_jobs_running_together_hold_different_gpus(tmp_path, tmp_path_factory):
    gate = tmp_path / "gate"
    with corral.Scheduler(cores=2, gpus=2) as sched:
        command = ("echo $CUDA_VISIBLE_DEVICES; "
                   f"while [ ! -e {gate} ]; do sleep 0.01; done")
        pair = [sched.shell(command, gpus=1) for _ in range(2)]
        wait_until(lambda: all(job.running() for job in pair))
        gate.touch()
    assert sorted(job.stdout for job in pair) == ["0\n", "1\n"]


def test_a_job_never_placed_that_keeps_its_place_gets_one_and_ties_with_none():
    """Re-attack review: a job taken up from a cluster after its driver died was
    never pushed, so its place was the default 0, which the first job pushed
    had too; retried "in its place", the two tied in the heap, and heapq
    compared the records themselves (TypeError on the control loop)."""
    first, taken_up = queued_records({}, {})
    packer = Packer(Capacity(cores=1, memory_mb=None, gpus=0), max_jobs=None, queues={},
                    tokens=0)
    packer.push(first)
    packer.push(taken_up, keep_place=True)
    assert 0 < first.place < taken_up.place
    assert packer.select(now=0.0) == [first]
