"""Workers are handed their next jobs before they finish the current one.

Such jobs are SUBMITTED, not RUNNING, until their worker starts them; they
come back unstarted on pause, cancel, a worker's death, or when the job
before them runs long; each keeps its own status, events, output and result.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import CancelledError
import threading
import time
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
    """Workers that keep queued jobs however long the job before them runs, and
    a driver that counts jobs of up to 10 s as short and queues up to a second
    of them behind one (a loaded machine makes a process start slow, and a
    tiny call take a millisecond), so that a test can act on jobs while they
    wait in a worker's queue."""
    monkeypatch.setenv("CORRAL_WORKER_PATIENCE_S", "600")
    monkeypatch.setattr("corral.core.ahead.LONG_S", 10.0)
    monkeypatch.setattr("corral.core.ahead.QUEUED_WORK_S", 1.0)


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
        handles = [scheduler.submit(jobs.square, number) for number in range(250)]
        assert [job.result(timeout=60) for job in handles] == [n * n for n in range(250)]
        loop_barrier(scheduler)

    assert handed_out[1] > 2, "never more jobs handed out than cores: nothing was queued ahead"
    handed_out_and_back = [(_S.QUEUED, _S.SUBMITTED), (_S.SUBMITTED, _S.QUEUED)]
    for job in handles:
        changes = seen[job.id]
        # A job queued behind one that ran long (a loaded machine) may be given back
        # unstarted and handed out again, each time as a pair of events.
        while changes[1:3] == handed_out_and_back:
            del changes[1:3]
        assert changes == [(_S.NEW, _S.QUEUED), (_S.QUEUED, _S.SUBMITTED),
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


def queued_behind_a_blocker(scheduler: corral.Scheduler, tmp_path: Path,
                            release: Path) -> tuple[corral.Job, corral.Job]:
    """A job that runs until *release* exists, and one queued behind it in its
    worker (SUBMITTED), which touches ``tmp_path/ran`` when it runs."""
    known_to_be_short(scheduler, tmp_path)
    blocker = corral.Job(jobs.wait_for_file, (str(release),))
    after = corral.Job(jobs.touch, (str(tmp_path / "ran"),))
    scheduler.dispatch([blocker, after])
    wait_until(lambda: blocker.running() and after.status is _S.SUBMITTED,
               message="the second job to be queued in the worker")
    return blocker, after


def test_pause_takes_back_the_jobs_waiting_in_a_worker(tmp_path: Path, patient_workers, release):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        blocker, after = queued_behind_a_blocker(scheduler, tmp_path, release)
        history: list[tuple] = []
        scheduler.on_event(lambda event: history.append((event.job.id, event.new, event.reason)))
        scheduler.pause()  # returns once it is back: it cannot start after the blocker
        assert after.status is _S.QUEUED
        release.touch()
        blocker.result(timeout=30)
        wait_until(lambda: after.status is _S.QUEUED,
                   message=f"the queued job to come back (events: {history})")
        assert after.record.reason == "given back unstarted by its worker"
        loop_barrier(scheduler)
        assert after.status is _S.QUEUED and not (tmp_path / "ran").exists()
        scheduler.resume()
        after.result(timeout=30)
    assert (tmp_path / "ran").exists() and after.attempts == 1


def test_abort_counts_and_stops_the_running_job_not_those_queued_behind_it(
        tmp_path: Path, patient_workers, release):
    """`corral abort` said "aborting 6 job(s)" when two ran and four waited in
    the workers' queues (cold review): those are not running, and go on."""
    with corral.Scheduler(cores=1, workdir=tmp_path / "run", abort_grace=0.2) as scheduler:
        blocker, after = queued_behind_a_blocker(scheduler, tmp_path, release)
        assert scheduler.abort() == 1
        with pytest.raises(CancelledError, match="aborted"):
            blocker.result(timeout=30)
        after.result(timeout=30)
    assert (tmp_path / "ran").exists()


def test_a_job_cancelled_while_queued_in_a_worker_never_runs(tmp_path: Path, patient_workers,
                                                            release):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        known_to_be_short(scheduler, tmp_path)
        blocker = corral.Job(jobs.wait_for_file, (str(release),))
        command = corral.Job(corral.Shell(f"touch {tmp_path}/command-ran"))
        call = corral.Job(jobs.touch, (str(tmp_path / "call-ran"),))
        scheduler.dispatch([blocker, command, call])
        history: list[tuple] = []
        scheduler.on_event(lambda event: history.append((event.job.id, event.new, event.reason)))
        wait_until(lambda: command.status is _S.SUBMITTED, message="the command to be queued")
        assert command.record.reason == f"queued in a worker after job {blocker.id}"
        assert command.cancel() and command.status is _S.CANCELLED
        release.touch()
        call.result(timeout=30)
    assert not (tmp_path / "command-ran").exists(), history
    assert (tmp_path / "call-ran").exists()


def test_abort_refuses_a_job_waiting_in_a_workers_queue_which_then_runs(tmp_path: Path,
                                                                         patient_workers, release):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run", abort_grace=0.2) as scheduler:
        known_to_be_short(scheduler, tmp_path)
        blocker = corral.Job(jobs.wait_for_file, (str(release),))
        waiting = corral.Job(jobs.touch, (str(tmp_path / "ran"),))
        scheduler.dispatch([blocker, waiting])
        wait_until(lambda: waiting.status is _S.SUBMITTED, message="the call to be queued")
        with pytest.raises(ValueError) as refused:
            scheduler.abort(waiting)
        assert str(refused.value) == (
            f"job {waiting.id} 'touch' is SUBMITTED (waiting in its backend's queue: it runs "
            "in its turn), not running; abort() stops running jobs, use cancel() or remove() "
            "for others")
        assert scheduler.abort() == 1  # the blocker, not the job behind it
        waiting.result(timeout=30)
    assert (tmp_path / "ran").exists()


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
        batch = [corral.Job(jobs.sleep_for, (1.0 if number == 20 else 0,))
                 for number in range(200)]
        scheduler.dispatch(batch)
        corral.wait(batch, timeout=60)
    slow = batch[20]
    late = [job for job in batch if job is not slow and job.ended > slow.ended]
    assert not late, f"{len(late)} tiny calls waited behind the slow one"
    assert all(job.status is _S.COMPLETED and job.attempts == 1 for job in batch)


# -- map: batches of calls, results in order -----------------------------------------------------


def test_map_dispatches_in_windows_reads_its_input_lazily_and_keeps_the_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 7)
    read = []

    def numbers():
        for number in range(30):
            read.append(number)
            yield number

    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        results = scheduler.map(jobs.square, numbers())
        assert len(read) <= 22  # the first window, at most the next two, and one item ahead
        assert next(results) == 0
        assert list(results) == [number * number for number in range(1, 30)]
        assert list(scheduler.map(jobs.add, [1, 2, 3], [10, 20])) == [11, 22]
        assert list(scheduler.map(jobs.square, [])) == []


@pytest.mark.parametrize("chunksize", [1, 3, "auto"])
def test_an_item_that_cannot_be_pickled_raises_at_its_place_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunksize):
    """BUG (attack review): the map raised at the start of the item's batch
    of 1,000 (the results before it in that batch never came), and did not
    say which item it was; Executor.map raises at the item itself."""
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 10)
    items: list = list(range(40))
    items[25] = threading.Lock()
    got = []
    with (corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler,
          pytest.raises(ValueError) as raised):
        results = scheduler.map(jobs.identity, items, chunksize=chunksize)
        for value in results:
            got.append(value)
    # The jobs read are let go, as a map without an error lets them go (attack review:
    # the error's frames held the batch while the iterator lived).
    assert scheduler.jobs() == []
    if chunksize == 1:  # every result before the item, then its error
        assert got == list(range(25))
        assert str(raised.value).startswith("map(), input item 25 (counting from 0): job "
                                            "'identity' cannot be sent to a worker")
    else:  # the chunk that holds it is one job: the results before that chunk
        assert got == list(range(len(got))) and len(got) >= (24 if chunksize == 3 else 10)
        said = re.match(r"map\(\), input item 25 \(counting from 0; in the chunk of items "
                        r"(\d+) to (\d+)\): job 'identity' cannot be sent to a worker: the "
                        r"arguments of one of its calls cannot be pickled", str(raised.value))
        assert said and int(said[1]) == len(got) <= 25 <= int(said[2]), raised.value
    assert "cannot pickle '_thread.lock' object" in str(raised.value)


def test_a_bad_first_item_of_a_map_raises_from_map_itself(tmp_path: Path):
    """Naming the item (cold review: none was named), as a bad function is not."""
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        with pytest.raises(ValueError, match=r"^map\(\), input item 0 \(counting from 0\): "
                                             r"job 'identity' cannot be sent to a worker: its "
                                             r"argument args\[0\] cannot be pickled"):
            scheduler.map(jobs.identity, [threading.Lock(), 1])
        lock = threading.Lock()
        with pytest.raises(ValueError, match=r"^job '<lambda>' cannot be sent to a worker: its "
                                             r"function <lambda>, through the variable 'lock'"):
            scheduler.map(lambda item: lock, [1, 2])
        assert scheduler.jobs() == []


def test_every_call_of_a_map_runs_even_if_no_result_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """BUG (cold review): only the first batches ran when nobody read the results."""
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 5)
    marks = tmp_path / "marks"
    marks.mkdir()
    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        scheduler.map(jobs.touch, [str(marks / str(number)) for number in range(40)])
    assert len(list(marks.iterdir())) == 40


def test_leaving_a_map_early_cancels_the_calls_not_read(tmp_path: Path, release):
    ended: list[JobStatus] = []
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        scheduler.on_event(lambda event: ended.append(event.new)
                           if event.new is not None and event.new.is_terminal else None)
        never = [str(tmp_path / f"never-{number}") for number in range(4)]
        results = scheduler.map(jobs.wait_for_file, [str(release), *never])
        release.touch()
        assert next(results) is None
        results.close()
        assert scheduler.wait(timeout=30)
    assert sorted(status.name for status in ended) == ["CANCELLED"] * 4 + ["COMPLETED"]


def test_the_calls_a_map_leaves_unread_say_why_it_was_left(tmp_path: Path, release):
    """A map that raises at a cancelled call cancels the calls after it, and
    says that the loop ended with that error, not only that nobody read them."""
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        never = [str(tmp_path / f"never-{number}") for number in range(3)]
        results = scheduler.map(jobs.wait_for_file, [str(release), *never])
        wait_until(lambda: scheduler.jobs()[0].status is JobStatus.RUNNING, timeout=30,
                   message="the map's first call to run")
        scheduler.jobs()[0].cancel()
        with pytest.raises(CancelledError, match="cancelled by user"):
            next(results)
        assert scheduler.wait(timeout=30)
        reasons = [job.reason for job in scheduler.jobs()]
    assert reasons[1:] == ["the map's results were no longer read: the loop reading them "
                           "ended with CancelledError"] * 3


def test_a_map_result_late_past_its_timeout_raises_timeout_error(tmp_path: Path, release):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        results = scheduler.map(jobs.wait_for_file, [str(release)], timeout=0.2)
        with pytest.raises(TimeoutError, match=r"^map\(\): a result was not there within the "
                                               r"map's timeout$"):
            next(results)
        release.touch()


@pytest.mark.parametrize("chunksize", [1, 100, "auto"])
def test_a_map_of_an_endless_input_never_read_stops_dispatching_at_its_timeout(
        tmp_path: Path, chunksize):
    """Attack review: given a timeout and never read, a map of an endless
    generator dispatched for ever, and the with block never ended. Past its
    timeout it dispatches nothing more; read then, it gives what ran and then
    TimeoutError where the calls never dispatched would have come."""
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        results = scheduler.map(abs, itertools.count(), timeout=0.5, chunksize=chunksize)
        assert scheduler.wait(timeout=60), "the map dispatched past its timeout"
        made = scheduler.qsize()
        read = 0
        with pytest.raises(TimeoutError, match=r"^map\(\): a result was not there within the "
                                               r"map's timeout$"):
            for read, value in enumerate(results, 1):
                assert value == read - 1
        assert read > 0 and scheduler.qsize() <= made


def test_a_batch_whose_input_was_read_past_the_maps_timeout_is_not_dispatched(tmp_path: Path):
    """Re-attack review: the deadline was looked at before a batch was read,
    so a slow input's batch, read past it, was dispatched and ran unread."""
    from corral.core.scheduler import MAP_WINDOW

    def slow_after_two_batches():
        for number in range(3 * MAP_WINDOW):
            if number == 2 * MAP_WINDOW - 10:  # (read by the feeder: the first batch is in)
                time.sleep(1.0)  # the input itself is slow: what the map must stand
            yield number

    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        results = scheduler.map(abs, slow_after_two_batches(), timeout=0.5)
        assert scheduler.wait(timeout=60)
        assert scheduler.qsize() == MAP_WINDOW  # the first batch alone
        read = []
        with pytest.raises(TimeoutError):
            read.extend(results)
        assert read == list(range(MAP_WINDOW))


def test_a_timeout_error_a_call_raised_is_the_calls_own_not_the_maps(tmp_path: Path):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        results = scheduler.map(jobs.run_code, ["raise TimeoutError('the call gave up')"],
                                timeout=30)
        with pytest.raises(TimeoutError, match=r"^the call gave up$"):
            next(results)


def test_map_takes_a_function_by_name_and_refuses_what_is_not_a_function(tmp_path: Path):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        assert list(scheduler.map("operator:neg", [1, 2])) == [-1, -2]
        # BUG (new-user review): a function by name, of a module imported here, was
        # checked as if called with no argument: every such map was refused.
        assert list(scheduler.map("jobs:square", [1, 2])) == [1, 4]
        assert list(scheduler.map("jobs:square", [3, 4], chunksize=2)) == [9, 16]
        assert list(scheduler.map("json:dumps", [[1], {"k": 2}])) == ["[1]", '{"k": 2}']
        with pytest.raises(TypeError, match=r"^map\(\) calls with 2 arguments, one from each "
                                            r"iterable: square\(\) cannot be called with these "
                                            r"arguments: too many positional arguments"):
            scheduler.map("jobs:square", [1], [2])
        with pytest.raises(ValueError, match=r"^map\(\) takes a callable or "
                                             r"'package.module:function', not Shell"):
            scheduler.map(corral.Shell("true"), [1])
        with pytest.raises(ValueError, match=r"is not runnable"):
            scheduler.map(42, [1])
        with pytest.raises(ValueError, match=r"^function reference 'operator:nag': module "
                                             r"'operator' has no attribute 'nag'; did you mean"):
            scheduler.map("operator:nag", range(1000))  # one error, not a thousand failed jobs


# -- found by the attack review ---------------------------------------------------------------


def test_cancelling_queued_jobs_while_hundreds_flow_never_runs_a_job_twice(tmp_path: Path):
    """BUG: a kill that came too late killed the worker with the replies of
    jobs it had finished unread: they ran again."""
    marks = tmp_path / "marks"
    marks.mkdir()
    stop = threading.Event()
    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        handles = [scheduler.submit(jobs.append_line, str(marks / str(number)), "x")
                   for number in range(600)]

        def cancel_queued() -> None:
            while not stop.wait(0.001):  # (paced: a spinning thread would starve the workers)
                for job in handles[::7]:
                    if job.status is _S.SUBMITTED:
                        job.cancel()

        canceller = threading.Thread(target=cancel_queued)
        canceller.start()
        try:
            corral.wait(handles, timeout=120)
        finally:
            stop.set()
            canceller.join()
    twice = [path.name for path in marks.iterdir() if len(path.read_text().splitlines()) > 1]
    assert twice == []
    for job in handles:
        if job.status is _S.COMPLETED:
            assert (marks / str(handles.index(job))).exists()


def test_jobs_queued_behind_a_job_after_it_started_are_given_back_when_it_runs_long(
        tmp_path: Path):
    """BUG: the lookout watched only jobs queued when the slow one started."""
    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        corral.wait([scheduler.submit(jobs.sleep_for, 0) for _ in range(50)], timeout=60)
        # (3 s: the other worker runs the 199 after it meanwhile, also on a loaded machine)
        seconds = [3.0 if number == 100 else 0 for number in range(300)]
        handles = [scheduler.submit(jobs.sleep_for, value) for value in seconds]
        corral.wait(handles, timeout=60)
    slow = handles[100]
    late = [job for job in handles if job is not slow and job.ended > slow.ended]
    assert not late, f"{len(late)} tiny calls waited behind a slow one"


def test_calls_holding_no_gpu_never_see_one_even_queued_on_a_gpu_worker(tmp_path: Path):
    """BUG: a call queued behind a command on a worker started for a GPU saw that GPU."""
    with corral.Scheduler(cores=2, gpus=1, workdir=tmp_path / "run") as scheduler:
        scheduler.options(gpus=1).submit(jobs.report_environment,
                                         "CUDA_VISIBLE_DEVICES").result(timeout=30)
        seen = []
        for _ in range(20):
            batch = [scheduler.shell("true") for _ in range(10)]
            batch += [scheduler.submit(jobs.report_environment, "CUDA_VISIBLE_DEVICES")
                      for _ in range(10)]
            corral.wait(batch, timeout=60)
            seen += [job.result()["CUDA_VISIBLE_DEVICES"] for job in batch[10:]]
    assert set(seen) == {""}


def test_a_job_aborted_the_moment_it_was_handed_to_an_idle_worker_is_aborted(tmp_path: Path):
    """BUG: a job sent to an idle worker was taken for one queued ahead until
    the worker's first update, and abort() refused it. BUG (attack review):
    asked as it became SUBMITTED, before it had a worker, the abort went
    nowhere: the job never saw it, and was killed after the grace period."""
    marker, started = tmp_path / "marker", tmp_path / "started"
    refused: list[Exception] = []
    with corral.Scheduler(cores=1, workdir=tmp_path / "run", abort_grace=1) as scheduler:
        def abort_at_once(event: corral.Event) -> None:
            if event.new is _S.SUBMITTED:
                try:
                    scheduler.abort(event.job)
                except ValueError as error:
                    refused.append(error)

        scheduler.on_event(abort_at_once)
        job = scheduler.submit(jobs.stop_when_asked, str(marker), str(started))
        assert scheduler.wait(timeout=30)
    assert refused == []
    assert job.status is _S.CANCELLED and job.record.reason == "aborted"
    assert marker.read_text() == "stopped cleanly"  # it saw its abort: not killed


@pytest.mark.parametrize("stop", ["interrupt", "shutdown", "clear"])
def test_a_map_cut_short_by_the_scheduler_says_so_and_dispatches_nothing_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: str):
    """BUG (second attack review): after interrupt() a map went on dispatching;
    after shutdown(wait=False) its iterator just ended, as if complete."""
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 5)
    marks = tmp_path / "marks"
    marks.mkdir()
    scheduler = corral.Scheduler(cores=2, workdir=tmp_path / "run")
    results = scheduler.map(jobs.touch, [str(marks / str(number)) for number in range(200)])
    next(results)
    if stop == "interrupt":
        scheduler.interrupt()
    elif stop == "clear":
        scheduler.clear()
    else:
        scheduler.shutdown(wait=False)
    stopped_at = len(list(marks.iterdir()))  # (on a loaded machine, a few windows in)
    with pytest.raises(CancelledError):
        for _ in results:
            pass
    scheduler.shutdown()
    ran = len(list(marks.iterdir()))
    # At most the two windows dispatched then could still end; none dispatched after.
    assert ran <= stopped_at + 2 * 5, f"{ran - stopped_at} calls ran after the map was stopped"
    assert ran < 200


def test_an_exception_in_the_with_block_stops_an_unread_map(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """BUG (second cold review): leaving the block by an exception cancelled the
    calls already dispatched, then ran all the others."""
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 5)
    marks = tmp_path / "marks"
    marks.mkdir()
    with pytest.raises(RuntimeError, match="stop here"), \
            corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        results = scheduler.map(jobs.touch, [str(marks / str(number)) for number in range(200)])
        raise RuntimeError("stop here")
    assert len(list(marks.iterdir())) <= 20
    with pytest.raises(CancelledError):
        list(results)


def test_the_replies_a_worker_sent_meanwhile_are_all_read_in_one_turn_of_the_loop(
        tmp_path: Path, patient_workers, release):
    """A worker running a line of tiny jobs sends a reply per job; the control
    loop reads every reply waiting in its pipe at once, not one per turn (a
    turn per job was most of the driver's time on tiny calls)."""
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        known_to_be_short(scheduler, tmp_path)
        blocker = scheduler.submit(jobs.wait_for_file, str(release))
        files = [tmp_path / f"done-{number}" for number in range(8)]
        line = [scheduler.submit(jobs.touch, str(path)) for path in files]
        wait_until(lambda: blocker.running() and all(job.status is _S.SUBMITTED for job in line),
                   message="the 8 jobs to be queued in the worker behind the blocker")
        completed_per_turn: list[int] = []
        read = scheduler._engine.backend.updates

        def counting(timeout: float | None) -> list:
            found = read(timeout)
            completed_per_turn.append(sum(update.state is _S.COMPLETED for update in found))
            return found

        gate, at_gate = threading.Event(), threading.Event()

        def hold() -> None:
            at_gate.set()
            gate.wait()

        scheduler._engine.backend.updates = counting  # type: ignore[method-assign]
        scheduler._engine.post(hold)  # the loop reads nothing until the line has run
        assert at_gate.wait(timeout=30), "the loop never reached the gate"
        release.touch()  # (released before the loop held: it read some replies first)
        wait_until(lambda: all(path.exists() for path in files),
                   message="the worker to run the whole line")
        gate.set()
        assert [job.result(timeout=60) for job in line] == [None] * len(line)
    assert max(completed_per_turn) >= 6, completed_per_turn


@pytest.mark.parametrize("how", ["clear", "cancel", "interrupt"])
def test_jobs_a_worker_already_ran_are_not_cancelled_with_their_replies_still_unread(
        tmp_path: Path, patient_workers, release, how):
    """A job handed ahead that its worker has run, its reply still in the pipe,
    completed: cancelling it then must not record it CANCELLED (a journaled
    rerun would run it a second time)."""
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        known_to_be_short(scheduler, tmp_path)
        blocker = scheduler.submit(jobs.wait_for_file, str(release))
        files = [tmp_path / f"done-{number}" for number in range(6)]
        line = [scheduler.submit(jobs.touch, str(path)) for path in files]
        sentinel = scheduler.submit(jobs.touch, str(tmp_path / "last"))  # runs after each reply
        wait_until(lambda: blocker.running() and all(job.status is _S.SUBMITTED
                                                     for job in [*line, sentinel]),
                   message="the jobs to be queued in the worker behind the blocker")
        gate = threading.Event()
        scheduler._engine.post(gate.wait)  # the loop reads no reply until the cancel is asked
        asking = threading.Thread(target={"clear": scheduler.clear,
                                          "cancel": line[-1].cancel,
                                          "interrupt": scheduler.interrupt}[how])
        asking.start()
        wait_until(lambda: len(scheduler._engine._inbox) >= 1,
                   message="the cancel to wait behind the gate")
        release.touch()
        wait_until((tmp_path / "last").exists,  # so the line's replies were all sent
                   message="the worker to run the whole line")
        gate.set()
        asking.join(timeout=30)
        corral.wait([*line, sentinel], timeout=30)
    assert [(job.status, job.reason) for job in line] == [(_S.COMPLETED, None)] * len(line)


def test_a_map_whose_input_ends_with_a_full_batch_is_complete_after_a_shutdown_without_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """BUG (attack review): a map whose last batch was full was taken for one cut
    short by shutdown(wait=False), and raised CancelledError after its last result."""
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 5)
    scheduler = corral.Scheduler(cores=1, workdir=tmp_path / "run")
    try:
        results = scheduler.map(jobs.sleep_for, [0.05] * 10)
        wait_until(lambda: len(scheduler.jobs()) == 10, message="both batches to be dispatched")
        scheduler.shutdown(wait=False)
        assert list(results) == [0.05] * 10
    finally:
        scheduler.shutdown()


def test_a_shutdown_without_wait_just_as_a_batch_is_dispatched_lets_that_batch_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """BUG (seen under load): a shutdown(wait=False) that came between a batch's
    dispatch and the feeder's next look took the batch for one nobody wanted,
    and cancelled it: the map raised CancelledError ("the map's results were no
    longer read") although every call had been dispatched. The moment is made
    here by shutting down from within the last batch's dispatch."""
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 5)
    scheduler = corral.Scheduler(cores=1, workdir=tmp_path / "run")
    dispatch, batches = scheduler._dispatch, []

    def dispatch_then_shut_down(batch: list, **options: object) -> None:
        dispatch(batch, **options)
        batches.append(batch)
        if len(batches) == 3:  # (by then the map is known to the scheduler)
            scheduler.shutdown(wait=False)

    monkeypatch.setattr(scheduler, "_dispatch", dispatch_then_shut_down)
    try:
        assert list(scheduler.map(jobs.square, range(15))) == [n * n for n in range(15)]
    finally:
        scheduler.shutdown()


def test_an_input_that_fails_right_after_a_full_batch_fails_after_that_batchs_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 5)

    def numbers():
        yield from range(5)
        raise KeyError("the input broke")

    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        results = scheduler.map(jobs.square, numbers())
        assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
        with pytest.raises(KeyError, match="the input broke"):
            next(results)


@pytest.mark.parametrize("items", [0, 3, 4, 6, 7])
def test_an_input_that_fails_anywhere_gives_every_result_read_before_it_then_its_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, items: int):
    """BUG: the calls read for a batch before the input raised were dropped,
    not run: with batches of 5, an input of 3 items and an error raised at
    map() and ran nothing; one of 7 gave 5 results."""
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 5)

    def numbers():
        yield from range(items)
        raise KeyError("the input broke")

    got = []
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler, \
            pytest.raises(KeyError, match="the input broke"):
        for value in scheduler.map(jobs.square, numbers()):
            got.append(value)
    assert got == [n * n for n in range(items)]


def test_a_line_of_jobs_that_turned_out_slower_is_given_back_and_a_higher_priority_goes_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """BUG (attack review): jobs handed ahead as tiny that each took 15 ms ran
    to the end of their line (each under the 20 ms patience) while a job of
    higher priority waited; now the line goes back once its next job has
    waited the patience, and the urgent job goes before most of it."""
    # Lines of 5 or more as a loaded machine makes a no-op call slow (the
    # worker's patience, what this is about, stays as it is).
    monkeypatch.setattr("corral.core.ahead.LONG_S", 1.0)
    monkeypatch.setattr("corral.core.ahead.QUEUED_WORK_S", 1.0)
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        corral.wait([scheduler.submit(jobs.sleep_for, 0) for _ in range(20)], timeout=60)
        batch = [corral.Job(jobs.sleep_for, (0.015,)) for _ in range(30)]
        scheduler.dispatch(batch)  # one worker: a line of them waits in it
        wait_until(lambda: sum(job.status is _S.SUBMITTED for job in batch) >= 5,
                   message="a line of jobs handed ahead to the worker")
        line = [job for job in batch if job.status is _S.SUBMITTED]
        urgent = scheduler.options(priority=10).submit(jobs.sleep_for, 0)
        corral.wait([*batch, urgent], timeout=60)
    ran_after_it = [job for job in line if job.started > urgent.started]
    assert len(ran_after_it) >= len(line) // 2, (len(ran_after_it), len(line))


def test_a_map_whose_last_batch_was_made_but_not_dispatched_when_stopped_says_it_was_cut_short(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """BUG (attack review, round 2): the input ran out while the feeder made a
    batch that shutdown(wait=False) then kept from being dispatched; the map
    ended silently, its last calls missing, as if complete."""
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 5)
    reading, go_on = threading.Event(), threading.Event()

    def numbers():
        for number in range(15):
            if number == 11:  # read while the third batch is made
                reading.set()
                go_on.wait(30)
            yield number

    scheduler = corral.Scheduler(cores=1, workdir=tmp_path / "run")
    try:
        results = scheduler.map(jobs.square, numbers())
        assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
        assert reading.wait(30)
        scheduler.shutdown(wait=False)
        go_on.set()
        assert [next(results) for _ in range(5)] == [25, 36, 49, 64, 81]
        with pytest.raises(CancelledError, match="shut down before every call was dispatched"):
            next(results)
    finally:
        go_on.set()
        scheduler.shutdown()


def test_clear_while_workers_run_their_lines_cancels_only_jobs_that_never_ran(tmp_path: Path):
    """BUG (attack review, round 2): jobs handed ahead were made CANCELLED at
    once when cleared, but a worker could start some before the request to
    give them back reached it: they ran, recorded CANCELLED (and a journaled
    rerun ran them again). Now they end CANCELLED only when given back."""
    marks = tmp_path / "marks"
    marks.mkdir()
    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        handles = [scheduler.submit(jobs.touch, str(marks / str(number)))
                   for number in range(2000)]
        wait_until(lambda: sum(job.done() for job in handles) >= 600,
                   message="a good part of the jobs to have run")
        cleared = scheduler.clear()
        corral.wait(handles, timeout=60)
    ran = {int(path.name) for path in marks.iterdir()}
    cancelled = {number for number, job in enumerate(handles) if job.status is _S.CANCELLED}
    assert ran.isdisjoint(cancelled), sorted(ran & cancelled)[:10]
    assert ran | cancelled == set(range(2000))
    assert cleared == len(cancelled)  # not one more for a job that had started (round 2)


def test_large_arguments_and_results_through_a_map_never_deadlock_the_driver_and_a_worker(
        tmp_path: Path):
    """BUG (attack review, round 2): the driver blocked writing a line of 100 KB
    requests to a worker whose reader thread waited for the queue's lock,
    held by the worker's main thread blocked writing a 100 KB reply the
    driver did not read: both waited forever. The driver now never blocks
    writing to a worker."""
    script = tmp_path / "big_map.py"
    script.write_text(
        "import sys\n"
        "import corral, jobs\n"
        "payload = bytes(100_000)\n"
        "with corral.Scheduler(cores=2) as scheduler:\n"
        "    count = sum(len(value) == 100_000\n"
        "                for value in scheduler.map(jobs.identity, [payload] * 3000))\n"
        "print(count)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(jobs.__file__).parent), *sys.path]))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "3000"), done.stderr[-2000:]


def test_jobs_handed_just_as_a_worker_goes_idle_all_run(tmp_path: Path):
    # An idle worker reads its pipe in its main thread; a busy one in its
    # doorbell thread. Bursts of tiny calls make workers flip between the two
    # while jobs queued ahead arrive: every job must start, none twice.
    with corral.Scheduler(cores=2, workdir=tmp_path) as scheduler:
        for burst in range(400):
            handles = [scheduler.submit(jobs.square, n) for n in range(burst % 9 + 1)]
            assert [job.result(timeout=30) for job in handles] == \
                [n * n for n in range(burst % 9 + 1)], f"burst {burst}"
        assert all(job.status is _S.COMPLETED for job in handles)


def test_an_abort_of_a_call_that_just_started_from_a_workers_queue_reaches_it(tmp_path: Path):
    """BUG (attack review of the doorbell): the driver counts a queued call
    RUNNING once its worker's reply names it, and its abort signal could land
    before the worker reset the flag for that call: the abort was wiped, and
    the call ran on until killed after the grace period (13 of 40 tries). An
    abort now names its job."""
    def abort_as_it_starts(event: corral.Event) -> None:
        if event.new is _S.RUNNING and event.job.name == "stop_when_asked":
            scheduler.abort(event.job)

    with corral.Scheduler(cores=2, workdir=tmp_path / "run", abort_grace=20) as scheduler:
        scheduler.on_event(abort_as_it_starts)
        for attempt in range(40):
            tiny = [scheduler.submit(jobs.square, n) for n in range(50)]
            marker = tmp_path / f"stopped-{attempt}"
            victim = scheduler.submit(jobs.stop_when_asked, str(marker),
                                      str(tmp_path / f"started-{attempt}"))
            assert not corral.wait([victim], timeout=60).not_done
            assert (victim.status, victim.record.reason) == (_S.CANCELLED, "aborted")
            assert marker.exists(), f"try {attempt}: the call never saw its abort; it was killed"
            assert [job.result(timeout=30) for job in tiny] == [n * n for n in range(50)]
