"""DAGs: results flow along dependencies, failures stop what depends on them."""

from __future__ import annotations

import concurrent.futures

import pytest

import corral
from corral import Job, JobStatus

import jobs


def test_a_job_passed_as_an_argument_is_a_dependency_and_its_result_is_passed(scheduler):
    first = scheduler.submit(jobs.square, 3)
    second = scheduler.submit(jobs.square, first)
    combined = scheduler.submit(jobs.total, [first, second, 1])
    assert combined.result(timeout=30) == 9 + 81 + 1


def test_dependency_results_reach_commands_as_text(scheduler):
    number = scheduler.submit(jobs.square, 5)
    echo = scheduler.shell(["echo", "value", number])
    echo.result(timeout=30)
    assert echo.stdout == "value 25\n"


def test_after_waits_for_jobs_and_names_without_passing_values(scheduler, tmp_path):
    marker = tmp_path / "built"
    build = scheduler.shell(f"sleep 0.2; touch {marker}", name="build")
    check = scheduler.shell(f"test -e {marker}", after=["build"])
    also = scheduler.options(after=build).submit(jobs.noop)
    check.result(timeout=30)
    also.result(timeout=30)
    assert check.record.started >= build.record.ended


def test_a_name_covers_every_job_that_has_it(scheduler, tmp_path):
    parts = [scheduler.shell(f"sleep 0.1; touch {tmp_path / str(i)}", name="part")
             for i in range(3)]
    gather = scheduler.shell(f"ls {tmp_path} | grep -c '^[0-9]$'", after="part")
    gather.result(timeout=30)
    assert gather.stdout == "3\n"
    assert gather.record.started >= max(part.record.ended for part in parts)


def test_a_failed_dependency_cancels_its_dependents_naming_it(scheduler):
    broken = scheduler.options(name="prepare").submit(jobs.raise_custom, "no input")
    middle = scheduler.submit(jobs.square, broken)
    last = scheduler.submit(jobs.square, middle)
    for job in (middle, last):
        with pytest.raises(concurrent.futures.CancelledError,
                           match=rf"job {job.id} 'square' was cancelled: "
                                 r"upstream job 1 'prepare' failed"):
            job.result(timeout=30)
        assert job.status is JobStatus.CANCELLED
        assert job.attempts == 0


def test_depending_on_an_already_failed_job_cancels_at_once(scheduler):
    broken = scheduler.submit(jobs.raise_custom, "x")
    with pytest.raises(jobs.CustomError):
        broken.result(timeout=30)
    late = scheduler.submit(jobs.square, broken)
    with pytest.raises(concurrent.futures.CancelledError,
                       match="upstream job 1 'raise_custom' failed"):
        late.result(timeout=30)


def test_jobs_submitted_after_a_failure_name_its_root_cause_down_the_chain(scheduler):
    """BUG (attack): jobs submitted after their upstream job had failed each
    named their own parent ("upstream job 2 'a' was cancelled"), while jobs
    submitted before named the job that failed."""
    broken = scheduler.options(name="boom").submit(jobs.raise_custom, "x")
    with pytest.raises(jobs.CustomError):
        broken.result(timeout=30)
    first = scheduler.options(name="a").submit(jobs.identity, broken)
    second = scheduler.options(name="b").submit(jobs.identity, first)
    third = scheduler.options(name="c", after=[second]).submit(jobs.noop)
    for job in (first, second, third):
        with pytest.raises(concurrent.futures.CancelledError,
                           match=rf"job {job.id} '{job.name}' was cancelled: upstream job 1 "
                                 r"'boom' failed$"):
            job.result(timeout=30)


def test_cancelling_a_job_cancels_its_dependents(scheduler, release):
    blocker = scheduler.submit(jobs.wait_for_file, str(release))
    child = scheduler.submit(jobs.identity, blocker)
    assert blocker.cancel() is True
    with pytest.raises(concurrent.futures.CancelledError,
                       match="upstream job 1 'wait_for_file' was cancelled"):
        child.result(timeout=30)


def test_undispatched_dependencies_are_dispatched_with_their_dependents(scheduler):
    first = Job(jobs.square, (2,), name="first")
    second = Job(jobs.square, (first,), name="second")
    third = Job(jobs.add, (second, 1), name="third", after=[first])
    scheduler.dispatch([third])
    assert third.result(timeout=30) == 17
    assert {job.name for job in scheduler.jobs()} == {"first", "second", "third"}


def test_a_job_listed_twice_in_one_dispatch_runs_once(scheduler):
    job = Job(jobs.square, args=(4,))
    other = Job(jobs.square, args=(5,))
    scheduler.dispatch([job, other, job])
    results = sorted(result.data for result in scheduler.collect(2, timeout=30))
    assert results == [16, 25]
    assert job.result(timeout=30) == 16
    assert len(scheduler.jobs()) == 2
    with pytest.raises(ValueError, match="cannot be satisfied"):  # no third result on its way
        scheduler.collect(1, timeout=5)


def test_a_cycle_through_names_is_refused_naming_the_jobs_in_it(scheduler):
    a = Job(jobs.noop, name="a", after=["c"])
    b = Job(jobs.noop, name="b", after=["a"])
    c = Job(jobs.noop, name="c", after=["b"])
    with pytest.raises(corral.DependencyError, match=r"dependency cycle: '(a|b|c)' -> .* -> '\1'"):
        scheduler.dispatch([a, b, c])
    assert scheduler.jobs() == []  # nothing of a refused batch runs


def test_a_cycle_of_jobs_of_one_name_is_refused_naming_each_by_its_place(scheduler):
    """Attack review: it said only 'f' -> 'f' -> 'f'."""
    holder: list = []
    first = Job(jobs.identity, (holder,))
    second = Job(jobs.identity, (first,))
    holder.append(second)
    with pytest.raises(corral.DependencyError,
                       match=r"^dependency cycle: 'identity' \(#(1|2)\) -> 'identity' \(#(?!\1)"
                             r"[12]\) -> 'identity' \(#\1\); #n is a job's place among the 2 "
                             r"dispatched together: those given, then the unsubmitted jobs "
                             r"they hold$"):
        scheduler.dispatch([first, second])
    assert scheduler.jobs() == []


def test_a_name_in_after_never_refers_to_the_job_itself(scheduler):
    loop = Job(jobs.noop, name="loop", after=["loop"])
    # (The attack found "no job has that name" here, about a job of that very name.)
    with pytest.raises(corral.DependencyError,
                       match=r"^job 'loop' waits for after='loop', its own name: a job cannot "
                             r"wait for itself \(after= a name waits for the other jobs of "
                             r"that name\)$"):
        scheduler.dispatch([loop])
    earlier = scheduler.options(name="loop").submit(jobs.noop)
    later = scheduler.options(name="loop", after="loop").submit(jobs.noop)
    later.result(timeout=30)
    assert later.record.started >= earlier.record.ended


def test_after_an_unknown_name_is_refused(scheduler):
    with pytest.raises(corral.DependencyError,
                       match=r"^job 'noop' waits for after='setup', but no job has that name or "
                             r"id; dispatch that job first or in the same batch$"):
        scheduler.options(after="setup").submit(jobs.noop)
    with pytest.raises(corral.DependencyError,
                       match=r"^job 'noop' waits for after=999, but no job has that id; "):
        scheduler.options(after=999).submit(jobs.noop)
    with pytest.raises(corral.DependencyError,
                       match=r"^job 'noop' waits for after='me', its own id: a job cannot wait "
                             r"for itself$"):
        scheduler.dispatch([Job(jobs.noop, id="me", after=["me"])])


def test_after_an_id_waits_for_that_job(scheduler, tmp_path):
    """Seed audit (e3, hypertunity: jobs keyed by id): after=["build"], the id
    given to a job of the same batch, was refused as naming no job, and
    after=[7] as neither a Job nor a name; corral submit --after takes both."""
    release = tmp_path / "release"
    build = Job(jobs.wait_for_file, (str(release),), id="build")
    test = Job(jobs.noop, id="test", after=["build"])
    scheduler.dispatch([build, test])
    numbered = scheduler.submit(jobs.wait_for_file, str(release))
    later = scheduler.options(after=[numbered.id]).submit(jobs.noop)
    also = scheduler.options(after=str(numbered.id)).submit(jobs.noop)
    assert [[dep.id for dep in job._record.deps] for job in (test, later, also)] == [
        ["build"], [numbered.id], [numbered.id]]
    assert not any(job.running() or job.done() for job in (test, later, also))
    release.touch()
    for job in (test, later, also):
        job.result(timeout=30)
    assert test.record.started >= build.record.ended
    assert later.record.started >= numbered.record.ended
    # (7 and "7" are one id; held, so that it is still a dependency to wait for: a
    # no-op that ended first was no longer one to record, which CI once saw)
    held = tmp_path / "held"
    texted = scheduler.dispatch([Job(jobs.wait_for_file, (str(held),), id="50")])[0]
    assert [dep.id for dep in scheduler.options(after=50).submit(jobs.noop)._record.deps] == [
        texted.id]
    held.touch()


def test_after_the_id_of_a_job_the_program_let_go_of_says_so(scheduler):
    import gc

    gone = scheduler.submit(jobs.noop)
    gone.result(timeout=30)
    gone_id = gone.id
    del gone
    gc.collect()
    with pytest.raises(corral.DependencyError,
                       match=rf"^after={gone_id}: job {gone_id} has finished and this program no "
                             r"longer holds it; pass the Job itself$"):
        scheduler.options(after=gone_id).submit(jobs.noop)


def test_a_dependency_on_another_schedulers_job_is_refused(scheduler):
    with corral.Scheduler(cores=1) as other:
        foreign = other.submit(jobs.noop)
        with pytest.raises(ValueError, match="belongs to another scheduler"):
            scheduler.submit(jobs.identity, foreign)


def test_a_layered_dag_of_ten_thousand_calls_completes():
    layers, width = 100, 100
    with corral.Scheduler(cores=2) as sched:
        previous: list[Job] = []
        batch: list[Job] = []
        for _ in range(layers):
            current = [Job(jobs.noop, after=previous[i:i + 2] if previous else None)
                       for i in range(width)]
            batch.extend(current)
            previous = current
        sched.dispatch(batch)
        assert sched.wait(timeout=300)
    assert len(batch) == 10_000
    assert all(job.status is JobStatus.COMPLETED for job in batch)
    for layer in range(1, 3):  # spot-check that order followed the edges
        for i in range(width - 1):
            child = batch[layer * width + i]
            for parent in batch[(layer - 1) * width + i:(layer - 1) * width + i + 2]:
                assert child.record.started >= parent.record.ended


def test_a_failure_at_the_root_of_a_long_chain_cancels_all_of_it_without_running_any():
    with corral.Scheduler(cores=1) as sched:
        chain = [Job(jobs.raise_custom, ("root",), name="root")]
        for _ in range(5_000):
            chain.append(Job(jobs.noop, after=[chain[-1]]))
        sched.dispatch(chain)
        sched.wait(timeout=120)
    assert all(job.status is JobStatus.CANCELLED for job in chain[1:])
    assert {job.reason for job in chain[1:]} == {"upstream job 1 'root' failed"}
    assert all(job.attempts == 0 for job in chain[1:])
