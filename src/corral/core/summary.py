"""The one line a run ends with when some of its jobs did not complete.

A failed job whose result nobody asks for raises nowhere, so a script would
end with exit status 0 and no word about it. Like asyncio's "exception was
never retrieved", the scheduler therefore reports, when its run ends, how many
jobs failed, timed out or were cancelled, with a few examples of each:

    3 of 10 jobs did not complete: 1 failed (job 3 'train': exit code 1),
    2 cancelled (jobs 4, 5 'eval': upstream job 3 'train' failed)

(one line). :class:`RunTally` counts finished jobs as the control loop makes
them final and keeps only a few examples, so a run of a million jobs costs a
few hundred bytes here and its line stays short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.safe_repr import one_line as _short
from corral.safe_repr import printable
from corral.status import JobStatus

if TYPE_CHECKING:
    from corral.core.record import JobRecord

__all__ = ["RunTally"]

#: How each way of not completing is written, in the order the line lists them.
_NOT_COMPLETED = {JobStatus.FAILED: "failed", JobStatus.TIMED_OUT: "timed out",
                  JobStatus.CANCELLED: "cancelled"}
_EXAMPLES = 3          # examples kept per status
_REASON_CHARS = 100    # an example's reason is cut after this many characters
_NAME_CHARS = 40


class RunTally:
    """Counts of finished jobs by status, with the first few that did not complete.

    Written by the control-loop thread only; read once the loop has ended.
    """

    __slots__ = ("finished", "_counts", "_examples", "_alike")

    def __init__(self) -> None:
        self.finished = 0
        self._counts: dict[JobStatus, int] = {}
        self._examples: dict[JobStatus, list[tuple[object, str, str]]] = {}
        #: Jobs past the examples with an example's name and reason, by both: how
        #: many, and the first one's id (a lone one is named rather than counted).
        self._alike: dict[JobStatus, dict[tuple[str, str], tuple[int, object]]] = {}

    def count(self, job: JobRecord) -> None:
        """Note a job made final (each job once)."""
        self.finished += 1
        status = job.status
        self._counts[status] = self._counts.get(status, 0) + 1
        if status in _NOT_COMPLETED:
            examples = self._examples.setdefault(status, [])
            if len(examples) < _EXAMPLES:
                examples.append(_example(job))
                return
            job_id, name, reason = _example(job)
            same = [place for place, (_, known, said) in enumerate(examples)
                    if known == name and said == reason]
            if same:
                # The lowest ids are the ones named: a cascade of cancels ends its
                # jobs last first, and "jobs 9, 10 and 3 more" hid 6 to 8 (cold review).
                last = max(same, key=lambda place: _in_order(examples[place][0]))
                if _in_order(job_id) < _in_order(examples[last][0]):
                    job_id, examples[last] = examples[last][0], (job_id, name, reason)
                alike = self._alike.setdefault(status, {})
                count, first = alike.get((name, reason), (0, job_id))
                alike[name, reason] = (count + 1, first)
            elif (place := self._room_for(status, _kind(reason))) is not None:
                examples[place] = (job_id, name, reason)

    def _room_for(self, status: JobStatus, kind: str) -> int | None:
        """Where among *status*'s examples a job of a *kind* of failure none of
        them shows may take the place of one whose kind another shows, or None.
        (Cold review: of 60 failures of three exceptions, one was only "and 20
        more".) The one replaced becomes one of the "more"; one that jobs past
        the examples are counted with stays, as their count is said beside it."""
        examples = self._examples[status]
        kinds = [_kind(said) for _, _, said in examples]
        if kind in kinds:
            return None
        alike = self._alike.get(status, {})
        for place in range(len(examples) - 1, -1, -1):
            _, name, reason = examples[place]
            if kinds.count(kinds[place]) > 1 and (name, reason) not in alike:
                return place
        return None

    def summary(self) -> str | None:
        """The line to report, or None when every finished job completed."""
        parts = []
        missed = 0
        for status, word in _NOT_COMPLETED.items():
            count = self._counts.get(status, 0)
            if not count:
                continue
            missed += count
            examples = sorted(self._examples[status], key=lambda example: _in_order(example[0]))
            alike = self._alike.get(status, {})
            others = count - len(examples) - sum(number for number, _ in alike.values())
            more = f"; and {others} more" if others else ""
            parts.append(f"{count} {word} ({'; '.join(_grouped(examples, alike))}{more})")
        if not missed:
            return None
        noun = "job" if self.finished == 1 else "jobs"
        return f"{missed} of {self.finished} {noun} did not complete: {', '.join(parts)}"


def _kind(reason: str) -> str:
    """What kind of failure a reason says: its words before a colon ("raised
    KeyError", "exit code 3", "killed by SIGSEGV")."""
    return reason.partition(":")[0][:80]


def _example(job: JobRecord) -> tuple[object, str, str]:
    return job.id, job.name, job.reason or "?"


def _grouped(examples: list[tuple[object, str, str]],
             alike: dict[tuple[str, str], tuple[int, object]]) -> list[str]:
    """The examples as the line says them: jobs of one name and one reason
    together (``jobs 4, 5 'eval': upstream job 3 'train' failed``), so that a
    reason many jobs share is said once (the same whole name and reason, not
    only the same beginning), with how many more share them (*alike*)."""
    together: dict[tuple[str, str], list[object]] = {}
    for job_id, name, reason in examples:
        together.setdefault((name, reason), []).append(job_id)
    said = []
    for (name, reason), ids in together.items():
        more, first = alike.get((name, reason), (0, None))
        if more == 1:  # (naming it is no longer than "and 1 more")
            ids.append(first)
        ids.sort(key=_in_order)  # (a cascade of cancels ends its jobs last first)
        jobs = f"job {ids[0]}" if len(ids) == 1 else f"jobs {', '.join(map(str, ids))}"
        if more > 1:
            jobs += f" and {more} more"
        # (repr() escapes a name's control characters; a reason's are escaped here)
        said.append(f"{jobs} {_short(name, _NAME_CHARS)!r}: "
                    f"{printable(_short(reason, _REASON_CHARS))}")
    return said


def _in_order(job_id: object) -> tuple[int, int, str]:
    """Numbered ids by number, then named ones by name."""
    return (0, job_id, "") if isinstance(job_id, int) else (1, 0, str(job_id))
