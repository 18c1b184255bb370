"""LSF: a placeholder until its scheduler is built (see issue 11)."""

from __future__ import annotations

from corral.backends.base import BackendInfo, Capabilities, Probe, option_help
from corral.backends.batch.settings import options_help

__all__ = ["BACKEND", "answers"]


def answers() -> Probe:
    return Probe(False, "not built yet")


BACKEND = BackendInfo(
    name="lsf",
    title="LSF",
    description="batch jobs on LSF (being built)",
    capabilities=Capabilities(outlives_driver=True, chains_dependencies=True, holds=True,
                              enforces_walltime=True, packs_locally=False),
    factory="corral.backends.batch.lsf.backend:LsfBackend",
    option_help=option_help({}),
    backend_options=options_help(),
    answers=answers,
    driverless_control="corral.backends.batch.lsf.backend:control_without_driver",
)
