"""OpenPBS built in the background from the start of a whole-suite session.

On a fresh machine the first test on OpenPBS builds it from source (apt for its
build tools, then the compile: about four minutes on two cores). The cluster
tests run one at a time in one worker (support/xdist_cluster.py), so that build
lay on the suite's longest path: a clean CI run took 22.5 minutes, of which the
build held the cluster worker for 7.7. Started here, it overlaps the Slurm and
Grid Engine tests, which mostly wait on their daemons; the first OpenPBS test
then waits for it on the build script's lock and finds it installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

import openpbs_cluster
from support.processes import SESSION_PROCESSES

__all__ = ["start_openpbs_build", "end_openpbs_build"]

#: Where the background build writes what it says (its steps and timings).
BUILD_LOG = Path(tempfile.gettempdir()) / "corral-openpbs-early-build.log"


def start_openpbs_build(config: pytest.Config) -> subprocess.Popen | None:
    """Start building OpenPBS if this session runs the whole suite with its
    cluster tests and OpenPBS is not installed (nor buildable: then its tests
    say why); None when nothing was started."""
    whole_suite = config.args_source is pytest.Config.ArgsSource.TESTPATHS
    cluster_tests = "notcluster" not in (config.option.markexpr or "").replace(" ", "")
    installed = (openpbs_cluster.PREFIX / "bin" / "qsub").exists() and not Path(
        f"{openpbs_cluster.PREFIX}.corral-build-in-progress").exists()
    if not (whole_suite and cluster_tests) or installed:
        return None
    if openpbs_cluster.why_openpbs_cannot_run() is not None:
        return None
    with BUILD_LOG.open("w") as log:
        build = subprocess.Popen(
            ["nice", "-n", "5", "bash", str(openpbs_cluster.SCRIPTS / "build-openpbs.sh"),
             str(openpbs_cluster.tarball())],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # (its own group: ended whole, below)
    SESSION_PROCESSES.add(build.pid)  # (a session's, not a test's: -n 0 runs tests here)
    return build


def end_openpbs_build(build: subprocess.Popen | None) -> None:
    """At the session's end: a build still running (the session was cut short,
    or ran no OpenPBS test) is ended with all its processes; the script's marker
    then has the next session build again."""
    if build is None:
        return
    SESSION_PROCESSES.discard(build.pid)
    if build.poll() is not None:
        return
    try:
        os.killpg(build.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        build.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
