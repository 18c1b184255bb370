"""A real one-node Grid Engine for the tests, started with the project's own scripts.

``scripts/sge/sge-start.sh`` installs Debian's gridengine 8.1.9 when missing,
fixes the host alias, lets root run jobs, schedules every second and waits until
the queue is up (about 4 s when installed, about 60 s from nothing);
``sge-stop.sh`` deletes every job and stops the daemons (about 10 s: start one
per test session). The queue ``all.q`` has :data:`SLOTS` slots and the parallel
environment ``smp``; accounting is flushed at once, so ``qacct`` knows a job as
soon as it ended.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "sge"
#: Job slots of the one queue (4 cores' worth: two jobs may hog and two still run).
SLOTS = 4


@dataclass(frozen=True)
class Cluster:
    slots: int

    def env(self) -> dict[str, str]:
        """The environment SGE's commands need (Debian's find their cell by default)."""
        return dict(os.environ)

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=60)


def why_sge_cannot_run() -> str | None:
    """A reason the cluster cannot be started on this machine, or None."""
    if os.geteuid() != 0:
        return "starting a Grid Engine needs root"
    if not Path("/usr/lib/gridengine/sge_qmaster").exists() and shutil.which("apt-get") is None:
        return "Grid Engine is not installed and apt-get is missing"
    return None


def start(slots: int = SLOTS) -> Cluster:
    done = subprocess.run(["bash", str(SCRIPTS / "sge-start.sh")],
                          env={**os.environ, "SGE_SLOTS": str(slots)},
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"sge-start.sh failed:\n{done.stdout}\n{done.stderr}")
    return Cluster(slots)


def stop(cluster: Cluster) -> None:
    subprocess.run(["bash", str(SCRIPTS / "sge-stop.sh")], capture_output=True, text=True,
                   timeout=120)
