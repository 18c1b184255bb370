"""Where the time of small calls goes: two diagnostics behind RESULTS.md's notes.

    python benchmarks/diagnose_small_calls.py steps   # a lone call's round trip, step by step
    python benchmarks/diagnose_small_calls.py gc      # 1,000-call runs and the garbage collector

``steps`` stamps the wall clock (``time.time()``, comparable across processes) at
each hop of ``scheduler.submit(noop).result()``: the control loop taking the job,
the request written to the worker, the worker starting and ending the call (the
times its reply carries), the reply read, the Future set, ``result()`` returning.
It wraps a few of corral's internal methods to stamp them, so it measures the
code it runs, and costs a little itself; read the differences, not the total.

``gc`` runs 1,000 no-op calls through corral and through ProcessPoolExecutor
alternately and prints, per run, the ratio and how long the garbage collector
ran during corral's part (``gc.callbacks``), to tell a slow run caused by a full
collection from one caused by corral.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import corral
from bench_core import SLOTS, noop, noop_corral, noop_pool, timed


def steps(rounds: int) -> None:
    from corral.backends.local import backend as local_backend
    from corral.backends.local.backend import LocalBackend
    from corral.core.engine import Engine

    stamps: dict[str, float] = {}

    def stamp_around(owner: type, name: str, label: str, after: bool = False) -> None:
        original = getattr(owner, name)

        def stamped(*args, **kwargs):
            if not after:
                stamps.setdefault(label, time.time())
            value = original(*args, **kwargs)
            if after:
                stamps.setdefault(label, time.time())
            return value

        setattr(owner, name, stamped)

    stamp_around(Engine, "add", "the control loop takes the job")
    stamp_around(LocalBackend, "_send", "the request is written to the worker", after=True)
    stamp_around(LocalBackend, "_read_reply", "the control loop reads the reply")
    stamp_around(cf.Future, "set_result", "the Future is set")
    read_message = local_backend.read_message

    def read_and_stamp(data: bytes):
        message = read_message(data)
        if hasattr(message, "started"):
            stamps["the worker starts the call"] = message.started
            stamps["the call has returned"] = message.ended
        return message

    local_backend.read_message = read_and_stamp
    order = ["submit() returns", "the control loop takes the job",
             "the request is written to the worker", "the worker starts the call",
             "the call has returned", "the control loop reads the reply",
             "the Future is set", "result() returns"]
    samples: dict[str, list[float]] = {label: [] for label in order}
    with corral.Scheduler(cores=SLOTS) as scheduler:
        for _ in range(300):  # warm up: workers started, code paths taken
            scheduler.submit(noop).result()
        for _ in range(rounds):
            stamps.clear()
            began = time.time()
            job = scheduler.submit(noop)
            stamps["submit() returns"] = time.time()
            job.result()
            stamps["result() returns"] = time.time()
            for label in order:
                if label in stamps:
                    samples[label].append(stamps[label] - began)
    print("| step | µs after submit() was called |\n| --- | --- |")
    for label in order:
        print(f"| {label} | {statistics.median(samples[label]) * 1e6:.0f} |")


def collections(runs: int) -> None:
    spent = [0.0, 0, 0]  # seconds, collections, of which full ones
    began = [0.0]

    def watch(phase: str, info: dict) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        spent[0] += time.perf_counter() - began[0]
        spent[1] += 1
        spent[2] += info["generation"] == 2

    gc.callbacks.append(watch)
    with corral.Scheduler(cores=SLOTS) as scheduler, cf.ProcessPoolExecutor(SLOTS) as pool:
        noop_corral(scheduler, 50)
        noop_pool(pool, 50)
        for run in range(runs):
            spent[:] = [0.0, 0, 0]
            mine = timed(lambda: noop_corral(scheduler, 1000))
            collected = list(spent)
            theirs = timed(lambda: noop_pool(pool, 1000))
            print(f"run {run}: corral {mine * 1e3:.1f} ms (collector {collected[0] * 1e3:.1f} ms, "
                  f"{collected[1]} collections, {collected[2]} full), ProcessPoolExecutor "
                  f"{theirs * 1e3:.1f} ms, ratio {theirs / mine:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("steps", "gc"))
    parser.add_argument("--rounds", type=int, default=2000, help="round trips for 'steps'")
    parser.add_argument("--runs", type=int, default=10, help="1,000-call runs for 'gc'")
    options = parser.parse_args()
    if options.what == "steps":
        steps(options.rounds)
    else:
        collections(options.runs)


if __name__ == "__main__":
    main()
