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
from corral.core.kept_notices import NOTICES_DIR
from corral.core.runlog import LOG_FILE
from corral.journal.cleaning import CLEANED_FILE
from corral.journal.files import JOURNAL_FILE, LOCK_FILE, STOP_ASKED_FILE, STOPPED_FILE
from corral.journal.writer_lock import WRITER_LOCK_FILE
from corral.runtime.outcomes import OUTCOMES_DIR

__all__ = ["DAEMON_LOG", "NAMES_NO_JOB_MAY_TAKE", "holds_other_files"]

#: The log of the run's daemon (``corral submit``), beside the run's own.
DAEMON_LOG = "daemon.log"


#: The files corral makes as a run starts, and the run's own settings: what
#: another driver or ``corral submit`` started at the same moment may have made
#: so far (``journal.db.bak`` is the user's).
_THE_RUNS_OWN = frozenset({
    DAEMON_LOG, SOCKET_FILE, LOG_FILE, LOCK_FILE, WRITER_LOCK_FILE, CONFIG_NAME, JOURNAL_FILE,
    *(JOURNAL_FILE + suffix for suffix in ("-wal", "-shm", "-journal"))})


#: What a job id may not be: a job's files go to ``<run directory>/<id>``, and
#: a job named "outcomes" lost its output when the run's outcome logs were
#: removed at its end; one named "corral.log" ran, then failed to save its
#: output (and so ran again at every rerun).
#: One named "cleaned.json" made the run uncleanable (attack review).
NAMES_NO_JOB_MAY_TAKE = _THE_RUNS_OWN | {OUTCOMES_DIR, STOPPED_FILE, CLEANED_FILE,
                                         STOP_ASKED_FILE, NOTICES_DIR}


def holds_other_files(run_dir: Path) -> bool:
    """Whether *run_dir* is an existing directory that holds no run and files
    corral did not make there (the run's ``corral.toml`` aside). A directory
    with the run's lock is one, also if its journal was moved away to start
    the run afresh (its job directories are then the new run's to reuse)."""
    try:
        names = {entry.name for entry in os.scandir(run_dir)}
    except (FileNotFoundError, NotADirectoryError):
        return False
    if JOURNAL_FILE in names or LOCK_FILE in names:
        return False
    return not names <= _THE_RUNS_OWN
