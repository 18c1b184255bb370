"""What one batch scheduler (Slurm, PBS, SGE, LSF, ...) supplies to the shared base.

:class:`corral.backends.batch.base.BatchBackend` owns everything every batch
scheduler needs — grouping into arrays, bundles and leftovers, task files,
polling with back-off, forgotten jobs, reattach, hold/release. A scheduler is a
small :class:`BatchScheduler` subclass of *pure* pieces: argv builders and
parsers of the scheduler's output, its state and reason tables, and its batch
script template. Nothing in a scheduler runs a process, so each piece is tested
on output recorded from the real scheduler.

The contract between the rendered script and the base (every template keeps it):

* The template is a :class:`string.Template` (``$$`` is a literal ``$``). The
  base substitutes ``${tasks}`` (jobs per array task), ``${bundle_dir}`` (the
  shell-quoted directory of this submission), ``${bundle_dir_comment}`` (the
  same, printable, for a comment), ``${setup}`` (the user's setup lines, shell
  code by intent), ``${python}`` (the quoted interpreter),
  ``${failed_exit_status}`` (:attr:`BatchScheduler.failed_exit_status`) and
  ``${run_corral}``, the lines every script ends with: the setup lines, then
  ``corral.runtime.batch.main`` on ``<bundle dir>/<array index>.json``
  (:data:`corral.backends.batch.taskfiles.RUN_CORRAL`), where the index is the
  scheduler's own (from :attr:`array_index_base`), and ``0`` for a job that is
  not an array.
* The script sends its own output to ``<bundle dir>/<name>-<array index>.out``.
* It exports the runtime's table of the scheduler's variables
  (:data:`corral.runtime.batch.SCHEDULER_VARIABLES`): the *names* of the
  variables holding the job id, the array job id, the array index and the
  restart count, e.g. ``CORRAL_ARRAY_INDEX_VAR=SLURM_ARRAY_TASK_ID``, and
  ``CORRAL_FAILED_EXIT_STATUS``. The runtime never names a scheduler's variable.
"""

from __future__ import annotations

import enum
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from corral.spec import Placement, Resources
from corral.status import JobStatus

__all__ = ["BatchScheduler", "NativeRow", "SubmitRequest", "ClusterLimits", "NeverStarts",
           "NeverKind", "Meaning", "number"]

#: What corral makes of a scheduler's state: a status and the words of a reason.
Meaning = tuple[JobStatus, str]

_NUMBER = re.compile(r"-?[0-9]{1,18}")


def number(text: str, signed: bool = False) -> int | None:
    """The integer a scheduler printed, or None for anything else. ASCII digits
    only, and not too many: ``str.isdigit`` accepts "¹" and 5,000 digits, which
    ``int`` then refuses or chokes on, and one odd field must not make a whole
    status answer unreadable."""
    text = text.strip()
    if not _NUMBER.fullmatch(text) or (text.startswith("-") and not signed):
        return None
    return int(text)


@dataclass(frozen=True, slots=True)
class NativeRow:
    """One batch job (or array task) as a status or accounting query saw it."""

    native_id: str  # as :meth:`BatchScheduler.array_task_id` spells it for an array task
    state: str  # the scheduler's own word: PENDING, R, Q, RUN, ...
    reason: str = ""  # why it pends or ended, in the scheduler's words ("" for none)
    exit_status: int | None = None  # the batch job's exit code, when known
    signal: int | None = None  # the signal that killed it, when known


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """One submission: a batch script, maybe an array of it, with what it needs.

    Every value becomes one argument of the submit command, never shell text.
    """

    script: str
    name: str  # printable, at most 100 characters
    resources: Resources
    placement: Placement
    output: str  # where the scheduler puts the script's own output (the script logs itself)
    array_size: int | None  # None: not an array; else indexes array_index_base.. onwards
    throttle: int | None  # at most this many array tasks at once (None: no limit)
    dependencies: tuple[str, ...]  # native ids that must end well first
    time_limit_s: float | None  # already granted by :meth:`BatchScheduler.granted_time_s`


@dataclass(frozen=True, slots=True)
class ClusterLimits:
    """What the base must know of the cluster's configuration."""

    #: The most tasks one array may have (arrays are split below it).
    max_array_tasks: int
    #: How long the status query still lists a finished job (Slurm's MinJobAge).
    forget_after_s: float
    #: Whether :meth:`BatchScheduler.accounting_argv` can tell about forgotten jobs.
    accounting: bool


class NeverKind(enum.Enum):
    """Why a pending job will never start."""

    #: A job it depends on did not end well: it ends CANCELLED.
    DEPENDENCY_FAILED = "dependency failed"
    #: The cluster can never satisfy its request: it ends FAILED.
    IMPOSSIBLE = "impossible"


@dataclass(frozen=True, slots=True)
class NeverStarts:
    """A pending job the scheduler will never start, and why in words."""

    kind: NeverKind
    words: str


class BatchScheduler(ABC):
    """The pure pieces of one batch scheduler. Subclasses set the class
    attributes and implement the abstract methods; none may run a process.

    Output a parser does not understand is skipped (a row) or a ``ValueError``
    (a submission), never an assertion: a new state code must not crash the poller.
    """

    #: The backend's name and the folder of the scheduler ("slurm").
    name: ClassVar[str]
    #: How users call it, in reasons: "Slurm job 123".
    title: ClassVar[str]
    #: The batch script template (see the module docstring for its contract).
    template: ClassVar[Path]
    #: The first index of an array: 0 for Slurm, 1 for SGE, PBS and LSF.
    array_index_base: ClassVar[int] = 0
    #: The exit status with which the batch job ends when a job in it failed,
    #: chosen so that the scheduler holds back dependents (Slurm ``afterok``:
    #: any non-zero; SGE: 100).
    failed_exit_status: ClassVar[int] = 1
    #: A batch job that ends with :attr:`failed_exit_status` stays listed until
    #: it is deleted (SGE's error state, which holds back its dependents): the
    #: base deletes such jobs when it closes, after the jobs it still follows.
    failed_jobs_stay: ClassVar[bool] = False
    #: What :meth:`parse_limits` would say when the configuration cannot be read.
    default_limits: ClassVar[ClusterLimits] = ClusterLimits(1000, 300.0, False)
    #: ``backend_options`` of this scheduler alone, beyond every batch backend's
    #: (:data:`corral.backends.batch.settings.BATCH_OPTIONS`): ``{name: (default,
    #: what it means)}``, e.g. SGE's parallel environment. Their values are in
    #: :attr:`settings`.
    own_options: ClassVar[dict[str, tuple[Any, str]]] = {}

    def __init__(self, **settings: Any) -> None:
        """Keep this scheduler's own ``backend_options`` (defaults for those not
        given). A subclass checks their values in its ``__init__`` after this one.

        Raises:
            ValueError: an option this scheduler does not have.
        """
        unknown = sorted(set(settings) - set(self.own_options))
        if unknown:
            raise ValueError(f"unknown {self.title} backend option {unknown[0]!r} "
                             f"(its own: {', '.join(self.own_options) or 'none'})")
        self.settings: dict[str, Any] = {name: default for name, (default, _)
                                         in self.own_options.items()}
        self.settings.update(settings)

    def with_settings(self, settings: dict[str, Any]) -> BatchScheduler:
        """A scheduler like this one with *settings* among its own options (a
        subclass built from more than its options overrides this)."""
        return type(self)(**{**self.settings, **settings})

    # -- submitting ------------------------------------------------------------------------

    def request_problem(self, resources: Resources) -> str | None:
        """Why this scheduler cannot be asked for *resources* as corral would
        ask (a resource it has no way to request), or None: said when the job
        is made, not found when it runs without what it needed."""
        return None

    @abstractmethod
    def submit_argv(self, request: SubmitRequest) -> list[str]:
        """The command that submits *request*."""

    @abstractmethod
    def parse_submit(self, stdout: str) -> str:
        """The job id from the submit command's output. Raises ValueError naming
        what was printed when there is none."""

    #: What a submit command says when it could not reach the scheduler (its
    #: controller restarting, a network blip), in lower case: such a refusal is
    #: tried again for a while (``backend_options`` submit_retry), not the jobs'
    #: failure. Slurm's "Unable to contact slurm controller (connect failure)",
    #: "Socket timed out"; SGE's "unable to contact qmaster", "commlib error";
    #: PBS's "cannot connect to server"; LSF's "LSF is down".
    unreachable_signs: tuple[str, ...] = (
        "unable to contact", "connect failure", "connection refused", "timed out",
        "temporarily unavailable", "cannot connect", "can't connect", "commlib error",
        "not responding", "lsf is down", "try again later")

    def could_not_reach(self, message: str) -> bool:
        """Whether a refused submission's *message* says the scheduler could
        not be reached, rather than that it will not take the job."""
        lowered = message.lower()
        return any(sign in lowered for sign in self.unreachable_signs)

    #: What a cancel command says of a job that had ended already, in lower case:
    #: PBS's "Job has finished" and "Unknown Job Id", SGE's 'job "7" does not
    #: exist', Slurm's "already completing or completed", LSF's "Job has already
    #: finished". (With no driver, a cancel takes a job's dependents too, and the
    #: scheduler may have deleted them with their parent already.)
    already_ended_signs: tuple[str, ...] = (
        "has finished", "has already finished", "unknown job id", "does not exist",
        "already completing or completed")

    def cancel_answer_usable(self, returncode: int, stderr: str) -> bool:
        """Whether a cancel that exited *returncode* only said that jobs had
        ended already: then it did what was asked."""
        lines = [line.lower() for line in stderr.splitlines() if line.strip()]
        return bool(lines) and all(any(sign in line for sign in self.already_ended_signs)
                                   for line in lines)

    def unsafe_argument(self, argv: Sequence[str]) -> str | None:
        """Why the submit command *argv* must not be run, or None: a dialect
        whose submit command reads its arguments through a shell says which
        argument a shell would read as more than a word."""
        return None

    def explain_refusal(self, request: SubmitRequest, message: str) -> str:
        """What a refused submission's jobs say after "qsub refused it: ": the
        scheduler's *message*, which a subclass may complete with what was asked
        (SGE says only "no suitable queues")."""
        return message

    def array_task_id(self, job_id: str, index: int) -> str:
        """The native id of array task *index* of *job_id* (Slurm: ``123_4``)."""
        return f"{job_id}_{index}"

    def chains_on(self, native_id: str) -> bool:
        """Whether a dependency on the job *native_id* may be handed to the
        scheduler. One that depends only on whole arrays says no for an array task
        (PBS refuses it; SGE would wait for, and fail with, the whole array): the
        child then waits in corral for its own parent."""
        return True

    def script_template(self, request: SubmitRequest | None) -> str:
        """The template text of *request*'s batch script (None: a sample, for a
        golden file): the :attr:`template` file. A scheduler whose script depends
        on more (one described in settings) builds it here."""
        return self.template.read_text()

    def granted_time_s(self, seconds: float) -> float:
        """The time limit the scheduler grants for a request of *seconds*
        (Slurm rounds up to whole minutes); the runtime plans with it."""
        return seconds

    # -- watching --------------------------------------------------------------------------

    @abstractmethod
    def status_argv(self, user: str) -> list[str]:
        """One query for every job of *user*, recently finished ones included if
        the scheduler can, one row per array task."""

    @abstractmethod
    def parse_status(self, stdout: str) -> dict[str, NativeRow]:
        """Rows by native id from :meth:`status_argv`'s output."""

    def status_argv_for(self, user: str, native_ids: Sequence[str]) -> list[str]:
        """The status query for the jobs corral follows (*native_ids*, never
        empty): :meth:`status_argv` of *user*. A scheduler that cannot list one
        user's jobs, or whose server-wide query is unsafe, names the jobs (PBS)."""
        return self.status_argv(user)

    def status_answer_usable(self, returncode: int, stderr: str) -> bool:
        """Whether a status query that exited *returncode* still printed an answer
        (PBS's qstat of several jobs exits 153 when it forgot one, listing the rest)."""
        return False

    def accounting_argv(self, native_ids: Sequence[str]) -> list[str] | None:
        """A query of finished jobs the status query forgot; None: no accounting.
        With :attr:`accounting_takes_one_job`, it asks about the first only."""
        return None

    #: Whether :meth:`accounting_argv` asks about one job only (``qacct -j``):
    #: the base then runs it for each job it must decide, a few a poll.
    accounting_takes_one_job: bool = False

    def parse_accounting(self, stdout: str) -> dict[str, NativeRow]:
        """Rows by native id from :meth:`accounting_argv`'s output."""
        return {}

    def limits_argv(self) -> list[str] | None:
        """The command that prints the cluster's configuration, run once when
        first needed; None: use :attr:`default_limits`."""
        return None

    def parse_limits(self, stdout: str) -> ClusterLimits:
        """:class:`ClusterLimits` from :meth:`limits_argv`'s output."""
        return self.default_limits

    # -- meaning ---------------------------------------------------------------------------

    @abstractmethod
    def meaning(self, row: NativeRow) -> Meaning | None:
        """corral's status for a row and a reason's words ("" while active);
        None for a state corral does not know (the base logs it and polls on).
        SUBMITTED means pending, RUNNING running, anything else ended."""

    def exit_code(self, row: NativeRow) -> int | None:
        """The job's exit code: minus the signal when one killed it."""
        return -row.signal if row.signal else row.exit_status

    @abstractmethod
    def never_starts(self, row: NativeRow) -> NeverStarts | None:
        """For a pending row: why the scheduler will never start it, or None."""

    @abstractmethod
    def is_pending(self, row: NativeRow) -> bool:
        """Whether the job waits to start, so that a hold applies to it."""

    @abstractmethod
    def is_held(self, row: NativeRow) -> bool:
        """Whether the job is held (by a user or an admin)."""

    #: Why the status query no longer lists a finished job, for a reason shown
    #: when nothing else tells how it ended (Slurm: "purged after MinJobAge").
    forgotten_words: ClassVar[str] = "forgotten once it ended"

    # -- control ---------------------------------------------------------------------------

    @abstractmethod
    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        """End these jobs, running or pending."""

    @abstractmethod
    def signal_argv(self, native_ids: Sequence[str]) -> list[str]:
        """Send SIGUSR1 to the batch script's runtime of these running jobs (abort)."""

    #: :meth:`signal_argv` ends the jobs instead (SGE cannot signal one): the
    #: cancel after the abort's grace has nothing left to delete.
    signal_ends_job: ClassVar[bool] = False

    @abstractmethod
    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        """Keep these pending jobs from starting."""

    @abstractmethod
    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        """Let these held jobs start again."""
