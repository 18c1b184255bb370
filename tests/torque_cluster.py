"""PBS's Torque dialect for the tests: Slurm's own Torque wrappers (Debian's
``slurm-wlm-torque``, unpacked by ``scripts/pbs/pbs-torque-env.sh`` into a
directory of their own) over a real one-node Slurm started by :mod:`slurm_cluster`.
The wrappers come first on PATH only in the environment given to corral (they
would hide Grid Engine's ``qsub`` system-wide).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import slurm_cluster

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pbs" / "pbs-torque-env.sh"


@dataclass(frozen=True)
class Cluster:
    slurm: slurm_cluster.Cluster
    bin: str

    def env(self) -> dict[str, str]:
        return {**self.slurm.env(), "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=60)


def why_torque_cannot_run() -> str | None:
    """A reason the wrappers and their Slurm cannot run here, or None."""
    return slurm_cluster.why_slurm_cannot_run()


def start() -> Cluster:
    """A Slurm without accounting, and the wrappers unpacked beside it."""
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600)
    found = re.search(r"export PATH=(\S+?):\$PATH", done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"pbs-torque-env.sh failed:\n{done.stdout}\n{done.stderr}")
    return Cluster(slurm_cluster.start(accounting=False), found.group(1))


def stop(cluster: Cluster) -> None:
    slurm_cluster.stop(cluster.slurm)
