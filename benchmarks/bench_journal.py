"""The journal's cost: the core workloads with ``journal=`` on and off, in the same run.

The journal writes once per control-loop iteration (one SQLite transaction in
WAL mode) and has the worker write each Python call's outcome to its job
directory before reporting it. The target (issue 3): within 10 % of the
figures without the journal.

    python benchmarks/bench_journal.py            # print the table
    python benchmarks/bench_journal.py --write    # also refresh benchmarks/RESULTS.md

Two schedulers, one journaled, are started and warmed up once (workers and
the journal's writer process running), then run each workload alternately;
each figure is the median of --repeat runs. Jobs submitted again within one
session are new jobs (their keys are numbered), so nothing is restored.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import corral
from bench_core import (SLOTS, dag_corral, latency, layered_dag, map_corral, noop, noop_corral,
                        sleep_corral, timed, true_corral)
from results_file import machine_line, write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    options = parser.parse_args()
    graph = layered_dag()
    workloads: dict[str, Callable[[corral.Scheduler], object]] = {
        "1,000 no-op calls": lambda s: noop_corral(s, 1000),
        "100,000 no-op calls, map(chunksize=1,000)": lambda s: map_corral(s, 100_000, 1000),
        '100,000 no-op calls, map(chunksize="auto")': lambda s: map_corral(s, 100_000, "auto"),
        "200 `true` commands": lambda s: true_corral(s, 200),
        "layered DAG, 10,000 no-op calls": lambda s: dag_corral(s, graph),
        "submit -> result, one call (x200)": lambda s: latency(lambda: s.submit(noop)),
        "100 x sleep(0.1) on 2 slots": sleep_corral,
    }
    scratch = Path(tempfile.mkdtemp(prefix="corral-bench-journal-"))
    rows = []
    try:
        with corral.Scheduler(cores=SLOTS) as plain, \
                corral.Scheduler(cores=SLOTS, journal=scratch / "run") as journaled:
            for scheduler in (plain, journaled):
                noop_corral(scheduler, 50)  # warm: start-up is not what we compare
            journaled._engine.call(journaled._journal.flush, True)  # the writer is up
            for name, workload in workloads.items():
                samples: dict[bool, list[float]] = {False: [], True: []}
                repeat = options.repeat if "sleep" not in name else max(2, options.repeat // 3)
                for _ in range(repeat):
                    for journal, scheduler in ((False, plain), (True, journaled)):
                        samples[journal].append(timed(partial(workload, scheduler)))
                off, on = (statistics.median(samples[flag]) for flag in (False, True))
                rows.append((name, off, on))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines = ["| workload | journal off | journal on | on/off |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {off:.3f} s | {on:.3f} s | {on / off:.2f} |" for name, off, on in rows]
    table = "\n".join(lines)
    print(table)
    if options.write:
        write_results(table, options)


def write_results(table: str, options: argparse.Namespace) -> None:
    command = "python benchmarks/bench_journal.py --write" + (
        f" --repeat {options.repeat}" if options.repeat != 5 else "")
    write_section("journal", f"## The journal's cost\n\n{machine_line(command)} Same workloads "
                  "as above, `Scheduler(journal=...)` on and off, alternating, medians of "
                  f"{options.repeat}. Target: on/off within 1.10.\n\n{table}")


if __name__ == "__main__":
    main()
