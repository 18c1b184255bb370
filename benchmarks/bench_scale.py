"""A million no-op calls through map() in one journaled run: flat in time and memory?

    python benchmarks/bench_scale.py                 # print the table
    python benchmarks/bench_scale.py --write         # also refresh benchmarks/RESULTS.md
    python benchmarks/bench_scale.py --calls 200000  # a shorter run

One Scheduler(cores=2, journal=DIR) runs 10,000 calls, then the large map in
the same run. Measured: the rate of each (calls per second), the driver's
resident memory sampled every half second (the journal writer is a process
of its own and not counted), and how long ``corral --run DIR status`` takes
to answer while the large map runs and after it.
Targets (issue 14): RSS under 500 MB, the large map's rate within 20 % of the
10,000-call rate, ``corral status`` under 1 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

import psutil

import corral


def identity(value: int) -> int:
    return value


class PeakMemory:
    """The highest resident memory of this process, sampled in a thread."""

    def __init__(self, every: float = 0.5) -> None:
        self.peak = 0
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, me.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def status_seconds(run_dir: str) -> tuple[float, str]:
    """Time ``corral --run DIR status`` and return it with its first line."""
    start = time.perf_counter()
    shown = subprocess.run([sys.executable, "-m", "corral.cli", "--run", run_dir, "status"],
                           capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - start
    lines = (shown.stdout or shown.stderr).splitlines()
    return took, lines[0] if lines else ""


def rate(scheduler: corral.Scheduler, count: int) -> float:
    start = time.perf_counter()
    for _ in scheduler.map(identity, range(count)):
        pass
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--write", action="store_true", help="refresh benchmarks/RESULTS.md")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-scale-") as parent:
        run_dir = os.path.join(parent, "run")
        with corral.Scheduler(cores=2, journal=run_dir) as scheduler:
            rate(scheduler, 1000)  # workers up
            small = rate(scheduler, 10_000)
            memory = PeakMemory()
            during: list[tuple[float, str]] = []
            timer = threading.Timer(max(5.0, options.calls / small / 2),
                                    lambda: during.append(status_seconds(run_dir)))
            timer.start()
            large = rate(scheduler, options.calls)
            timer.cancel()
            peak = memory.stop()
        after = status_seconds(run_dir)
    rows = [
        ("10,000 calls through map()", f"{small:,.0f} calls/s", ""),
        (f"{options.calls:,} calls through map()", f"{large:,.0f} calls/s",
         f"{large / small:.2f} of the 10,000-call rate (target ≥ 0.80)"),
        ("driver's peak RSS during the large map", f"{peak / 2**20:,.0f} MB", "target < 500 MB"),
    ]
    if during:
        rows.append(("`corral status` while it ran", f"{during[0][0]:.2f} s", during[0][1]))
    rows.append(("`corral status` after it", f"{after[0]:.2f} s", after[1]))
    table = "\n".join(["| measure | value | note |", "| --- | --- | --- |",
                       *(f"| {a} | {b} | {c} |" for a, b, c in rows)])
    print(table)
    if options.write:
        from results_file import machine_line, write_section

        command = "python benchmarks/bench_scale.py --write" + (
            f" --calls {options.calls}" if options.calls != 1_000_000 else "")
        write_section("scale", "## A million calls in one journaled run\n\n"
                      f"{machine_line(command)} One run, journal on, 2 slots.\n\n{table}")


if __name__ == "__main__":
    main()
