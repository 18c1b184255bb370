"""A real Dask cluster on loopback for the tests: one ``dask scheduler`` and two
``dask worker`` processes, started with the ``dask`` command as a user would.

The first worker declares resources (``cores=2, GPU=1``), the second none, so
the stories see both kinds. Each worker runs under a nanny that restarts it if
it dies, as in a real deployment. :func:`start` returns once the scheduler
knows both workers; :func:`stop` ends every process of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from support.processes import SESSION_PROCESSES

__all__ = ["DaskCluster", "start", "stop", "worker_pids", "WITH_RESOURCES"]

#: What the first worker declares.
WITH_RESOURCES = "cores=2,GPU=1"


@dataclass
class DaskCluster:
    address: str
    directory: Path
    processes: list[subprocess.Popen] = field(default_factory=list)


#: The tests' own directory: the workers import the stories' job functions from it,
#: as a user's workers import the user's code.
_TESTS = str(Path(__file__).parent)


def _dask(*arguments: str, log: Path, hide: Path | None = None) -> subprocess.Popen:
    """Start ``dask ARGUMENTS``; with *hide*, in a mount namespace of its own where an
    empty tmpfs covers *hide*: a worker on another machine, without the shared filesystem."""
    path = os.pathsep.join(filter(None, (_TESTS, os.environ.get("PYTHONPATH"))))
    command = [os.path.join(os.path.dirname(sys.executable), "dask"), *arguments]
    if hide is not None:
        hide.mkdir(parents=True, exist_ok=True)
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs corral-hidden "$0" && exec "$@"', str(hide), *command]
    with open(log, "ab") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": path})


def start(directory: Path, workers: tuple[str | None, ...] = (WITH_RESOURCES, None),
          timeout: float = 60, hide: Path | None = None, nthreads: int = 2) -> DaskCluster:
    """Start a scheduler and one worker per item of *workers* (its ``--resources``,
    or None), all listening on 127.0.0.1 only; with *hide*, workers that do not see
    that directory (see :func:`_dask`; needs root)."""
    directory.mkdir(parents=True, exist_ok=True)
    scheduler_file = directory / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    log = directory / "dask.log"
    cluster = DaskCluster("", directory)
    started = cluster.processes
    started.append(_dask("scheduler", "--host", "127.0.0.1", "--port", "0",
                         "--dashboard-address", "127.0.0.1:0", "--no-dashboard",
                         "--scheduler-file", str(scheduler_file), log=log))
    try:
        cluster.address = _read_address(scheduler_file, cluster.processes[0], log, timeout)
        for resources in workers:
            arguments = ["worker", cluster.address, "--nthreads", str(nthreads), "--no-dashboard",
                         "--host", "127.0.0.1", "--local-directory", str(directory / "space")]
            if resources:
                arguments += ["--resources", resources]
            started.append(_dask(*arguments, log=log, hide=hide))
        SESSION_PROCESSES.update(process.pid for process in started)
        _wait_for_workers(cluster, len(workers), timeout)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def _read_address(scheduler_file: Path, process: subprocess.Popen, log: Path,
                  timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dask scheduler exited ({process.returncode}):\n"
                               + log.read_text()[-3000:])
        try:
            return str(json.loads(scheduler_file.read_text())["address"])
        except (FileNotFoundError, ValueError, KeyError):
            time.sleep(0.05)
    raise RuntimeError(f"dask scheduler wrote no address within {timeout} s:\n"
                       + log.read_text()[-3000:])


def _wait_for_workers(cluster: DaskCluster, count: int, timeout: float) -> None:
    from distributed import Client

    with Client(cluster.address, timeout=timeout, set_as_default=False) as client:
        client.wait_for_workers(count, timeout=timeout)


def worker_pids(cluster: DaskCluster) -> dict[str, int]:
    """``{worker address: pid}`` of the worker processes (the nannies' children)."""
    from distributed import Client

    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        return dict(client.run(os.getpid))


def stop(cluster: DaskCluster) -> None:
    """Stop every process of the cluster, the workers under their nannies too:
    asked first (SIGTERM), so that each nanny's resource tracker unlinks the
    named semaphores of its workers (killed outright, they left 108 in
    /dev/shm a run), then killed, whatever is left."""
    # The workers first, while their scheduler answers: told of a scheduler that
    # went away first, they wait for it to come back.
    for group in (cluster.processes[1:], cluster.processes[:1]):
        for process in group:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in group:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in cluster.processes:
        try:
            tree = [process.pid, *(child.pid for child in
                                   psutil.Process(process.pid).children(recursive=True))]
        except psutil.Error:
            tree = [process.pid]
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()
        SESSION_PROCESSES.discard(process.pid)
