"""A Job is a Future and a read-only view; the engine keeps its own record.

As ``concurrent.futures`` keeps its ``_WorkItem`` apart from the ``Future``,
what corral needs to schedule a job lives in a :class:`JobRecord` that only
the control loop writes; the user's Job reads from it. These tests pin the
wall between the two, and the import graph that wall made acyclic.
"""

from __future__ import annotations

import ast
import weakref
from concurrent.futures import CancelledError, Future
from pathlib import Path

import pytest

import corral
from corral import Job, JobStatus
from corral.core.record import DeadlineKind, JobRecord, KillIntent
from corral.status import IllegalTransition

import jobs
from support.waiting import wait_until

SRC = Path(corral.__file__).resolve().parent

#: What a Job may keep in its own ``__dict__``: the Future's fields and the
#: link to its record. Everything else is the engine's business.
FUTURE_FIELDS = set(vars(Future())) | {"_claimed_by"}  # (who resolved it: lean_future)
READ_ONLY = ("id", "name", "spec", "meta", "status", "reason", "exit_code", "native_id",
             "started", "ended", "attempts", "jobdir", "stdout", "stderr", "record")


@pytest.mark.parametrize("attribute", READ_ONLY)
def test_assigning_to_what_a_job_shows_is_refused(attribute):
    job = Job(jobs.noop)
    with pytest.raises(AttributeError,
                       match=f"property '{attribute}' of 'Job' object has no setter"):
        setattr(job, attribute, None)


def test_a_job_holds_no_scheduling_fields_of_its_own(scheduler):
    # (A Job makes the Future's lock and lists only when they are used.)
    waiting = Job(jobs.square, (3,))
    assert "_record" in vars(waiting) and set(vars(waiting)) <= FUTURE_FIELDS | {"_record"}
    parent = scheduler.submit(jobs.square, 2)
    child = scheduler.submit(jobs.add, parent, 1)
    assert child.result(timeout=30) == 5
    for job in (parent, child):
        assert set(vars(job)) <= FUTURE_FIELDS | {"_record"}
        assert isinstance(job._record, JobRecord)


def test_what_a_job_shows_is_read_from_its_record(scheduler):
    job = scheduler.submit(jobs.square, 4)
    assert job.result(timeout=30) == 16
    record = job._record
    assert (job.id, job.name, job.status, job.attempts, job.exit_code) == (
        record.id, record.name, JobStatus.COMPLETED, 1, 0)
    assert job.record.data == 16 and job.record.status is JobStatus.COMPLETED
    assert repr(job) == f"<Job {job.id} 'square' COMPLETED>"


def test_the_engine_reads_a_dispatched_jobs_id_and_an_undispatched_one_is_a_bug(scheduler):
    """The engine and the registry key jobs by ``dispatched_id``: the id dispatch
    gave (or kept), never a None that would file every job under one key."""
    mine, numbered = scheduler.dispatch([Job(jobs.square, (3,), id="mine"), Job(jobs.square, (5,))])
    assert (mine._record.dispatched_id, numbered._record.dispatched_id) == ("mine", numbered.id)
    assert isinstance(numbered.id, int)
    with pytest.raises(RuntimeError, match=r"^job 'noop' has no id: it was never dispatched "
                                           r"\(a bug in corral\)$"):
        _ = Job(jobs.noop)._record.dispatched_id
    assert (mine.result(timeout=30), numbered.result(timeout=30)) == (9, 25)


def test_an_illegal_status_change_is_refused_by_the_one_transition_function():
    record = Job(jobs.noop)._record
    with pytest.raises(IllegalTransition, match="a job cannot go from NEW to RUNNING"):
        record.move(JobStatus.RUNNING)
    assert record.status is JobStatus.NEW


def test_an_unsubmitted_job_cancelled_goes_through_the_transition_function_and_stays_out(
        scheduler):
    job = Job(jobs.noop)
    assert job.cancel() is True
    assert job.status is JobStatus.CANCELLED and job.reason == "cancelled by user"
    with pytest.raises(CancelledError, match=r"job None 'noop' was cancelled: cancelled by user"):
        job.result(timeout=0)
    with pytest.raises(ValueError, match=r"<Job \? 'noop' CANCELLED> cannot be dispatched: "
                                         r"it is CANCELLED"):
        scheduler.dispatch([job])


def test_a_cancelled_running_job_was_killed_with_the_cancel_intent(scheduler, release):
    job = scheduler.submit(jobs.wait_for_file, str(release))
    wait_until(job.running)
    assert job.cancel() is True
    assert job._record.kill_intent is KillIntent.CANCEL
    assert job.status is JobStatus.CANCELLED


def test_kill_intents_and_deadline_kinds_are_enums_not_strings():
    assert {intent.name for intent in KillIntent} == {"CANCEL", "TIMEOUT", "ABORT",
                                                      "ABORT_KILLED", "ABORT_TIMED_OUT"}
    assert {kind.name for kind in DeadlineKind} == {"TIMEOUT", "ABORT_GRACE"}
    assert KillIntent.TIMEOUT != "timeout"  # compared as members, never as text


def test_a_finished_job_dropped_by_the_program_frees_its_record_without_the_collector(
        scheduler):
    """The record lets go of its Job once it is resolved: no cycle, so
    reference counting alone frees both (200,000 dropped calls stay flat)."""
    job = scheduler.submit(jobs.square, 7)
    assert job.result(timeout=30) == 49
    record_ref = weakref.ref(job._record)
    assert job._record.future is None  # resolved: the record holds its Job no longer
    del job
    assert record_ref() is None


def test_an_unfinished_job_the_program_dropped_is_still_listed(scheduler, release):
    scheduler.submit(jobs.wait_for_file, str(release))  # the Job is dropped at once
    wait_until(lambda: scheduler.qsize("running") == 1)
    [listed] = scheduler.jobs()
    assert listed._record.future is listed  # the record keeps it alive until resolved
    release.touch()
    assert listed.result(timeout=30) is None


# -- the import graph -------------------------------------------------------------------------


def _imports_of(path: Path, module: str, modules: set[str]) -> set[str]:
    """The corral modules *module* imports anywhere in its file, under
    ``if TYPE_CHECKING:`` and inside functions too."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules and name != module)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_core_control_and_journal_import_each_other_without_cycles():
    """The cycles engine → job → store/packing/events/summary → job → engine and
    control.server → control.verbs → core.scheduler → control.server are gone,
    counting imports made only for type checking too."""
    files = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[module] = path
    modules = set(files)
    watched = ("corral.core", "corral.control", "corral.journal", "corral.events")
    graph = {module: {name for name in _imports_of(path, module, modules)
                      if name.startswith(watched)}
             for module, path in files.items() if module.startswith(watched)}
    assert _cycles(graph) == []


@pytest.mark.parametrize(("call", "method"), [
    (lambda job: job.set_result(42), "set_result"),
    (lambda job: job.set_exception(ValueError("from outside")), "set_exception")])
def test_a_dispatched_job_cannot_be_resolved_by_the_program(call, method):
    """A Job is a Future, but once dispatched its scheduler resolves it: the
    program's set_result was accepted, and result() then gave the program's
    value while the job ran on and its dependents got the job's own (cold
    review). An undispatched Job is a plain Future (CPython's Future tests)."""
    with corral.Scheduler(cores=1) as scheduler:
        first = scheduler.submit(pow, 2, 5)
        with pytest.raises(RuntimeError, match=rf"<Job 1 'pow' \w+> is resolved by its "
                           rf"scheduler: {method}\(\) is for a Future nobody runs"):
            call(first)
        second = scheduler.submit(pow, first, 2)
        assert (first.result(timeout=60), second.result(timeout=60)) == (32, 1024)
    unsent = Job(pow, (2, 3))
    unsent.set_result(8)
    assert unsent.result(0) == 8


def test_after_the_control_loop_crashed_a_new_job_is_refused_not_left_pending(caplog):
    """A bug that kills the control loop fails the jobs it had; a job submitted
    after that once waited for ever (nothing would run it). The bug is injected:
    every real way to crash the loop found so far is fixed."""
    scheduler = corral.Scheduler(cores=1)
    try:
        first = scheduler.submit(pow, 2, 5)
        assert first.result(timeout=60) == 32

        def broken_updates(timeout):
            raise RuntimeError("a bug in a backend")

        scheduler._backend.updates = broken_updates  # type: ignore[method-assign]
        doomed = scheduler.submit(pow, 3, 3)
        with pytest.raises(corral.CorralError, match="corral's scheduler crashed: "
                                                    r"RuntimeError\('a bug in a backend'\)"):
            doomed.result(timeout=60)
        refusal = (r"^cannot dispatch jobs: this scheduler's control loop crashed "
                   r"\(RuntimeError\('a bug in a backend'\); see the log\); make a new "
                   r"Scheduler$")
        with pytest.raises(corral.BackendError, match=refusal):
            scheduler.submit(pow, 4, 2)
    finally:
        scheduler.shutdown(wait=True)


def test_a_job_submitted_as_the_control_loop_crashed_fails_too(caplog):
    """Race review: a job whose submit() had looked for a crash just before the
    loop crashed was handed to a loop that ended without taking it: it stayed
    NEW, and result() never returned. The window is made wide here: the crash
    is hidden from submit() once, after the loop has stopped."""
    scheduler = corral.Scheduler(cores=1)
    try:
        assert scheduler.submit(pow, 2, 5).result(timeout=60) == 32

        def broken_updates(timeout):
            raise RuntimeError("a bug in a backend")

        scheduler._backend.updates = broken_updates  # type: ignore[method-assign]
        with pytest.raises(corral.CorralError):
            scheduler.submit(pow, 3, 3).result(timeout=60)
        engine = scheduler._engine
        assert engine.stopped.wait(60)
        crash, engine.crash = engine.crash, None  # submit() looks, and sees none ...
        post = engine.post

        def post_once_it_crashed(function, *args):  # ... then the loop crashes, and it posts
            engine.crash = crash
            post(function, *args)

        engine.post = post_once_it_crashed  # type: ignore[method-assign]
        late = scheduler.submit(pow, 4, 2)
        with pytest.raises(corral.CorralError, match=r"^job 3 'pow': corral's scheduler crashed: "
                                                    r"RuntimeError\('a bug in a backend'\)$"):
            late.result(timeout=60)
        assert late.status is corral.JobStatus.FAILED
    finally:
        scheduler.shutdown(wait=True)


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt()],
                         ids=["SystemExit", "KeyboardInterrupt"])
def test_a_callback_that_raises_systemexit_costs_only_itself(raised, caplog):
    """Race review: a done callback's, on_finish's or a listener's sys.exit()
    (or KeyboardInterrupt), caught as no Exception, crashed the control loop:
    every job of the run failed "corral's scheduler crashed"."""
    def callback(*_):
        raise raised

    with corral.Scheduler(cores=1, on_finish=callback) as scheduler:
        scheduler.on_event(callback)
        first = scheduler.submit(pow, 2, 5)
        first.add_done_callback(callback)
        assert first.result(timeout=60) == 32
        assert scheduler.submit(pow, 3, 2).result(timeout=60) == 9
    said = caplog.text
    assert "exception calling callback" in said and "on_finish callback raised" in said
    assert "control loop crashed" not in said
