"""corral on a real OpenPBS (built from the bundled source by ``scripts/openpbs``),
beyond the contract suite: what a user sees of PBS Pro's own ways (arrays from 0,
children PBS deletes, Exit_status -29 and 271, qdel from outside, how many
commands a large run costs, the dialect probe and control without a driver).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import pytest

import corral
from corral import JobStatus
from corral.backends import backend_info
from corral.backends.batch.pbs import backend as pbs_backend
from corral.backends.batch.pbs.scheduler import PbsProScheduler
from jobs import sleep_for, square, wait_for_file
from support.cluster_jobs import (spaced_like_polls, submit_together, two_hundred_calls,
                                  wait_for_status)
from support.commandlog import counts_of, wrap_commands
from support.waiting import wait_until

pytestmark = pytest.mark.cluster

PBS_COMMANDS = ("qsub", "qstat", "qdel", "qhold", "qrls", "qsig")


@pytest.fixture
def pbs_path(openpbs, monkeypatch) -> Any:
    monkeypatch.setenv("PATH", openpbs.env()["PATH"])
    return openpbs


@pytest.fixture
def make(pbs_path, tmp_path: Path) -> Iterator[Callable[..., corral.Scheduler]]:
    """Schedulers on PBS (the dialect probed), shut down at the end of the test."""
    made: list[corral.Scheduler] = []

    def build(**options) -> corral.Scheduler:
        sched = corral.Scheduler(backend="pbs", workdir=tmp_path / f"run{len(made)}",
                                 backend_options={"poll_interval": 0.2, **options})
        made.append(sched)
        return sched

    yield build
    (tmp_path / "release").touch()
    for sched in made:
        if not sched.wait(timeout=30):
            sched.interrupt()
        sched.shutdown()


def qstat_job(cluster, native_id: str) -> dict:
    """One job as ``qstat -f -F json -x`` shows it."""
    done = cluster.run("qstat", "-f", "-F", "json", "-x", native_id)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout, strict=False)["Jobs"][native_id]






def fail_after(path: str) -> None:
    wait_for_file(path)
    raise RuntimeError("the parent fails")


def test_the_probe_finds_pbs_pro_and_says_why(pbs_path):
    found = backend_info("pbs").answers()
    assert found.answers
    assert found.why.startswith("dialect pro: qstat --version says pbs_version = 23.06")


def test_jobs_dispatched_together_are_one_array_from_zero_with_a_result_each(make):
    sched = make()
    assert type(sched._backend.scheduler) is PbsProScheduler  # probed, no option given
    jobs = submit_together(sched, 4)
    assert [job.result(timeout=60) for job in jobs] == [0, 1, 4, 9]
    base = jobs[0].native_id.split("[")[0]
    assert [job.native_id for job in jobs] == [f"{base}[{i}].pbshost" for i in range(4)]


def test_the_child_pbs_deletes_for_its_failed_parent_ends_cancelled_naming_it(make, pbs_path,
                                                                               tmp_path):
    sched = make()
    gate = tmp_path / "fail-now"
    parent = sched.options(name="parent").submit(fail_after, str(gate))
    child = sched.options(name="child", after=[parent]).submit(square, 3)
    wait_until(lambda: child.native_id is not None, timeout=30,
               message="the child handed to PBS with afterok")
    assert qstat_job(pbs_path, child.native_id)["job_state"] == "H"
    gate.touch()
    with pytest.raises(corral.CancelledError):
        child.result(timeout=60)
    assert parent.status is JobStatus.FAILED
    assert child.status is JobStatus.CANCELLED
    assert f"upstream job {parent.id} 'parent' failed" in child.reason
    wait_until(lambda: qstat_job(pbs_path, child.native_id)["job_state"] == "F", timeout=30)
    assert "Exit_status" not in qstat_job(pbs_path, child.native_id)  # PBS deleted it


def test_a_job_past_its_walltime_is_timed_out(make):
    sched = make()
    job = sched.options(walltime="3s").submit(sleep_for, 60)
    with pytest.raises(corral.JobTimedOut):
        job.result(timeout=60)
    assert job.status is JobStatus.TIMED_OUT, job.reason


def test_qdel_from_outside_cancels_the_job(make, pbs_path, tmp_path):
    sched = make()
    job = sched.submit(wait_for_file, str(tmp_path / "never"))
    wait_for_status(job, JobStatus.RUNNING)
    done = pbs_path.run("qdel", job.native_id)
    assert done.returncode == 0, done.stderr
    wait_for_status(job, JobStatus.CANCELLED)
    assert "qdel" in job.reason


def test_pause_and_resume_without_a_driver_hold_and_release_a_queued_job(pbs_path, tmp_path):
    # -a: a start time an hour ahead keeps it queued (W), as a busy cluster would.
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    later = time.strftime("%H%M", time.localtime(time.time() + 3600))
    done = pbs_path.run("qsub", "-a", later, "-o", "/dev/null", "-j", "oe", str(script))
    assert done.returncode == 0, done.stderr
    native = done.stdout.strip()
    try:
        assert qstat_job(pbs_path, native)["job_state"] == "W"
        pbs_backend.control_without_driver("pause", [native])
        assert qstat_job(pbs_path, native)["job_state"] == "H"
        pbs_backend.control_without_driver("resume", [native])
        assert qstat_job(pbs_path, native)["job_state"] == "W"
        pbs_backend.control_without_driver("cancel", [native])
        wait_until(lambda: qstat_job(pbs_path, native)["job_state"] == "F", timeout=30)
    finally:
        pbs_path.run("qdel", native)


def test_pause_holds_and_resume_releases_the_subjobs_of_an_array(pbs_path, tmp_path):
    """OpenPBS holds only a whole array: `qhold 12[0]` is an "Invalid request", and
    the subjobs ran while the run was paused (BUG, attack review)."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    later = time.strftime("%H%M", time.localtime(time.time() + 3600))
    done = pbs_path.run("qsub", "-J", "0-1", "-a", later, "-o", "/dev/null", "-j", "oe",
                        str(script))
    assert done.returncode == 0, done.stderr
    array = done.stdout.strip()
    subjobs = [array.replace("[]", f"[{index}]", 1) for index in (0, 1)]
    try:
        assert qstat_job(pbs_path, array)["job_state"] in ("Q", "W")
        pbs_backend.control_without_driver("pause", subjobs)
        wait_until(lambda: qstat_job(pbs_path, array)["job_state"] == "H", timeout=30,
                   message="the array held")
        # Its subjobs say Q: read so, a driver back after the pause never released them
        # (BUG, second attack review). corral reads them held, as they are.
        scheduler = PbsProScheduler()
        shown = pbs_path.run(*scheduler.status_argv_for("root", subjobs))
        rows = scheduler.parse_status(shown.stdout)
        assert [scheduler.is_held(rows[native]) for native in subjobs] == [True, True]
        pbs_backend.control_without_driver("resume", subjobs)
        wait_until(lambda: qstat_job(pbs_path, array)["job_state"] != "H", timeout=30,
                   message="the array released")
        rows = scheduler.parse_status(pbs_path.run(*scheduler.status_argv_for(
            "root", subjobs)).stdout)
        assert [scheduler.is_held(rows[native]) for native in subjobs] == [False, False]
    finally:
        pbs_path.run("qdel", array)


def test_a_cancel_without_a_driver_of_a_job_that_has_finished_did_what_was_asked(pbs_path,
                                                                                tmp_path):
    """PBS deletes a cancelled job's afterok dependents itself, and `corral cancel`
    then deleted them too: qdel's "Job has finished" made it exit 3 (BUG, attack
    review)."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    done = pbs_path.run("qsub", "-o", "/dev/null", "-j", "oe", str(script))
    assert done.returncode == 0, done.stderr
    native = done.stdout.strip()
    wait_until(lambda: qstat_job(pbs_path, native)["job_state"] == "F", timeout=60,
               message="the job to finish")
    said = pbs_path.run("qdel", native)
    assert (said.returncode, "Job has finished" in said.stderr) == (35, True), said
    assert pbs_backend.control_without_driver("cancel", [native]) == ""


# -- how many PBS commands a large run costs ---------------------------------------------


@pytest.fixture
def counted_commands(pbs_path, tmp_path: Path, monkeypatch) -> Path:
    """Wrappers first on PATH that log each PBS command's name and time."""
    log, path = wrap_commands(tmp_path / "counted", PBS_COMMANDS, os.environ["PATH"])
    monkeypatch.setenv("PATH", path)
    return log


@pytest.mark.timeout(300)
def test_two_hundred_calls_cost_four_qsub_and_one_qstat_per_poll(make, counted_commands,
                                                                tmp_path):
    cost = two_hundred_calls(make, counted_commands, "qstat", PBS_COMMANDS)
    assert cost.counts["qsub"] == math.ceil(200 / 64) == 4
    assert len({job.native_id.split("[")[0] for job in cost.jobs}) == 4
    assert cost.counts["qstat"] <= cost.elapsed / 0.5 + 2, cost.report
    assert spaced_like_polls(cost.gaps), cost.report


@pytest.mark.timeout(300)
def test_four_hundred_short_calls_bundled_by_fifty_go_out_as_eight_array_tasks(make,
                                                                            counted_commands):
    # The speed-up against one batch job per call is measured apart (too slow for the
    # suite: about 0.5 s of a 2-core machine per batch job); see benchmarks/RESULTS.md.
    sched = make()
    submit = sched.options(bundle=50).submit
    sched.pause()
    jobs = [submit(sleep_for, 0.01) for _ in range(400)]
    sched.resume()
    assert [job.result(timeout=240) for job in jobs] == [0.01] * 400
    base = jobs[0].native_id.split("[")[0]
    assert {job.native_id for job in jobs} == {f"{base}[{i}].pbshost" for i in range(8)}
    assert counts_of(counted_commands)["qsub"] == 1
