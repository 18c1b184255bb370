"""The Dask directories of a run's sessions, and those killed drivers left.

Each session of a run on Dask keeps a directory of its own in the run
directory (its attempts' claims, its pause mark: see
:mod:`corral.backends.dask.task`), named with the session's token and removed
when the session ends. A driver that was killed leaves its directory, and the
workers may still be stopping its calls, which get their grace to run their
``finally`` blocks: the next session waits for them (see
``DaskBackend._share``), once, and then removes what the dead driver left.

Each directory names its driver (host, pid and the process's start time, so
that a pid used again, as after a container's restart, is not taken for the
driver), and is made whole under another name before it is renamed into
place: a session never finds one without its driver's name. So a session
beside another in the same directory (two programs with one ``workdir``)
neither waits for the other's jobs nor removes its directory.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

__all__ = ["PREFIX", "make", "left_by_dead_drivers", "token_of", "remove"]

#: How a session's directory is named, before its token.
PREFIX = ".dask-"
#: The file in it that names its driver: "<host> <pid> <start time>".
_DRIVER = "driver"


def make(share: Path, inside: tuple[str, ...]) -> None:
    """Make the session directory *share*, with the directories *inside* and
    its driver's name, whole before it appears under its name."""
    making = share.with_name(f".making{share.name}")
    making.mkdir(mode=0o700, parents=True)
    for name in inside:
        (making / name).mkdir(mode=0o700)
    (making / _DRIVER).write_text(f"{socket.gethostname()} {os.getpid()} {_started(os.getpid())}")
    making.rename(share)


def token_of(share: Path) -> str:
    """The token of the session whose directory is *share*."""
    return share.name[len(PREFIX):]


def left_by_dead_drivers(run_dir: Path, own: Path) -> list[Path]:
    """The session directories in *run_dir*, other than *own*, whose driver is
    not known to live: one on this host that has ended, on another host (it
    cannot be asked), or unnamed (a corral from before names)."""
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
        if _driver(share)[0] in (None, socket.gethostname()) and not _driven_here(share):
            shutil.rmtree(share, ignore_errors=True)


def _driven_here(share: Path) -> bool:
    host, pid, started = _driver(share)
    if host != socket.gethostname() or pid is None:
        return False
    # (by its start too: a pid used again, by this process even, is not its driver)
    return _started(pid) == started


def _driver(share: Path) -> tuple[str | None, int | None, str | None]:
    try:
        host, pid, started = (share / _DRIVER).read_text().split()
        return host, int(pid), started
    except (OSError, ValueError):
        return None, None, None


def _started(pid: int) -> str | None:
    """When process *pid* started (as /proc says, in clock ticks), or None if
    it does not run (a zombie, killed and not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):  # (fields 3 and 22 of the file;
        return None  # the name, field 2, may hold spaces)
    return fields[19].decode()
