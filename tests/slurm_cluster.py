"""A real one-node Slurm for the tests, started with the project's own scripts.

``scripts/slurm/start-slurm.sh`` installs Debian's Slurm (and, for accounting,
slurmdbd + MariaDB) when missing and starts a private cluster under a root
directory; ``stop-slurm.sh`` stops it. The clusters here are configured like
the less forgiving real ones: no ``kill_invalid_depend`` (a child of a failed
job pends forever) and no ``EnforcePartLimits`` (an impossible request pends
forever), so the tests see the traps the backend must handle.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "slurm"


@dataclass(frozen=True)
class Cluster:
    root: Path
    accounting: bool

    @property
    def conf(self) -> str:
        return str(self.root / "etc" / "slurm.conf")

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": self.conf}

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=60)


def why_slurm_cannot_run() -> str | None:
    """A reason the cluster cannot be started on this machine, or None."""
    if os.geteuid() != 0:
        return "starting a Slurm cluster needs root"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "Slurm is not installed and apt-get is missing"
    return None


def _free_port_base() -> int:
    """Four consecutive free TCP ports (slurmctld, slurmd, slurmdbd, mariadb)."""
    for base in range(17000 + (os.getpid() % 500) * 8, 30000, 8):
        try:
            for port in range(base, base + 4):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no four free ports for a Slurm cluster")


def start(accounting: bool, cpus: int = 16, min_job_age: int = 300) -> Cluster:
    parent = Path(tempfile.mkdtemp(prefix="corral-slurm-"))
    parent.chmod(0o755)  # munged insists that everyone may reach its socket
    root = parent / ("acct" if accounting else "noacct")
    env = {**os.environ, "SLURM_ROOT": str(root), "SLURM_ACCOUNTING": "1" if accounting else "0",
           "SLURM_CPUS": str(cpus), "SLURM_KILL_INVALID_DEPEND": "0",
           "SLURM_ENFORCE_PART_LIMITS": "0", "SLURM_MIN_JOB_AGE": str(min_job_age),
           "SLURM_PORT_BASE": str(_free_port_base())}
    done = subprocess.run(["bash", str(SCRIPTS / "start-slurm.sh")], env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"start-slurm.sh failed:\n{done.stdout}\n{done.stderr}")
    return Cluster(root, accounting)


def stop(cluster: Cluster) -> None:
    subprocess.run(["bash", str(SCRIPTS / "stop-slurm.sh")],
                   env={**os.environ, "SLURM_ROOT": str(cluster.root)},
                   capture_output=True, text=True, timeout=120)
    shutil.rmtree(cluster.root.parent, ignore_errors=True)
