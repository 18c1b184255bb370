"""Job states and the one table of legal moves between them.

A job's life:

    NEW → WAITING (dependencies unmet) → QUEUED (ready; waiting for room, or paused)
        → SUBMITTED (the backend has it) → RUNNING
        → COMPLETED | FAILED | CANCELLED | TIMED_OUT

A finished attempt may go back to QUEUED: a retry after FAILED/TIMED_OUT, or a
re-run asked for by an ``on_finish`` callback (also after COMPLETED). Every
state change in corral goes through :func:`check_transition`, so an illegal
move is a loud bug instead of a silently confused queue.

This module imports nothing of corral's: it is vocabulary.
"""

from __future__ import annotations

import enum
import re

from corral.suggest import did_you_mean

__all__ = ["JobStatus", "IllegalTransition", "check_transition", "TERMINAL", "PENDING", "ACTIVE",
           "statuses_named", "UPSTREAM", "upstream_reason", "retry_reason", "failures_before_retry"]


class JobStatus(enum.Enum):
    """Where a job is in its life. Compare members, never their strings."""

    NEW = "new"
    WAITING = "waiting"
    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, FAILED, CANCELLED and TIMED_OUT."""
        return self in TERMINAL

    @property
    def is_pending(self) -> bool:
        """True while the job has not been handed to a backend yet."""
        return self in PENDING

    def __str__(self) -> str:
        return self.name

    #: Members are singletons compared by identity, so the identity hash is
    #: theirs: Enum's own hashes the name in Python, and every job's status is
    #: looked up in sets and tables several times per transition.
    __hash__ = object.__hash__


TERMINAL = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)
PENDING = frozenset({JobStatus.NEW, JobStatus.WAITING, JobStatus.QUEUED})
ACTIVE = frozenset({JobStatus.SUBMITTED, JobStatus.RUNNING})

_S = JobStatus
_LEGAL: dict[JobStatus, frozenset[JobStatus]] = {
    _S.NEW: frozenset({_S.WAITING, _S.QUEUED, _S.CANCELLED}),
    _S.WAITING: frozenset({_S.QUEUED, _S.CANCELLED}),
    _S.QUEUED: frozenset({_S.SUBMITTED, _S.CANCELLED}),
    # A backend may report the end of a job it never reported running (a
    # short job between two polls), or give a job back before it started.
    _S.SUBMITTED: frozenset(
        {_S.RUNNING, _S.QUEUED, _S.COMPLETED, _S.FAILED, _S.CANCELLED, _S.TIMED_OUT}
    ),
    _S.RUNNING: frozenset({_S.QUEUED, _S.COMPLETED, _S.FAILED, _S.CANCELLED, _S.TIMED_OUT}),
    _S.COMPLETED: frozenset({_S.QUEUED}),
    _S.FAILED: frozenset({_S.QUEUED}),
    _S.TIMED_OUT: frozenset({_S.QUEUED}),
    _S.CANCELLED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change that the table refuses: a bug in corral, never user error."""


def check_transition(old: JobStatus, new: JobStatus) -> None:
    """Raise :class:`IllegalTransition` unless *old* → *new* is a legal move."""
    if new not in _LEGAL[old]:
        raise IllegalTransition(f"a job cannot go from {old.name} to {new.name}")


#: Names of groups of states, for ``jobs(status)`` and ``qsize(status)``.
STATUS_GROUPS: dict[str, frozenset[JobStatus]] = {
    "pending": PENDING, "queued": PENDING, "active": ACTIVE,
    "finished": TERMINAL, "history": TERMINAL, "done": TERMINAL,
}


def statuses_named(status: JobStatus | str) -> frozenset[JobStatus]:
    """The states *status* stands for: one JobStatus, its name, or a group name.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if isinstance(status, JobStatus):
        return frozenset({status})
    if isinstance(status, str):
        key = status.strip().lower()
        if key in STATUS_GROUPS:
            return STATUS_GROUPS[key]
        for member in JobStatus:
            if member.value == key:
                return frozenset({member})
    choices = list(dict.fromkeys([member.value for member in JobStatus] + sorted(STATUS_GROUPS)))
    typed = status.strip().lower() if isinstance(status, str) else status
    aborted = "; an aborted job is CANCELLED, its reason 'aborted'" if typed == "aborted" else ""
    meant = "" if aborted else did_you_mean(typed, choices)
    raise ValueError(f"unknown status {status!r}{f' ({meant})' if meant else ''}; use a "
                     f"JobStatus or one of: {', '.join(choices)}{aborted}")


#: How the reason of a job cancelled because a job it comes after did not complete begins.
UPSTREAM = "upstream job "


def upstream_reason(job_id: object, name: str, status: JobStatus, reason: str | None) -> str:
    """Why the jobs after a job that ended *status* without completing are
    cancelled: the root cause, which a job cancelled for its own upstream job
    passes on, so that a cascade names it whether its jobs were submitted
    before the failure or after (from a script or by ``corral submit --after``)."""
    if status is JobStatus.CANCELLED and (reason or "").startswith(UPSTREAM):
        return reason  # type: ignore[return-value]
    what = {JobStatus.FAILED: "failed", JobStatus.CANCELLED: "was cancelled",
            JobStatus.TIMED_OUT: "timed out"}.get(status, status.name)
    if status is JobStatus.CANCELLED and (reason or "").startswith("aborted"):
        what = "was aborted"  # (abort(), corral abort: the words a person used)
    return f"{UPSTREAM}{job_id} {name!r} {what}"


def retry_reason(failures: int, retries: int, reason: str | None) -> str:
    """Why a job that failed is queued again: its *failures* so far, of the
    *retries* it may have, and why the last try failed."""
    return f"retry {failures} of {retries} after: {reason}"


def failures_before_retry(reason: str | None) -> int | None:
    """The failures so far that a :func:`retry_reason` counts; None for any
    other reason. A daemon that takes up a job a killed one had queued for
    its retry goes on counting from there (re-attack review: the budget began
    again, and ``--retries 2`` ran a job four times)."""
    match = _RETRY.match(reason or "")
    return None if match is None else int(match[1])


_RETRY = re.compile(r"retry (\d{1,9}) of \d+ after: ")
