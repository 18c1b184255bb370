"""``map(..., chunksize="auto")``: chunk sizes learnt from how long the calls take.

Tiny calls should go thousands to a job, as joblib batches them, without the
user choosing a number; calls slower than a chunk's time keep a job each; a
chunk whose calls turn slow hands the rest of its calls to other jobs instead
of keeping a worker on them alone; and a journaled rerun finds the chunks an
earlier run completed, whatever sizes that run chose.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import pytest

import corral
from corral import JobStatus
from corral.core.chunk_sizes import ChunkSizer
from corral.journal.reading import read_jobs
from corral.runtime import chunks
from corral.runtime.chunks import ChunkRunner

import jobs
from support.waiting import wait_until


def _calls_per_job(run_dir: Path) -> list[int]:
    """How many calls each chunk job of the run held, from its command line
    (``mod.fn(…) ×N: calls a-b of a map``), in the order they were made."""
    return [int(job.command.split("×")[1].split(":")[0]) for job in read_jobs(run_dir)]


def _calls_of(command: str) -> range:
    """The map's calls a chunk job was given, from its command line."""
    found = re.search(r"×\d+: calls? (\d+)(?:-(\d+))? of a map$", command)
    assert found is not None, command
    first = int(found.group(1))
    return range(first, int(found.group(2) or first) + 1)


def _calls_run(job) -> range:
    """The calls a completed chunk job ran: all it was given, or, where it
    stopped short and left the rest to other jobs, as many as it has results."""
    given = _calls_of(job.command)
    return given[:len(pickle.loads(job.result))]


def test_tiny_calls_go_thousands_to_a_job_and_every_result_comes_in_order(tmp_path: Path):
    with corral.Scheduler(cores=2, journal=tmp_path / "run") as scheduler:
        assert list(scheduler.map(jobs.square, range(20_000), chunksize="auto")) == [
            number * number for number in range(20_000)]
    sizes = _calls_per_job(tmp_path / "run")
    # Each call run once, by one job (on a loaded machine a chunk may stop short and
    # leave its last calls to other jobs: its command line names all it was given).
    ran = sorted(call for job in read_jobs(tmp_path / "run") for call in _calls_run(job))
    assert ran == list(range(20_000))
    assert len(sizes) < 200  # a job per call would be 20,000
    # Sized to run 5 ms: a square takes 2-5 us on a quick machine, chunks of
    # 1,024 and more; up to 10 on a loaded slow one (512 in a full run here).
    assert max(sizes) >= 256
    assert {job.status for job in read_jobs(tmp_path / "run")} == {JobStatus.COMPLETED}


def test_an_automatic_map_takes_what_a_map_takes(tmp_path: Path):
    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        assert list(scheduler.map(jobs.add, [1, 2, 3], [10, 20, 30], chunksize="auto")) == [
            11, 22, 33]
        assert list(scheduler.map(jobs.square, [], chunksize="auto")) == []
        assert list(scheduler.map(jobs.square, [7], chunksize="auto")) == [49]
        assert list(scheduler.map("operator:neg", range(5), chunksize="auto")) == [
            0, -1, -2, -3, -4]
        first = scheduler.submit(jobs.square, 4)
        assert list(scheduler.map(jobs.add, [first, 1], [1, 2], chunksize="auto")) == [17, 3]


def test_a_rerun_loads_the_results_of_each_restored_chunk_once(tmp_path: Path):
    """A rerun unpickled every restored chunk's results twice: once to see
    whether the chunk would be restored, once to restore it."""
    with corral.Scheduler(cores=2, journal=tmp_path / "run") as scheduler:
        list(scheduler.map(jobs.loaded, range(3000), chunksize="auto"))
    jobs.LOADS[0] = 0
    with corral.Scheduler(cores=2, journal=tmp_path / "run") as scheduler:
        again = list(scheduler.map(jobs.loaded, range(3000), chunksize="auto"))
    assert [value.value for value in again] == list(range(3000))
    assert jobs.LOADS[0] == 3000


def test_calls_slower_than_a_chunks_time_keep_a_job_each(tmp_path: Path):
    with corral.Scheduler(cores=2, journal=tmp_path / "run") as scheduler:
        pids = list(scheduler.map(jobs.pid_after, [0.03] * 12, chunksize="auto"))
    assert len(pids) == 12
    assert _calls_per_job(tmp_path / "run") == [1] * 12
    assert read_jobs(tmp_path / "run")[3].command == "jobs.pid_after(…) ×1: call 3 of a map"


def test_a_chunk_whose_calls_turn_slow_leaves_the_rest_to_other_workers(tmp_path: Path):
    """Thousands of tiny calls make the chunks big; the slow calls that follow
    must not all run one after another in the big chunk that holds them."""
    pauses = [0.0] * 6000 + [0.05] * 8
    with corral.Scheduler(cores=2, journal=tmp_path / "run") as scheduler:
        pids = list(scheduler.map(jobs.pid_after, pauses, chunksize="auto"))
    assert len(pids) == 6008
    stored = read_jobs(tmp_path / "run")
    # the slow calls ran on both workers (else: which jobs ran where, when, and why)
    assert len(set(pids[6000:])) == 2, [
        (job.id, job.native_id, job.started and round(job.started % 100, 3),
         job.ended and round(job.ended % 100, 3), job.reason) for job in stored[-12:]]
    assert {job.status for job in stored} == {JobStatus.COMPLETED}
    assert len(stored) < 100
    assert any(re.fullmatch(r"stopped after call \d+, past its 20 ms; calls \d+-6007 went to "
                            r"other jobs", job.reason or "") for job in stored)


def test_chunks_that_stop_short_are_followed_in_order(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    """With no time to spare, every chunk runs one call and leaves the rest to
    the jobs that follow it: the map's results must still come whole and in order."""
    monkeypatch.setattr("corral.core.scheduler.AUTO_CHUNK_BUDGET", 0)
    with corral.Scheduler(cores=2, journal=tmp_path / "run") as scheduler:
        assert list(scheduler.map(jobs.square, range(300), chunksize="auto")) == [
            number * number for number in range(300)]
    stored = read_jobs(tmp_path / "run")
    assert len(stored) == 300  # one call ran in each
    assert {job.status for job in stored} == {JobStatus.COMPLETED}


def test_an_unread_automatic_map_still_runs_every_call(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("corral.core.scheduler.AUTO_CHUNK_BUDGET", 0)
    log = tmp_path / "ran"
    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        scheduler.map(jobs.note_and_square, [str(log)] * 50, range(50), chunksize="auto")
    assert sorted(map(int, log.read_text().split())) == list(range(50))


def test_leaving_an_automatic_map_early_cancels_what_was_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("corral.core.scheduler.AUTO_CHUNK_BUDGET", 0)
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as scheduler:
        results = scheduler.map(jobs.pid_after, [0.02] * 40, chunksize="auto")
        next(results)
        results.close()
        assert scheduler.wait(timeout=30)
    statuses = {job.status for job in read_jobs(tmp_path / "run")}
    assert JobStatus.CANCELLED in statuses
    assert statuses <= {JobStatus.COMPLETED, JobStatus.CANCELLED}


def test_a_call_that_raises_gives_the_results_before_it_then_its_exception(tmp_path: Path):
    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        got = []
        with pytest.raises(ValueError, match="negative: -1"):
            for value in scheduler.map(jobs.square_unless_negative,
                                       [*range(2000), -1, 5], chunksize="auto"):
                got.append(value)
    assert got == [number * number for number in range(2000)]


def test_chunksize_auto_is_spelt_as_such(tmp_path: Path):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        for bad in ("Auto", "automatic", "", b"auto"):
            with pytest.raises(ValueError, match=r"^map\(\): chunksize must be a whole number "
                                                 r".* or 'auto', not "):
                scheduler.map(jobs.square, [1, 2], chunksize=bad)


def _rerun_script(tmp_path: Path, log: Path, failing: int = 2999) -> Path:
    script = tmp_path / "squares.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import corral
        import jobs

        numbers = list(range(3000))
        if sys.argv[1] == "first":
            numbers[{failing}] = -1
        with corral.Scheduler(cores=2, journal={str(tmp_path / "run")!r}) as scheduler:
            try:
                results = list(scheduler.map(jobs.note_and_square, [{str(log)!r}] * 3000,
                                             numbers, chunksize="auto"))
                print(sum(results))
            except ValueError as error:
                print("raised", error)
    """))
    return script


def _flagged_maps(tmp_path: Path, body: str):
    """A journaled script (run it with the returned function, given its first
    argument) that defines ``flagged(numbers, bad, seconds=0)``: a map of
    :func:`jobs.note_and_raise_if_flagged` over *numbers*, each noted in the
    file ``ran``, raising at *bad* while the file ``flag`` exists; then runs
    *body* (script text, indented by 4) in its Scheduler."""
    log, flag = tmp_path / "ran", tmp_path / "flag"
    script = tmp_path / "flagged.py"
    script.write_text(textwrap.dedent(f"""
        import os
        import sys
        import corral
        import jobs

        def flagged(numbers, bad, seconds=0):
            numbers = list(numbers)
            count = len(numbers)
            return list(scheduler.map(jobs.note_and_raise_if_flagged, [{str(log)!r}] * count,
                                      numbers, [seconds] * count, [{str(flag)!r}] * count,
                                      [bad] * count, chunksize="auto"))

        with corral.Scheduler(cores=2, journal={str(tmp_path / "run")!r}) as scheduler:
    """) + textwrap.indent(textwrap.dedent(body), "    "))
    return _runner(script)


def _runner(script: Path):
    env = {"PYTHONPATH": f"{Path(__file__).parent}:{Path(corral.__file__).parent.parent}",
           "PATH": "/usr/bin:/bin"}

    def run(which: str) -> str:
        return subprocess.run([sys.executable, str(script), which], capture_output=True,
                              text=True, check=True, timeout=120, env=env).stdout
    return run


def test_a_journaled_rerun_finds_the_chunks_an_earlier_run_completed(tmp_path: Path):
    """The first run's sizes came from its own timings; the rerun must find its
    completed chunks all the same and run only the chunk that failed."""
    log = tmp_path / "ran"
    run = _runner(_rerun_script(tmp_path, log))

    assert run("first") == "raised negative: -1\n"
    assert sorted(map(int, log.read_text().split())) == [-1, *range(2999)]
    failed = [job for job in read_jobs(tmp_path / "run") if job.status is JobStatus.FAILED]
    assert len(failed) == 1
    log.write_text("")
    assert run("second") == f"{sum(n * n for n in range(3000))}\n"
    assert sorted(map(int, log.read_text().split())) == list(_calls_of(failed[0].command))
    log.write_text("")
    assert run("second") == f"{sum(n * n for n in range(3000))}\n"
    assert log.read_text() == ""  # every chunk restored


def test_a_rerun_keeps_the_earlier_chunks_around_one_that_failed_midway(tmp_path: Path):
    """The chunks after a failed one start where the earlier run's did, so
    those that completed are restored, not run again."""
    log = tmp_path / "ran"
    run = _runner(_rerun_script(tmp_path, log, failing=1500))
    assert run("first") == "raised negative: -1\n"
    completed = {call for job in read_jobs(tmp_path / "run")
                 if job.status is JobStatus.COMPLETED for call in _calls_run(job)}
    assert len(completed) > 1000
    log.write_text("")
    assert run("second") == f"{sum(n * n for n in range(3000))}\n"
    again = set(map(int, log.read_text().split()))
    assert 1500 in again
    assert not again & completed


def test_a_rerun_does_not_take_the_chunk_sizes_of_another_map_of_the_same_function(
        tmp_path: Path):
    """BUG (attack review): where its own chunk had failed, a map took the
    size of another map's chunk at that place, and ran its own completed calls
    after it again."""
    log, flag = tmp_path / "ran", tmp_path / "flag"
    run = _flagged_maps(tmp_path, """
        flagged(range(3000), 10009)
        try:
            flagged(range(10000, 10040), 10009, 0.01)  # a call a chunk: 10009's place is 9
        except ValueError as error:
            print("raised", error)
    """)
    flag.touch()
    assert run("first") == "raised flagged: 10009\n"
    second_map = _jobs_of_the_second_map(read_jobs(tmp_path / "run"))
    not_completed = {call + 10000 for job in second_map if job.status is not JobStatus.COMPLETED
                     for call in _calls_of(job.command)}
    # (How far it got before it raised depends on timing: the calls it never made
    # run in the second run, rightly.)
    made = {call + 10000 for job in second_map for call in _calls_of(job.command)}
    not_completed |= set(range(10000, 10040)) - made
    flag.unlink()
    log.write_text("")
    assert run("second") == ""
    again = set(map(int, log.read_text().split()))
    assert 10009 in again
    assert again <= not_completed, sorted(again - not_completed)


def _jobs_of_the_second_map(stored: list) -> list:
    """The chunk jobs of a run's second map: from its call 0 on, in submission order."""
    starts = [index for index, job in enumerate(stored) if _calls_of(job.command)[0] == 0]
    assert len(starts) == 2, [job.command for job in stored]
    return stored[starts[1]:]


def test_a_pause_once_shutdown_began_is_refused_not_waited_for(tmp_path: Path):
    """Doubt (attack review): a pause that came while shutdown waited for a
    map hung it until someone resumed."""
    scheduler = corral.Scheduler(cores=1, workdir=tmp_path / "run")
    results = scheduler.map(jobs.pid_after, [0.05] * 20, chunksize="auto")
    closing = threading.Thread(target=scheduler.shutdown)
    closing.start()
    wait_until(lambda: scheduler._engine._finishing, message="shutdown to begin")
    with pytest.raises(RuntimeError, match=r"^the scheduler was shut down: it finishes the "
                                           r"jobs it was given, and cannot be paused$"):
        scheduler.pause()
    closing.join(timeout=60)
    assert not closing.is_alive()
    assert len(list(results)) == 20


def test_a_scheduler_shut_down_before_any_job_is_not_paused_nor_restarted(tmp_path: Path):
    """BUG (attack review): pause() was taken, and resume() started a control
    loop on the closed backend, which crashed."""
    scheduler = corral.Scheduler(cores=1, workdir=tmp_path / "run")
    scheduler.shutdown()
    with pytest.raises(RuntimeError, match=r"^the scheduler was shut down: "):
        scheduler.pause()
    scheduler.resume()
    assert scheduler._engine._thread is None


def test_a_rerun_takes_no_chunk_of_another_map_over_the_same_items(tmp_path: Path):
    """BUG (attack review): map A completed; map B, of the same function over
    the same items, failed midway. The rerun took B's completed chunks for
    A's where their sizes differed, and ran A's own completed calls again."""
    log, flag = tmp_path / "ran", tmp_path / "flag"
    run = _flagged_maps(tmp_path, f"""
        flagged(range(3000), 500)  # map A
        jobs.append_line({str(log)!r}, "B")
        if sys.argv[1] == "first":
            open({str(flag)!r}, "a").close()
        try:
            flagged(range(3000), 500)  # map B
        except ValueError as error:
            print("raised", error)
    """)
    assert run("first") == "raised flagged: 500\n"
    flag.unlink()
    log.write_text("")
    assert run("second") == ""
    by_map_a, by_map_b = log.read_text().split("B\n")
    assert by_map_a == ""  # every chunk of A had completed
    assert "500\n" in by_map_b


def test_a_rerun_that_begins_its_maps_in_another_order_restores_them_all_the_same(
        tmp_path: Path):
    """BUG (attack review): maps numbered by function in the order they began
    found none of their chunks when a rerun began them in another order."""
    log, flag = tmp_path / "ran", tmp_path / "flag"
    run = _flagged_maps(tmp_path, """
        for start in ((0, 10000) if sys.argv[1] == "first" else (10000, 0)):
            try:
                flagged(range(start, start + 2000), start + 1500)
            except ValueError as error:
                print("raised", error)
    """)
    flag.touch()
    assert run("first") == "raised flagged: 1500\nraised flagged: 11500\n"
    completed = {value for job in read_jobs(tmp_path / "run")
                 if job.status is JobStatus.COMPLETED for value in pickle.loads(job.result)}
    assert len(completed) > 2000
    flag.unlink()
    log.write_text("")
    assert run("second") == ""
    again = set(map(int, log.read_text().split()))
    assert {1500, 11500} <= again
    assert not again & completed, sorted(again & completed)[:10]


def test_a_map_never_takes_the_values_of_another_map_over_the_same_items(tmp_path: Path):
    """Attack review: map A failed at a call that map B, over the same items,
    then completed; a rerun must still run A's call (it raises again), and
    restore all of B."""
    log, flag = tmp_path / "ran", tmp_path / "flag"
    run = _flagged_maps(tmp_path, f"""
        open({str(flag)!r}, "a").close()
        try:
            flagged(range(3000), 1500)  # map A
        except ValueError as error:
            print("A raised", error)
        os.unlink({str(flag)!r})
        jobs.append_line({str(log)!r}, "B")
        print("B", sum(flagged(range(3000), 1500)))
    """)
    assert run("first") == f"A raised flagged: 1500\nB {sum(range(3000))}\n"
    log.write_text("")
    assert run("second") == f"A raised flagged: 1500\nB {sum(range(3000))}\n"
    by_map_a, by_map_b = log.read_text().split("B\n")
    assert "1500\n" in by_map_a
    assert by_map_b == ""  # every chunk of B had completed


def test_a_chunk_past_its_budget_ends_after_the_call_that_runs(monkeypatch):
    """On a clock each call moves 30 ms on (a real sleep overshot the budget
    on a loaded machine, and the chunk ended after one call)."""
    clock = [0.0]

    def takes_30_ms() -> float:
        clock[0] += 0.03
        return clock[0]

    monkeypatch.setattr(chunks, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    assert ChunkRunner(takes_30_ms, budget_s=0.05)([()] * 5, 0) == [0.03, 0.06]
    assert len(ChunkRunner(takes_30_ms)([()] * 5, 0)) == 5


def test_sizes_grow_at_most_eightfold_and_fall_at_once():
    sizer = ChunkSizer(seconds=0.005)
    assert sizer.size == 1
    sizer.learn(1, 0.000_001)
    assert sizer.size == 8
    sizer.learn(8, 0.000_008)
    assert sizer.size == 64
    sizer.learn(64, 0.640, afresh=True)  # 10 ms a call: one a chunk
    assert sizer.size == 1


def test_the_feeder_never_counts_a_list_the_reader_empties(monkeypatch):
    """BUG (found hung for two hours after a loaded suite run): the map's
    feeder thread was given the very lists the reader pops its results from.
    Counting a batch's jobs, then watching each for its end, it could count a
    job the reader took before it was watched, and wait for it for ever: the
    README's million-call automatic map never returned. The feeder keeps lists
    of its own."""
    from concurrent.futures import Future

    from corral.core import mapping

    given: list[list] = []

    def keep_the_feeders_lists(target, *, name, args=(), daemon=True):
        given.append(args[0])
        return threading.Thread(target=lambda: None)  # (not started: nothing to feed here)

    monkeypatch.setattr(mapping, "start_thread", keep_the_feeders_lists)
    feed = mapping.MapFeed(lambda arguments: Future(), lambda jobs: None,
                           lambda jobs, left_by, started: None,
                           iter([(number,) for number in range(5)]), window=10)
    readers = feed._batches.get_nowait()
    assert len(given) == 1 and given[0] is not readers and given[0] == readers
    assert feed._send_batch() is None  # (the input is done: nothing more to share)
