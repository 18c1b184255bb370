"""A user's script that drives a journaled run, for tests that kill it or read
it from another process. ``test_journal`` also imports its job functions, so
that workers import them by reference.

    python journal_driver.py squares RUN SIDE GATES COUNT FREE DELAY
    python journal_driver.py mixed RUN RELEASE
    python journal_driver.py private RUN

``squares`` runs COUNT jobs; job i sleeps DELAY s, appends a line to
``SIDE/<i>`` and returns i*i. Jobs from number FREE on first wait at a gate:
they write their job id to ``GATES/<i>.waiting`` and go on once ``GATES/<i>`` or
``GATES/all`` exists, so a test knows exactly which jobs are mid-flight when
it kills the driver. The results are printed as one JSON line at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import corral


def square_once(i: int, side: str, gates: str, free: int, delay: float) -> int:
    time.sleep(delay)
    if i >= free:
        marker = os.path.join(gates, f"{i}.waiting")  # holds the job's id, written atomically
        Path(f"{marker}.partial").write_text(os.environ["CORRAL_JOB_ID"])
        os.replace(f"{marker}.partial", marker)
        while not (os.path.exists(os.path.join(gates, str(i)))
                   or os.path.exists(os.path.join(gates, "all"))):
            time.sleep(0.005)
    with open(os.path.join(side, str(i)), "a") as handle:
        handle.write(f"ran in pid {os.getpid()}\n")
    return i * i


def logged_square(log: str, value: int) -> int:
    """A side effect that tests count: one line in *log* per run of the job."""
    with open(log, "a") as handle:
        handle.write(f"{value}\n")
    return value * value


def fail_first_time(counter: str) -> str:
    path = Path(counter)
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls == 1:
        raise RuntimeError("failing on purpose, first call")
    return f"call {calls}"


def _squares(run: str, side: str, gates: str, count: str, free: str, delay: str) -> None:
    with corral.Scheduler(cores=2, journal=run) as scheduler:
        futures = [scheduler.submit(square_once, i, side, gates, int(free), float(delay))
                   for i in range(int(count))]
        print(json.dumps([future.result() for future in futures]), flush=True)


def _mixed(run: str, release: str) -> None:
    import jobs

    with corral.Scheduler(cores=2, journal=run) as scheduler:
        scheduler.submit(jobs.square, 7)                            # job 1: completes
        scheduler.submit(jobs.raise_custom, "bad input")            # job 2: fails
        scheduler.submit(jobs.talk, "hello")                        # job 3: prints
        blocker = scheduler.submit(jobs.wait_for_file, release, "late")  # job 4: blocks
        scheduler.submit(jobs.identity, blocker)                    # job 5: waits for 4
        scheduler.wait()
    print("finished", flush=True)


def _private(run: str) -> None:
    import jobs

    with corral.Scheduler(cores=1, journal=run) as scheduler:
        scheduler.submit(jobs.talk, "secret")
        scheduler.shell("echo command output; echo command error >&2")
        scheduler.wait()


if __name__ == "__main__":
    {"squares": _squares, "mixed": _mixed, "private": _private}[sys.argv[1]](*sys.argv[2:])
