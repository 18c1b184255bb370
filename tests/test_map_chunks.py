"""``map(..., chunksize=N)``: every N calls one job, each call still its own result.

For calls of microseconds a job per call costs more than the call; chunks
are what ``ProcessPoolExecutor.map(chunksize=...)`` and joblib run. The map
must still yield every call's result in order and raise a call's own
exception at its place.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import CancelledError
import textwrap
from pathlib import Path

import pytest

import corral
from corral import JobStatus
from support.waiting import wait_until
from corral.journal.reading import read_jobs

import jobs


def test_a_chunked_map_yields_every_result_in_order_from_one_job_per_chunk(tmp_path: Path):
    with corral.Scheduler(cores=2, journal=tmp_path / "run") as scheduler:
        assert list(scheduler.map(jobs.square, range(10), chunksize=4)) == [
            number * number for number in range(10)]
        assert list(scheduler.map(jobs.add, [1, 2, 3], [10, 20, 30], chunksize=2)) == [11, 22, 33]
        assert list(scheduler.map(jobs.square, [], chunksize=3)) == []
        assert list(scheduler.map("operator:neg", [1, 2, 3], chunksize=2)) == [-1, -2, -3]
    stored = read_jobs(tmp_path / "run")
    # 3 chunks of squares (4 + 4 + 2), 2 of additions, 2 of negations
    assert len(stored) == 7
    assert {job.status for job in stored} == {JobStatus.COMPLETED}
    assert {job.name for job in stored} == {"square", "add", "neg"}


def test_a_call_that_raises_gives_the_results_before_it_then_its_own_exception(tmp_path: Path):
    log = tmp_path / "ran"
    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        got = []
        results = scheduler.map(jobs.square_unless_negative, [1, 2, -3, 4, -5, 6, 7], chunksize=5)
        with pytest.raises(ValueError, match=r"^negative: -3$") as raised:
            for value in results:
                got.append(value)
        assert got == [1, 4]
        assert isinstance(raised.value.__cause__, corral.RemoteTraceback)
        assert "square_unless_negative" in str(raised.value.__cause__)
        # every call of the chunk ran, also those after the one that raised
        with pytest.raises(ValueError, match=r"^negative: -2$"):
            list(scheduler.map(jobs.note_and_square, [str(log)] * 4, [1, -2, 3, 4],
                               chunksize=4))
        assert log.read_text().split() == ["1", "-2", "3", "4"]


def test_the_failed_chunk_says_which_call_raised_what(tmp_path: Path):
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as scheduler, \
            pytest.raises(ValueError):
        list(scheduler.map(jobs.square_unless_negative, [0, 1, 2, -3, 4, -5], chunksize=3))
    failed = [job for job in read_jobs(tmp_path / "run") if job.status is JobStatus.FAILED]
    assert [job.reason for job in failed] == [
        "raised ChunkFailed: call 3 of the map raised ValueError: negative: -3 "
        "(1 more of its calls raised)"]


def test_the_chunks_a_failed_chunk_leaves_unread_name_the_calls_exception(tmp_path: Path,
                                                                           release):
    """BUG (cold review): their reason said the loop ended with ChunkFailed,
    corral's own type, where the program saw ValueError."""
    # (Not released: the cancelled chunk is stopped waiting; released at once,
    # it could complete before its stop reached it, and its reason say so.)
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as scheduler, \
            pytest.raises(ValueError):
        list(scheduler.map(jobs.raise_if_negative_else_wait, [-1, -2, 3, 4],
                           [str(release)] * 4, chunksize=2))
    reasons = [(job.status, job.reason) for job in read_jobs(tmp_path / "run")]
    assert reasons[1] == (JobStatus.CANCELLED, "the map's results were no longer read: the "
                                               "loop reading them ended with ValueError")


def test_an_exception_that_refuses_pickling_is_raised_at_its_call_as_itself(tmp_path: Path):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        got = []
        with pytest.raises(jobs.UnpicklableError, match=r"^cannot travel\ncorral: attributes "):
            for value in scheduler.map(jobs.raise_unpicklable_on, [5, 6, -7, 8], chunksize=4):
                got.append(value)
        assert got == [5, 6]


def test_an_exception_that_cannot_travel_is_raised_as_job_failed_naming_the_call(
        tmp_path: Path):
    """An exception of a class the driver cannot import travels as its text."""
    elsewhere = tmp_path / "only_in_worker"
    elsewhere.mkdir()
    (elsewhere / "private_errors.py").write_text("class PrivateError(Exception):\n    pass\n")
    code = (f"import sys; sys.path.insert(0, {str(elsewhere)!r}); import private_errors; "
            "raise private_errors.PrivateError('hidden')")
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        got = []
        with pytest.raises(corral.JobFailed, match=r"^call 2 of the map raised PrivateError: "
                                                   r"hidden"):
            for value in scheduler.map(jobs.run_code, ["result = 5", "result = 6", code],
                                       chunksize=3):
                got.append(value)
        assert got == [5, 6]


def test_chunksize_must_be_a_whole_number_of_at_least_one(tmp_path: Path):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        for bad in (0, -2, 2.5, True, "10", None):
            with pytest.raises(ValueError, match=r"^map\(\): chunksize must be a whole number "
                                                 r"of calls per job, at least 1 \(a job per "
                                                 r"call\), or 'auto', not "):
                scheduler.map(jobs.square, [1, 2], chunksize=bad)
        for bad in (sys.maxsize + 1, 10**30):
            with pytest.raises(ValueError, match=r"^map\(\): chunksize must be .* at least 1 "
                                                 r"\(a job per call\), at most sys.maxsize, or "
                                                 r"'auto', not \d+$"):
                scheduler.map(jobs.square, [1, 2], chunksize=bad)
        assert list(scheduler.map(jobs.square, [1, 2], chunksize=1)) == [1, 4]


def test_an_input_that_raises_gives_the_results_read_before_it_then_its_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("corral.core.scheduler.CHUNK_WINDOW", 1)  # a chunk per batch
    monkeypatch.setattr("corral.core.scheduler.MAP_WINDOW", 2)

    def numbers():
        yield from (1, 2, 3)
        raise KeyError("input broke")

    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        got = []
        with pytest.raises(KeyError, match="input broke"):
            for value in scheduler.map(jobs.square, numbers(), chunksize=2):
                got.append(value)
    assert got == [1, 4, 9]


def test_a_lambda_and_a_closure_travel_by_value_in_chunks(tmp_path: Path):
    offset = 100
    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        assert list(scheduler.map(lambda x: x + offset, range(5), chunksize=2)) == [
            100, 101, 102, 103, 104]


def test_leaving_a_chunked_map_early_cancels_the_chunks_not_read(tmp_path: Path, release):
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as scheduler:
        waits = [str(release)] * 2 + [str(tmp_path / f"never-{n}") for n in range(4)]
        results = scheduler.map(jobs.wait_for_file, waits, chunksize=2)
        release.touch()
        assert next(results) is None
        results.close()
        assert scheduler.wait(timeout=30)
    statuses = sorted(job.status.name for job in read_jobs(tmp_path / "run"))
    assert statuses == ["CANCELLED", "CANCELLED", "COMPLETED"]


def test_a_journaled_rerun_runs_only_the_chunks_that_did_not_complete(tmp_path: Path):
    log = tmp_path / "ran"
    script = tmp_path / "squares.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import corral
        import jobs

        numbers = [1, 2, 3, -4, 5, 6, 7] if sys.argv[1] == "first" else [1, 2, 3, 4, 5, 6, 7]
        with corral.Scheduler(cores=2, journal={str(tmp_path / "run")!r}) as scheduler:
            try:
                print(list(scheduler.map(jobs.note_and_square, [{str(log)!r}] * 7, numbers,
                                         chunksize=3)))
            except ValueError as error:
                print("raised", error)
    """))
    tests = str(Path(__file__).parent)
    env_path = f"{tests}:{Path(corral.__file__).parent.parent}"

    def run(which: str) -> str:
        return subprocess.run([sys.executable, str(script), which], capture_output=True,
                              text=True, check=True, timeout=120,
                              env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}).stdout

    assert run("first") == "raised negative: -4\n"
    assert sorted(log.read_text().split(), key=int) == ["-4", "1", "2", "3", "5", "6", "7"]
    log.write_text("")
    # The second run's middle chunk is other work (4, not -4): only it runs.
    assert run("second") == "[1, 4, 9, 16, 25, 36, 49]\n"
    assert sorted(log.read_text().split(), key=int) == ["4", "5", "6"]


def test_a_call_raising_system_exit_fails_after_the_results_before_it(tmp_path: Path):
    """Attack review: SystemExit skipped the chunk's other calls and lost the
    results before it."""
    got = []
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler, \
            pytest.raises(SystemExit) as raised:
        for value in scheduler.map(jobs.exit_on, range(6), chunksize=6):
            got.append(value)
    assert (got, raised.value.code) == ([0, 1], 7)


def test_a_result_that_cannot_travel_fails_its_own_call_not_the_results_before_it(
        tmp_path: Path):
    """BUG (attack review): the chunk's results were pickled together, so one
    lock among them lost every result of the chunk and was blamed on its
    first call."""
    got = []
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as scheduler, \
            pytest.raises(corral.NotPicklable, match=r"^call 2's return value cannot be pickled: "
                                           r"TypeError: cannot pickle '_thread.lock' object$"):
        for value in scheduler.map(jobs.lock_on, range(6), chunksize=3):
            got.append(value)
    assert got == [0, 1]
    failed = [job for job in read_jobs(tmp_path / "run") if job.status is JobStatus.FAILED]
    assert [job.reason for job in failed] == [
        "raised ChunkFailed: call 2 of the map raised NotPicklable: call 2's return value cannot "
        "be pickled: TypeError: cannot pickle '_thread.lock' object"]


def test_the_failed_chunks_traceback_shows_the_call_that_raised(tmp_path: Path):
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as scheduler, \
            pytest.raises(ValueError):
        list(scheduler.map(jobs.square_unless_negative, [1, -2], chunksize=2))
    shown = subprocess.run([sys.executable, "-m", "corral", "--run", str(tmp_path / "run"),
                            "status", "1"], capture_output=True, text=True, timeout=60)
    assert 'raise ValueError(f"negative: {x}")' in shown.stdout
    assert "ValueError: negative: -2" in shown.stdout
    # From the call on: corral's frames above it say nothing to the reader (cold review).
    traceback = shown.stdout.partition("raised:\n")[2]
    assert traceback.splitlines()[1].endswith(", in square_unless_negative"), traceback
    assert "corral/runtime" not in traceback, traceback
    assert traceback.endswith("\n\ncorral.runtime.chunks.ChunkFailed: call 1 of the map raised "
                              "ValueError: negative: -2\n"), traceback


def test_chunks_of_a_callable_without_a_name_are_named_as_its_jobs_are(tmp_path: Path):
    import functools

    with corral.Scheduler(cores=1, journal=tmp_path / "run") as scheduler:
        assert list(scheduler.map(functools.partial(jobs.add, 10), [1, 2, 3],
                                  chunksize=2)) == [11, 12, 13]
    assert {job.name for job in read_jobs(tmp_path / "run")} == {"partial"}
    assert {job.command.split("(")[0] for job in read_jobs(tmp_path / "run")} == {
        "functools.partial"}


def test_a_chunked_map_reads_its_input_no_further_than_its_workers_need(
        tmp_path: Path, release):
    """BUG (attack review): at least 32 chunks were made at once, whatever
    their size: 3 million calls in chunks of 100,000 held the whole input."""
    read = []

    def paths():
        for number in range(100_000):
            read.append(number)
            yield str(release)

    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        results = scheduler.map(jobs.wait_for_file, paths(), range(100_000), chunksize=1000)
        # Measured while the first chunk blocks the one worker: once chunks end, the
        # map rightly reads on (measured after the first result, it read on as the
        # next chunks ended, under load).
        wait_until(lambda: scheduler.jobs(JobStatus.RUNNING), timeout=60,
                   message="the first chunk to run")
        # two batches of two chunks (two per core), and one chunk read ahead
        assert len(read) <= 5 * 1000
        release.touch()
        assert next(results) == 0
        results.close()


def test_a_result_late_past_the_maps_timeout_cancels_its_chunk_naming_the_timeout(
        tmp_path: Path, release):
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as scheduler:
        results = scheduler.map(jobs.wait_for_file, [str(release)] * 4, timeout=0.3,
                                chunksize=2)
        with pytest.raises(TimeoutError):
            next(results)
        release.touch()
        assert scheduler.wait(timeout=30)
    reasons = {job.reason for job in read_jobs(tmp_path / "run")}
    assert reasons == {"the map's results were no longer read: the loop reading them ended "
                       "with TimeoutError"}


def test_an_abort_ends_a_chunk_after_the_call_that_runs(tmp_path: Path):
    log = tmp_path / "ran"
    with corral.Scheduler(cores=1, workdir=tmp_path / "run", abort_grace=60) as scheduler:
        results = scheduler.map(jobs.note_then_sleep, [str(log)] * 40, [0.05] * 40,
                                chunksize=40)
        wait_until(lambda: log.exists(), timeout=30, message="the chunk to start")
        assert scheduler.abort() == 1
        with pytest.raises(CancelledError):
            list(results)
    assert len(log.read_text().split()) < 40  # not every call: it stopped, not killed


def test_a_job_among_a_chunks_arguments_is_its_dependency(tmp_path: Path):
    with corral.Scheduler(cores=2, workdir=tmp_path / "run") as scheduler:
        first = scheduler.submit(jobs.square, 4)
        assert list(scheduler.map(jobs.add, [first, 1, 2], [1, 2, 3], chunksize=2)) == [
            17, 3, 5]


@pytest.mark.parametrize("chunksize, before", [(1, [0, 1]), (5, [])])
def test_a_result_the_driver_cannot_load_fails_its_call_or_its_chunk(
        tmp_path: Path, chunksize: int, before: list[int]):
    """A chunk's results travel together (see the next test), so one that the
    driver cannot load fails the whole chunk, as the README says."""
    got = []
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler, \
            pytest.raises(corral.JobFailed, match="cannot be unpickled here: ValueError: "
                                                  "cannot load 2"):
        for value in scheduler.map(jobs.unloadable_on, range(5), chunksize=chunksize):
            got.append(value)
    assert got == before


def test_an_object_many_calls_of_a_chunk_return_travels_once(tmp_path: Path):
    """Attack review, round 3: results pickled one by one came back as a copy
    per call (a 1 MB list returned by 50 calls: 50 MB in the journal)."""
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        results = list(scheduler.map(jobs.shared_result, range(20), chunksize=20))
    assert all(result is results[0] for result in results)


@pytest.mark.parametrize("how, chunksize", [("unprintable", 1), ("unprintable", 5),
                                            ("exit", 1), ("exit", 5)])
def test_a_result_whose_loading_raises_anything_fails_the_job_not_the_scheduler(
        tmp_path: Path, how: str, chunksize: int):
    """Attack review, round 3: loading a result that raised SystemExit, or an
    exception whose str() raises, crashed the control loop."""
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        with pytest.raises(corral.JobFailed, match=r"cannot be unpickled here: "
                                                   r"(UnprintableError|SystemExit)"):
            list(scheduler.map(jobs.hostile_on_load, range(5), [how] * 5, chunksize=chunksize))
        assert scheduler.submit(jobs.square, 3).result(timeout=30) == 9  # it goes on


@pytest.mark.parametrize("chunksize", [1, 4])
def test_an_exception_whose_str_raises_is_still_the_calls_own(tmp_path: Path, chunksize: int):
    """BUG (attack review, round 2): its str() raised inside the worker's
    packing of it: the chunk's other calls did not run, and the map raised
    the RuntimeError of str() instead (unchunked too)."""
    got = []
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler, \
            pytest.raises(jobs.UnprintableError):
        for value in scheduler.map(jobs.raise_unprintable_on, range(4), chunksize=chunksize):
            got.append(value)
    assert got == [0]


def test_a_stored_chunk_short_of_its_calls_runs_again_instead_of_shifting_the_results(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Attack review: an aborted chunk's partial list, kept as a completion (as a
    journal written before that was fixed may hold), was restored by the rerun:
    the map yielded fewer results, each later one beside the wrong item."""
    import pickle
    import sqlite3

    run = tmp_path / "run"
    with corral.Scheduler(cores=2, journal=run) as sched:
        assert list(sched.map(jobs.square, range(40), chunksize=10)) == [x * x for x in range(40)]
    with sqlite3.connect(run / "journal.db") as db:  # job 2 holds items 10 to 19
        db.execute("UPDATE jobs SET result=? WHERE id='2'",
                   (pickle.dumps([x * x for x in range(10, 14)]),))
    with corral.Scheduler(cores=2, journal=run) as sched:
        assert list(sched.map(jobs.square, range(40), chunksize=10)) == [x * x for x in range(40)]
    assert "fewer results than its chunk has calls (it stopped early); it runs again" in (
        caplog.text)
    ran_again = corral.Scheduler.open(run).job(2)
    assert (ran_again.status, ran_again.attempts) == (JobStatus.COMPLETED, 2)
