"""LSF's argv builders, parsers and state tables: pure functions, tested on
output from IBM's documentation and public projects that parse LSF
(``tests/recorded/lsf/README.md`` names each source).

Formats corral relies on:

* ``bsub`` prints ``Job <123> is submitted to queue <normal>.``, maybe after
  ``Cannot connect to LSF. Please wait ...`` lines while mbatchd is busy.
* ``bjobs -json -o "..."`` prints ``{"COMMAND": "bjobs", "JOBS": N, "RECORDS":
  [{field: "text", ...}]}``: every value a string, ``""`` for none; an array
  element is ``JOBID`` with its ``JOBINDEX`` (``0`` outside arrays), which
  corral spells ``123[4]``, as ``bkill`` and ``-w "done(...)"`` take it.
* ``bjobs`` that finds none of the jobs asked for says so on stderr and exits
  255: ``No job found`` (``-a``), ``No unfinished job found`` (without it), ``Job
  <123> is not found`` (for an id) -- batchtools and OSC's ood_core read it so.
* ``bparams -a`` prints ``NAME = value`` lines (``CLEAN_PERIOD``, ``MAX_JOB_ARRAY_SIZE``,
  ``RESOURCE_RESERVE_PER_TASK``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from corral.backends.batch.scheduler import Meaning, NativeRow, SubmitRequest, number
from corral.status import JobStatus

__all__ = ["UNITS", "BJOBS_FIELDS", "bsub_argv", "parse_bsub", "bjobs_argv", "parse_bjobs",
           "says_no_jobs", "parse_bparams", "reserves_per_task", "memory_in", "walltime_minutes",
           "state_of", "exit_code_of", "NEVER_REASON", "safe_name"]

#: The units ``-M`` and ``rusage[mem=]`` take after a number, and their size in KB.
UNITS: Mapping[str, int] = {"KB": 1, "MB": 1024, "GB": 1024 ** 2, "TB": 1024 ** 3,
                            "PB": 1024 ** 4, "EB": 1024 ** 5}

#: The ``bjobs -o`` fields corral reads, in order.
BJOBS_FIELDS = ("jobid", "jobindex", "stat", "exit_code", "exit_reason", "pend_reason")

_SUBMITTED = re.compile(r"Job <(\d+)> is submitted")
_NO_JOBS = re.compile(r"No (unfinished )?job found|Job <[^>]*> is not found")
_PARAMETER = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*=\s*(\S+)", re.MULTILINE)


def walltime_minutes(seconds: float) -> int:
    """``bsub -W`` in whole minutes, rounded up, at least one."""
    return max(1, math.ceil(seconds / 60))


def memory_in(unit: str, megabytes: int, shares: int = 1) -> str:
    """*megabytes* (split in *shares*) in *unit*, rounded up (a request never
    shrinks below what the job asked for), with the unit after it: ``32768MB``.
    A plain number is read in the site's LSF_UNIT_FOR_LIMITS (KB by default, MB
    in most installs), which corral cannot see; a unit is read as written by LSF
    10.1.0.2 on, the first that has the ``bjobs -json`` corral needs
    (Snakemake-Profiles/lsf#18; nextflow writes ``MB`` since its PR #5217)."""
    return f"{max(1, math.ceil(megabytes * 1024 / (UNITS[unit] * shares)))}{unit}"


def safe_name(name: str) -> str:
    """A job name ``-J`` reads as a name: ``[``, ``]`` and ``%`` would make it
    an array spec or a throttle, so they become ``_``."""
    return re.sub(r"[\[\]%]", "_", name) or "corral"


def bsub_argv(request: SubmitRequest, unit: str, reserve_per_task: bool = False) -> list[str]:
    """``bsub`` with one argument per setting, the script as its command.

    Memory is the job's total. Where LSF reserves ``rusage[mem=]`` per task
    (*reserve_per_task*: RESOURCE_RESERVE_PER_TASK=Y in ``bparams -a``), the
    rusage is that total divided by the cores, rounded up: sent whole, 8 cores
    would reserve 8 times the memory and maybe never start. ``-M`` stays the
    total: it limits a process, or the whole job with LSB_JOB_MEMLIMIT=Y (in
    lsf.conf, which corral cannot see), so divided it could kill a job at a
    fraction of what it asked for; where cgroups enforce it, LSF multiplies it by
    the tasks on the host, which only loosens it.

    The command is ``/bin/bash <quoted script path>``: LSF keeps the command
    line and runs it with a shell on the node, so the path is shell-quoted once,
    and the script needs no execute bit. (``bsub < script`` would spool the
    script and parse ``#BSUB`` lines, but needs stdin, and the script lives in
    the run directory the node must see anyway.) ``-rn``: LSF must not rerun
    a job in a directory that says it already ran; corral's retries do that.
    """
    resources, placement = request.resources, request.placement
    name = safe_name(request.name)
    if request.array_size is not None:
        name += f"[1-{request.array_size}]"
        if request.throttle is not None:
            name += f"%{request.throttle}"
    argv = ["bsub", "-rn", "-J", name, "-o", request.output, "-n", str(resources.cores)]
    # One -R: a feature expression, the memory to reserve and, for several
    # cores, one host (corral's cores serve one process, not a spread of tasks).
    requirement = [f"select[{placement.constraint}]"] if placement.constraint else []
    if resources.memory_mb is not None:
        shares = resources.cores if reserve_per_task else 1
        requirement.append(f"rusage[mem={memory_in(unit, resources.memory_mb, shares)}]")
        argv += ["-M", memory_in(unit, resources.memory_mb)]
    if resources.cores > 1:
        requirement.append("span[hosts=1]")
    if requirement:
        argv += ["-R", " ".join(requirement)]
    if request.time_limit_s is not None:
        argv += ["-W", str(walltime_minutes(request.time_limit_s))]
    if resources.gpus:
        argv += ["-gpu", f"num={resources.gpus}"]
    for flag, value in (("-q", placement.partition), ("-P", placement.account)):
        if value is not None:
            argv += [flag, value]
    if request.dependencies:
        argv += ["-w", " && ".join(f"done({native})" for native in request.dependencies)]
    argv += [*placement.extra_flags, "/bin/bash", _shell_quote(request.script)]
    return argv


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def parse_bsub(stdout: str) -> str:
    """The job id from ``Job <123> is submitted to queue <normal>.``"""
    found = _SUBMITTED.search(stdout)
    if found is None:
        raise ValueError(f"bsub printed no job id: {stdout.strip()[:300]!r}")
    return found.group(1)


def bjobs_argv(user: str) -> list[str]:
    """One query for every job of *user*, finished ones (``-a``) within
    CLEAN_PERIOD included, one record per array element."""
    return ["bjobs", "-json", "-o", " ".join(BJOBS_FIELDS), "-a", "-u", user]


def says_no_jobs(stderr: str) -> bool:
    """Whether a failed ``bjobs`` only said that it found none of the jobs asked
    for. LSF says so on stderr and exits 255; read as a failure, a user with no
    job left in LSF (a rerun after CLEAN_PERIOD) would be polled for ever."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return bool(lines) and all(_NO_JOBS.fullmatch(line) for line in lines)


def parse_bjobs(stdout: str) -> dict[str, NativeRow]:
    """Rows by native id (``123`` or ``123[4]``) from :func:`bjobs_argv`'s output.

    Raises:
        ValueError: no JSON object in it (a banner, a changed format): read as
            "no jobs", it would end every job early. ``No job found`` (what
            bjobs says when the user has none) is no jobs.
    """
    start = stdout.find("{")  # "Cannot connect to LSF. Please wait ..." may come first
    if start < 0:
        if re.search(r"No (unfinished )?job found", stdout) or not stdout.strip():
            return {}
        raise ValueError(f"bjobs printed no JSON: {stdout.strip()[:200]!r}")
    # (What follows the object, a warning line, is not part of it: attack review.)
    document, _ = json.JSONDecoder().raw_decode(stdout, start)
    rows = {}
    for record in document.get("RECORDS", []):
        if not isinstance(record, dict) or "ERROR" in record:
            continue
        job_id, index = str(record.get("JOBID", "")), str(record.get("JOBINDEX", "0"))
        if not job_id:
            continue
        native = f"{job_id}[{index}]" if index not in ("", "0") and "[" not in job_id \
            else job_id
        exit_status = number(str(record.get("EXIT_CODE", "")))
        ended = str(record.get("EXIT_REASON", "")).strip()
        pending = str(record.get("PEND_REASON", "")).strip().rstrip(";")
        rows[native] = NativeRow(native, str(record.get("STAT", "")).strip(), ended or pending,
                                 exit_status, None)
    return rows


def parse_bparams(stdout: str) -> dict[str, str]:
    """``bparams -a`` as a dict of its ``NAME = value`` lines."""
    return {name: value for name, value in _PARAMETER.findall(stdout)}


def reserves_per_task(params: Mapping[str, str]) -> bool:
    """Whether LSF reserves a job's ``rusage`` once per task (slot), not per host:
    RESOURCE_RESERVE_PER_TASK=Y, or its older name RESOURCE_RESERVE_PER_SLOT=Y
    (IBM, "Enabling per-task memory reservation"; toil reads both from ``bparams -a``)."""
    return any(params.get(name, "").upper() == "Y"
               for name in ("RESOURCE_RESERVE_PER_TASK", "RESOURCE_RESERVE_PER_SLOT"))


# -- meaning ---------------------------------------------------------------------------------

_ACTIVE: Mapping[str, JobStatus] = {
    "PEND": JobStatus.SUBMITTED, "PSUSP": JobStatus.SUBMITTED, "WAIT": JobStatus.SUBMITTED,
    "PROV": JobStatus.SUBMITTED,
    # Suspended while running, lost contact with its host, or being killed
    # while its host is away: still the job's, LSF ends each one later.
    "RUN": JobStatus.RUNNING, "USUSP": JobStatus.RUNNING, "SSUSP": JobStatus.RUNNING,
    "UNKWN": JobStatus.RUNNING, "ZOMBI": JobStatus.RUNNING,
}

#: EXIT reasons (the word before ``:`` in ``exit_reason``) and what they mean.
_ENDED_BY: Mapping[str, Meaning] = {
    "TERM_RUNLIMIT": (JobStatus.TIMED_OUT, "ran past its run limit (LSF TERM_RUNLIMIT)"),
    "TERM_CPULIMIT": (JobStatus.TIMED_OUT, "ran past its CPU limit (LSF TERM_CPULIMIT)"),
    "TERM_DEADLINE": (JobStatus.TIMED_OUT, "missed its termination time (LSF TERM_DEADLINE)"),
    "TERM_OWNER": (JobStatus.CANCELLED, "killed by its owner (LSF TERM_OWNER)"),
    "TERM_FORCE_OWNER": (JobStatus.CANCELLED, "killed by its owner (LSF TERM_FORCE_OWNER)"),
    # bkill -b, by its owner or an administrator (review: read as a failure, and retried)
    "TERM_BUCKET_KILL": (JobStatus.CANCELLED, "killed with bkill -b (LSF TERM_BUCKET_KILL)"),
    "TERM_ADMIN": (JobStatus.CANCELLED, "killed by an LSF administrator (LSF TERM_ADMIN)"),
    "TERM_FORCE_ADMIN": (JobStatus.CANCELLED,
                         "killed by an LSF administrator (LSF TERM_FORCE_ADMIN)"),
    "TERM_MEMLIMIT": (JobStatus.FAILED, "out of memory (LSF TERM_MEMLIMIT)"),
    "TERM_SWAP": (JobStatus.FAILED, "out of swap (LSF TERM_SWAP)"),
    "TERM_PREEMPT": (JobStatus.FAILED, "preempted (LSF TERM_PREEMPT)"),
}

#: The pending reason of a job whose ``done()`` dependency can never be met.
NEVER_REASON = "Dependency condition invalid or never satisfied"


def state_of(row: NativeRow) -> Meaning | None:
    """corral's status and a reason for an LSF row; None for a state corral
    does not know (the base logs it and polls on)."""
    active = _ACTIVE.get(row.state)
    if active is not None:
        return active, ""
    if row.state == "DONE":
        return JobStatus.COMPLETED, ""
    if row.state != "EXIT":
        return None
    known = _ENDED_BY.get(row.reason.split(":", 1)[0].strip())
    if known is not None:
        return known
    code = f"exit code {row.exit_status}" if row.exit_status is not None else "exited"
    return JobStatus.FAILED, f"{code} (LSF EXIT{', ' + row.reason if row.reason else ''})"


def exit_code_of(row: NativeRow) -> int | None:
    """The job's exit code; minus the signal where LSF reports 128 + signal."""
    code = row.exit_status
    return -(code - 128) if code is not None and 128 < code < 160 else code
