"""Job functions for the Slurm tests, and a user's script that drives a
journaled Slurm run (for the tests that SIGKILL the driver and run it again).

The functions live here, not in the test module, so that a Slurm job imports
a small module by reference (as it would a user's library), not pytest.

    python slurm_drivers.py chain RUN RELEASE SIDE kill|finish
    python slurm_drivers.py failchain RUN RELEASE kill|finish
    python slurm_drivers.py forgotten RUN RELEASE kill|finish

``chain`` submits a job that waits for RELEASE, a chain of two calls after it
and a shell command; ``failchain`` a job that waits for RELEASE and then
fails, and a call that depends on it; ``forgotten`` two jobs that wait for
RELEASE (the test cancels one of them in Slurm). With ``kill`` the driver waits until
every job has a Slurm id in the journal, prints the ids as one JSON line and
SIGKILLs itself; with ``finish`` it waits for every job and prints one JSON
line with the outcomes, native ids and how many times each Slurm command ran.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import corral
from journal_driver import fail_first_time  # noqa: F401  (a job of the Slurm tests too)

#: A job that waits for a file gives up after this long, so that a failed
#: test never leaves a job occupying the cluster for the following ones.
WAIT_LIMIT_S = 150.0


def wait_for(path: str, value=None, limit: float = WAIT_LIMIT_S):
    """Block until *path* exists (at most *limit* seconds); return *value*."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)
    return value


def wait_then_return(i: int, path: str) -> int:
    wait_for(path)
    return i


def square(x: int) -> int:
    return x * x


def add(*values: int) -> int:
    return sum(values)


def identity(value):
    return value


def read_env(*names: str) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names}


def talk(text: str) -> str:
    print(f"out {text}", flush=True)
    print(f"err {text}", file=sys.stderr, flush=True)
    return text


def raise_lookup(message: str) -> None:
    raise LookupError(message)


def sleep_for(seconds: float, value=None):
    time.sleep(seconds)
    return value


def maybe_fail(i: int, bad: int) -> int:
    print(f"call {i} out", flush=True)
    print(f"call {i} err", file=sys.stderr, flush=True)
    if i == bad:
        raise ArithmeticError(f"call {i} fails on purpose")
    return i * 10


def logged(side: str, name: str, value):
    """A side effect the tests count: one line in SIDE/name per run."""
    with open(os.path.join(side, name), "a") as handle:
        handle.write(f"ran in Slurm job {os.environ.get('SLURM_JOB_ID')}\n")
    return value


def wait_and_log(release: str, side: str, name: str, value):
    wait_for(release)
    return logged(side, name, value)


def log_and_add(side: str, name: str, value: int, plus: int) -> int:
    return logged(side, name, value + plus)


def say_then_wait(text: str, path: str) -> str:
    print(text, flush=True)
    print(f"{text} on stderr", file=sys.stderr, flush=True)
    return wait_for(path, text)


def where_and_env(*names: str) -> dict[str, str | None]:
    return {"cwd": os.getcwd(), **read_env(*names)}


def stop_when_asked(marker: str, started: str) -> str:
    Path(started).touch()
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not corral.abort_requested():
        if time.monotonic() > deadline:
            raise TimeoutError("never asked to stop")
        time.sleep(0.01)
    Path(marker).write_text("stopped cleanly")
    return "stopped"


def wait_then_fail(release: str) -> None:
    wait_for(release)
    raise ValueError("the parent fails on purpose")


# -- the driver ------------------------------------------------------------------------------


def _scheduler(run: str) -> corral.Scheduler:
    return corral.Scheduler(backend="slurm", journal=run, backend_options={"poll_interval": 0.2})


def _kill_once_journaled(run: str, jobs: list[corral.Job]) -> None:
    """Wait until the journal holds every job's Slurm id, print them, die by SIGKILL."""
    deadline = time.monotonic() + 60
    while True:
        stored = {str(job.id): job.native_id for job in corral.Scheduler.open(run).jobs()}
        if all(stored.get(str(job.id)) for job in jobs):
            break
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no native ids in the journal", "stored": stored}),
                  flush=True)
            sys.exit(3)
        time.sleep(0.05)
    print(json.dumps({str(job.id): stored[str(job.id)] for job in jobs}), flush=True)
    os.kill(os.getpid(), 9)


def _outcome(job: corral.Job) -> dict:
    try:
        value = job.result(timeout=120)
    except BaseException as error:  # reported to the test
        value = f"{type(error).__name__}: {error}"
    return {"id": str(job.id), "status": job.status.name, "reason": job.reason,
            "native_id": job.native_id, "value": value}


def _finish(sched: corral.Scheduler, jobs: list[corral.Job]) -> None:
    outcomes = [_outcome(job) for job in jobs]
    print(json.dumps({"jobs": outcomes}),
          flush=True)


def _chain(run: str, release: str, side: str, mode: str) -> None:
    with _scheduler(run) as sched:
        first = sched.submit(wait_and_log, release, side, "a", 10)
        second = sched.submit(log_and_add, side, "b", first, 1)
        third = sched.submit(log_and_add, side, "c", second, 1)
        command = sched.shell(f"echo ran >> '{side}/d'")
        jobs = [first, second, third, command]
        if mode == "kill":
            _kill_once_journaled(run, jobs)
        _finish(sched, jobs)


def _failchain(run: str, release: str, mode: str) -> None:
    with _scheduler(run) as sched:
        parent = sched.submit(wait_then_fail, release)
        child = sched.submit(add, parent, 1)
        jobs = [parent, child]
        if mode == "kill":
            _kill_once_journaled(run, jobs)
        _finish(sched, jobs)


def _forgotten(run: str, release: str, mode: str) -> None:
    with _scheduler(run) as sched:
        done = sched.submit(wait_for, release, "done")
        doomed = sched.submit(wait_for, release + ".never", "doomed")
        jobs = [done, doomed]
        if mode == "kill":
            _kill_once_journaled(run, jobs)
        _finish(sched, jobs)


if __name__ == "__main__":
    # Through the module, not __main__: the jobs then import their functions by reference.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import slurm_drivers

    {"chain": slurm_drivers._chain, "failchain": slurm_drivers._failchain,
     "forgotten": slurm_drivers._forgotten}[sys.argv[1]](*sys.argv[2:])
