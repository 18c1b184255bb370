"""A journaled run: resumed after its driver was killed, read from another
process, controlled over its socket, private to its user, logged and mailed."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import gc
import json
import logging
import math
import os
import pickle
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import jobs
import journal_driver
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.cli import Corral
from support.processes import pids_alive
from support.waiting import loop_barrier, wait_until
from smtp_server import SmtpServer

import corral
from corral import JobStatus
from corral.config import Config, SmtpSettings
from corral.control.server import NoDriver, send_request
from corral.errors import CorralError, JournalError, RemoteTraceback, RunInUse
from corral.runtime.chunks import ChunkRunner
from corral.runtime.outcomes import read_outcomes
from corral.journal.files import owner_of

DRIVER = Path(__file__).with_name("journal_driver.py")
RESTORED = "completed in an earlier run (from the journal)"


def start_driver(tmp_path: Path, *args: object, output: str = "driver.out") -> subprocess.Popen:
    """Start journal_driver.py as a real process; its stdout and stderr go to a file."""
    environment = dict(os.environ, TMPDIR=str(tmp_path))  # a killed driver's spool stays here
    with open(tmp_path / output, "w") as sink:
        return subprocess.Popen([sys.executable, str(DRIVER), *map(str, args)], stdout=sink,
                                stderr=subprocess.STDOUT, env=environment)


def finish(driver: subprocess.Popen, tmp_path: Path, output: str = "driver.out") -> str:
    """Wait for the driver to end well and return what it printed."""
    try:
        returncode = driver.wait(timeout=60)
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.wait()
        raise
    text = (tmp_path / output).read_text()
    assert returncode == 0, f"the driver failed ({returncode}):\n{text}"
    return text


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- 1. exactly once after SIGKILL -------------------------------------------------------------


def kill_while_a_finished_job_is_unseen(tmp_path: Path, args: tuple, free: int) -> tuple[int, int]:
    """Run the ``squares`` driver until *free* jobs are done and two wait at their
    gates; freeze it, let the first waiting job finish in its worker (so only the
    outcome log knows), then SIGKILL the driver and wait for its processes to end.

    Returns (the job that finished unseen, the job killed at its gate).
    """
    run, side, gates = args[1], args[2], args[3]
    first = start_driver(tmp_path, *args, output="first.out")
    left: list[int] = []
    try:
        def settled() -> bool:
            return (len(list(side.iterdir())) == free
                    and len(list(gates.glob("*.waiting"))) == 2)
        wait_until(settled, message=f"{free} jobs done and 2 waiting at their gates")
        blocked = sorted((int(p.name.split(".")[0]), p.read_text())
                         for p in gates.glob("*.waiting"))

        os.kill(first.pid, signal.SIGSTOP)
        wait_until(lambda: psutil.Process(first.pid).status() == psutil.STATUS_STOPPED)
        descendants = psutil.Process(first.pid).children(recursive=True)
        left = [process.pid for process in descendants]
        workers = [process.cmdline() for process in descendants
                   if "corral.runtime.worker" in " ".join(process.cmdline())]
        assert len(workers) == 2, f"expected two workers among {left}, found {workers}"
        (finished_unseen, job_id), (killed_midway, _) = blocked
        (gates / str(finished_unseen)).touch()
        wait_until(lambda: job_id in read_outcomes(run),
                   message=f"job {job_id}'s outcome in the outcome log")
        journal = corral.Scheduler.open(run).jobs()
        assert job_id not in {str(job.id) for job in journal if job.status.is_terminal}, \
            "the frozen driver's journal saw the job finish"
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    wait_until(lambda: not pids_alive(left), timeout=10,
               message="the killed driver's workers (and any helper process) to end with it")
    return finished_unseen, killed_midway


@pytest.fixture
def squares(tmp_path: Path) -> Callable[[int, int], tuple]:
    """The ``squares`` driver's arguments for *count* jobs of which the first *free* run freely."""
    side, gates = tmp_path / "side", tmp_path / "gates"
    side.mkdir()
    gates.mkdir()
    return lambda count, free: ("squares", tmp_path / "run", side, gates, count, free, 0.05)


def test_a_run_killed_with_sigkill_resumes_and_runs_every_job_exactly_once(tmp_path, squares):
    count, free = 50, 12  # jobs 12, 13, ... wait at a gate in the first run
    args = squares(count, free)
    run, side, gates = args[1:4]

    finished_unseen, killed_midway = kill_while_a_finished_job_is_unseen(tmp_path, args, free)
    assert owner_of(run) is None
    with pytest.raises(NoDriver, match=f"no corral process drives the run at {run}"):
        send_request(run, {"verb": "ping"})  # its socket file is left; nobody listens
    assert len(lines(side / str(finished_unseen))) == 1  # it ran, in the frozen driver's worker
    assert lines(side / str(killed_midway)) == []  # killed at its gate, before its side effect

    (gates / "all").touch()
    printed = finish(start_driver(tmp_path, *args, output="second.out"), tmp_path,
                     output="second.out")

    assert json.loads(printed.splitlines()[-1]) == [i * i for i in range(count)]
    assert sorted(int(p.name) for p in side.iterdir()) == list(range(count))
    not_once = {p.name: lines(p) for p in side.iterdir() if len(lines(p)) != 1}
    assert not_once == {}, f"side effects not exactly once: {not_once}"
    stored = corral.Scheduler.open(run).jobs()
    assert [job.status for job in stored] == [JobStatus.COMPLETED] * count
    by_index = {round(job.result_value() ** 0.5): job for job in stored}
    assert sorted(by_index) == list(range(count))
    not_rerun = sorted(i for i, job in by_index.items() if job.reason == RESTORED)
    assert not_rerun == [*range(free), finished_unseen]  # the last one from the outcome log
    assert by_index[killed_midway].reason is None  # it ran again, in the second run


def test_a_job_restored_from_the_outcome_log_keeps_an_end_time(tmp_path, squares):
    """BUG: a call that finished while the driver was being killed comes back
    COMPLETED with ``ended=None``; `corral status` then shows its TIME growing forever."""
    args = squares(4, 2)
    finished_unseen, _ = kill_while_a_finished_job_is_unseen(tmp_path, args, 2)
    (args[3] / "all").touch()
    finish(start_driver(tmp_path, *args, output="second.out"), tmp_path, output="second.out")

    [job] = [job for job in corral.Scheduler.open(args[1]).jobs()
             if job.result_value() == finished_unseen ** 2]
    assert (job.status, job.reason, job.exit_code) == (JobStatus.COMPLETED, RESTORED, 0)
    assert job.attempts >= 1  # it ran, whether or not the journal heard of its start
    assert job.started is not None
    assert job.ended is not None and job.ended >= job.started


# -- 2. what a second run of the same script does --------------------------------------------


def test_a_second_run_returns_stored_results_without_running_the_jobs_again(tmp_path):
    run, log = tmp_path / "run", tmp_path / "log"

    def script() -> list[corral.Job]:
        with corral.Scheduler(cores=2, journal=run) as sched:
            found = [sched.submit(journal_driver.logged_square, str(log), value)
                     for value in (3, 4)]
            assert [job.result(timeout=30) for job in found] == [9, 16]
        return found

    first = script()
    assert sorted(lines(log)) == ["3", "4"]
    assert [job.reason for job in first] == [None, None]
    second = script()
    assert sorted(lines(log)) == ["3", "4"]  # nothing ran again
    assert [job.status for job in second] == [JobStatus.COMPLETED] * 2
    assert [job.reason for job in second] == [RESTORED] * 2
    assert [job.id for job in second] == [job.id for job in first]
    assert [job.record.data for job in second] == [9, 16]
    assert [job.ended for job in second] == [job.ended for job in first]
    assert len(corral.Scheduler.open(run).jobs()) == 2  # the same two jobs, not four


def test_a_rerun_of_a_large_batch_restores_its_completed_jobs_and_runs_its_failed_ones(tmp_path):
    """Jobs dispatched together are looked up in the journal together (a few
    queries for a thousand jobs, see PreviousJobs.read_ahead): each must still
    find its own earlier job, whatever became of it."""
    run, log = tmp_path / "run", tmp_path / "log"
    values = [-value if value % 100 == 7 else value for value in range(1200)]

    def script() -> list[corral.Job]:
        with corral.Scheduler(cores=2, journal=run) as sched:
            made = sched.dispatch([corral.Job(jobs.note_and_square, (str(log), value))
                                   for value in values])
            for job in made:
                job.exception(timeout=120)
        return made

    first = script()
    second = script()
    logged = collections.Counter(lines(log))
    assert {logged[str(value)] for value in values if value >= 0} == {1}  # restored
    assert [logged[str(value)] for value in values if value < 0] == [2] * 12  # ran again
    assert [job.id for job in second] == [job.id for job in first]
    assert [job.status for job in second] == [
        JobStatus.FAILED if value < 0 else JobStatus.COMPLETED for value in values]
    assert [job.record.data for job in second if job.status is JobStatus.COMPLETED] == [
        value * value for value in values if value >= 0]
    assert {job.reason for job in second if job.status is JobStatus.COMPLETED} == {RESTORED}


def test_failed_jobs_their_dependents_and_jobs_with_changed_arguments_run_again(tmp_path):
    run, log, counter = tmp_path / "run", tmp_path / "log", tmp_path / "counter"

    def script(value: int) -> tuple[corral.Job, ...]:
        with corral.Scheduler(cores=2, journal=run) as sched:
            flaky = sched.submit(journal_driver.fail_first_time, str(counter))
            after = sched.submit(jobs.identity, flaky)
            changed = sched.submit(journal_driver.logged_square, str(log), value)
            sched.wait(timeout=30)
        return flaky, after, changed

    flaky, after, changed = script(5)
    with pytest.raises(RuntimeError, match="failing on purpose, first call"):
        flaky.result()
    assert after.status is JobStatus.CANCELLED
    assert after.reason == f"upstream job {flaky.id} 'fail_first_time' failed"

    flaky, after, changed = script(6)
    assert (flaky.result(), after.result(), changed.result()) == ("call 2", "call 2", 36)
    assert [job.reason for job in (flaky, after, changed)] == [None, None, None]
    assert lines(log) == ["5", "6"]
    assert counter.read_text() == "2"


def test_a_job_run_again_in_a_later_session_keeps_what_its_earlier_run_wrote(tmp_path):
    """Review: a job run again by the next session deleted its earlier run's
    output, where a retry keeps each attempt's as stdout.N."""
    run, counter = tmp_path / "run", tmp_path / "counter"
    command = (f"n=$(cat {counter} 2>/dev/null || echo 1); echo $((n + 1)) > {counter}; "
               "echo run $n; echo err $n >&2; [ $n -ge 2 ]")
    for _ in range(2):
        with corral.Scheduler(cores=1, journal=run) as sched:
            job = sched.shell(command)
            corral.wait([job], timeout=30)
    assert job.status is JobStatus.COMPLETED and job.record.attempts == 2
    directory = Path(corral.Run(run).job(job.id).directory)
    assert (directory / "stdout").read_text() == "run 2\n"
    assert (directory / "stdout.1").read_text() == "run 1\n"
    assert (directory / "stderr.1").read_text() == "err 1\n"


def test_identical_jobs_get_numbered_keys_and_a_job_with_an_id_is_keyed_by_it(tmp_path):
    run, log = tmp_path / "run", tmp_path / "log"

    def script() -> list[corral.Job]:
        with corral.Scheduler(cores=2, journal=run) as sched:
            twins = [sched.submit(journal_driver.logged_square, str(log), 7) for _ in range(2)]
            named = corral.Job(journal_driver.logged_square, (str(log), 8), id="eight")
            sched.dispatch(named)
            sched.wait(timeout=30)
        return [*twins, named]

    first = script()
    assert sorted(lines(log)) == ["7", "7", "8"]
    stored = {job.id: job for job in corral.Scheduler.open(run).jobs()}
    one, two = (stored[job.id].key for job in first[:2])
    assert first[0].id != first[1].id
    assert (one[-2:], two[-2:]) == ("#1", "#2") and one[:-2] == two[:-2]
    assert stored["eight"].key == "id:eight"

    second = script()
    assert sorted(lines(log)) == ["7", "7", "8"]  # none of the three ran again
    assert [job.id for job in second] == [job.id for job in first]
    assert [job.reason for job in second] == [RESTORED] * 3
    assert [job.result() for job in second] == [49, 49, 64]


def test_a_job_whose_id_is_given_to_other_work_is_restored_as_the_id_decides_and_said_so(
        tmp_path, caplog):
    """Cold review (a hypertunity port, trials numbered from a counter): after
    the grid changed, trial 7 returned the old trial 7's result for other
    hyperparameters without a word. The id decides (README: it is how a key
    is given where the digest cannot see, e.g. arguments that pickle
    differently in every process), and the rerun is told, every time."""
    run, log = tmp_path / "run", tmp_path / "log"

    def trial(x: int) -> tuple[int, int]:
        with corral.Scheduler(cores=1, journal=run) as sched:
            job = corral.Job(journal_driver.logged_square, (str(log), x), id=7)
            sched.dispatch(job)
            after = sched.submit(jobs.add, job, 1)
            return job.result(timeout=30), after.result(timeout=30)

    said = ("job 7 'logged_square': restored from the journal, though its function, arguments "
            "or settings are not those of the run that made that result (the id decides; give "
            "it another id, or use a new journal, to run it)")
    assert trial(3) == (9, 10)
    caplog.set_level(logging.WARNING, logger="corral")
    assert trial(3) == (9, 10) and said not in caplog.text  # the same work: restored, quietly
    for _ in range(2):  # (still said at the next rerun: the row names the work of its result)
        caplog.clear()
        assert trial(4) == (9, 10)
        assert said in caplog.text
    assert lines(log) == ["3"]


def test_a_failed_jobs_result_carries_what_its_job_raises_live_collected_and_stored(tmp_path):
    """Cold review (a hypertunity port): a failed script's Result said only
    "exit code 3", and read back from the journal its error lost the stderr
    that said why."""
    script = tmp_path / "fit.py"
    script.write_text("import sys\nprint('loss diverged at epoch 4', file=sys.stderr)\n"
                      "raise SystemExit(3)\n")
    run = tmp_path / "run"
    with corral.Scheduler(cores=2, journal=run) as sched:
        sched.dispatch([corral.Job(str(script), id="fit"),
                        corral.Job(jobs.raise_custom, ("bad input",), id="call"),
                        corral.Job(jobs.square, (3,), id="fine")])
        collected = {result.id: result for result in sched.collect(3, timeout=60)}
        live = sched.submit(jobs.raise_custom, "live one")
        concurrent.futures.wait([live], timeout=60)
        assert isinstance(live.record.error, jobs.CustomError)
        assert str(live.record.error) == "live one"
    stored = {result.id: result for result in corral.Run(run).results()}
    for results in (collected, stored):
        assert results["fine"].error is None and results["fine"].data == 9
        assert isinstance(results["call"].error, jobs.CustomError)
        assert str(results["call"].error) == "bad input"
        failed = results["fit"].error
        assert isinstance(failed, corral.JobFailed) and failed.exit_code == 3
        assert str(failed).endswith("stderr):\nloss diverged at epoch 4"), str(failed)
    assert str(stored["fit"].error).startswith("job fit 'fit.py' FAILED: exit code 3\n"
                                               "last lines of its stderr (")


def test_a_stored_jobs_error_is_a_live_ones_kind_and_its_stderr_is_read_with_care(tmp_path):
    """Re-attack review: a stored timed-out job raised JobFailed where a live one
    raises JobTimedOut; an unreadable stderr raised its OSError; a terminal's
    escapes in stderr went out in the message as they were."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=2, journal=run) as sched:
        slow = sched.options(timeout="0.5s").shell("sleep 30", name="slow")
        loud = sched.shell("printf 'red \\033[31m\\000 end\\n' >&2; exit 2", name="loud")
        hidden = sched.shell("echo why >&2; exit 3", name="hidden")
        corral.wait([slow, loud, hidden], timeout=60)
    stderr = Path(corral.Run(run).job(hidden.id).directory) / "stderr"
    stderr.unlink()
    stderr.mkdir()
    stored = {result.name: result.error for result in corral.Run(run).results()}
    assert isinstance(stored["slow"], corral.JobTimedOut)
    assert str(stored["loud"]).endswith("stderr):\nred \\x1b[31m\\x00 end")
    assert isinstance(stored["hidden"], corral.JobFailed)
    assert re.search(r"FAILED: exit code 3\n\(its stderr, .*/stderr, cannot be read: Is a "
                     r"directory\)$", str(stored["hidden"]))


def test_a_stored_error_this_process_cannot_load_is_said_with_its_traceback(tmp_path):
    """Review of the day's diff: it came back as a plain "FAILED: raised ..."
    with the stderr's tail, where the live error keeps the worker's traceback."""
    import dataclasses
    import pickle

    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        corral.wait([sched.submit(jobs.raise_custom, "bad")], timeout=60)
    [stored] = corral.Run(run).jobs()
    # As the worker sends one whose class could not travel: its name, text and traceback.
    travelled = pickle.dumps((None, "Traceback (most recent call last):\n  in fit\nBoom: bad\n",
                              "Boom: bad"))
    with pytest.raises(corral.JobFailed) as raised:
        dataclasses.replace(stored, error=travelled).result_value()
    assert str(raised.value) == ("job 1 'raise_custom' raised Boom: bad\n"
                                 "Traceback (most recent call last):\n  in fit\nBoom: bad\n")


def test_a_result_whose_error_cannot_be_pickled_is_still_saved_and_copied():
    """Re-attack review: a Result holding an exception whose __init__ takes
    other arguments than it keeps could no longer be pickled or deep-copied."""
    import copy
    import pickle

    class KeywordOnly(Exception):
        def __init__(self, n: int, *, where: str) -> None:
            super().__init__(n)
            self.where = where

    result = corral.Result(7, "fit", None, corral.JobStatus.FAILED, 1, 1.0, 2.0, 1,
                           "raised KeywordOnly: 3", error=KeywordOnly(3, where="here"))
    saved = pickle.loads(pickle.dumps(result))
    assert isinstance(saved.error, corral.JobFailed)
    assert re.fullmatch(r"job 7 'fit' raised .*KeywordOnly: 3 \(an exception that cannot be "
                        r"pickled, said here in words\)", str(saved.error))
    assert saved == result  # (errors are not compared: each read makes its own)
    assert copy.deepcopy(result).error is result.error is copy.copy(result).error


def test_a_jobs_meta_is_journaled_and_given_back_by_results_and_corral_status(tmp_path):
    """Cold review (a hypertunity port): a finished search could not be read
    back with the hyperparameters each trial carried as its meta."""
    run = tmp_path / "run"

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque trial settings>"

    with corral.Scheduler(cores=1, journal=run) as sched:
        trial = corral.Job(jobs.square, (3,), id="trial-1", meta={"lr": 0.1, "depth": [2, 3]})
        other = corral.Job(jobs.square, (4,), meta=Opaque())
        sched.dispatch([trial, other])
        live = {result.id: result.meta for result in sched.collect(2, timeout=30)}
    assert live["trial-1"] == {"lr": 0.1, "depth": [2, 3]} and isinstance(live[other.id], Opaque)
    stored = {result.id: result.meta for result in corral.Run(run).results()}
    assert stored == {"trial-1": {"lr": 0.1, "depth": [2, 3]},
                      other.id: "<opaque trial settings>"}  # not plain data: its repr
    from corral.journal.codec import meta_record  # what else comes back, and how much

    assert json.loads(meta_record({"lr": 0.1, "at": Opaque()})) == {
        "lr": 0.1, "at": "<opaque trial settings>"}  # (attack review: the dict was lost)
    assert json.loads(meta_record({"lr": math.nan})) == "{'lr': nan}"
    assert len(meta_record({"big": "x" * 1_000_000})) < 1000  # (10 MB a job, read by all)
    from support.cli import Corral

    shown = Corral(tmp_path / "home", run)("status", "trial-1", str(other.id))
    assert 'job trial-1 \'square\' meta: {"lr": 0.1, "depth": [2, 3]}' in shown.out
    assert f"job {other.id} 'square' meta: <opaque trial settings>" in shown.out


def test_corral_status_of_a_completed_job_shows_its_result_if_plain_data_and_runs_no_code(
        tmp_path):
    """Cold review: what a command left in $CORRAL_RESULT_FILE could be read only
    from Python. A value that is not plain data is named, never loaded: loading
    a pickle may run anything it names."""
    from support.cli import Corral

    run, trap = tmp_path / "run", tmp_path / "trap"
    with corral.Scheduler(cores=1, journal=run) as sched:
        plain = sched.submit(jobs.square, 12)
        command = sched.shell('echo \'{"loss": 0.25, "ok": true}\' > "$CORRAL_RESULT_FILE"')
        trapped = sched.submit(jobs.trap_for_loaders, str(trap))
        corral.wait([plain, command, trapped], timeout=60)
    trap.unlink()  # (made as the driver took the result: as any Python would)
    shown = Corral(tmp_path / "home", run)("status", *(str(job.id) for job in
                                                         (plain, command, trapped)))
    assert f"job {plain.id} 'square' result: 144\n" in shown.out
    assert f"job {command.id} 'echo' result: {{\"loss\": 0.25, \"ok\": true}}\n" in shown.out
    assert (f"job {trapped.id} 'trap_for_loaders' result: not plain data (its pickle names "
            f"io.open): not loaded here, which would run its code; in Python: "
            f"corral.Run(RUN).job('{trapped.id}').result_value()") in shown.out
    assert not trap.exists()


def test_a_dependent_of_a_restored_job_receives_the_restored_value(tmp_path):
    run, log = tmp_path / "run", tmp_path / "log"
    with corral.Scheduler(cores=2, journal=run) as sched:
        assert sched.submit(journal_driver.logged_square, str(log), 3).result(timeout=30) == 9

    with corral.Scheduler(cores=2, journal=run) as sched:
        base = sched.submit(journal_driver.logged_square, str(log), 3)
        plus = sched.submit(jobs.add, base, 100)
        echo = sched.shell(["echo", "base is", base])
        assert plus.result(timeout=30) == 109
        echo.result(timeout=30)
    assert base.reason == RESTORED
    assert (plus.reason, plus.attempts) == (None, 1)  # it ran, with the stored value
    assert echo.stdout == "base is 9\n"
    assert lines(log) == ["3"]


def test_a_restored_result_is_unpickled_once(tmp_path):
    """A resumed run unpickled each restored result twice, once to check that
    it loads and once to hand it over (hostile-input review: a large result
    took twice its time)."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        assert sched.submit(jobs.counted_load, 7).result(timeout=30).value == 7
    jobs.LOADS_COUNTED[0] = 0
    with corral.Scheduler(cores=1, journal=run) as sched:
        again = sched.submit(jobs.counted_load, 7)
        assert again.result(timeout=30).value == 7
    assert again.reason == RESTORED
    assert jobs.LOADS_COUNTED[0] == 1


def test_a_rerun_leaves_the_results_of_restored_jobs_as_the_journal_holds_them(tmp_path):
    """Attack review: each rerun wrote every restored job's result into the
    journal again (a 400 MB one took 11 s of its shutdown). A trigger in the
    journal counts the writes of a result (an update of it, or its row made
    again): a rerun that restores makes none, and the results read back are
    whole."""
    run = tmp_path / "run"
    for rerun in (False, True):
        with corral.Scheduler(cores=1, journal=run) as sched:
            made = [sched.submit(jobs.square, value) for value in range(5)]
            assert [job.result(timeout=30) for job in made] == [0, 1, 4, 9, 16]
            assert [job.reason == RESTORED for job in made] == [rerun] * 5
        if not rerun:
            with contextlib.closing(sqlite3.connect(run / "journal.db")) as db, db:
                db.executescript(  # (a row made again is inserted: its result with it)
                    "CREATE TABLE result_writes (id TEXT); CREATE TRIGGER result_written "
                    "AFTER UPDATE OF result ON jobs BEGIN INSERT INTO result_writes "
                    "VALUES (new.id); END; CREATE TRIGGER row_made AFTER INSERT ON jobs "
                    "BEGIN INSERT INTO result_writes VALUES (new.id); END;")
    with contextlib.closing(sqlite3.connect(run / "journal.db")) as db:
        assert db.execute("SELECT count(*) FROM result_writes").fetchone() == (0,)
    assert [job.result_value() for job in corral.Run(run).jobs()] == [0, 1, 4, 9, 16]


USER_SCRIPT = """\
import sys
import corral

def logged_square(log, value):
    with open(log, "a") as handle:
        handle.write(f"{value}\\n")
    return value * value

with corral.Scheduler(cores=1, journal=sys.argv[1]) as scheduler:
    print([scheduler.submit(logged_square, sys.argv[2], value).result() for value in (2, 3)])
"""


def test_a_comment_added_at_the_top_of_a_script_does_not_run_its_jobs_again(tmp_path):
    """BUG: a job's key digests its function's code object whole (marshal), line
    numbers and file name included, so adding an import or a comment above a
    function makes every job defined below it run again."""
    script, run, log = tmp_path / "analysis.py", tmp_path / "run", tmp_path / "log"

    def run_script(text: str) -> str:
        script.write_text(text)
        done = subprocess.run([sys.executable, str(script), str(run), str(log)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run_script(USER_SCRIPT) == "[4, 9]\n"
    assert run_script(USER_SCRIPT) == "[4, 9]\n"
    assert lines(log) == ["2", "3"]  # the same script: nothing ran again
    assert run_script("# load the results of yesterday's run\n" + USER_SCRIPT) == "[4, 9]\n"
    assert lines(log) == ["2", "3"], "the edited script ran its completed jobs again"


def _run_driver(tmp_path: Path, *args: str) -> str:
    """Run ``tmp_path/driver.py`` with *args*, the test's own modules in
    *tmp_path* importable (and no bytecode cached: they are edited between
    runs); return what it printed."""
    done = subprocess.run([sys.executable, str(tmp_path / "driver.py"), *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
                               "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"})
    assert done.returncode == 0, done.stderr
    return done.stdout


FIXABLE_SCRIPT = """\
import sys
import corral

def analyse(x):
    if x == 3:
        raise ValueError("bad 3")
    return x * 10

with corral.Scheduler(cores=2, journal=sys.argv[1]) as scheduler:
    results = [scheduler.submit(analyse, x) for x in range(5)]
    scheduler.wait(timeout=60)
    print([job.id for job in results])
"""


def test_a_fixed_function_runs_again_in_the_place_of_its_failed_jobs(tmp_path):
    """BUG (cold review): after the function of a failed job was fixed, the
    rerun ran every job under new ids and left the failed one's row beside
    them: `corral status` and `corral wait` said the run failed, forever. A
    job whose code changed now takes the id of the earlier job of the same
    call (its slot), and counts its tries on."""
    from support.cli import Corral

    script, run = tmp_path / "analysis.py", tmp_path / "run"
    cli = Corral(tmp_path / "home", run)

    def run_script(text: str) -> str:
        script.write_text(text)
        done = subprocess.run([sys.executable, str(script), str(run)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = run_script(FIXABLE_SCRIPT)
    assert cli("status").status == 1
    fixed = FIXABLE_SCRIPT.replace('raise ValueError("bad 3")', "x = 3")
    assert run_script(fixed) == first  # the same ids
    rows = cli("status", "--all").rows()
    assert [(row["STATUS"], row["TRIES"]) for row in rows.values()] == [("COMPLETED", "2")] * 5
    assert len(rows) == 5
    assert cli("wait").status == 0
    assert cli("status").status == 0
    assert run_script(fixed) == first  # and a third run restores them all
    assert [job.result_value() for job in corral.Run(run).jobs()] == [0, 10, 20, 30, 40]
    assert [job.attempts for job in corral.Run(run).jobs()] == [2] * 5


FACTORY_SCRIPT = """\
import functools, sys
import corral, steps

def make(c):
    def g(x):
        if c:
            raise ValueError("not yet")
    return g

with corral.Scheduler(cores=2, journal=sys.argv[1]) as scheduler:
    made = [scheduler.submit(make(c), 1) for c in (1, 2, 3)]
    made += [scheduler.submit(lambda x, c=c: x / 0, 1) for c in (10, 20)]
    made.append(scheduler.submit(functools.partial(steps.scale, 7), 1))
    scheduler.wait(timeout=60)
    print([job.id for job in made])
"""


def test_closures_lambdas_and_partials_fixed_run_again_in_their_places(tmp_path):
    """BUG (attack review): jobs of closures made by one factory, of lambdas
    made in a loop, share a slot: all of them took the one latest row, and a
    fix left the others FAILED. A partial's slot held a memory address, new
    every run."""
    from support.cli import Corral

    module, run, driver = tmp_path / "steps.py", tmp_path / "run", tmp_path / "driver.py"
    cli = Corral(tmp_path / "home", run)

    def run_with(script: str, body: str) -> str:
        driver.write_text(script)
        module.write_text(f"def scale(factor, value):\n    {body}\n")
        return _run_driver(tmp_path, str(run))

    ids = run_with(FACTORY_SCRIPT, "raise ValueError('not yet')")
    assert cli("wait").status == 1
    fixed = FACTORY_SCRIPT.replace('raise ValueError("not yet")', "return c * x").replace(
        "x / 0", "c * x")  # (each closure reads its c before and after the fix)
    assert run_with(fixed, "return factor * value") == ids
    stored = corral.Run(run).jobs()
    assert [(job.status, job.attempts) for job in stored] == [(JobStatus.COMPLETED, 2)] * 6
    assert [job.result_value() for job in stored] == [1, 2, 3, 10, 20, 7]
    assert cli("wait").status == 0


PARTIALS_SCRIPT = """\
import functools, sys
import corral, steps

with corral.Scheduler(cores=2, journal=sys.argv[1]) as scheduler:
    made = [scheduler.submit(functools.partial(steps.train, sys.argv[2], rate=rate), 1)
            for rate in map(float, sys.argv[3].split(","))]
    print([(job.id, job.result(timeout=60), job.attempts) for job in made])
"""


def test_a_new_partial_before_unchanged_ones_runs_alone(tmp_path):
    """BUG (attack review, round 3): partials of one function differ in their
    bound arguments only, and those were no part of their slot: a new call
    put before the others took the first one's place, which took the
    second's, and so on; every unchanged call ran again."""
    (tmp_path / "steps.py").write_text(
        "def train(log, x, rate):\n"
        "    with open(log, 'a') as handle:\n"
        "        handle.write(f'{rate}\\n')\n"
        "    return x * rate\n")
    run, log = tmp_path / "run", tmp_path / "log"
    (tmp_path / "driver.py").write_text(PARTIALS_SCRIPT)

    def run_with(rates: str) -> str:
        return _run_driver(tmp_path, str(run), str(log), rates)

    assert run_with("0.1,0.2,0.3") == "[(1, 0.1, 1), (2, 0.2, 1), (3, 0.3, 1)]\n"
    assert run_with("0.05,0.1,0.2,0.3") == "[(4, 0.05, 1), (1, 0.1, 1), (2, 0.2, 1), (3, 0.3, 1)]\n"
    assert sorted(lines(log)) == ["0.05", "0.1", "0.2", "0.3"]  # each ran once


def test_a_partial_of_an_edited_function_runs_again(tmp_path):
    """BUG (attack review): a functools.partial was keyed by its pickle, which
    names its function only: after the function's body changed, a rerun
    restored the results of the old code."""
    module, run = tmp_path / "steps.py", tmp_path / "run"
    script = ("import functools, sys\nimport corral, steps\n"
              "with corral.Scheduler(cores=1, journal=sys.argv[1]) as scheduler:\n"
              "    print(scheduler.submit(functools.partial(steps.scale, 2), 5).result())\n")
    (tmp_path / "driver.py").write_text(script)

    def run_with(body: str) -> str:
        module.write_text(f"def scale(factor, value):\n    return {body}\n")
        return _run_driver(tmp_path, str(run))

    assert run_with("factor * value") == "10\n"
    assert run_with("factor * value") == "10\n"
    assert run_with("factor + value") == "7\n"


# -- 3. reading a run: Scheduler.open ---------------------------------------------------------


def test_a_driver_stopped_with_ctrl_z_is_named_at_once_and_gets_no_request_behind_its_back(
        tmp_path):
    """A command sent to a script suspended with Ctrl-Z (SIGSTOP here) waited
    60 s for an answer that could not come. It is now told within a second or
    so that the driver is stopped and how to continue it; `corral status`
    says so too, and the request is not carried out once the driver runs again."""
    from support.cli import Corral, assert_one_line_error

    run, release = tmp_path / "run", tmp_path / "release"
    cli = Corral(tmp_path / "home", run)
    driver = start_driver(tmp_path, "mixed", run, release)
    try:
        wait_until(lambda: (run / "control.sock").exists() and JobStatus.RUNNING in [
            job.status for job in corral.Scheduler.open(run).jobs()][3:4],
            message="the driver serving, its job 4 running")
        os.kill(driver.pid, signal.SIGSTOP)
        wait_until(lambda: psutil.Process(driver.pid).status() == psutil.STATUS_STOPPED)
        told = cli("pause", timeout=30)  # (not the 60 s of a driver that is only busy)
        assert_one_line_error(told, 3, (
            rf"the process driving {re.escape(str(run))} \(pid {driver.pid}\) is stopped "
            rf"\(Ctrl-Z, SIGSTOP or a debugger\) and answers nothing until it runs again "
            rf"\(kill -CONT {driver.pid}, or fg in the terminal it runs in\); it will not "
            r"carry out this request unless it had already begun it: see corral status$"))
        # Its queue of connections full of callers that gave up (attack review 2:
        # 60 s then "too busy"), the next is still told at once that it is stopped.
        import socket
        from corral.control.server import _socket_path

        queued = []
        try:
            with _socket_path(run) as path:
                for _ in range(200):
                    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    client.setblocking(False)
                    try:
                        client.connect(path)
                    except BlockingIOError:
                        client.close()
                        break
                    queued.append(client)
            assert "is stopped" in cli("pause", timeout=30).err
        finally:
            for client in queued:
                client.close()
        assert cli("status").header == (
            f"run {run}: driven by script pid {driver.pid}; the driver is STOPPED (Ctrl-Z or "
            "SIGSTOP): it starts no job and answers no command until it runs again (kill -CONT "
            f"{driver.pid})")
        # (Attack review: a wait counted time without a word, without a terminal nothing.)
        waited = cli("wait", "--timeout", "3", timeout=30)
        assert waited.err.startswith(
            f"corral: the run's driver (pid {driver.pid}) is STOPPED (Ctrl-Z or SIGSTOP): no job "
            f"goes on until it runs again (kill -CONT {driver.pid})\n"), waited.err
        os.kill(driver.pid, signal.SIGCONT)
        wait_until(lambda: psutil.Process(driver.pid).status() != psutil.STATUS_STOPPED)
        assert send_request(run, {"verb": "ping"})["ok"]  # it serves again, and so:
        assert cli("status").header == f"run {run}: driven by script pid {driver.pid}"
        release.touch()
        assert finish(driver, tmp_path).endswith("finished\n")
    finally:
        if driver.poll() is None:  # (a failed assertion above)
            driver.kill()
            driver.wait()


def test_a_run_whose_lock_file_was_deleted_is_still_refused_while_its_driver_runs(tmp_path):
    """Attack review: an `rm owner.lock` (a "stale lock" cleaned by hand) let a second
    driver take the run the first still drove; jobs ran twice at once. A copy of the
    running run is no such run, and is taken."""
    run, release = tmp_path / "run", tmp_path / "release"
    driver = start_driver(tmp_path, "mixed", run, release)
    try:
        wait_until(lambda: (run / "control.sock").exists() and any(
            job.status is JobStatus.RUNNING for job in corral.Scheduler.open(run).jobs()),
            message="the driver to run a job")
        shutil.copytree(run, tmp_path / "copy", ignore=shutil.ignore_patterns("control.sock"))
        (run / "owner.lock").unlink()
        with pytest.raises(RunInUse) as refused:
            corral.Scheduler(cores=1, journal=run)
        assert str(refused.value) == (
            f"run directory {run} is driven by another process (script, pid {driver.pid}), "
            "though its owner.lock was taken away: control it with the corral command, or end "
            f"it first (kill {driver.pid}); never delete the lock of a run that runs")
        with corral.Scheduler(cores=1, journal=tmp_path / "copy"):
            pass  # (its driver's files are in the original)
    finally:
        release.touch()
    assert finish(driver, tmp_path).splitlines()[-1] == "finished"


def test_a_run_is_read_from_another_process_while_it_goes_on_and_after_it_ended(tmp_path):
    run, release = tmp_path / "run", tmp_path / "release"
    driver = start_driver(tmp_path, "mixed", run, release)
    try:
        def blocked_with_the_rest_finished() -> bool:
            if not (run / "control.sock").exists():  # the driver is not serving yet
                return False
            statuses = [job.status for job in corral.Scheduler.open(run).jobs()]
            return statuses == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED,
                                JobStatus.RUNNING, JobStatus.WAITING]
        wait_until(blocked_with_the_rest_finished, message="job 4 running, 1-3 finished")
        mid = corral.Scheduler.open(run)

        assert [job.id for job in mid.jobs()] == [1, 2, 3, 4, 5]
        assert [job.id for job in mid.jobs("finished")] == [1, 2, 3]
        assert [job.id for job in mid.jobs("active")] == [4]
        assert [job.id for job in mid.jobs("pending")] == [5]
        assert [job.id for job in mid.jobs("RUNNING")] == [4]
        assert [job.id for job in mid.jobs(JobStatus.FAILED)] == [2]
        with pytest.raises(ValueError, match=r"unknown status 'bogus'; use a JobStatus or one "
                                             r"of: new, waiting, .*finished"):
            mid.jobs("bogus")
        # (cold review: "queued" was listed twice, and a CustomXepr user asks for "aborted")
        with pytest.raises(ValueError, match=r"one of: new, waiting, queued, submitted, running, "
                                             r"completed, failed, cancelled, timed_out, active, "
                                             r"done, finished, history, pending; an aborted job is "
                                             r"CANCELLED, its reason 'aborted'$"):
            mid.jobs("aborted")

        assert mid.job(1).result_value() == 49 and mid.job("1").name == "square"
        # (submitit review: None, as if the running job had returned None)
        with pytest.raises(concurrent.futures.InvalidStateError,
                           match=r"^job 4 .* has not finished \(RUNNING when the journal last "
                                 r"heard of it\): it has no value yet$"):
            mid.job(4).result_value()
        with pytest.raises(jobs.CustomError, match="bad input") as raised:
            mid.job(2).result_value()
        assert isinstance(raised.value.__cause__, RemoteTraceback)
        assert "raise_custom" in str(raised.value.__cause__)
        assert mid.job(3).output("stdout") == "py-out hello\nchild-out hello\n"
        assert mid.job(3).output("stderr") == "py-err hello\nchild-err hello\n"
        # As a live Job gives them (cold review: a stored job had another API).
        assert (mid.job(3).stdout, mid.job(3).stderr) == ("py-out hello\nchild-out hello\n",
                                                          "py-err hello\nchild-err hello\n")
        with pytest.raises(ValueError, match="stream='log' must be 'stdout' or 'stderr'"):
            mid.job(3).output("log")
        assert mid.job(5).deps == (4,)
        with pytest.raises(KeyError, match=f"no job 99 in the run at {run} \\(5 jobs\\)"):
            mid.job(99)
        assert [(r.id, r.status, r.data) for r in mid.results()] == [
            (1, JobStatus.COMPLETED, 49), (2, JobStatus.FAILED, None),
            (3, JobStatus.COMPLETED, "hello")]
        assert mid.owner is not None and (mid.owner["pid"], mid.owner["kind"]) == (
            driver.pid, "script")
        assert mid.paused is False
        with pytest.raises(RunInUse, match=f"run directory {run} is driven by another process "
                                           f"\\(script, pid {driver.pid}\\)"):
            corral.Scheduler(cores=1, journal=run)
    finally:
        release.touch()
    assert finish(driver, tmp_path).splitlines()[-1] == "finished"

    after = corral.Scheduler.open(run)
    assert [job.status for job in after.jobs()] == [
        JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED, JobStatus.COMPLETED,
        JobStatus.COMPLETED]
    assert after.job(5).result_value() == "late"
    assert after.owner is None
    moves = [(old, new) for _, _, old, new, _ in after.events(1)]
    assert moves == [("new", "queued"), ("queued", "submitted"), ("submitted", "running"),
                     ("running", "completed")]
    assert [(old, new) for _, _, old, new, _ in after.events(5)] == [
        ("new", "waiting"), ("waiting", "queued"), ("queued", "submitted"),
        ("submitted", "running"), ("running", "completed")]
    times = [row[1] for row in after.events()]
    assert times == sorted(times)
    assert {row[0] for row in after.events()} == {"1", "2", "3", "4", "5"}
    assert after.events(2)[-1][3:] == ("failed", "raised CustomError: bad input")
    assert after.events("2") == after.events(2)
    with pytest.raises(KeyError, match=r"no job 99 in the run at .* \(5 jobs\)"):
        after.events(99)  # (cold review: an empty list, as if nothing had happened to it)


def _as_an_older_journal(run: Path) -> int:
    """Rewrite *run*'s journal as corral wrote it before batches of changes:
    one ``events`` row per change, no ``event_batches`` table; return the rows."""
    from corral.journal import eventlog

    database = sqlite3.connect(run / "journal.db")
    changes = list(eventlog.read_events_from(database))
    database.executemany("INSERT INTO events (job_id, time, old, new, reason) "
                         "VALUES (?, ?, ?, ?, ?)", changes)
    database.execute("DROP TABLE event_batches")
    database.execute("DELETE FROM meta WHERE key = 'events'")
    database.commit()
    database.close()
    return len(changes)


def test_an_older_journals_changes_are_read_and_a_new_session_adds_its_own_after_them(
        tmp_path):
    """Journals kept every change as a row of its own before changes were
    batched; a new corral reads them, resumes from them, and appends."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=2, journal=run) as sched:
        for value in range(12):  # ids 1..12: "1" is inside "11" and "12" as text
            sched.submit(abs, -value)
    assert _as_an_older_journal(run) == 12 * 4
    older = corral.Scheduler.open(run)
    assert [(old, new) for _, _, old, new, _ in older.events(1)] == [
        ("new", "queued"), ("queued", "submitted"), ("submitted", "running"),
        ("running", "completed")]

    with corral.Scheduler(cores=2, journal=run) as sched:
        again = [sched.submit(abs, -value) for value in range(12)]
        added = corral.Job(abs, (-12,), id="added")
        sched.dispatch(added)
    assert [job.result() for job in again] == list(range(12))
    assert {job.reason for job in again} == {RESTORED}  # nothing ran twice
    assert added.result() == 12
    after = corral.Scheduler.open(run)
    events = after.events()
    assert {row[0] for row in events[:48]} == {str(number) for number in range(1, 13)}
    later = events[48:]  # this session's: the restorations, and the new job's four
    assert sorted((job_id, old, new, reason) for job_id, _, old, new, reason in later
                  if job_id != "added") == sorted(
        (str(number), "new", "completed", RESTORED) for number in range(1, 13))
    assert len(later) == 12 + 4
    assert [job_id for job_id, *_ in after.events(1)] == ["1"] * 5  # not 11's, nor 12's
    assert [new for _, _, _, new, _ in after.events("added")] == [
        "queued", "submitted", "running", "completed"]


def test_a_reader_that_follows_an_older_journal_reads_its_rows_once(tmp_path):
    """Re-attack review: `corral events --follow` on a journal from before the
    batches printed its whole history again at every poll, while the new
    session had written no batch yet."""
    from corral.journal import eventlog

    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        for value in range(3):
            sched.submit(abs, -value)
    assert _as_an_older_journal(run) == 3 * 4
    database = sqlite3.connect(run / "journal.db")
    database.execute(eventlog.CREATE_TABLE)  # as a new session makes it, before its first batch
    first, seq = eventlog.changes_after(database, 0, None, with_older=True)
    assert len(first) == 12 and seq == 0
    assert eventlog.changes_after(database, seq, None) == ([], 0)
    latest, more, last = eventlog.latest_changes(database, 5, {"1", "3"})
    assert (len(latest), more, last) == (5, True, 0)
    assert sorted(job_id for job_id, *_ in latest) == ["1", "3", "3", "3", "3"]
    database.close()


def _damaged_journal(tmp_path: Path, *statements: str, values: Sequence[int] = (-1,)) -> Path:
    """A run of ``abs(value)`` calls, one per value (ids 1, 2...), all finished,
    whose journal *statements* (SQL) then damage; returns the run directory."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        for value in values:
            sched.submit(abs, value).result()
    database = sqlite3.connect(run / "journal.db")
    for statement in statements:
        database.execute(statement)
    database.commit()
    database.close()
    return run


@pytest.mark.parametrize(("damage", "said"), [
    ("moves = substr(moves, 2)", r"is damaged: (\d+) jobs, \1 times, \d+ status bytes"),
    ("jobs = '[]'", r"is damaged: 0 jobs, \d+ times, \d+ status bytes"),
    ("jobs = NULL", "is damaged: its columns hold NoneType, bytes and bytes, not text, blob "
                    "and blob"),
    ("moves = 42", "is damaged: its columns hold str, bytes and int, not text, blob and blob"),
    ("jobs = '[\"1\", '", "does not decode: Expecting value"),
    ("jobs = '[1]'", "is damaged: its job ids are not a list of strings"),
    ("times = substr(times, 1, 13)", "does not decode: bytes length not a multiple of item size"),
    ("moves = CAST(x'09' || substr(moves, 2) AS BLOB)", "has an unknown status code 9"),
    ("reasons = '[1'", "has reasons that do not decode"),
    ("moves = CAST(substr(moves, 1, 1) || x'ff' || substr(moves, 3) AS BLOB)",
     "has an unknown status code 255"),
    ("reasons = '{\"0\": 5}'", "is damaged: a reason is not text"),
    ("times = CAST(substr(times, 1, 8) || x'000000000000f07f' || substr(times, 17) AS BLOB)",
     "is damaged: a time is not a number"),
], ids=["a status byte short", "no ids", "ids NULL", "moves a number", "ids not JSON",
        "ids not text", "times cut", "an unknown status", "reasons not JSON",
        "no status as the new one", "a reason not text", "an infinite time"])
def test_a_damaged_batch_of_changes_is_named_when_read_and_when_resumed(tmp_path, damage, said):
    """Attack review: a damaged batch stopped a resumed run with a raw
    TypeError or IndexError, and a report with one; a NULL id list was skipped
    when one job's changes were read, so its timeline lost a change silently."""
    run = _damaged_journal(tmp_path, f"UPDATE event_batches SET {damage} "
                                     "WHERE seq = (SELECT min(seq) FROM event_batches)")
    named = f"^{re.escape(str(run / 'journal.db'))}: a batch of state changes {said}"
    with pytest.raises(corral.JournalError, match=named + ".*; move it away to start the run "
                                                          "afresh$"):
        corral.Scheduler.open(run).events()
    with pytest.raises(corral.JournalError, match=named):
        corral.Scheduler.open(run).events(1)
    with pytest.raises(corral.JournalError, match=named):
        corral.Scheduler(cores=1, journal=run)  # a rerun: nothing runs on a misread history
    assert corral.Scheduler.open(run).jobs()[0].status is JobStatus.COMPLETED  # the rest reads


def test_a_journal_that_keeps_its_changes_in_a_way_unknown_here_is_refused(tmp_path):
    run = _damaged_journal(tmp_path, "UPDATE meta SET value = 'rows' WHERE key = 'events'")
    message = (f"^{re.escape(str(run / 'journal.db'))} keeps its state changes as 'rows', which "
               r"this corral does not read \(a newer corral's journal, or a damaged one\)$")
    with pytest.raises(corral.JournalError, match=message):
        corral.Scheduler.open(run).events()
    with pytest.raises(corral.JournalError, match=message):
        corral.Scheduler(cores=1, journal=run)


def test_a_journal_that_lost_its_table_of_changes_is_refused(tmp_path):
    """Attack review: a new journal without its event_batches table was read as
    one from before batches (no changes at all), and a rerun made the table anew."""
    run = _damaged_journal(tmp_path, "DROP TABLE event_batches")
    message = (f"^{re.escape(str(run / 'journal.db'))} is not a whole corral journal: it keeps "
               "its state changes in batches, and has no event_batches table; move it away")
    with pytest.raises(corral.JournalError, match=message):
        corral.Scheduler.open(run).events()
    with pytest.raises(corral.JournalError, match=message):
        corral.Scheduler(cores=1, journal=run)


def test_opening_a_path_without_a_journal_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no run directory {tmp_path / 'nowhere'}"):
        corral.Scheduler.open(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError,
                       match=f"{tmp_path} holds no corral journal \\(journal.db\\)"):
        corral.Scheduler.open(tmp_path)


def test_opening_a_workdir_for_its_results_says_a_journal_keeps_them(tmp_path):
    """Cold review, a submitit user: AutoExecutor(folder) became
    Scheduler(workdir=folder), and Scheduler.open(folder) said only that no
    journal was there."""
    with corral.Scheduler(cores=1, workdir=tmp_path / "folder") as scheduler:
        scheduler.submit(abs, -1).result(timeout=30)
    with pytest.raises(FileNotFoundError) as raised:
        corral.Scheduler.open(tmp_path / "folder").results()
    assert str(raised.value) == (
        f"{tmp_path / 'folder'} holds no corral journal (journal.db): a run is journaled where "
        "Scheduler(journal=DIR) or `corral --run DIR submit` puts it (Scheduler(workdir=DIR) "
        "keeps only the jobs' files)")


def test_a_run_read_while_its_driver_creates_the_journal_has_no_jobs_yet(tmp_path):
    """BUG: between creating journal.db and creating its tables, a starting driver
    leaves an empty SQLite database; a reader polling then (`corral status`, or
    Scheduler.open) got ``sqlite3.OperationalError: no such table: jobs``. Seen
    for real while polling a starting driver; this recreates that moment."""
    import fcntl

    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    # The starting driver holds the run (else: damaged).
    with open(run / "owner.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        database = sqlite3.connect(run / "journal.db")
        database.execute("PRAGMA journal_mode=WAL")
        database.close()

        starting = corral.Scheduler.open(run)
        assert starting.jobs() == []
        assert starting.results() == []
        assert starting.events() == []
        assert starting.paused is False


# -- 4. privacy -----------------------------------------------------------------------------


def test_everything_in_a_run_directory_is_private_even_under_umask_0(tmp_path):
    run = tmp_path / "run"
    with open(tmp_path / "driver.out", "w") as sink:
        subprocess.run([sys.executable, str(DRIVER), "private", str(run)], stdout=sink,
                       stderr=subprocess.STDOUT, umask=0, timeout=60, check=True)

    modes = {os.path.relpath(path, run): stat.S_IMODE(os.lstat(path).st_mode)
             for path in [run, *run.rglob("*")]}
    assert {"journal.db", "corral.log", "owner.lock", "1/stdout", "1/stderr",
            "2/stdout", "2/stderr"} <= set(modes)
    assert Path(run / "2" / "stdout").read_text() == "command output\n"
    directories = {name for name in modes if os.path.isdir(run / name)}
    assert directories == {".", "1", "2"}
    assert {name: oct(mode) for name, mode in modes.items()
            if mode != (0o700 if name in directories else 0o600)} == {}


def test_a_run_directory_that_others_may_enter_is_made_private(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(run, 0o755)
    with corral.Scheduler(cores=1, journal=run) as sched:
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        assert sched.run_dir == run


def _on_a_read_only_mount(run: Path, *argv: str) -> subprocess.CompletedProcess:
    """Run *argv* with *run* mounted read-only at ``<run>-ro``, in a mount
    namespace of its own: nothing is left mounted, whatever happens."""
    view = Path(f"{run}-ro")
    view.mkdir(exist_ok=True)
    script = (f'mount --bind "{run}" "{view}" && mount -o remount,ro,bind "{view}" && '
              f'exec "$@"')
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", *argv],
                          capture_output=True, text=True, timeout=60)


FULL_DISK_PROGRAM = """
import sys, corral
sys.path.insert(0, sys.argv[2])
import jobs
with corral.Scheduler(cores=1, journal=sys.argv[1]) as sched:
    moved = sched.submit(jobs.print_bytes, 1_800_000)  # (renamed, not copied: it fits)
    big = sched.submit(jobs.print_bytes, 4_000_000)
    small = sched.submit(jobs.talk, "after")
    corral.wait([moved, big, small], timeout=60)
print(moved.status.name, len(moved.stdout))
print(big.status.name, big.exception())
print(small.status.name, repr(small.stdout))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT TESTED: a tmpfs mount needs root (run "
                                              "the suite as root to cover it)")
def test_output_that_fills_the_disk_fails_its_job_and_frees_the_disk_for_the_next(tmp_path):
    """Attack review: the worker's spool kept what could not be saved, so the
    disk stayed full and every later job failed too (its output appended to
    the lost one's). On a 3 MB tmpfs of the test's own mount namespace."""
    small_disk = tmp_path / "small"
    small_disk.mkdir()
    script = f'mount -t tmpfs -o size=3m tmpfs "{small_disk}" && exec "$@"'
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", sys.executable, "-c",
                           FULL_DISK_PROGRAM, str(small_disk / "run"), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == [
        "COMPLETED 1800000",
        "FAILED cannot save the job's output: [Errno 28] No space left on device",
        "COMPLETED 'py-out after\\nchild-out after\\n'"], done.stderr


#: What the programs below begin with: fill(path, chunk) writes *chunk* bytes at a
#: time to *path* until the disk has no room for more.
FILL = """
def fill(path, chunk=1 << 16):
    with open(path, "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(bytes(chunk))
        except OSError:
            pass
"""


FILLED_THEN_FREED_PROGRAM = FILL + """
import os, sys, time, corral
run, pad = sys.argv[1], os.path.join(os.path.dirname(sys.argv[1]), "pad")
with corral.Scheduler(cores=1, journal=run) as sched:
    first = sched.shell("sleep 0.5", name="first")
    fill(pad)  # the disk full while it runs
    second = sched.shell("true", name="second")
    try:
        sched._journal.flush(wait=True)
    except corral.CorralError as error:
        print("while full:", error.args[0].split(": ", 1)[1], flush=True)
    corral.wait([first, second], timeout=60)
    os.remove(pad)  # room again
    def journaled():
        try:
            return [corral.Run(run).job(str(job.id)).status.name for job in (first, second)]
        except KeyError:  # (not written yet)
            return None
    live = [job.status.name for job in (first, second)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and journaled() != live:
        time.sleep(0.05)
    print("journal:", journaled(), "live:", live, flush=True)
print("ended without a journal error")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT TESTED: a tmpfs mount needs root (run "
                                              "the suite as root to cover it)")
def test_changes_a_full_disk_had_no_room_for_are_written_once_there_is_room(tmp_path):
    """Attack review: the changes of a transaction the full disk refused were
    dropped: corral status showed a job RUNNING and another QUEUED for ever,
    both long ended, and the script ended saying changes were lost. They are
    held now, every sync says so meanwhile, and they are written once there is
    room. On a 3 MB tmpfs of the test's own mount namespace."""
    small_disk = tmp_path / "small"
    small_disk.mkdir()
    script = f'mount -t tmpfs -o size=3m tmpfs "{small_disk}" && exec "$@"'
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", sys.executable, "-c",
                           FILLED_THEN_FREED_PROGRAM, str(small_disk / "run")],
                          capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done
    assert re.fullmatch(r"while full: \d+ changes are not written yet: (database or disk is full|"
                        r"disk I/O error); they are written as soon as there is room",
                        lines[0]), done
    journal, live = re.fullmatch(r"journal: (.*) live: (.*)", lines[1]).groups()
    assert journal == live, done
    assert lines[2] == "ended without a journal error", done
    assert re.search(r"corral: the journal .*journal\.db is written again: what it held back is "
                     r"in it\n", done.stderr), done.stderr


FULL_TO_THE_END_PROGRAM = FILL + """
import os, sys, threading, corral
run, pad = sys.argv[1], os.path.join(os.path.dirname(sys.argv[1]), "pad")

with corral.Scheduler(cores=2, journal=run) as sched:
    jobs = [sched.shell(f"true {number}") for number in range(600)]
    jobs[100].result(timeout=60)
    filled = threading.Thread(target=fill, args=(pad,))  # never freed
    filled.start()
    filled.join()
    corral.wait(jobs, timeout=120)
"""


def _on_a_small_disk(tmp_path: Path, program: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run *program* (its argument: a run directory) with the run on a 3 MB tmpfs of
    a mount namespace of its own; then ``corral status`` in the same namespace."""
    from support.cli import CORRAL

    small_disk = tmp_path / "small"
    small_disk.mkdir()
    script = (f'mount -t tmpfs -o size=3m tmpfs "{small_disk}" || exit 9; "$@"; code=$?; '
              f'{CORRAL} --run "{small_disk}/run" status > /dev/null 2> "{tmp_path}/status"; '
              'exit $code')
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", sys.executable, "-c",
                           program, str(small_disk / "run")],
                          capture_output=True, text=True, timeout=180)
    return done, tmp_path / "status"


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT TESTED: a tmpfs mount needs root (run "
                                              "the suite as root to cover it)")
def test_a_disk_full_to_the_end_loses_the_held_changes_in_one_line(tmp_path):
    """Attack review: the last try at the session's end wrote its rows one by
    one, noted each refused (2,000 "was not recorded"), committed nothing, and
    said "written again"."""
    done, _ = _on_a_small_disk(tmp_path, FULL_TO_THE_END_PROGRAM)
    assert done.returncode == 1, done
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"corral\.errors\.JournalError: cannot write the journal .*: "
                        r"\d+ changes were lost: (database or disk is full|disk I/O error)"
                        r"(; the end of the session was not recorded: .*)?", last), done.stderr
    assert "written again" not in done.stderr
    assert not re.search(r"job \d+ was not recorded", done.stderr), done.stderr  # (no row's fault)


WRITER_STOPPED_ON_A_FULL_DISK = FILL + """
import os, sys, time
from pathlib import Path
from corral.journal.files import create_journal, journal_path
from corral.journal.writer import _Writer
run = Path(sys.argv[1])
run.mkdir(mode=0o700)
create_journal(journal_path(run), "script")
writer = _Writer(os.fspath(journal_path(run)), 1)
writer.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # (a log with no room for the end's pages)
fill(run.parent / "pad", 4096)  # to the last page: moving the log in frees nothing
writer.stop(1, time.time())
print(writer.problems)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT TESTED: a tmpfs mount needs root (run "
                                              "the suite as root to cover it)")
def test_a_writer_stopped_with_no_room_at_all_leaves_a_journal_that_reads(tmp_path):
    """Attack review: a session that ended on a full disk left the note that it
    writes in journal.db and an empty log, which every reader took for a lost
    log ("incomplete ... move it away"). With no room even for the end's few
    pages, the note is taken out in place, and the end said not recorded."""
    done, status = _on_a_small_disk(tmp_path, WRITER_STOPPED_ON_A_FULL_DISK)
    assert done.returncode == 0, done
    assert done.stdout == ("['the end of the session was not recorded (the disk is full); all "
                           "else it wrote is in the journal']\n"), done
    assert status.read_text() == "", status.read_text()


CLOSED_THEN_FILLED_PROGRAM = FILL + """
import os, sys, corral
with corral.Scheduler(cores=1, journal=sys.argv[1]) as sched:
    sched.shell("true").result(timeout=60)
fill(os.path.join(os.path.dirname(sys.argv[1]), "pad"), 4096)  # to the last page
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT TESTED: a tmpfs mount needs root (run "
                                              "the suite as root to cover it)")
def test_status_of_a_run_whose_disk_is_full_reads_it_as_it_is(tmp_path):
    """Attack review: corral status said the journal "is not a corral journal, or
    it is damaged ...; move it away", where its disk was only full (SQLite could
    not make its -shm file): the advice would throw a good history away. It then
    said the disk was full; now it reads the journal without that file, as it
    does on a read-only mount (re-attack review: `corral clean`, the way to make
    room, could not read the run either)."""
    done, status = _on_a_small_disk(tmp_path, CLOSED_THEN_FILLED_PROGRAM)
    assert done.returncode == 0, done
    assert status.read_text() == "", status.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT TESTED: a read-only mount needs root (run "
                                              "the suite as root to cover it)")
def test_a_run_on_a_read_only_mount_can_be_read_and_says_why_it_cannot_be_cleaned(tmp_path):
    """It was "not a corral journal, or it is damaged ...; move it away" (a WAL
    journal read where SQLite may not write), and status opened the lock file
    for writing (attack review)."""
    from support.cli import CORRAL

    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        sched.shell("echo archived", name="old")
    view = f"{run}-ro"
    shown = _on_a_read_only_mount(run, CORRAL, "--run", view, "status")
    assert (shown.returncode, shown.stderr) == (0, "")
    assert "old" in shown.stdout and "COMPLETED" in shown.stdout
    logs = _on_a_read_only_mount(tmp_path / "run", CORRAL, "--run", view, "logs", "old")
    assert (logs.returncode, logs.stdout) == (0, "archived\n")
    cleaned = _on_a_read_only_mount(run, CORRAL, "--run", view, "clean", "--yes")
    assert (cleaned.returncode, cleaned.stderr) == (
        3, f"corral: error: cannot delete anything in {view}: Read-only file system\n")
    assert (run / "1" / "stdout").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT TESTED: a read-only mount needs root (run "
                                              "the suite as root to cover it)")
def test_a_read_only_run_whose_last_changes_are_in_its_write_ahead_log_says_so(tmp_path):
    from support.cli import CORRAL

    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        sched.shell("true", name="old")
    # A driver killed with commits only in the log: one made here, never checkpointed.
    code = ("import os, sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('PRAGMA wal_autocheckpoint=0')\n"
            "db.execute(\"UPDATE jobs SET name='renamed'\")\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(run / "journal.db")], check=True, timeout=60)
    assert (run / "journal.db-wal").stat().st_size > 0
    # Read where its shared-memory file is, SQLite reads the log: here there is none.
    (run / "journal.db-shm").unlink()
    shown = _on_a_read_only_mount(run, CORRAL, "--run", f"{run}-ro", "status")
    assert shown.returncode == 3
    assert shown.stderr == (f"corral: error: cannot read the journal {run}-ro/journal.db: "
                            "nothing can be written beside it (a read-only directory, or a full "
                            "disk), and its latest changes are only in journal.db-wal, which "
                            "SQLite reads only where it may write beside it; free some space, or "
                            "copy the run directory somewhere writable, to read it\n")


def test_a_run_log_that_cannot_be_written_says_so_once_and_the_run_goes_on(tmp_path):
    """A full disk: logging printed a traceback for every record of corral.log,
    800 lines among the program's output (attack review)."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    (run / "corral.log").symlink_to("/dev/full")  # every write: ENOSPC
    script = ("import sys, corral\n"
              "with corral.Scheduler(cores=1, journal=sys.argv[1]) as scheduler:\n"
              "    for number in range(5):\n"
              "        scheduler.shell('exit 3', name=f'bad{number}')\n")
    done = subprocess.run([sys.executable, "-c", script, str(run)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == (f"corral: cannot write {run / 'corral.log'} (No space left on device): "
                        "the run's log goes on without it")
    assert lines[1].startswith("corral: 5 of 5 jobs did not complete: 5 failed")
    assert len(lines) == 2, done.stderr
    assert [job.status for job in corral.Scheduler.open(run).jobs()] == [JobStatus.FAILED] * 5


def test_a_directory_of_other_files_is_refused_and_left_as_it_was(tmp_path, monkeypatch):
    """journal="." in a group-shared project made it 0700 and filled it (cold review)."""
    project = tmp_path / "project"
    project.mkdir()
    os.chmod(project, 0o755)
    (project / "data.csv").write_text("1,2\n")
    monkeypatch.chdir(project)
    with pytest.raises(ValueError, match=rf"^journal='\.': {re.escape(str(project))} is not a "
                                         "corral run but holds other files; give a new or empty "
                                         "directory, or an earlier run's"):
        corral.Scheduler(cores=1, journal=".")
    with pytest.raises(ValueError, match=r"^journal='' names no directory; give the run "
                                         r"directory's path"):
        corral.Scheduler(cores=1, journal="")  # os.environ.get("RUN", "")
    assert stat.S_IMODE(project.stat().st_mode) == 0o755
    assert os.listdir(project) == ["data.csv"]
    # A directory with only the run's own corral.toml is the run's.
    (project / "run").mkdir()
    (project / "run" / "corral.toml").write_text("")
    with corral.Scheduler(cores=1, journal="run") as sched:
        assert sched.submit(jobs.square, 3).result(timeout=30) == 9
    # A run whose journal was moved away, to start afresh, is one still (attack review 2)
    (project / "run" / "journal.db").rename(project / "run" / "journal.db.bak")
    with corral.Scheduler(cores=1, journal="run") as sched:
        assert sched.submit(jobs.square, 4).result(timeout=30) == 16
    # ... but a backup of a journal alone is the user's file, and a journal.db that is no
    # corral journal is refused before the directory is made private or locked.
    (project / "backup").mkdir(mode=0o755)
    (project / "backup" / "journal.db.bak").write_bytes(b"")
    with pytest.raises(ValueError, match="is not a corral run but holds other files"):
        corral.Scheduler(cores=1, journal="backup")
    (project / "other").mkdir(mode=0o755)
    (project / "other" / "journal.db").write_text("a journal of my own\n")
    with pytest.raises(CorralError, match="is not a corral journal, or it is damaged"):
        corral.Scheduler(cores=1, journal="other")
    assert os.listdir(project / "other") == ["journal.db"]
    assert stat.S_IMODE((project / "other").stat().st_mode) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT TESTED: giving a directory to another uid "
                                              "needs root (run the suite as root to cover it)")
def test_a_run_directory_of_another_user_is_refused_and_left_alone(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    with pytest.raises(ValueError, match=f"run directory {foreign} belongs to another user "
                                         "\\(uid 65534\\)"):
        corral.Scheduler(cores=1, journal=foreign)
    assert os.listdir(foreign) == []
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o700


def test_a_file_where_the_run_directory_should_be_is_refused(tmp_path):
    (tmp_path / "plain").write_text("not a run")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        corral.Scheduler(cores=1, journal=tmp_path / "plain")
    # Under a file, or where nothing can be made: named, not a bare OSError (cold review)
    with pytest.raises(ValueError, match=rf"^run directory '{tmp_path}/plain/run' cannot be "
                                         "made: Not a directory$"):
        corral.Scheduler(cores=1, journal=tmp_path / "plain" / "run")
    for option in ("journal", "workdir"):  # (attack review: "embedded null byte", no more)
        with pytest.raises(ValueError, match=rf"^{option}='.*/run\\x00x' holds a NUL character, "
                                             r"which no path may$"):
            corral.Scheduler(cores=1, **{option: f"{tmp_path}/run\0x"})
    assert sorted(os.listdir(tmp_path)) == ["plain"]
    with pytest.raises(ValueError, match=r"^run directory '/proc/corral-run' cannot be made: "):
        corral.Scheduler(cores=1, journal="/proc/corral-run")


def test_a_sync_answers_for_the_problems_since_the_last_one_and_the_end_for_all(tmp_path):
    """Attack review 2: once a full disk had lost some changes, every later
    sync said so: each `corral submit` to the daemon exited 3, although its job
    was journaled and ran (a script retrying on 3 ran it twice)."""
    from corral.journal.writer import _Writer

    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        sched.shell("true").result(timeout=30)
    writer = _Writer(str(run / "journal.db"), 99)
    writer._note("3 changes were lost: database or disk is full")
    assert writer.report_since_last_sync() == "3 changes were lost: database or disk is full"
    assert writer.report_since_last_sync() is None  # (the disk was freed: later syncs are ok)
    assert writer.report() == "3 changes were lost: database or disk is full"  # at the end
    writer.stop(None, None)


def test_a_writer_taking_over_after_the_last_commit_of_a_stop_writes_nothing_twice(tmp_path):
    """Attack review (round 2): the stop's last transaction forgot the number of
    the last batch written, so a writer killed between that commit and its exit
    was replaced by one that wrote the whole session's history again."""
    from corral.journal.writer import _Writer

    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        sched.shell("true").result(timeout=30)
    path = str(run / "journal.db")
    first = _Writer(path, 99)
    first.write([("meta", "mine", "first", 1), ("meta", "other", "first", 2)])
    first.stop(None, None)
    taking_over = _Writer(path, 99)  # sent all the driver kept, and what came after
    taking_over.write([("meta", "mine", "again", 1), ("meta", "other", "again", 2),
                       ("meta", "later", "new", 3)])
    taking_over.stop(None, None)
    meta = dict(sqlite3.connect(path).execute("SELECT key, value FROM meta"))
    assert (meta["mine"], meta["other"], meta["later"]) == ("first", "first", "new")


@pytest.mark.parametrize("driver_reads", ["what was committed", "nothing (sends all it kept)"])
def test_a_journal_writer_that_dies_is_replaced_and_nothing_it_held_is_lost(
        tmp_path, caplog, monkeypatch, driver_reads):
    """Killed, it took the changes it had not committed with it: status was
    stale for the rest of the run, the run ended with a JournalError, and the
    next run ran a command again that had finished (attack review). A driver
    that cannot read the journal sends the new writer every batch it kept;
    the writer skips those the journal holds, rather than write them twice."""
    if driver_reads != "what was committed":
        from corral.journal.unwritten import Unwritten

        monkeypatch.setattr(Unwritten, "_committed", lambda self: 0)
    run, ran = tmp_path / "run", tmp_path / "ran"

    def commands(sched: corral.Scheduler, round_: int) -> list[corral.Job]:
        return [sched.shell(f"echo {round_}.{number} >> {ran}", name=f"round{round_}")
                for number in range(10)]

    with corral.Scheduler(cores=2, journal=run) as sched:
        assert [job.result(timeout=60) for job in commands(sched, 0)] == [None] * 10
        for round_ in (1, 2):  # (a writer that took over may die too)
            os.kill(sched._journal._writer.pid, signal.SIGKILL)
            later = commands(sched, round_)
            later += [sched.submit(jobs.square, number) for number in range(10)]
            for job in later:
                job.result(timeout=60)
    taken_over = [record.getMessage() for record in caplog.records
                  if "a new one took over" in record.getMessage()]
    assert len(taken_over) == 2
    assert taken_over[0].startswith(f"the journal writer of {run} ended (killed by signal 9; ")
    stored = corral.Scheduler.open(run)
    assert [job.status for job in stored.jobs()] == [JobStatus.COMPLETED] * 50
    # Each change once, none sent twice: a batch sent again would repeat its rows
    # exactly. (A job may pass through a state twice: handed ahead to a worker,
    # then given back unstarted, it is QUEUED and SUBMITTED again, at other times.)
    events = stored.events()
    assert len(events) == len(set(events)) >= 50 * 4
    assert sorted(event[0] for event in events if event[3] == "completed") == sorted(
        str(number) for number in range(1, 51))
    assert len(ran.read_text().splitlines()) == 30
    with corral.Scheduler(cores=2, journal=run) as sched:  # its rerun runs nothing again
        for round_ in (0, 1, 2):
            for job in commands(sched, round_):
                job.result(timeout=60)
    assert len(ran.read_text().splitlines()) == 30


def test_a_writer_stopped_as_the_run_ends_is_replaced_and_the_rest_written(tmp_path, caplog,
                                                                            monkeypatch):
    """Stopped (or killed just after it was told to end), it took what it held
    with it: the rerun ran finished commands again (attack review 2)."""
    from corral.journal import store

    monkeypatch.setattr(store, "_WRITER_END_PATIENCE_S", 1.0)
    run, ran = tmp_path / "run", tmp_path / "ran"
    with corral.Scheduler(cores=2, journal=run) as sched:
        handles = [sched.shell(f"echo {number} >> {ran}") for number in range(10)]
        for job in handles:
            job.result(timeout=60)
        os.kill(sched._journal._writer.pid, signal.SIGSTOP)
        handles += [sched.shell(f"echo {number} >> {ran}") for number in range(10, 20)]
        for job in handles:
            job.result(timeout=60)
    assert any("a new one took over" in record.getMessage() for record in caplog.records)
    assert [job.status for job in corral.Scheduler.open(run).jobs()] == [JobStatus.COMPLETED] * 20
    with corral.Scheduler(cores=2, journal=run) as sched:  # its rerun runs nothing again
        for number in range(20):
            sched.shell(f"echo {number} >> {ran}").result(timeout=60)
    assert len(ran.read_text().splitlines()) == 20


def _writer_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the driver said of its journal writer, in order."""
    return [record.getMessage() for record in caplog.records
            if "journal writer" in record.getMessage()]


def test_a_stopped_writer_that_holds_up_the_run_is_named_and_the_run_goes_on_after(
        tmp_path, caplog, monkeypatch):
    """A writer stopped mid-run (SIGSTOP) filled its pipe, and the driver's loop
    blocked on the next write with no word: no job ended, nothing said why."""
    from corral.journal import writer_pipe

    monkeypatch.setattr(writer_pipe, "QUIET_S", 0.5)
    run = tmp_path / "run"
    with corral.Scheduler(cores=2, journal=run) as sched:
        assert sched.submit(bytes, 1).result(timeout=60) == b"\0"
        pid = sched._journal._writer.pid
        os.kill(pid, signal.SIGSTOP)
        try:  # results of 200 kB each: more than the pipe holds
            handles = [sched.submit(bytes, 200_000) for _ in range(20)]
            wait_until(lambda: any("the run waits for it" in record.getMessage()
                                   for record in caplog.records), timeout=60)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert all(len(job.result(timeout=60)) == 200_000 for job in handles)
    said = _writer_messages(caplog)
    assert re.fullmatch(
        rf"the journal writer of {re.escape(str(run))} \(pid {pid}\) has (not taken anything|"
        rf"taken only \d+ of \d+ KiB) in \d+ s \(it is stopped: kill -CONT {pid} lets it go "
        r"on\): the run waits for it \(a writer stopped for 20 s is replaced\)",
        said[0]), said
    assert re.fullmatch(rf"the journal writer of {re.escape(str(run))} \(pid {pid}\) goes on, "
                        r"after \d+ s", said[1]), said
    assert [job.status for job in corral.Scheduler.open(run).jobs()] == [
        JobStatus.COMPLETED] * 21


def test_a_writer_stopped_for_good_is_replaced_and_the_run_ends_with_every_row(
        tmp_path, caplog, monkeypatch):
    """A stopped writer that never went on held up the end of the run for ever
    (leaving the with block, Ctrl-C and SIGTERM waited with it; attack review)."""
    from corral.journal import store

    monkeypatch.setattr(store, "_WRITER_STALL_PATIENCE_S", 1.0)
    run = tmp_path / "run"
    with corral.Scheduler(cores=2, journal=run) as sched:
        sched.submit(bytes, 1).result(timeout=60)
        stopped = psutil.Process(sched._journal._writer.pid)
        stopped.suspend()
        handles = [sched.submit(bytes, 300_000) for _ in range(30)]
        try:
            assert all(len(job.result(timeout=60)) == 300_000 for job in handles)
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):  # (the journal killed it already)
                stopped.kill()
    assert any(re.fullmatch(r"the journal writer of .* ended \(killed by signal 9; it was "
                            r"stopped for \d+ s\): a new one took over, and was "
                            r"sent the \d+ batches of changes it had not written",
                            record.getMessage()) for record in caplog.records), [
        record.getMessage() for record in caplog.records]
    assert [job.status for job in corral.Scheduler.open(run).jobs()] == [
        JobStatus.COMPLETED] * 31


def test_a_sync_a_stopped_writer_leaves_unanswered_is_named_and_answered_by_a_new_writer(
        tmp_path, caplog, monkeypatch):
    """corral submit waits for its job's row to be committed (a sync): a stopped
    writer left the daemon waiting on its answer, without a word, past the
    minute the command waits, and the job ran after the command said it had
    failed (attack review)."""
    from corral.journal import store, writer_pipe

    monkeypatch.setattr(writer_pipe, "QUIET_S", 0.5)
    monkeypatch.setattr(store, "_WRITER_STALL_PATIENCE_S", 1.5)
    run = tmp_path / "run"
    with corral.Scheduler(cores=2, journal=run) as sched:
        job = sched.submit(jobs.square, 3)
        assert job.result(timeout=60) == 9
        stopped = psutil.Process(sched._journal._writer.pid)
        stopped.suspend()
        try:
            # What the daemon's loop does for a corral submit, on that loop's thread.
            sched._engine.call(sched._journal.flush, True)
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):  # (the journal killed it already)
                stopped.kill()
    said = _writer_messages(caplog)
    assert re.fullmatch(rf"the journal writer of {re.escape(str(run))} \(pid {stopped.pid}\) has "
                        r"not answered in \d+ s \(it is stopped: kill -CONT \d+ lets it go on\): "
                        r"the run waits for it \(a writer stopped for 2 s is replaced\)",
                        said[0]), said
    assert re.fullmatch(r".* ended \(killed by signal 9; it did not answer: it was stopped for "
                        r"\d+ s\): a new one took over.*", said[1]), said
    assert [stored.status for stored in corral.Scheduler.open(run).jobs()] == [
        JobStatus.COMPLETED]


def test_a_writer_that_only_trickles_is_named_with_what_it_took(caplog, monkeypatch):
    """A writer that takes a little at a time (a failing disk) held the loop in
    one write for minutes without a word: only a writer that took nothing at
    all was named (attack review)."""
    from corral.journal import writer_pipe

    monkeypatch.setattr(writer_pipe, "QUIET_S", 0.5)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    taken = bytearray()

    def trickle() -> None:  # a pipe's worth, then 64 KiB at a time, slowly
        while len(taken) < 2 << 20:
            chunk = os.read(read_end, 64 << 10)
            if not chunk:
                return
            taken.extend(chunk)
            time.sleep(0.05)

    reader = threading.Thread(target=trickle)
    reader.start()
    try:
        writer_pipe.write_to_writer(write_end, bytes(2 << 20), os.getpid(), Path("/run"),
                                    patience=30)
    finally:
        os.close(write_end)
        reader.join()
        os.close(read_end)
    assert len(taken) == 2 << 20
    said = [record.getMessage() for record in caplog.records]
    assert re.fullmatch(rf"the journal writer of /run \(pid {os.getpid()}\) has taken only \d+ "
                        r"of 2048 KiB in \d+ s: the run waits for it \(a writer stopped for "
                        r"30 s is replaced\)", said[0]), said
    assert re.fullmatch(rf"the journal writer of /run \(pid {os.getpid()}\) goes on, after \d+ s",
                        said[1]), said


def test_a_writer_stopped_while_nothing_waits_on_it_is_replaced_and_its_rows_written(
        tmp_path, caplog, monkeypatch):
    """Stopped between writes, with small jobs that never fill its pipe, it
    was never noticed: the journal stood still for the rest of the run, and a
    driver killed meanwhile lost every change since (attack review 2)."""
    from corral.journal import store

    monkeypatch.setattr(store, "_WRITER_STALL_PATIENCE_S", 1.0)
    run, ran = tmp_path / "run", tmp_path / "ran"
    with corral.Scheduler(cores=2, journal=run) as sched:
        sched.submit(bytes, 1).result(timeout=60)
        stopped = psutil.Process(sched._journal._writer.pid)
        stopped.suspend()
        try:
            for number in range(10):
                sched.shell(f"echo {number} >> {ran}").result(timeout=60)
            wait_until(lambda: [job.status for job in corral.Scheduler.open(run).jobs()] == [
                JobStatus.COMPLETED] * 11, timeout=60)  # committed while the run goes on
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):  # (the journal killed it already)
                stopped.kill()
    assert any(re.fullmatch(r"the journal writer of .* ended \(killed by signal 9; it was "
                            r"stopped for \d+ s\): a new one took over.*", record.getMessage())
               for record in caplog.records)


def test_a_writer_stopped_as_the_run_ends_is_killed_and_the_rest_written_by_another(
        tmp_path, caplog, monkeypatch):
    """Its pipe not full, the run's end (leaving the with block, Ctrl-C,
    SIGTERM) waited a minute for the stopped writer to end, without a word
    (attack review 2)."""
    from corral.journal import store

    monkeypatch.setattr(store, "_WRITER_STALL_PATIENCE_S", 1.0)
    run = tmp_path / "run"
    with corral.Scheduler(cores=2, journal=run) as sched:
        sched.submit(bytes, 1).result(timeout=60)
        for number in range(5):
            sched.submit(jobs.square, number).result(timeout=60)
        stopped = psutil.Process(sched._journal._writer.pid)
        sched._journal._next_look = float("inf")  # (not looked at during the run: at its end)
        stopped.suspend()
    said = _writer_messages(caplog)
    assert any(re.fullmatch(rf"the journal writer of .* \(pid {stopped.pid}\) is killed: it was "
                            r"stopped for \d+ s", message) for message in said), said
    assert [job.status for job in corral.Scheduler.open(run).jobs()] == [JobStatus.COMPLETED] * 6


def test_a_writer_that_runs_is_waited_for_however_late_it_answers(caplog, monkeypatch):
    """A writer committing a backlog to a slow disk answered a sync after the
    patience meant for a stopped one, and was killed for it, again and again,
    until the journal gave up (attack review 2): only a stopped writer is
    given up on."""
    from corral.journal import writer_pipe

    monkeypatch.setattr(writer_pipe, "QUIET_S", 0.5)
    read_end, write_end = os.pipe()
    answer = threading.Timer(2.5, os.write, (write_end, b"ok\n"))
    answer.start()
    try:  # (this process runs: a writer that is slow, not stopped)
        writer_pipe.wait_for_answer(read_end, os.getpid(), Path("/run"), patience=1.0)
        assert os.read(read_end, 16) == b"ok\n"
    finally:
        answer.join()
        os.close(read_end)
        os.close(write_end)
    said = [record.getMessage() for record in caplog.records]
    assert re.fullmatch(rf"the journal writer of /run \(pid {os.getpid()}\) has not answered in "
                        r"\d+ s: the run waits for it \(a writer stopped for 1 s is replaced\)",
                        said[0]), said


def test_a_journal_that_gave_up_leaves_the_loop_asleep(tmp_path, monkeypatch):
    """Once the journal had given up (its writers died too often), the loop was
    woken at once on every turn for the 25 s it watches a writer after a
    batch: a core spun at 100 % (attack review 3)."""
    from corral.journal import store

    monkeypatch.setattr(store, "_TAKEOVERS", 0)  # the first writer that dies ends the journal
    with (pytest.raises(JournalError, match=(
            rf"^cannot write the journal {re.escape(str(tmp_path / 'run' / 'journal.db'))}: it "
            r"stopped at \d\d:\d\d:\d\d \(its writer process died\): no change after that is in "
            r"it, no job submitted or ended since; the run went on without it$")),
          corral.Scheduler(cores=2, journal=tmp_path / "run") as sched):
        assert sched.submit(jobs.square, 2).result(timeout=60) == 4
        psutil.Process(sched._journal._writer.pid).kill()
        assert sched.submit(jobs.square, 3).result(timeout=60) == 9
        wait_until(lambda: sched._journal._broken, timeout=30)
        loop_barrier(sched)
        assert sched._engine.call(sched._journal.due_in) is None  # nothing to send, no look


def test_a_journal_whose_writers_keep_dying_says_so_and_when_it_stopped(tmp_path):
    """After its third replacement within a minute a writer that dies is not
    replaced: the script was told only "the last changes may be missing", where
    every change after that was (the run went on without its journal)."""

    with (pytest.raises(JournalError, match=(
            r": it stopped at \d\d:\d\d:\d\d \(its writer process died; its writers died 4 times "
            r"within 60 s, so no other is started\): no change after that is in it, no job "
            r"submitted or ended since; the run went on without it$")),
          corral.Scheduler(cores=2, journal=tmp_path / "run") as sched):
        for number in range(4):
            writer = sched._journal._writer.pid
            psutil.Process(writer).kill()
            assert sched.submit(jobs.square, number).result(timeout=60) == number ** 2
            wait_until(lambda dead=writer: sched._journal._broken
                       or sched._journal._writer.pid != dead,
                       timeout=30, message="the dead writer to be seen")
        assert sched._journal._broken
        assert sched.submit(jobs.square, 9).result(timeout=60) == 81  # the run goes on


def test_a_writer_that_dies_with_nothing_more_to_send_is_replaced_and_its_changes_written(
        tmp_path):
    """A writer that died after it was sent changes was found only when the
    next change was sent to it: a run that went quiet then kept its last
    changes nowhere on disk, lost if the driver was killed meanwhile (and a
    test that killed writers timed out waiting for one to be seen)."""
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as sched:
        assert sched.submit(jobs.square, 3).result(timeout=60) == 9
        dead = sched._journal._writer.pid
        psutil.Process(dead).kill()
        wait_until(lambda: sched._journal._writer.pid != dead, timeout=30,
                   message="a writer in place of the dead one, with nothing more sent")
        wait_until(lambda: [job.status for job in corral.Run(tmp_path / "run").jobs()] == [
            JobStatus.COMPLETED], timeout=30, message="the job's end in the journal")
        assert not sched._journal._broken


def test_a_sync_that_a_stopped_writer_leaves_unanswered_past_the_last_replacement_says_so(
        tmp_path, monkeypatch):
    """Attack review: a writer stopped (SIGSTOP) while a sync waited on it,
    when no other writer could be started, was said to have died."""
    from corral.journal import store

    monkeypatch.setattr(store, "_WRITER_STALL_PATIENCE_S", 1.0)
    with pytest.raises(JournalError), \
            corral.Scheduler(cores=1, journal=tmp_path / "run") as sched:
        for number in range(store._TAKEOVERS):
            assert sched.submit(jobs.square, number).result(timeout=60) == number ** 2
            dead = sched._journal._writer.pid
            psutil.Process(dead).kill()
            wait_until(lambda dead=dead: sched._journal._writer.pid != dead, timeout=30,
                       message="a writer in place of the dead one")
        psutil.Process(sched._journal._writer.pid).suspend()
        sched.submit(jobs.square, 2)
        try:
            sched._flush_journal_now()
        except JournalError as error:
            said = str(error)
    # (checked out here: the with block's own JournalError would hide a failed check in it)
    assert re.search(r": it stopped at \d\d:\d\d:\d\d \(its writer did not answer: it was "
                     r"stopped for 1 s; its writers died 4 times within 60 s, so no other is "
                     r"started\): no change after that is in it", said), said


def test_a_run_whose_journal_stopped_goes_on_at_the_next_driver_with_what_it_holds(tmp_path):
    """Attack review: after a quiet run's writers died four times (each now
    replaced at once) its journal stopped, and then every driver and command
    refused the run for good ("its write-ahead log is missing or empty, but
    session 1 never closed the journal"), though the journal held everything
    it had recorded: the finished job was never restored again."""

    run = tmp_path / "run"
    with pytest.raises(JournalError, match=r"its writers died 4 times within 60 s"), \
            corral.Scheduler(cores=1, journal=run) as sched:
        assert sched.submit(jobs.square, 7).result(timeout=60) == 49
        sched._journal.flush(wait=True)
        for _ in range(4):
            dead = sched._journal._writer.pid
            psutil.Process(dead).kill()
            wait_until(lambda dead=dead: sched._journal._broken
                       or sched._journal._writer.pid != dead, timeout=30,
                       message="the dead writer to be seen")
        assert sched._journal._broken
    # As the last writer left it when it died just after its start, which
    # checkpoints: every commit in journal.db, its log emptied (timing decides
    # whether a run ends so; the driver made it refused for good).
    with sqlite3.connect(run / "journal.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert (run / "journal.db-wal").stat().st_size == 0
    assert [job.status for job in corral.Run(run).jobs()] == [JobStatus.COMPLETED]
    with corral.Scheduler(cores=1, journal=run) as again:
        restored = again.submit(jobs.square, 7)
        assert restored.result(timeout=60) == 49 and restored.reason == RESTORED


# -- 5. one driver per run --------------------------------------------------------------------


def test_a_second_driver_is_refused_while_the_first_lives_and_welcome_after(tmp_path):
    run = tmp_path / "run"
    first = corral.Scheduler(cores=1, journal=run)
    try:
        owner = owner_of(run)
        assert owner == {"pid": os.getpid(), "kind": "script", "host": socket.gethostname(),
                         "socket": "control.sock"}
        # (Cold review, a notebook user: "another process" was this one.)
        with pytest.raises(RunInUse, match=f"^run directory {run} is driven by a Scheduler "
                                           "this program made before and did not shut down: "
                                           r"use that one, or call its shutdown\(\) first$"):
            corral.Scheduler(cores=1, journal=run)
        assert owner_of(run) == owner  # the refused one took nothing away
        assert first.submit(jobs.square, 3).result(timeout=30) == 9
    finally:
        first.shutdown()
    assert owner_of(run) is None

    with corral.Scheduler(cores=1, journal=run) as second:
        assert owner_of(run)["pid"] == os.getpid()
        restored = second.submit(jobs.square, 3)
        assert restored.result(timeout=30) == 9 and restored.reason == RESTORED
    assert owner_of(run) is None


def test_a_command_run_again_from_another_directory_runs_again_in_its_place(
        tmp_path, monkeypatch, caplog):
    """Cold review (a build engineer): a rerun from another checkout restored
    `cat VERSION` from the first one, and its dependents with it. The
    directory is kept with the row and compared; a journal from before has
    none, and restores as it did."""
    run = tmp_path / "run"
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "VERSION").write_text(f"version {name}\n")

    def build() -> tuple[corral.Job, corral.Job]:
        with corral.Scheduler(cores=1, journal=run) as sched:
            version = sched.shell("cat VERSION", name="version")
            after = sched.shell("echo after", name="after", after=[version])
        return version, after

    monkeypatch.chdir(tmp_path / "a")
    assert build()[0].stdout == "version a\n"
    monkeypatch.chdir(tmp_path / "b")
    with caplog.at_level(logging.WARNING, logger="corral"):
        version, after = build()
    assert (version.stdout, version.id, version.attempts) == ("version b\n", 1, 2)
    assert after.reason != RESTORED and after.attempts == 2  # (make's rule)
    assert (f"job 1 'version' completed in an earlier run, but it ran in {tmp_path / 'a'}, "
            f"and runs in {tmp_path / 'b'} now: it runs again") in caplog.text
    version, after = build()
    assert (version.reason, after.reason) == (RESTORED, RESTORED)
    assert len(corral.Scheduler.open(run).jobs()) == 2


def test_a_script_modified_since_it_ran_runs_again_in_its_place(tmp_path, monkeypatch):
    """As make compares a target with its sources: a script written before its
    job began (by a job it runs after, here) is no change; one edited after
    it ran is (re-attack review: a digest taken when the job was made told a
    generated script changed at every other rerun)."""
    run, script = tmp_path / "run", tmp_path / "gen.py"
    monkeypatch.chdir(tmp_path)

    def generate(version: str) -> corral.Job:
        with corral.Scheduler(cores=1, journal=run) as sched:
            writes = sched.shell(f"echo \"print('gen {version}')\" > {script}", name="write")
            return sched.script(str(script), after=[writes])

    script.write_text("print('before any run')\n")
    assert generate("v1").stdout == "gen v1\n"
    assert generate("v1").reason == RESTORED  # written by its parent, before it began
    script.write_text("print('edited by hand')\n")
    again = generate("v1")  # the parent restored: the hand's edit runs
    assert (again.stdout, again.id, again.attempts) == ("edited by hand\n", 2, 2)
    assert generate("v1").reason == RESTORED


def test_a_restored_job_keeps_where_its_result_was_made(tmp_path, monkeypatch):
    """Re-attack review: a restore wrote its row again with where the rerun
    was, not where the result was made; one from a directory since removed,
    none at all, and later runs from anywhere restored it."""
    run = tmp_path / "run"
    for name in ("a", "gone", "b"):
        (tmp_path / name).mkdir()

    def where() -> corral.Job:
        with corral.Scheduler(cores=1, journal=run) as sched:
            return sched.shell("pwd", name="where")

    monkeypatch.chdir(tmp_path / "a")
    assert where().stdout == f"{tmp_path / 'a'}\n"
    monkeypatch.chdir(tmp_path / "gone")
    (tmp_path / "gone").rmdir()
    assert where().reason == RESTORED  # (where it runs now cannot be known)
    monkeypatch.chdir(tmp_path / "b")
    assert where().stdout == f"{tmp_path / 'b'}\n"


def test_a_named_step_added_in_front_of_others_of_its_name_runs_alone(tmp_path):
    """Re-attack review: a command's slot is its name and its place among those
    of its name; a step added first took the next one's completed row, that
    one the next's, and every step ran again. A named slot takes only a row
    that did not complete."""
    run, ledger = tmp_path / "run", tmp_path / "ledger"

    def steps(*items: str) -> list[corral.Job]:
        with corral.Scheduler(cores=1, journal=run) as sched:
            return [sched.shell(f"echo {item} >> {ledger}", name="test") for item in items]

    steps("a", "b", "c")
    ledger.unlink()
    again = steps("new", "a", "b", "c")
    assert ledger.read_text() == "new\n"
    assert [job.reason for job in again[1:]] == [RESTORED] * 3
    assert again[0].id == 4


def test_a_named_commands_fixed_command_runs_again_in_its_row(tmp_path):
    """Cold review (a build engineer): a step's fixed command ran as a new job
    beside the failed one, whose row kept the run red for corral wait, and made
    its name ambiguous. A command given a name has its name for its slot."""
    run = tmp_path / "run"

    def build(command: str) -> tuple[corral.Job, corral.Job]:
        with corral.Scheduler(cores=1, journal=run) as sched:
            compile_step = sched.shell(command, name="compile")
            link = sched.shell("echo linked", name="link", after=[compile_step])
            corral.wait([compile_step, link])
        return compile_step, link

    failed, cancelled = build("exit 3")
    assert (failed.status, cancelled.status) == (JobStatus.FAILED, JobStatus.CANCELLED)
    fixed, linked = build("echo compiled")
    assert (fixed.id, fixed.stdout, linked.id, linked.stdout) == (1, "compiled\n", 2, "linked\n")
    assert [(job.id, job.status) for job in corral.Scheduler.open(run).jobs()] == [
        (1, JobStatus.COMPLETED), (2, JobStatus.COMPLETED)]


def test_after_a_name_whose_jobs_finished_and_were_dropped_resumes_onto_the_same_job(tmp_path):
    """A job after a name is keyed by the keys of that name's finished jobs,
    which the registry keeps when nobody holds the jobs: the next run of the
    same script recognises it."""
    def script() -> tuple[int, str | None]:
        with corral.Scheduler(cores=2, journal=tmp_path / "run") as scheduler:
            for value in (1, 2):
                scheduler.options(name="prepare").submit(jobs.square, value).result(timeout=30)
            gc.collect()  # both "prepare" jobs are gone: only what the registry kept is left
            final = scheduler.options(after="prepare").submit(jobs.square, 3)
            return final.result(timeout=30), final.reason

    assert script() == (9, None)  # ran
    assert script() == (9, RESTORED)


@pytest.mark.parametrize("twice", ["name twice", "name and job"])
def test_a_job_named_twice_in_after_is_one_dependency_and_the_rerun_recognises_its_dependent(
        tmp_path, twice):
    """BUG (attack review): a finished job reached twice (its name twice, or its
    name and itself) counted as two dependencies, but as one while it ran: the
    dependent's key then depended on timing, and the rerun ran it again."""
    def script() -> tuple[int, str | None]:
        with corral.Scheduler(cores=2, journal=tmp_path / "run") as scheduler:
            prepare = scheduler.options(name="prep").submit(jobs.square, 2)
            after = ["prep", "prep"] if twice == "name twice" else ["prep", prepare]
            final = scheduler.options(after=after).submit(jobs.square, 3)
            return final.result(timeout=30), final.reason

    assert script() == (9, None)  # ran, its dependency unfinished when it was made
    assert script() == (9, RESTORED)  # its dependency restored: finished at once


def test_after_a_name_in_a_journaled_run_is_cancelled_by_a_dropped_failed_job(tmp_path):
    with corral.Scheduler(cores=2, journal=tmp_path / "run") as scheduler:
        scheduler.options(name="prepare").submit(jobs.square, 2).result(timeout=30)
        failed = scheduler.options(name="prepare").submit(jobs.raise_custom, "no input")
        failed_id = failed.id
        assert isinstance(failed.exception(timeout=30), Exception)
        del failed
        gc.collect()
        final = scheduler.options(after="prepare").submit(jobs.square, 3)
        with pytest.raises(concurrent.futures.CancelledError):
            final.result(timeout=30)
        assert final.status is JobStatus.CANCELLED
        assert final.reason == f"upstream job {failed_id} 'prepare' failed"


def test_a_long_journaled_run_keeps_nothing_per_finished_job_the_garbage_collector_walks(tmp_path):
    """Every full collection walks every object the collector tracks: one
    kept per finished job made a million-call run slower the longer it ran.
    (Counted in a fresh interpreter: this one holds what other tests left.)"""
    script = tmp_path / "count.py"
    script.write_text(
        "import gc, sys\n"
        "import corral, jobs\n"
        "def tracked_after(scheduler, calls):\n"
        "    assert list(scheduler.map(jobs.square, range(calls))) == [n * n for n in range(calls)]"
        "\n"
        "    scheduler._engine.call(scheduler._journal.flush, True)  # lets go of what it sent\n"
        "    gc.collect()\n"
        "    return len(gc.get_objects())\n"
        "with corral.Scheduler(cores=2, journal=sys.argv[1]) as scheduler:\n"
        "    before = tracked_after(scheduler, 2000)\n"  # (and every cache warm)
        "    after = tracked_after(scheduler, 4000)\n"
        "print(after - before)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(jobs.__file__).parent), *sys.path]))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    grown = int(done.stdout.strip())
    assert grown < 1000, f"{grown} more tracked objects after 4,000 more calls"


# -- 6. the control socket --------------------------------------------------------------------


def request_from_another_process(run: Path, request: dict) -> dict:
    code = ("import json, sys\nfrom corral.control.server import send_request\n"
            "print(json.dumps(send_request(sys.argv[1], json.loads(sys.argv[2]))))")
    done = subprocess.run([sys.executable, "-c", code, str(run), json.dumps(request)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_control_socket_pauses_resumes_and_cancels_a_live_run(tmp_path, release):
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        blocker = sched.submit(jobs.wait_for_file, str(release))
        wait_until(blocker.running)
        socket_mode = (run / "control.sock").stat().st_mode
        assert stat.S_ISSOCK(socket_mode) and stat.S_IMODE(socket_mode) == 0o600
        assert request_from_another_process(run, {"verb": "pause"}) == {
            "ok": True, "paused": True, "was_paused": False, "jobs": 1}
        assert sched.paused
        wait_until(lambda: corral.Scheduler.open(run).paused, message="the journal to say paused")
        queued = [sched.submit(jobs.square, value) for value in (1, 2, 3)]
        release.touch()
        assert blocker.result(timeout=30) is None
        loop_barrier(sched)
        assert [job.status for job in queued] == [JobStatus.QUEUED] * 3  # paused: none started

        reply = send_request(run, {"verb": "cancel", "ids": [queued[0].id, 99, blocker.id]})
        assert reply == {"ok": True, "cancelled": [queued[0].id], "already_cancelled": [],
                         "problems": ["no job 99 in this run (neither an id nor a job's name)",
                                      f"job {blocker.id} already ended COMPLETED"],
                         "names": {str(queued[0].id): "square",
                                   str(blocker.id): "wait_for_file"}, "ended": [],
                         "kind": "script"}
        with pytest.raises(concurrent.futures.CancelledError, match="cancelled by user"):
            queued[0].result(timeout=30)
        again = send_request(run, {"verb": "cancel", "ids": [queued[0].id]})
        assert again == {"ok": True, "cancelled": [], "already_cancelled": [queued[0].id],
                         "problems": [], "names": {str(queued[0].id): "square"}, "ended": [],
                         "kind": "script"}

        ping = send_request(run, {"verb": "ping"})
        assert (ping["pid"], ping["paused"], ping["unfinished"]) == (os.getpid(), True, 2)
        assert send_request(run, {"verb": "resume"}) == {"ok": True, "paused": False,
                                                         "was_paused": True}
        assert [job.result(timeout=30) for job in queued[1:]] == [4, 9]
        wait_until(lambda: not corral.Scheduler.open(run).paused)

        with pytest.raises(CorralError, match=r"unknown request 'frobnicate'; known: .*cancel"
                                              ".*pause.*resume") as refused:
            send_request(run, {"verb": "frobnicate"})
        assert not isinstance(refused.value, NoDriver)
    with pytest.raises(NoDriver, match=f"no corral process drives the run at {run}"):
        send_request(run, {"verb": "ping"})
    assert corral.Scheduler.open(run).job(queued[0].id).status is JobStatus.CANCELLED


def test_a_cancel_of_a_ranges_jobs_answers_those_that_ended_meanwhile_as_no_error(tmp_path):
    """Attack review: `corral cancel 1-300` of a busy run exited 2, "job 51
    already ended COMPLETED": it read the range's unfinished jobs from the
    journal, a few milliseconds behind the driver, and some ended before the
    cancel reached them. Ids of a range are sent as ``ended_ok``; an id named
    on its own that ended is still a problem."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        done = sched.submit(jobs.square, 3)
        assert done.result(timeout=30) == 9
        reply = send_request(run, {"verb": "cancel", "ids": [done.id], "ended_ok": [done.id]})
        assert (reply["ended"], reply["problems"], reply["cancelled"]) == ([done.id], [], [])
        reply = send_request(run, {"verb": "cancel", "ids": [done.id]})
        assert (reply["ended"], reply["problems"]) == (
            [], [f"job {done.id} already ended COMPLETED"])
        with pytest.raises(CorralError, match="'ended_ok' must be a list of job ids"):
            send_request(run, {"verb": "cancel", "ids": [done.id], "ended_ok": "1"})


@pytest.mark.parametrize("when", ["before the end", "while the end waits"])
def test_a_corral_pause_holds_through_the_end_of_the_with_block_until_resume(tmp_path, release,
                                                                             when):
    """Cold review (a CustomXepr user): a ``corral pause`` while the script
    waited for its jobs at the end of its ``with`` block was refused ("the
    scheduler was shut down ... cannot be paused"), and one made before was
    undone there ("resuming to finish"): the operator's pause held nothing."""
    run = tmp_path / "run"
    sched = corral.Scheduler(cores=1, journal=run)
    blocker = sched.submit(jobs.wait_for_file, str(release))
    queued = [sched.submit(jobs.square, value) for value in (2, 3)]
    ending = threading.Thread(target=sched.shutdown)
    try:
        wait_until(blocker.running)
        if when == "before the end":
            assert request_from_another_process(run, {"verb": "pause"})["paused"]
        ending.start()
        if when == "while the end waits":
            wait_until(lambda: sched._engine._finishing, message="the end to begin")
            assert request_from_another_process(run, {"verb": "pause"})["paused"]
        said = (f"paused by corral pause, the scheduler's end waits for its 3 unfinished jobs "
                f"until corral --run {run} resume (or cancel, clear)")
        wait_until(lambda: said in (run / "corral.log").read_text(), message="the end to say so")
        release.touch()
        assert blocker.result(timeout=30) is None
        loop_barrier(sched)
        assert [job.status for job in queued] == [JobStatus.QUEUED] * 2 and ending.is_alive()
        assert request_from_another_process(run, {"verb": "resume"})["was_paused"]
        ending.join(timeout=60)
        assert not ending.is_alive() and [job.result() for job in queued] == [4, 9]
    finally:
        release.touch()
        sched.resume()
        if ending.is_alive():
            ending.join(timeout=60)


def test_the_programs_own_resume_leaves_a_persons_pause_in_place_and_says_so(tmp_path, release,
                                                                            caplog):
    """Cold review (an experiment queue): a script's pause()/resume() around a
    batch of submits lifted an operator's ``corral pause`` made meanwhile, and
    measurements started under it without a word."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        blocker = sched.submit(jobs.wait_for_file, str(release))
        wait_until(blocker.running)
        sched.pause()
        assert request_from_another_process(run, {"verb": "pause"})["was_paused"]
        batch = [sched.submit(jobs.square, value) for value in (2, 3)]
        with caplog.at_level(logging.WARNING, logger="corral"):
            sched.resume()
            release.touch()
            assert blocker.result(timeout=30) is None
            loop_barrier(sched)
        assert sched.paused and [job.status for job in batch] == [JobStatus.QUEUED] * 2
        assert ("resume() leaves the run paused: a person paused it (corral pause); "
                "corral resume lifts that") in caplog.text
        assert request_from_another_process(run, {"verb": "resume"}) == {
            "ok": True, "paused": False, "was_paused": True}
        assert [job.result(timeout=30) for job in batch] == [4, 9]


def test_a_persons_resume_also_lifts_the_programs_own_pause(tmp_path):
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        sched.pause()
        queued = sched.submit(jobs.square, 4)
        assert request_from_another_process(run, {"verb": "resume"})["was_paused"]
        assert queued.result(timeout=30) == 16 and not sched.paused


def test_the_programs_own_pause_is_resumed_at_the_end_and_a_sigterm_says_no_resume(tmp_path):
    """The program's own pause is resumed at its end (nobody else would); and
    a driver ended by SIGTERM while paused said it was "resuming to finish 3
    queued jobs" as it cancelled them (cold review)."""
    script = tmp_path / "paused.py"
    script.write_text(
        "import os, signal, sys, corral, jobs\n"
        "with corral.Scheduler(cores=1, journal=sys.argv[1]) as sched:\n"
        "    sched.pause()\n"
        "    queued = [sched.submit(jobs.square, value) for value in range(3)]\n"
        "    if sys.argv[2] == 'term':\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ended = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "finish"],
                           capture_output=True, text=True, timeout=60, env=env)
    assert (ended.returncode, ended.stderr) == (
        0, "corral: shutting down a paused scheduler: resuming to finish 3 queued jobs\n")
    ended = subprocess.run([sys.executable, str(script), str(tmp_path / "again"), "term"],
                           capture_output=True, text=True, timeout=60, env=env)
    assert ended.returncode == 143 and "resuming" not in ended.stderr, ended.stderr
    assert "3 cancelled" in ended.stderr, ended.stderr


def test_a_request_to_a_directory_nobody_drives_raises_no_driver(tmp_path):
    with pytest.raises(NoDriver, match=f"no corral process drives the run at {tmp_path}"):
        send_request(tmp_path, {"verb": "pause"})


# -- 7. the run log -----------------------------------------------------------------------------


def test_corral_log_lines_land_in_the_run_log_across_sessions(tmp_path):
    run = tmp_path / "run"
    sched = corral.Scheduler(cores=1, journal=run)
    sched.pause()
    job = sched.submit(jobs.square, 5)
    sched.shutdown()
    assert job.result() == 25  # shutting down resumed the queue to finish it
    text = (run / "corral.log").read_text()
    assert (f"WARNING corral.engine [pid {os.getpid()}]: shutting down a paused scheduler: "
            "resuming to finish 1 queued jobs") in text

    with corral.Scheduler(cores=1, journal=run) as sched:
        slow = sched.options(timeout=0.2).submit(jobs.sleep_for, 30)
        with pytest.raises(corral.JobTimedOut, match="'sleep_for' timed out after"):
            slow.result(timeout=30)
    text = (run / "corral.log").read_text()
    assert "shutting down a paused scheduler" in text  # the first session's line is kept
    assert f"INFO corral.engine [pid {os.getpid()}]: killing job {slow.id} 'sleep_for': " \
           "timeout" in text

    logging.getLogger("corral.engine").warning("after the run ended")
    assert "after the run ended" not in (run / "corral.log").read_text()


def test_a_paused_scheduler_that_shut_down_is_not_reported_paused_afterwards(tmp_path):
    """BUG: shutting down resumes a paused scheduler, but the journal keeps saying
    paused: `corral status` shows PAUSED for a finished run (and for the next,
    unpaused driver), and a daemon later started on the run starts paused."""
    run = tmp_path / "run"
    sched = corral.Scheduler(cores=1, journal=run)
    sched.pause()
    wait_until(lambda: corral.Scheduler.open(run).paused, message="the journal to say paused")
    job = sched.submit(jobs.square, 5)
    sched.shutdown()
    assert job.result() == 25 and not sched.paused
    assert corral.Scheduler.open(run).paused is False


# -- 8. e-mail notices --------------------------------------------------------------------------


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def test_a_failed_job_mails_its_recipients_and_a_completed_one_only_when_asked(
        tmp_path, smtp_server):
    run = tmp_path / "run"
    config = Config(smtp=SmtpSettings(host=smtp_server.host, port=smtp_server.port,
                                      sender="corral@lab.example.org", timeout=5.0))
    with corral.Scheduler(cores=2, journal=run, config=config) as sched:
        noisy = sched.options(notify="me@example.org")
        failed = noisy.submit(jobs.raise_custom, "disk full")
        # Its mail first: notices queued while another is sent go together in one digest.
        wait_until(lambda: len(smtp_server.received) == 1, 30, "the failure's mail")
        quiet = noisy.submit(jobs.square, 2)
        told = noisy.options(notify_on="end").submit(jobs.square, 3)
        sched.wait(timeout=30)
    # Shutting down waited for queued mail: what was sent has arrived.
    assert (quiet.result(), told.result()) == (4, 9)
    subjects = sorted(mail.message["Subject"] for mail in smtp_server.received)
    assert subjects == [
        f"[corral] job {failed.id} 'raise_custom' FAILED: raised CustomError: disk full",
        f"[corral] job {told.id} 'square' COMPLETED"]
    [failure] = [mail for mail in smtp_server.received if "FAILED" in mail.message["Subject"]]
    assert failure.recipients == ("me@example.org",)
    assert failure.mail_from == "corral@lab.example.org"
    assert f"corral --run {run} logs {failed.id} --stderr" in failure.body
    # A call's traceback is in no log file: the mail shows it and where to see it again,
    # and gives no exit code, which a call has not (cold review 2).
    assert "  exit code  -\r\n" in failure.body
    assert "The traceback it raised:\r\n    Traceback (most recent call last):" in failure.body
    assert "raise CustomError(message)" in failure.body
    assert failure.body.count("CustomError: disk full") >= 2  # the reason, the traceback's end
    assert f"corral --run {run} status {failed.id}" in failure.body


# -- found in review: ids, outcome logs, damaged journals, restored jobs --------------------------


def test_an_explicit_id_never_takes_over_a_restored_job_and_its_result(tmp_path):
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        assert sched.submit(jobs.square, 3).id == 1
    with corral.Scheduler(cores=1, journal=run) as sched:
        named = corral.Job(jobs.add, (5, 6), id=1)  # id 1 belonged to square(3) before
        sched.dispatch([named])
        again = sched.submit(jobs.square, 3)
        assert (named.result(timeout=30), again.result(timeout=30)) == (11, 9)
        assert again.id != 1 and again.reason is None  # ran anew: its old id is taken
    with corral.Scheduler(cores=1, journal=run) as sched:
        third = sched.submit(jobs.square, 3)
        assert third.result(timeout=30) == 9 and third.reason == RESTORED
    ids = [str(job.id) for job in corral.Scheduler.open(run).jobs()]
    assert len(ids) == len(set(ids))


def test_an_id_that_names_the_same_directory_as_another_is_refused(tmp_path):
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as sched:
        first = sched.submit(jobs.square, 2)
        with pytest.raises(ValueError, match=rf"job id '{first.id}' is already used in this "
                                             r"scheduler \(ids name job directories"):
            sched.dispatch([corral.Job(jobs.square, (3,), id=str(first.id))])
        assert first.result(timeout=30) == 4


def test_outcomes_are_logged_in_the_journal_even_with_a_workdir_elsewhere(tmp_path):
    run, workdir = tmp_path / "run", tmp_path / "files"
    with corral.Scheduler(cores=1, journal=run, workdir=workdir) as sched:
        job = sched.submit(jobs.square, 7)
        assert job.result(timeout=30) == 49
        recorded = read_outcomes(run)  # read before shutdown, which discards them
        assert recorded[str(job.id)][0] is True
        assert not (workdir / "outcomes").exists()
    assert not (run / "outcomes").exists()


def test_a_damaged_journal_is_one_clear_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    (run / "journal.db").write_bytes(b"this is not a database, it is a grocery list\n" * 100)
    message = rf"{run / 'journal.db'} is not a corral journal, or it is damaged"
    with pytest.raises(CorralError, match=message):
        corral.Scheduler(journal=run)
    with pytest.raises(CorralError, match=message):
        corral.Scheduler.open(run).jobs()
    assert owner_of(run) is None  # the refused driver let go of the run


def test_a_scheduler_that_fails_to_start_lets_go_of_its_run(tmp_path):
    run, not_a_directory = tmp_path / "run", tmp_path / "file"
    not_a_directory.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        corral.Scheduler(journal=run, workdir=not_a_directory)
    with corral.Scheduler(cores=1, journal=run) as sched:  # no RunInUse: nothing held it
        assert sched.submit(jobs.square, 2).result(timeout=30) == 4


def test_restored_jobs_are_shown_to_on_finish_and_mail_nobody_again(tmp_path, smtp_server):
    run = tmp_path / "run"
    config = Config(smtp=SmtpSettings(host=smtp_server.host, port=smtp_server.port,
                                      sender="corral@lab.example.org", timeout=5.0))

    def script() -> list[object]:
        seen: list[object] = []
        with corral.Scheduler(cores=1, journal=run, config=config,
                              on_finish=lambda job: seen.append(job.record.data)) as sched:
            sched.options(notify="me@example.org", notify_on="end").submit(jobs.square, 4)
        return seen

    assert script() == [16]
    assert script() == [16]  # restored, and on_finish saw it
    assert len(smtp_server.received) == 1


SET_SCRIPT = """
import dataclasses, sys, corral

@dataclasses.dataclass
class Vocabulary:  # a set inside an object's state (an attack found it not recognised)
    words: set

def count(log, words, vocabulary):
    with open(log, "a") as handle:
        handle.write(f"{len(words)} {len(vocabulary.words)}\\n")
    return len(words)

with corral.Scheduler(cores=1, journal=sys.argv[1]) as sched:
    job = sched.submit(count, sys.argv[2], {"alpha", "beta", "gamma", frozenset({"x", "y"})},
                       Vocabulary({"one", "two", "three", "four", "five"}))
    print(job.result(), job.reason)
"""


def test_a_job_with_set_arguments_is_recognised_whatever_the_hash_seed(tmp_path):
    script, log = tmp_path / "sets.py", tmp_path / "log"
    script.write_text(SET_SCRIPT)
    for seed in ("1", "2", "3"):
        done = subprocess.run(
            [sys.executable, os.fspath(script), os.fspath(tmp_path / "run"), os.fspath(log)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
            env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr
    assert lines(log) == ["4 5"]  # it ran once, in the first run


# -- found in the second review -------------------------------------------------------------

CLOSURE_SCRIPT = """
import sys, corral
FACTOR = int(sys.argv[2])

def make(k):
    def times(x):
        return x * k
    return times

plus = lambda x: x + FACTOR

with corral.Scheduler(cores=1, journal=sys.argv[1]) as sched:
    made, read = sched.submit(make(FACTOR), 3), sched.submit(plus, 1)
    print(made.result(), read.result(), made.reason is not None, read.reason is not None)
"""


def test_a_closure_or_a_global_with_another_value_is_other_work(tmp_path):
    script = tmp_path / "closure.py"
    script.write_text(CLOSURE_SCRIPT)

    def run(factor: int) -> str:
        done = subprocess.run([sys.executable, os.fspath(script), os.fspath(tmp_path / "run"),
                               str(factor)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run(2) == "6 3 False False"
    assert run(10) == "30 11 False False"  # not the stored 6 and 3
    assert run(10) == "30 11 True True"    # and now these are stored


HELPER_SCRIPT = """
import sys, corral
SCALE = int(sys.argv[3])

def prepare(x):
    return x + {step} * SCALE

def simulate(x):
    return prepare(x) * 2

with corral.Scheduler(cores=1, journal=sys.argv[1]) as sched:
    job = sched.submit(simulate, int(sys.argv[2]))
    print(job.result(), job.reason is not None)
"""


def test_a_helper_of_the_scripts_own_that_changed_is_other_work(tmp_path):
    """Cold review (a notebook user): a helper function edited in the script
    (or a notebook cell) that the job's function calls was not part of the
    job's key, so the rerun restored the old helper's results; so was a
    constant only the helper reads."""
    script = tmp_path / "helper.py"

    def run(step: int, scale: int = 1) -> str:
        script.write_text(HELPER_SCRIPT.replace("{step}", str(step)))
        done = subprocess.run([sys.executable, os.fspath(script), os.fspath(tmp_path / "run"),
                               "1", str(scale)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run(1) == "4 False"
    assert run(1) == "4 True", "the same helper: restored"
    assert run(100) == "202 False", "an edited helper: run again"
    assert run(100, scale=2) == "402 False", "a constant the helper reads: run again"
    assert run(100, scale=2) == "402 True"


DECORATED_HELPER_SCRIPT = """
import functools, sys, types, corral
model = types.SimpleNamespace(prepare=lambda x: x)

def prepare(x):  # the script's own, which simulate does not call (model.prepare is another)
    return x + {unrelated}

@functools.cache
def step():
    return {step}

def simulate(x):
    return model.prepare(x) * step()

with corral.Scheduler(cores=1, journal=sys.argv[1]) as sched:
    job = sched.submit(simulate, 5)
    print(job.result(), job.reason is not None)
"""


def test_a_decorated_helper_counts_and_an_attribute_of_its_name_does_not(tmp_path):
    """Diff review: an edited functools.cache helper left the key as it was
    (the rerun restored the old result), and a script function that merely
    shared a name with an attribute the job's function reads made it run again."""
    script = tmp_path / "decorated.py"

    def run(step: int, unrelated: int) -> str:
        script.write_text(DECORATED_HELPER_SCRIPT.replace("{step}", str(step))
                          .replace("{unrelated}", str(unrelated)))
        done = subprocess.run([sys.executable, os.fspath(script), os.fspath(tmp_path / "run")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run(2, 0) == "10 False"
    assert run(2, 7) == "10 True", "prepare() is not the job's: restored"
    assert run(3, 7) == "15 False", "an edited cached helper: run again"


HELPER_KINDS_SCRIPT = """
import functools, sys, corral

def scaled(x, k={value}):          # a helper's default
    return x * k

def make(k):
    return lambda x: x * k
closed = make({value})             # a helper that is a closure

def base(x, k):
    return x * k + {value}
bound = functools.partial(base, k=1)   # a partial of the script's function

def simulate(x):
    return scaled(x) + closed(x) + bound(x)

with corral.Scheduler(cores=1, journal=sys.argv[1]) as sched:
    job = sched.submit(simulate, 1)
    print(job.result(), job.reason is not None)
"""


@pytest.mark.parametrize("edit", ["default", "closure", "partial"])
def test_helpers_defaults_closures_and_partials_are_part_of_the_key(tmp_path, edit):
    """Re-attack review: an edited helper's default, a helper made as a
    closure with another value, and an edited function behind a partial each
    left the key as it was, and the rerun restored the old result."""
    script = tmp_path / "kinds.py"
    values = {"default": ("2", "10"), "closure": ("2", "10"), "partial": ("2", "10")}[edit]

    def run(value: str) -> str:
        text = HELPER_KINDS_SCRIPT
        for kind in ("default", "closure", "partial"):
            line_value = value if kind == edit else values[0]
            marker = {"default": "k={value}", "closure": "make({value})",
                      "partial": "+ {value}"}[kind]
            text = text.replace(marker, marker.replace("{value}", line_value))
        script.write_text(text)
        done = subprocess.run([sys.executable, os.fspath(script), os.fspath(tmp_path / "run")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run(values[0]) == "7 False"
    assert run(values[0]) == "7 True"
    assert run(values[1]).endswith(" False"), "edited: run again"


def test_jobs_a_killed_driver_left_running_end_when_the_next_session_starts(tmp_path):
    run, release = tmp_path / "run", tmp_path / "release"
    driver = start_driver(tmp_path, "mixed", run, release)
    def blocking_job_runs() -> bool:
        try:
            return any(job.status is JobStatus.RUNNING and job.name == "wait_for_file"
                       for job in corral.Scheduler.open(run).jobs())
        except FileNotFoundError:  # the driver has not made its journal yet
            return False

    try:
        wait_until(blocking_job_runs, message="the blocking job to run")
    finally:
        driver.kill()
        driver.wait()
    wait_until(lambda: owner_of(run) is None, message="the killed driver's lock to be free")
    with corral.Scheduler(cores=1, journal=run) as sched:  # another script on the same run
        assert sched.submit(jobs.square, 12).result(timeout=30) == 144
        left = {job.name: job for job in corral.Scheduler.open(run).jobs()}
        assert left["wait_for_file"].status is JobStatus.CANCELLED
        assert left["wait_for_file"].reason.startswith("its driver ended before it did")
        assert left["identity"].status is JobStatus.CANCELLED  # it waited for that one


RERUN_SCRIPT = """
import sys, time, corral
from pathlib import Path

def counted(counter, gate):
    path = Path(counter)
    number = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(number))
    while number == 2 and not Path(gate).exists():  # the re-run waits to be killed
        time.sleep(0.02)
    return number

with corral.Scheduler(cores=1, journal=sys.argv[1],
                      on_finish=lambda job: job.record.data == 1) as sched:
    print(sched.submit(counted, sys.argv[2], sys.argv[3]).result())
"""


def test_a_rerun_asked_for_by_on_finish_is_not_replaced_by_its_first_result(tmp_path):
    script, run, counter = tmp_path / "rerun.py", tmp_path / "run", tmp_path / "counter"
    script.write_text(RERUN_SCRIPT)
    command = [sys.executable, os.fspath(script), os.fspath(run), os.fspath(counter),
               os.fspath(tmp_path / "never")]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def rerun_recorded() -> bool:
            try:
                return any(new == "queued" and (reason or "").startswith("run again")
                           for _, _, _, new, reason in corral.Scheduler.open(run).events())
            except FileNotFoundError:
                return False

        wait_until(lambda: counter.exists() and counter.read_text() == "2" and rerun_recorded(),
                   message="the re-run to start, recorded in the journal")
    finally:
        driver.kill()
        driver.wait()
    wait_until(lambda: owner_of(run) is None, message="the killed driver's lock to be free")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"  # ran again, not the first run's 1 from the outcome log


def test_a_child_forked_from_the_driver_holds_neither_the_run_nor_its_socket(tmp_path):
    """A fork-based pool's workers outlive the scheduler here: they must not keep
    the run's lock (the next driver would be refused) nor its listening socket
    (a ``corral`` command would wait on it, unanswered)."""
    import multiprocessing

    run = tmp_path / "run"
    sched = corral.Scheduler(cores=1, journal=run)
    assert sched.submit(jobs.square, 2).result(timeout=30) == 4
    pool = multiprocessing.get_context("fork").Pool(1)
    try:
        assert pool.apply(jobs.square, (3,)) == 9  # the child exists, forked after the start
        sched.shutdown()
        with pytest.raises(NoDriver, match="no corral process drives the run"):
            send_request(run, {"verb": "ping"}, timeout=5)
        with corral.Scheduler(cores=1, journal=run) as again:  # not RunInUse
            assert again.submit(jobs.square, 4).result(timeout=30) == 16
    finally:
        pool.terminate()
        pool.join()


EMPTY: dict = {}
SHARED = (7, "x")


def _dumps_job(args: tuple, kwargs: dict | None = None, **options) -> corral.Job:
    """A job of ``json:dumps`` with these arguments, made without checking that
    json.dumps can take them (it takes one): these pin keys, made the same way
    before calls were checked against their function when the job is made."""
    from corral.spec import FunctionRef, make_spec

    return corral.Job._from_spec(make_spec(FunctionRef("json:dumps", args, kwargs or {}),
                                           options))


@pytest.mark.parametrize(("job", "key"), [
    (lambda: corral.Job(corral.Shell("echo hi && ls"), env={"A": "1"}), "ec3f7267fd8d5449e581611d"),
    (lambda: _dumps_job(args=(1, {3, 1, 2}), kwargs={"y": {"b": [1.5, None]}}, name="n"),
     "4573a82831db3b4b46a35268"),
    (lambda: corral.Job(corral.Shell(["python", "x.py", "--k", "3"])), "8d0d0e442c34df0eb58581d4"),
    # Named, and as a command is named by default since (attack review): its key keeps the name.
    (lambda: corral.Job(corral.Shell("exec echo e"), name="echo"), "15b65f46d91311b7a9a35c02"),
    (lambda: corral.Job(corral.Shell("python3 fit.py")), "12f1f733bcd6714b7cd7697f"),
    (lambda: _dumps_job(args=([[]] * 3, {"a": EMPTY, "b": EMPTY})), "76383db745739be73eb76968"),
    (lambda: _dumps_job(args=(1, "two", None, 2.5, True, b"six"),
                        kwargs={"indent": 2, "sort_keys": False}), "de296846704ac4a6078bfbec"),
    (lambda: _dumps_job(args=("same", "same")), "ea1cb4db9445090870c45b71"),
    (lambda: _dumps_job(args=([(n,) for n in range(300)], 0)), "8393fd9ff6c32be11b1e7115"),
    (lambda: _dumps_job(args=([SHARED, SHARED],)), "87646605b6a4e3bb095724de"),
    (lambda: _dumps_job(args=({SHARED: SHARED},)), "a1e4bc49e6f6612a59977c85"),
    (lambda: _dumps_job(args=([{"a": [1, 2.5, None], "b": (b"\x8f", "s")}, [[143, 145]]],)),
     "b5fd205b31f86f825bca180b"),
], ids=["shell line", "function reference with a set and a dict", "argument list",
        "a command named as it would be by default", "a command named by its script",
        "the same empty list and dict given twice", "plain arguments (hashed sooner)",
        "one string given twice", "a map's chunk of calls (its ints pickle as set opcodes)",
        "one tuple given twice", "one tuple as a key and its value", "nested plain data"])
def test_a_jobs_key_is_the_one_earlier_versions_of_corral_gave_it(job, key):
    """Keys match a new run's jobs to the journal's: if they changed with corral's
    version, a script resumed after an upgrade would run every finished job again.
    (A call's key also hashes its function's bytecode, which changes with Python.)"""
    from corral.core.identity import job_digest
    from corral.core.scheduler import _value_deps

    record = job()._record
    _value_deps(record)  # (as dispatch does: the arguments, any Job in them replaced)
    assert job_digest(record) == key


def test_the_keys_of_a_maps_chunks_are_those_earlier_versions_gave_them(tmp_path):
    """A chunk of plain values is hashed from its plain pickle, not the long
    way: the keys must not change (small ints' bytes look like a set's opcodes,
    which sent the long way through its slow pickler)."""
    run = tmp_path / "run"
    items = [143, 145, "x", None, 2.5, 1j, b"\x8f", True] * 2
    with corral.Scheduler(cores=1, journal=run) as scheduler:
        assert list(scheduler.map("builtins:str", items, chunksize=6)) == list(map(str, items))
    assert sorted((job.id, job.key) for job in corral.Run(run).jobs()) == [
        (1, "19d4e3a2c1a9aa330806168b#1"), (2, "d300aab02e7230f445ad090e#1"),
        (3, "c24268c296e97052afe70518#1")]


_ATOM = st.one_of(st.integers(-300, 300), st.integers(), st.floats(allow_nan=False),
                  st.text(max_size=3), st.binary(max_size=3), st.none(), st.booleans())


def _plain_data(children):
    return st.one_of(st.lists(children, max_size=4), st.tuples(children, children),
                     st.dictionaries(st.one_of(st.text(max_size=2), st.tuples(st.integers())),
                                     children, max_size=3),
                     st.frozensets(st.integers(), max_size=3), st.sets(st.text(max_size=2)))


@given(st.recursive(_ATOM, _plain_data, max_leaves=20), st.data())
@settings(max_examples=400, deadline=None)
def test_the_quick_bytes_of_plain_arguments_are_those_of_the_long_way(value, data):
    """Plain arguments are pickled as they are, not copied with their sets put
    in order first: the bytes, which are keys of journaled jobs, must not
    change, whatever the data, the same container given twice included (pickle
    refers back to it, where the copy has two)."""
    from corral.core.identity import _canonical_pickle, _stable_bytes

    containers = [item for item in _walk(value) if type(item) in (list, tuple, dict) and item]
    if containers:  # one of them given again, beside the value
        value = [value, data.draw(st.sampled_from(containers))]
    assert _stable_bytes(value) == _canonical_pickle(value)


_PLAIN_ITEM = st.one_of(st.integers(), st.floats(), st.complex_numbers(), st.text(max_size=40),
                       st.binary(max_size=300), st.none(), st.booleans(),
                       st.just("__main__"), st.just(b"__mp_main__"))


@given(st.lists(st.tuples(_PLAIN_ITEM) | st.tuples(_PLAIN_ITEM, _PLAIN_ITEM), min_size=1,
                max_size=50), st.integers(0, 10**6), st.booleans())
@settings(max_examples=300, deadline=None)
def test_a_chunks_key_bytes_taken_from_its_payload_are_those_pickled_again(calls, first, large):
    """A chunk of plain calls is keyed by its arguments' pickle of protocol 4;
    a pickled chunk takes it from its payload (protocol 5, the worker's) rather
    than pickle a thousand calls again. The bytes must be the same, or every
    journal written before would be rerun in full after an upgrade: big chunks
    (pickle's 64 KB frames) and text naming ``__main__`` (cloudpickle's) included."""
    from corral.core.identity import _plain_calls_bytes
    from corral.core.chunk_sizes import as_chunk
    from corral.runtime.payload import dumps_call

    if large:
        calls = calls * (70_000 // len(calls) + 1)
    args = (as_chunk(calls), first)
    payload = dumps_call(ChunkRunner(str), args, {}, False)
    assert _plain_calls_bytes(args, {}, payload) == pickle.dumps((args, {}), 4)


def test_a_chunks_key_takes_its_arguments_pickle_from_its_payload(monkeypatch):
    """The chunk's calls are not pickled a second time for its key."""
    from corral.core import identity
    from corral.core.chunk_sizes import as_chunk
    from corral.runtime.payload import dumps_call

    args = (as_chunk([(number,) for number in range(1000)]), 0)
    payload = dumps_call(ChunkRunner(str), args, {}, False)
    expected = pickle.dumps((args, {}), 4)
    monkeypatch.setattr(identity.pickle, "dumps", None)  # (any pickling here would raise)
    assert identity._plain_calls_bytes(args, {}, payload) == expected


def _walk(value):
    yield value
    if type(value) in (list, tuple):
        for item in value:
            yield from _walk(item)
    elif type(value) is dict:
        for item in (*value, *value.values()):
            yield from _walk(item)


def test_a_failure_quoting_undecodable_bytes_is_journaled_with_the_job(tmp_path):
    """A reason may quote a file name's raw bytes (a lone surrogate), which
    SQLite cannot store as text: it is written escaped, and the job's row, its
    state and its events are all kept."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as scheduler:
        warm = scheduler.submit(jobs.noop)
        warm.result(timeout=30)  # so the failure's row and state travel to the writer together
        failing = scheduler.submit(jobs.raise_custom, "no file b'caf\udce9'")
        with pytest.raises(jobs.CustomError):
            failing.result(timeout=30)
    [stored] = [job for job in corral.Run(run).jobs() if job.id == failing.id]
    assert stored.status is corral.JobStatus.FAILED
    assert stored.reason == "raised CustomError: no file b'caf\\udce9'"
    changes = [(old, new) for _, _, old, new, _ in corral.Run(run).events(failing.id)]
    assert changes[-1][1] == "failed", changes


@pytest.mark.parametrize("name", ["run#1", "run%41", "run?x"])
def test_a_run_directory_named_with_url_characters_resumes(tmp_path, name):
    """Round-3 review: the journal's earlier jobs were read through a SQLite URI
    made without escaping the path: after a '#', SQLite opened another file."""
    run = tmp_path / name
    for _ in range(2):
        with corral.Scheduler(cores=1, journal=run) as sched:
            jobs_made = [sched.submit(abs, -number) for number in range(3)]
        assert [job.result() for job in jobs_made] == [0, 1, 2]
    assert {job.reason for job in jobs_made} == {RESTORED}
    assert sorted(path.name for path in tmp_path.iterdir()) == [name]  # no stray file


def test_damage_the_open_cannot_see_is_named_when_the_job_is_matched(tmp_path):
    """Round-3 review: text that is no UTF-8 in a finished job's row is found
    only when that row is read, as a new job matches it: the error names the
    file, as corral status does, instead of a raw sqlite3 error."""
    run = _damaged_journal(tmp_path, "UPDATE jobs SET name = CAST(x'6162ff' AS TEXT) "
                                     "WHERE id = '2'", values=(-1, -2))
    with corral.Scheduler(cores=1, journal=run) as sched:
        assert sched.submit(abs, -1).result() == 1
        with pytest.raises(corral.JournalError,
                           match=f"^{re.escape(str(run / 'journal.db'))} is not a corral "
                                 r"journal, or it is damaged \(Could not decode to UTF-8"):
            sched.submit(abs, -2)


def test_a_damaged_row_behind_many_rows_sqlite_doubts_is_still_refused_at_open(tmp_path):
    """Round-3 review: the rows SQLite doubts (its JSON is stricter than
    Python's: a NaN) were read only up to 20, so a damaged row behind them
    passed the open and failed the run later."""
    run = _damaged_journal(
        tmp_path, """UPDATE jobs SET spec = '{"task": {}, "options": {"x": NaN}}'""",
        "UPDATE jobs SET name = NULL WHERE id = '25'", values=range(0, -25, -1))
    with pytest.raises(corral.JournalError, match="job 25 has the name None, which is no text"):
        corral.Scheduler(cores=1, journal=run)


def test_an_outcome_written_in_pieces_is_logged_whole_and_so_are_those_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One write() moves at most 2 GiB: the log kept the first 2 GiB of a bigger
    result, and the reader, taking the short record for one torn by a kill,
    lost it and every record after it (attack review). A write that moves part
    of a record is simulated here: 1,000 bytes at a time."""
    import pickle

    from corral.runtime import outcomes

    real_write = os.write
    monkeypatch.setattr(outcomes.os, "write",
                        lambda descriptor, data: real_write(descriptor, bytes(data[:1000])))
    log = outcomes.OutcomeLog()
    directory = os.fspath(outcomes.outcomes_directory(tmp_path))
    for job_id, value in ((1, b"small"), (2, b"x" * 50_000), (3, b"after")):
        log.append(directory, pickle.dumps((job_id, True, value)))
    found = read_outcomes(tmp_path)
    assert {job_id: len(blob) for job_id, (ok, blob, _) in found.items()} == {
        "1": 5, "2": 50_000, "3": 5}


def test_a_result_too_large_for_a_reply_becomes_the_jobs_failure_saying_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply's size is 32 bits: a result of 4 GiB or more broke the reply's
    header, and the worker with it (attack review). Here the limit is 1,000 bytes."""
    import pickle

    from corral.runtime import worker
    from corral.runtime.payload import loads_error

    monkeypatch.setattr(worker, "MAX_REPLY_BYTES", 1000)
    assert pickle.loads(worker.reply_blob((7, True, b"small"))) == (7, True, b"small")
    job_id, ok, blob = pickle.loads(worker.reply_blob((7, True, b"x" * 5000)))
    assert (job_id, ok) == (7, False)
    error, _, _ = loads_error(blob)
    assert isinstance(error, ValueError)
    assert re.match(r"^the job's result is too large to send back: 5,\d{3} bytes pickled, "
                    r"at most 1,000; write it to a file and return the path$", str(error))


def test_a_runs_events_come_oldest_first_across_jobs_when_a_change_is_recorded_late(tmp_path):
    """A try's start is recorded when the driver hears of it, with the time the
    worker began it: after another job's later change. Run.events() of the
    whole run still lists them oldest first (a timeline built from it)."""
    from types import SimpleNamespace

    from corral.journal.store import Journal

    def job(job_id: int) -> SimpleNamespace:
        return SimpleNamespace(
            id=job_id, name=f"job{job_id}", deps=[], ended_deps=(), status=JobStatus.RUNNING,
            reason=None, exit_code=None, attempts=1, native_id=None, started=None, ended=None,
            jobdir=None, result_blob=None, error_blob=None, live_output=None)

    first, second = job(1), job(2)
    journal = Journal(tmp_path / "run")
    try:
        for each in (first, second):
            journal.added(each, f"key{each.id}", f"key{each.id}", "call", "f()", "{}")
        journal.moved(first, JobStatus.QUEUED, JobStatus.RUNNING, None, at=1_000_200.0)
        journal.moved(second, JobStatus.QUEUED, JobStatus.RUNNING, None, at=1_000_100.0)
        journal.flush(wait=True)
    finally:
        journal.close()
    events = corral.Scheduler.open(tmp_path / "run").events()
    assert [(job_id, at) for job_id, at, *_ in events] == [("2", 1_000_100.0),
                                                         ("1", 1_000_200.0)]


def test_a_dependent_of_a_parent_that_runs_again_runs_again_too_and_is_cancelled_if_it_fails(
        tmp_path):
    """A parent whose stored result is lost runs again in a rerun, and may
    return something else now: its dependent, completed in the earlier run,
    runs again too (make's rule), with its tries counted on; if the parent
    fails now, the dependent is cancelled as any dependent of a failed job is
    (it was restored COMPLETED beside its FAILED parent; then, restored from
    the parent's old value though the parent had run again: cold reviews)."""
    run, flag = tmp_path / "run", str(tmp_path / "flag")
    parent_log, child_log = str(tmp_path / "parent.log"), str(tmp_path / "child.log")

    def make_jobs(scheduler: corral.Scheduler) -> tuple[corral.Job, corral.Job, corral.Job]:
        parent = scheduler.submit(jobs.note_and_raise_if_flagged, parent_log, 3, 0, flag, 3)
        return (parent, scheduler.submit(jobs.note_and_square, child_log, parent),
                scheduler.submit(jobs.square, 5))

    def lose_the_parents_result() -> None:
        with sqlite3.connect(run / "journal.db") as db:
            db.execute("UPDATE jobs SET result = NULL WHERE id = '1'")
        db.close()

    with corral.Scheduler(cores=1, journal=run) as scheduler:
        parent, child, other = make_jobs(scheduler)
        assert child.result(timeout=60) == 9 and other.result(timeout=60) == 25
    lose_the_parents_result()

    with corral.Scheduler(cores=1, journal=run) as scheduler:
        parent, child, other = make_jobs(scheduler)
        assert child.result(timeout=60) == 9 and parent.result(timeout=60) == 3
        assert other.result(timeout=60) == 25
        assert (child.reason, other.reason, child.attempts) == (None, RESTORED, 2)
    assert Path(child_log).read_text().split() == ["3", "3"]
    assert ("job 2 'note_and_square' completed in an earlier run, but a job it depends on "
            "runs again in this one: it runs again too") in (run / "corral.log").read_text()
    lose_the_parents_result()

    Path(flag).touch()
    with corral.Scheduler(cores=1, journal=run) as scheduler:  # it fails now
        parent, child, other = make_jobs(scheduler)
        with pytest.raises(ValueError, match="flagged: 3"):
            parent.result(timeout=60)
        with pytest.raises(concurrent.futures.CancelledError, match=r"upstream job 1 .*failed"):
            child.result(timeout=60)
        assert (parent.status, child.status) == (JobStatus.FAILED, JobStatus.CANCELLED)
    assert [job.status for job in corral.Scheduler.open(run).jobs()] == [
        JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.COMPLETED]
    assert Path(parent_log).read_text().split() == ["3", "3", "3"]
    assert Path(child_log).read_text().split() == ["3", "3"]


def test_a_dependent_cancelled_in_a_rerun_keeps_its_earlier_try_and_what_it_wrote(tmp_path):
    """A job that completed in an earlier run, cancelled in this one because
    the parent it depends on ran again and failed, still counts its earlier
    try, and ``corral logs`` shows what that try wrote (cold review: TRIES 0,
    and "never started" although its stdout.1 was there)."""
    run, flag, log = tmp_path / "run", tmp_path / "flag", str(tmp_path / "log")

    def parent_then_child(scheduler: corral.Scheduler) -> tuple[corral.Job, corral.Job]:
        parent = scheduler.submit(jobs.note_and_raise_if_flagged, log, 3, 0, str(flag), 3)
        with contextlib.suppress(ValueError):
            parent.result(timeout=60)  # it has ended when its dependent is made
        return parent, scheduler.submit(jobs.talk, parent)

    with corral.Scheduler(cores=1, journal=run) as scheduler:
        assert parent_then_child(scheduler)[1].result(timeout=60) == 3
    with sqlite3.connect(run / "journal.db") as db:  # the parent runs again, and fails
        db.execute("UPDATE jobs SET result = NULL WHERE id = '1'")
    db.close()
    flag.touch()
    with corral.Scheduler(cores=1, journal=run) as scheduler:
        child = parent_then_child(scheduler)[1]
        with pytest.raises(concurrent.futures.CancelledError, match=r"upstream job 1 .*failed"):
            child.result(timeout=60)
    assert [(job.status, job.attempts) for job in corral.Scheduler.open(run).jobs()] == [
        (JobStatus.FAILED, 2), (JobStatus.CANCELLED, 1)]
    cli = Corral(tmp_path / "home", run)
    said = cli("logs", "2")
    assert (said.status, said.out) == (0, "")
    assert said.err == ("corral: job 2 'talk' did not start again (CANCELLED: upstream job 1 "
                           "'note_and_raise_if_flagged' failed); what its attempt 1, in an "
                           "earlier run, wrote: --attempt 1\n")
    assert cli.ok("logs", "2", "--attempt", "1").out.split("\n") == [
        "py-out 3", "child-out 3", ""]


def _claim_at_once(barrier, run_dir, workdir, answers):
    from corral.journal.workdir_mark import claim_workdir

    barrier.wait()
    try:
        claim_workdir(workdir, run_dir)
        answers.put("taken")
    except ValueError:
        answers.put("refused")


def test_two_runs_claiming_one_workdir_at_the_same_moment_do_not_both_get_it(tmp_path):
    """Review: two runs started together each found a free workdir free, and
    both took it (about 1 start in 20 here); one of them must be refused."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    for round_ in range(20):
        workdir = tmp_path / f"jobfiles{round_}"
        workdir.mkdir()
        runs = [tmp_path / f"{name}{round_}" for name in "ab"]
        for run in runs:
            run.mkdir()
            (run / "journal.db").touch()
        barrier, answers = fork.Barrier(2), fork.Queue()
        claims = [fork.Process(target=_claim_at_once, args=(barrier, run, workdir, answers))
                  for run in runs]
        for claim in claims:
            claim.start()
        for claim in claims:
            claim.join(30)
        assert sorted(answers.get(timeout=5) for _ in claims) == ["refused", "taken"]


def test_a_workdir_someone_else_holds_locked_is_still_taken(tmp_path):
    """Attack review: under `flock DIR python prog.py` the run waited for
    ever on the lock its own wrapper held."""
    import fcntl

    workdir = tmp_path / "jobfiles"
    workdir.mkdir()
    held = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        with corral.Scheduler(journal=tmp_path / "run", workdir=workdir) as scheduler:
            assert scheduler.shell("echo taken").result(timeout=60) is None
        assert (workdir / ".corral-run").read_text() == f"{tmp_path / 'run'}\n"
    finally:
        os.close(held)


def test_a_run_place_tells_a_run_deleted_from_one_moved_or_replaced(tmp_path):
    """Review: a daemon judged its run by the path, and made its socket again
    in a directory `rm -rf` was still emptying (which then could not be
    removed), and in another run's directory made at the path since."""
    from corral.journal.files import RunPlace

    run = tmp_path / "run"
    with corral.Scheduler(journal=run):
        pass
    place = RunPlace(run)
    try:
        assert (place.deleted(), place.here()) == (False, True)
        (run / "many").mkdir()  # an rm -rf under way: the journal is gone, the directory not yet
        (run / "journal.db").unlink()
        assert (place.deleted(), place.here()) == (True, False)
    finally:
        place.close()
    with corral.Scheduler(journal=run):  # a new run there
        pass
    place = RunPlace(run)
    try:
        moved = tmp_path / "moved"
        run.rename(moved)
        assert (place.deleted(), place.here()) == (False, False), "moved is not deleted"
        with corral.Scheduler(journal=run):  # another run at the old path
            pass
        assert (place.deleted(), place.here()) == (False, False), "its path is another run's"
    finally:
        place.close()


def test_a_writer_whose_driver_died_waiting_for_a_sync_ends_well_and_the_run_reads(tmp_path):
    """Re-attack review: a driver killed while it waited for a sync (now sent as
    every journaled Scheduler starts) left its writer to die on the answer's
    broken pipe, its note of writing kept: every later command refused the run as
    incomplete, "move it away", though nothing was lost."""
    from corral.journal.store import Journal

    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        assert sched.submit(jobs.square, 3).result(timeout=60) == 9
    journal = Journal(run)
    writer = psutil.Process(journal._writer.pid)
    writer.suspend()
    journal._send(("sync",))  # as flush(wait=True) sends it; its answer never read:
    journal._answers.close()  # the driver is gone
    writer.resume()
    journal._pipe.close()  # (all that is left of a dead driver: its end of the pipe)
    journal._release_lock()
    journal.closed = True  # (nothing of it is left to close)
    assert writer.wait(timeout=30) == 1  # ended as when its driver dies, not by a traceback
    assert [job.status for job in corral.Run(run).jobs()] == [JobStatus.COMPLETED]
    with corral.Scheduler(cores=1, journal=run) as sched:  # not refused as incomplete
        assert sched.submit(jobs.square, 3).result(timeout=60) == 9


def test_a_shown_result_is_bounded_and_keeps_what_it_shows_as_written():
    """Re-attack review: crafted results took gigabytes (a set of range(10**8)), a
    deep list raised a traceback, and a path's spaces were collapsed."""
    import pickle

    from corral.cli.result_shown import shown_result

    # 200,000 lists, each in the next, written as pickle opcodes (pickle.dumps recurses).
    deep_blob = b"\x80\x04" + b"]" * 200_000 + b"a" * 199_999 + b"."
    assert shown_result(deep_blob, 1, as_json=True).startswith("[[[[")
    assert shown_result(pickle.dumps({"path": "/data/my     file"}), 2, as_json=True) == (
        '{"path": "/data/my     file"}')
    huge_set = b"\x80\x04cbuiltins\nset\ncbuiltins\nrange\nJ\x00\xe1\xf5\x05\x85R\x85R."
    assert shown_result(huge_set, 3, as_json=False).startswith(
        "not plain data (its pickle names builtins.range)")


def test_a_try_two_killed_daemons_left_running_is_said_to_have_ended_once(tmp_path):
    """Re-attack review: a daemon that took up a job a killed one had left
    running wrote that its try ended with that daemon, and kept its row for
    itself to run again; killed before it did, the next daemon wrote the same
    end again, and the history read RUNNING -> CANCELLED twice."""
    from types import SimpleNamespace

    from corral.journal.store import Journal

    run = tmp_path / "run"
    command = SimpleNamespace(
        id=1, name="train", deps=[], ended_deps=(), status=JobStatus.RUNNING, reason=None,
        exit_code=None, attempts=1, native_id=None, started=1_000_000.0, ended=None,
        jobdir=None, result_blob=None, error_blob=None, live_output=None)
    first = Journal(run, kind="daemon")  # the daemon that ran it, then was killed
    first.added(command, "key1", "key1", "shell", "train", "{}")
    first.moved(command, JobStatus.NEW, JobStatus.QUEUED, None)
    first.moved(command, JobStatus.QUEUED, JobStatus.RUNNING, None)
    first.flush(wait=True)
    first.close()  # (its row still RUNNING, as a killed daemon leaves it)
    for _ in range(2):  # two daemons that took it up, each gone before it ran it again
        Journal(run, kind="daemon").close()
    changes = [(old, new) for _, _, old, new, _ in corral.Run(run).events(1)]
    assert changes == [("new", "queued"), ("queued", "running"), ("running", "cancelled")], \
        changes
