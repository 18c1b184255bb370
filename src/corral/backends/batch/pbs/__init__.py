"""PBS: OpenPBS / PBS Pro and Torque (``qsub``, ``qstat``, ``qdel``, ``qhold``, ``qrls``).

This file declares the backend for the registry (:mod:`corral.backends`) and
holds the probe that tells the dialects apart by what answers: ``qstat --version``
prints ``pbs_version = ...`` on OpenPBS/PBS Pro and ``Version: ...`` on Torque;
Grid Engine's ``qstat`` (another ``qsub`` of the same name) says "SGE" in
``qstat -help``; Slurm's Torque wrappers answer ``qstat -u`` and nothing else.
"""

from __future__ import annotations

import getpass
import os
import shutil
from dataclasses import dataclass
from typing import Any

from corral.backends.info import BackendInfo, Probe, option_help
from corral.backends.batch import BATCH_CAPABILITIES, probing
from corral.backends.batch.settings import options_help

__all__ = ["BACKEND", "answers", "probe_dialect", "DialectProbe", "DIALECTS",
           "OWN_OPTIONS"]

#: The ``dialect`` option's values: "auto" asks ``qstat --version``.
DIALECTS = ("auto", "pro", "torque")
#: PBS's own ``backend_options`` (see :attr:`BatchScheduler.own_options`).
OWN_OPTIONS: dict[str, tuple[Any, str]] = {
    "dialect": ("auto", "PBS's dialect: 'pro' (OpenPBS, PBS Pro: -l select, -J arrays, qstat "
                        "-f -x -t), 'torque' (-l nodes=1:ppn, -t arrays, Torque's qstat -f), "
                        "or 'auto' (asks qstat --version)"),
}


@dataclass(frozen=True, slots=True)
class DialectProbe:
    """Which PBS dialect answers here ("pro", "torque", or None: no PBS), and why."""

    dialect: str | None
    why: str


_found: dict[str, DialectProbe] = {}


def probe_dialect(timeout: float = 5.0) -> DialectProbe:
    """The dialect of the ``qstat`` on PATH, asked once per process and ``qstat``."""
    qstat = shutil.which("qstat")
    if qstat is None:
        return DialectProbe(None, "qstat is not on PATH")
    key = os.path.realpath(qstat)
    if key not in _found:
        _found[key] = _ask(qstat, timeout)
    return _found[key]


def _said(qstat: str, *args: str, timeout: float) -> tuple[int, str]:
    """What ``qstat ARGS`` printed (stdout and stderr) and its exit status; -1 and why
    when it could not run or did not answer in time (it and its children killed)."""
    done = probing.ask([qstat, *args], timeout)
    if isinstance(done, Probe):
        return -1, done.why.replace(qstat, "qstat", 1)
    return done.returncode, (done.stdout + done.stderr).strip()


def _ask(qstat: str, timeout: float) -> DialectProbe:
    code, version = _said(qstat, "--version", timeout=timeout)
    if code == -1:  # hung or not runnable: asking more would only wait longer
        return DialectProbe(None, version)
    first = (version.splitlines() or [""])[0].strip()
    if first.startswith("pbs_version"):
        return DialectProbe("pro", f"qstat --version says {first} (OpenPBS/PBS Pro)")
    if first.startswith("Version:"):
        return DialectProbe("torque", f"qstat --version says {first} (Torque)")
    _, usage = _said(qstat, "-help", timeout=timeout)
    first = (usage.splitlines() or [""])[0].strip()
    if first.split(" ")[0] in ("SGE", "GE", "OGS", "UGE", "SoGE"):
        return DialectProbe(None, f"qstat is Grid Engine's (qstat -help says {first})")
    code, listed = _said(qstat, "-u", getpass.getuser(), timeout=timeout)
    if code == 0:
        return DialectProbe("torque", "qstat -u answers but not qstat --version: Torque's "
                                      "dialect (e.g. Slurm's Torque wrappers)")
    last = (listed.splitlines() or [f"exit status {code}"])[-1][:200]
    return DialectProbe(None, f"qstat answers like no PBS: {last}")


def answers(timeout: float = 5.0) -> Probe:
    """Whether a PBS server answers here, in which dialect, and why."""
    absent = probing.missing("qsub")
    if absent is not None:
        return absent
    found = probe_dialect(timeout)
    return Probe(found.dialect is not None,
                 found.why if found.dialect is None else f"dialect {found.dialect}: {found.why}")


BACKEND = BackendInfo(
    name="pbs",
    title="PBS",
    description="batch jobs on OpenPBS, PBS Pro or Torque (qsub, qstat, qdel, qhold, qrls)",
    capabilities=BATCH_CAPABILITIES,
    factory="corral.backends.batch.pbs.backend:PbsBackend",
    option_help=option_help({
        "cores": "-l select=1:ncpus=N (Torque: -l nodes=1:ppn=N)",
        "memory": "-l select=...:mem=<MB>mb (Torque: -l mem=<MB>mb)",
        "walltime": "-l walltime=HH:MM:SS",
        "gpus": "-l select=...:ngpus=N (Torque: -l nodes=1:gpus=N)",
        "name": "-N, letters, digits and _.+- only (an array: the first job's name and '+N')",
        "after": "-W depend=afterok:ID while the parent is surely known",
        "priority": "order of submission",
        "retries": "a new qsub per retry",
        "timeout": "qdel after it",
        "cwd": "corral's runtime changes to it on the node",
        "env": "set by corral's runtime on the node",
        "partition": "-q QUEUE",
        "account": "-A ACCOUNT",
        "setup": "lines of the batch script",
        "extra_flags": "added to qsub",
        "python": "runs corral's runtime in the batch script",
        "bundle": "one array task (-J; Torque: one job) runs them in turn",
    }, not_used=("qos", "constraint")),
    backend_options=options_help(OWN_OPTIONS),
    answers=answers,
    driverless_control="corral.backends.batch.pbs.backend:control_without_driver",
)
