"""Slurm: ``sbatch``/``squeue``/``sacct``/``scancel`` and the batch script template."""
