"""PBS's Torque dialect on Slurm's own Torque wrappers over a real Slurm, beyond the
contract suite: the probe tells the dialect, the request reaches the cluster as
Torque's ``-l nodes=1:ppn=N,mem=..,walltime=..`` says, and jobs dispatched
together go out one ``qsub`` each (the wrappers name array tasks by Slurm's own
job ids, which corral could not follow).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import corral
from corral.backends import backend_info
from corral.backends.batch.pbs.scheduler import TorqueScheduler
from jobs import report_environment, square

pytestmark = pytest.mark.cluster


@pytest.fixture
def wrappers(torque, monkeypatch) -> Any:
    for name in ("PATH", "SLURM_CONF"):
        monkeypatch.setenv(name, torque.env()[name])
    return torque


@pytest.fixture
def sched(wrappers, tmp_path: Path) -> Iterator[corral.Scheduler]:
    """A Scheduler on PBS with no dialect given: the probe must find Torque's."""
    made = corral.Scheduler(backend="pbs", workdir=tmp_path / "run",
                            backend_options={"poll_interval": 0.2})
    yield made
    if not made.wait(timeout=30):
        made.interrupt()
    made.shutdown()


def test_the_probe_finds_torques_dialect_in_slurms_wrappers(wrappers):
    assert Path(wrappers.bin, "qstat").exists()
    found = backend_info("pbs").answers()
    assert found.answers
    assert found.why == ("dialect torque: qstat -u answers but not qstat --version: Torque's "
                         "dialect (e.g. Slurm's Torque wrappers)")


def test_cores_memory_and_walltime_reach_slurm_through_the_wrappers(sched, wrappers):
    assert type(sched._backend.scheduler) is TorqueScheduler
    job = sched.options(cores=2, memory="100MB", walltime="90s").submit(
        report_environment, "SLURM_JOB_ID", "SLURM_CPUS_ON_NODE")
    seen = job.result(timeout=60)
    assert re.fullmatch(r"\d+", job.native_id)  # Slurm's job id, as the wrappers print it
    assert seen["SLURM_JOB_ID"] == job.native_id
    shown = wrappers.run("scontrol", "show", "job", job.native_id).stdout
    assert "NumCPUs=2" in shown and "MinMemoryNode=100M" in shown, shown
    # 90 s asked as walltime=00:01:30; the wrappers give Slurm whole minutes, rounded up.
    assert "TimeLimit=00:02:00" in shown, shown


def test_jobs_dispatched_together_go_out_one_qsub_each(sched):
    sched.pause()
    jobs = [sched.submit(square, i) for i in range(3)]
    sched.resume()
    assert [job.result(timeout=60) for job in jobs] == [0, 1, 4]
    assert len({job.native_id for job in jobs}) == 3
