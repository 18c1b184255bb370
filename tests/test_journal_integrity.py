"""The journal is never silently wrong (issue 9, items 2 and 3).

A call that finished is never run again, however quickly its drivers are
killed one after another; a row SQLite refuses costs only itself, and the
driver says so; a damaged, empty or incomplete journal is one line naming the
file and what is wrong (exit 3 from ``corral``), never a run without jobs; a
damaged stored result runs its job again or raises, never answers None.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from support.cli import Corral, assert_one_line_error, pid_gone, read_until
from support.processes import pids_alive
from support.waiting import wait_until
from test_journal import RESTORED, finish, kill_while_a_finished_job_is_unseen, lines, start_driver

import corral
import jobs
import journal_driver
from corral import JobStatus
from corral.journal import eventlog
from corral.core.record import COMPLETED_ALL_THE_SAME
from corral.errors import CorralError
from corral.errors import JournalError

DRIVERS = Path(__file__).with_name("integrity_drivers.py")
MOVE_AWAY = "move it away to start the run afresh"


def start_integrity_driver(*args: object) -> subprocess.Popen:
    """Start integrity_drivers.py; it waits on its stdin until the test kills it."""
    return subprocess.Popen([sys.executable, os.fspath(DRIVERS), *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def kill_once_ready(driver: subprocess.Popen, ready: bytes,
                    first: Callable[[], None] | None = None) -> None:
    """Once *driver* has printed *ready*, SIGKILL it (after *first*, if given)
    and wait until every process it had started is gone too."""
    started: list[int] = []
    try:
        read_until(driver, ready)
        started = [process.pid for process in psutil.Process(driver.pid).children(recursive=True)]
        if first is not None:
            first()
    finally:
        driver.kill()
        driver.wait(timeout=30)
        driver.stdin.close()
        driver.stdout.close()
    wait_until(lambda: not pids_alive(started), 10, "the killed driver's processes to end")


@pytest.fixture
def cli(tmp_path: Path) -> Corral:
    """The real ``corral`` command on the run directory ``tmp_path/run``."""
    return Corral(tmp_path / "home", tmp_path / "run")


def completed_run(run: Path, log: Path) -> None:
    """A run whose one call (job 1) completed; its journal closed cleanly."""
    with corral.Scheduler(cores=1, journal=run) as scheduler:
        assert scheduler.submit(journal_driver.logged_square, str(log), 5).result(timeout=30) == 25


def update_journal(run: Path, sql: str, *parameters: object) -> None:
    database = sqlite3.connect(run / "journal.db")
    database.execute(sql, parameters)
    database.commit()
    database.close()


def _shift_event_times(run: Path, job_id: str, to: set[JobStatus], seconds: float) -> int:
    """Move the times of *job_id*'s changes to the statuses *to* by *seconds*
    in the journal's batches of changes; return how many were moved."""
    database = sqlite3.connect(run / "journal.db")
    moved = 0
    for seq, *row in database.execute(
            "SELECT seq, jobs, times, moves, reasons FROM event_batches").fetchall():
        changes = list(eventlog.unpack(tuple(row)))
        kept = eventlog.EventColumns()
        for changed, at, old, new, reason in changes:
            if changed == job_id and JobStatus(new) in to:
                at, moved = at + seconds, moved + 1
            kept.add(changed, at, None if old is None else JobStatus(old), JobStatus(new), reason)
        database.execute("UPDATE event_batches SET jobs=?, times=?, moves=?, reasons=? "
                         "WHERE seq=?", (*eventlog.batch_row(*kept.message()), seq))
    database.commit()
    database.close()
    return moved


def _submit_noted(sched: corral.Scheduler, kind: str, release: Path, log: Path) -> corral.Job:
    """A job that runs once *release* exists and notes each run in *log*."""
    if kind == "call":
        return sched.submit(jobs.note_run_when_released, str(release), str(log), 7)
    return sched.shell(f"while [ ! -e '{release}' ]; do sleep 0.01; done; echo 7 >> '{log}'")


def _in_the_loop_once_it_has_answered(sched: corral.Scheduler, job: corral.Job,
                                      release: Path, then: Callable[[], object]) -> object:
    """Let *job* end, and once its worker's answer waits unread in the pipe, do
    *then* on the control loop's thread (before the loop reads the answer): the
    moment a cancel can meet a job that has just ended."""
    import select

    engine, record = sched._engine, job._record

    def when_answered() -> object:
        release.touch()
        worker = engine.backend._running[record.dispatched_id]
        ready, _, _ = select.select([worker.replies], [], [], 30)
        assert ready, "the worker never answered"
        return then()

    wait_until(lambda: job.status is JobStatus.RUNNING, message="the job to run")
    # A worker started for the job first says when it starts it: that message
    # must be read, so that the next one waiting is the job's end.
    wait_until(lambda: not engine.backend._running[record.dispatched_id].starting,
               message="the worker to say it started the job")
    return engine.call(when_answered)


@pytest.mark.parametrize("kind", ["call", "command"])
def test_cancelling_a_job_whose_end_waits_unread_finds_it_completed(tmp_path, kind):
    """The loop reads a worker's answers in bulk: a job may have ended, its answer
    still in the pipe, when cancel() comes. It is not made CANCELLED (a rerun
    would run it again): cancel() says False, and the job keeps its outcome."""
    release, log = tmp_path / "release", tmp_path / "runs"
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as sched:
        job = _submit_noted(sched, kind, release, log)
        record = job._record
        cancelled, _ = _in_the_loop_once_it_has_answered(
            sched, job, release,
            lambda: sched._engine._cancel_noting_queued(record, "cancelled by the test"))
        assert cancelled is False
        assert (job.status, job.cancel()) == (JobStatus.COMPLETED, False)
        assert job.result(timeout=30) == (7 if kind == "call" else None)


@pytest.mark.parametrize("kind", ["call", "command"])
def test_a_job_cancelled_as_it_completed_keeps_its_outcome_and_is_not_run_again(tmp_path,
                                                                                 kind):
    """BUG (review): a cancel that crossed the job's end on its way made the job
    CANCELLED and dropped its outcome: a journaled rerun ran it a second time
    (1 to 2 of 3,000 calls, after leaving a map early). It stays CANCELLED, as
    cancel() said, but keeps its exit code and result, and the rerun takes it."""
    run, release, log = tmp_path / "run", tmp_path / "release", tmp_path / "runs"
    with corral.Scheduler(cores=1, journal=run) as sched:
        job = _submit_noted(sched, kind, release, log)
        record = job._record
        assert _in_the_loop_once_it_has_answered(
            sched, job, release,
            lambda: sched._engine._cancel(record, "cancelled by the test")) is True
        wait_until(lambda: COMPLETED_ALL_THE_SAME in (job.reason or ""),
                   message="the job's own end to be read")
    assert job.status is JobStatus.CANCELLED
    assert job.reason == f"cancelled by the test; {COMPLETED_ALL_THE_SAME}"
    [stored] = corral.Scheduler.open(run).jobs()
    assert (stored.status, stored.exit_code) == (JobStatus.CANCELLED, 0)

    with corral.Scheduler(cores=1, journal=run) as sched:
        again = _submit_noted(sched, kind, release, log)
        assert again.result(timeout=30) == (7 if kind == "call" else None)
    assert again.reason == RESTORED
    assert lines(log) == ["7"]  # it ran once


def test_a_call_that_caught_jobstopped_and_returned_is_no_completion(tmp_path):
    """Attack review: a call whose bare except: swallowed the cancel's
    JobStopped returned its partial work, which the journal kept as "it had
    completed before the cancel reached it" and the rerun restored as the
    job's result. It is a stopped call's: CANCELLED, and the rerun runs it."""
    run, started, release = tmp_path / "run", tmp_path / "started", tmp_path / "release"
    with corral.Scheduler(cores=1, journal=run) as sched:
        job = sched.submit(jobs.partial_unless_released, str(started), str(release))
        wait_until(started.exists, message="the call to start")
        assert job.cancel()
        timed = sched.options(timeout=0.5).submit(jobs.partial_unless_released,
                                                  str(tmp_path / "also"), str(release))
        with pytest.raises(corral.JobTimedOut):
            timed.result(timeout=30)
    assert timed.reason == ("timed out after 0.5s; it caught JobStopped and returned; what it "
                            "returned may be partial, and is not kept")
    stored = corral.Run(run).job(job.id)
    assert (stored.status, stored.reason) == (JobStatus.CANCELLED, "cancelled by user")

    release.touch()
    with corral.Scheduler(cores=1, journal=run) as sched:
        again = sched.submit(jobs.partial_unless_released, str(started), str(release))
        assert again.result(timeout=30) == "whole"
    assert again.reason != RESTORED


def test_a_job_aborted_and_cancelled_as_it_stopped_early_runs_again_whole(tmp_path):
    """Attack review: a map's chunk asked to abort stops after the call that runs
    and returns the calls it made; a cancel of the map's unread jobs that crossed
    that answer kept it as "completed before the cancel reached it", and the rerun
    restored the short chunk: the map lost calls and shifted the rest, silently."""
    import select

    run, release = tmp_path / "run", tmp_path / "release"
    with corral.Scheduler(cores=1, journal=run) as sched:
        job = sched.submit(jobs.whole_unless_aborted, str(release))
        engine, record = sched._engine, job._record
        wait_until(lambda: job.status is JobStatus.RUNNING, message="the job to run")
        wait_until(lambda: not engine.backend._running[record.dispatched_id].starting,
                   message="the worker to say it started the job")

        def abort_then_cancel_once_it_answered() -> object:
            engine.abort(record)
            worker = engine.backend._running[record.dispatched_id]
            ready, _, _ = select.select([worker.replies], [], [], 30)
            assert ready, "the job never stopped"
            return engine._cancel(record, "cancelled by the test")

        assert engine.call(abort_then_cancel_once_it_answered) is True
    [stored] = corral.Scheduler.open(run).jobs()
    assert stored.status is JobStatus.CANCELLED
    assert stored.reason == "cancelled by the test"  # not "... completed before the cancel"

    release.touch()
    with corral.Scheduler(cores=1, journal=run) as sched:
        again = sched.submit(jobs.whole_unless_aborted, str(release))
        assert again.result(timeout=30) == "whole"
    assert again.reason != RESTORED


def test_a_call_an_abort_reached_leaves_no_outcome_a_next_driver_would_take_as_completed(
        tmp_path):
    """Re-attack review: a chunk that an abort stopped short logged its short
    list as its outcome; its driver killed before it journaled the abort, the
    next one restored the chunk as completed and its map lost calls. The outcome
    log is what that next driver reads: an aborted call is not in it."""
    from corral.runtime.outcomes import read_outcomes

    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        aborted = sched.submit(jobs.stop_as_if_aborted)
        plain = sched.submit(jobs.square, 3)
        corral.wait([aborted, plain], timeout=30)
        logged = read_outcomes(run)  # (a session that ends well removes its log)
    assert str(plain.id) in logged and str(aborted.id) not in logged


# -- 2. resume never re-runs a finished call --------------------------------------------------


def test_a_call_that_finished_as_its_driver_died_never_runs_again_after_a_second_quick_kill(
        tmp_path, cli):
    """BUG: the second driver marked the call CANCELLED without reading the
    outcome log; killed before it recorded the result, it left the third run
    to run the call again (5 of 5 tries)."""
    run, side, gates = tmp_path / "run", tmp_path / "side", tmp_path / "gates"
    side.mkdir()
    gates.mkdir()
    args = ("squares", run, side, gates, 3, 1, 0.0)  # job 0 runs freely, 1 and 2 wait at gates
    finished_unseen, killed_midway = kill_while_a_finished_job_is_unseen(tmp_path, args, 1)

    second = start_integrity_driver("open", run)
    kill_once_ready(second, b"opened\n")

    rows = cli("status", "--all").rows()  # what the second session left, as people see it
    stored = corral.Scheduler.open(run).jobs()  # job i of the script is the i-th dispatched
    unseen = stored[finished_unseen]
    assert (unseen.status, unseen.reason, unseen.result_value()) == (
        JobStatus.COMPLETED, "completed; found in the outcome log after its driver ended",
        finished_unseen ** 2)
    assert rows[str(unseen.id)]["STATUS"] == "COMPLETED"
    assert stored[killed_midway].status is JobStatus.CANCELLED
    assert stored[killed_midway].reason.startswith("its driver ended before it did")

    (gates / "all").touch()
    printed = finish(start_driver(tmp_path, *args, output="third.out"), tmp_path,
                     output="third.out")
    assert json.loads(printed.splitlines()[-1]) == [0, 1, 4]
    assert {path.name: len(lines(path)) for path in side.iterdir()} == {"0": 1, "1": 1, "2": 1}
    third = corral.Scheduler.open(run).jobs()
    assert [job.status for job in third] == [JobStatus.COMPLETED] * 3
    assert third[finished_unseen].reason == RESTORED


# -- 3. a write SQLite refuses ----------------------------------------------------------------


def test_a_row_sqlite_refuses_loses_only_itself_and_the_driver_says_so(tmp_path, cli):
    """BUG: one id SQLite cannot store lost the whole batch (the other jobs
    too), the script ended well and ``corral status`` said "(no jobs)"."""
    run, log = tmp_path / "run", tmp_path / "log"
    refused = corral.Job(journal_driver.logged_square, (str(log), 2), id="refused")
    # job.py refuses such ids now: the writer must cope with any refused value
    refused._record.id = 2 ** 64
    kept = [corral.Job(journal_driver.logged_square, (str(log), value)) for value in (3, 4)]

    message = (f"cannot write the journal {run / 'journal.db'}: job {2 ** 64} was not recorded: "
               "OverflowError: Python int too large to convert to SQLite INTEGER")
    with (pytest.raises(JournalError, match=f"^{re.escape(message)}$"),
          corral.Scheduler(cores=1, journal=run) as scheduler):
        scheduler.dispatch([kept[0], refused, kept[1]])  # one batch for the writer
        assert [job.result(timeout=30) for job in kept] == [9, 16]

    status = cli("status")
    assert status.status == 0, str(status)
    assert {row["ID"]: row["STATUS"] for row in status.rows().values()} == {
        str(kept[0].id): "COMPLETED", str(kept[1].id): "COMPLETED"}
    assert [job.result_value() for job in corral.Scheduler.open(run).jobs()] == [9, 16]


# -- 3. a damaged journal ----------------------------------------------------------------------


def _bad_status(run: Path) -> str:
    update_journal(run, "UPDATE jobs SET status='bogus' WHERE id='1'")
    return (f"{run / 'journal.db'} is damaged: job 1 has the status 'bogus', which is no job "
            f"status; {MOVE_AWAY}")


def _no_status(run: Path) -> str:
    update_journal(run, "UPDATE jobs SET status=NULL WHERE id='1'")
    return f"{run / 'journal.db'} is damaged: job 1 has no status; {MOVE_AWAY}"


def _no_name(run: Path) -> str:
    update_journal(run, "UPDATE jobs SET name=NULL WHERE id='1'")
    return (f"{run / 'journal.db'} is damaged: job 1 has the name None, which is no text; "
            f"{MOVE_AWAY}")


def _bad_spec(run: Path) -> str:
    update_journal(run, "UPDATE jobs SET spec='{not json' WHERE id='1'")
    return (f"{run / 'journal.db'} is damaged: job 1 has a spec that is no JSON object "
            f"('{{not json'); {MOVE_AWAY}")


def _bad_time(run: Path) -> str:
    update_journal(run, "UPDATE jobs SET ended='yesterday' WHERE id='1'")
    return (f"{run / 'journal.db'} is damaged: job 1 has ended 'yesterday', which is no "
            f"number; {MOVE_AWAY}")


def _empty_file(run: Path) -> str:
    (run / "journal.db").write_bytes(b"")
    return (f"{run / 'journal.db'} is empty (0 bytes): it was truncated, or is no corral "
            f"journal; {MOVE_AWAY}")


def _no_tables(run: Path) -> str:
    (run / "journal.db").unlink()
    database = sqlite3.connect(run / "journal.db")
    database.execute("PRAGMA journal_mode=WAL")
    database.execute("PRAGMA user_version=1")  # a page is written: a database, with no tables
    database.close()
    return (f"{run / 'journal.db'} is not a whole corral journal: it has no events, jobs, meta, "
            f"sessions tables; {MOVE_AWAY}")


def _a_fifo(run: Path) -> str:
    """(Attack review: corral status waited for good for a writer of the FIFO.)"""
    (run / "journal.db").unlink()
    os.mkfifo(run / "journal.db")
    return (f"{run / 'journal.db'} is not a corral journal, or it is damaged (it is no regular "
            f"file); {MOVE_AWAY}")


def _a_directory(run: Path) -> str:
    (run / "journal.db").unlink()
    (run / "journal.db").mkdir()
    return (f"{run / 'journal.db'} is not a corral journal, or it is damaged (it is no regular "
            f"file); {MOVE_AWAY}")


@pytest.mark.parametrize("damage", [_bad_status, _no_status, _no_name, _bad_spec, _bad_time,
                                    _empty_file, _no_tables, _a_fifo, _a_directory],
                         ids=["bad status", "no status", "no name", "bad spec", "bad time",
                              "empty file", "no tables", "a FIFO", "a directory"])
def test_a_damaged_journal_is_one_line_naming_the_file_and_what_is_wrong(tmp_path, cli, damage):
    """BUG: a bad status or spec gave a traceback; an empty journal.db showed
    "(no jobs)" with exit 0."""
    run = tmp_path / "run"
    completed_run(run, tmp_path / "log")
    message = damage(run)

    assert_one_line_error(cli("status"), 3, f"^corral: error: {re.escape(message)}$")
    with pytest.raises(JournalError, match=f"^{re.escape(message)}$"):
        corral.Scheduler.open(run).jobs()
    with pytest.raises(JournalError, match=f"^{re.escape(message)}$"):
        corral.Scheduler(cores=1, journal=run)  # a driver does not resume from it either


@pytest.mark.parametrize("damage", [_bad_status, _no_status], ids=["bad status", "no status"])
def test_the_status_counts_a_wait_polls_say_a_damaged_status_as_every_reader_does(tmp_path,
                                                                                   damage):
    run = tmp_path / "run"
    completed_run(run, tmp_path / "log")
    message = damage(run)
    for asked in (None, ["1"]):
        with pytest.raises(JournalError, match=f"^{re.escape(message)}$"):
            corral.Scheduler.open(run).status_counts(asked)


def test_status_counts_count_the_run_or_the_jobs_asked_about_without_their_rows(tmp_path):
    """What `corral wait` polls: counts per status from the journal's index
    (it read every row five times a second, most of a core beside a big run)."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as scheduler:
        ok = [scheduler.submit(abs, n) for n in range(1200)]  # (more ids than one query asks)
        bad = scheduler.options(name="bad").submit(divmod, 1, 0)
        corral.wait([*ok, bad])
    opened = corral.Scheduler.open(run)
    S = JobStatus
    assert opened.status_counts() == {S.COMPLETED: 1200, S.FAILED: 1}
    asked = [str(job.id) for job in ok[:700]] + [str(bad.id), str(bad.id), "no such job"]
    assert opened.status_counts(asked) == {S.COMPLETED: 700, S.FAILED: 1}
    assert opened.status_counts([]) == {}


def test_a_torn_page_of_the_status_index_is_said_to_be_damage_not_a_traceback(tmp_path, cli):
    """Attack review: pointers of the index on status overwritten (a torn write,
    bit rot) made `corral status` end in a traceback, ValueError: None is not a
    valid JobStatus: the counts come from that index."""
    run = tmp_path / "run"
    completed_run(run, tmp_path / "log")
    database = sqlite3.connect(run / "journal.db")
    [(root,)] = database.execute(
        "SELECT rootpage FROM sqlite_master WHERE name='jobs_by_status'").fetchall()
    [(page_size,)] = database.execute("PRAGMA page_size").fetchall()
    database.close()
    with open(run / "journal.db", "r+b") as journal:
        journal.seek((root - 1) * page_size + 8)  # the page's cell pointers
        journal.write(b"\x4d\x8e" * 3)  # out of the page
    message = (f"{run / 'journal.db'} is not a corral journal, or it is damaged (its index of "
               f"job statuses holds None, which no job has); {MOVE_AWAY}")
    assert_one_line_error(cli("status"), 3, f"^corral: error: {re.escape(message)}$")
    assert_one_line_error(cli("wait"), 3, f"^corral: error: {re.escape(message)}$")


def test_a_read_only_journal_is_said_to_be_read_only_not_damaged(tmp_path, cli):
    """BUG (attack review): a journal that could not be written (``chattr +i``,
    a read-only mount; a 0400 file for a user other than root) was called
    "not a corral journal, or damaged", with the advice to move it away: the
    run's whole history."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as scheduler:
        scheduler.submit(jobs.square, 2).result(timeout=30)
    journal = run / "journal.db"
    subprocess.run(["chattr", "+i", os.fspath(journal)], check=True)  # (root ignores modes)
    try:
        with pytest.raises(JournalError, match=(
                rf"^cannot write the journal {re.escape(str(journal))}: it is read-only "
                r"\(attempt to write a readonly database\); make it, its journal.db-wal and "
                r"journal.db-shm files and its directory writable \(see ls -l, lsattr, "
                r"mount\) to go on with this run; corral status and logs read it as it is$")):
            corral.Scheduler(cores=1, journal=run)
        assert cli("status").status == 0  # still read as it is
    finally:
        subprocess.run(["chattr", "-i", os.fspath(journal)], check=True)
    # Its directory unwritable (attack review, round 2): "damaged; move it away"
    # was said again, and following it would have thrown the run's history away.
    subprocess.run(["chattr", "+i", os.fspath(run)], check=True)
    try:
        with pytest.raises(CorralError) as refused:
            corral.Scheduler(cores=1, journal=run)
        said = str(refused.value)
        assert "damaged" not in said and "move" not in said, said
        assert re.search(rf"cannot (open|write|make)\b.* {re.escape(str(run))}", said), said
        assert "directory may not be writable" in said, said
    finally:
        subprocess.run(["chattr", "-i", os.fspath(run)], check=True)


@pytest.mark.parametrize("torn", [False, True], ids=["deleted", "torn to its header"])
def test_a_journal_whose_write_ahead_log_was_lost_is_refused_not_shown_empty(tmp_path, cli,
                                                                             torn):
    """BUG: the rows of a live session sit in journal.db-wal; a crash that
    lost that file left a journal that ``corral status`` showed as "(no jobs)".
    One torn to its 32-byte header, no frame after it, was taken as whole
    (attack review): status showed the run as it was before that session."""
    run, log = tmp_path / "run", tmp_path / "log"
    driver = start_integrity_driver("hold", run, log)

    def kill_its_writer_first() -> None:
        wait_until(lambda: [job.status for job in corral.Scheduler.open(run).jobs()]
                   == [JobStatus.COMPLETED], message="the call recorded in the journal")
        [writer] = [process for process in psutil.Process(driver.pid).children()
                    if "corral.journal.writer" in " ".join(process.cmdline())]
        writer.send_signal(signal.SIGKILL)
        wait_until(lambda: pid_gone(writer.pid), 10, "the writer to die")  # (a zombie: dead)

    kill_once_ready(driver, b"36\n", first=kill_its_writer_first)
    wal = run / "journal.db-wal"
    assert wal.stat().st_size > 0  # what the session recorded is there, and only there
    if torn:
        os.truncate(wal, 32)
    else:
        wal.unlink()  # the crash that loses it
    (run / "journal.db-shm").unlink()

    message = (f"{run / 'journal.db'} is incomplete: its write-ahead log journal.db-wal is "
               "missing or empty, but session 1 never closed the journal, so what it recorded "
               f"there is lost; {MOVE_AWAY}")
    assert_one_line_error(cli("status"), 3, f"^corral: error: {re.escape(message)}$")
    with pytest.raises(JournalError, match=f"^{re.escape(message)}$"):
        corral.Scheduler(cores=1, journal=run)
    assert lines(log) == ["6"]


def _meta_in_the_file_alone(run: Path) -> dict[str, str]:
    """journal.db's ``meta`` as the file alone holds it (its log not read)."""
    with contextlib.closing(sqlite3.connect(f"file:{run / 'journal.db'}?immutable=1",
                                            uri=True)) as db:
        return dict(db.execute("SELECT key, value FROM meta"))


def _run_in_a_killed_process(program: str, *args: object) -> None:
    done = subprocess.run([sys.executable, "-c", program, *map(os.fspath, args)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_sessions_killed_before_their_first_commit_leave_a_run_the_next_session_opens(tmp_path,
                                                                                     cli):
    """CI: a driver, its writer and its workers killed at once, the writer
    before it had committed anything of its session, left a run every later
    session refused ("incomplete ... what it recorded there is lost ... move
    it away"), though nothing was lost: the writer had emptied the log when it
    noted that it writes. And (re-attack review) a driver killed as it opened
    the run again, before its own writer's note, left the same: the earlier
    session's note in journal.db, its log moved in and deleted."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        assert sched.submit(jobs.square, 7).result(timeout=60) == 49
    _run_in_a_killed_process("import os, sys\n"
                             "from corral.journal.writer import _Writer\n"
                             "_Writer(sys.argv[1], 2)\n"
                             "os.kill(os.getpid(), 9)\n", run / "journal.db")
    assert _meta_in_the_file_alone(run)["writing"] == "2"  # the premise
    status = cli("status")
    assert status.status == 0, str(status)
    assert [row["STATUS"] for row in status.rows().values()] == ["COMPLETED"]

    _run_in_a_killed_process("import os, sys, corral\n"
                             "from corral.journal.store import Journal\n"
                             "Journal._start_writer = lambda *_: os.kill(os.getpid(), 9)\n"
                             "corral.Scheduler(cores=1, journal=sys.argv[1])\n", run)
    assert not (run / "journal.db-wal").exists()  # the premise: the log moved in at the close
    status = cli("status")
    assert status.status == 0, str(status)
    assert [row["STATUS"] for row in status.rows().values()] == ["COMPLETED"]
    with corral.Scheduler(cores=1, journal=run) as again:
        restored = again.submit(jobs.square, 7)
        assert restored.result(timeout=60) == 49 and restored.reason == RESTORED


def test_the_note_that_a_session_writes_reaches_journal_db_once_a_reader_lets_go(tmp_path):
    """Re-attack review: a reader in the middle of a read as the writer started
    kept the writer's note out of journal.db (its checkpoint could not move
    it in), and after it every commit sat in the log alone: a log lost then
    went unnoticed, and the run read as if that session never was."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as sched:
        sched.submit(jobs.square, 2).result(timeout=60)
    reader = sqlite3.connect(f"file:{run / 'journal.db'}?mode=ro", uri=True,
                             isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM jobs").fetchone()  # its snapshot: held
        with corral.Scheduler(cores=1, journal=run) as sched:
            assert sched.submit(jobs.square, 3).result(timeout=60) == 9
            sched._journal.flush(wait=True)
            assert "writing" not in _meta_in_the_file_alone(run)  # the premise: held out
            reader.execute("COMMIT")
            assert sched.submit(jobs.square, 4).result(timeout=60) == 16
            sched._journal.flush(wait=True)
            assert _meta_in_the_file_alone(run)["writing"] == "2"
    finally:
        reader.close()


def test_a_run_whose_driver_was_killed_but_whose_writer_finished_is_read_as_it_was(tmp_path, cli):
    """The other side of the check above: a killed driver's writer commits what
    it was sent and says it is done, so its journal is whole, not "incomplete"."""
    run, log = tmp_path / "run", tmp_path / "log"
    driver = start_integrity_driver("hold", run, log)
    kill_once_ready(driver, b"36\n")
    assert not (run / "journal.db-wal").exists()  # the writer moved its log into the file

    status = cli("status")
    assert status.status == 0, str(status)
    assert [row["STATUS"] for row in status.rows().values()] == ["COMPLETED"]


def test_a_damaged_stored_result_raises_when_read_and_runs_its_job_again_on_resume(tmp_path):
    """BUG: a damaged result came back as None, from Run.results() and on resume."""
    run, log = tmp_path / "run", tmp_path / "log"
    completed_run(run, log)
    update_journal(run, "UPDATE jobs SET result=? WHERE id='1'", b"\x80\x05not a pickle")

    message = (rf"^job 1 'logged_square': its stored result in {re.escape(str(run))}/journal\.db "
               r"cannot be loaded \(UnpicklingError: .+\); the journal is damaged, or the value "
               r"needs code this process cannot import$")
    with pytest.raises(JournalError, match=message):
        corral.Scheduler.open(run).results()
    with pytest.raises(JournalError, match=message):
        corral.Scheduler.open(run).job(1).result_value()

    with corral.Scheduler(cores=1, journal=run) as scheduler:
        again = scheduler.submit(journal_driver.logged_square, str(log), 5)
        assert again.result(timeout=30) == 25
    assert (again.id, again.reason) == (1, None)  # its own job, run again, not restored
    assert lines(log) == ["5", "5"]
    assert [result.data for result in corral.Scheduler.open(run).results()] == [25]


def test_a_call_that_ended_before_its_driver_stamped_it_running_is_still_found(tmp_path, cli):
    """BUG (review): the outcome counted only if it ended after the job's last
    event; the driver stamps RUNNING after it has handed the call over, so a
    fast call could end first and resume ran it again."""
    run, side, gates = tmp_path / "run", tmp_path / "side", tmp_path / "gates"
    side.mkdir()
    gates.mkdir()
    args = ("squares", run, side, gates, 3, 1, 0.0)
    finished_unseen, _ = kill_while_a_finished_job_is_unseen(tmp_path, args, 1)
    job_id = corral.Scheduler.open(run).jobs()[finished_unseen].id
    shifted = _shift_event_times(run, str(job_id), {JobStatus.SUBMITTED, JobStatus.RUNNING},
                                 3600.0)
    assert shifted == 2

    (gates / "all").touch()
    printed = finish(start_driver(tmp_path, *args, output="second.out"), tmp_path,
                     output="second.out")
    assert json.loads(printed.splitlines()[-1]) == [0, 1, 4]
    assert {path.name: len(lines(path)) for path in side.iterdir()} == {"0": 1, "1": 1, "2": 1}


def _writer_with_one_job(tmp_path: Path, jobdir: str, result: bytes):
    """A journal writer (in this process) that has written one new job and, in a
    second batch, that job's end: the state row a refusal test looks at."""
    from corral.journal.eventlog import EventColumns
    from corral.journal.files import create_journal
    from corral.journal.writer import _Writer

    run = tmp_path / "run"
    run.mkdir()
    create_journal(run / "journal.db", "script")
    writer = _Writer(os.fspath(run / "journal.db"), 1)
    writer.db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000)  # a result "too big", cheaply
    writer.write([("jobs", [("1", 1, 0, "key#1", "big", "call", "m.big(…)", "{}", [], 1,
                             "key#1")], None,
                   [("running", None, None, 1, "pid 7", 1.0, None, jobdir, None, None, None,
                     "1")], 1)])
    ended = EventColumns()
    ended.add("1", 2.0, JobStatus.RUNNING, JobStatus.COMPLETED, None)
    writer.write([("jobs", [], ended.message(),
                   [("completed", None, None, 1, "pid 7", 1.0, 2.0, jobdir, result, None, None,
                     "1")], 2)])  # (each batch numbered, as the driver numbers them)
    return run, writer


def test_a_result_too_big_for_the_journal_costs_the_result_not_the_jobs_status(tmp_path):
    run, writer = _writer_with_one_job(tmp_path, os.fspath(tmp_path / "run" / "1"),
                                       b"x" * 20_000)
    [job] = corral.Run(run).jobs()
    assert (job.status, job.result) == (JobStatus.COMPLETED, None)  # not left RUNNING
    assert writer.problems == [
        "the state of job 1: its result, error or output was not recorded (DataError: "
        "string or blob too big); its status was"]


def test_a_job_directory_whose_name_is_no_utf8_is_journaled_as_it_is(tmp_path):
    jobdir = os.fsdecode(os.fsencode(str(tmp_path / "run")) + b"/caf\xe9/1")
    run, writer = _writer_with_one_job(tmp_path, jobdir, b"result")
    [job] = corral.Run(run).jobs()
    assert (job.status, job.jobdir) == (JobStatus.COMPLETED, jobdir)
    assert writer.problems == []


# -- a killed driver's journal writer, still behind (attack review) ---------------------------

LAGGING_WRITER_DRIVER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import psutil
import corral, jobs

out = Path(sys.argv[1])
with corral.Scheduler(cores=1, journal=out / "run") as scheduler:
    writer = next(process for process in psutil.Process().children()
                  if "corral.journal.writer" in " ".join(process.cmdline()))
    print(writer.pid, flush=True)
    sys.stdin.readline()  # the test has stopped the writer: it falls behind
    scheduler.submit(jobs.note_run_then_wait, str(out / "runs"), str(out / "release"), 7).result()
"""


def _the_job(scheduler: corral.Scheduler, out: Path) -> corral.Job:
    return scheduler.submit(jobs.note_run_then_wait, str(out / "runs"), str(out / "release"), 7)


def _driver_with_a_lagging_writer(out: Path) -> tuple[subprocess.Popen, psutil.Process]:
    """A driver whose writer is stopped (as if far behind) while its job runs;
    the job has noted its run. Returns the driver and its writer."""
    driver = subprocess.Popen([sys.executable, "-c", LAGGING_WRITER_DRIVER, os.fspath(out),
                               os.fspath(Path(jobs.__file__).parent)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert driver.stdin is not None and driver.stdout is not None
    writer = psutil.Process(int(driver.stdout.readline()))
    writer.suspend()
    driver.stdin.write("go\n")
    driver.stdin.flush()
    wait_until(lambda: (out / "runs").exists(), timeout=30, message="the job to run")
    return driver, writer


#: A journal writer that holds its run's writer lock and never finishes: one stuck on a
#: dead disk or held by a debugger (its command line names the module and the run, as a
#: writer's does, so that the next session knows it for one).
STUCK_WRITER = """
import fcntl, sys, time
lock = open(sys.argv[1], "r+")
fcntl.flock(lock, fcntl.LOCK_EX)
lock.seek(0); lock.truncate(); lock.write(str(__import__("os").getpid())); lock.flush()
print("held", flush=True)
time.sleep(600)
"""


def test_an_earlier_writer_that_never_finishes_is_killed_and_the_next_session_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A killed driver's writer that does not finish within the patience is
    killed, its rows lost as if it had died with its driver: the next session
    neither waits for ever nor writes beside it."""
    monkeypatch.setattr("corral.journal.writer_lock.EARLIER_WRITER_PATIENCE_S", 0.5)
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as first:
        assert first.submit(int, 5).result(timeout=30) == 5
    stuck = subprocess.Popen(
        [sys.executable, "-c", STUCK_WRITER, os.fspath(tmp_path / "run" / "writer.lock"),
         "corral.journal.writer", os.fspath(tmp_path / "run" / "journal.db")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert stuck.stdout is not None and stuck.stdout.readline() == "held\n"
        with corral.Scheduler(cores=1, journal=tmp_path / "run") as again:
            assert again.submit(int, 6).result(timeout=30) == 6
        assert stuck.wait(timeout=30) == -signal.SIGKILL
    finally:
        stuck.kill()
        stuck.wait()
    told = [record.getMessage() for record in caplog.records if record.name == "corral.journal"]
    assert told == [
        f"waiting up to 0.5 s for the journal writer of an earlier session of {tmp_path / 'run'}"
        f" (pid {stuck.pid}, its driver gone) to write what it holds",
        f"the journal writer of an earlier session of {tmp_path / 'run'} (pid {stuck.pid}) "
        "did not finish within 0.5 s: killing it (what it had not written is lost)"]


def test_a_killed_drivers_stopped_writer_is_let_go_on_and_what_it_held_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer stopped (SIGSTOP, Ctrl-Z) when its driver was killed would never
    go on by itself: the next session killed it after its patience, and the job
    it had not yet written as begun ran a second time. Now it is let go on at
    once, writes what it holds, and the job is known and restored."""
    monkeypatch.setattr("corral.journal.writer_lock.EARLIER_WRITER_PATIENCE_S", 5.0)
    driver, writer = _driver_with_a_lagging_writer(tmp_path)
    (tmp_path / "release").touch()
    wait_until(lambda: (tmp_path / "run" / "outcomes").exists(), timeout=30,
               message="the job to end and its outcome to be logged")
    driver.kill()
    driver.wait(timeout=30)
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as again:
        assert pid_gone(writer.pid)
        job = _the_job(again, tmp_path)
        assert job.result(timeout=30) == 7
    assert job.reason == RESTORED and len(lines(tmp_path / "runs")) == 1
    told = [record.getMessage() for record in caplog.records if record.name == "corral.journal"]
    assert told == [
        f"waiting up to 5 s for the journal writer of an earlier session of {tmp_path / 'run'}"
        f" (pid {writer.pid}, its driver gone; it was stopped: let go on) to write what it holds"]


@pytest.mark.parametrize("broken", ["a directory", "a dangling link", "a pipe"])
def test_a_broken_writer_lock_is_refused_in_one_line_naming_it(tmp_path: Path,
                                                               broken: str) -> None:
    run = tmp_path / "run"
    corral.Scheduler(cores=1, journal=run).shutdown()
    lock = run / "writer.lock"
    lock.unlink()
    if broken == "a directory":
        lock.mkdir()
    elif broken == "a dangling link":
        lock.symlink_to(tmp_path / "nowhere")
    else:
        os.mkfifo(lock)
    with pytest.raises(JournalError, match=rf"^cannot use {re.escape(str(lock))} as the "
                                           r"journal writer's lock: .+; remove it$"):
        corral.Scheduler(cores=1, journal=run)
    assert corral.Scheduler(cores=1, journal=tmp_path / "other").shutdown() is None


@pytest.mark.parametrize("broken", ["a FIFO", "a directory"])
def test_a_run_lock_that_is_no_file_is_refused_in_one_line_not_waited_on(tmp_path, cli,
                                                                          broken):
    """Attack review: a FIFO in place of owner.lock made corral status, wait and
    a new Scheduler wait for good for a writer of the FIFO."""
    run = tmp_path / "run"
    completed_run(run, tmp_path / "log")
    lock = run / "owner.lock"
    lock.unlink()
    if broken == "a FIFO":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    message = (f"{lock} is {broken}, not the run's lock file; move it "
               "away, then the run can be read and driven again")
    for command in ("status", "wait"):
        assert_one_line_error(cli(command, timeout=20), 3,
                              f"^corral: error: {re.escape(message)}$")
    with pytest.raises(JournalError, match=f"^{re.escape(message)}$"):
        corral.Scheduler(cores=1, journal=run)


WAITING_DRIVER = """
import sys
import corral

with corral.Scheduler(cores=1, journal=sys.argv[1]) as scheduler:
    sys.stdin.readline()
"""


def test_the_corral_command_waits_for_a_driver_that_waits_for_an_earlier_writer(
        tmp_path: Path) -> None:
    """While a script waited for a killed driver's writer, `corral pause` said
    "no process drives the run: it was made by a script, which is not
    running" (round-3 review). The command waits for the script to serve."""
    from corral.journal.files import owner_of

    first, writer = _driver_with_a_lagging_writer(tmp_path)
    first.kill()
    first.wait(timeout=30)
    (tmp_path / "release").touch()
    run = tmp_path / "run"
    script = subprocess.Popen([sys.executable, "-c", WAITING_DRIVER, os.fspath(run)],
                              stdin=subprocess.PIPE, text=True)
    resumer = threading.Timer(1.0, writer.resume)  # the script waits for it until then
    try:
        wait_until(lambda: (owner_of(run) or {}).get("pid") == script.pid, timeout=30,
                   message="the script to take the run")
        resumer.start()
        paused = Corral(tmp_path / "home", run)("pause")
        assert (paused.status, paused.err) == (0, "")
        assert pid_gone(writer.pid)
    finally:
        resumer.cancel()
        with contextlib.suppress(psutil.NoSuchProcess):
            writer.resume()
        script.communicate("done\n", timeout=30)
    assert script.returncode == 0


def test_a_completed_calls_result_the_journal_does_not_hold_is_never_read_as_none(tmp_path):
    """Hostile-input review: a result too big for SQLite (a gigabyte) was left out
    of its row, and the job read back and restored as having returned None."""
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as scheduler:
        scheduler.submit(jobs.square, 3)
        scheduler.submit(jobs.noop)
    with contextlib.closing(sqlite3.connect(run / "journal.db")) as db, db:
        db.execute("UPDATE jobs SET result = NULL WHERE name = 'square'")
    stored = {job.name: job for job in corral.Run(run).jobs()}
    with pytest.raises(corral.JournalError, match=r"^job 1 'square' completed, but its result is "
                                                 r"not stored in .*journal\.db \(too big for the "
                                                 r"journal, or the journal is damaged\); run it "
                                                 r"again$"):
        stored["square"].result_value()
    assert stored["noop"].result_value() is None  # (None's own pickle: a value, kept)
    with corral.Scheduler(cores=1, journal=run) as scheduler:
        again, restored = scheduler.submit(jobs.square, 3), scheduler.submit(jobs.noop)
        assert again.result(timeout=30) == 9 and restored.result(timeout=30) is None
    assert restored.reason.startswith("completed in an earlier run") and again.reason is None


def test_outcomes_read_again_since_a_time_are_those_that_ended_since_and_whole(tmp_path):
    """What the Dask backend reads after each batch of kills (attack review: it
    read the whole log every time, a second's stall of the control loop a
    cancel at 570 MB): only the calls that ended since the time asked, the
    latest record of each, and a record half written not before it is whole."""
    import pickle
    import time

    from corral.runtime.outcomes import OutcomeLog, OutcomesSince, outcomes_directory

    directory = outcomes_directory(tmp_path)
    log, reader = OutcomeLog(), OutcomesSince(tmp_path)
    for job_id in (1, 2):
        log.append(directory, pickle.dumps((job_id, True, b"old")))
    assert set(reader.read(0.0)) == {"1", "2"}
    between = time.time()
    wait_until(lambda: time.time() > between, message="the clock to move on")
    log.append(directory, pickle.dumps((2, True, b"new")))
    log.append(directory, pickle.dumps((3, False, b"error")))
    found = reader.read(between)
    assert {job: entry[:2] for job, entry in found.items()} == {"2": (True, b"new"),
                                                                "3": (False, b"error")}
    assert set(reader.read(0.0)) == {"1", "2", "3"}  # (further back than a mark: all again)
    [name] = os.listdir(directory)
    record = pickle.dumps((4, True, b"late"))
    with open(os.path.join(directory, name), "ab") as handle:  # its header and half of it
        handle.write(len(record).to_bytes(4, "little") + struct_time_now() + record[:5])
    assert "4" not in reader.read(between)
    with open(os.path.join(directory, name), "ab") as handle:
        handle.write(record[5:])
    assert reader.read(between)["4"][:2] == (True, b"late")


def struct_time_now() -> bytes:
    """An outcome record's end time, as the log writes it (a little-endian double)."""
    import struct
    import time

    return struct.pack("<d", time.time())
