"""A batch backend on a real one-node cluster: bundling speed-up and command counts.

    python benchmarks/bench_batch.py slurm            # print the tables
    python benchmarks/bench_batch.py sge --write      # also refresh benchmarks/RESULTS.md
    python benchmarks/bench_batch.py openpbs --write

It starts the scheduler with the project's script (scripts/<scheduler>, through
tests/<scheduler>_cluster.py; root and apt needed), with as many CPU slots as this
machine has cores, so the scheduler's real per-job cost shows, and stops it at the
end. Every scheduler command goes through a wrapper first on PATH that logs its name
and time, so the counts are those of the real binaries, whoever called them.

Workloads, in the same run:

* 400 calls of a 10 ms function: corral one batch job (array task) per call,
  corral with ``bundle=50``, and, on Slurm, submitit's ``map_array`` (the peer);
* a 200-call run (one job per call): how many submit, status, accounting and
  configuration commands it made, against the number of poll intervals it lasted;
* with ``--pairs N`` (Slurm): corral one batch job per call and submitit, alternately,
  N times (``--pair-calls`` each), since one run of each is no comparison here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import corral  # noqa: E402
from results_file import machine_line, write_section  # noqa: E402
from support.commandlog import logged_calls, wrap_commands  # noqa: E402

POLL_S = 0.5


@dataclass(frozen=True)
class Bench:
    """One scheduler as this benchmark drives it."""

    backend: str
    title: str
    #: The tests' module that starts and stops it, and its function that says why
    #: it cannot run here (None: it can).
    cluster_module: str
    why_not: str
    start: Callable[[Any, int], Any]  # (module, cpus) -> cluster
    #: Its commands: submit, status, accounting (None: it has none), configuration.
    submit: str
    status: str
    accounting: str | None
    configuration: str
    described: str  # the cluster, for the section's header
    peer: Callable[[int, Path], tuple[float, list[int]] | None] | None = None

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(name for name in (self.submit, self.status, self.accounting,
                                       self.configuration) if name is not None)


def ten_ms(index: int) -> int:
    time.sleep(0.01)
    return index


def submitit_map_array(count: int, folder: Path) -> tuple[float, list[int]] | None:
    """submitit's ``map_array`` of the same calls, on Slurm (None: not installed)."""
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


BENCHES = {
    "slurm": Bench("slurm", "Slurm", "slurm_cluster", "why_slurm_cannot_run",
                   lambda module, cpus: module.start(accounting=False, cpus=cpus),
                   "sbatch", "squeue", "sacct", "scontrol",
                   "One-node Slurm 22.05, accounting off.", submitit_map_array),
    "sge": Bench("sge", "Grid Engine", "sge_cluster", "why_sge_cannot_run",
                 lambda module, cpus: module.start(slots=cpus),
                 "qsub", "qstat", "qacct", "qconf",
                 "One-node Son of Grid Engine 8.1.9, accounting on."),
    "openpbs": Bench("pbs", "OpenPBS", "openpbs_cluster", "why_openpbs_cannot_run",
                     lambda module, cpus: module.start(cpus=cpus),
                     "qsub", "qstat", None, "qmgr",
                     "One-node OpenPBS 23.06 (built from source), job history on."),
}


def run_corral(backend: str, count: int, bundle: int, workdir: Path) -> tuple[float, list[int]]:
    started = time.perf_counter()
    with corral.Scheduler(backend=backend, workdir=workdir,
                          backend_options={"poll_interval": POLL_S}) as scheduler:
        submit = scheduler.options(bundle=bundle).submit
        scheduler.pause()  # so that all go out in one dispatch
        jobs = [submit(ten_ms, index) for index in range(count)]
        scheduler.resume()
        results = [job.result(timeout=1800) for job in jobs]
    return time.perf_counter() - started, results


def measure(bench: Bench, calls: int, scratch: Path) -> tuple[list, float, list]:
    """The rows of the bundling table, and the 200-call run's time and logged calls."""
    log, path = wrap_commands(scratch / "counted", bench.commands, os.environ["PATH"])
    os.environ["PATH"] = path
    expected = list(range(calls))
    runners: list[tuple[str, Callable[[], tuple[float, list[int]] | None]]] = [
        (f"corral, one {bench.title} job per call",
         lambda: run_corral(bench.backend, calls, 1, scratch / "one")),
        ("corral, bundle=50", lambda: run_corral(bench.backend, calls, 50, scratch / "bundled"))]
    if bench.peer is not None:
        peer = bench.peer
        runners.append(("submitit map_array (peer)", lambda: peer(calls, scratch / "peer")))
    rows = []
    for label, runner in runners:
        outcome = runner()
        if outcome is None:
            continue
        seconds, results = outcome
        assert results == expected, f"{label}: wrong results"
        counts = Counter(name for name, _ in logged_calls(log, take=True))
        rows.append((label, seconds, counts))
        print(f"{label}: {seconds:.1f} s {dict(counts)}", flush=True)
    two_hundred, _ = run_corral(bench.backend, 200, 1, scratch / "two-hundred")
    return rows, two_hundred, logged_calls(log, take=True)


def paired(bench: Bench, calls: int, pairs: int, scratch: Path) -> str:
    """corral (one batch job per call) and the peer, alternately, *pairs* times:
    the scheduler's start rate drifts by half from one minute to the next on this
    one-node cluster, so only runs side by side say which start-up costs more."""
    assert bench.peer is not None, "only schedulers with a peer are paired"
    lines = [f"| round ({calls} × 10 ms calls, one batch job each) | corral | "
             "submitit map_array | submitit/corral |", "| --- | --- | --- | --- |"]
    ratios = []
    for round_ in range(1, pairs + 1):
        ours, _ = run_corral(bench.backend, calls, 1, scratch / f"pair-corral-{round_}")
        outcome = bench.peer(calls, scratch / f"pair-peer-{round_}")
        assert outcome is not None, "the peer is installed (it ran above)"
        ratios.append(outcome[0] / ours)
        lines.append(f"| {round_} | {ours:.1f} s | {outcome[0]:.1f} s | {ratios[-1]:.2f} |")
        print(lines[-1], flush=True)
    lines.append(f"| median | | | {sorted(ratios)[len(ratios) // 2]:.2f} |")
    return "\n".join(lines)


def tables(bench: Bench, calls: int, rows: list, two_hundred: float, logged: list) -> str:
    submit, status, accounting, configuration = (bench.submit, bench.status, bench.accounting,
                                                 bench.configuration)
    counts = Counter(name for name, _ in logged)
    gaps = [b - a for a, b in pairwise(sorted(t for name, t in logged if name == status))]
    bundled = next(seconds for label, seconds, _ in rows if "bundle" in label)
    table = [f"| {calls} × 10 ms calls | time | vs corral bundle=50 | "
             + " | ".join(bench.commands) + " |", "| --- " * (3 + len(bench.commands)) + "|"]
    for label, seconds, counted in rows:
        table.append(f"| {label} | {seconds:.1f} s | {seconds / bundled:.1f}× | "
                     + " | ".join(str(counted.get(name, 0)) for name in bench.commands) + " |")
    intervals = two_hundred / POLL_S
    table += ["", "| 200-call run (one job per call) | value |", "| --- | --- |",
              f"| wall time | {two_hundred:.1f} s |",
              f"| poll intervals it lasted ({POLL_S} s) | {intervals:.0f} |",
              f"| {status} calls | {counts.get(status, 0)} (≤ 1 per interval: "
              f"{'yes' if counts.get(status, 0) <= intervals + 1 else 'NO'}) |",
              f"| shortest gap between two {status} calls | {min(gaps) if gaps else 0:.2f} s |",
              f"| {submit} calls | {counts.get(submit, 0)} (arrays of up to the cluster's "
              "limit) |",
              *([f"| {accounting} calls | {counts.get(accounting, 0)} (only for jobs without "
                 "a result file) |"] if accounting else []),
              f"| {configuration} calls | {counts.get(configuration, 0)} (cluster settings, "
              "read once) |"]
    return "\n".join(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scheduler", choices=sorted(BENCHES))
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--pairs", type=int, default=0,
                        help="also run corral and the peer alternately this many times")
    parser.add_argument("--pair-calls", type=int, default=200)
    options = parser.parse_args()
    bench = BENCHES[options.scheduler]
    module = importlib.import_module(bench.cluster_module)
    reason = getattr(module, bench.why_not)()
    if reason:
        sys.exit(f"bench_batch {options.scheduler}: {reason}")
    cpus = os.cpu_count() or 2
    cluster = bench.start(module, cpus)
    os.environ.update(cluster.env())
    scratch = Path(tempfile.mkdtemp(prefix=f"corral-bench-{options.scheduler}-"))
    try:
        rows, two_hundred, logged = measure(bench, options.calls, scratch)
        pairs = (paired(bench, options.pair_calls, options.pairs, scratch)
                 if options.pairs and bench.peer is not None else None)
    finally:
        module.stop(cluster)
        shutil.rmtree(scratch, ignore_errors=True)
    text = tables(bench, options.calls, rows, two_hundred, logged)
    if pairs:
        text += "\n\nSide by side, alternating (`--pairs`):\n\n" + pairs
    print(text)
    if options.write:
        pairing = f" --pairs {options.pairs}" if pairs else ""
        command = f"python benchmarks/bench_batch.py {options.scheduler}{pairing} --write"
        header = (f"## {bench.title} backend\n\n{machine_line(command)} {bench.described} "
                  f"{cpus} CPU slots.\n\n")
        write_section(options.scheduler, header + text)


if __name__ == "__main__":
    main()
