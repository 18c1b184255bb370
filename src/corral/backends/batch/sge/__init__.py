"""Grid Engine (SGE, UGE, OGS): ``qsub``/``qstat -xml``/``qacct``/``qdel`` and the
batch script template.

This file declares the backend for the registry (:mod:`corral.backends`) and
holds the probe ``backend="auto"`` runs; the backend's code, in
:mod:`corral.backends.batch.sge.backend`, is imported when one is made.
"""

from __future__ import annotations

import getpass
from typing import Any

from corral.backends.info import BackendInfo, Probe, option_help
from corral.backends.batch import BATCH_CAPABILITIES, probing
from corral.backends.batch.settings import options_help

__all__ = ["BACKEND", "answers", "OWN_OPTIONS"]

#: Words the first line of ``qstat -help`` starts with on a Grid Engine
#: (PBS's and Slurm's qstat print no such line).
_GRID_ENGINES = ("SGE", "GE", "UGE", "OGS", "Univa", "Altair Grid Engine")

#: Grid Engine's own ``backend_options`` (also in the scheduler, checked there).
OWN_OPTIONS: dict[str, tuple[Any, str]] = {
    "parallel_environment": ("smp", "the parallel environment a job of several cores asks "
                                    "for (qsub -pe NAME N)"),
    "memory_resource": ("h_vmem", "the resource a job's memory is asked as, per slot "
                                  "(qsub -l NAME=<memory / cores>M): h_vmem, mem_free..."),
    "gpu_resource": ("gpu", "the consumable resource GPUs are asked as (qsub -l NAME=N)"),
    "gpus_counted_per": ("slot", "how the site's gpu_resource complex counts: 'slot' "
                                 "(consumable YES, SGE's default: N per slot, so corral asks "
                                 "gpus / cores) or 'job' (consumable JOB: corral asks gpus)"),
}


def answers(timeout: float = 5.0) -> Probe:
    """Whether a Grid Engine answers here: ``qsub`` and ``qstat`` are on PATH,
    ``qstat -help`` names a Grid Engine (PBS's ``qstat`` has the same name) and
    ``qstat`` reaches the qmaster within *timeout* seconds."""
    if (absent := probing.missing("qsub", "qstat")) is not None:
        return absent
    done = probing.ask(["qstat", "-help"], timeout)
    if isinstance(done, Probe):
        return done
    first = (done.stdout.strip().splitlines() or [""])[0].strip()
    if first.split(" ", 1)[0] not in _GRID_ENGINES:
        return Probe(False, f"qstat -help does not name a Grid Engine (it begins "
                            f"{first[:60]!r})")
    done = probing.answered(["qstat", "-u", getpass.getuser()], timeout,
                            f"qstat -help says {first}, but qstat")
    if isinstance(done, Probe):
        return done
    return Probe(True, f"qstat -help says {first}")


BACKEND = BackendInfo(
    name="sge",
    title="SGE",
    description="batch jobs on Grid Engine: SGE, UGE, OGS (qsub, qstat, qacct, qdel)",
    capabilities=BATCH_CAPABILITIES,
    factory="corral.backends.batch.sge.backend:SgeBackend",
    option_help=option_help({
        "cores": "-pe <parallel_environment> N (none for 1 core)",
        "memory": "-l <memory_resource>=<MB / cores, rounded up>M: SGE counts it per slot",
        "walltime": "-l h_rt=<seconds>",
        "gpus": "-l <gpu_resource>=<N / cores>, a whole number per slot (with "
                "gpus_counted_per='job': N)",
        "name": "-N (letters, digits and _.+-,()[] kept; an array: the first job's name "
                "and '(+N)')",
        "after": "-hold_jid ID while the parent is known (a whole array for one of its tasks)",
        "priority": "order of submission",
        "retries": "a new qsub per retry",
        "timeout": "qdel after it",
        "cwd": "corral's runtime changes to it on the node",
        "env": "set by corral's runtime on the node (the job also gets the driver's, -V)",
        "partition": "-q QUEUE",
        "account": "-P PROJECT",
        "constraint": "-l EXPR (a resource request, e.g. arch=lx-amd64)",
        "setup": "lines of the batch script",
        "extra_flags": "added to qsub",
        "python": "runs corral's runtime in the batch script",
        "bundle": "one array task runs them in turn",
    }, not_used=("qos",)),
    backend_options=options_help(OWN_OPTIONS),
    answers=answers,
    driverless_control="corral.backends.batch.sge.backend:control_without_driver",
)
