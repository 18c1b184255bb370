"""Where the config files are: the user's, and ``corral.toml`` in a directory.

Apart from :mod:`corral.config`, which reads and checks them, so that a
command that only needs to know whether there is any config to read (every
``corral`` command asks) does not import what reading it takes.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CONFIG_NAME", "user_config_path", "config_paths", "config_files_in", "same_file"]

CONFIG_NAME = "corral.toml"


def user_config_path() -> Path:
    """Return the user's config file: ``$CORRAL_CONFIG``, else the platform's place.

    The platform's place is ``platformdirs.user_config_path("corral")``, e.g.
    ``~/.config/corral/corral.toml`` on Linux. The file need not exist.
    """
    override = os.environ.get("CORRAL_CONFIG")
    if override:
        return Path(override).expanduser()
    import platformdirs  # only needed when no override is set

    return platformdirs.user_config_path("corral") / CONFIG_NAME


def config_paths(cwd: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """The files :func:`corral.config.load_config` reads for *cwd* (default: the
    current directory), whether or not they exist: the user's, then the local one."""
    return user_config_path(), Path(os.getcwd() if cwd is None else cwd) / CONFIG_NAME


def config_files_in(cwd: str | os.PathLike[str] | None = None) -> list[Path]:
    """Those of :func:`config_paths` that exist."""
    return [path for path in config_paths(cwd) if path.exists()]


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file (False if either is missing)."""
    try:
        return first.samefile(second)
    except OSError:
        return False
