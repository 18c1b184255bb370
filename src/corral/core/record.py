"""The engine's own record of one job, kept apart from the user's :class:`~corral.Job`.

As ``concurrent.futures`` keeps its ``_WorkItem`` apart from the ``Future`` it
resolves, corral keeps what scheduling needs (dependencies, the unmet count,
bypasses, kill intent, the journal's entry, ...) in a :class:`JobRecord`, and
the :class:`~corral.Job` a user holds is a Future plus a read-only view of it::

    user's thread                  control-loop thread
    Job (Future, read-only view) ──> JobRecord <── Engine, Packer, Journal, ...
         ^                              │
         └──── resolved through ────────┘  (record.future, until it is resolved)

Who writes what: the scheduler fills a record in while it dispatches the job
(the caller's thread, before the control loop knows it); from then on only
the control-loop thread writes it. Any thread may read it. A job's status
changes only through :meth:`JobRecord.move`.

The links are made so that a finished job the program dropped is freed, with
its record, by reference counting alone: the record holds its Job only from
dispatch until the Future is resolved (the control loop must keep an
unfinished job alive, a finished one must not be kept), and it never holds
anything that holds it back.

This module imports only vocabulary (spec, status) and the runtime's output
reader and thread helpers.
"""

from __future__ import annotations

import enum
import os
import time
from concurrent.futures import InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from corral.core.lean_future import LeanFuture
from corral.journal.stored import COMPLETED_ALL_THE_SAME
from corral.runtime.spool import read_output, read_output_if_there
from corral.spec import JobSpec, Script, Shell
from corral.result import Result
from corral.runtime.threads import signals_allowed
from corral.safe_repr import writable_text
from corral.status import JobStatus, check_transition

if TYPE_CHECKING:
    from corral.journal.stored import StoredJob

__all__ = ["JobRecord", "KillIntent", "DeadlineKind", "Owner", "NO_JOURNAL_ENTRY",
           "COMPLETED_ALL_THE_SAME", "cancel_future"]

NO_JOURNAL_ENTRY = ("", "", "", "", "{}")  # key, slot, kind, command, spec


class KillIntent(enum.Enum):
    """Why corral asked the backend to kill a job: it decides how the job ends."""

    CANCEL = "cancel"    # cancelled (by the user, a failed parent, clear(), ...)
    TIMEOUT = "timeout"  # its ``timeout`` ran out: it ends TIMED_OUT
    ABORT = "abort"      # abort(): asked to stop, killed after the grace period
    ABORT_KILLED = "abort killed"  # the same, its grace period over: it was killed
    ABORT_TIMED_OUT = "abort timed out"  # aborted, then killed by its timeout within the grace


class DeadlineKind(enum.Enum):
    """What the control loop does when one of its deadlines comes due."""

    TIMEOUT = "timeout"      # kill the job: its time limit is over
    ABORT_GRACE = "abort"    # kill the aborted job: its grace period is over


class Owner(Protocol):
    """What a dispatched job's record needs of the engine that owns it."""

    backend_name: str

    def cancel(self, record: JobRecord, reason: str) -> bool:
        """Cancel the job from any thread; True if it is cancelled now."""
        ...

    def on_loop_thread(self) -> bool:
        """Whether this is the thread that runs the jobs' callbacks (and so
        the thread that would have to end a job a caller here waited for)."""
        ...


@dataclass(slots=True, eq=False, weakref_slot=True)
class JobRecord:
    """Everything corral knows about one job; see the module docstring.

    Deadlines hold records weakly (``weakref_slot``), so that a long timeout
    does not keep a job that finished early alive.
    """

    spec: JobSpec
    id: int | str | None = None
    meta: Any = None

    # -- the state users read through their Job ------------------------------------
    status: JobStatus = JobStatus.NEW
    reason: str | None = None
    exit_code: int | None = None
    native_id: str | None = None
    started: float | None = None
    ended: float | None = None
    attempts: int = 0
    jobdir: str | None = None  # text: made for every job, a Path only when asked for
    data: Any = None  # a completed call's value
    kept_output: dict[str, str] | None = None  # copied in before a temporary run dir goes
    live_output: tuple[str, str] | None = None  # (stdout, stderr) files while a worker runs it

    # -- the link to the Job and the engine ------------------------------------------------
    future: LeanFuture | None = None  # the Job to resolve: from dispatch until resolved
    owner: Owner | None = None         # the engine, once dispatched

    # -- filled in at dispatch, then owned by the control loop ------------------------------
    deps: list[Any] = field(default_factory=list)        # records (or FinishedJobs) it waits for
    value_deps: list[JobRecord] = field(default_factory=list)  # whose results are its arguments
    dependents: list[JobRecord] = field(default_factory=list)
    payload: bytes | None = None                # the pickled call
    call_parts: tuple[tuple, dict] = ((), {})   # arguments, Jobs replaced by placeholders
    argv_template: tuple[Any, ...] = ()         # command words, Jobs replaced
    unmet: int = 0
    #: The dependencies its WAITING reason names (three unfinished) and where
    #: in ``deps`` the search for others to name goes on: the reason is made
    #: again when one it names ends (see engine._waiting_reason).
    named_waits: tuple[Any, ...] = ()
    waits_from: int = 0
    final: bool = False
    kill_intent: KillIntent | None = None
    #: Asked to abort in this attempt: a cancel after it replaces its kill
    #: intent, and what it returns then may be the partial work of a job that
    #: stopped early (a chunk of a map), never taken for a completion.
    asked_to_abort: bool = False
    #: The sequence number of its timeout's deadline now: an earlier one,
    #: counted from before its worker really started it, no longer counts.
    timeout_deadline: int = 0
    bypassed: int = 0       # how often the packer let a later job pass it
    failures: int = 0       # failed attempts, counted against ``retries``
    taken_at: float = 0.0   # when the packer gave it room (monotonic)
    handed_ahead: bool = False  # waits in a worker's queue behind another job (SUBMITTED)
    #: Why it was cancelled while handed ahead: it ends CANCELLED so once its
    #: worker gives it back (see Engine._withdraw), or runs to its end if the
    #: worker had started it.
    cancel_reason: str | None = None
    place: int = 0          # its place in the packer's line (see Packer.push)
    kind: tuple | None = None  # (task type, label): alike jobs, for core/ahead.py (cached)
    value_bytes: bytes | None = None  # its pickled result, for the jobs it feeds
    feeds_values: bool = False
    collectable: bool = False  # dispatch()ed: its Result goes to Scheduler.collect()

    # -- the journal's view (set at dispatch when the scheduler keeps one) --------------------
    key: str | None = None
    slot: str | None = None  # the same call with the code left out (see identity.job_digests)
    journal_entry: tuple[str, str, str, str, str] = NO_JOURNAL_ENTRY
    restored: StoredJob | None = None   # completed in an earlier run
    reattach: StoredJob | None = None   # still in the cluster's hands since an earlier run
    always_new: bool = False            # never matched against earlier runs (corral submit)
    recorded_first: bool = False        # starts only once its row is committed (corral submit)
    unrecorded: Exception | None = None  # why that commit failed (it was cancelled)
    doomed: str | None = None           # cancelled as soon as it is added, with this reason
    #: Jobs it comes after that had ended before it was made (``corral submit
    #: --after`` a job the driver no longer holds): in its row, never waited for.
    ended_deps: tuple[int | str, ...] = ()
    result_blob: bytes | None = None
    error_blob: bytes | None = None
    #: While on_finish decides on it: (the exception its result() will raise,
    #: or None), so that on_finish reads its outcome before the Future is set.
    judged: tuple[BaseException | None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def runs_a_command(self) -> bool:
        """A command or script, not a Python call: its result is the JSON it
        leaves in its result file (see :mod:`corral.runtime.command_result`)."""
        return isinstance(self.spec.task, (Script, Shell))

    @property
    def dispatched_id(self) -> int | str:
        """The id, for code that sees only dispatched jobs (the engine, the registry).

        ``id`` is None until dispatch gives the job one (or keeps the caller's),
        and dispatch does that before any such code sees the record; so a job
        without one here is a bug in corral, reported as such.

        Raises:
            RuntimeError: the job was never dispatched.
        """
        job_id = self.id
        if job_id is None:
            raise RuntimeError(f"job {self.name!r} has no id: it was never dispatched "
                               "(a bug in corral)")
        return job_id

    # -- the one way a status changes -------------------------------------------------------

    def move(self, new: JobStatus, reason: str | None = None, *, checked: bool = True
             ) -> JobStatus:
        """Set the status (and its reason) and return the old one.

        Checked against :func:`corral.status.check_transition`; only two
        callers pass ``checked=False``: a job restored from the journal (NEW
        to COMPLETED: it ran in an earlier run) and the control loop failing
        every job after it crashed. A job that becomes final now ends now (a
        cancelled job does not wait for the backend to report its processes gone).

        Raises:
            IllegalTransition: the table refuses the move (a bug in corral).
        """
        old = self.status
        if checked:
            check_transition(old, new)
        if new.is_terminal and self.ended is None:
            self.ended = time.time()
        self.status = new
        self.reason = reason if reason is None else writable_text(reason)
        return old

    # -- what people read -------------------------------------------------------------------

    def result_view(self, error: BaseException | None = None) -> Result:
        """A :class:`Result` describing the job as it stands now; *error* is
        the exception its Job raises, if it failed."""
        return Result(id=self.id, name=self.name, data=self.data,  # type: ignore[arg-type]
                      status=self.status, exit_code=self.exit_code, started=self.started,
                      ended=self.ended, attempts=self.attempts, reason=self.reason,
                      meta=self.meta, error=error)

    def read_output(self, stream: str, last_bytes: int | None = None) -> str:
        """What the job wrote to *stream* (``"stdout"``/``"stderr"``) so far;
        with *last_bytes*, its end only (see :func:`read_output`)."""
        if self.kept_output is not None and stream in self.kept_output:
            kept = self.kept_output[stream]
            return kept if last_bytes is None else kept[-last_bytes:]
        live = self.live_output
        if live is not None:
            text = read_output_if_there(live[0] if stream == "stdout" else live[1], last_bytes)
            if text or self.jobdir is None:
                return text or ""
            # Nothing there: its worker died, and the spool was moved to the job's
            # own file, or it handed the spool over as the job ended (a call
            # cancelled while it ran reads as CANCELLED before that end is heard).
        if self.jobdir is None:
            return ""
        return read_output(os.path.join(self.jobdir, stream), last_bytes)

    def keep_output(self, most: int) -> bool:
        """Copy the output into memory before the job's files are deleted;
        False, copying nothing, when it is more than *most* bytes (its files
        must stay, while anyone can read them: see Scheduler)."""
        if self.kept_output is not None:  # (a second shutdown: its files are gone by now)
            return True
        sizes: dict[str, int] = {}
        for stream in ("stdout", "stderr"):
            path = None if self.jobdir is None else os.path.join(self.jobdir, stream)
            try:
                sizes[stream] = 0 if path is None else os.path.getsize(path)
            except OSError:
                sizes[stream] = 0
        if sum(sizes.values()) > most:
            return False
        self.kept_output = {stream: self.read_output(stream) if size else ""
                            for stream, size in sizes.items()}
        return True

    # -- once final -------------------------------------------------------------------------

    def release_run_state(self) -> None:
        """Drop what only running the job needed, once it is final: the pickled
        call, the arguments with placeholders, the links to its dependencies
        (its dependents are let go by the control loop as it releases them).

        A finished job the program still holds then keeps only what it shows
        (spec, status, result); one it dropped is freed with all of that.
        """
        self.payload = None
        self.call_parts = ((), {})
        self.argv_template = ()
        self.deps = []
        self.value_deps = []
        self.journal_entry = NO_JOURNAL_ENTRY

    def resolve(self, error: BaseException | None) -> None:
        """Resolve the Job as the (final) status says, then let go of it."""
        future, self.future = self.future, None
        self.final = True
        if future is None:
            return
        if future.__dict__.get("_done_callbacks"):  # the program's code runs from them,
            with signals_allowed():  # here: what it starts gets a plain mask (runtime.threads)
                self._settle_future(future, error)
        else:
            self._settle_future(future, error)

    def _settle_future(self, future: LeanFuture, error: BaseException | None) -> None:
        # A Job refuses set_result and set_exception once dispatched, but one
        # set before (by a program that then dispatched it at the same moment)
        # must not fail the loop that resolves every job: the earlier word
        # stands. (Asked by trying: LeanFuture claims the future atomically.)
        try:
            if self.status is JobStatus.COMPLETED:
                future._resolve(self.data)
            elif self.status is JobStatus.CANCELLED:
                if not future.done():
                    future._resolve(cancelled=True)
            else:
                future._resolve(exception=error)
        except InvalidStateError:
            pass


def cancel_future(future: LeanFuture) -> None:
    """Resolve *future* as cancelled, even though corral kept it pending while
    the job ran (``Future.cancel`` alone refuses a running future)."""
    future._resolve(cancelled=True)
