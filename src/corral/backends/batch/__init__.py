"""Batch schedulers (Slurm, ...): what every one shares lives here, each scheduler's own
pieces in its folder."""
