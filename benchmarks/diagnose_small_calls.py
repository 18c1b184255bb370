"""Where the time of small calls goes: the diagnostics behind RESULTS.md's notes.

    python benchmarks/diagnose_small_calls.py steps    # a lone call's round trip, step by step
    python benchmarks/diagnose_small_calls.py gc       # 1,000-call runs and the garbage collector
    python benchmarks/diagnose_small_calls.py journal  # the journal's own work per job
    python benchmarks/diagnose_small_calls.py cpu      # a round trip's CPU, by thread, vs its peer
    python benchmarks/diagnose_small_calls.py journal-cpu  # no-op calls' CPU by thread, both ways
    python benchmarks/diagnose_small_calls.py linger   # lone round trips, workers lingering or not

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

``cpu`` runs lone round trips (``submit(noop).result()``) through corral and through
ProcessPoolExecutor, in turns, and prints for each what a round trip costs in CPU:
the submitting thread in ``submit()`` and in ``result()`` (``time.thread_time``),
each driver thread (``/proc/self/task``) and the worker processes. The wall time
of a lone round trip is the sum of what lies on its path, so where the CPU goes
says where the latency goes.

``journal`` times, each alone with warm caches (the fastest of 7 repeats), the
work a journaled run adds to the driver for every job: its key and slot, its
description, recording it and its four state changes, and its share of a
batch's rows and pickling for the writer process. It sets their sum against a
no-op job's whole cost without a journal, measured in the same run: what
"the journal within 10 %" leaves for all of it.

``linger`` runs lone round trips (``submit(noop).result()``) through a
Scheduler whose workers wait awake a moment after a lone job (the default,
see ``corral.runtime.worker.LINGER_S``) and through one whose workers never
do, in turns, with no pause between round trips and with a 1 ms pause: the
round trip's median and what the workers' CPU cost for each.

``journal-cpu`` runs 20,000 no-op submits at a time through a journaled and a
plain scheduler, in turns, and prints what each job cost in CPU on each driver
thread and, for the journaled one, in its writer process: the journal's cost
as the run pays it, caches cold, where ``journal`` times its pieces warm.
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
    from corral.core.lean_future import LeanFuture

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
    # A job's Future is corral's own (core/lean_future.py), not cf.Future.
    stamp_around(LeanFuture, "_resolve", "the Future is set", after=True)
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


def journal_work(repeats: int = 7, number: int = 20_000) -> None:
    import pickle
    import tempfile
    import timeit

    from corral.core.identity import describe, job_digests
    from corral.journal.eventlog import EventColumns
    from corral.journal.store import Journal
    from corral.status import JobStatus as S

    with tempfile.TemporaryDirectory() as scratch:
        with corral.Scheduler(cores=SLOTS, journal=Path(scratch, "run")) as scheduler:
            handle = scheduler.submit(noop)
            handle.result()
        job = handle._record  # the engine's record of a finished no-op call
        journal = Journal(Path(scratch, "timed"))

        def fastest(work, per: int = 1) -> float:
            return min(timeit.repeat(work, number=number, repeat=repeats)) / number / per

        def record() -> None:
            journal.added(job, *job.journal_entry)
            journal.moved(job, None, S.QUEUED, None)
            journal.moved(job, S.QUEUED, S.SUBMITTED, None)
            journal.moved(job, S.SUBMITTED, S.RUNNING, None)
            journal.moved(job, S.RUNNING, S.COMPLETED, None)

        def forget() -> None:  # nothing timed here reaches the writer
            journal._new_jobs, journal._dirty, journal._events = [], {}, EventColumns()

        parts = {"the job's key and slot (`job_digests`)": fastest(lambda: job_digests(job)),
                 "its description: kind, command, spec as JSON": fastest(lambda: describe(job))}
        parts["recording it and its 4 state changes"] = fastest(record)
        forget()
        for _ in range(100):
            record()

        def batch() -> bytes:
            rows = [(job.status.value, job.reason, job.exit_code, job.attempts, job.native_id,
                     job.started, job.ended, job.jobdir, job.result_blob, job.error_blob, None,
                     str(job.id)) for _ in range(100)]
            return pickle.dumps(("jobs", journal._new_jobs, journal._events.message(), rows),
                                pickle.HIGHEST_PROTOCOL)

        parts["its share of a batch of 100: rows and pickling"] = fastest(batch, per=100)
        forget()
        journal.close()
    with corral.Scheduler(cores=SLOTS) as scheduler:
        noop_corral(scheduler, 50)
        per_job = statistics.median(timed(lambda: noop_corral(scheduler, 1000)) / 1000
                                    for _ in range(5))
    print("| the journal's work per job, alone | µs |\n| --- | --- |")
    for label, seconds in parts.items():
        print(f"| {label} | {seconds * 1e6:.2f} |")
    total = sum(parts.values())
    print(f"| all of it | {total * 1e6:.2f} |")
    print(f"\na no-op job without a journal: {per_job * 1e6:.1f} µs (1,000 submits, median of 5); "
          f"10 % of it is {per_job * 1e5:.1f} µs; the journal's work alone is "
          f"{total / per_job * 100:.0f} % of it")


def _threads_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by its Python name."""
    import threading

    import psutil

    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    return {names.get(thread.id, str(thread.id)): thread.user_time + thread.system_time
            for thread in psutil.Process().threads()}


def round_trip_cpu(rounds: int, turns: int = 3) -> None:
    import psutil

    def measure(label: str, submit) -> None:
        workers = psutil.Process().children(recursive=True)
        threads, children = _threads_cpu(), sum(sum(w.cpu_times()[:2]) for w in workers)
        in_submit = in_result = 0.0
        for _ in range(rounds):
            began = time.thread_time()
            future = submit()
            submitted = time.thread_time()
            future.result()
            in_submit += submitted - began
            in_result += time.thread_time() - submitted
        after = _threads_cpu()
        spent = {name: (after[name] - threads.get(name, 0.0)) / rounds * 1e6 for name in after}
        workers_spent = (sum(sum(w.cpu_times()[:2]) for w in workers) - children) / rounds * 1e6
        shown = ", ".join(f"{name} {value:.0f}" for name, value in spent.items() if value >= 1)
        print(f"{label}: submit() {in_submit / rounds * 1e6:.0f} µs, result() "
              f"{in_result / rounds * 1e6:.0f} µs; threads: {shown} µs; workers "
              f"{workers_spent:.0f} µs (a round trip, CPU)")

    with corral.Scheduler(cores=SLOTS) as scheduler, cf.ProcessPoolExecutor(SLOTS) as pool:
        for _ in range(300):  # warm up: workers started, code paths taken
            scheduler.submit(noop).result()
            pool.submit(noop).result()
        for _ in range(turns):
            measure("corral", lambda: scheduler.submit(noop))
            measure("ProcessPoolExecutor", lambda: pool.submit(noop))


def journal_cpu(turns: int = 3, number: int = 20_000) -> None:
    import tempfile
    import threading

    import psutil

    def by_id() -> dict[int, float]:
        return {thread.id: thread.user_time + thread.system_time
                for thread in psutil.Process().threads()}

    def measure(label: str, scheduler: corral.Scheduler, writer: psutil.Process | None) -> None:
        # (by thread id: both schedulers' loop threads have one name)
        loop = scheduler._engine._thread.native_id
        threads = by_id()
        wrote = sum(writer.cpu_times()[:2]) if writer is not None else 0.0
        began = time.perf_counter()
        for job in [scheduler.submit(noop) for _ in range(number)]:
            job.result()
        elapsed = time.perf_counter() - began
        if writer is not None:
            scheduler._engine.call(scheduler._journal.flush, True)  # all of it written
        after = by_id()
        caller = (after[threading.get_native_id()] - threads[threading.get_native_id()])
        others = sum(after[tid] - threads.get(tid, 0.0) for tid in after
                     if tid not in (loop, threading.get_native_id()))
        spent = {"caller": caller, "control loop": after[loop] - threads[loop],
                 "other threads": others}
        shown = ", ".join(f"{name} {value / number * 1e6:.0f}" for name, value in spent.items())
        if writer is not None:
            shown += f", writer process {(sum(writer.cpu_times()[:2]) - wrote) / number * 1e6:.0f}"
        print(f"{label}: {elapsed / number * 1e6:.0f} µs a job; CPU a job: {shown} µs")

    with tempfile.TemporaryDirectory() as scratch, corral.Scheduler(cores=SLOTS) as plain, \
            corral.Scheduler(cores=SLOTS, journal=Path(scratch, "run")) as journaled:
        for scheduler in (plain, journaled):
            noop_corral(scheduler, 50)
        journaled._engine.call(journaled._journal.flush, True)
        writer = psutil.Process(journaled._journal._writer.pid)
        for _ in range(turns):
            measure("journal off", plain, None)
            measure("journal on ", journaled, writer)


def linger(rounds: int, turns: int = 5) -> None:
    """Lone round trips with workers that linger after a lone job (the
    default) and with workers that never do (CORRAL_WORKER_LINGER_S=0), in
    turns, each a fresh Scheduler; with no pause between round trips and
    with a 1 ms pause, where lingering catches nothing and must cost nothing."""
    import os

    import psutil

    from corral.runtime.worker_process import LINGER_VARIABLE

    def measure(pause: float) -> tuple[float, float]:
        with corral.Scheduler(cores=SLOTS) as scheduler:
            for _ in range(300):  # warm up: workers started, code paths taken
                scheduler.submit(noop).result()
            workers = psutil.Process().children(recursive=True)
            worked = sum(sum(worker.cpu_times()[:2]) for worker in workers)
            samples = []
            for _ in range(rounds):
                began = time.perf_counter()
                scheduler.submit(noop).result()
                samples.append(time.perf_counter() - began)
                if pause:
                    time.sleep(pause)
            worked = sum(sum(worker.cpu_times()[:2]) for worker in workers) - worked
        return statistics.median(samples), worked / rounds

    for pause in (0.0, 0.001):
        figures: dict[str, list[tuple[float, float]]] = {"lingering": [], "never": []}
        for _ in range(turns):
            for label, setting in (("lingering", None), ("never", "0")):
                if setting is None:
                    os.environ.pop(LINGER_VARIABLE, None)
                else:
                    os.environ[LINGER_VARIABLE] = setting
                figures[label].append(measure(pause))
        os.environ.pop(LINGER_VARIABLE, None)
        for label, runs in figures.items():
            print(f"pause {pause * 1e3:g} ms, workers {label}: round trip "
                  f"{statistics.median(run[0] for run in runs) * 1e6:.0f} µs (runs: "
                  + ", ".join(f"{run[0] * 1e6:.0f}" for run in runs)
                  + f"), worker CPU {statistics.median(run[1] for run in runs) * 1e6:.0f} µs "
                  "a round trip (medians of "
                  f"{turns} turns of {rounds})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("steps", "gc", "journal", "cpu", "journal-cpu",
                                         "linger"))
    parser.add_argument("--rounds", type=int, default=2000,
                        help="round trips for 'steps', 'cpu' and 'linger'")
    parser.add_argument("--runs", type=int, default=10, help="1,000-call runs for 'gc'")
    options = parser.parse_args()
    if options.what == "steps":
        steps(options.rounds)
    elif options.what == "gc":
        collections(options.runs)
    elif options.what == "cpu":
        round_trip_cpu(options.rounds)
    elif options.what == "journal-cpu":
        journal_cpu()
    elif options.what == "linger":
        linger(options.rounds)
    else:
        journal_work()


if __name__ == "__main__":
    main()
