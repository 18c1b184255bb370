"""The driver's side of the Dask backend.

Jobs go to a ``distributed`` scheduler as tasks running
:func:`corral.backends.dask.task.run_job`, one ``Client.map`` per batch and
resource request. A chained job goes with its parents' futures among its
arguments, so Dask starts it when they finish, without a round trip through
the driver; the task then looks at its parents' outcomes and runs nothing if
one did not complete (the engine cancels it, naming the parent).

What comes back, and from which thread:

* a task's "started" event (``Worker.log_event`` on a topic of this backend's
  own), and the scheduler's ``remove-worker`` events: on the client's event loop;
* a future that finished, failed or was cancelled: ``add_done_callback``, on
  the client's callback thread, hands it to the backend's reader thread, which
  gathers the results of every future finished meanwhile in one round trip.

They only put what they got in :attr:`DaskBackend._inbox` and wake the control
loop; :meth:`DaskBackend.updates` turns it into updates there, so the control
loop never waits on Dask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import queue
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from corral.backends.base import Capabilities, Capacity, Submission, Update
from corral.backends.dask import BACKEND, INSTALL_HINT
from corral.backends.dask import shares
from corral.backends.dask.resources import (CORES, GPU, MEMORY, WorkerCapacity, dask_resources,
                                            refusal)
from corral.backends.dask.task import (CLAIMS, PAUSED, Ending, TaskOutcome, TaskSpec, end_run,
                                       run_job, terminate_job, wait_for_stopped_attempts)
from corral.errors import BackendError
from corral.runtime.command import TERM_GRACE_S, describe_exit
from corral.runtime.command_result import RESULT_FILE_NAME
from corral.runtime.outcomes import OutcomesSince
from corral.runtime.threads import start_thread
from corral.spec import Resources
from corral.status import JobStatus

__all__ = ["DaskBackend"]

log = logging.getLogger("corral.backends.dask")

#: What a job name keeps in a Dask key (letters, digits and ``_``).
_KEY_NAME = re.compile(r"[^A-Za-z0-9_]+")
#: Seconds after a worker went away that the jobs waiting in Dask are checked
#: against the workers left (a killed worker's nanny brings it back before).
RECHECK_AFTER_S = 10.0
#: How long a job killed while its task may run waits for the task to say how
#: it ended (see DaskBackend.kill): the task looks at its state every WATCH_S
#: (0.05 s), and its event then passes the scheduler. One known to have started
#: waits TERM_GRACE_S longer: its call may run its finally blocks that long.
LATE_END_S = 0.5
#: Tells the reader thread to stop.
_STOP_READING = object()
#: Seconds a scheduler's description of its workers is reused by the submit check.
_WORKERS_TTL_S = 2.0
_OPTIONS = ("address", "client", "n_workers", "connect_timeout")


@dataclass(frozen=True)
class _Sent:
    """A task as it went to Dask, kept until its job ends: to send it again
    after a pause, with the parents' futures it takes (which stay alive with it)."""

    job_id: int | str
    spec: TaskSpec
    inputs: list[Any]
    resources: tuple[tuple[str, float], ...]
    priority: int
    jobdir: Path
    asked: Resources
    #: When it went (epoch seconds): an outcome logged earlier is an earlier try's.
    sent_at: float = dataclasses.field(default_factory=time.time)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise BackendError(f"the Dask backend needs the distributed package, which is not "
                           f"installed here ({error}); install it with: {INSTALL_HINT}") from error
    return distributed


class DaskBackend:
    """Runs jobs as tasks of a Dask cluster. See the module docstring."""

    name: ClassVar[str] = BACKEND.name
    capabilities: ClassVar[Capabilities] = BACKEND.capabilities
    chains_dependencies: ClassVar[bool] = True
    enforces_walltime: ClassVar[bool] = False
    holds: ClassVar[bool] = True
    #: Jobs that become ready within this many seconds go to Dask together: one
    #: graph message (a ``client.map``) instead of one per job, which the Dask
    #: scheduler pays for (a script submitting in a loop).
    gather_s: ClassVar[float] = 0.005

    def __init__(self, cores: int | None = None, memory: int | None = None,
                 gpus: int | None = None, options: dict[str, Any] | None = None,
                 **_ignored: Any) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"the Dask backend takes no backend option {', '.join(unknown)} "
                             f"(it takes {', '.join(_OPTIONS)})")
        distributed = _import_distributed()
        self._token = os.urandom(5).hex()
        self._topic = _topic_of(self._token)
        self._host = socket.gethostname()
        #: A job's directory where it gives none and the worker sees this one.
        self._cwd = os.getcwd()
        #: The program's own directories (its script's, '' as the directory it
        #: ran in), which a Dask worker's runner imports from as well.
        self._path = tuple(os.path.abspath(entry or self._cwd) for entry in sys.path)
        self._owned_cluster: Any = None
        self._owns_client = True
        self._capacity = Capacity(cores, memory, gpus)  # None: no cap of the run's own
        try:
            self._client = self._connect(distributed, options, cores, memory, gpus)
        except BaseException:  # a LocalCluster started for a Client that failed
            if self._owned_cluster is not None:
                _quietly(lambda: self._owned_cluster.close(timeout=10))
            raise
        self.address = str(self._client.scheduler.address)
        self._inbox: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._woken = threading.Event()
        self._pending: list[Update] = []
        self._futures: dict[int | str, Any] = {}       # job id -> its future, until it ends
        self._keys: dict[int | str, str] = {}           # job id -> its current attempt's key
        self._job_of: dict[str, int | str] = {}         # key -> job id, for live keys
        self._started: dict[str, str] = {}              # key -> the worker it started on
        self._sent: dict[int | str, _Sent] = {}         # job id -> what went to Dask, until it ends
        self._held: list[_Sent] = []                    # tasks that found the run paused
        self._recheck_at: float | None = None           # when to look for unrunnable jobs
        #: Keys killed while their task may run: (until when its end may come, when
        #: killed). Settled by the task's word, else as killed then.
        self._killed_late: dict[str, tuple[float, float]] = {}
        #: The run's outcome logs, read only as far back as killed jobs were sent.
        self._outcome_readers: dict[str, OutcomesSince] = {}
        self._paused = False
        self._to_read: queue.SimpleQueue[Any] = queue.SimpleQueue()  # for the reader thread
        self._attempts = itertools.count(1)
        self._shares: set[Path] = set()
        self._workers: list[WorkerCapacity] = []
        self._workers_read = float("-inf")
        self._gone: str | None = None  # why the scheduler cannot be used any more
        self._closed = False
        #: The workers whose removal we are told of, and the handler of each.
        self._watched_workers: dict[str, Callable[[tuple[float, Any]], None]] = {}
        _topics.subscribe(self._client, self._topic, self._event)
        self._current_workers()
        self._reader = start_thread(self._read_results, name="corral dask results")

    # -- connecting --------------------------------------------------------------------------

    def _connect(self, distributed: Any, options: dict[str, Any], cores: int | None,
                 memory: int | None, gpus: int | None) -> Any:
        timeout = options.get("connect_timeout", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"connect_timeout={timeout!r} must be a number of seconds > 0")
        given = options.get("client", options.get("address"))
        if isinstance(given, distributed.Client):
            self._owns_client = False
            return given
        if given is not None and hasattr(given, "scheduler_address"):  # a cluster object
            return self._client_for(distributed, given, timeout)
        if given is not None and not isinstance(given, str):
            raise ValueError(f"address={given!r} must be a Dask scheduler's address "
                             "('tcp://host:8786'), a distributed.Client or a cluster object")
        if given:
            return self._client_for(distributed, given, timeout)
        import dask

        configured = dask.config.get("scheduler-address", None)
        if configured:  # ($DASK_SCHEDULER_ADDRESS: where a plain Client() goes; dask review)
            log.info("connecting to the Dask scheduler that Dask's configuration names: %s",
                     configured)
            return self._client_for(distributed, configured, timeout)
        self._owned_cluster = _local_cluster(distributed, options, cores, memory, gpus)
        log.info("started a Dask LocalCluster at %s (dashboard: %s)",
                 self._owned_cluster.scheduler_address,
                 getattr(self._owned_cluster, "dashboard_link", "none"))
        return self._client_for(distributed, self._owned_cluster, timeout)

    @staticmethod
    def _client_for(distributed: Any, target: Any, timeout: float) -> Any:
        """A Client of *target*, made within *timeout* seconds. Dask's own timeout
        covers the connection, not an answer: a server that accepts and says
        nothing (not a Dask scheduler) would hold it for ever. So the Client is
        made on a thread of its own, and given up on (left to finish there)."""
        where = getattr(target, "scheduler_address", target)
        made: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def connect() -> None:
            try:
                made.put(distributed.Client(target, timeout=timeout, set_as_default=False))
            except BaseException as error:
                made.put(error)

        start_thread(connect, name="corral dask connect")
        try:
            client = made.get(timeout=timeout + 5)
        except queue.Empty:
            raise BackendError(f"no Dask scheduler answered at {where} within {timeout:g} s "
                               "(is it a Dask scheduler's address?)") from None
        if isinstance(client, BaseException):
            raise BackendError(f"cannot reach the Dask scheduler at {where} within "
                               f"{timeout:g} s: {client}") from client
        return client

    # -- what the scheduler asks --------------------------------------------------------------

    def capacity(self) -> Capacity:
        """Dask places the jobs; corral packs only under the caps the program
        set on what the run has in flight (dask review: ``cores=1`` ran three
        jobs at once, as the README says it does not on any backend)."""
        return self._capacity

    def check(self, resources: Resources) -> None:
        refused = refusal(resources, self._current_workers())  # (first: it names the workers)
        if refused is not None:
            raise refused
        self._capacity.check(resources, "Dask")

    def submit(self, batch: Sequence[Submission]) -> list[str]:
        keys = [self._new_key(submission) for submission in batch]
        if self._gone is not None:
            for submission in batch:
                self._pending.append(Update(submission.job_id, JobStatus.FAILED,
                                            reason=self._gone))
            return keys
        workers = self._current_workers()
        sending = []
        for submission, key in zip(batch, keys, strict=True):
            spec, inputs = self._task(submission, key)
            sent = _Sent(submission.job_id, spec, inputs,
                         tuple(sorted(dask_resources(submission.resources, workers).items())),
                         submission.priority, Path(submission.jobdir), submission.resources)
            self._sent[submission.job_id] = sent
            sending.append(sent)
        self._send(sending)
        return keys

    def _send(self, sending: list[_Sent]) -> None:
        """Hand tasks to Dask: one ``client.map`` per resource request and priority."""
        groups: dict[tuple, list[_Sent]] = {}
        for sent in sending:
            groups.setdefault((sent.resources, sent.priority), []).append(sent)
        for (resources, priority), members in groups.items():
            # Each option becomes an annotation of every task, which the Dask scheduler
            # pays for: none is passed where it would say nothing.
            options: dict[str, Any] = {"priority": priority} if priority else {}
            if resources:
                options["resources"] = dict(resources)
            try:
                futures = self._client.map(
                    run_job, [sent.spec for sent in members], [sent.inputs for sent in members],
                    key=[sent.spec.key for sent in members], pure=False, **options)
            except Exception as error:  # the scheduler refused or is gone: these jobs fail
                for sent in members:
                    self._pending.append(Update(sent.job_id, JobStatus.FAILED,
                                                reason=f"could not send it to Dask: {error}"))
                continue
            for sent, future in zip(members, futures, strict=True):
                self._futures[sent.job_id] = future
                future.add_done_callback(self._finished)

    def _task(self, submission: Submission, key: str) -> tuple[TaskSpec, list[Any]]:
        """The task's spec, and the parents' futures it takes as arguments."""
        inputs: list[Any] = []
        parent_ids: list[int | str] = []

        def parent(job_id: int | str) -> int:
            if job_id not in parent_ids:
                parent_ids.append(job_id)
                inputs.append(self._futures[job_id])
            return parent_ids.index(job_id)

        upstream = tuple(item if isinstance(item, bytes) else parent(item)
                         for item in submission.upstream)
        for job_id in submission.after:
            parent(job_id)
        share = self._share(Path(submission.jobdir).parent)
        spec = TaskSpec(key=key, attempt=int(key.rsplit("-", 1)[1]), job_id=submission.job_id,
                        jobdir=str(submission.jobdir), share=str(share), topic=self._topic,
                        call=submission.call, upstream=upstream, argv=submission.argv,
                        env=submission.env, cwd=submission.cwd, default_cwd=self._cwd,
                        driver_path=self._path,
                        outcomes=submission.outcomes, parent_ids=tuple(parent_ids))
        return spec, inputs

    def _new_key(self, submission: Submission) -> str:
        """The Dask key of the job's next attempt: ``NAME-TOKEN-JOB-ATTEMPT``, the
        attempt numbered across the run (the workers' claims read that number),
        the name the job's own (Dask's dashboard groups tasks by it)."""
        name = _KEY_NAME.sub("_", submission.name)[:40].strip("_") or "job"
        return self._keyed(submission.job_id, f"corral_{name}")

    def _keyed(self, job_id: int | str, name: str) -> str:
        key = f"{name}-{self._token}-{job_id}-{next(self._attempts)}"
        old = self._keys.get(job_id)
        if old is not None:
            self._job_of.pop(old, None)
        self._keys[job_id] = key
        self._job_of[key] = job_id
        return key

    def _share(self, run_dir: Path) -> Path:
        """This backend's directory in the run: the attempts' claims (see
        corral.backends.dask.task); a worker that finds it sees the run directory.
        Removed at close; a killed driver's is left, and the next session
        waits for the jobs of that driver the workers still stop, then removes
        it (see corral.backends.dask.shares)."""
        share = self._share_of(run_dir)
        if run_dir not in self._shares:
            shares.make(share, (CLAIMS,))
            self._shares.add(run_dir)
            left = shares.left_by_dead_drivers(run_dir, share)
            if left and self._gone is None and self._wait_for_stopped_attempts(
                    [_topic_of(shares.token_of(dead)) for dead in left]):
                shares.remove(left)
        return share

    def _wait_for_stopped_attempts(self, topics: list[str]) -> bool:
        """Wait until no worker runs a job for the sessions of *topics* (killed
        drivers', their calls in their grace), for at most the grace and a
        moment; whether every worker said so."""
        limit = TERM_GRACE_S + 0.5
        answers: dict[str, Any] = {}

        def wait() -> None:
            try:
                answers.update(self._client.run(wait_for_stopped_attempts, topics, limit))
            except Exception as error:  # (best effort, as the stop itself)
                log.debug("could not wait for a killed driver's jobs: %s", error)

        start_thread(wait, name="corral dask earlier attempts").join(timeout=limit + 2)
        return bool(answers) and not any(dict(answers).values())

    # -- pause -----------------------------------------------------------------------------

    def hold(self, job_ids: Collection[int | str]) -> None:
        """Pause: a task that starts from now on finds the run's pause mark and
        returns at once, running nothing; the backend keeps it and sends it again
        at :meth:`release`. (Dask cannot hold a task it was given; where the workers
        do not see the run directory, what Dask was given still runs.)"""
        self._paused = True
        for share in self._share_dirs():
            (share / PAUSED).touch()

    def release(self, job_ids: Collection[int | str]) -> None:
        self._paused = False
        for share in self._share_dirs():
            (share / PAUSED).unlink(missing_ok=True)
        held, self._held = self._held, []
        self._send_again(held)

    def _send_again(self, held: list[_Sent]) -> None:
        """Send held tasks again, each as a new attempt (its own key and claim)."""
        again = []
        for sent in held:
            if self._job_of.get(sent.spec.key) != sent.job_id:
                continue  # cancelled meanwhile
            name = sent.spec.key.split("-", 1)[0]
            del self._job_of[sent.spec.key]
            key = self._keyed(sent.job_id, name)
            sent = dataclasses.replace(sent, spec=dataclasses.replace(
                sent.spec, key=key, attempt=int(key.rsplit("-", 1)[1])))
            self._sent[sent.job_id] = sent
            again.append(sent)
        if again:
            self._send(again)

    def _share_of(self, run_dir: Path) -> Path:
        return run_dir / f"{shares.PREFIX}{self._token}"

    def _share_dirs(self) -> list[Path]:
        return [self._share_of(run_dir) for run_dir in self._shares]

    def can_chain(self, job_id: int | str) -> bool:
        return self._gone is None and job_id in self._futures

    # -- what comes back ------------------------------------------------------------------------

    def _event(self, event: tuple[float, Any]) -> None:
        """A task's "started" event (client's event loop)."""
        self._inbox.put(("event", event[1]))
        self.wake()

    def _scheduler_event(self, worker: str, event: tuple[float, Any]) -> None:
        """The scheduler's events about *worker* (its topic is its address): a
        worker removed loses the jobs it ran."""
        message = event[1]
        if isinstance(message, dict) and message.get("action") == "remove-worker":
            self._inbox.put(("removed", (worker, message)))
            self.wake()

    def _finished(self, future: Any) -> None:
        """A future finished, failed or was cancelled (client's callback thread):
        for the reader thread, which reads its result."""
        self._to_read.put(future)

    def updates(self, timeout: float | None) -> list[Update]:
        if self._recheck_at is not None:
            until = max(0.0, self._recheck_at - time.monotonic())
            timeout = until if timeout is None else min(timeout, until)
        if self._killed_late:
            until = max(0.0, min(until for until, _ in self._killed_late.values())
                        - time.monotonic())
            timeout = until if timeout is None else min(timeout, until)
        if not self._pending:
            self._woken.wait(timeout)
        self._woken.clear()
        if self._recheck_at is not None and time.monotonic() >= self._recheck_at:
            self._recheck_at = None
            unrunnable = self._fail_the_unrunnable()
            if unrunnable:
                self._cancel(unrunnable)
        while True:
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "event":
                if item[0] == "ended":
                    self._ended_as_killed(item)
                elif item[0] == "stopped":
                    self._stopped_event(item)
                elif item[0] == "start":  # (a word of another version's is not taken for one)
                    self._started_event(item)
            elif kind == "removed":
                self._worker_removed(*item)
            elif kind == "results":
                self._results(item)
            else:
                self._ended_without_result(*item)
        if self._killed_late:
            self._settle_killed()
        found, self._pending = self._pending, []
        return found

    def _settle_killed(self) -> None:
        """Settle the killed jobs whose tasks said they were stopped, or said
        nothing in time: as completed where the run's outcome log has this
        try's result (a journaled call), else as killed.

        A task that ends before Dask's cancel reaches its worker (60 ms and
        more on a busy one) cannot tell: its result is dropped all the same,
        and the outcome log, which the worker writes before it replies, is
        then the only word of it (attack review: a dozen calls of a map left
        early ran again in the rerun)."""
        now = time.monotonic()
        expired = [(key, killed_at) for key, (until, killed_at) in self._killed_late.items()
                   if until <= now]
        if not expired:
            return
        for key, _ in expired:
            del self._killed_late[key]
        logged: dict[str, tuple[bool, bytes, float]] = {}
        since: dict[str, float] = {}  # outcomes directory -> the earliest try's send
        for key, _ in expired:
            sent = self._sent.get(self._job_of.get(key, ""))
            if sent is not None and sent.spec.outcomes:
                directory = sent.spec.outcomes
                since[directory] = min(since.get(directory, sent.sent_at), sent.sent_at)
        for directory, earliest in since.items():
            reader = self._outcome_readers.get(directory)
            if reader is None:
                reader = self._outcome_readers[directory] = OutcomesSince(
                    os.path.dirname(directory))
            logged.update(reader.read(earliest))
        for key, killed_at in expired:
            job_id = self._job_of.get(key)
            if job_id is None:
                continue
            sent = self._sent.get(job_id)
            entry = logged.get(str(job_id))
            if entry is not None and entry[0] and sent is not None and entry[2] >= sent.sent_at:
                self._settle(key, Update(job_id, JobStatus.COMPLETED, exit_code=0,
                                         value=entry[1], at=entry[2]))
            else:
                self._settle(key, Update(job_id, JobStatus.CANCELLED, reason="killed",
                                         at=killed_at))

    def _stopped_event(self, message: Any) -> None:
        """A task's word that its job was killed (or ended with a result too
        large for the word): settled now, from the run's outcome log where it
        has this try's."""
        key = message[1]
        if key in self._killed_late:
            self._killed_late[key] = (0.0, self._killed_late[key][1])

    def _ended_as_killed(self, message: Any) -> None:
        """A task's word of how its job ended as Dask cancelled it: it
        completed all the same, or a call raised as it was stopped (see
        corral.backends.dask.task._say_how_it_ended_when_cancelled)."""
        _, key, ending, ok, blob, returncode, started, ended = message
        if key not in self._killed_late:
            return
        job_id = self._job_of.get(key)
        if job_id is None:
            return
        outcome = TaskOutcome(Ending(ending), ok=ok, blob=blob, returncode=returncode,
                              started=started, ended=ended)
        update = self._outcome_update(job_id, outcome)
        update.began = started or None
        self._settle(key, update)

    # -- the reader thread ----------------------------------------------------------------------

    def _read_results(self) -> None:
        """Read the results of finished futures, in batches, off the engine's thread.

        A gather is a round trip through a busy Dask scheduler (20 ms and more):
        made by the control loop, it held back every submit and kill meanwhile.
        Here, futures that finish during a gather are read together by the next.
        """
        while self._read_a_batch():
            pass

    def _read_a_batch(self) -> bool:
        """Read what finished since the last batch; False once told to stop. (A
        function of its own so that it holds no future while it waits: Dask
        computes again a lost result that a client still holds.)"""
        batch = [self._to_read.get()]
        while True:
            try:
                batch.append(self._to_read.get_nowait())
            except queue.Empty:
                break
        if _STOP_READING in batch:
            return False
        finished = [future for future in batch if future.status == "finished"]
        if finished:
            self._inbox.put(("results", list(zip(finished, self._gather(finished), strict=True))))
        for future in batch:
            if future.status != "finished":
                self._inbox.put(("ended", (future, self._why_ended(future))))
        self.wake()
        return True

    def _gather(self, futures: list[Any]) -> list[Any]:
        """Each future's result, or the exception that stood in for it."""
        try:
            outcomes = self._client.gather(futures, errors="skip")
        except Exception:
            outcomes = []
        if len(outcomes) == len(futures):
            return list(outcomes)
        found = []
        for future in futures:  # one was lost on the way: read them one by one
            try:
                found.append(future.result(timeout=30))
            except BaseException as error:
                found.append(error)
        return found

    def _why_ended(self, future: Any) -> str:
        """What Dask said of a future that ended without a result."""
        if future.status == "cancelled":
            state = getattr(future, "_state", None)  # distributed keeps the reason only there
            return str(getattr(state, "exception", "") or "")
        try:
            error = future.exception(timeout=10)
        except BaseException as failed:
            error = failed
        return f"{type(error).__name__}: {error}"

    # -- turning it into updates (the engine's thread) -----------------------------------------

    def _started_event(self, message: Any) -> None:
        _, key, started, host, worker, spool = message
        job_id = self._job_of.get(key)
        if job_id is None or key in self._started:
            return
        if key in self._killed_late:  # (killed before this word came: see kill)
            until, killed_at = self._killed_late[key]
            self._killed_late[key] = (until + TERM_GRACE_S, killed_at)
        self._watch(worker)
        self._started[key] = worker
        self._pending.append(Update(job_id, JobStatus.RUNNING, native_id=key, at=started,
                                    live_output=tuple(spool) if host == self._host else None))

    def _worker_removed(self, worker: str, message: dict) -> None:
        """Fail the jobs that were running on a worker that went away; Dask would run
        them again. Only those announced as started there: Dask also counts as the
        worker's the tasks merely assigned to it, which it now runs elsewhere. (A job
        lost before it was announced, in its first 20 ms, is found by its claim.)"""
        lost = [key for key, where in self._started.items()
                if where == worker and key in self._job_of]
        futures = []
        for key in lost:
            job_id = self._job_of.pop(key)
            self._started.pop(key, None)
            future = self._futures.pop(job_id, None)
            if future is not None:
                futures.append(future)
            self._pending.append(Update(job_id, JobStatus.FAILED, reason=(
                f"worker lost: the Dask worker {worker} went away while it ran")))
        if futures:
            self._cancel(futures)
        # A worker killed is often back in a moment (its nanny restarts it): only then
        # is what waits for it looked at again.
        self._recheck_at = time.monotonic() + RECHECK_AFTER_S

    def _fail_the_unrunnable(self) -> list[Any]:
        """Fail the jobs waiting in Dask that no worker left can ever run (the only
        GPU worker went): Dask would keep them waiting for ever. Their futures,
        to cancel. (With no worker left at all, an adaptive cluster's, they wait.)"""
        self._workers_read = float("-inf")
        workers = self._current_workers()
        futures = []
        for sent in list(self._sent.values()):
            if sent.spec.key in self._started or self._job_of.get(sent.spec.key) != sent.job_id:
                continue
            refused = refusal(sent.asked, workers)
            if refused is None:
                continue
            future = self._futures.pop(sent.job_id, None)
            if future is not None:
                futures.append(future)
            reason = f"no Dask worker left can run it: it {refused}"
            self._settle(sent.spec.key, Update(sent.job_id, JobStatus.FAILED, reason=reason))
        return futures

    def _results(self, read: list[tuple[Any, Any]]) -> None:
        for future, outcome in read:
            job_id = self._job_of.get(future.key)
            if job_id is None:  # killed or lost meanwhile: reported then
                continue
            if isinstance(outcome, TaskOutcome) and outcome.ending is Ending.HELD:
                if future.key in self._killed_late:  # killed as it came back: not sent again
                    self._settle(future.key, Update(job_id, JobStatus.CANCELLED, reason="killed"))
                    continue
                self._futures.pop(job_id, None)
                sent = self._sent[job_id]
                if self._paused:
                    self._held.append(sent)
                else:  # released while it was on its way back
                    self._send_again([sent])
                continue
            if future.key not in self._started and isinstance(outcome, TaskOutcome):
                # Short jobs are not announced: the engine learns from the
                # outcome when it started.
                self._pending.append(Update(job_id, JobStatus.RUNNING, native_id=future.key,
                                            at=outcome.started or None))
            self._settle(future.key, self._outcome_update(job_id, outcome))

    def _outcome_update(self, job_id: int | str, outcome: Any) -> Update:
        if not isinstance(outcome, TaskOutcome):
            return Update(job_id, JobStatus.FAILED, reason=f"its result could not be read: "
                                                            f"{outcome!r}")
        self._save_output(job_id, outcome)
        at = outcome.ended or None
        ending = outcome.ending
        if ending is Ending.CALL:
            if outcome.ok:
                return Update(job_id, JobStatus.COMPLETED, exit_code=0, value=outcome.blob,
                              at=at)
            return Update(job_id, JobStatus.FAILED, exit_code=1, error=outcome.blob, at=at)
        if ending is Ending.COMMAND:
            code = outcome.returncode
            if code is None:
                return Update(job_id, JobStatus.FAILED, reason=f"could not start: {outcome.reason}",
                              at=at)
            if code == 0:
                return Update(job_id, JobStatus.COMPLETED, exit_code=0, at=at)
            return Update(job_id, JobStatus.FAILED, exit_code=code, reason=describe_exit(code),
                          at=at)
        if ending is Ending.UPSTREAM:
            return Update(job_id, JobStatus.CANCELLED, reason=outcome.reason, at=at)
        if ending is Ending.KILLED:
            return Update(job_id, JobStatus.CANCELLED, reason="killed", at=at)
        return Update(job_id, JobStatus.FAILED, reason=outcome.reason, at=at)

    def _save_output(self, job_id: int | str, outcome: TaskOutcome) -> None:
        """Write output and a result file the task sent back (its worker did
        not see the run directory)."""
        if outcome.stdout is None and outcome.stderr is None and outcome.result_file is None:
            return
        sent = self._sent.get(job_id)
        jobdir = sent.jobdir if sent is not None else None
        if jobdir is None:
            return
        jobdir.mkdir(parents=True, exist_ok=True)
        for name, data in (("stdout", outcome.stdout), ("stderr", outcome.stderr)):
            if data:
                (jobdir / name).write_bytes(data)
        if outcome.result_file is not None:  # (an empty one too: it is no JSON, and says so)
            (jobdir / RESULT_FILE_NAME).write_bytes(outcome.result_file)

    def _ended_without_result(self, future: Any, said: str) -> None:
        key = future.key
        job_id = self._job_of.get(key)
        if job_id is None or key in self._killed_late:  # (that waits for its task's word)
            return
        if future.status == "cancelled":
            if "scheduler-connection-lost" in said or self._client.status != "running":
                self._gone = f"the Dask scheduler at {self.address} went away"
                self._settle(key, Update(job_id, JobStatus.FAILED, reason=self._gone))
            elif self._killed_late:
                # Most likely a dependent of a job killed just now, which Dask cancels
                # with it: it waits as long, so that the engine, once it knows how
                # that job ended, names it as the cause (attack review: "cancelled in
                # Dask" where a timed-out parent was).
                latest = max(until for until, _ in self._killed_late.values())
                self._killed_late[key] = (max(latest, time.monotonic() + LATE_END_S),
                                          time.time())
            else:  # someone cancelled it in Dask
                self._settle(key, Update(job_id, JobStatus.CANCELLED, reason="cancelled in Dask"))
        elif said.startswith("KilledWorker"):
            self._settle(key, Update(job_id, JobStatus.FAILED, reason=(
                f"worker lost: Dask gave up on it after its workers died ({said})")))
        else:
            self._settle(key, Update(job_id, JobStatus.FAILED,
                                     reason=f"Dask could not run it: {said}"))

    def _settle(self, key: str, update: Update) -> None:
        """Report a job's last update and forget its future."""
        job_id = self._job_of.pop(key, None)
        if job_id is None:
            return
        self._killed_late.pop(key, None)
        self._started.pop(key, None)
        self._futures.pop(job_id, None)
        self._sent.pop(job_id, None)
        self._pending.append(update)

    def wake(self) -> None:
        self._woken.set()

    # -- ending jobs --------------------------------------------------------------------------

    def kill(self, job_ids: Collection[int | str]) -> None:
        """Cancel the jobs in Dask. One whose task has finished keeps its
        outcome (the reader brings it); one whose task may run is settled when
        the task says how it ended (it stops the job as the local backend does:
        see corral.backends.dask.task), else as killed after :data:`LATE_END_S`,
        and :data:`TERM_GRACE_S` more once it is known to have started: Dask
        drops a cancelled task's result, and a job that ran to its end was
        recorded CANCELLED, which a journaled rerun ran again (attack review).
        The others are reported now, before Dask cancels the job's dependents
        too: the engine then names this job as their cause."""
        futures = []
        now = time.monotonic()
        for job_id in job_ids:
            key = self._keys.get(job_id)
            if key is None or key not in self._job_of or key in self._killed_late:
                continue
            future = self._futures.get(job_id)
            if future is None:
                self._settle(key, Update(job_id, JobStatus.CANCELLED, reason="killed"))
                continue
            grace = TERM_GRACE_S if key in self._started else 0.0
            self._killed_late[key] = (now + LATE_END_S + grace, time.time())
            if future.status != "finished":  # (a finished one's outcome is on its way)
                futures.append(future)
        if futures:
            self._cancel(futures)

    def _cancel(self, futures: list[Any]) -> None:
        try:
            self._client.cancel(futures, reason="cancelled by corral")
        except Exception as error:  # the scheduler is gone: nothing runs there any more
            log.debug("could not cancel %d Dask futures: %s", len(futures), error)

    def terminate(self, job_ids: Collection[int | str]) -> None:
        for job_id in job_ids:
            key = self._keys.get(job_id)
            worker = self._started.get(key) if key is not None else None
            if worker is None:
                continue
            start_thread(self._terminate_on, args=(key, worker),
                         name=f"corral dask terminate {key}")

    def _terminate_on(self, key: str, worker: str) -> None:
        try:
            self._client.run(terminate_job, key, workers=[worker])
        except Exception as error:
            log.debug("could not ask %s to stop %s: %s", worker, key, error)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        live = list(self._futures.values())
        self._futures.clear()
        if live and self._gone is None:
            self._cancel(live)
        _quietly(lambda: _topics.unsubscribe(self._client, self._topic, self._event))
        for worker, handler in self._watched_workers.items():
            _quietly(lambda worker=worker, handler=handler:
                     _topics.unsubscribe(self._client, worker, handler))
        self._end_run_on_workers()
        self._to_read.put(_STOP_READING)
        self._reader.join(timeout=30)
        if self._owns_client:
            if self._gone is None:
                _quietly(lambda: self._client.close(timeout=10))
            else:  # its reconnecting, cancelled now, logs a traceback of what we said in a line
                with _distributed_silenced():
                    _quietly(lambda: self._client.close(timeout=10))
        if self._owned_cluster is not None:
            _quietly(lambda: self._owned_cluster.close(timeout=10))
        for share in self._share_dirs():
            shutil.rmtree(share, ignore_errors=True)

    def _end_run_on_workers(self) -> None:
        """Close the run's corral workers and claim logs in every Dask worker now,
        rather than when they have been idle for a while (best effort: a few
        seconds at most)."""
        if self._gone is not None or not self._shares:
            return
        directories = [str(share) for share in self._share_dirs()]

        def end() -> None:
            for share in directories:
                _quietly(lambda share=share: self._client.run(end_run, self._topic, share))

        start_thread(end, name="corral dask end run").join(timeout=5)

    # -- the workers --------------------------------------------------------------------------

    def _current_workers(self) -> list[WorkerCapacity]:
        now = time.monotonic()
        if now - self._workers_read > _WORKERS_TTL_S and self._gone is None:
            try:
                info = self._client.scheduler_info(n_workers=-1)
            except TypeError:  # an older distributed: no n_workers
                info = self._client.scheduler_info()
            except Exception as error:
                log.debug("could not read the Dask workers: %s", error)
                return self._workers
            self._workers = [WorkerCapacity.from_info(address, described)
                             for address, described in info.get("workers", {}).items()]
            self._workers_read = now
            for worker in self._workers:
                self._watch(worker.address)
        return self._workers

    def _watch(self, worker: str) -> None:
        """Be told when *worker* goes: the scheduler logs its removal on the
        worker's own topic (not on "all", which also carries an event per gather)."""
        if worker not in self._watched_workers:
            def handler(event: tuple[float, Any]) -> None:
                self._scheduler_event(worker, event)

            self._watched_workers[worker] = handler
            _topics.subscribe(self._client, worker, handler)


class _TopicHandlers:
    """Event handlers per Client and topic. A Client keeps one handler per topic,
    so two Schedulers on one user's Client would replace each other's: each
    topic gets one handler here, which calls every Scheduler's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[tuple[int, str], list[Callable[[Any], None]]] = {}

    def subscribe(self, client: Any, topic: str, handler: Callable[[Any], None]) -> None:
        place = (id(client), topic)
        with self._lock:
            handlers = self._handlers.get(place)
            if handlers is not None:
                handlers.append(handler)
                return
            handlers = self._handlers[place] = [handler]

        def every(event: Any) -> None:
            with self._lock:
                called = list(handlers)
            for each in called:
                each(event)

        client.subscribe_topic(topic, every)

    def unsubscribe(self, client: Any, topic: str, handler: Callable[[Any], None]) -> None:
        place = (id(client), topic)
        with self._lock:
            handlers = self._handlers.get(place, [])
            if handler in handlers:
                handlers.remove(handler)
            if handlers:
                return
            self._handlers.pop(place, None)
        client.unsubscribe_topic(topic)


_topics = _TopicHandlers()


def _local_cluster(distributed: Any, options: dict[str, Any], cores: int | None,
                   memory: int | None, gpus: int | None) -> Any:
    """A LocalCluster sized like the local backend: *cores* threads (all CPUs but
    one), declaring cores, memory and GPUs as resources, so Dask packs jobs as
    the local backend would; ``n_workers`` worker processes share them. Everything
    listens on 127.0.0.1 only, its HTTP server on a free port (Dask's default,
    8787, may be taken by another cluster)."""
    from corral.backends.local.backend import default_cores, detect_gpus, total_memory_mb

    n_workers = options.get("n_workers", 1)
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers={n_workers!r} must be an int >= 1")
    cores = cores or default_cores()
    memory = memory or total_memory_mb()
    gpus = detect_gpus() if gpus is None else gpus
    threads = max(1, cores // n_workers)
    resources = {CORES: threads, MEMORY: memory * 1024 * 1024 // n_workers}
    if gpus:
        resources[GPU] = max(1, gpus // n_workers)
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads,
                                    processes=True, host="127.0.0.1",
                                    dashboard_address="127.0.0.1:0", resources=resources,
                                    silence_logs=logging.ERROR)



@contextlib.contextmanager
def _distributed_silenced() -> Iterator[None]:
    """Drop, meanwhile, what distributed logs of a cancelled reconnection:
    closed after its scheduler went away, a client logs its attempt to
    reconnect, cancelled by the close, as an error with two chained
    tracebacks (about 35 lines), or that it failed to reconnect, after corral
    said in one line why the jobs failed. Any other record passes, whichever
    client it is about; each caller has a filter of its own (nested or
    concurrent closes)."""
    import asyncio

    def not_a_cancelled_reconnection(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, asyncio.CancelledError)
                    or record.getMessage().startswith("Failed to reconnect to scheduler"))

    loggers = [logging.getLogger(name) for name in ("distributed.client", "distributed.utils")]
    for logger in loggers:
        logger.addFilter(not_a_cancelled_reconnection)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(not_a_cancelled_reconnection)


def _topic_of(token: str) -> str:
    """The topic of the session of *token*: its tasks' events, its runners' run."""
    return f"corral-{token}"


def _quietly(action: Any) -> None:
    try:
        action()
    except Exception as error:
        log.debug("while closing the Dask backend: %s", error)
