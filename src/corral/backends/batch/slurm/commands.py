"""Slurm's command lines and what they print: pure builders and parsers, and
the tables of what Slurm's states and pending reasons mean.

Nothing here runs a process, so every function is tested against output
recorded from a real Slurm 22.05. The batch base (:mod:`corral.backends.batch.base`)
runs the commands, through :class:`corral.backends.batch.slurm.scheduler.SlurmScheduler`;
this module knows their flags and formats.

Facts that shaped it (seen on 22.05):

* ``squeue -O`` with a ``|`` suffix on each field prints untruncated,
  delimiter-separated columns; ``exit_code`` there is the raw wait status
  (exit 7 → 1792, a SIGKILL → 9).
* ``sacct --json`` reports exit code 0 for failed jobs; ``sacct -P`` is right.
* ``--time`` takes minutes; a request in seconds is rounded up to a minute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from corral.backends.batch.scheduler import NativeRow, number
from corral.spec import Placement, Resources
from corral.status import JobStatus

__all__ = ["SlurmRow", "sbatch_argv", "parse_sbatch", "squeue_argv", "parse_squeue",
           "sacct_argv", "parse_sacct", "parse_config", "walltime_minutes", "state_of",
           "exit_code_of", "describe_pending", "IMPOSSIBLE_REASONS", "NEVER_REASON",
           "HELD_REASONS"]

_SQUEUE_FIELDS = ("JobID", "ArrayJobID", "ArrayTaskID", "State", "Reason", "exit_code")

#: One Slurm job (or array task) as squeue or sacct saw it: native id "123" or,
#: for an array task, "123_4"; state Slurm's word (PENDING, RUNNING, TIMEOUT...).
SlurmRow = NativeRow


def walltime_minutes(seconds: float) -> int:
    """Slurm's ``--time`` in whole minutes, rounded up, at least one."""
    return max(1, math.ceil(seconds / 60))


def sbatch_argv(*, script: str, name: str, resources: Resources, placement: Placement,
                output: str, array_size: int | None, throttle: int | None,
                dependencies: Sequence[str], time_limit_s: float | None) -> list[str]:
    """``sbatch`` with one flag per setting: every value is a single argument,
    never shell text, so no name or option can inject code."""
    # --no-requeue: a job Slurm requeued would run again in a directory that
    # says it already ran; corral's retries run failed jobs again instead.
    argv = ["sbatch", "--parsable", "--no-requeue", f"--job-name={name}", f"--output={output}",
            f"--cpus-per-task={resources.cores}"]
    if resources.memory_mb is not None:
        argv.append(f"--mem={resources.memory_mb}M")
    if time_limit_s is not None:
        argv.append(f"--time={walltime_minutes(time_limit_s)}")
    if resources.gpus:
        argv.append(f"--gres=gpu:{resources.gpus}")
    for flag, value in (("--partition", placement.partition), ("--account", placement.account),
                        ("--qos", placement.qos), ("--constraint", placement.constraint)):
        if value is not None:
            argv.append(f"{flag}={value}")
    if array_size is not None:
        spec = f"0-{array_size - 1}"
        if throttle is not None:
            spec += f"%{throttle}"
        argv.append(f"--array={spec}")
    if dependencies:
        argv.append("--dependency=afterok:" + ":".join(dependencies))
    argv.extend(placement.extra_flags)
    argv.append(script)
    return argv


def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` (``ID`` or ``ID;cluster``)."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {stdout.strip()!r}")
    return job_id


def squeue_argv(user: str) -> list[str]:
    """One query for every job of *user*, finished ones included, one line per array task."""
    fields = ",".join(f"{field}:|" for field in _SQUEUE_FIELDS)
    return ["squeue", "--noheader", "--array", "--states=all", f"--user={user}",
            f"--Format={fields}"]


def parse_squeue(stdout: str) -> dict[str, SlurmRow]:
    """Rows by native id from :func:`squeue_argv`'s output; bad lines are skipped.

    Raises:
        ValueError: the output has lines but not one row (a login banner, a
            changed format): read as "no jobs", it would end every job early.
    """
    rows = {}
    unreadable = []
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) < len(_SQUEUE_FIELDS):
            if line.strip():
                unreadable.append(line)
            continue
        job_id, array_job, array_task, state, reason, exit_code = (
            part.strip() for part in parts[:len(_SQUEUE_FIELDS)])
        if array_task and array_task not in ("N/A", "(null)") and array_task.isdigit():
            native_id = f"{array_job}_{array_task}"
        else:
            native_id = job_id
        status = number(exit_code, signed=True)
        code, signal = (None, None) if status is None else _split_wait_status(status)
        rows[native_id] = SlurmRow(native_id, state.split()[0] if state else "",
                                   "" if reason in ("None", "(null)") else reason, code, signal)
    if unreadable and not rows:
        raise ValueError(f"squeue printed no row corral can read: {unreadable[0][:200]!r}")
    return rows


def _split_wait_status(status: int) -> tuple[int, int | None]:
    if status & 0x7F:
        return 0, status & 0x7F
    return (status >> 8) & 0xFF, None


def sacct_argv(native_ids: Iterable[str]) -> list[str]:
    return ["sacct", "--noheader", "--parsable2", "--allocations",
            "--format=JobID,State,ExitCode,Reason", f"--jobs={','.join(native_ids)}"]


def parse_sacct(stdout: str) -> dict[str, SlurmRow]:
    """Rows from ``sacct -P -X -o JobID,State,ExitCode,Reason`` (ExitCode is ``code:signal``)."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 3:
            continue
        native_id, state, exit_code = parts[0].strip(), parts[1].strip(), parts[2].strip()
        reason = parts[3].strip() if len(parts) > 3 else ""
        code_text, _, signal_text = exit_code.partition(":")
        code = number(code_text)
        signal = number(signal_text) or None
        rows[native_id] = SlurmRow(native_id, state.split()[0] if state else "",
                                   "" if reason in ("None", "(null)") else reason, code, signal)
    return rows


def parse_config(stdout: str) -> dict[str, str]:
    """``scontrol show config`` as a dict of its ``Key = value`` lines."""
    settings = {}
    for line in stdout.splitlines():
        key, separator, value = line.partition("=")
        if separator and key.strip() and " " not in key.strip():
            settings[key.strip()] = value.strip()
    return settings


# -- meaning ------------------------------------------------------------------------------

_ACTIVE_STATES: Mapping[str, JobStatus] = {
    "PENDING": JobStatus.SUBMITTED, "CONFIGURING": JobStatus.SUBMITTED,
    "REQUEUED": JobStatus.SUBMITTED, "REQUEUE_HOLD": JobStatus.SUBMITTED,
    "REQUEUE_FED": JobStatus.SUBMITTED, "RESV_DEL_HOLD": JobStatus.SUBMITTED,
    "RUNNING": JobStatus.RUNNING, "COMPLETING": JobStatus.RUNNING,
    "SUSPENDED": JobStatus.RUNNING, "STAGE_OUT": JobStatus.RUNNING,
    "SIGNALING": JobStatus.RUNNING, "RESIZING": JobStatus.RUNNING, "STOPPED": JobStatus.RUNNING,
}

#: Final Slurm states: what corral makes of them and the words it says.
_FINAL_STATES: Mapping[str, tuple[JobStatus, str]] = {
    "COMPLETED": (JobStatus.COMPLETED, ""),
    "FAILED": (JobStatus.FAILED, "failed"),
    "TIMEOUT": (JobStatus.TIMED_OUT, "ran past its walltime (Slurm TIMEOUT)"),
    "DEADLINE": (JobStatus.TIMED_OUT, "missed its deadline (Slurm DEADLINE)"),
    "CANCELLED": (JobStatus.CANCELLED, "cancelled in Slurm"),
    "REVOKED": (JobStatus.CANCELLED, "revoked by Slurm (federation)"),
    "OUT_OF_MEMORY": (JobStatus.FAILED, "out of memory (Slurm OUT_OF_MEMORY)"),
    "NODE_FAIL": (JobStatus.FAILED, "its node failed (Slurm NODE_FAIL)"),
    "BOOT_FAIL": (JobStatus.FAILED, "its node failed to boot (Slurm BOOT_FAIL)"),
    "PREEMPTED": (JobStatus.FAILED, "preempted by a higher-priority job (Slurm PREEMPTED)"),
    "SPECIAL_EXIT": (JobStatus.FAILED, "ended in Slurm's SPECIAL_EXIT state"),
}


def state_of(row: SlurmRow) -> tuple[JobStatus, str] | None:
    """Our status and a reason for a Slurm row; None for a state we do not know
    (the caller logs it and keeps polling)."""
    active = _ACTIVE_STATES.get(row.state)
    if active is not None:
        return active, ""
    final = _FINAL_STATES.get(row.state)
    if final is None:
        return None
    status, words = final
    if row.state == "FAILED":
        if row.signal:
            extra = f", reason {row.reason}" if row.reason and row.reason != "None" else ""
            words = f"killed by signal {row.signal} (Slurm FAILED{extra})"
        elif row.exit_status:
            words = f"exit code {row.exit_status} (Slurm FAILED)"
        else:  # FAILED 0:0 — e.g. a launch failure; Slurm's reason says more
            words = f"failed in Slurm ({row.reason or 'no reason given'})"
    return status, words


def exit_code_of(row: SlurmRow) -> int | None:
    if row.signal:
        return -row.signal
    return row.exit_status


#: Pending reasons that mean Slurm will never start the job as asked.
IMPOSSIBLE_REASONS: Mapping[str, str] = {
    "PartitionConfig": "the partition can never satisfy the request (cores, memory, GPUs "
                       "or time beyond what its nodes have)",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "PartitionTimeLimit": "its walltime is above the partition's time limit",
    "BadConstraints": "no node has the requested features or resources",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QOS is not valid",
}
#: A child whose parent failed: pends forever without ``kill_invalid_depend``.
NEVER_REASON = "DependencyNeverSatisfied"


#: Pending reasons of a held job.
HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})


def describe_pending(reason: str) -> str | None:
    """Why a pending job can never start, or None if it may still start."""
    return IMPOSSIBLE_REASONS.get(reason)
