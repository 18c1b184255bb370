"""PBS's pieces for the batch base, in its two dialects.

:class:`PbsProScheduler` speaks OpenPBS / PBS Pro (``-l select=``, ``-J`` arrays,
``qstat -f -x -t`` of the run's jobs, exit statuses in the status answer);
:class:`TorqueScheduler` speaks Torque (``-l nodes=1:ppn=``, ``-t`` arrays,
``qstat -f`` in Torque's text), as Torque itself and Slurm's Torque wrappers do.
Both share the control commands (``qdel``, ``qhold``, ``qrls``, ``qsig``) and the
name ``"pbs"``; :func:`scheduler_for` picks one by the ``dialect`` option.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from corral.backends.batch.pbs import DIALECTS, OWN_OPTIONS, probe_dialect
from corral.backends.batch.scheduler import (BatchScheduler, ClusterLimits, Meaning, NativeRow,
                                             NeverKind, NeverStarts, SubmitRequest, number)
from corral.status import JobStatus

__all__ = ["PbsProScheduler", "TorqueScheduler", "scheduler_for", "pbs_name", "hhmmss",
           "parse_status_text", "parse_server"]

_PENDING = ("Q", "H", "W", "T")  # queued, held, waiting for its start time, in transit
_ACTIVE: Mapping[str, JobStatus] = {
    **dict.fromkeys(_PENDING, JobStatus.SUBMITTED),
    # running, exiting, suspended (by an admin / a busy workstation), array begun
    **dict.fromkeys(("R", "E", "S", "U", "B"), JobStatus.RUNNING),
}
#: Torque's states before C (completed): no B (arrays) and no U.
_TORQUE_ACTIVE: Mapping[str, JobStatus] = {
    **dict.fromkeys(_PENDING, JobStatus.SUBMITTED),
    **dict.fromkeys(("R", "E", "S"), JobStatus.RUNNING),
}
#: Exit statuses PBS gives a job it ended itself (negative: ``JOB_EXEC_*``).
_KILLED_AT_WALLTIME = -29  # JOB_EXEC_KILL_WALLTIME
_DELETED = 256 + 15  # qdel of a running job: SIGTERM (or 0 and the comment "terminated")
_SUBSTATE_TERMINATED = "91"  # JOB_SUBSTATE_TERMINATED: deleted, whatever the comment says
#: What the comment of a job that qdel ended says (see parse_status_text).
_TERMINATED = "terminated"
_TIMED_OUT: Meaning = (JobStatus.TIMED_OUT, "ran past its walltime (PBS Exit_status -29)")


#: What every argument of Torque's qsub may hold: a shell reads it as one word.
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_.,:=@%+/\[\]-]*")


def pbs_name(name: str) -> str:
    """A job name both dialects take: PBS refuses spaces and most punctuation
    in ``-N``, and Slurm's Torque wrappers pass it through a shell. An array's
    ``"first (+N)"`` is ``first+N`` (fyrd review: qstat showed ``first__+1_``)."""
    name = re.sub(r" \(\+(\d+)\)\Z", r"+\1", name)
    cleaned = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:200]
    return cleaned if cleaned[:1].isalpha() else f"j{cleaned}"


def hhmmss(seconds: float) -> str:
    """A walltime as PBS writes it, rounded up to the second."""
    whole = max(1, math.ceil(seconds))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _hhmmss_seconds(text: str) -> float:
    """Seconds of PBS's ``[[HH:]MM:]SS`` (0 when unreadable)."""
    parts = [number(part) for part in text.strip().split(":")]
    if not text.strip() or any(part is None for part in parts):
        return 0.0
    return float(sum((part or 0) * 60 ** i for i, part in enumerate(reversed(parts))))


class PbsProScheduler(BatchScheduler):
    """OpenPBS and PBS Pro (checked on OpenPBS 23.06): qsub, qstat -f -x -t, qdel, qsig."""

    name: ClassVar[str] = "pbs"
    title: ClassVar[str] = "PBS"
    dialect: ClassVar[str] = "pro"
    template: ClassVar[Path] = Path(__file__).with_name("pro.sh.template")
    array_index_base: ClassVar[int] = 0  # -J 0-N: PBS counts from where it is told
    #: Any non-zero status keeps ``afterok`` dependents from starting.
    failed_exit_status: ClassVar[int] = 1
    #: PBS's max_array_size is 10000; job_history_enable keeps finished jobs
    #: listed for job_history_duration (the test server: 24 h), so wait long.
    default_limits: ClassVar[ClusterLimits] = ClusterLimits(10000, 300.0, False)
    forgotten_words: ClassVar[str] = "no longer listed: is job_history_enable off?"
    own_options = OWN_OPTIONS

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        dialect = self.settings["dialect"]
        if dialect not in DIALECTS:
            raise ValueError(f"dialect={dialect!r} is not a PBS dialect "
                             f"(one of: {', '.join(map(repr, DIALECTS))})")
        if dialect == "auto":  # a scheduler made directly speaks its own dialect
            self.settings["dialect"] = self.dialect

    def with_settings(self, settings: dict[str, Any]) -> BatchScheduler:
        return scheduler_for(**{**self.settings, **settings})

    # -- submitting ----------------------------------------------------------------------

    def resource_args(self, request: SubmitRequest) -> list[str]:
        chunk = f"select=1:ncpus={request.resources.cores}"
        if request.resources.memory_mb is not None:
            chunk += f":mem={request.resources.memory_mb}mb"
        if request.resources.gpus:
            chunk += f":ngpus={request.resources.gpus}"
        argv = ["-l", chunk]
        if request.time_limit_s is not None:
            argv += ["-l", f"walltime={hhmmss(request.time_limit_s)}"]
        return argv

    def array_args(self, request: SubmitRequest) -> list[str]:
        # PBS refuses -J with fewer than two subjobs; the base sends one job plain.
        spec = f"0-{request.array_size - 1}" if request.array_size else ""
        return ["-J", spec + (f"%{request.throttle}" if request.throttle else "")] if spec else []

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        placement = request.placement
        # -r n: a job PBS reran would find its jobs claimed; PBS Pro refuses it for arrays.
        argv = ["qsub", "-N", pbs_name(request.name), "-j", "oe", "-o", request.output,
                *self.resource_args(request), *(self.array_args(request) or ["-r", "n"])]
        for flag, value in (("-q", placement.partition), ("-A", placement.account)):
            if value is not None:
                argv += [flag, value]
        if request.dependencies:
            argv += ["-W", "depend=afterok:" + ":".join(request.dependencies)]
        return [*argv, *placement.extra_flags, request.script]

    def parse_submit(self, stdout: str) -> str:
        lines = stdout.strip().splitlines()
        job_id = lines[-1].strip() if lines else ""
        if not re.fullmatch(r"\d+(\[\])?(\.[\w.-]+)?", job_id):
            raise ValueError(f"qsub printed no job id: {stdout.strip()!r}")
        return job_id

    def array_task_id(self, job_id: str, index: int) -> str:
        """``12[].host`` and 3 make ``12[3].host``."""
        return job_id.replace("[]", f"[{index}]", 1)

    # -- watching ------------------------------------------------------------------------

    def status_argv(self, user: str) -> list[str]:
        # -x: finished jobs too (with job_history_enable), -t: each subjob.
        return ["qstat", "-f", "-x", "-t"]

    def status_argv_for(self, user: str, native_ids: Sequence[str]) -> list[str]:
        # PBS's qstat -f cannot take -u, and the server's whole list is every user's
        # jobs of the history's length (OpenPBS 23.06's qstat -x -t of it has been seen
        # repeating itself without end): the run's jobs are named, an array by its
        # parent. The text form, since the JSON one lists only the first job named.
        return [*self.status_argv(user), *sorted({_job_of(native) for native in native_ids})]

    def status_answer_usable(self, returncode: int, stderr: str) -> bool:
        # A job named that the server no longer knows: said on stderr, the rest listed.
        lines = [line for line in stderr.splitlines() if line.strip()]
        return all(line.startswith("qstat: Unknown Job Id") for line in lines)

    def chains_on(self, native_id: str) -> bool:
        return _job_of(native_id) == native_id  # PBS refuses afterok on one subjob

    def parse_status(self, stdout: str) -> dict[str, NativeRow]:
        return _held_with_their_array(parse_status_text(stdout))

    def limits_argv(self) -> list[str] | None:
        return ["qmgr", "-c", "print server"]

    def parse_limits(self, stdout: str) -> ClusterLimits:
        server = parse_server(stdout)
        size = number(server.get("max_array_size", ""))
        history = server.get("job_history_enable", "").lower() == "true"
        kept = _hhmmss_seconds(server.get("job_history_duration", "")) if history else 0.0
        return ClusterLimits(
            max_array_tasks=size or self.default_limits.max_array_tasks,
            # Without job history a finished job leaves qstat at once: its result file decides.
            forget_after_s=kept or (self.default_limits.forget_after_s if history else 5.0),
            accounting=False)

    def meaning(self, row: NativeRow) -> Meaning | None:
        if row.state in _ACTIVE:
            return _ACTIVE[row.state], ""
        if row.state not in ("F", "X"):  # M (moved to another server) and any new code
            return None
        if _TERMINATED in row.reason or row.exit_status == _DELETED:
            return JobStatus.CANCELLED, "deleted with qdel (PBS)"
        if row.exit_status is None:  # what PBS does to the afterok child of a failed job
            return JobStatus.CANCELLED, "a job it depends on failed (PBS deleted it)"
        if row.exit_status == _KILLED_AT_WALLTIME:
            return _TIMED_OUT
        if row.exit_status == 0:
            return JobStatus.COMPLETED, ""
        if row.exit_status < 0:
            return JobStatus.FAILED, (f"PBS could not run it (Exit_status {row.exit_status}"
                                      f"{': ' + row.reason if row.reason else ''})")
        if row.signal:
            return JobStatus.FAILED, f"killed by signal {row.signal} (PBS)"
        return JobStatus.FAILED, f"exit code {row.exit_status} (PBS)"

    def never_starts(self, row: NativeRow) -> NeverStarts | None:
        # The scheduler's comment on a job that no node can ever hold.
        if row.reason.startswith("Can Never Run"):
            return NeverStarts(NeverKind.IMPOSSIBLE, row.reason.partition(": ")[2] or row.reason)
        return None

    def is_pending(self, row: NativeRow) -> bool:
        return row.state in _PENDING

    def is_held(self, row: NativeRow) -> bool:
        return row.state == "H"

    # -- control -------------------------------------------------------------------------

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qdel", *native_ids]

    def signal_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qsig", "-s", "SIGUSR1", *native_ids]

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qhold", *_whole_arrays(native_ids)]

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qrls", *_whole_arrays(native_ids)]


def _held_with_their_array(rows: dict[str, NativeRow]) -> dict[str, NativeRow]:
    """*rows* with each queued subjob of a held array held too: OpenPBS holds
    the array (``12[].host``, state H) and shows its subjobs queued (Q), which
    will not start; read as queued, a held array was never released (a
    driver that came back after a pause released only what it saw held)."""
    held = {native for native, row in rows.items() if row.state == "H" and "[]" in native}
    if not held:
        return rows
    return {native: (dataclasses.replace(row, state="H") if row.state == "Q"
                     and _job_of(native) in held and native not in held else row)
            for native, row in rows.items()}


def _whole_arrays(native_ids: Sequence[str]) -> list[str]:
    """*native_ids* with each subjob's array in its place, once: OpenPBS holds and
    releases only a whole array (``qhold 12[3]`` is an "Invalid request", and the
    subjob ran while the run was paused). A hold asks for every pending job, so
    an array's pending subjobs are all in it; its running ones run on."""
    return list(dict.fromkeys(_job_of(native_id) for native_id in native_ids))


class TorqueScheduler(PbsProScheduler):
    """Torque's dialect, as Torque and Slurm's Torque wrappers (``slurm-wlm-torque``)
    speak it. Arrays are off by default (one ``qsub`` per array task, limit 1):
    Slurm's wrappers list and delete array tasks only by Slurm's own job ids,
    which corral cannot name; on a real Torque ``max_array_size`` turns ``-t`` on."""

    dialect: ClassVar[str] = "torque"
    template: ClassVar[Path] = Path(__file__).with_name("torque.sh.template")

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qhold", *native_ids]  # (Torque holds an array task by its own id)

    def unsafe_argument(self, argv: Sequence[str]) -> str | None:
        # Slurm's Torque wrapper (qsub.pl) joins its arguments into a command line
        # for a shell: a partition "short;touch x" ran touch, and a run directory
        # with a space could not be submitted (attack review).
        for argument in argv[1:]:
            if not _SHELL_SAFE.fullmatch(argument):
                return (f"Torque's qsub (Slurm's Torque wrapper passes its arguments through "
                        f"a shell) cannot be given {argument!r}: letters, digits and "
                        "_.,:=@%+/-[] only (for a path, a run directory without spaces or "
                        "shell characters)")
        return None

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qrls", *native_ids]
    default_limits: ClassVar[ClusterLimits] = ClusterLimits(1, 300.0, False)
    forgotten_words: ClassVar[str] = "forgotten once it ended"

    def resource_args(self, request: SubmitRequest) -> list[str]:
        limits = f"nodes=1:ppn={request.resources.cores}"
        if request.resources.memory_mb is not None:
            limits += f",mem={request.resources.memory_mb}mb"
        if request.time_limit_s is not None:
            limits += f",walltime={hhmmss(request.time_limit_s)}"
        if request.resources.gpus:  # Torque asks GPUs per node (Slurm's wrappers: --gpus-per-node)
            limits = limits.replace(":ppn=", f":gpus={request.resources.gpus}:ppn=", 1)
        return ["-l", limits]

    def array_args(self, request: SubmitRequest) -> list[str]:
        return ["-t", *super().array_args(request)[1:]] if request.array_size else []

    def status_argv(self, user: str) -> list[str]:
        return ["qstat", "-f"]  # Slurm's wrappers know neither -x nor -t (-t only for
        # arrays, which they never get: see status_argv_for)

    def status_argv_for(self, user: str, native_ids: Sequence[str]) -> list[str]:
        # The user's jobs alone, as the wrappers list them; an array's tasks (real
        # Torque, max_array_size set) only with -t, which lists each one (review:
        # without it a running task was never seen, so taken as forgotten, and deleted).
        if any("[" in native for native in native_ids):
            return [*self.status_argv(user), "-t"]
        return self.status_argv(user)

    def limits_argv(self) -> list[str] | None:
        return None  # Torque's qmgr says nothing of arrays corral could use here

    def meaning(self, row: NativeRow) -> Meaning | None:
        if row.state in _TORQUE_ACTIVE:
            return _TORQUE_ACTIVE[row.state], ""
        if row.state != "C":  # U: what Slurm's wrappers print for a state they do not know
            return None
        # Torque's exit_status (Slurm's wrappers print none: the result file decides).
        return super().meaning(NativeRow(row.native_id, "F", row.reason,
                                         0 if row.exit_status is None else row.exit_status,
                                         row.signal))

    def is_held(self, row: NativeRow) -> bool:
        # Slurm's wrappers print a held job as Q; qrls of one not held is refused, harmlessly.
        return row.state in ("H", "Q")


def scheduler_for(dialect: str, **settings: Any) -> PbsProScheduler:
    """The scheduler of *dialect* ("auto": the one ``qstat --version`` shows here),
    with the rest of PBS's own *settings*."""
    if dialect == "auto":
        found = probe_dialect()
        if found.dialect is None:
            raise ValueError(f"PBS dialect 'auto' found none here: {found.why} "
                             "(set backend_options dialect='pro' or 'torque')")
        dialect = found.dialect
    chosen = TorqueScheduler if dialect == "torque" else PbsProScheduler
    return chosen(**settings, dialect=dialect)


def _row(native_id: str, job: Mapping[str, str]) -> NativeRow:
    comment = job.get("comment", "").strip()
    if job.get("substate", "").strip() == _SUBSTATE_TERMINATED and _TERMINATED not in comment:
        comment += f"{' and ' if comment else ''}{_TERMINATED}"  # deleted, said or not
    status = number(job.get("Exit_status", job.get("exit_status", "")), signed=True)
    signal = status - 256 if status is not None and status > 256 else None
    return NativeRow(native_id, job.get("job_state", "").strip(), comment, status, signal)


#: ``key = value`` of an attribute line of ``qstat -f``.
_ATTRIBUTE = re.compile(r"([A-Za-z_][\w.]*) = (.*)")


def parse_status_text(stdout: str) -> dict[str, NativeRow]:
    """Rows of ``qstat -f`` text, OpenPBS's (``-x -t``) and Torque's alike: a
    ``Job Id: 12.host`` line, then ``key = value`` lines at one indentation (four
    spaces on OpenPBS, a tab from Slurm's wrappers); a long value goes on in lines
    indented otherwise, joined back here, so that a wrapped variable's text is
    never read as an attribute.

    Raises:
        ValueError: the output has lines but not one job.
    """
    jobs: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    indent: str | None = None
    last = ""
    for line in stdout.splitlines():
        if line.startswith("Job Id:"):
            current = jobs.setdefault(line.partition(":")[2].strip(), {})
            indent, last = None, ""
            continue
        text = line.lstrip()
        lead = line[:len(line) - len(text)]
        attribute = _ATTRIBUTE.fullmatch(text)
        if lead and attribute and indent in (None, lead):
            indent, last = lead, attribute[1]
            current[last] = attribute[2]
        elif lead and last:  # a wrapped value goes on after the one tab qstat puts first
            current[last] += line[1:] if line.startswith("\t") else text
    if stdout.strip() and not jobs:
        raise ValueError(f"qstat printed no job corral can read: {stdout.strip()[:200]!r}")
    return {native_id: _row(native_id, job) for native_id, job in jobs.items()}


def parse_server(stdout: str) -> dict[str, str]:
    """The server's attributes from ``qmgr -c "print server"``."""
    server = {}
    for line in stdout.splitlines():
        words = line.split()
        if words[:2] == ["set", "server"] and len(words) >= 5 and words[3] == "=":
            server[words[2]] = " ".join(words[4:])
    return server


def _job_of(native_id: str) -> str:
    """The job a subjob belongs to (``12[3].host`` → ``12[].host``); a job's own id."""
    return re.sub(r"\[\d+\]", "[]", native_id, count=1)
