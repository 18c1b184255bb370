"""The table of legal state changes refuses the illegal ones."""

from __future__ import annotations

import pytest

from corral.status import IllegalTransition, JobStatus, check_transition


@pytest.mark.parametrize("old, new", [
    (JobStatus.NEW, JobStatus.QUEUED), (JobStatus.WAITING, JobStatus.QUEUED),
    (JobStatus.QUEUED, JobStatus.SUBMITTED), (JobStatus.SUBMITTED, JobStatus.RUNNING),
    (JobStatus.RUNNING, JobStatus.COMPLETED), (JobStatus.RUNNING, JobStatus.TIMED_OUT),
    (JobStatus.FAILED, JobStatus.QUEUED), (JobStatus.SUBMITTED, JobStatus.FAILED),
])
def test_legal_moves_pass(old, new):
    check_transition(old, new)


@pytest.mark.parametrize("old, new", [
    (JobStatus.COMPLETED, JobStatus.RUNNING), (JobStatus.CANCELLED, JobStatus.QUEUED),
    (JobStatus.NEW, JobStatus.RUNNING), (JobStatus.WAITING, JobStatus.SUBMITTED),
])
def test_illegal_moves_are_refused_by_name(old, new):
    with pytest.raises(IllegalTransition, match=f"from {old.name} to {new.name}"):
        check_transition(old, new)


def test_terminal_states_are_exactly_the_four_ends():
    assert {s for s in JobStatus if s.is_terminal} == {
        JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
