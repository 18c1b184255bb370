"""corral on Dask against raw Dask, on the same cluster, in the same run.

Both drive one cluster, each through a Client of its own: raw Dask with
``client.submit`` / ``client.map`` as a user would write it, corral with
``Scheduler(backend="dask", address=...)``. The cluster is a
``distributed.LocalCluster`` (its scheduler runs in this process, as a user's
LocalCluster does) or, with ``--processes``, a ``dask scheduler`` and ``dask worker``
commands of their own (as on a real cluster), two workers either way, on loopback.
Each workload runs them alternately, several times; the table gives medians and
the ratio corral/raw (below 1.3 meets the target for calls; at most 1.0 for the DAG).

    python benchmarks/bench_dask.py              # print the table
    python benchmarks/bench_dask.py --write      # also refresh benchmarks/RESULTS.md
    python benchmarks/bench_dask.py --processes --write

Workloads:
  noop-1000   1,000 calls of a no-op function
  dag-10000   a layered DAG of 10,000 no-op calls (100 layers x 100, 2 parents each)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import corral
from bench_core import dag_corral, layered_dag  # the local backend's graph and driver

WORKERS, THREADS = 2, 1


def noop(*parents: object) -> None:
    return None


def noop_corral(scheduler: corral.Scheduler, count: int) -> None:
    for job in [scheduler.submit(noop) for _ in range(count)]:
        job.result()


def noop_dask_submit(client, count: int) -> None:
    client.gather([client.submit(noop, pure=False) for _ in range(count)])


def noop_dask_map(client, count: int) -> None:
    client.gather(client.map(noop, range(count), pure=False))


def dag_dask(client, graph: dict[int, list[int]]) -> None:
    """The whole graph at once, each node a submit with its parents' futures."""
    futures: dict[int, object] = {}
    for node, parents in graph.items():
        futures[node] = client.submit(noop, *[futures[p] for p in parents], pure=False)
    client.gather(list(futures.values()))


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_of(repeat: int, actions: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeat):
        for name, action in actions.items():
            samples[name].append(timed(action))
    return samples


def rows_for(workload: str, samples: dict[str, list[float]]) -> list[str]:
    mine = statistics.median(samples["corral"])
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        spread = f"{min(values):.2f}-{max(values):.2f} s"
        ratio = "" if name == "corral" else f"corral/raw = {mine / median:.2f}"
        rows.append(f"| {workload if name == 'corral' else ''} | {name} | {median:.3f} s "
                    f"| {spread} | {ratio} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each workload")
    parser.add_argument("--write", action="store_true", help="refresh benchmarks/RESULTS.md")
    parser.add_argument("--processes", action="store_true",
                        help="a dask scheduler and workers of their own, not a LocalCluster")
    options = parser.parse_args()
    with (commands_cluster() if options.processes else local_cluster()) as address:
        table = run_workloads(address, options.repeat)
    print(table)
    if options.write:
        from results_file import machine_line, write_section

        name, kind = (("dask-processes", "`dask scheduler` and 2 `dask worker` processes")
                      if options.processes else
                      ("dask", f"a LocalCluster, {WORKERS} worker processes x {THREADS} thread"))
        command = "python benchmarks/bench_dask.py --write" + (
            " --processes" if options.processes else "") + (
            f" --repeat {options.repeat}" if options.repeat != 5 else "")
        write_section(name, f"## Dask backend against raw Dask, on {kind}\n\n"
                            f"{machine_line(command)}\n\n{table}")


@contextlib.contextmanager
def local_cluster() -> Iterator[object]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=WORKERS, threads_per_worker=THREADS, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=logging.ERROR) as cluster:
        yield cluster


@contextlib.contextmanager
def commands_cluster() -> Iterator[str]:
    """``dask scheduler`` and ``dask worker`` started as commands (see tests/dask_cluster.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import dask_cluster

    with tempfile.TemporaryDirectory() as directory:
        cluster = dask_cluster.start(Path(directory), workers=(None,) * WORKERS)
        try:
            yield cluster.address
        finally:
            dask_cluster.stop(cluster)


def run_workloads(address: object, repeat: int) -> str:
    from distributed import Client

    graph = layered_dag()
    rows = ["| workload | tool | median | range | ratio |", "| --- | --- | --- | --- | --- |"]
    with Client(address, set_as_default=False) as client, \
            corral.Scheduler(backend="dask", address=address) as scheduler:
        noop_corral(scheduler, 50)  # warm up: corral's worker processes, imports
        noop_dask_submit(client, 50)
        rows += rows_for("1,000 no-op calls", median_of(repeat, {
            "corral": lambda: noop_corral(scheduler, 1000),
            "raw client.submit": lambda: noop_dask_submit(client, 1000),
            "raw client.map": lambda: noop_dask_map(client, 1000),
        }))
        rows += rows_for("layered DAG, 10,000 no-op calls", median_of(
            max(3, repeat // 2), {
                # this script's own no-op: Dask workers cannot import bench_core
                "corral": lambda: dag_corral(scheduler, graph, noop),
                "raw client.submit": lambda: dag_dask(client, graph),
            }))
    return "\n".join(rows)


if __name__ == "__main__":
    main()
