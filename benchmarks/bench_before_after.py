"""This checkout's corral against an earlier revision's, in the same run.

Peers' ratios move with the machine's mood (ProcessPoolExecutor was 0.099 s
in one run and 0.112 s in another on the same 1,000 calls), so "did this
change make corral slower?" is answered here directly: the earlier revision
is checked out in a temporary git worktree and both run the same workloads,
alternating, each in a fresh interpreter.

    python benchmarks/bench_before_after.py REV            # print the table
    python benchmarks/bench_before_after.py REV --write    # also refresh RESULTS.md

Workloads (2 slots, pools warm): 1,000 no-op calls (and the submit() calls
alone), 200 ``true`` commands; a script's own costs: ``import corral`` and
``Scheduler()`` until it returns, and the ``with`` block's exit once every job
has ended; ``corral status --all`` of a run of 20,000 jobs (the command
whole, interpreter and all, output to /dev/null), the run made once by this
checkout; and the CPU time of the commands people type most, each a fresh
interpreter, on a finished run of five jobs: ``status``, ``wait`` (no
terminal), ``logs 1`` and ``--help``. Both trees are compiled to bytecode
first: a machine that sets PYTHONDONTWRITEBYTECODE would otherwise compile the
earlier tree's sources in every run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "src"

WORKLOAD = r"""
import json, time
began = time.perf_counter()
import corral

def noop():
    return None

scheduler = corral.Scheduler(cores=2)
start_up = time.perf_counter() - began
with scheduler:
    warm_up = [scheduler.submit(noop) for _ in range(200)]
    warm_up += [scheduler.shell(["true"]) for _ in range(20)]
    for job in warm_up:
        job.result()
    start = time.perf_counter()
    jobs = [scheduler.submit(noop) for _ in range(1000)]
    submitted = time.perf_counter() - start
    for job in jobs:
        job.result()
    calls = time.perf_counter() - start
    start = time.perf_counter()
    for job in [scheduler.shell(["true"]) for _ in range(200)]:
        job.result()
    commands = time.perf_counter() - start
    leaving = time.perf_counter()
end = time.perf_counter() - leaving
print(json.dumps({"calls": calls, "submit": submitted, "commands": commands,
                  "start": start_up, "end": end}))
"""

#: A journaled run of 20,000 finished jobs, for ``corral status --all``.
BIG_RUN = r"""
import sys, corral
with corral.Scheduler(cores=2, journal=sys.argv[1]) as scheduler:
    for _ in scheduler.map(abs, range(20_000)):
        pass
"""

#: A journaled run of five finished jobs, for the everyday commands.
SMALL_RUN = r"""
import sys, corral
with corral.Scheduler(cores=2, journal=sys.argv[1]) as scheduler:
    for job in [scheduler.shell(f"echo {n}") for n in range(5)]:
        job.result()
"""

#: The everyday commands whose CPU time is measured, by row key.
COMMANDS = {"cli_status": ["status"], "cli_wait": ["wait"], "cli_logs": ["logs", "1"],
            "cli_help": ["--help"]}

ROWS = (("calls", "1,000 no-op calls"), ("submit", "... of which the 1,000 submit() calls"),
        ("commands", "200 `true` commands"),
        ("start", "`import corral` and `Scheduler()`"),
        ("end", "leaving the `with` block, every job ended"),
        ("status", "`corral status --all`, 20,000 jobs, the whole command"),
        ("cli_status", "`corral status` of 5 jobs, CPU of the command"),
        ("cli_wait", "`corral wait` of 5 ended jobs (no terminal), CPU"),
        ("cli_logs", "`corral logs 1`, CPU"),
        ("cli_help", "`corral --help`, CPU"))


def measure(source: Path, big_run: Path, small_run: Path) -> dict[str, float]:
    environment = {**os.environ, "PYTHONPATH": os.fspath(source),
                   "CORRAL_CONFIG": os.devnull,
                   "CORRAL_SITE_CONFIG": ""}
    done = subprocess.run([sys.executable, "-c", WORKLOAD], env=environment, check=True,
                          capture_output=True, text=True)
    found = json.loads(done.stdout.splitlines()[-1])
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "corral", "--run", os.fspath(big_run), "status",
                    "--all"], env=environment, stdout=subprocess.DEVNULL, check=True)
    found["status"] = time.perf_counter() - began
    for key, command in COMMANDS.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "corral", "--run", os.fspath(small_run), *command],
                       env=environment, stdout=subprocess.DEVNULL, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        found[key] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", help="the earlier revision (a commit, tag or branch)")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each (median kept)")
    parser.add_argument("--write", action="store_true", help="refresh benchmarks/RESULTS.md")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-before-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "-C", os.fspath(HERE.parent), "worktree", "add", "--detach", "-q",
                        os.fspath(tree), options.revision], check=True)
        big_run, small_run = Path(scratch) / "big-run", Path(scratch) / "small-run"
        for script, run in ((BIG_RUN, big_run), (SMALL_RUN, small_run)):
            subprocess.run([sys.executable, "-c", script, os.fspath(run)], check=True,
                           env={**os.environ, "PYTHONPATH": os.fspath(SOURCE)})
        for source in (tree / "src", SOURCE):
            subprocess.run([sys.executable, "-m", "compileall", "-q", os.fspath(source)],
                           check=True, stdout=subprocess.DEVNULL)
        try:
            runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for _ in range(options.repeat):
                runs["before"].append(measure(tree / "src", big_run, small_run))
                runs["after"].append(measure(SOURCE, big_run, small_run))
        finally:
            subprocess.run(["git", "-C", os.fspath(HERE.parent), "worktree", "remove", "--force",
                            os.fspath(tree)], check=True)
    lines = [f"| workload | {options.revision} | this checkout | after/before |",
             "| --- | --- | --- | --- |"]
    for key, label in ROWS:
        before = statistics.median(run[key] for run in runs["before"])
        after = statistics.median(run[key] for run in runs["after"])
        if key.startswith("cli_"):
            lines.append(f"| {label} | {before * 1000:.0f} ms | {after * 1000:.0f} ms | "
                         f"{after / before:.2f} |")
        else:
            lines.append(f"| {label} | {before:.3f} s | {after:.3f} s | {after / before:.2f} |")
    table = "\n".join(lines)
    print(table)
    if options.write:
        sys.path.insert(0, os.fspath(HERE))
        from results_file import machine_line, write_section

        command = f"python benchmarks/bench_before_after.py {options.revision} --write"
        write_section("before-after", "## This change against an earlier revision\n\n"
                      f"{machine_line(command)} Medians of {options.repeat} alternating runs, "
                      f"each in a fresh interpreter.\n\n{table}")


if __name__ == "__main__":
    main()
