"""The SGE backend on a real one-node Grid Engine: bundling speed-up and command counts.

    python benchmarks/bench_sge.py            # print the tables
    python benchmarks/bench_sge.py --write    # also refresh benchmarks/RESULTS.md

It starts Grid Engine with the project's script (scripts/sge, through
tests/sge_cluster.py; root and apt needed) with as many slots as this machine
has cores, and stops it at the end. Every SGE command goes through a wrapper on
PATH that logs its name and time, so the counts are those of the real binaries.

Workloads, in the same run: 400 calls of a 10 ms function, one SGE array task
per call and with ``bundle=50``; then a 200-call run (one task per call): how
many qsub, qstat, qacct and qconf calls it made against the poll intervals it lasted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import corral  # noqa: E402
import sge_cluster  # noqa: E402
from results_file import machine_line, write_section  # noqa: E402

COMMANDS = ("qsub", "qstat", "qacct", "qconf", "qdel")
POLL_S = 0.5


def ten_ms(index: int) -> int:
    time.sleep(0.01)
    return index


def wrap_commands(directory: Path) -> Path:
    """Wrappers first on PATH that log each SGE command's name and time."""
    log, bin_dir = directory / "calls.log", directory / "bin"
    bin_dir.mkdir()
    for name in COMMANDS:
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\necho "{name} $(date +%s.%N)" >> "{log}"\n'
                           f'exec "{shutil.which(name)}" "$@"\n')
        wrapper.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return log


def take(log: Path) -> list[tuple[str, float]]:
    """The calls logged since the last take."""
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    log.unlink()
    return [(line.split()[0], float(line.split()[1])) for line in lines if line.strip()]


def run_corral(count: int, bundle: int, workdir: Path) -> float:
    started = time.perf_counter()
    with corral.Scheduler(backend="sge", workdir=workdir,
                          backend_options={"poll_interval": POLL_S}) as scheduler:
        submit = scheduler.options(bundle=bundle).submit
        scheduler.pause()  # so that all go out in one dispatch
        jobs = [submit(ten_ms, index) for index in range(count)]
        scheduler.resume()
        assert [job.result(timeout=1800) for job in jobs] == list(range(count))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--write", action="store_true")
    options = parser.parse_args()
    reason = sge_cluster.why_sge_cannot_run()
    if reason:
        sys.exit(f"bench_sge: {reason}")
    slots = os.cpu_count() or 2
    cluster = sge_cluster.start(slots=slots)
    scratch = Path(tempfile.mkdtemp(prefix="corral-bench-sge-"))
    try:
        log = wrap_commands(scratch)
        rows = []
        for label, bundle in (("corral, one SGE array task per call", 1),
                              ("corral, bundle=50", 50)):
            seconds = run_corral(options.calls, bundle, scratch / f"b{bundle}")
            counts = Counter(name for name, _ in take(log))
            rows.append((label, seconds, counts))
            print(f"{label}: {seconds:.1f} s {dict(counts)}", flush=True)
        two_hundred = run_corral(200, 1, scratch / "two-hundred")
        logged = take(log)
    finally:
        sge_cluster.stop(cluster)
        shutil.rmtree(scratch, ignore_errors=True)
    counts = Counter(name for name, _ in logged)
    gaps = [b - a for a, b in pairwise(sorted(t for name, t in logged if name == "qstat"))]
    bundled = rows[-1][1]
    table = [f"| {options.calls} × 10 ms calls | time | vs corral bundle=50 | qsub | qstat "
             "| qacct | qconf |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, seconds, counted in rows:
        table.append(f"| {label} | {seconds:.1f} s | {seconds / bundled:.1f}× | "
                     + " | ".join(str(counted.get(name, 0))
                                  for name in ("qsub", "qstat", "qacct", "qconf")) + " |")
    intervals = two_hundred / POLL_S
    table += ["", "| 200-call run (one task per call) | value |", "| --- | --- |",
              f"| wall time | {two_hundred:.1f} s |",
              f"| poll intervals it lasted ({POLL_S} s) | {intervals:.0f} |",
              f"| qstat calls | {counts.get('qstat', 0)} (≤ 1 per interval: "
              f"{'yes' if counts.get('qstat', 0) <= intervals + 1 else 'NO'}) |",
              f"| shortest gap between two qstat calls | {min(gaps) if gaps else 0:.2f} s |",
              f"| qsub calls | {counts.get('qsub', 0)} (one array) |",
              f"| qacct calls | {counts.get('qacct', 0)} (only for jobs without a result) |",
              f"| qconf calls | {counts.get('qconf', 0)} (cluster settings, read once) |"]
    text = "\n".join(table)
    print(text)
    if options.write:
        header = (f"## SGE backend\n\n{machine_line('python benchmarks/bench_sge.py --write')} "
                  f"One-node Son of Grid Engine 8.1.9 with {slots} slots, accounting on.\n\n")
        write_section("sge", header + text)


if __name__ == "__main__":
    main()
