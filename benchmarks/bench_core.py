"""Core workloads: corral against the tools people would use instead, in the same run.

Each workload runs corral and its peers alternately, several times, and reports
the median time of each and the ratio peer/corral (above 1: corral is faster).
Machines here are noisy; ratios from one run are what to compare, not times.

    python benchmarks/bench_core.py                 # print the table
    python benchmarks/bench_core.py --write         # also refresh benchmarks/RESULTS.md

Workloads (all on 2 slots):
  noop-1000     1,000 calls of a no-op function, pools already warm, one submit() each
  map-1000      the same through map() (corral, ProcessPoolExecutor) and joblib.Parallel
  map-chunks    1,000 no-op calls through map(chunksize=100) (corral, ProcessPoolExecutor)
                and joblib.Parallel, which sizes its own batches
  map-auto      1,000 no-op calls through map(chunksize="auto") and joblib.Parallel
  map-100000    100,000 no-op calls through map() and joblib; the floor of making
                100,000 concurrent.futures.Future objects is printed beside them; then
                the same through map(chunksize=1000) (corral, ProcessPoolExecutor) and joblib,
                and through map(chunksize="auto") and joblib
  true-200      200 runs of `true` as separate processes
  dag-10000     a layered DAG of 10,000 no-op calls (100 layers x 100, 2 parents each)
  latency       submit -> result of one no-op call, median of 200 in a row
  sleep-100     100 calls of sleep(0.1): ideal is 5.0 s; also through map(chunksize="auto")
  import        `import corral` in a fresh interpreter, minus the interpreter's own start
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import graphlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import corral

SLOTS = 2


def noop() -> None:
    return None


def nap(*_: object) -> None:
    time.sleep(0.1)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# -- the workloads, one function per tool ------------------------------------------------

def noop_corral(scheduler: corral.Scheduler, count: int) -> None:
    handles = [scheduler.submit(noop) for _ in range(count)]
    for job in handles:
        job.result()


def noop_pool(pool: cf.ProcessPoolExecutor, count: int) -> None:
    futures = [pool.submit(noop) for _ in range(count)]
    for future in futures:
        future.result()


def noop_joblib(parallel, count: int) -> None:
    from joblib import delayed

    parallel(delayed(noop)() for _ in range(count))


def identity(value: int) -> int:
    return value


def map_corral(scheduler: corral.Scheduler, count: int, chunksize: int | str = 1) -> None:
    for _ in scheduler.map(identity, range(count), chunksize=chunksize):
        pass


def map_pool(pool: cf.ProcessPoolExecutor, count: int, chunksize: int = 1) -> None:
    for _ in pool.map(identity, range(count), chunksize=chunksize):
        pass


def map_joblib(parallel, count: int) -> None:
    from joblib import delayed

    parallel(delayed(identity)(number) for number in range(count))


def map_peers(scheduler: corral.Scheduler, pool: cf.ProcessPoolExecutor, parallel,
              count: int, chunksize: int = 1) -> dict[str, Callable[[], object]]:
    """The map workload of *count* calls for corral and ProcessPoolExecutor (in
    chunks of *chunksize*) and joblib (which sizes its own batches)."""
    return {
        "corral": lambda: map_corral(scheduler, count, chunksize),
        "ProcessPoolExecutor": lambda: map_pool(pool, count, chunksize),
        "joblib (loky)": lambda: map_joblib(parallel, count),
    }


def futures_floor(count: int) -> float:
    """Seconds to make *count* bare Futures and set their results: what one
    Future per call costs at least, whatever runs the calls."""
    start = time.perf_counter()
    futures = [cf.Future() for _ in range(count)]
    for future in futures:
        future.set_result(None)
    return time.perf_counter() - start


def true_corral(scheduler: corral.Scheduler, count: int) -> None:
    handles = [scheduler.shell(["true"]) for _ in range(count)]
    for job in handles:
        job.result()


def true_xargs(count: int) -> None:
    subprocess.run(["xargs", f"-P{SLOTS}", "-n1", "true"], input="\n".join(["x"] * count),
                   text=True, check=True)


def layered_dag(layers: int = 100, width: int = 100) -> dict[int, list[int]]:
    """node -> its parents: each node of a layer waits for two of the previous one."""
    graph: dict[int, list[int]] = {}
    for layer in range(layers):
        for i in range(width):
            node = layer * width + i
            parents = (i, (i + 1) % width)
            graph[node] = [] if layer == 0 else [(layer - 1) * width + j for j in parents]
    return graph


def dag_corral(scheduler: corral.Scheduler, graph: dict[int, list[int]],
               task: Callable[[], object] = noop) -> None:
    """The graph as corral jobs of *task*, dispatched at once, each waited for."""
    handles: dict[int, corral.Job] = {}
    for node, parents in graph.items():
        handles[node] = corral.Job(task, after=[handles[p] for p in parents] or None)
    scheduler.dispatch(handles.values())
    for job in handles.values():
        job.result()


def dag_graphlib(pool: cf.ProcessPoolExecutor, graph: dict[int, list[int]]) -> None:
    sorter = graphlib.TopologicalSorter(graph)
    sorter.prepare()
    running: dict[cf.Future, int] = {}
    while sorter.is_active():
        for node in sorter.get_ready():
            running[pool.submit(noop)] = node
        done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        for future in done:
            future.result()
            sorter.done(running.pop(future))


def latency(submit: Callable[[], cf.Future], rounds: int = 200) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        submit().result()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def sleep_corral(scheduler: corral.Scheduler) -> None:
    for job in [scheduler.submit(nap) for _ in range(100)]:
        job.result()


def sleep_corral_auto(scheduler: corral.Scheduler) -> None:
    """The sleeps through map(chunksize="auto"): each is longer than a chunk's
    time, so each should keep a job of its own and the slots stay full."""
    for _ in scheduler.map(nap, range(100), chunksize="auto"):
        pass


def sleep_pool(pool: cf.ProcessPoolExecutor) -> None:
    for future in [pool.submit(nap) for _ in range(100)]:
        future.result()


def import_time(rounds: int = 15) -> tuple[float, float]:
    """Median wall time of `python -c 'import corral'` and of `python -c pass`,
    run alternately (one after the other, the load changing between them made
    the difference negative in a cold review)."""
    def run(code: str) -> float:
        return timed(lambda: subprocess.run([sys.executable, "-c", code], check=True))
    pairs = [(run("import corral"), run("pass")) for _ in range(rounds)]
    return (statistics.median(with_corral for with_corral, _ in pairs),
            statistics.median(bare for _, bare in pairs))


# -- running them -------------------------------------------------------------------------

#: Per workload run: each tool's time in that run, for the spread of the ratios.
_RUNS: dict[str, list[dict[str, float]]] = {}


def median_of(repeat: int, actions: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Run the actions alternately *repeat* times; the median time of each.
    The runs are kept (see :func:`ratio_rows`) for the spread of the ratios."""
    runs = []
    for _ in range(repeat):
        runs.append({name: timed(action) for name, action in actions.items()})
    medians = {name: statistics.median(run[name] for run in runs) for name in actions}
    _RUNS[repr(medians)] = runs
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each workload (median kept)")
    parser.add_argument("--write", action="store_true", help="refresh benchmarks/RESULTS.md")
    parser.add_argument("--skip-sleep", action="store_true", help="skip the 5 s sleep workload")
    parser.add_argument("--skip-large", action="store_true",
                        help="skip the 100,000-call map workload (about a minute)")
    options = parser.parse_args()
    from joblib import Parallel

    rows: list[tuple[str, str, str, str]] = []
    graph = layered_dag()
    with corral.Scheduler(cores=SLOTS) as scheduler, \
            cf.ProcessPoolExecutor(SLOTS) as pool, \
            Parallel(n_jobs=SLOTS, backend="loky") as parallel:
        noop_corral(scheduler, 50)  # warm every pool up: start-up is not what we compare
        noop_pool(pool, 50)
        noop_joblib(parallel, 50)

        times = median_of(options.repeat, {
            "corral": lambda: noop_corral(scheduler, 1000),
            "ProcessPoolExecutor": lambda: noop_pool(pool, 1000),
            "joblib (loky)": lambda: noop_joblib(parallel, 1000),
        })
        rows += ratio_rows("1,000 no-op calls", times)

        times = median_of(options.repeat, map_peers(scheduler, pool, parallel, 1000))
        rows += ratio_rows("1,000 no-op calls through map()", times)

        times = median_of(options.repeat, map_peers(scheduler, pool, parallel, 1000, 100))
        rows += ratio_rows("1,000 no-op calls through map(chunksize=100) (joblib: its own "
                           "batches)", times)

        times = median_of(options.repeat, {
            "corral": lambda: map_corral(scheduler, 1000, "auto"),
            "joblib (loky)": lambda: map_joblib(parallel, 1000),
        })
        rows += ratio_rows('1,000 no-op calls through map(chunksize="auto") (joblib: its own '
                           'batches)', times)

        if not options.skip_large:
            times = median_of(options.repeat, {
                "corral": lambda: map_corral(scheduler, 100_000),
                "joblib (loky)": lambda: map_joblib(parallel, 100_000),
            })
            rows += ratio_rows("100,000 no-op calls through map()", times)
            floor = statistics.median(futures_floor(100_000) for _ in range(options.repeat))
            rows.append(("", "floor: 100,000 bare Futures made and set", f"{floor:.3f} s",
                         f"floor/corral = {floor / times['corral']:.3f}"))
            times = median_of(options.repeat,
                              map_peers(scheduler, pool, parallel, 100_000, 1000))
            rows += ratio_rows("100,000 no-op calls through map(chunksize=1,000) (joblib: its "
                               "own batches)", times)
            times = median_of(options.repeat, {
                "corral": lambda: map_corral(scheduler, 100_000, "auto"),
                "joblib (loky)": lambda: map_joblib(parallel, 100_000),
            })
            rows += ratio_rows('100,000 no-op calls through map(chunksize="auto") (joblib: '
                               'its own batches)', times)

        times = median_of(options.repeat, {
            "corral": lambda: true_corral(scheduler, 200),
            "xargs -P2": lambda: true_xargs(200),
        })
        rows += ratio_rows("200 `true` commands", times)

        times = median_of(max(3, options.repeat // 2), {
            "corral": lambda: dag_corral(scheduler, graph),
            "graphlib + ProcessPoolExecutor": lambda: dag_graphlib(pool, graph),
        })
        rows += ratio_rows("layered DAG, 10,000 no-op calls", times)

        rounds = [(latency(lambda: scheduler.submit(noop)), latency(lambda: pool.submit(noop)))
                  for _ in range(options.repeat)]  # alternating, as the other workloads
        corral_latency = statistics.median(ours for ours, _ in rounds)
        pool_latency = statistics.median(theirs for _, theirs in rounds)
        ahead = sum(ours <= theirs for ours, theirs in rounds)
        rows.append((f"submit -> result, one call (median of 200, {options.repeat} runs)",
                     "corral", f"{corral_latency * 1e3:.2f} ms",
                     f"ProcessPoolExecutor {pool_latency * 1e3:.2f} ms; corral as fast or "
                     f"faster in {ahead} of {options.repeat} runs"))

        if not options.skip_sleep:
            corral_sleep = timed(lambda: sleep_corral(scheduler))
            pool_sleep = timed(lambda: sleep_pool(pool))
            auto_sleep = timed(lambda: sleep_corral_auto(scheduler))
            rows.append(("100 x sleep(0.1) on 2 slots (ideal 5.00 s)", "corral",
                         f"{corral_sleep:.2f} s",
                         f"{(corral_sleep / 5.0 - 1) * 100:+.1f} % vs ideal; "
                         f"ProcessPoolExecutor {pool_sleep:.2f} s "
                         f"({(pool_sleep / 5.0 - 1) * 100:+.1f} %)"))
            rows.append(('the same through map(chunksize="auto")', "corral",
                         f"{auto_sleep:.2f} s", f"{(auto_sleep / 5.0 - 1) * 100:+.1f} % vs ideal"))

    with_corral, bare = import_time()
    rows.append(("`import corral` (fresh interpreter)", "corral",
                 f"{(with_corral - bare) * 1e3:.1f} ms",
                 f"interpreter start {bare * 1e3:.1f} ms, both {with_corral * 1e3:.1f} ms"))

    table = render(rows)
    print(table)
    if options.write:
        write_results(table, options)


def ratio_rows(workload: str, times: dict[str, float]) -> list[tuple[str, str, str, str]]:
    """Rows of a workload: corral's median, each peer's, and peer/corral of
    the medians with its spread over the runs (each run's own ratio)."""
    mine = times["corral"]
    runs = _RUNS.get(repr(times), [])
    rows = [(workload, "corral", f"{mine:.3f} s", f"{len(runs)} runs")]
    for name, value in times.items():
        if name != "corral":
            ratios = sorted(run[name] / run["corral"] for run in runs)
            spread = f" (runs: {ratios[0]:.2f} to {ratios[-1]:.2f})" if ratios else ""
            rows.append(("", name, f"{value:.3f} s", f"peer/corral = {value / mine:.2f}{spread}"))
    return rows


def render(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| workload | tool | median | comparison |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def write_results(table: str, options: argparse.Namespace) -> None:
    from results_file import machine_line, write_section

    command = "python benchmarks/bench_core.py --write" + (
        f" --repeat {options.repeat}" if options.repeat != 5 else "")
    write_section("core", f"## Core engine (local backend)\n\n{machine_line(command)}\n\n{table}")


if __name__ == "__main__":
    main()
