"""A fake LSF: the commands of ``bin/`` over the engine of the fake batch scheduler.

Jobs run as real processes through :mod:`qlib` (``tests/support/fakebatch``): its
state file, lock, executors and call log. What LSF does differently is here:
LSF's command lines and output (``Job <7> is submitted to queue <normal>.``,
``bjobs -json``), array elements named ``7[3]``, ``-w "done(ID)"`` keeping a
child whose parent did not end DONE pending with "Dependency condition invalid
or never satisfied" (qlib's sweep, which removes such a child as PBS does, is
replaced by :func:`sweep` in every process that imports this module), and
``bstop``/``bresume`` suspending (PSUSP/USUSP) and resuming jobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import sys
import time

# The engine's settings, under this fake's names (qlib reads them when imported).
for _ours, _engine in (("FAKELSF_STATE", "FAKEBATCH_STATE"),
                       ("FAKELSF_CLEAN_PERIOD", "FAKEBATCH_FORGET_S"),
                       ("FAKELSF_SLOTS", "FAKEBATCH_SLOTS"),
                       ("FAKELSF_MAX_ARRAY", "FAKEBATCH_MAX_ARRAY")):
    if os.environ.get(_ours):
        os.environ[_engine] = os.environ[_ours]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "fakebatch"))
import qlib  # noqa: E402

QUEUED, HELD, RUNNING, FINISHED = qlib.QUEUED, qlib.HELD, qlib.RUNNING, qlib.FINISHED
NEVER = "Dependency condition invalid or never satisfied"
WAITING = "Job dependency condition not satisfied"
_DONE = re.compile(r"^done\(([0-9]+(?:\[[0-9]+\])?)\)$")
_ARRAY = re.compile(r"^(.*)\[([0-9]+)-([0-9]+)\](?:%([0-9]+))?$")


def sweep(state: dict, now: float) -> None:
    """LSF's dependency and clean-up rules, in place of qlib's: a ``done()``
    dependency is met when every task it names ended with status 0; one that
    can no longer be met (a task ended otherwise, or LSF forgot the job) leaves
    the child pending, saying so; finished jobs are forgotten after CLEAN_PERIOD."""
    tasks = state["tasks"]
    for task in tasks.values():
        if task["state"] not in (QUEUED, HELD):
            continue
        for dep in task["deps"]:
            if dep in task["deps_met"]:
                continue
            parents = list(qlib.select(state, [dep]).values())
            if not parents or any(p["state"] == FINISHED and not qlib.ended_well(p)
                                  for p in parents):
                task["pend_reason"] = NEVER
            elif all(p["state"] == FINISHED for p in parents):
                task["deps_met"].append(dep)
        if len(task["deps_met"]) == len(task["deps"]) and task.get("pend_reason") == WAITING:
            task["pend_reason"] = ""
    for native, task in list(tasks.items()):
        if task["state"] == FINISHED and task["ended"] < now - qlib.FORGET_S:
            del tasks[native]


qlib.sweep = sweep


def fail(command: str, message: str, status: int = 255) -> None:
    print(message if command == "" else f"{command}: {message}", file=sys.stderr)
    sys.exit(status)


# -- bsub ------------------------------------------------------------------------------------


def bsub(args: list[str]) -> None:
    """``bsub [-J NAME[1-N]%K] [-o FILE] [-n N] [-R REQ] [-M MEM] [-W MIN] [-w DEP]
    [-q Q] [-P P] [-gpu num=N] [-rn] COMMAND...``: the command runs with ``/bin/sh``."""
    options: dict[str, str] = {}
    words = list(args)
    while words and words[0].startswith("-"):
        flag = words.pop(0)
        if flag == "-rn":
            continue
        if flag not in ("-J", "-o", "-e", "-n", "-R", "-M", "-W", "-w", "-q", "-P", "-gpu") \
                or not words:
            fail("", f"{flag}: Illegal option. Job not submitted.")
        options[flag] = words.pop(0)
    if not words:
        fail("", "No command specified. Job not submitted.")
    name, indexes, throttle = options.get("-J", words[0]), [None], None
    array = _ARRAY.match(name)
    if array:
        name, first, last = array.group(1), int(array.group(2)), int(array.group(3))
        throttle = int(array.group(4)) if array.group(4) else None
        if first < 1 or last < first or last - first + 1 > qlib.MAX_ARRAY:
            fail("", f"{options['-J']}: Bad job array index list. Job not submitted.")
        indexes = list(range(first, last + 1))
    try:
        walltime = 60.0 * float(options["-W"]) if "-W" in options else None
        int(options.get("-n", "1"))
    except ValueError:
        fail("", "Bad argument for option -W or -n. Job not submitted.")
    deps = []
    for term in options.get("-w", "").split("&&") if "-w" in options else []:
        found = _DONE.match(term.strip())
        if found is None:
            fail("", f"{term.strip()}: Bad dependency expression. Job not submitted.")
        deps.append(found.group(1))
    if walltime is not None and os.environ.get("FAKELSF_MINUTE_S"):  # tests: a short minute
        walltime = walltime / 60.0 * float(os.environ["FAKELSF_MINUTE_S"])
    with qlib.locked_state() as state:
        for dep in deps:
            if not qlib.select(state, [dep]):
                fail("", f"{dep}: No matching job found. Job not submitted.")
        job = str(state["next_id"])
        state["next_id"] += 1
        spool = f"{qlib.STATE}.d"
        os.makedirs(spool, exist_ok=True)
        with open(f"{spool}/{job}.sh", "w") as jobfile:  # LSF's job file: its command line
            jobfile.write("export LSB_JOBID=$FAKEBATCH_JOBID"
                          " LSB_JOBINDEX=${FAKEBATCH_ARRAY_INDEX:-0}\n"
                          f"exec /bin/sh -c {shlex.quote(' '.join(words))}\n")
        for index in indexes:
            native = job if index is None else f"{job}[{index}]"
            state["tasks"][native] = {
                "job": job, "index": index, "name": name, "owner": qlib.user(),
                "state": QUEUED, "deps": deps, "deps_met": [], "walltime": walltime,
                "throttle": throttle, "script": f"{spool}/{job}.sh",
                "output": options.get("-o", os.devnull).replace("%J", job),
                "cwd": os.getcwd(), "submitted": time.time(), "started": None,
                "ended": None, "pid": None, "exit_status": None, "signal": None, "reason": "",
                "pend_reason": WAITING if deps else "", "suspended": False}
    qlib.start_executor(job)
    print(f"Job <{job}> is submitted to queue <{options.get('-q', 'normal')}>.")


# -- bjobs -----------------------------------------------------------------------------------


def _stat(task: dict) -> str:
    if task["state"] == QUEUED:
        return "PEND"
    if task["state"] == HELD:
        return "PSUSP"
    if task["state"] == RUNNING:
        return "USUSP" if task.get("suspended") else "RUN"
    return "DONE" if qlib.ended_well(task) else "EXIT"


def _exit_fields(task: dict) -> tuple[str, str]:
    """EXIT_CODE and EXIT_REASON of a finished task, as LSF words them."""
    if task["reason"] == "walltime":
        return "140", "TERM_RUNLIMIT: job killed after reaching LSF run time limit"
    if task["reason"] == "deleted":
        return ("130" if task["started"] else ""), "TERM_OWNER: job killed by owner"
    if task["signal"]:
        return str(128 + task["signal"]), ""
    return ("" if task["exit_status"] == 0 else str(task["exit_status"])), ""


def bjobs(args: list[str]) -> None:
    """``bjobs -json -o "FIELD ..." [-a] [-u USER] [ID...]``: LSF's JSON, one
    record per job or array element; without ``-a`` finished ones are left out.
    With no job to list, ``No job found`` (``No unfinished job found`` without
    ``-a``) on stderr and exit status 255, as LSF answers in text: whether
    ``-json`` answers an empty document instead is recorded nowhere, and corral
    must read both."""
    if "-json" not in args or "-o" not in args:
        fail("bjobs", "this fake prints only -json -o output", 2)
    fields = args[args.index("-o") + 1].split()
    owner = args[args.index("-u") + 1] if "-u" in args else qlib.user()
    skip = {args.index(flag) + 1 for flag in ("-o", "-u") if flag in args}
    ids = [a for i, a in enumerate(args) if not a.startswith("-") and i not in skip]
    with qlib.locked_state() as state:
        chosen = qlib.select(state, ids) if ids else dict(state["tasks"])
    records = []
    for task in sorted(chosen.values(), key=lambda task: (int(task["job"]), task["index"] or 0)):
        if owner != "all" and task["owner"] != owner:
            continue
        if "-a" not in args and task["state"] == FINISHED:
            continue
        code, reason = _exit_fields(task) if task["state"] == FINISHED else ("", "")
        values = {"jobid": task["job"], "jobindex": str(task["index"] or 0),
                  "stat": _stat(task), "exit_code": code, "exit_reason": reason,
                  "pend_reason": (task.get("pend_reason", "") + ";")
                  if task["state"] in (QUEUED, HELD) and task.get("pend_reason") else "",
                  "job_name": task["name"], "user": task["owner"]}
        records.append({field.upper(): values.get(field, "") for field in fields})
    if not records and not ids:  # as text-mode bjobs says it (batchtools, OSC's ood_core)
        fail("", "No job found" if "-a" in args else "No unfinished job found", 255)
    print(json.dumps({"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}, indent=2))


# -- control ---------------------------------------------------------------------------------


def _chosen(command: str, state: dict, ids: list[str]) -> dict[str, dict]:
    if not ids:
        fail(command, "Job ID or name must be specified", 255)
    return qlib.select(state, ids)


def bkill(args: list[str]) -> None:
    """``bkill [-s SIGNAL] ID...``: kill jobs (pending or running), or signal running ones."""
    signum = None
    if args[:1] == ["-s"]:
        signum = signal.Signals["SIG" + args[1].removeprefix("SIG")]
        args = args[2:]
    said, refused = [], []
    with qlib.locked_state() as state:
        chosen = _chosen("bkill", state, args)
        for wanted in args:
            if not qlib.select(state, [wanted]):
                refused.append(f"Job <{wanted}>: No matching job found")
        for native, task in chosen.items():
            if task["state"] == FINISHED:
                refused.append(f"Job <{native}>: Job has already finished")
            elif signum is not None:
                if task["state"] == RUNNING:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(task["pid"], signum)
                said.append(f"Job <{native}> is being signaled")
            else:
                if task["state"] == RUNNING:
                    qlib.kill_task(native)
                qlib.finish(task, exit_status=None, signum=None, reason="deleted")
                said.append(f"Job <{native}> is being terminated")
    if said:  # what it did on stdout, what it refused on stderr (ERT's LSF driver tests)
        print("\n".join(said))
    if refused:
        fail("", "\n".join(refused), 255)


def bstop(args: list[str], stop: bool = True) -> None:
    """``bstop ID...`` suspends jobs: a pending one becomes PSUSP, a running one
    USUSP (its processes stopped); ``bresume ID...`` undoes it. A finished job
    is refused (exit status 255), the others still done."""
    said, refused = [], []
    with qlib.locked_state() as state:
        for native, task in _chosen("bstop" if stop else "bresume", state, args).items():
            if task["state"] in (QUEUED, HELD):
                task["state"] = HELD if stop else QUEUED
            elif task["state"] == RUNNING and task.get("suspended") != stop:
                task["suspended"] = stop
                qlib.kill_task(native, signal.SIGSTOP if stop else signal.SIGCONT)
            elif task["state"] == FINISHED:
                refused.append(f"Job <{native}>: Job has already finished")
                continue
            said.append(f"Job <{native}> is being {'stopped' if stop else 'resumed'}")
    if said:
        print("\n".join(said))
    if refused:
        fail("", "\n".join(refused), 255)


def bparams(args: list[str]) -> None:
    """``bparams -a``: the parameters corral reads, as ``NAME = value`` lines
    (RESOURCE_RESERVE_PER_TASK from ``$FAKELSF_RESERVE_PER_TASK``, N by default)."""
    print("System default queue for batch processing:\n    DEFAULT_QUEUE = normal\n"
          f"    CLEAN_PERIOD = {int(qlib.FORGET_S)}\n"
          f"    MAX_JOB_ARRAY_SIZE = {qlib.MAX_ARRAY}\n    MBD_SLEEP_TIME = 10\n"
          f"    RESOURCE_RESERVE_PER_TASK = {os.environ.get('FAKELSF_RESERVE_PER_TASK') or 'N'}")


def lsid(args: list[str]) -> None:
    print("IBM Spectrum LSF Standard 10.1.0.14, Apr 20 2023 (fake: tests/support/fakelsf)\n"
          "Copyright International Business Machines Corp. 1992, 2016.\n\n"
          "My cluster name is fakelsf\nMy master name is localhost")


COMMANDS = {"bsub": bsub, "bjobs": bjobs, "bkill": bkill, "bstop": bstop,
            "bresume": lambda args: bstop(args, stop=False), "bparams": bparams, "lsid": lsid}


def main(name: str) -> None:
    if not qlib.STATE:
        fail(name, "FAKELSF_STATE is not set", 2)
    qlib.log_call(name, sys.argv[1:])
    COMMANDS[name](sys.argv[1:])
