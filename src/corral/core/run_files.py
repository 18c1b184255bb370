"""The files corral makes in a run directory, and which directories may become one.

A run directory is made private to its user (0700) and filled with the
journal, logs and job directories. So corral takes a new or empty directory,
a run already, or one with only the run's own ``corral.toml``; never one that
holds other files (a project directory given by mistake, ``journal="."``),
which it would lock its group out of.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.config_files import CONFIG_NAME
from corral.control.server import SOCKET_FILE
from corral.core.runlog import LOG_FILE
from corral.journal.store import JOURNAL_FILE, LOCK_FILE, journal_path
from corral.journal.writer_lock import WRITER_LOCK_FILE

__all__ = ["DAEMON_LOG", "made_by_corral", "holds_other_files"]

#: The log of the run's daemon (``corral submit``), beside the run's own.
DAEMON_LOG = "daemon.log"


def made_by_corral(name: str) -> bool:
    """Whether a file of a run directory is one corral makes as a run starts:
    what another driver or ``corral submit`` started at the same moment has
    made so far."""
    return (name in (DAEMON_LOG, SOCKET_FILE, LOG_FILE, LOCK_FILE, WRITER_LOCK_FILE)
            or name.startswith(JOURNAL_FILE))


def holds_other_files(run_dir: Path) -> bool:
    """Whether *run_dir* is an existing directory that holds no run and files
    corral did not make there (the run's ``corral.toml`` aside)."""
    if journal_path(run_dir).exists():
        return False
    try:
        entries = list(os.scandir(run_dir))
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(not made_by_corral(entry.name) and entry.name != CONFIG_NAME for entry in entries)
