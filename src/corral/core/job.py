"""The job handle: a ``concurrent.futures.Future`` and a read-only view of its job.

A :class:`Job` works with ``concurrent.futures.wait``/``as_completed`` and
``asyncio.wrap_future`` (or plain ``await job``) unchanged. What it shows
(``status``, ``reason``, ``attempts``, ...) it reads from the engine's own
record of the job (:class:`corral.core.record.JobRecord`), which only the
scheduler's control-loop thread writes; reading from any thread is safe, and
assigning to those properties raises ``AttributeError``.

The Future stays internally *pending* until the job is final, so that
``cancel()`` can stop a running job too (``Future.cancel`` alone cannot).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any

from corral.core.lean_future import LeanFuture
from corral.core.record import JobRecord, cancel_future
from corral.errors import cancelled_message
from corral.result import Result
from corral.safe_repr import safe_repr
from corral.runtime.threads import plain_timeout, wait_in_slices
from corral.spec import JobSpec, Task, check_job_id, make_spec, make_task
from corral.status import JobStatus

__all__ = ["Job", "Result", "refuse_formatted_jobs"]

#: A Job's repr, as ``f"echo {job}"`` puts it into a string.
_JOB_REPR = re.compile(r"<Job \S+ (?:'.*?'|\".*?\") [A-Z_]+(?: on [^>]*)?>")


class Job(LeanFuture):
    """One unit of work and its future result.

    Build one unsubmitted with ``Job(task, args, kwargs, **options)`` and hand
    it to ``Scheduler.dispatch``, or let ``Scheduler.submit``/``shell``/
    ``script``/``call`` make and submit it in one step.

    Args:
        task: a callable, ``"package.module:function"``, a ``.py`` script
            path, or a task object (``corral.Shell(...)``, ``corral.Script(...)``).
        args, kwargs: arguments of the call (argv for a script).
        id: an id of your own (unique within the scheduler); default: a number.
        meta: anything you want to carry along; corral does not look at it.
        **options: job options: every one of ``corral.options.JOB_OPTIONS``
            (cores, memory, walltime, gpus, name, after, queue, tokens,
            priority, retries, timeout, cwd, env, notify, notify_on, and the
            cluster's partition, account, qos, constraint, setup, extra_flags,
            python, bundle); ``corral options`` lists them with what each
            becomes on each backend. (``profile=`` is read by a Scheduler:
            ``scheduler.options(profile=...)``.)

    Raises:
        ValueError: a bad task or option, naming the field and accepted forms.
    """

    _is_corral_job = True

    def __init__(self, task: object, args: Sequence[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, *more: Any,
                 id: int | str | None = None, meta: Any = None, **options: Any) -> None:
        super().__init__()
        if more or isinstance(kwargs, (int, str)):  # hypertunity's Job(task, args, id, meta)
            given = ", ".join(safe_repr(value) for value in (kwargs, *more))
            raise TypeError(f"Job() takes task, args and kwargs by position, and id= and meta= "
                            f"by name: Job(task, args, id=..., meta=...), not Job(task, args, "
                            f"{given})")
        spec = make_spec(make_task(task, args, kwargs), options)
        check_job_id(id)
        self._record = JobRecord(spec, id=id, meta=meta)

    @classmethod
    def _from_task(cls, task: Task, options: Mapping[str, Any]) -> Job:
        return cls._from_spec(make_spec(task, options))

    @classmethod
    def _from_spec(cls, spec: JobSpec) -> Job:
        """A job of an already validated spec (no option is checked again)."""
        job = cls.__new__(cls)
        LeanFuture.__init__(job)
        job._record = JobRecord(spec)
        return job

    # -- what people read (the record's, never written here) --------------------------

    @property
    def id(self) -> int | str | None:
        """The job's id: yours, or a number given at dispatch (None before)."""
        return self._record.id

    @property
    def name(self) -> str:
        return self._record.spec.name

    @property
    def spec(self) -> JobSpec:
        """The validated description of the job (task and options)."""
        return self._record.spec

    @property
    def meta(self) -> Any:
        """What was given as ``meta=``; corral does not look at it."""
        return self._record.meta

    @property
    def status(self) -> JobStatus:
        return self._record.status

    @property
    def reason(self) -> str | None:
        """Why the job is in its status (why it waits, or why it ended so)."""
        return self._record.reason

    @property
    def exit_code(self) -> int | None:
        return self._record.exit_code

    @property
    def native_id(self) -> str | None:
        """The backend's id of the job (a pid, a Slurm job id), once it has one."""
        return self._record.native_id

    @property
    def started(self) -> float | None:
        return self._record.started

    @property
    def ended(self) -> float | None:
        return self._record.ended

    @property
    def attempts(self) -> int:
        return self._record.attempts

    @property
    def jobdir(self) -> Path | None:
        """The directory of the job's files (stdout, stderr), once it started."""
        jobdir = self._record.jobdir
        return None if jobdir is None else Path(jobdir)

    @property
    def stdout(self) -> str:
        """Everything the job has written to standard output so far."""
        return self._record.read_output("stdout")

    @property
    def stderr(self) -> str:
        """Everything the job has written to standard error so far."""
        return self._record.read_output("stderr")

    @property
    def record(self) -> Result:
        """A :class:`Result` describing the job as it stands now."""
        judged = self._judged()  # (in on_finish: the outcome it decides on)
        if judged is not None:
            return self._record.result_view(judged[0])
        failed = self.done() and not self.cancelled()
        return self._record.result_view(self.exception(0) if failed else None)

    def running(self) -> bool:
        return self._record.status is JobStatus.RUNNING

    def __repr__(self) -> str:
        record = self._record
        owner = record.owner
        where = f" on {owner.backend_name}:{record.native_id}" if (
            record.native_id and owner is not None and not record.status.is_terminal) else ""
        ident = "?" if record.id is None else record.id
        return f"<Job {ident} {self.name!r} {record.status.name}{where}>"

    # -- waiting -----------------------------------------------------------------

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its value.

        Raises:
            TimeoutError: *timeout* seconds passed first (the job goes on).
            concurrent.futures.CancelledError: the job was cancelled; the
                message gives the reason.
            Exception: a Python job's own exception, with its remote traceback
                as ``__cause__``; ``JobFailed``/``JobTimedOut``/``WorkerLost``
                for commands, timeouts and crashed workers.
            RuntimeError: the job is not done and this is one of its
                scheduler's callbacks (on_event, on_finish, a done callback),
                which run on the thread that would end it.
        """
        judged = self._judged()
        if judged is not None:  # shown to on_finish: see Engine._ask_on_finish
            if judged[0] is not None:
                raise judged[0]
            return self._record.data
        try:
            self._wait_done(timeout)
            return self._outcome_now()  # (TimeoutError if it is not done yet)
        except CancelledError:
            raise CancelledError(self._cancel_message()) from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the job and return its exception, or None if it completed.

        Raises:
            TimeoutError, concurrent.futures.CancelledError: as :meth:`result`.
        """
        judged = self._judged()
        if judged is not None:  # shown to on_finish: see Engine._ask_on_finish
            return judged[0]
        try:
            self._wait_done(timeout)
            return self._exception_now()
        except CancelledError:
            raise CancelledError(self._cancel_message()) from None

    def _judged(self) -> tuple[BaseException | None] | None:
        """The outcome on_finish is deciding on, to on_finish alone: on the
        loop's thread, before the Future is set (re-attack review: another
        thread's result() got an outcome on_finish then had run again)."""
        record = self._record
        judged = record.judged
        if judged is None or self.done() or record.owner is None:
            return None
        return judged if record.owner.on_loop_thread() else None

    def _wait_done(self, timeout: float | None) -> bool:
        """Whether the job is done, within *timeout* (in slices in the main
        thread: a Ctrl-C is never held until the job ends, see
        :func:`corral.runtime.threads.wait_in_slices`).

        Raises:
            RuntimeError: the caller would wait in a callback of the job's
                scheduler (on_event, on_finish, a done callback), on the one
                thread that could end the job: it would wait for ever.
        """
        if timeout is not None:
            timeout = plain_timeout(timeout)  # refused even if the job is done
        if self.done():
            return True
        owner = self._record.owner
        if owner is not None and (timeout is None or timeout > 0) and owner.on_loop_thread():
            raise RuntimeError(
                f"job {self.id} {self.name!r} is not done, and waiting for it cannot be done in "
                "an on_event, on_finish or done callback: it would wait for the thread that "
                "runs them (add a done callback to the job instead)")
        return wait_in_slices(self._wait_once, timeout)

    def _wait_once(self, seconds: float | None) -> bool:
        """Wait up to *seconds* for the job to be done, as ``Future.result`` waits
        (on the Future's own condition: no waiter to install and remove)."""
        with self._condition:
            if not self.done():
                self._condition.wait(seconds)
            return self.done()

    def _cancel_message(self) -> str:
        return cancelled_message(self.id, self.name, self.reason)

    def add_done_callback(self, fn: Callable[[Future], object]) -> None:
        """As ``Future.add_done_callback``, but refusing ``asyncio.wait()``'s own
        callback: it takes futures of its event loop, and a Job's callbacks run
        on corral's thread, so ``asyncio.wait([job])`` hung for good (race
        review); a clear error says what to pass instead."""
        if getattr(fn, "__module__", None) == "asyncio.tasks":
            raise TypeError(f"{self!r} is no asyncio future: asyncio.wait() takes tasks; pass "
                            "asyncio.ensure_future(job), or await the job")
        super().add_done_callback(fn)

    def __await__(self):
        """``await job``: as ``asyncio.wrap_future``, except that a cancel of the
        awaiting task (a timeout of ``asyncio.wait_for``) says so in the job's
        reason, where wrap_future's plain ``cancel()`` reads "cancelled by user"."""
        import asyncio

        loop = asyncio.get_running_loop()
        waiter = loop.create_future()

        def settle(job: Future) -> None:  # on the thread that resolved the job
            try:
                loop.call_soon_threadsafe(_copy_outcome, job, waiter)
            except RuntimeError:  # the loop was closed meanwhile: nobody awaits it now
                pass

        def abandoned(waiter: Any) -> None:
            if waiter.cancelled():
                self._cancel_for(AWAIT_CANCELLED)

        waiter.add_done_callback(abandoned)
        self.add_done_callback(settle)
        return waiter.__await__()

    def __reduce_ex__(self, protocol: object) -> Any:
        """Refused, saying where a Job may be: its process's scheduler runs it,
        so a job that needs its result takes it among its arguments (attack
        review: a Job inside another object said only "cannot pickle
        '_thread.RLock' object")."""
        raise TypeError(f"{self!r} cannot be pickled: a job that needs its result takes it "
                        "among its arguments (directly, or in a list, tuple or set, or as a "
                        "dict's value), not as a dict's key, inside another object or in a "
                        "function's closure")

    def __copy__(self) -> Job:
        """Refused: a Job is the one handle of its job (a copy would never be
        resolved); pass the Job itself."""
        raise self._not_copied()

    def __deepcopy__(self, memo: object) -> Job:
        """Refused, as :meth:`__copy__`."""
        raise self._not_copied()

    def _not_copied(self) -> TypeError:
        return TypeError(f"{self!r} cannot be copied: it is the one handle of its job")

    def set_running_or_notify_cancel(self) -> bool:
        """Refused: a job is started by its scheduler. (An Executor's method:
        called by a program, it marked the Future running, and a later
        cancel() then left a Job no result() ever returned from: attack review.)
        ``job.running()`` says whether it runs."""
        raise RuntimeError(f"{self!r} is started by its scheduler: set_running_or_notify_cancel() "
                           "is for an Executor's own futures (job.running() says whether it runs)")

    def set_result(self, result: Any) -> None:
        """Refused once the job is dispatched: its scheduler resolves it. (It
        was accepted, and left a job whose result() was the program's value
        while it ran on and its dependents got its own: cold review.) A Job
        nobody dispatched is a plain Future here, as CPython's Future tests use it."""
        self._refuse_once_dispatched("set_result")
        super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        """Refused once the job is dispatched, as :meth:`set_result` is."""
        self._refuse_once_dispatched("set_exception")
        super().set_exception(exception)

    def _refuse_once_dispatched(self, method: str) -> None:
        if self._record.owner is not None:
            raise RuntimeError(f"{self!r} is resolved by its scheduler: {method}() is for a "
                               "Future nobody runs (job.cancel() stops the job)")

    # -- control -----------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the job, even if it is running (its process tree is killed).

        Returns True if the job is now cancelled, False if it had already
        finished otherwise, or if a worker that had it queued started it
        before the request to give it back came (it then runs to its end).
        Blocks only for the scheduler to take note (ms).
        """
        return self._cancel_for("cancelled by user")

    def _cancel_for(self, reason: str) -> bool:
        """:meth:`cancel`, giving *reason* as the job's."""
        if self.done():  # as Future.cancel: no need to ask a scheduler that may have stopped
            return self.cancelled()
        record = self._record
        if record.owner is not None:
            return record.owner.cancel(record, reason)
        if record.final:
            return self.cancelled()
        record.move(JobStatus.CANCELLED, reason)  # never dispatched: no engine
        record.final = True
        cancel_future(self)
        return True


#: The reason of a job whose awaiting asyncio task was cancelled (see Job.__await__).
AWAIT_CANCELLED = ("cancelled by asyncio: the task awaiting it was cancelled "
                   "(a timeout of asyncio.wait_for, or Task.cancel())")


def _copy_outcome(job: Future, waiter: Any) -> None:
    """Resolve the asyncio Future *waiter* as *job* ended (on the event loop)."""
    if waiter.done():
        return
    if job.cancelled():
        waiter.cancel()
        return
    error = job.exception()
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(job.result())


def doom(job: Job, reason: str) -> Job:
    """Mark *job*, not dispatched yet, as one that must not run: the engine
    records it CANCELLED with *reason* as soon as it is dispatched. The daemon
    uses it for a journaled job it cannot make again, so the journal still
    says what became of it."""
    job._record.doomed = reason
    return job


def refuse_formatted_jobs(words: Iterable[Any], where: str, verb: str = "holds") -> None:
    """Refuse a command whose strings hold a Job's repr: ``shell(f"echo {job}")``
    formats the Job, not its result, and the command then failed in the shell's
    words (a syntax error at ``<``), with nothing pointing at the cause (cold
    review). A Job itself among a command's arguments is replaced by its result."""
    for word in words:
        if isinstance(word, str) and (found := _JOB_REPR.search(word)) is not None:
            raise ValueError(
                f"{where} {verb} {found.group()}, a Job formatted into a string: that is "
                "its repr, not its result. Pass the Job itself as an argument, which "
                "waits for it and is replaced by its result: shell([\"echo\", \"got\", job]), "
                "or shell([\"sh\", \"-c\", \"echo got $0\", job]) for a shell line")
