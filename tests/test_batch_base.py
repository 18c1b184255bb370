"""The batch base's own pieces, without a scheduler: arrays, bundles, polling,
forgotten jobs, outcomes, control with no driver, and Slurm's pieces on it."""

from __future__ import annotations

import os
import queue
import sys
import threading
from pathlib import Path

import psutil
import pytest

from corral.backends.base import Submission
from corral.backends.info import Probe
from corral.backends.batch import arrays, bundles, control, forgotten, outcomes, taskfiles
from corral.backends.batch.invoke import CommandInFlight, run_command
from corral.backends.batch.polling import PollClock
from corral.backends.batch.probing import ask
from corral.backends.batch.records import BatchJob, Group, TaskRecord
from corral.backends.batch.scheduler import ClusterLimits, NativeRow, NeverKind
from corral.backends.batch.slurm.backend import SlurmBackend
from corral.backends.batch.slurm.scheduler import SlurmScheduler
from corral.errors import BackendError
from corral.runtime.batch import BatchOutcome, claim_for_cancel
from corral.runtime.threads import start_thread
from corral.spec import Placement, Resources
from corral.status import JobStatus
from support.processes import plain_mask_line
from support.waiting import wait_until

SLURM = SlurmScheduler()


def submission(job_id, tmp_path: Path, cores=1, bundle=1, after=(), walltime=None) -> Submission:
    return Submission(job_id, f"job{job_id}", tmp_path / str(job_id),
                      Resources(cores, walltime_s=walltime), argv=("true",),
                      placement=Placement(bundle=bundle), after=after)


def task_of(sub: Submission, native_id: str = "9") -> TaskRecord:
    group = Group(sub.resources, sub.placement, (), sub.placement.bundle, [sub])
    return TaskRecord(sub.job_id, os.fspath(sub.jobdir), True, sub.placement.bundle > 1, group,
                      native_id)


def test_equal_jobs_make_one_group_and_a_followed_parent_becomes_a_dependency(tmp_path):
    parent = task_of(submission("p", tmp_path), native_id="41_2")
    batch = [submission(1, tmp_path), submission(2, tmp_path, cores=4),
             submission(3, tmp_path), submission(4, tmp_path, after=("p",))]
    groups = arrays.group_submissions(batch, {"p": parent})
    assert [[s.job_id for s in group.submissions] for group in groups] == [[1, 3], [2], [4]]
    assert groups[2].after == ("41_2",)
    assert groups[2].after_jobdirs == (parent.jobdir,)


def test_a_bundle_asks_for_the_time_of_all_its_jobs_as_slurm_grants_it(tmp_path):
    jobs = [submission(i, tmp_path, bundle=4, walltime=3.0) for i in range(6)]
    split = bundles.split_into_bundles(jobs, 4)
    assert [len(members) for members in split] == [4, 2]
    # 4 jobs x 3 s and the runtime's 2 s margin: 14 s, one whole minute in Slurm.
    assert bundles.time_limit_s(3.0, split, True, SLURM.granted_time_s) == 60.0
    assert bundles.time_limit_s(None, split, True, SLURM.granted_time_s) is None


def test_polling_backs_off_while_nothing_changes_and_comes_back_on_a_change():
    clock = PollClock(0.5, 2.0)
    waits = []
    for at in range(6):
        clock.polled(float(at), answered=True, changed=False)
        waits.append(clock._next - at)
    assert waits == [0.75, 1.125, 1.6875, 2.0, 2.0, 2.0]
    clock.polled(10.0, answered=True, changed=True)
    assert clock._next == 10.5 and clock.last_answer == 10.0
    clock.polled(11.0, answered=False, changed=False)
    assert clock.last_answer == 10.0  # a failed query proves nothing about the jobs


def test_a_forgotten_job_is_decided_by_results_then_accounting_then_its_files(tmp_path):
    sub = submission(1, tmp_path)
    taskfiles.write_task(sub, batch_log="")
    job = BatchJob("9", "", [task_of(sub)])
    never_ran = forgotten.verdict(job, True, None, SLURM, accounting=False)
    assert never_ran == (JobStatus.CANCELLED, "Slurm no longer lists it and it never started "
                         "(cancelled outside corral, or ended without starting long ago)")
    (sub.jobdir / "started").write_text('{"time": 1}')
    assert forgotten.verdict(job, True, None, SLURM, accounting=False) == (
        JobStatus.FAILED, "Slurm no longer knows the job and it left no result "
                          "(purged after MinJobAge; no accounting to ask)")
    assert forgotten.verdict(job, True, NativeRow("9", "CANCELLED"), SLURM, accounting=True) == (
        JobStatus.CANCELLED, "cancelled in Slurm")
    assert forgotten.verdict(job, True, NativeRow("9", "RUNNING"), SLURM, True) is None
    assert forgotten.verdict(job, False, None, SLURM, False) == (JobStatus.COMPLETED, "")


def test_a_forgotten_job_cancelled_before_it_started_is_decided_by_the_cancels_mark(tmp_path):
    """``corral cancel`` with no driver marks a pending job so: the next driver
    waited Slurm's forget time (5 minutes) before it believed it (submitit review)."""
    subs = [submission(job_id, tmp_path) for job_id in (1, 2)]
    for sub in subs:
        taskfiles.write_task(sub, batch_log="")
    job = BatchJob("9", "", [task_of(sub) for sub in subs])
    assert claim_for_cancel(os.fspath(subs[0].jobdir))
    assert forgotten.undecided([job]) == [job]  # job 2 may have run: its files do not say
    assert claim_for_cancel(os.fspath(subs[1].jobdir))
    assert forgotten.undecided([job]) == []


def test_accounting_of_one_job_at_a_time_asks_each_and_one_it_cannot_answer_holds_none_up(
        tmp_path):
    """Review: SGE's qacct takes one job, and only the first forgotten job was
    ever asked; when qacct could not answer it (deleted while pending), the
    others were guessed once their forget time ran out: one the user had
    deleted with qdel ended FAILED, to be retried."""
    from corral.backends.batch.sge.backend import SgeBackend

    recorded = Path(__file__).parent / "recorded" / "sge"
    asked: list[str] = []

    class SgeAnswering(SgeBackend):
        def _run(self, argv, *args, **kwargs):
            asked.append(" ".join(argv))
            if argv[:2] == ["qacct", "-j"] and argv[-1] == "46":
                raise BackendError("qacct exited 1: error: job id 46 not found")
            if argv[:2] == ["qacct", "-j"] and argv[-1] == "47":
                return (recorded / "qacct_deleted_running.txt").read_text()
            raise AssertionError(f"not asked here: {argv}")

    backend = SgeAnswering()
    backend._limits = ClusterLimits(75000, forget_after_s=20.0, accounting=True)
    # (An array's tasks share one query: asked once, they hold up no other job.)
    for job_id, native_id in ((1, "46.1"), (3, "46.2"), (4, "46.3"), (5, "46.4"), (6, "46.5"),
                              (2, "47")):
        sub = submission(job_id, tmp_path)
        taskfiles.write_task(sub, batch_log="")
        backend.attach(sub, native_id)
    lost = list(backend._jobs.values())
    for job in lost:
        job.missing = 1
    backend._decide_forgotten(lost)
    assert sorted(asked) == ["qacct -j 46", "qacct -j 47"]
    assert [(update.job_id, update.state) for update in backend._updates] == [
        (2, JobStatus.CANCELLED)]  # as accounting says; 46 waits for its forget time
    assert sorted(backend._jobs) == ["46.1", "46.2", "46.3", "46.4", "46.5"]


def test_accounting_of_one_job_at_a_time_asks_a_few_a_poll_the_longest_unasked_first(
        tmp_path):
    from corral.backends.batch.base import ACCOUNTING_QUERIES_PER_POLL
    from corral.backends.batch.sge.backend import SgeBackend

    asked: list[str] = []

    class SgeNotKnowing(SgeBackend):
        def _run(self, argv, *args, **kwargs):
            asked.append(argv[-1])
            raise BackendError(f"qacct exited 1: error: job id {argv[-1]} not found")

    backend = SgeNotKnowing()
    backend._limits = ClusterLimits(75000, forget_after_s=20.0, accounting=True)
    natives = [str(40 + number) for number in range(ACCOUNTING_QUERIES_PER_POLL + 2)]
    for job_id, native_id in enumerate(natives, 1):
        sub = submission(job_id, tmp_path)
        taskfiles.write_task(sub, batch_log="")
        backend.attach(sub, native_id)
    for _ in range(2):
        lost = list(backend._jobs.values())
        for job in lost:
            job.missing = 1
        backend._decide_forgotten(lost)
    first, second = asked[:ACCOUNTING_QUERIES_PER_POLL], asked[ACCOUNTING_QUERIES_PER_POLL:]
    assert first == natives[:ACCOUNTING_QUERIES_PER_POLL]
    assert second[:2] == natives[ACCOUNTING_QUERIES_PER_POLL:]  # then those not asked yet


def test_no_forgotten_job_is_guessed_before_accounting_was_asked_once_it_could_know(
        tmp_path, monkeypatch):
    """Re-attack review: SGE's qacct is asked of a few jobs a poll, and jobs
    past their forget time were guessed FAILED (to be retried) without ever
    being asked, or asked only before accounting was written: of 20 jobs
    deleted at once with qdel, 8 ended FAILED."""
    import json
    import re
    import time

    from corral.backends.batch import base
    from corral.backends.batch.sge.backend import SgeBackend
    from corral.runtime.batch import STARTED_FILE

    deleted = (Path(__file__).parent / "recorded" / "sge" / "qacct_deleted_running.txt"
               ).read_text()
    clock = [time.monotonic()]
    flushed_at = clock[0] + 15.0  # (accounting knows nothing before it is flushed)

    class SgeFlushingLate(SgeBackend):
        def _run(self, argv, *args, **kwargs):
            if argv[0] == "qdel":
                raise BackendError("denied: job does not exist")
            if clock[0] < flushed_at:
                raise BackendError(f"qacct exited 1: error: job id {argv[-1]} not found")
            return re.sub(r"jobnumber\s+\d+", f"jobnumber    {argv[-1]}", deleted)

    backend = SgeFlushingLate()
    backend._limits = ClusterLimits(75000, forget_after_s=20.0, accounting=True)
    for job_id in range(1, 21):
        sub = submission(job_id, tmp_path)
        taskfiles.write_task(sub, batch_log="")
        (sub.jobdir / STARTED_FILE).write_text(json.dumps({"time": time.time()}))
        backend.attach(sub, str(2000 + job_id))
    monkeypatch.setattr(base.time, "monotonic", lambda: clock[0])
    for _ in range(40):  # a poll every 2 s, each job missing from every qstat since the qdel
        clock[0] += 2.0
        lost = list(backend._jobs.values())
        for job in lost:
            job.missing += 1
        backend._decide_forgotten(lost)
    ended = [update.state for update in backend._updates if update.state.is_terminal]
    assert ended == [JobStatus.CANCELLED] * 20 and not backend._jobs


def test_a_forgotten_job_whose_upstream_failed_is_cancelled_naming_the_root_cause(tmp_path):
    """PBS removes the children of a failed job at once: a grandchild that
    never started names the grandparent that failed, as the engine would."""
    import pickle

    from corral.runtime.batch import RESULT_FILE, write_atomically

    subs = [submission(i, tmp_path, after=(i - 1,) if i > 1 else ()) for i in (1, 2, 3)]
    for sub in subs:
        taskfiles.write_task(sub, batch_log="")
    grandparent = task_of(subs[0], native_id="7")
    grandparent.name = "train"
    [parent_group] = arrays.group_submissions([subs[1]], {1: grandparent})
    parent = TaskRecord(2, os.fspath(subs[1].jobdir), False, False, parent_group, "8", name="eval")
    [child_group] = arrays.group_submissions([subs[2]], {2: parent})
    child = TaskRecord(3, os.fspath(subs[2].jobdir), False, False, child_group, "9")
    assert (parent_group.depth, child_group.depth) == (1, 2)
    job = BatchJob("9", "", [child])
    assert forgotten.verdict(job, True, None, SLURM, accounting=False)[1].startswith(
        "Slurm no longer lists it")  # no result says why yet
    write_atomically(os.path.join(grandparent.jobdir, RESULT_FILE),
                     pickle.dumps(BatchOutcome(False, exit_code=1, reason="exit code 1")))
    assert forgotten.verdict(job, True, None, SLURM, accounting=False) == (
        JobStatus.CANCELLED, "upstream job 1 'train' failed")


def test_a_timed_out_outcome_becomes_timed_out_naming_the_batch_job(tmp_path):
    task = task_of(submission(1, tmp_path), native_id="12_0")
    update = outcomes.from_result(task, BatchOutcome(False, reason="ran past its walltime of "
                                                     "3 s", timed_out=True), "Slurm")
    assert (update.state, update.reason) == (JobStatus.TIMED_OUT,
                                             "ran past its walltime of 3 s (Slurm job 12_0)")
    # A reason that merely starts like the old marker is no timeout.
    update = outcomes.from_result(task, BatchOutcome(False, exit_code=2, reason="timed out: x"),
                                  "Slurm")
    assert update.state is JobStatus.FAILED


def test_a_job_attached_by_a_later_driver_reports_its_batch_scripts_log(tmp_path):
    sub = submission(1, tmp_path)
    log = tmp_path / "slurm-0.out"
    log.write_text("corral: a setup line failed (exit status 127); the job did not start\n")
    taskfiles.write_task(sub, batch_log=os.fspath(log))
    backend = SlurmBackend()
    try:
        backend.attach(sub, "88")
        job = backend._jobs["88"]
        update = outcomes.from_scheduler(job.tasks[0], job, JobStatus.FAILED, "failed", None,
                                         SLURM)
    finally:
        backend._closed = True  # nothing was submitted: no scancel to run
    assert update.reason == ("failed (Slurm job 88); its batch job's log ends: corral: a setup "
                             "line failed "
                             "(exit status 127); the job did not start")


def test_slurm_limits_come_from_its_configuration_and_default_when_unreadable():
    text = ("Configuration data as of 2026-11-25T19:12:50\n"
            "AccountingStorageType   = accounting_storage/slurmdbd\n"
            "MaxArraySize            = 10001\nMinJobAge               = 300 sec\n")
    assert SLURM.parse_limits(text) == ClusterLimits(10000, 300.0, True)
    assert SLURM.parse_limits("garbage\n") == ClusterLimits(1000, 300.0, False)


def test_slurm_tells_which_pending_jobs_will_never_start():
    never = SLURM.never_starts(NativeRow("1", "PENDING", "DependencyNeverSatisfied"))
    assert never is not None and never.kind is NeverKind.DEPENDENCY_FAILED
    impossible = SLURM.never_starts(NativeRow("1", "PENDING", "PartitionConfig"))
    assert impossible is not None and impossible.kind is NeverKind.IMPOSSIBLE
    assert SLURM.never_starts(NativeRow("1", "PENDING", "Priority")) is None
    assert SLURM.is_held(NativeRow("1", "PENDING", "JobHeldUser"))


def test_control_without_a_driver_refuses_an_unknown_verb():
    with pytest.raises(ValueError) as caught:
        control.control_without_driver(SLURM, "stop", ["1"])
    assert str(caught.value) == ("unknown verb 'stop' for batch jobs with no driver "
                                 "(known: cancel, pause, resume)")


def test_bad_options_name_the_scheduler():
    with pytest.raises(ValueError) as caught:
        SlurmBackend(options={"poll": 1})
    assert str(caught.value).startswith("unknown Slurm backend option 'poll'; "
                                        "did you mean 'poll_interval'?")


def test_a_scheduler_answer_that_is_not_utf8_is_read_with_the_bytes_replaced():
    """Another user's job in a Latin-1 directory must not blind every poll."""
    from corral.backends.batch.invoke import run_command

    printed = run_command([sys.executable, "-c", "import sys; "
                           "sys.stdout.buffer.write(b'job 7 in /home/\\xe9t\\xe9\\n')"])
    assert printed == "job 7 in /home/\ufffdt\ufffd\n"


def test_a_scheduler_command_that_prints_without_end_is_stopped_and_said(monkeypatch):
    """Attack review: a status command of ``yes`` took 4 GB in 10 s, bound for the
    kernel's out-of-memory killer; it is stopped at a bound, with all it started."""
    from corral.backends.batch import invoke

    monkeypatch.setattr(invoke, "MOST_OUTPUT_BYTES", 1 << 20)
    mark = f"yes-{os.getpid()}"
    argv = ["sh", "-c", f'yes "{mark}" & yes "{mark}" >&2 & wait']
    with pytest.raises(BackendError, match=r"^sh printed more than 1 MB: no answer of a "
                                           r"scheduler is that long; it was stopped$"):
        invoke.run_command(argv)
    # (a probe, as `corral backends` asks one: it says no, and why)
    assert ask(argv, timeout=30) == Probe(False, "sh printed more than 1 MB: no answer of a "
                                                 "scheduler is that long; it was stopped")
    wait_until(lambda: not [process for process in psutil.process_iter(["cmdline"])
                            if mark in (process.info["cmdline"] or [])], 10,
               "what the command started to be gone")


def test_a_failed_command_whose_output_is_still_an_answer_is_read():
    from corral.backends.batch.invoke import run_command

    argv = [sys.executable, "-c", "import sys; print('rows'); print('qstat: Unknown Job Id "
                                  "9', file=sys.stderr); sys.exit(153)"]
    with pytest.raises(BackendError, match="exited 153: qstat: Unknown Job Id 9"):
        run_command(argv)
    assert run_command(argv, lambda code, err: code == 153) == "rows\n"


def test_a_batch_job_that_ended_well_without_a_result_says_whether_the_job_had_started(
        tmp_path):
    sub = submission(1, tmp_path)
    taskfiles.write_task(sub, batch_log="")
    task = task_of(sub)
    job = BatchJob("9", "", [task])
    never = outcomes.from_scheduler(task, job, JobStatus.COMPLETED, "", None, SLURM)
    assert never.reason.startswith("the batch job ended without running it (Slurm job 9)")
    (sub.jobdir / "started").write_text('{"time": 1}')  # the runtime claimed it, then died
    died = outcomes.from_scheduler(task, job, JobStatus.COMPLETED, "", None, SLURM)
    assert died.state is JobStatus.FAILED
    assert died.reason.startswith("it started but left no result: its batch job ended under "
                                  "it (a node or server that went away?) (Slurm job 9)")


def test_scheduler_commands_started_from_corrals_threads_can_be_ended_by_sigterm() -> None:
    """corral's threads block SIGINT and SIGTERM (they are the main thread's), and a
    program inherits its starter's mask. A site's submit wrapper that starts a
    daemon, or a hung probe, must still end when it is sent SIGTERM."""
    unblocked = plain_mask_line()
    argv = ["grep", "SigBlk", "/proc/self/status"]
    said: queue.SimpleQueue[str] = queue.SimpleQueue()

    def from_a_corral_thread() -> None:
        said.put(run_command(argv))
        probed = ask(argv, timeout=30)
        said.put(getattr(probed, "stdout", repr(probed)))
        done = threading.Event()
        in_flight = CommandInFlight(argv, done)
        done.wait(30)
        said.put(in_flight.answer())

    start_thread(from_a_corral_thread, name="corral test").join(60)
    assert [said.get_nowait() for _ in range(3)] == [unblocked] * 3


@pytest.mark.parametrize("message, unreachable", [
    # what sbatch printed while an attack restarted a real slurmctld
    ("sbatch exited 1: sbatch: error: Batch job submission failed: Unable to contact slurm "
     "controller (connect failure)", True),
    ("sbatch exited 1: sbatch: error: Batch job submission failed: Socket timed out on "
     "send/recv operation", True),
    ("sbatch exited 1: sbatch: error: Batch job submission failed: Requested node "
     "configuration is not available", False),
    ("sbatch exited 1: sbatch: error: Batch job submission failed: Invalid account or "
     "account/partition combination specified", False),
])
def test_a_refusal_says_whether_the_scheduler_could_not_be_reached(message, unreachable):
    """Only the first kind is tried again (submit_retry): the second never runs."""
    assert SlurmScheduler().could_not_reach(message) is unreachable


@pytest.mark.parametrize(("stderr", "done"), [
    ("qdel: Job has finished 45.pbshost\n", True),  # OpenPBS, exit 35
    ("qdel: Unknown Job Id 45.pbshost\n", True),  # OpenPBS, a job it forgot
    ('denied: job "1143" does not exist\n', True),  # Grid Engine
    ("scancel: error: Kill job error on job id 7: Job/step already completing or completed\n",
     True),  # Slurm
    ("Job <12>: Job has already finished\n", True),  # LSF
    ("qdel: Job has finished 45.pbshost\nqdel: Unauthorized Request  46.pbshost\n", False),
    ("qdel: cannot connect to server pbshost (errno=111)\n", False),
    ("", False),
])
def test_a_cancel_that_only_says_its_jobs_had_ended_did_what_was_asked(stderr, done):
    """With no driver, a cancel takes the job's dependents too, which the
    scheduler may have deleted with it already (PBS does): not a failure."""
    assert SlurmScheduler().cancel_answer_usable(1, stderr) is done
