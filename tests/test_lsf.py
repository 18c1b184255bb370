"""``backend="lsf"`` on the fake LSF the tests ship (``tests/support/fakelsf``):
what a user of an LSF cluster notices, beyond the contract suite's stories.
LSF itself is closed source; its output formats are tested in test_lsf_commands.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from jobs import add, raise_custom, square, wait_for_file
from support.fakelsf.cluster import FakeLsf
from support.waiting import wait_until

import corral
from corral.backends.batch.lsf.backend import control_without_driver
from corral.status import JobStatus

POLL = {"poll_interval": 0.05, "max_poll_interval": 0.1}
TESTS = os.fspath(Path(__file__).parent)


@contextmanager
def fake_lsf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings) -> Iterator[FakeLsf]:
    """A fake LSF on this process's PATH, stopped at the end (nothing left running)."""
    cluster = FakeLsf(tmp_path / "fakelsf", **settings)
    cluster.root.mkdir()
    for name, value in cluster.environ().items():
        monkeypatch.setenv(name, value)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def lsf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLsf]:
    """A fake LSF with a CLEAN_PERIOD of 30 s and a minute of 0.5 s (bsub -W)."""
    with fake_lsf(tmp_path, monkeypatch, forget_s=30.0, minute_s=0.5) as cluster:
        yield cluster


@contextmanager
def scheduler(tmp_path: Path, **options) -> Iterator[corral.Scheduler]:
    with corral.Scheduler(backend="lsf", workdir=tmp_path / "run",
                          backend_options={**POLL, **options}) as sched:
        yield sched


def submitted(lsf: FakeLsf) -> list[list[str]]:
    return [args for _, _, args in lsf.calls("bsub")]


def test_jobs_dispatched_together_go_out_as_one_array_numbered_from_one(lsf, tmp_path):
    with scheduler(tmp_path) as sched:
        jobs = [corral.Job(square, (i,), name="sq") for i in range(3)]
        sched.dispatch(jobs)
        assert [job.result(timeout=60) for job in jobs] == [0, 1, 4]
    (bsub,) = submitted(lsf)
    assert bsub[bsub.index("-J") + 1] == "sq (+2)[1-3]"
    array = jobs[0].native_id.split("[")[0]
    assert [job.native_id for job in jobs] == [f"{array}[{i}]" for i in (1, 2, 3)]
    assert {native: r["STAT"] for native, r in lsf.bjobs().items()} == {
        job.native_id: "DONE" for job in jobs}


def test_two_hundred_jobs_cost_one_bsub_per_array_chunk_and_one_bjobs_per_poll(lsf, tmp_path):
    """200 calls, 10 to an array element, at most 5 elements to an array:
    4 submissions; every poll one bjobs for all of them."""
    with scheduler(tmp_path, max_array_size=5) as sched:
        begun = time.monotonic()
        jobs = [corral.Job(square, (i,), bundle=10) for i in range(200)]
        sched.dispatch(jobs)
        assert [job.result(timeout=120) for job in jobs] == [i * i for i in range(200)]
        elapsed = time.monotonic() - begun
    assert [args[args.index("-J") + 1].rsplit("[", 1)[1] for args in submitted(lsf)] == \
        ["1-5]"] * 4
    polls = len(lsf.calls("bjobs"))
    assert 1 <= polls <= elapsed / POLL["poll_interval"] + 2, (polls, elapsed)


def test_a_child_of_a_failed_parent_is_chained_with_done_then_killed_naming_the_parent(
        lsf, tmp_path):
    gate = tmp_path / "gate"
    with scheduler(tmp_path) as sched:
        parent = sched.submit(wait_for_file, os.fspath(gate), None, None)
        doomed = sched.options(after=[parent]).submit(raise_custom, "broken")
        child = sched.submit(add, doomed, 1)
        wait_until(lambda: child.native_id, message="the child to go to LSF")
        gate.touch()
        with pytest.raises(corral.CancelledError):
            child.result(timeout=60)
    chained = [args for args in submitted(lsf) if "-w" in args]
    assert [args[args.index("-w") + 1] for args in chained] == [
        f"done({parent.native_id})", f"done({doomed.native_id})"]
    assert child.reason == f"upstream job {doomed.id} 'raise_custom' failed"
    record = lsf.bjobs(child.native_id)[child.native_id]
    assert (record["STAT"], record["EXIT_REASON"]) == ("EXIT", "TERM_OWNER: job killed by owner")
    assert any(child.native_id in args for _, _, args in lsf.calls("bkill"))


def test_where_bparams_says_lsf_reserves_per_task_the_rusage_is_per_core(tmp_path, monkeypatch):
    """RESOURCE_RESERVE_PER_TASK = Y in bparams -a: rusage[mem=] is the job's
    memory divided by its cores; -M, in MB too, stays the job's total."""
    with fake_lsf(tmp_path, monkeypatch, reserve_per_task=True) as cluster:
        with scheduler(tmp_path) as sched:
            job = sched.options(cores=4, memory="1G").submit(square, 3)
            assert job.result(timeout=60) == 9
        (bsub,) = submitted(cluster)
    assert (bsub[bsub.index("-M") + 1], bsub[bsub.index("-R") + 1]) == (
        "1024MB", "rusage[mem=256MB] span[hosts=1]")


def test_a_job_past_its_run_limit_is_timed_out_by_lsf(lsf, tmp_path):
    """bsub -W 1 (a minute of 0.5 s on this fake): LSF kills it, TERM_RUNLIMIT."""
    with scheduler(tmp_path) as sched:
        job = sched.options(walltime="50s").submit(wait_for_file,
                                                    os.fspath(tmp_path / "never"), None, None)
        with pytest.raises(corral.JobTimedOut):
            job.result(timeout=60)
    assert job.status is JobStatus.TIMED_OUT
    assert job.reason.startswith(f"ran past its run limit (LSF TERM_RUNLIMIT) "
                                 f"(LSF job {job.native_id})")
    args = submitted(lsf)[0]
    assert args[args.index("-W") + 1] == "1"


def test_pause_stops_a_pending_job_in_lsf_and_resume_lets_it_run(tmp_path, monkeypatch):
    gate = tmp_path / "gate"
    with fake_lsf(tmp_path, monkeypatch, slots=1) as cluster:
        with scheduler(tmp_path) as sched:
            hog = sched.submit(wait_for_file, os.fspath(gate), None, None)
            waiting = sched.submit(square, 4)
            wait_until(lambda: hog.status is JobStatus.RUNNING and waiting.native_id)
            sched.pause()
            wait_until(lambda: cluster.bjobs(waiting.native_id)[waiting.native_id]["STAT"]
                       == "PSUSP", message="bstop to hold the pending job")
            gate.touch()
            assert hog.result(timeout=60) is None
            assert cluster.bjobs(waiting.native_id)[waiting.native_id]["STAT"] == "PSUSP"
            assert waiting.status is JobStatus.SUBMITTED  # a free slot, still held
            sched.resume()
            assert waiting.result(timeout=60) == 16
        assert [args for _, _, args in cluster.calls("bstop")] == [[waiting.native_id]]
        assert [args for _, _, args in cluster.calls("bresume")] == [[waiting.native_id]]


def test_a_job_stopped_as_it_started_is_resumed_by_resume(tmp_path, monkeypatch):
    """bstop reaching a job that started since the last poll suspends it running
    (USUSP): resume must let it go on, or it would stay frozen for good."""
    gate = tmp_path / "gate"
    with fake_lsf(tmp_path, monkeypatch) as cluster, scheduler(tmp_path) as sched:
        job = sched.submit(wait_for_file, os.fspath(gate), None, None)
        wait_until(lambda: job.status is JobStatus.RUNNING)
        sched.pause()
        assert cluster.run("bstop", job.native_id).returncode == 0  # the race, made sure
        polls = len(cluster.calls("bjobs"))
        wait_until(lambda: len(cluster.calls("bjobs")) >= polls + 2,
                   message="corral to poll the suspended job")
        sched.resume()
        wait_until(lambda: cluster.bjobs(job.native_id)[job.native_id]["STAT"] == "RUN",
                   message="resume to bresume the job")
        gate.touch()
        assert job.result(timeout=60) is None


def test_with_no_driver_pause_stops_only_pending_jobs_and_cancel_kills(tmp_path, monkeypatch):
    """bstop would suspend a running job (USUSP): the corral command holds only
    what LSF still has pending."""
    gate = tmp_path / "gate"
    with fake_lsf(tmp_path, monkeypatch, slots=1) as cluster:
        hog = bsub(cluster, f"while [ ! -e {gate} ]; do sleep 0.01; done")
        waiting = bsub(cluster, "true")
        wait_until(lambda: cluster.bjobs(hog)[hog]["STAT"] == "RUN")
        control_without_driver("pause", [hog, waiting])
        assert {n: r["STAT"] for n, r in cluster.bjobs().items()} == {hog: "RUN",
                                                                      waiting: "PSUSP"}
        control_without_driver("resume", [hog, waiting])
        assert cluster.bjobs(waiting)[waiting]["STAT"] == "PEND"
        said = control_without_driver("cancel", [waiting])
        assert said == f"Job <{waiting}> is being terminated\n"
        assert cluster.bjobs(waiting)[waiting]["EXIT_REASON"] == "TERM_OWNER: job killed by owner"
        gate.touch()
        wait_until(lambda: cluster.bjobs(hog)[hog]["STAT"] == "DONE")


#: A journaled driver that submits a job and dies (SIGKILL) once it runs and the
#: journal holds its LSF id: the job runs on with no driver.
DYING_DRIVER = """
import os, sys, time
import corral
from jobs import wait_for_file
run, gate = sys.argv[1], sys.argv[2]
with corral.Scheduler(backend="lsf", journal=run,
                      backend_options={"poll_interval": 0.05, "max_poll_interval": 0.1}) as sched:
    job = sched.submit(wait_for_file, gate, None, None)
    while job.status.name != "RUNNING" or job.native_id not in {
            stored.native_id for stored in corral.Scheduler.open(run).jobs(results=False)}:
        time.sleep(0.02)
    print(job.native_id, flush=True)
    os.kill(os.getpid(), 9)
"""


def test_a_rerun_decides_a_job_lsf_killed_and_cleaned_while_no_driver_ran(tmp_path, monkeypatch):
    """The job is killed outside corral while no driver runs, and LSF cleans it
    after CLEAN_PERIOD; the user has no other job, so bjobs says "No job found"
    on stderr and exits 255. The rerun must decide the job, not poll for ever
    (review F2: it stayed SUBMITTED)."""
    gate = tmp_path / "gate"
    with fake_lsf(tmp_path, monkeypatch, forget_s=0.3) as cluster:
        script = tmp_path / "driver.py"
        script.write_text(DYING_DRIVER)
        died = subprocess.run(
            [sys.executable, os.fspath(script), os.fspath(tmp_path / "run"), os.fspath(gate)],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])})
        assert died.returncode == -signal.SIGKILL, died.stderr
        native = died.stdout.strip()
        assert cluster.run("bkill", native).returncode == 0
        wait_until(lambda: cluster.bjobs() == {}, message="LSF to clean the killed job")
        assert cluster.run("bjobs", "-json", "-o", "jobid", "-a").stderr == "No job found\n"
        with corral.Scheduler(backend="lsf", journal=tmp_path / "run",
                              backend_options=POLL) as sched:
            job = sched.submit(wait_for_file, os.fspath(gate), None, None)
            with pytest.raises(corral.JobFailed):
                job.result(timeout=60)
        assert job.native_id == native
        assert job.reason.startswith("LSF no longer knows the job and it left no result"), \
            job.reason


def test_with_no_driver_resume_lets_a_job_stopped_as_it_started_go_on(lsf, tmp_path):
    """A driverless pause lists pending jobs, then bstops them: one that started
    in between is suspended running (USUSP). Resume must bresume it too, or it
    holds its slots, stopped, for good (review F4)."""
    ticks, gate = tmp_path / "ticks", tmp_path / "gate"
    job = bsub(lsf, f"while [ ! -e {gate} ]; do echo x >> {ticks}; sleep 0.01; done")
    wait_until(ticks.exists)
    assert lsf.run("bstop", job).returncode == 0  # the race, made sure
    assert lsf.bjobs(job)[job]["STAT"] == "USUSP"
    assert control_without_driver("pause", [job]) == ""  # not pending: left alone
    assert control_without_driver("resume", [job]) == f"Job <{job}> is being resumed\n"
    assert lsf.bjobs(job)[job]["STAT"] == "RUN"
    gate.touch()
    wait_until(lambda: lsf.bjobs(job)[job]["STAT"] == "DONE")


def test_with_no_driver_cancel_of_a_job_lsf_cleaned_still_kills_the_others(lsf):
    """bkill says "No matching job found" of a job LSF cleaned after CLEAN_PERIOD
    and exits 255: that job ended long ago, so the cancel did what was asked
    (review F3: it raised, and the kills it made went unrecorded)."""
    live = bsub(lsf, "sleep 30")
    said = control_without_driver("cancel", [live, "4242"])
    assert said == f"Job <{live}> is being terminated\n"
    assert lsf.bjobs(live)[live]["EXIT_REASON"] == "TERM_OWNER: job killed by owner"


# -- the fake itself: LSF's behaviour where corral relies on it --------------------------------


def bsub(cluster: FakeLsf, command: str, *options: str) -> str:
    done = cluster.run("bsub", *options, command)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("<")[1].split(">")[0]


def test_bstop_suspends_a_running_job_and_bresume_continues_it(lsf, tmp_path):
    ticks, gate = tmp_path / "ticks", tmp_path / "gate"
    job = bsub(lsf, f"while [ ! -e {gate} ]; do echo x >> {ticks}; sleep 0.01; done")
    wait_until(ticks.exists)
    assert lsf.run("bstop", job).stdout == f"Job <{job}> is being stopped\n"
    assert lsf.bjobs(job)[job]["STAT"] == "USUSP"
    size = ticks.stat().st_size
    wait_until(lambda: lsf.bjobs(job)[job]["STAT"] == "USUSP")  # still stopped after a poll
    assert ticks.stat().st_size == size
    lsf.run("bresume", job)
    wait_until(lambda: ticks.stat().st_size > size, message="the job to go on")
    gate.touch()
    wait_until(lambda: lsf.bjobs(job)[job]["STAT"] == "DONE")


def test_an_array_sees_lsb_jobindex_and_done_waits_for_every_element(lsf, tmp_path):
    log = tmp_path / "log"
    array = bsub(lsf, f"echo $LSB_JOBID $LSB_JOBINDEX >> {log}", "-J", "a[1-3]%1")
    child = bsub(lsf, f"echo child >> {log}", "-w", f"done({array})")
    wait_until(lambda: lsf.bjobs(child)[child]["STAT"] == "DONE")
    assert log.read_text() == "".join(f"{array} {i}\n" for i in (1, 2, 3)) + "child\n"


def test_finished_jobs_are_forgotten_after_the_clean_period(tmp_path, monkeypatch):
    with fake_lsf(tmp_path, monkeypatch, forget_s=0.3) as cluster:
        job = bsub(cluster, "true")
        wait_until(lambda: job not in cluster.bjobs(), message="the job to be forgotten")
        refused = cluster.run("bsub", "-w", f"done({job})", "true")
        assert (refused.returncode, refused.stderr) == (
            255, f"{job}: No matching job found. Job not submitted.\n")


@pytest.mark.parametrize(("argv", "message"), [
    (["-J", "a[3-1]", "true"], "a[3-1]: Bad job array index list. Job not submitted.\n"),
    (["-w", "ended(1)", "true"], "ended(1): Bad dependency expression. Job not submitted.\n"),
    (["-W", "soon", "true"], "Bad argument for option -W or -n. Job not submitted.\n"),
    (["-x", "1", "true"], "-x: Illegal option. Job not submitted.\n"),
    (["-n", "2"], "No command specified. Job not submitted.\n"),
])
def test_the_fake_bsub_refuses_bad_input_as_lsf_words_it(lsf, argv, message):
    refused = lsf.run("bsub", *argv)
    assert (refused.returncode, refused.stderr) == (255, message)
    assert lsf.bjobs() == {}


def test_bkill_of_unknown_or_finished_jobs_says_so(lsf):
    """On stderr, with exit status 255; what it killed all the same on stdout."""
    job = bsub(lsf, "true")
    wait_until(lambda: lsf.bjobs(job)[job]["STAT"] == "DONE")
    live = bsub(lsf, "sleep 30")
    refused = lsf.run("bkill", job, "999", live)
    assert (refused.returncode, refused.stderr, refused.stdout) == (
        255, f"Job <999>: No matching job found\nJob <{job}>: Job has already finished\n",
        f"Job <{live}> is being terminated\n")


def test_bjobs_with_no_job_to_list_says_so_on_stderr(lsf):
    """As LSF answers in text (batchtools, OSC's ood_core; not recorded for -json)."""
    listed = lsf.run("bjobs", "-json", "-o", "jobid stat", "-a", "-u", "all")
    assert (listed.returncode, listed.stderr, listed.stdout) == (255, "No job found\n", "")
    unfinished = lsf.run("bjobs", "-json", "-o", "jobid stat", "-u", "all")
    assert (unfinished.returncode, unfinished.stderr) == (255, "No unfinished job found\n")


def test_a_qos_lsf_has_no_equivalent_for_is_warned_of_once_and_the_job_runs(
        lsf, tmp_path, caplog):
    with scheduler(tmp_path) as sched:
        assert sched.submit(square, 5).result(timeout=30) == 25
        with pytest.raises(ValueError, match="already used"):  # refused: nothing said yet
            sched.dispatch([corral.Job(square, (1,), id=1, qos="high")])
        jobs = [sched.options(qos="high").submit(square, i) for i in range(3)]
        assert [job.result(timeout=30) for job in jobs] == [0, 1, 4]
    warnings = [record.getMessage() for record in caplog.records if "qos" in record.getMessage()]
    assert warnings == ["job 'square' asks for qos='high', which corral cannot ask LSF for: it "
                        "runs without it (and so does every later job that asks for it); if LSF "
                        "has an equivalent, pass it as it is with extra_flags=[...]"]
    assert all("-q" not in args and "high" not in args for args in submitted(lsf))


def test_placement_on_the_local_backend_is_ignored_without_a_word(tmp_path, caplog):
    with corral.Scheduler(workdir=tmp_path / "run") as sched:
        assert sched.options(qos="high", partition="gpu").submit(square, 3).result(timeout=30) == 9
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
