"""corral's demo: a small word-statistics pipeline on the local backend.

    python -m corral.demo [--run DIR]

It makes a few text files in parallel (Python calls), counts their words with
`wc` (shell commands that depend on them), sums the counts (a call that takes
the other jobs' results as arguments), and shows what a run looks like when
things go wrong: a flaky job that succeeds on a retry, a job killed by its
timeout, and a job cancelled because the job it depends on failed. Then it
prints every job's status, attempts and reason, and where its output went.

The run is journaled: ``corral --run DIR status --all`` shows it from any
terminal afterwards, and running the demo again with ``--run DIR`` returns
the jobs that completed from the journal instead of running them again.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import corral

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu"]


def write_text(path: str, words: int, seed: int) -> str:
    """Write *words* random words to *path*; return the path."""
    rng = random.Random(seed)
    Path(path).write_text(" ".join(rng.choice(WORDS) for _ in range(words)) + "\n")
    print(f"wrote {words} words to {path}")
    return path


def add_counts(paths: list[str]) -> int:
    """Sum the numbers the `wc` jobs wrote."""
    return sum(int(Path(path).read_text()) for path in paths)


def flaky(marker: str) -> str:
    """Fail the first time, succeed the second (retries=1 saves it)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("tried once")
        raise RuntimeError("the instrument was not ready")
    return "measured on the second try"


def stuck() -> None:
    while True:  # a hung job: its timeout kills it and everything it started
        time.sleep(0.1)


def missing_input() -> None:
    raise FileNotFoundError("calibration.csv")


def _corral_command() -> str:
    """``corral`` if it is on PATH, else its path beside this interpreter (a venv's bin)."""
    import os
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), "corral")
    if shutil.which("corral") == beside or not os.path.exists(beside):
        return "corral"
    return beside


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run directory of an earlier demo to resume")
    options = parser.parse_args(argv)
    # Absolute: the jobs' arguments hold paths under it, and a job is recognised
    # by its arguments (cold review: resumed as tmp/corral-demo-x/run, every job
    # that the absolute path had completed ran again).
    run = Path(os.path.abspath(options.run)) if options.run else None
    data = run.parent if run else Path(tempfile.mkdtemp(prefix="corral-demo-"))
    run = run or data / "run"
    print(f"corral demo: files in {data}\n")
    events: list[corral.Event] = []
    with corral.Scheduler(cores=2, journal=run) as scheduler:
        scheduler.on_event(events.append)
        texts = [scheduler.options(name=f"write-{i}").submit(
                     write_text, str(data / f"text-{i}.txt"), 1000 * (i + 1), i)
                 for i in range(4)]
        counted = [str(data / f"count-{i}.txt") for i in range(4)]
        # A command runs where it is told (else in the current directory, and a
        # resume from another one would run it again there: cold review).
        counts = [scheduler.shell(f"wc -w < {data / f'text-{i}.txt'} > {counted[i]}",
                                  name=f"count-{i}", after=[text], cwd=data)
                  for i, text in enumerate(texts)]
        total = scheduler.options(name="total", after=counts).submit(add_counts, counted)
        top = scheduler.shell(f"cat {data}/text-*.txt | tr ' ' '\\n' | sort | uniq -c "
                              "| sort -rn | head -3", name="top-words", after=texts, cwd=data)
        retried = scheduler.options(name="flaky", retries=1).submit(flaky, str(data / "marker"))
        hung = scheduler.options(name="stuck", timeout="1s").submit(stuck)
        broken = scheduler.options(name="calibrate").submit(missing_input)
        downstream = scheduler.options(name="analyse").submit(str, broken)

        print(f"total words: {total.result()}")
        top.result()
        print("most common words:", ", ".join(line.split()[1] for line in top.stdout.splitlines()))
        print(f"flaky job: {retried.result()!r} after {retried.attempts} attempts")
        for job in (hung, broken, downstream):
            try:
                job.result()
            except (corral.JobTimedOut, FileNotFoundError, corral.CancelledError) as error:
                first_line = str(error).splitlines()[0]
                print(f"{job.name}: {type(error).__name__}: {first_line}")

    print(f"\n{len(events)} events; every job:")
    print(f"{'id':>3}  {'name':<11} {'status':<10} {'tries':>5}  {'secs':>5}  reason")
    for job in scheduler.jobs():
        seconds = (job.ended - job.started) if job.started and job.ended else 0.0
        print(f"{job.id:>3}  {job.name:<11} {job.status.name:<10} {job.attempts:>5}  "
              f"{seconds:5.2f}  {job.reason or ''}")
    print(f"\nstdout of write-0: {texts[0].stdout.strip()!r} (kept in {texts[0].jobdir}/stdout)")
    restored = sum(1 for job in scheduler.jobs() if job.reason and "earlier run" in job.reason)
    if restored:
        print(f"{restored} jobs came from the journal of the earlier run, without running again")
    command = _corral_command()
    print(f"\nlook at this run from any terminal:  {command} --run {run} status --all")
    print(f"see it as a page with a timeline:    {command} --run {run} report -o report.html")
    print(f"resume it (finished jobs are not run again): {sys.executable} -m corral.demo "
          f"--run {run}")
    if not options.run:  # (cold review: a newcomer picked another demo's leftover folder)
        print(f"its files stay until you remove them:  rm -r {data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
