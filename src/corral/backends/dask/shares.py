"""The Dask directories of a run's sessions, and those killed drivers left.

Each session of a run on Dask keeps a directory of its own in the run
directory (its attempts' claims, its pause mark: see
:mod:`corral.backends.dask.task`), named with the session's token and removed
when the session ends. A driver that was killed leaves its directory, and the
workers may still be stopping its calls, which get their grace to run their
``finally`` blocks: the next session waits for them (see
``DaskBackend._share``), once, and then removes what the dead driver left.
Each directory says which driver made it (host and pid), so that a session
beside another in the same directory (two programs with one ``workdir``)
neither waits for the other's jobs nor removes its directory.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

__all__ = ["PREFIX", "mark_as_ours", "left_by_dead_drivers", "remove"]

#: How a session's directory is named, before its token.
PREFIX = ".dask-"
#: The file in it that names its driver: "<host> <pid>".
_DRIVER = "driver"


def mark_as_ours(share: Path) -> None:
    """Say in *share* that this process drives it."""
    (share / _DRIVER).write_text(f"{socket.gethostname()} {os.getpid()}")


def left_by_dead_drivers(run_dir: Path, own: Path) -> list[Path]:
    """The session directories in *run_dir*, other than *own*, whose driver is
    not known to live: one on this host that has ended, on another host (it
    cannot be asked), or unnamed (a driver killed before it wrote its name,
    or a corral from before names)."""
    left = []
    for share in run_dir.glob(f"{PREFIX}*"):
        # (not a link: what it points to is no session's, and must not be removed)
        if (share != own and not share.is_symlink() and share.is_dir()
                and not _driven_here(share)):
            left.append(share)
    return left


def remove(shares: list[Path]) -> None:
    """Remove the directories of dead drivers on this host (those of another
    host's drivers are left to them: theirs may live)."""
    for share in shares:
        if _driver(share)[0] in (None, socket.gethostname()):
            shutil.rmtree(share, ignore_errors=True)


def _driven_here(share: Path) -> bool:
    host, pid = _driver(share)
    if host != socket.gethostname() or pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (another user's process: alive)
        return True
    return True


def _driver(share: Path) -> tuple[str | None, int | None]:
    try:
        host, pid = (share / _DRIVER).read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None, None
