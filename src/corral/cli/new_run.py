"""A run made by ``corral submit``: the directory checked before it is made,
and the run taken away again when its first job was refused (no run and no
daemon are left behind by a submit that failed)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from corral.cli.control_requests import send_to_driver
from corral.cli.exits import CommandError

__all__ = ["check_new_run_dir", "undo_new_run"]


def check_new_run_dir(run_dir: Path) -> bool:
    """Whether *run_dir* holds no run yet (this submit makes it); refuse a
    directory with other files in it, which corral would make private and fill
    (all but the run's own ``corral.toml``, its daemon's settings: made first)."""
    from corral.core.run_files import holds_other_files
    from corral.journal.files import journal_path

    if journal_path(run_dir).exists():
        return False
    if holds_other_files(run_dir):
        raise CommandError(f"{run_dir} is not a corral run but holds other files; give --run "
                           "a new or empty directory, or one with only a corral.toml (corral "
                           "makes it private to you)")
    return True


def undo_new_run(run_dir: Path) -> None:
    """Stop the daemon this submit started and remove the run it made, unless
    another submit started at the same moment on the new run has a job in it:
    then the run is that one's too, and stays."""
    import fcntl
    import shutil
    import time

    from corral.control.server import NoDriver
    from corral.journal.files import LOCK_FILE, owner_of

    try:
        send_to_driver(run_dir, {"verb": "stop", "unless_used": True})
    except (NoDriver, OSError):
        pass
    except CommandError:  # it has another submit's jobs
        return
    deadline = time.monotonic() + 10
    while owner_of(run_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.02)  # the daemon closes its journal, then lets go of the run
    try:  # held while the run goes: a submit racing this one cannot take it meanwhile
        lock = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115
    except OSError:
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another submit's daemon drives it now
        if _has_jobs(run_dir):
            return
        # Moved out of the way first, and removed after: a daemon that another
        # submit starts from now on makes the run anew, and nothing it writes is
        # removed with this one. (Removed in place, a daemon that started while
        # the removal ran lost its files under it.)
        gone = run_dir.with_name(f".{run_dir.name}.removed-{os.getpid()}")
        try:
            os.rename(run_dir, gone)
        except OSError:
            return
    _keep_settings(gone, run_dir)
    shutil.rmtree(gone, ignore_errors=True)


def _keep_settings(gone: Path, run_dir: Path) -> None:
    """Put back the ``corral.toml`` the person had made in the run directory
    before its first submit, which was refused (its settings may be why)."""
    from corral.config_files import CONFIG_NAME

    if not (gone / CONFIG_NAME).exists():
        return
    with contextlib.suppress(FileExistsError):
        os.mkdir(run_dir, 0o700)
    if not (run_dir / CONFIG_NAME).exists():  # (a submit since then may have made the run)
        with contextlib.suppress(OSError):
            os.rename(gone / CONFIG_NAME, run_dir / CONFIG_NAME)


def _has_jobs(run_dir: Path) -> bool:
    from corral.journal.run import Run

    try:
        return bool(Run(run_dir).jobs(results=False))
    except FileNotFoundError:  # no journal was made
        return False
    except Exception:  # unreadable: not ours to remove
        return True
