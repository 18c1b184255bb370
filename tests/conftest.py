"""Shared fixtures: a real scheduler per test, and a check that no process
outlives a test. Helpers that tests import by name live in ``tests/support/``."""

from __future__ import annotations

import os
import sys
import time
from typing import Any
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import corral

import slurm_cluster
from support.processes import outside_session_processes
from support.harnesses import harness_modules

def _python3_is_this_python() -> None:
    """Put this interpreter's folder first on PATH, as an activated venv does.

    The fake schedulers' commands (``#!/usr/bin/env python3``) and the jobs that
    run ``python3`` then start this Python directly. Found on PATH instead, a
    version manager's ``python3`` is a shell script that runs a few more before
    Python: on our CI machines (pyenv) that cost the fast lane about 15 % of its CPU.
    """
    folder = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(folder, "python3")):
        os.environ["PATH"] = os.pathsep.join([folder, os.environ.get("PATH", "")])


_python3_is_this_python()


def _ctrl_c_reaches_the_tests_processes() -> None:
    """Let the processes the tests start take SIGINT as Ctrl-C again.

    A shell starts a command put in the background (``pytest ... &``, a CI
    runner's step) with SIGINT ignored, and every process started from it
    inherits that: the tests that press Ctrl-C on a driver, ``corral wait``
    or ``corral logs`` then waited out their timeouts (7 of them failed, each
    after 30-60 s). A handler of our own is reset at ``exec``, so the
    processes started from here begin with SIGINT's default again.
    """
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_ctrl_c_reaches_the_tests_processes()

#: Test modules' assertion-rewritten bytecode is kept between sessions even where
#: ``PYTHONDONTWRITEBYTECODE`` is set (as on our CI machines): rewritten afresh, the
#: collection took about 6 s of CPU in each xdist worker and the controller, a
#: tenth of the fast lane. (pytest reads this flag as each test module is imported,
#: after this file.)
sys.dont_write_bytecode = False

#: No site-wide config file of the machine's (``/etc/corral/corral.toml``) reaches
#: a test unless the test names one: the suite means the same on every machine.
os.environ["CORRAL_SITE_CONFIG"] = ""

#: Each backend's harness module may define the fixtures its harness asks for
#: (a real cluster per session): load them all as plugins.
pytest_plugins = harness_modules()


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[corral.Scheduler]:
    sched = corral.Scheduler(cores=2, workdir=tmp_path / "run")
    yield sched
    finished = sched.wait(timeout=60)
    if not finished:  # a failed test may leave a job blocked for good: do not hang on it
        sched.interrupt()
    sched.shutdown()
    assert finished, "jobs were still unfinished 60 s after the test"


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Any]:
    """The ``corral`` command on a run (and daemon) of this test's own
    (support.cli.Corral), its daemon stopped at the end."""
    from support.cli import Corral

    command = Corral(tmp_path / "home", tmp_path / "run", cwd=tmp_path)
    yield command
    command.settle()
    command.stop_daemon()


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A file whose creation lets blocking test jobs end."""
    return tmp_path / "release"


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    yield
    me = psutil.Process(os.getpid())
    deadline = time.monotonic() + 10
    while True:
        left = [child for child in outside_session_processes(me.children(recursive=True))
                if _alive(child) and child.pid != _resource_tracker()]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()) for p in left]}"


def _resource_tracker() -> int | None:
    """The pid of this process's multiprocessing resource tracker, if it started
    one: the standard library's helper for the whole process (a Dask LocalCluster
    starts it), which lives as long as the process and ends with it."""
    from multiprocessing import resource_tracker

    return getattr(resource_tracker._resource_tracker, "_pid", None)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


#: Fixtures that start a real cluster scheduler; a test using one is marked
#: ``cluster`` so that ``pytest -m "not cluster"`` is the fast lane. (A module of
#: tests on another real scheduler marks itself: ``pytestmark = pytest.mark.cluster``.)
CLUSTER_FIXTURES = {"slurm", "contract_slurm"}


#: The time limit of a test that may be the first to use the OpenPBS cluster: it
#: builds OpenPBS from source when /opt/pbs has none (apt for its build tools, then
#: the compile: 2 to 5 minutes on a fresh machine, more than the usual 180 s).
OPENPBS_FIRST_USE_TIMEOUT_S = 900


def _may_build_openpbs(item: pytest.Item) -> bool:
    return "openpbs" in getattr(item, "fixturenames", ()) or "[openpbs]" in item.nodeid


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from support.xdist_cluster import is_cluster_test

    for item in items:
        if _may_build_openpbs(item) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(OPENPBS_FIRST_USE_TIMEOUT_S))
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)
        if item.get_closest_marker("cluster") and not is_cluster_test(item.nodeid):
            raise pytest.UsageError(
                f"{item.nodeid} runs on a real cluster, but support/xdist_cluster.py would "
                "send it to either worker: add its module or parameter there")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile corral's modules once, before the tests start their processes.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (as on our CI machines), no
    interpreter writes bytecode, so each one the tests start (a CLI command,
    the daemon, a batch job's runner) compiled every module it imported, about
    60 ms of CPU each time. Bytecode compiled here is read by all of them.
    It lands in the ``__pycache__`` folders Python itself uses (ignored by git).
    A whole-suite session also starts OpenPBS's build here when it is not
    installed (support/openpbs_early.py).
    """
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller did it
        return
    import compileall

    from support.openpbs_early import start_openpbs_build

    global _openpbs_build
    _openpbs_build = start_openpbs_build(session.config)  # (off the cluster tests' path)
    for folder in (Path(corral.__file__).parent, Path(__file__).parent):  # and the drivers here
        compileall.compile_dir(folder, quiet=1)


#: OpenPBS's build, started with the session (support/openpbs_early.py), or None.
_openpbs_build: Any = None


def pytest_sessionfinish(session: pytest.Session) -> None:
    from support.openpbs_early import end_openpbs_build

    end_openpbs_build(_openpbs_build)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Two workers (``-n auto`` in pyproject.toml), four in the fast lane.

    With real clusters, one worker runs the cluster tests one at a time and must
    not be starved of CPU (their walltime and polling stories run on the clock).
    Without them, the tests mostly wait on the processes they start: on two
    cores a third worker shortened the lane by about a sixth, a fourth by a
    further tenth (5:03 -> 4:26 minutes).
    """
    expression = (config.option.markexpr or "").replace(" ", "")
    return 4 if "notcluster" in expression else 2


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Every test on a real cluster in one worker, one at a time (support.xdist_cluster)."""
    from support.xdist_cluster import make_scheduler

    return make_scheduler(config, log)


@pytest.fixture(scope="session", params=["accounting off", "accounting on"])
def slurm(request: pytest.FixtureRequest) -> Iterator[slurm_cluster.Cluster]:
    """A real one-node Slurm, once without accounting (sacct unavailable: the
    backend decides from squeue and its result files) and once with slurmdbd.
    SLURM_CONF points at it for the whole session of tests that use it."""
    reason = slurm_cluster.why_slurm_cannot_run()
    if reason is not None:
        pytest.skip(f"NO SLURM TESTS: {reason}")
    cluster = slurm_cluster.start(accounting=request.param == "accounting on")
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.conf
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        slurm_cluster.stop(cluster)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A real headless Chromium (installed by the tests' set-up when missing), quit
    after the test so that no process is left behind."""
    from support.browser import close_browser, start_browser

    driver = start_browser()
    yield driver
    close_browser(driver)


