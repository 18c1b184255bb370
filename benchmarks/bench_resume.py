"""Resuming a big run: the same script run again on its journal, every call restored.

A resumed run matches each job against the journal by its key. What it costs
to open the journal, and the driver's peak memory, must not grow with the
run's history faster than running the jobs did: this compares, each in a
fresh interpreter, the first run of N no-op calls through ``map`` with the
run again on the same journal (all N restored).

    python benchmarks/bench_resume.py                 # 100,000 calls, print the table
    python benchmarks/bench_resume.py --write         # also refresh benchmarks/RESULTS.md
    python benchmarks/bench_resume.py --calls 20000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from results_file import machine_line, write_section

#: One run of the script, in a fresh interpreter: prints its figures as JSON.
_RUN = """
import json, resource, sys, time
import corral
started = time.perf_counter()
with corral.Scheduler(cores=2, journal=sys.argv[1]) as scheduler:
    opened = time.perf_counter()
    total = sum(scheduler.map(abs, range(int(sys.argv[2]))))
figures = {"open": opened - started, "total": time.perf_counter() - started,
           "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "sum": total}
figures["restored"] = sum(1 for job in corral.Scheduler.open(sys.argv[1]).jobs(results=False)
                          if job.reason == "completed in an earlier run (from the journal)")
print(json.dumps(figures))
"""


def run_once(journal: Path, calls: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _RUN, str(journal), str(calls)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--write", action="store_true")
    options = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="corral-bench-resume-"))
    try:
        first = run_once(scratch / "run", options.calls)
        again = run_once(scratch / "run", options.calls)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert first["sum"] == again["sum"], "the resumed run must give the same results"
    rows = [
        ("opening the journal (the `Scheduler(...)` call)", first["open"], again["open"], "s"),
        ("the whole run", first["total"], again["total"], "s"),
        ("the driver's peak RSS", first["rss_mb"], again["rss_mb"], "MB"),
    ]
    lines = ["## Resuming a run", "",
             f"{machine_line('python benchmarks/bench_resume.py --write')} "
             f"{options.calls:,} no-op calls through `map()`, run once, then the same script "
             f"again on the same journal ({again['restored']:,} calls restored), each in a "
             "fresh interpreter.", "",
             "| | first run | run again | again/first |", "| --- | --- | --- | --- |"]
    for name, before, after, unit in rows:
        shown = [f"{value:.2f} s" if unit == "s" else f"{value:.0f} MB"
                 for value in (before, after)]
        lines.append(f"| {name} | {shown[0]} | {shown[1]} | {after / before:.2f} |")
    text = "\n".join(lines)
    print(text)
    if options.write:
        write_section("resume", text)


if __name__ == "__main__":
    main()
