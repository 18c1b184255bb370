"""Where jobs run. ``base`` defines the protocol; one module per backend."""

from __future__ import annotations

import shutil
import subprocess

__all__ = ["make_backend", "resolve_backend", "BACKENDS"]

BACKENDS = ("local", "slurm", "auto")


def resolve_backend(name: str) -> str:
    """The backend *name* stands for: ``"auto"`` is ``"slurm"`` when ``sbatch`` is
    on PATH and the cluster answers (``sbatch --version`` and ``squeue --me``
    succeed within a few seconds), else ``"local"``.

    Raises:
        ValueError: *name* is not a known backend.
    """
    if name == "auto":
        return "slurm" if slurm_answers() else "local"
    if name in BACKENDS:
        return name
    import difflib

    close = difflib.get_close_matches(name, BACKENDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown backend {name!r}{hint} (known: {', '.join(BACKENDS)})")


def slurm_answers(timeout: float = 5.0) -> bool:
    """Whether a Slurm controller answers this machine's client commands."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return False
    try:
        probe = subprocess.run(["squeue", "--noheader", "--me", "--states=all", "--format=%i"],
                               capture_output=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def make_backend(name: str, **settings):
    """Build the backend called *name* (already resolved) with the scheduler's settings."""
    if name == "local":
        from corral.backends.local.backend import LocalBackend

        settings.pop("slurm", None)
        return LocalBackend(**settings)
    if name == "slurm":
        from corral.backends.batch.slurm.backend import SlurmBackend

        settings.pop("spool_parent", None)
        return SlurmBackend(**settings)
    raise ValueError(f"unknown backend {name!r}")
