"""LSF: ``bsub``/``bjobs``/``bkill``/``bstop``/``bresume`` and the batch script template.

This file declares the backend for the registry (:mod:`corral.backends`) and
holds the probe ``backend="auto"`` runs; the backend's code, in
:mod:`corral.backends.batch.lsf.backend`, is imported when one is made.
"""

from __future__ import annotations

from typing import Any

from corral.backends.info import BackendInfo, Probe, option_help
from corral.backends.batch import BATCH_CAPABILITIES, probing
from corral.backends.batch.settings import options_help

__all__ = ["BACKEND", "OWN_OPTIONS", "answers"]

#: LSF's own ``backend_options`` (see LsfScheduler): declared here, so that
#: ``corral backends`` lists them without importing the scheduler.
OWN_OPTIONS: dict[str, tuple[Any, str]] = {
    "unit_for_limits": ("KB", "the site's LSF_UNIT_FOR_LIMITS (lsf.conf), the unit of -M and "
                              "rusage[mem=]: KB, MB, GB, TB, PB or EB"),
}


def answers(timeout: float = 5.0) -> Probe:
    """Whether an LSF cluster answers here: ``bsub`` and ``lsid`` are on PATH
    and ``lsid`` names IBM Spectrum LSF (or Platform LSF) within *timeout* seconds."""
    if (absent := probing.missing("bsub", "bjobs", "lsid")) is not None:
        return absent
    done = probing.answered(["lsid"], timeout)
    if isinstance(done, Probe):
        return done
    said = (done.stdout.strip().splitlines() or [""])[0]
    if "LSF" not in said:
        return Probe(False, f"lsid does not name LSF: {said[:200]}")
    return Probe(True, f"lsid says {said[:200]}")


BACKEND = BackendInfo(
    name="lsf",
    title="LSF",
    description="batch jobs on an IBM Spectrum LSF cluster (bsub, bjobs, bkill, bstop)",
    capabilities=BATCH_CAPABILITIES,
    factory="corral.backends.batch.lsf.backend:LsfBackend",
    option_help=option_help({
        "cores": "-n N, and -R span[hosts=1] above one",
        "memory": "-R rusage[mem=N] and -M N, in unit_for_limits",
        "walltime": "-W <minutes, rounded up>",
        "gpus": "-gpu num=N",
        "name": "-J (an array: NAME[1-N], the first job's name and '(+N)')",
        "after": "-w done(ID) while the parent is known",
        "priority": "order of submission",
        "retries": "a new bsub per retry",
        "timeout": "bkill after it",
        "cwd": "corral's runtime changes to it on the node",
        "env": "set by corral's runtime on the node",
        "partition": "-q QUEUE",
        "account": "-P PROJECT",
        "constraint": "-R select[EXPR]",
        "setup": "lines of the batch script",
        "extra_flags": "added to bsub",
        "python": "runs corral's runtime in the batch script",
        "bundle": "one array element runs them in turn",
    }, not_used=("qos",)),
    backend_options=options_help(OWN_OPTIONS),
    answers=answers,
    driverless_control="corral.backends.batch.lsf.backend:control_without_driver",
)
