"""Where the config files are: the site's, the user's, and ``corral.toml`` in a directory.

Apart from :mod:`corral.config`, which reads and checks them, so that a
command that only needs to know whether there is any config to read (every
``corral`` command asks) does not import what reading it takes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = ["CONFIG_NAME", "SITE_CONFIG", "site_config_path", "user_config_path", "config_paths",
           "config_files_in", "every_config_path", "same_file", "named_by_variables",
           "platform_config_path", "where_to_write"]

CONFIG_NAME = "corral.toml"

#: The site's config file, read first, under every user's: where a sysadmin
#: describes the site's scheduler (``[schedulers.NAME]``) and its profiles once.
SITE_CONFIG = Path("/etc/corral") / CONFIG_NAME


def site_config_path() -> Path | None:
    """Return the site's config file: ``$CORRAL_SITE_CONFIG`` (set empty: none),
    else :data:`SITE_CONFIG`. The file need not exist."""
    override = os.environ.get("CORRAL_SITE_CONFIG")
    if override is not None:
        return Path(override).expanduser() if override else None
    return SITE_CONFIG


def user_config_path() -> Path:
    """Return the user's config file: ``$CORRAL_CONFIG``, else the platform's place.

    The platform's place is ``platformdirs.user_config_path("corral")``, e.g.
    ``~/.config/corral/corral.toml`` on Linux. The file need not exist.
    """
    override = os.environ.get("CORRAL_CONFIG")
    if override:
        return Path(override).expanduser()
    return platform_config_path()


def platform_config_path() -> Path:
    """The user's config file where ``$CORRAL_CONFIG`` names none."""
    import platformdirs  # only needed when no override is set

    return platformdirs.user_config_path("corral") / CONFIG_NAME


def named_by_variables() -> dict[Path, str]:
    """The config files an environment variable names, each with that variable
    (``CORRAL_SITE_CONFIG``, ``CORRAL_CONFIG``): files a person asked for, which
    must exist. A missing file in a default place is no config; a misspelt
    variable's was read as none too, and the job meant for its settings ran
    under none of them (attack review)."""
    named = {}
    site = site_config_path()
    if site is not None and os.environ.get("CORRAL_SITE_CONFIG"):
        named[site] = "CORRAL_SITE_CONFIG"
    if os.environ.get("CORRAL_CONFIG"):
        named[user_config_path()] = "CORRAL_CONFIG"
    return named


def config_paths(cwd: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """The files :func:`corral.config.load_config` reads for *cwd* (default: the
    current directory), whether or not they exist: the user's, then the local one.

    A current directory that was deleted (under the shell that runs the command)
    holds no file: the user's file stands in for its own, once more, which the
    readers take once. (Attack review: every command failed there, given an
    absolute run or not, with "No such file or directory".)
    """
    user_file = user_config_path()
    if cwd is None:
        try:
            cwd = os.getcwd()
        except FileNotFoundError:
            return user_file, user_file
    return user_file, Path(cwd) / CONFIG_NAME


def every_config_path(cwd: str | os.PathLike[str] | None = None) -> list[Path]:
    """The site's file and those of :func:`config_paths`, each once, whether or
    not they exist: where a message tells a person to write a setting (one that
    named only the user's and the local file sent a site's admin elsewhere)."""
    site = site_config_path()
    return list(dict.fromkeys((*([site] if site is not None else []), *config_paths(cwd))))


def where_to_write(paths: Iterable[Path]) -> str:
    """The files of *paths* a person may write a setting in, for a message
    ("... in A or B"): not /dev/null nor another device, which a config variable
    names to read no file (cold review: messages said to add a table to /dev/null)."""
    files = [str(path) for path in dict.fromkeys(paths) if not _is_device(path)]
    return " or ".join(files) or ("a config file (none is read now: the config variables "
                                  "name /dev/null)")


def _is_device(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def config_files_in(cwd: str | os.PathLike[str] | None = None) -> list[Path]:
    """The site's file and those of :func:`config_paths` that exist, each once."""
    return [path for path in every_config_path(cwd) if path.exists()]


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file (False if either is missing)."""
    try:
        return first.samefile(second)
    except OSError:
        return False
