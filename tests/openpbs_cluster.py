"""A real one-node OpenPBS for the tests, started with the project's own scripts.

``scripts/openpbs/build-openpbs.sh`` builds OpenPBS 23.06 from the bundled source
(``../shared/openpbs/openpbs-src.tar.gz`` next to the repository, or
``$OPENPBS_TARBALL``) into ``/opt/pbs`` once (about 100 s);
``start-openpbs.sh`` runs the server, scheduler, mom and datastore inside a
private network namespace, with client wrappers in a directory of their own,
put first on PATH only in the environment given to corral. The server keeps
finished jobs (``job_history_enable``) and accepts root's jobs (``acl_roots``):
the tests run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts" / "openpbs"
PREFIX = Path("/opt/pbs")
#: The wrappers' directory (start-openpbs.sh's default PBS_CLIENT_DIR).
CLIENT_DIR = Path("/tmp/corral-openpbs/bin")


def tarball() -> Path:
    return Path(os.environ.get("OPENPBS_TARBALL")
                or REPO.parent / "shared" / "openpbs" / "openpbs-src.tar.gz")


@dataclass(frozen=True)
class Cluster:
    bin: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=60)


def why_openpbs_cannot_run() -> str | None:
    """A reason the cluster cannot be started on this machine, or None."""
    if os.geteuid() != 0:
        return "starting an OpenPBS server needs root (a network namespace, /opt/pbs)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing: no network namespace for the server"
    if not (PREFIX / "bin" / "qsub").exists():
        if not tarball().exists():
            return f"OpenPBS is not installed in {PREFIX} and its source {tarball()} is missing"
        if shutil.which("apt-get") is None:
            return "OpenPBS is not installed and apt-get is missing for its build dependencies"
    return None


def start(cpus: int = 16) -> Cluster:
    """Build OpenPBS if needed, then start a fresh server (job ids from 0) whose node
    offers *cpus* slots."""
    built = subprocess.run(["bash", str(SCRIPTS / "build-openpbs.sh"), str(tarball())],
                           capture_output=True, text=True, timeout=900)
    if built.returncode != 0:
        raise RuntimeError(f"build-openpbs.sh failed:\n{built.stdout}\n{built.stderr}")
    env = {**os.environ, "RESET": "1", "PBS_ALLOW_ROOT": "1", "PBS_CLIENT_DIR": str(CLIENT_DIR),
           "PBS_NCPUS": str(cpus)}
    done = subprocess.run(["bash", str(SCRIPTS / "start-openpbs.sh")], env=env,
                          capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        stop(Cluster(CLIENT_DIR), check=False)  # what it started, it leaves running otherwise
        raise RuntimeError(f"start-openpbs.sh failed:\n{done.stdout}\n{done.stderr}")
    return Cluster(CLIENT_DIR)


def stop(cluster: Cluster, check: bool = True) -> None:
    done = subprocess.run(["bash", str(SCRIPTS / "stop-openpbs.sh"), "--purge"],
                          capture_output=True, text=True, timeout=180)
    if check and done.returncode != 0:
        raise RuntimeError(f"stop-openpbs.sh left something running:\n{done.stdout}\n"
                           f"{done.stderr}")
