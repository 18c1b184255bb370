"""The job handle: a ``concurrent.futures.Future`` that knows what it runs.

A :class:`Job` works with ``concurrent.futures.wait``/``as_completed`` and
``asyncio.wrap_future`` (or plain ``await job``) unchanged. Its scheduling
fields (``status``, ``reason``, ``attempts``, ...) are written only by the
scheduler's control-loop thread; reading them from any thread is safe.

The Future stays internally *pending* until the job is final, so that
``cancel()`` can stop a running job too (``Future.cancel`` alone cannot).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.runtime.spool import read_output
from corral.spec import JobSpec, Task, check_job_id, make_spec, make_task
from corral.status import JobStatus

if TYPE_CHECKING:
    from corral.core.engine import Engine
    from corral.journal.store import StoredJob

__all__ = ["Job", "Result"]

_NO_JOURNAL_ENTRY = ("", "", "", "{}")


@dataclass(frozen=True, slots=True)
class Result:
    """What a finished job left behind, as a plain record.

    ``data`` is the return value of a Python call (None for commands, or for
    a job that did not complete); ``reason`` says why it ended as it did.
    """

    id: int | str
    name: str
    data: Any
    status: JobStatus
    exit_code: int | None
    started: float | None
    ended: float | None
    attempts: int
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.COMPLETED


class Job(Future):
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
        **options: job options (cores, memory, walltime, gpus, name, after,
            queue, tokens, priority, retries, timeout, cwd, env).

    Raises:
        ValueError: a bad task or option, naming the field and accepted forms.
    """

    _is_corral_job = True

    def __init__(self, task: object, args: Sequence[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, *, id: int | str | None = None,
                 meta: Any = None, **options: Any) -> None:
        super().__init__()
        self._setup(make_spec(make_task(task, args, kwargs), options), id, meta)

    @classmethod
    def _from_task(cls, task: Task, options: Mapping[str, Any]) -> Job:
        job = cls.__new__(cls)
        Future.__init__(job)
        job._setup(make_spec(task, options), None, None)
        return job

    def _setup(self, spec: JobSpec, id: int | str | None, meta: Any) -> None:
        check_job_id(id)
        self.spec = spec
        self.id: int | str | None = id
        self.meta = meta
        self.status = JobStatus.NEW
        self.reason: str | None = None
        self.exit_code: int | None = None
        self.native_id: str | None = None
        self.started: float | None = None
        self.ended: float | None = None
        self.attempts = 0
        self.jobdir: Path | None = None
        self._engine: Engine | None = None
        self._data: Any = None
        self._kept_output: dict[str, str] = {}
        self._live_output: tuple[str, str] | None = None  # set while it runs in a worker
        # Filled in at dispatch, then owned by the control loop:
        self._deps: list[Job] = []          # every job this one waits for
        self._value_deps: list[Job] = []    # jobs whose results are its arguments
        self._payload: bytes | None = None  # the pickled call
        self._call_parts: tuple[tuple, dict] = ((), {})  # arguments, Jobs replaced
        self._argv_template: tuple[Any, ...] = ()        # command words, Jobs replaced
        self._dependents: list[Job] = []
        self._unmet = 0
        self._final = False
        self._kill_intent: str | None = None
        self._bypassed = 0
        self._failures = 0  # failed attempts, counted against ``retries``
        self._taken_at = 0.0
        self._value_bytes: bytes | None = None
        self._feeds_values = False
        # The journal's view (set at dispatch when the scheduler keeps one):
        self._key: str | None = None
        self._journal_entry: tuple[str, str, str, str] = _NO_JOURNAL_ENTRY
        self._restored: StoredJob | None = None  # completed in an earlier run
        self._reattach: StoredJob | None = None  # still in the cluster's hands since an earlier run
        self._always_new = False   # never matched against earlier runs (corral submit)
        self._doomed: str | None = None  # cancelled as soon as it is added, with this reason
        self._result_blob: bytes | None = None
        self._error_blob: bytes | None = None
        self._collectable = False  # dispatch()ed: its Result goes to Scheduler.collect()

    # -- what people read --------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stdout(self) -> str:
        """Everything the job has written to standard output so far."""
        return self._read_output("stdout")

    @property
    def stderr(self) -> str:
        """Everything the job has written to standard error so far."""
        return self._read_output("stderr")

    def _read_output(self, stream: str) -> str:
        if stream in self._kept_output:
            return self._kept_output[stream]
        live = self._live_output
        if live is not None:
            path = live[0] if stream == "stdout" else live[1]
        elif self.jobdir is not None:
            path = self.jobdir / stream
        else:
            return ""
        return read_output(path)

    def _keep_output(self) -> None:
        """Copy the output into memory before the job's files are deleted."""
        for stream in ("stdout", "stderr"):
            path = None if self.jobdir is None else self.jobdir / stream
            try:
                if path is not None and os.path.getsize(path):
                    self._kept_output[stream] = self._read_output(stream)
                else:
                    self._kept_output[stream] = ""
            except OSError:
                self._kept_output[stream] = ""

    @property
    def record(self) -> Result:
        """A :class:`Result` describing the job as it stands now."""
        return Result(id=self.id, name=self.name, data=self._data, status=self.status,
                      exit_code=self.exit_code, started=self.started, ended=self.ended,
                      attempts=self.attempts, reason=self.reason)

    def running(self) -> bool:
        return self.status is JobStatus.RUNNING

    def __repr__(self) -> str:
        where = f" on {self._engine.backend_name}:{self.native_id}" if (
            self.native_id and self._engine is not None and not self.status.is_terminal) else ""
        ident = "?" if self.id is None else self.id
        return f"<Job {ident} {self.name!r} {self.status.name}{where}>"

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
        """
        try:
            return super().result(timeout)
        except CancelledError:
            raise CancelledError(self._cancel_message()) from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the job and return its exception, or None if it completed.

        Raises:
            TimeoutError, concurrent.futures.CancelledError: as :meth:`result`.
        """
        try:
            return super().exception(timeout)
        except CancelledError:
            raise CancelledError(self._cancel_message()) from None

    def _cancel_message(self) -> str:
        return f"job {self.id} {self.name!r} was cancelled: {self.reason or 'cancelled'}"

    def __await__(self):
        import asyncio

        return asyncio.wrap_future(self).__await__()

    # -- control -----------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the job, even if it is running (its process tree is killed).

        Returns True if the job is now cancelled, False if it had already
        finished otherwise. Blocks only for the scheduler to take note (ms).
        """
        if self.done():  # as Future.cancel: no need to ask a scheduler that may have stopped
            return self.cancelled()
        if self._engine is not None:
            return self._engine.cancel(self, "cancelled by user")
        if self._final or self.done():
            return self.cancelled()
        self.status = JobStatus.CANCELLED
        self.reason = "cancelled by user"
        self._resolve_cancelled()
        return True

    # -- called by the control loop only -------------------------------------------

    def _release_run_state(self) -> None:
        """Drop what only running the job needed, once it is final: the pickled
        call, the arguments with placeholders, the links to its dependencies
        (its dependents are let go by the control loop as it releases them).

        A finished job the program still holds then keeps only what it shows
        (spec, status, result); one it dropped is freed with all of that.
        """
        self._payload = None
        self._call_parts = ((), {})
        self._argv_template = ()
        self._deps = []
        self._value_deps = []
        self._journal_entry = _NO_JOURNAL_ENTRY

    def _resolve_value(self, value: Any) -> None:
        self._final = True
        self._data = value
        self.set_result(value)

    def _resolve_error(self, error: BaseException) -> None:
        self._final = True
        self.set_exception(error)

    def _resolve_cancelled(self) -> None:
        self._final = True
        Future.cancel(self)
        Future.set_running_or_notify_cancel(self)
