"""The Slurm backend on a real one-node Slurm: bundling speed-up and command counts.

    python benchmarks/bench_slurm.py            # print the tables
    python benchmarks/bench_slurm.py --write    # also refresh benchmarks/RESULTS.md

It starts a private cluster with the project's script (scripts/slurm, through
tests/slurm_cluster.py; root and apt needed), with as many CPU slots as this
machine has cores, so Slurm's real per-job cost shows. Every Slurm command
goes through a wrapper on PATH that logs its name and time, so the counts are
those of the real binaries, whoever called them.

Workloads, in the same run:

* 400 calls of a 10 ms function: corral one Slurm job per call (arrays),
  corral with ``bundle=50``, and submitit's ``map_array`` (the peer);
* a 200-call run (one job per call): how many sbatch, squeue, sacct and
  scontrol calls it made, against the number of poll intervals it lasted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import tempfile
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import corral  # noqa: E402
import slurm_cluster  # noqa: E402
from results_file import machine_line, write_section  # noqa: E402

COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")
POLL_S = 0.5


def ten_ms(index: int) -> int:
    time.sleep(0.01)
    return index


class CommandLog:
    """Wrappers for the Slurm commands that log each call, first on PATH."""

    def __init__(self, directory: Path) -> None:
        self.log = directory / "calls.log"
        bin_dir = directory / "bin"
        bin_dir.mkdir()
        for name in COMMANDS:
            real = shutil.which(name)
            wrapper = bin_dir / name
            wrapper.write_text(f'#!/bin/sh\necho "{name} $(date +%s.%N)" >> "{self.log}"\n'
                               f'exec "{real}" "$@"\n')
            wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"

    def take(self) -> list[tuple[str, float]]:
        """The calls logged since the last take."""
        if not self.log.exists():
            return []
        lines = self.log.read_text().split("\n")
        self.log.unlink()
        return [(line.split()[0], float(line.split()[1])) for line in lines if line.strip()]


def run_corral(count: int, bundle: int, workdir: Path) -> tuple[float, list[int]]:
    started = time.perf_counter()
    with corral.Scheduler(backend="slurm", workdir=workdir,
                          backend_options={"poll_interval": POLL_S}) as scheduler:
        submit = scheduler.options(bundle=bundle).submit
        scheduler.pause()  # so that all go out in one dispatch
        jobs = [submit(ten_ms, index) for index in range(count)]
        scheduler.resume()
        results = [job.result(timeout=1800) for job in jobs]
    return time.perf_counter() - started, results


def run_submitit(count: int, folder: Path) -> tuple[float, list[int]] | None:
    try:
        import submitit
    except ImportError:
        return None
    started = time.perf_counter()
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(timeout_min=10, slurm_partition="debug")
    jobs = executor.map_array(ten_ms, range(count))
    results = [job.result() for job in jobs]
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--write", action="store_true")
    options = parser.parse_args()
    reason = slurm_cluster.why_slurm_cannot_run()
    if reason:
        sys.exit(f"bench_slurm: {reason}")
    cpus = os.cpu_count() or 2
    cluster = slurm_cluster.start(accounting=False, cpus=cpus)
    os.environ["SLURM_CONF"] = cluster.conf
    scratch = Path(tempfile.mkdtemp(prefix="corral-bench-slurm-"))
    try:
        calls = CommandLog(scratch)
        expected = list(range(options.calls))
        rows = []
        for label, runner in (
                ("corral, one Slurm job per call",
                 lambda: run_corral(options.calls, 1, scratch / "one")),
                ("corral, bundle=50", lambda: run_corral(options.calls, 50, scratch / "bundled")),
                ("submitit map_array (peer)",
                 lambda: run_submitit(options.calls, scratch / "submitit"))):
            outcome = runner()
            if outcome is None:
                continue
            seconds, results = outcome
            assert results == expected, f"{label}: wrong results"
            counts = Counter(name for name, _ in calls.take())
            rows.append((label, seconds, counts))
            print(f"{label}: {seconds:.1f} s {dict(counts)}", flush=True)
        two_hundred, _ = run_corral(200, 1, scratch / "two-hundred")
        logged = calls.take()
        counts = Counter(name for name, _ in logged)
        squeue_times = sorted(t for name, t in logged if name == "squeue")
        gaps = [b - a for a, b in pairwise(squeue_times)]
        print(f"200 calls: {two_hundred:.1f} s {dict(counts)} min squeue gap "
              f"{min(gaps) if gaps else 0:.2f} s", flush=True)
    finally:
        slurm_cluster.stop(cluster)
        shutil.rmtree(scratch, ignore_errors=True)
    bundled = next(seconds for label, seconds, _ in rows if "bundle" in label)
    table = ["| 400 × 10 ms calls | time | vs corral bundle=50 "
             "| sbatch | squeue | sacct | scontrol |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, seconds, counted in rows:
        table.append(f"| {label} | {seconds:.1f} s | {seconds / bundled:.1f}× | "
                     + " | ".join(str(counted.get(name, 0))
                                  for name in ("sbatch", "squeue", "sacct", "scontrol")) + " |")
    intervals = two_hundred / POLL_S
    table += ["", "| 200-call run (one job per call) | value |", "| --- | --- |",
              f"| wall time | {two_hundred:.1f} s |",
              f"| poll intervals it lasted ({POLL_S} s) | {intervals:.0f} |",
              f"| squeue calls | {counts.get('squeue', 0)} (≤ 1 per interval: "
              f"{'yes' if counts.get('squeue', 0) <= intervals + 1 else 'NO'}) |",
              f"| shortest gap between two squeue calls | {min(gaps) if gaps else 0:.2f} s |",
              f"| sbatch calls | {counts.get('sbatch', 0)} (arrays of up to MaxArraySize) |",
              f"| sacct calls (accounting off) | {counts.get('sacct', 0)} |",
              f"| scontrol calls | {counts.get('scontrol', 0)} (cluster settings, read once) |"]
    text = "\n".join(table)
    print(text)
    if options.write:
        header = (f"## Slurm backend\n\n{machine_line('python benchmarks/bench_slurm.py --write')} "
                  f"One-node Slurm 22.05 with {cpus} CPU slots, accounting off.\n\n")
        write_section("slurm", header + text)


if __name__ == "__main__":
    main()
