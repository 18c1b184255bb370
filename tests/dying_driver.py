"""A user's script whose driver a test kills: each of its jobs leaves processes.

    python dying_driver.py plain|journal OUT

It runs, in one scheduler (journaled in ``OUT/run`` with ``journal``):

* a shell command that starts a detached grandchild (``setsid``, its parent
  gone) and then sleeps: it writes ``OUT/shell.pid`` and ``OUT/grandchild.pid``;
* a Python call that starts a child process and waits for it: ``OUT/call.pid``
  holds the worker's pid and the child's;
* a command that waits for the first (never started).

It writes the scheduler's run directory to ``OUT/run_dir`` and, when the
``with`` block is left by an exception, every job's status and reason as JSON
to ``OUT/report.json`` before the exception goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import corral


def call_with_a_child(pid_file: str) -> None:
    child = subprocess.Popen(["sleep", "1000"])
    Path(pid_file + ".partial").write_text(f"{os.getpid()} {child.pid}")
    os.replace(pid_file + ".partial", pid_file)
    child.wait()


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    mode, out = sys.argv[1], Path(sys.argv[2])
    waits_in = sys.argv[3] if len(sys.argv) > 3 else "result"  # or "with": its implicit wait
    journal = out / "run" if mode == "journal" else None
    jobs: list[corral.Job] = []
    try:
        with corral.Scheduler(cores=2, journal=journal) as scheduler:
            (out / "run_dir").write_text(os.fspath(scheduler.run_dir))
            shell = scheduler.shell(
                f"( setsid sleep 4321 & echo $! > {out}/grandchild.partial ); "
                f"mv {out}/grandchild.partial {out}/grandchild.pid; "
                f"echo $$ > {out}/shell.partial; mv {out}/shell.partial {out}/shell.pid; "
                "sleep 1000", name="shell")
            call = scheduler.submit(call_with_a_child, f"{out}/call.pid")
            later = scheduler.shell("sleep 1000", after=[shell], name="later")
            jobs += [shell, call, later]
            for job in jobs if waits_in == "result" else ():
                job.result()
    except BaseException:
        report = {job.name: [job.status.name, job.reason] for job in jobs}
        (out / "report.json").write_text(json.dumps(report))
        raise


if __name__ == "__main__":
    main()
