"""A run made by ``corral submit`` or ``corral pause``: the directory checked
before it is made, and the run taken away again when the command that made it
was refused or cut short (no run and no daemon are left behind by a submit
that failed)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from corral.cli.control_requests import send_to_driver
from corral.cli.exits import EXIT_INTERRUPTED, EXIT_TERMINATED, CommandError, Terminated

__all__ = ["NewRun", "check_new_run_dir", "making_run", "undo_new_run"]


@dataclass(frozen=True)
class NewRun:
    """A run a first submit makes, and what was there before it: what a refused
    submit puts back (attack review: the undo removed a directory the person
    had made, the current one with ``--run .``)."""

    path: Path
    #: The directory's mode if it existed before the submit (empty, or with
    #: only a corral.toml); None if corral makes it.
    mode_before: int | None
    #: The highest directory corral makes for it (``--run a/b/c`` with no ``a``: ``a``).
    first_made: Path | None


def check_new_run_dir(run_dir: Path) -> NewRun | None:
    """The run *run_dir* becomes, if it holds none yet (this submit makes it);
    None if it is a run. Refuse a directory with other files in it, which
    corral would make private and fill (all but the run's own ``corral.toml``,
    its daemon's settings: made first)."""
    from corral.journal.files import journal_path, refuse_a_run_inside_a_run

    try:
        if journal_path(run_dir).exists():
            return None
    except OSError:  # (another user's run, say: what the request meets says it, in one line)
        return None
    try:
        refuse_a_run_inside_a_run(run_dir.resolve())
    except ValueError as error:
        raise CommandError(str(error)) from None
    from corral.core.run_files import holds_other_files  # (a new run only)

    if holds_other_files(run_dir):
        raise CommandError(f"{run_dir} is not a corral run but holds other files; give --run "
                           "a new or empty directory, or one with only a corral.toml (corral "
                           "makes it private to you)")
    try:
        return NewRun(run_dir, stat.S_IMODE(run_dir.stat().st_mode), None)
    except FileNotFoundError:
        first = run_dir
        while not first.parent.exists() and first.parent != first:
            first = first.parent
        return NewRun(run_dir, None, first)
    except OSError:  # (a file in its path: making it says so, one line)
        return NewRun(run_dir, None, None)


@contextlib.contextmanager
def making_run(run_dir: Path, nothing_done: str) -> Iterator[NewRun | None]:
    """Around a command that may make the run at *run_dir* (the first submit,
    or a pause that readies a run before its first job): a refusal, a Ctrl-C
    or a SIGTERM takes the run it was making away again, and one cut short
    says so, beginning with *nothing_done* ("nothing was submitted")."""
    new_run = check_new_run_dir(run_dir)
    try:
        yield new_run
    except (CommandError, KeyboardInterrupt, Terminated) as error:
        if new_run is not None and undo_new_run(new_run) and not isinstance(error, CommandError):
            stopped = EXIT_INTERRUPTED if isinstance(error, KeyboardInterrupt) else EXIT_TERMINATED
            raise CommandError(f"interrupted: {nothing_done}, and the run this command was "
                               "making is taken away again", stopped) from None
        raise


def undo_new_run(new: NewRun) -> bool:
    """Stop the daemon this submit started and take away the run it made, unless
    another submit started at the same moment on the new run has a job in it:
    then the run is that one's too, and stays. A directory that was there
    before is left as it was, with what it held. Returns whether the run was
    taken away (or emptied again)."""
    import fcntl
    import time

    from corral.control.server import NoDriver
    from corral.journal.files import LOCK_FILE, owner_of

    run_dir = new.path
    try:
        send_to_driver(run_dir, {"verb": "stop", "unless_used": True})
    except (NoDriver, OSError):
        pass
    except CommandError:  # it has another submit's jobs
        return False
    deadline = time.monotonic() + 10
    while owner_of(run_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.02)  # the daemon closes its journal, then lets go of the run
    if not os.path.lexists(run_dir):
        return True  # (cut short before the daemon made it: nothing to take away)
    try:  # held while the run goes: a submit racing this one cannot take it meanwhile
        lock = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115
    except OSError:
        return False
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another submit's daemon drives it now
        if _has_jobs(run_dir):
            return False
        if new.mode_before is not None:
            _empty_again(run_dir, new.mode_before)
            return True
        # Moved out of the way first, and removed after: a daemon that another
        # submit starts from now on makes the run anew, and nothing it writes is
        # removed with this one. (Removed in place, a daemon that started while
        # the removal ran lost its files under it.)
        gone = run_dir.with_name(f".{run_dir.name}.removed-{os.getpid()}")
        try:
            os.rename(run_dir, gone)
        except OSError:
            return False
    shutil.rmtree(gone, ignore_errors=True)
    _remove_made_parents(run_dir, new.first_made)
    return True


def _empty_again(run_dir: Path, mode: int) -> None:
    """Take out of a directory that was there before what the refused submit
    put in it, and give it back its mode; called holding its lock file, which
    goes last (a daemon another submit starts meanwhile finds the lock held and
    says so; one started after makes the run anew)."""
    from corral.config_files import CONFIG_NAME
    from corral.journal.files import LOCK_FILE

    for entry in os.scandir(run_dir):
        if entry.name in (CONFIG_NAME, LOCK_FILE):  # (the person's settings stay)
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
    with contextlib.suppress(OSError):
        os.chmod(run_dir, mode)
    with contextlib.suppress(OSError):
        os.unlink(run_dir / LOCK_FILE)


def _remove_made_parents(run_dir: Path, first_made: Path | None) -> None:
    """Remove the directories above *run_dir* that the submit made, up to
    *first_made*, where they are empty (``--run deep/a/b`` left ``deep/a``)."""
    if first_made is None or first_made == run_dir:
        return
    for parent in run_dir.parents:
        try:
            os.rmdir(parent)
        except OSError:
            return
        if parent == first_made:
            return


def _has_jobs(run_dir: Path) -> bool:
    from corral.journal.run import Run

    try:
        return bool(Run(run_dir).jobs(results=False))
    except FileNotFoundError:  # no journal was made
        return False
    except Exception:  # unreadable: not ours to remove
        return True
