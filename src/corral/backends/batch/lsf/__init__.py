"""LSF: ``bsub``/``bjobs``/``bkill``/``bstop``/``bresume`` and the batch script template.

This file declares the backend for the registry (:mod:`corral.backends`) and
holds the probe ``backend="auto"`` runs; the backend's code, in
:mod:`corral.backends.batch.lsf.backend`, is imported when one is made.
"""

from __future__ import annotations

import re
from typing import Any

from corral.backends.info import BackendInfo, Probe, option_help
from corral.backends.batch import BATCH_CAPABILITIES, probing
from corral.backends.batch.settings import options_help

__all__ = ["BACKEND", "OWN_OPTIONS", "MINIMUM_VERSION", "answers", "lsf_version"]

#: LSF's own ``backend_options`` (see LsfScheduler): declared here, so that
#: ``corral backends`` lists them without importing the scheduler.
OWN_OPTIONS: dict[str, tuple[Any, str]] = {
    "unit_for_limits": ("MB", "the unit -M and rusage[mem=] are written in, the unit named "
                              "after the number, so the site's LSF_UNIT_FOR_LIMITS does not "
                              "matter: KB, MB, GB, TB, PB or EB"),
}


#: The first LSF whose ``bjobs`` has ``-json`` (IBM's release notes of 10.1.0.2,
#: "Command output formatting"; toil's LSF_JSON_OUTPUT_MIN_VERSION): below it every
#: status query fails, and a submitted job could never be followed.
MINIMUM_VERSION = "10.1.0.2"

_VERSION = re.compile(r"LSF\b\D*?(\d+(?:\.\d+)+)")


def answers(timeout: float = 5.0) -> Probe:
    """Whether an LSF cluster corral can follow answers here: ``bsub``, ``bjobs``
    and ``lsid`` are on PATH, and ``lsid`` names LSF, of :data:`MINIMUM_VERSION` or
    later, within *timeout* seconds."""
    if (absent := probing.missing("bsub", "bjobs", "lsid")) is not None:
        return absent
    done = probing.answered(["lsid"], timeout)
    if isinstance(done, Probe):
        return done
    said = (done.stdout.strip().splitlines() or [""])[0]
    if "LSF" not in said:
        return Probe(False, f"lsid does not name LSF: {said[:200]}")
    version = lsf_version(said)
    if version is not None and _numbers(version) < _numbers(MINIMUM_VERSION):
        return Probe(False, f"lsid says LSF {version}, but corral needs LSF {MINIMUM_VERSION} "
                            "or later (the first whose bjobs has -json)")
    return Probe(True, f"lsid says {said[:200]}")


def lsf_version(said: str) -> str | None:
    """The version in ``lsid``'s first line: ``10.1.0.14`` from ``IBM Spectrum LSF
    Standard 10.1.0.14, Apr 20 2023``, ``9.1.3.0`` from ``IBM Platform LSF Standard
    9.1.3.0, Jul 04 2014``; None when it names none (the probe then cannot tell,
    and does not refuse)."""
    found = _VERSION.search(said)
    return None if found is None else found.group(1)


def _numbers(version: str) -> tuple[int, ...]:
    """``10.1`` as ``(10, 1, 0, 0)``: a version compared number by number, a
    missing number being 0 (``10.1`` is before ``10.1.0.2``)."""
    numbers = tuple(int(part) for part in version.split("."))
    return numbers + (0,) * (4 - len(numbers))


BACKEND = BackendInfo(
    name="lsf",
    title="LSF",
    description="batch jobs on an IBM Spectrum LSF cluster (bsub, bjobs, bkill, bstop)",
    capabilities=BATCH_CAPABILITIES,
    factory="corral.backends.batch.lsf.backend:LsfBackend",
    option_help=option_help({
        "cores": "-n N, and -R span[hosts=1] above one",
        "memory": "-R rusage[mem=<N>MB] (per core where LSF reserves per task) and -M <N>MB",
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
