"""A fake PBS-like batch scheduler: the commands of ``bin/`` over one JSON state file.

Every command takes an exclusive ``fcntl.flock`` on ``$FAKEBATCH_STATE.lock``,
reads the state, *sweeps* it (decides dependencies, forgets old finished jobs)
and writes it back atomically. ``qsub`` records the job and double-forks a
detached *executor* (its own session, so it outlives ``qsub`` and the caller)
that starts the job's tasks as real processes, records how they end, and
enforces walltimes. See README.md in this folder for the command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

STATE = os.path.abspath(os.environ["FAKEBATCH_STATE"]) if os.environ.get("FAKEBATCH_STATE") \
    else ""
#: Seconds a finished task stays listed by qstat (Slurm's MinJobAge).
FORGET_S = float(os.environ.get("FAKEBATCH_FORGET_S", "3"))
#: Tasks running at once, over all jobs (the cluster's size).
SLOTS = int(os.environ.get("FAKEBATCH_SLOTS", "64"))
#: The largest ``-l ncpus=N`` the cluster accepts.
MAX_CPUS = int(os.environ.get("FAKEBATCH_MAX_CPUS", "64"))
#: The most tasks one array may have.
MAX_ARRAY = int(os.environ.get("FAKEBATCH_MAX_ARRAY", "1000"))
POLL_S = 0.02
QUEUED, HELD, RUNNING, FINISHED = "Q", "H", "R", "F"


# -- the state file --------------------------------------------------------------------------


@contextlib.contextmanager
def locked_state() -> Iterator[dict]:
    """The swept state under the lock; what the block changes is written back."""
    with open(STATE + ".lock", "a") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(STATE) as handle:
                state = json.load(handle)
        except FileNotFoundError:
            state = {"next_id": 1, "tasks": {}, "executors": {}}
        sweep(state, time.time())
        yield state
        temporary = f"{STATE}.{os.getpid()}.tmp"
        with open(temporary, "w") as handle:
            json.dump(state, handle)
        os.replace(temporary, STATE)


def sweep(state: dict, now: float) -> None:
    """Decide dependencies, then forget tasks finished more than FORGET_S ago.

    A task whose dependency failed (or vanished before it was seen to end
    well) is removed, as PBS removes it; that may fail its own children, so
    the sweep repeats until nothing changes. Dependencies are decided before
    forgetting, so a parent is always seen ending before it is forgotten.
    """
    tasks = state["tasks"]
    changed = True
    while changed:
        changed = False
        for native, task in list(tasks.items()):
            if task["state"] not in (QUEUED, HELD):
                continue
            for dep in task["deps"]:
                if dep in task["deps_met"]:
                    continue
                parents = [t for n, t in tasks.items() if n == dep or t["job"] == dep]
                if not parents or any(t["state"] == FINISHED and not ended_well(t)
                                      for t in parents):
                    del tasks[native]
                    changed = True
                    break
                if all(t["state"] == FINISHED for t in parents):
                    task["deps_met"].append(dep)
    for native, task in list(tasks.items()):
        if task["state"] == FINISHED and task["ended"] < now - FORGET_S:
            del tasks[native]


def ended_well(task: dict) -> bool:
    return task["exit_status"] == 0 and not task["signal"]


def select(state: dict, ids: list[str]) -> dict[str, dict]:
    """The tasks *ids* name: a task id (``7_3``), or a job id for all its tasks."""
    return {native: task for native, task in state["tasks"].items()
            if native in ids or task["job"] in ids}


def log_call(name: str, args: list[str]) -> None:
    """One line per command in ``$FAKEBATCH_STATE.calls``: what a test counts."""
    with open(STATE + ".calls", "a") as handle:
        handle.write(json.dumps([name, time.time(), args]) + "\n")


# -- killing a task's processes --------------------------------------------------------------


def mark_of(native: str) -> bytes:
    """The environment entry every process of a task inherits."""
    return f"FAKEBATCH_MARK={STATE}:{native}".encode()


def kill_task(native: str, signum: int = signal.SIGKILL) -> None:
    """Send *signum* to every process carrying the task's mark (also those
    that left its process group), until none is left (for SIGKILL)."""
    mark = mark_of(native)
    for _ in range(50):
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if mark in handle.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        if not found or signum != signal.SIGKILL:
            return
        time.sleep(POLL_S)


def finish(task: dict, *, exit_status: int | None, signum: int | None, reason: str) -> None:
    task.update(state=FINISHED, ended=time.time(), exit_status=exit_status, signal=signum,
                reason=reason)


# -- the executor: runs one job's tasks ------------------------------------------------------


def start_executor(job: str) -> None:
    """Double-fork a detached executor for *job*; return once it is on its way."""
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # never keep the caller's pipes open
            os.dup2(null, fd)
        with locked_state() as state:
            state["executors"][job] = os.getpid()
        run_executor(job)
    finally:
        os._exit(0)


def run_executor(job: str) -> None:
    """Start the job's tasks when their dependencies are met, a slot is free
    and they are not held; record how they end; kill those past walltime."""
    processes: dict[str, subprocess.Popen] = {}
    while True:
        with locked_state() as state:
            mine = {n: t for n, t in state["tasks"].items() if t["job"] == job}
            for native, process in list(processes.items()):
                task = mine.get(native)
                returncode = process.poll()
                if returncode is not None:
                    del processes[native]
                    if task is not None and task["state"] == RUNNING:
                        finish(task, exit_status=max(returncode, 0) if returncode >= 0 else None,
                               signum=-returncode if returncode < 0 else None, reason="")
                elif task is not None and task["state"] == RUNNING and task["walltime"] \
                        and time.time() - task["started"] > task["walltime"]:
                    kill_task(native)
                    finish(task, exit_status=None, signum=signal.SIGKILL, reason="walltime")
            running = sum(t["state"] == RUNNING for t in state["tasks"].values())
            for native, task in mine.items():
                if task["state"] != QUEUED or len(task["deps_met"]) < len(task["deps"]):
                    continue
                ours = sum(t["state"] == RUNNING for t in mine.values())
                if running >= SLOTS or (task["throttle"] and ours >= task["throttle"]):
                    break
                processes[native] = launch(native, task)
                task.update(state=RUNNING, started=time.time(), pid=processes[native].pid)
                running += 1
            if not processes and all(t["state"] == FINISHED for t in mine.values()):
                state["executors"].pop(job, None)
                return
        time.sleep(POLL_S)


def launch(native: str, task: dict) -> subprocess.Popen:
    """Run the task's script with bash, in a session of its own."""
    env = dict(os.environ, FAKEBATCH_JOBID=task["job"], FAKEBATCH_TASKID=native)
    if task["index"] is not None:
        env["FAKEBATCH_ARRAY_INDEX"] = str(task["index"])
    key, _, value = mark_of(native).decode().partition("=")
    env[key] = value
    output = task["output"].replace("%I", str(task["index"] or 0))
    with open(output, "ab") as sink:
        return subprocess.Popen(["/bin/bash", task["script"]], cwd=task["cwd"], env=env,
                                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)


def fail(command: str, message: str, status: int = 1) -> None:
    print(f"{command}: {message}", file=sys.stderr)
    sys.exit(status)


# -- the commands ----------------------------------------------------------------------------


def qsub(args: list[str]) -> None:
    """``qsub [-N name] [-o path] [-d dir] [-t 1-N[%K]] [-W depend=afterok:ID[:ID]]
    [-l walltime=SECONDS] [-l ncpus=N] [-l mem=MB] [-l ngpus=N] script``: print the job id.

    As PBS does, ``#PBS`` lines at the top of the script give options too (split
    as a shell would); those of the command line win."""
    script = next((word for word in reversed(args) if not word.startswith("-")), None)
    if script is not None and os.path.isfile(script):
        args = directives(script) + args
    options, script = {"-N": "job", "-o": os.devnull, "-d": os.getcwd()}, None
    limits: dict[str, str] = {}
    words = iter(args)
    for word in words:
        if word in ("-N", "-o", "-d", "-t", "-W"):
            options[word] = next(words, "")
        elif word == "-l":
            key, _, value = next(words, "").partition("=")
            limits[key] = value
        elif word.startswith("-") or script is not None:
            fail("qsub", f"unknown argument {word!r}", 2)
        else:
            script = word
    if script is None or not os.path.isfile(script):
        fail("qsub", f"no such script: {script}", 2)
    try:
        walltime = float(limits.pop("walltime")) if "walltime" in limits else None
        ncpus = int(limits.pop("ncpus", "1"))
        int(limits.pop("mem", "0")), int(limits.pop("ngpus", "0"))  # accepted, not enforced
    except ValueError as error:
        fail("qsub", f"bad resource value: {error}", 2)
    if limits:
        fail("qsub", f"unknown resource {sorted(limits)[0]!r}", 2)
    if ncpus > MAX_CPUS:
        fail("qsub", f"Job exceeds queue resource limits (ncpus={ncpus} > {MAX_CPUS})")
    indexes, throttle = parse_array(options.get("-t"))
    deps = parse_depend(options.get("-W"))
    with locked_state() as state:
        missing = [dep for dep in deps if not select(state, [dep])]
        if missing:
            fail("qsub", f"Unknown Job Id {missing[0]}")
        job = str(state["next_id"])
        state["next_id"] += 1
        spool = f"{STATE}.d"
        os.makedirs(spool, exist_ok=True)
        with open(script, "rb") as source, open(f"{spool}/{job}.sh", "wb") as copy:
            copy.write(source.read())  # the script as submitted, as PBS spools it
        for index in indexes:
            native = job if index is None else f"{job}_{index}"
            state["tasks"][native] = {
                "job": job, "index": index, "name": options["-N"], "owner": user(),
                "state": QUEUED, "deps": deps, "deps_met": [], "walltime": walltime,
                "throttle": throttle, "script": f"{spool}/{job}.sh", "output": options["-o"],
                "cwd": options["-d"], "submitted": time.time(), "started": None, "ended": None,
                "pid": None, "exit_status": None, "signal": None, "reason": ""}
    start_executor(job)
    print(job)


def directives(script: str) -> list[str]:
    """The options of the ``#PBS`` lines of *script*'s first comment block."""
    import shlex

    found: list[str] = []
    with open(script, errors="replace") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            if line.startswith("#PBS "):
                found += shlex.split(line[len("#PBS "):])
    return found


def parse_array(text: str | None) -> tuple[list[int | None], int | None]:
    """``-t FIRST-LAST[%THROTTLE]`` (indexes from FIRST, e.g. 1): indexes and throttle."""
    if text is None:
        return [None], None
    span, _, throttle = text.partition("%")
    first, _, last = span.partition("-")
    try:
        indexes: list[int | None] = list(range(int(first), int(last or first) + 1))
        limit = int(throttle) if throttle else None
    except ValueError:
        fail("qsub", f"bad array {text!r}: expected FIRST-LAST[%THROTTLE]", 2)
    if not indexes or len(indexes) > MAX_ARRAY:
        fail("qsub", f"bad array {text!r}: 1 to {MAX_ARRAY} tasks", 2)
    return indexes, limit


def parse_depend(text: str | None) -> list[str]:
    if text is None:
        return []
    kind, _, ids = text.removeprefix("depend=").partition(":")
    if kind != "afterok" or not ids:
        fail("qsub", f"bad dependency {text!r}: expected depend=afterok:ID[:ID]", 2)
    return ids.split(":")


def user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def qstat(args: list[str]) -> None:
    """``qstat [-u USER] [-F json|text] [ID...]``: the tasks, by task id; ids it
    does not know (any more) are left out. ``json`` (the default): one JSON
    object. ``text``: a header line, then ``ID STATE EXIT SIGNAL REASON`` per
    task, ``-`` for no value; a task killed at its walltime shows state ``W``,
    one deleted ``D``, another finished one ``F``."""
    valued = ("-u", "-F")
    owner = args[args.index("-u") + 1] if "-u" in args else None
    form = args[args.index("-F") + 1] if "-F" in args else "json"
    ids = [a for i, a in enumerate(args)
           if a not in valued and (i == 0 or args[i - 1] not in valued)]
    with locked_state() as state:
        chosen = select(state, ids) if ids else dict(state["tasks"])
    chosen = {native: task for native, task in chosen.items()
              if owner is None or task["owner"] == owner}
    if form == "text":
        print("ID STATE EXIT SIGNAL REASON")
        for native, task in chosen.items():
            shown = {"walltime": "W", "deleted": "D"}.get(task["reason"], task["state"]) \
                if task["state"] == FINISHED else task["state"]
            print(native, shown, *("-" if task[key] in (None, "") else task[key]
                                   for key in ("exit_status", "signal", "reason")))
        return
    fields = ("job", "index", "name", "state", "exit_status", "signal", "reason")
    print(json.dumps({native: {key: task[key] for key in fields}
                      for native, task in chosen.items()}))


def qdel(args: list[str]) -> None:
    """``qdel ID...``: end the tasks, running (their processes killed) or not."""
    with locked_state() as state:
        for native, task in select(state, args).items():
            if task["state"] == RUNNING:
                kill_task(native)
                finish(task, exit_status=None, signum=signal.SIGKILL, reason="deleted")
            elif task["state"] != FINISHED:
                finish(task, exit_status=None, signum=None, reason="deleted")


def qhold(args: list[str], hold: bool = True) -> None:
    """``qhold ID...`` / ``qrls ID...``: hold queued tasks / release held ones.
    Tasks in another state are refused (exit status 1), the others still done."""
    before, after = (QUEUED, HELD) if hold else (HELD, QUEUED)
    refused = []
    with locked_state() as state:
        for native, task in select(state, args).items():
            if task["state"] == before:
                task["state"] = after
            elif task["state"] != after:
                refused.append(native)
    if refused:
        fail("qhold" if hold else "qrls", f"Request invalid for state of job {refused[0]}")


def qsig(args: list[str]) -> None:
    """``qsig -s SIGNAL ID...``: signal the batch script of running tasks."""
    if len(args) < 3 or args[0] != "-s":
        fail("qsig", "usage: qsig -s SIGNAL ID...", 2)
    signum = signal.Signals["SIG" + args[1].removeprefix("SIG")]
    with locked_state() as state:
        for task in select(state, args[2:]).values():
            if task["state"] == RUNNING:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(task["pid"], signum)


def qmgr(args: list[str]) -> None:
    """``qmgr``: the cluster's configuration as JSON (for the backend's limits)."""
    print(json.dumps({"max_array_size": MAX_ARRAY, "forget_after_s": FORGET_S, "slots": SLOTS,
                      "max_cpus": MAX_CPUS}))


COMMANDS = {"qsub": qsub, "qstat": qstat, "qdel": qdel, "qhold": qhold,
            "qrls": lambda args: qhold(args, hold=False), "qsig": qsig, "qmgr": qmgr}


def main(name: str) -> None:
    if not STATE:
        fail(name, "FAKEBATCH_STATE is not set", 2)
    log_call(name, sys.argv[1:])
    COMMANDS[name](sys.argv[1:])
