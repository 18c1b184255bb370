"""Grouping jobs dispatched together into arrays, and chunking arrays below the
cluster's limit: every batch scheduler's arrays are made here.

Jobs with equal resources, placement and dependencies go out as one array
(one submit command instead of one per job); with ``bundle=N`` up to N of them
share one array task (see :mod:`corral.backends.batch.bundles`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from corral.backends.base import Submission
from corral.backends.batch.records import Group, TaskRecord

__all__ = ["array_ranges", "group_submissions"]


def array_ranges(count: int, limit: int) -> list[tuple[int, int]]:
    """Split *count* array tasks into ``(first, size)`` chunks of at most *limit*
    tasks (a cluster's array limit bounds the highest index: each chunk is an
    array of its own, indexed from the scheduler's base again)."""
    return [(first, min(limit, count - first)) for first in range(0, count, limit)]


def group_submissions(batch: Sequence[Submission],
                      followed: Mapping[int | str, TaskRecord]) -> list[Group]:
    """The groups of *batch* that can each go out as one array, in order of
    first appearance. A parent in a submission's ``after`` that the backend
    follows (*followed*) becomes a dependency on its native id."""
    groups: dict[tuple, Group] = {}
    for submission in batch:
        parents = [followed[parent] for parent in submission.after if parent in followed]
        after = tuple(parent.native_id for parent in parents)
        placement = submission.placement
        key = (submission.resources, placement, after)
        group = groups.get(key)
        if group is None:
            depth = 1 + max((parent.group.depth for parent in parents), default=-1)
            group = groups[key] = Group(submission.resources, placement, after, placement.bundle,
                                        parents=tuple(parents), depth=depth)
        group.submissions.append(submission)
    return list(groups.values())
