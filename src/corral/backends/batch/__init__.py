"""Batch schedulers (Slurm, Grid Engine, PBS, LSF, one described in settings): what every
one shares lives here, each scheduler's own pieces in its folder."""

from __future__ import annotations

from corral.backends.info import Capabilities

__all__ = ["BATCH_CAPABILITIES"]

#: What every batch scheduler on the shared base does: its jobs outlive the driver,
#: it chains dependencies (``afterok``, ``-hold_jid``, ``done()``), holds pending jobs
#: and ends a job at its walltime; the cluster, not corral, packs the jobs.
BATCH_CAPABILITIES = Capabilities(outlives_driver=True, chains_dependencies=True, holds=True,
                                  enforces_walltime=True, packs_locally=False)
