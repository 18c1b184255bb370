"""A driver started in a hostile environment: its stdout or stderr closed, its
directory deleted, PYTHONINSPECT set, no room for threads, a job's output
file unreadable. Its jobs run, or fail saying why (attack review)."""

from __future__ import annotations

import pytest

import corral

import jobs


def test_a_failed_jobs_unreadable_stderr_is_named_and_the_run_goes_on(scheduler):
    probe = scheduler.submit(jobs.noop)
    probe.result(timeout=30)
    run_dir = probe.jobdir.parent
    # The job puts a directory where its stderr file goes, then fails: its
    # error's last lines of stderr cannot be read.
    failing = scheduler.shell(f'mkdir -p "{run_dir}/$CORRAL_JOB_ID/stderr"; exit 3')
    with pytest.raises(corral.JobFailed) as raised:
        failing.result(timeout=30)
    message = str(raised.value)
    assert "exit code 3" in message
    assert f"(its stderr, {failing.jobdir}/stderr, cannot be read: Is a directory)" in message
    assert [scheduler.submit(jobs.square, i).result(timeout=30) for i in range(3)] == [0, 1, 4]

