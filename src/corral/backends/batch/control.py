"""Acting on a run's batch jobs when no driver runs, for the ``corral`` command."""

from __future__ import annotations

import enum
import getpass
from collections.abc import Sequence

from corral.backends.batch.invoke import run_command
from corral.backends.batch.scheduler import BatchScheduler, NativeRow
from corral.errors import BackendError

__all__ = ["Verb", "control_without_driver"]


class Verb(enum.Enum):
    """What the ``corral`` command may do to batch jobs with no driver."""

    CANCEL = "cancel"
    PAUSE = "pause"  # hold what is still pending
    RESUME = "resume"  # release what is held


def control_without_driver(scheduler: BatchScheduler, verb: Verb | str,
                           native_ids: Sequence[str]) -> str:
    """Cancel, hold or release batch jobs directly. Returns what the scheduler
    said; the next driver of the run finds the outcome when it attaches.

    Raises:
        ValueError: *verb* is none of :class:`Verb`.
        BackendError: the scheduler's command failed (its message included),
            or its status query printed what cannot be read (quoted).
    """
    try:
        verb = Verb(verb)
    except ValueError:
        raise ValueError(f"unknown verb {verb!r} for batch jobs with no driver "
                         f"(known: {', '.join(v.value for v in Verb)})") from None
    if verb is not Verb.CANCEL:  # hold what is pending, release what is pending or held
        argv = scheduler.status_argv_for(getpass.getuser(), list(native_ids))
        output = run_command(argv, scheduler.status_answer_usable)
        try:
            rows = scheduler.parse_status(output)
        except Exception as error:  # the scheduler's parser on output nobody recorded
            raise BackendError(f"{argv[0]} printed what corral cannot read ({error}): "
                               f"{output.strip()[:300]!r}") from None
        native_ids = [native for native in native_ids
                      if native in rows and _applies(scheduler, verb, rows[native])]
        if not native_ids:
            return ""
    argv = {Verb.CANCEL: scheduler.cancel_argv, Verb.PAUSE: scheduler.hold_argv,
            Verb.RESUME: scheduler.release_argv}[verb](native_ids)
    return run_command(argv, scheduler.cancel_answer_usable if verb is Verb.CANCEL else None)


def _applies(scheduler: BatchScheduler, verb: Verb, row: NativeRow) -> bool:
    """Whether a hold (*verb* PAUSE) or a release (RESUME) is for the job of *row*.
    A hold is for pending jobs only. A release is also for a held job that runs:
    a hold that reached a job just as it started stops it where the scheduler
    can (LSF's bstop: USUSP), and the driver's release lets such a job go on too."""
    if verb is Verb.PAUSE:
        return scheduler.is_pending(row)
    return scheduler.is_pending(row) or scheduler.is_held(row)
