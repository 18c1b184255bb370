"""Grid Engine's command lines and what they print: pure builders and parsers,
and the table of what its state letters mean.

Nothing here runs a process; every parser is tested on output recorded from
a real Son of Grid Engine 8.1.9 (``tests/recorded/sge/``). Facts that shaped it:

* ``qsub -terse`` prints ``ID`` or, for an array, ``ID.1-N:1``.
* ``qstat -xml -g d`` prints one ``job_list`` per array task (``<tasks>``
  holds its index), pending ones too; ``-r`` adds ``<predecessor_jobs>``.
  Finished jobs are gone from it at once.
* A state is a word of letters (``qw``, ``hqw``, ``r``, ``Rr``, ``t``, ``s``,
  ``Eqw``, ``dr``...): ``E`` is an error state the job never leaves by itself.
* ``-hold_jid`` releases the children of a parent that ended in any way but
  exit status 100, which puts the parent itself in ``Eqw`` and keeps its
  children waiting for ever; deleting that parent then releases them.
* ``qacct -j ID`` knows jobs that ran (``failed`` 37: killed at a limit;
  100 with exit status 137: deleted while running), never a job deleted
  while pending.
* ``failed`` 37 is the same for ``h_rt``, ``h_cpu`` and ``h_vmem`` (a job
  whose processes together use more than it asked for; one process alone is
  stopped by its rlimit and fails by itself). Which one it was is read from
  the record: the limits asked for (``category``), the time it ran
  (``ru_wallclock``) and its peak memory (``maxvmem``).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping

from corral.backends.batch.scheduler import Meaning, NativeRow, number
from corral.status import JobStatus
from corral.units import parse_memory

__all__ = ["job_number", "parse_qsub", "qstat_argv", "parse_qstat", "qacct_argv",
           "parse_qacct", "parse_sconf", "meaning_of", "per_slot_mb", "job_name",
           "PREDECESSOR_FAILED", "FINISHED"]

#: The reason :func:`parse_qstat` gives a waiting job whose predecessor is in error.
PREDECESSOR_FAILED = "predecessor in error state"
#: The state of a row from accounting: the job is over.
FINISHED = "finished"
#: The letters of SGE's states that corral knows.
_LETTERS = frozenset("qwhrtRsSTEd")
#: The ``failed`` code of a job that died by a signal: qdel's (SIGKILL, or the
#: SIGTERM of a queue's notify), or any other (see :func:`_died_by_a_signal`).
_DIED_BY_A_SIGNAL = 100
_DELETING_SIGNALS = (9, 15)
#: The ``failed`` code of a job killed at one of its limits.
_AT_A_LIMIT = 37


def job_number(native_id: str) -> str:
    """The job of a native id: ``"12"`` of ``"12.3"`` (SGE's task notation)."""
    return native_id.split(".", 1)[0]


def per_slot_mb(memory_mb: int, cores: int) -> int:
    """SGE multiplies a memory request by the slots of a parallel job: each of
    *cores* slots asks for its share of *memory_mb*, rounded up."""
    return math.ceil(memory_mb / max(cores, 1))


def job_name(name: str) -> str:
    """A name qsub accepts: ASCII letters, digits and ``_.+-,()[]`` (it refuses
    white space and ``/:@\\*?``; others garble its answer), not starting with a digit."""
    cleaned = re.sub(r"[^A-Za-z0-9_.+,()\[\]-]+", "_", name).strip("_") or "corral"
    return f"c{cleaned}" if cleaned[0].isdigit() else cleaned


def parse_qsub(stdout: str) -> str:
    """The job id from ``qsub -terse`` (``ID``, or ``ID.1-N:1`` for an array)."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = job_number(line.strip())
    if number(job_id) is None:
        raise ValueError(f"qsub printed no job id: {stdout.strip()!r}")
    return job_id


def qstat_argv(user: str) -> list[str]:
    """One query for every pending and running job of *user*, one row per array
    task, with each job's predecessors."""
    return ["qstat", "-xml", "-r", "-g", "d", "-u", user]


def parse_qstat(stdout: str) -> dict[str, NativeRow]:
    """Rows by native id (``ID`` or ``ID.TASK``) from :func:`qstat_argv`'s output.
    A job waiting for a predecessor in error state gets :data:`PREDECESSOR_FAILED`
    as its reason.

    Raises:
        ValueError: the output is not qstat's XML (a banner, a changed format).
    """
    try:
        root = ElementTree.fromstring(stdout)
    except ElementTree.ParseError as error:
        raise ValueError(f"qstat printed no XML ({error}): {stdout.strip()[:200]!r}") from None
    if root.tag != "job_info":
        raise ValueError(f"qstat printed XML without job_info: {stdout.strip()[:200]!r}")
    listed: list[tuple[str, str, list[str]]] = []
    for entry in root.iter("job_list"):
        job = number(entry.findtext("JB_job_number") or "")
        if job is None:
            continue
        task = number(entry.findtext("tasks") or "")
        native = f"{job}.{task}" if task is not None else str(job)
        before = [text.strip() for text in (e.text for e in entry.iter("predecessor_jobs"))
                  if text]
        listed.append((native, (entry.findtext("state") or "").strip(), before))
    in_error = {job_number(native) for native, state, _ in listed if "E" in state}
    rows = {}
    for native, state, before in listed:
        failed = any(job_number(parent) in in_error
                     for text in before for parent in text.replace(",", " ").split())
        rows[native] = NativeRow(native, state, PREDECESSOR_FAILED if failed else "")
    return rows


def qacct_argv(job: str) -> list[str]:
    """Accounting of one job (every task of an array)."""
    return ["qacct", "-j", job_number(job)]


def parse_qacct(stdout: str) -> dict[str, NativeRow]:
    """Rows from ``qacct -j``: one per record, state :data:`FINISHED`, the
    reason ``failed`` (``"37  : qmaster enforced h_rt..."``)."""
    rows = {}
    for block in re.split(r"^=+\s*$", stdout, flags=re.MULTILINE):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                fields[key] = value.strip()
        job, task = number(fields.get("jobnumber", "")), number(fields.get("taskid", ""))
        if job is None:
            continue
        native = f"{job}.{task}" if task is not None else str(job)
        status = number(fields.get("exit_status", "").split(" ", 1)[0])
        # Killed by a signal: the shell's convention 128 + signal.
        signal = status - 128 if status is not None and 128 < status < 160 else None
        failed = fields.get("failed", "")
        if _failed_code(failed) == _AT_A_LIMIT:
            failed = f"{_AT_A_LIMIT} {_limit_enforced(fields)}"
        rows[native] = NativeRow(native, FINISHED, failed, None if signal else status, signal)
    return rows


def _limit_enforced(fields: Mapping[str, str]) -> str:
    """Which limit a job of ``failed`` 37 was killed at, in words: its run
    time (``h_rt``), if it asked for one and ran that long (or how long it ran
    is not known); else its memory, if it asked for a limit (``h_vmem``, with
    its peak) and its peak is not known to be below it; else a limit of its
    queue that it did not ask for (``h_rt``, ``h_cpu`` or ``h_vmem``): ``"other"``."""
    asked = dict(re.findall(r"\b(h_rt|h_vmem)=([^,\s]+)", fields.get("category", "")))
    ran = _seconds(fields.get("ru_wallclock", ""))
    limit = _seconds(asked.get("h_rt", ""))
    if limit is not None and (ran is None or ran >= limit - 1):
        return "h_rt"
    peak = "".join(fields.get("maxvmem", "").split())  # "353.887 MB" too
    if "h_vmem" in asked and not _below(peak, asked["h_vmem"]):
        return f"h_vmem {asked['h_vmem']}" + (f" {peak}" if peak else "")
    return "other"


def _below(peak: str, limit: str) -> bool:
    """Whether a peak memory (``353.754MB``) is known to be below a limit of one
    slot (``200M``), so below the job's: then it was not killed for memory."""
    try:
        return parse_memory(peak) < parse_memory(limit)
    except ValueError:  # unknown, "0.000B" or "INFINITY": it may have been
        return False


def _seconds(text: str) -> float | None:
    """``"3s"``, ``"3"`` or ``"0:0:3"`` in seconds; None if it is none of them."""
    text = text.strip().removesuffix("s")
    try:
        parts = [float(part) for part in text.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def parse_sconf(stdout: str) -> dict[str, str]:
    """``qconf -sconf`` as a dict, its ``\\`` continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", stdout)
    settings = {}
    for line in joined.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and not key.startswith("#"):
            settings[key] = value.strip()
    return settings


def _failed_code(reason: str) -> int:
    """The number that begins qacct's ``failed`` field (``"37  : qmaster..."``)."""
    found = re.match(r"\s*([0-9]+)", reason)
    return (number(found.group(1)) or 0) if found else 0


def _at_a_limit(words: list[str]) -> Meaning:
    """The meaning of a job killed at a limit, from :func:`_limit_enforced`'s words."""
    if words[:1] == ["h_vmem"]:
        asked, peak = [*words[1:], "", ""][:2]
        return JobStatus.FAILED, (
            f"killed by SGE for using more memory than it asked for (h_vmem={asked} a slot"
            + (f"; its processes together reached {peak}" if peak else "")
            + "; qacct failed 37)")
    if words[:1] == ["other"]:
        return JobStatus.FAILED, ("killed by SGE at a limit of its queue it did not ask for "
                                  "(h_rt, h_cpu or h_vmem; qacct failed 37)")
    return JobStatus.TIMED_OUT, "killed by SGE at its h_rt limit (qacct failed 37)"


def _died_by_a_signal(signal: int | None) -> Meaning:
    """qacct's failed 100: deleted with qdel, or killed by a signal qdel does not
    send, a segfault or an abort (review: read as "deleted", so never retried)."""
    if signal in (None, *_DELETING_SIGNALS):
        return JobStatus.CANCELLED, "deleted (qdel) while running (qacct failed 100)"
    return JobStatus.FAILED, f"killed by signal {signal} (qacct failed 100)"


def meaning_of(row: NativeRow) -> Meaning | None:
    """corral's status and words for a row of qstat or qacct; None for a state
    with letters corral does not know (the base logs it and polls on)."""
    state = row.state
    if state == FINISHED:
        code = _failed_code(row.reason)
        if code == _AT_A_LIMIT:
            return _at_a_limit(row.reason.split()[1:])
        if code == _DIED_BY_A_SIGNAL:
            return _died_by_a_signal(row.signal)
        if code:
            return JobStatus.FAILED, f"SGE could not run it (qacct failed {row.reason})"
        if row.signal:
            return JobStatus.FAILED, f"killed by signal {row.signal}"
        if row.exit_status:
            return JobStatus.FAILED, f"exit code {row.exit_status}"
        return JobStatus.COMPLETED, ""
    if not state or set(state) - _LETTERS:
        return None
    if "E" in state:
        return JobStatus.FAILED, f"SGE put it in error state ({state})"
    if set(state) & set("rtsSTR") and "q" not in state:
        return JobStatus.RUNNING, ""
    return JobStatus.SUBMITTED, ""
