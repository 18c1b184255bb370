"""Which run directory a command works on, and opening its run.

The run directory is ``--run DIR`` (before or after the verb), else
``$CORRAL_RUN``, else ``<user state dir>/corral/default``. It is checked only
when a command uses it: a bad ``$CORRAL_RUN`` must not stop a command given its
own ``--run``, nor one that needs no run.
"""

from __future__ import annotations

import functools
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from corral.cli.exits import EXIT_UNREACHABLE, CommandError

if TYPE_CHECKING:
    from collections.abc import Callable

    from corral.journal.run import Run


__all__ = ["default_run_dir", "chosen_run_dir", "open_run", "require_existing_run",
           "resolved_path", "current_directory", "RunPath", "run_option"]


def default_run_dir() -> Path:
    """The run of commands given neither ``--run`` nor ``$CORRAL_RUN``."""
    from platformdirs import user_state_path

    return user_state_path("corral") / "default"


def chosen_run_dir(context: click.Context) -> Path:
    """The run directory chosen (checked only here: a bad ``$CORRAL_RUN`` must
    not stop a command given its own ``--run``, nor one that needs no run)."""
    run: Path = context.obj["run"]
    if not run.is_absolute():  # (left so by resolved_path: the directory it is in is gone)
        current_directory(f"{context.obj['run_from']} {run} is relative to it; give the run's "
                          "absolute path")
    if _loops(run):
        raise CommandError(f"{context.obj['run_from']} {run}: a loop of symbolic links, which "
                           "names no directory")
    if run.exists() and not run.is_dir():
        raise CommandError(f"{context.obj['run_from']} {run}: not a directory (a run "
                           "directory holds a journal)")
    return run


def open_run(context: click.Context) -> Run:
    """The chosen run, read from its journal; one that is not there, or is
    another user's, is a one-line error that says where runs are."""
    from corral.journal.run import Run

    run_dir = chosen_run_dir(context)
    try:
        return Run(run_dir)
    except FileNotFoundError:
        below = sorted(shlex.quote(str(path.parent))
                       for path in run_dir.glob("*/journal.db"))[:3]
        hint = (f"; did you mean {' or '.join(below)}?" if below else
                "; choose one with corral --run DIR COMMAND or $CORRAL_RUN (a script's "
                "run is seen from here when it journals: Scheduler(journal=DIR))")
        raise CommandError(f"no corral run at {run_dir} (nothing was submitted there yet)"
                           f"{hint}", EXIT_UNREACHABLE) from None
    except PermissionError:
        raise CommandError(f"permission denied: the run at {run_dir} belongs to another "
                           "user", EXIT_UNREACHABLE) from None


def require_existing_run(run_dir: Path) -> None:
    """Refuse (exit 3) a control verb on a directory that holds no journal."""
    from corral.journal.files import journal_path

    try:
        exists = journal_path(run_dir).exists()
    except PermissionError:
        raise CommandError(f"permission denied: the run at {run_dir} belongs to another "
                           "user", EXIT_UNREACHABLE) from None
    if not exists:
        raise CommandError(f"no corral run at {run_dir} (nothing was submitted there); "
                           "choose one with corral --run DIR COMMAND or $CORRAL_RUN",
                           EXIT_UNREACHABLE)


def _run_here(context: click.Context, run_dir: Path | None) -> None:
    """A command's own ``--run`` (``corral report --run DIR``) wins over the group's."""
    if run_dir is not None:
        context.obj.update(run=resolved_path(run_dir), run_from="--run")


def resolved_path(path: Path) -> Path:
    """*path* made absolute, its links followed where they lead somewhere (a
    loop of links is said by :func:`chosen_run_dir`, for the commands that use a run;
    a relative path in a current directory that was deleted is left relative, and
    said there too: a command that uses no run goes on)."""
    path = path.expanduser()
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # (RuntimeError up to Python 3.12, OSError after)
        try:
            return path.absolute()
        except FileNotFoundError:
            return path


def current_directory(needed_for: str) -> str:
    """The current directory, which *needed_for* says why the command needs.

    Raises:
        CommandError: it was deleted (under the shell that runs the command:
            ``os.getcwd()`` fails), said in one line (attack review: "No such
            file or directory", which named no file).
    """
    try:
        return os.getcwd()
    except FileNotFoundError:
        raise CommandError(f"the current directory was deleted ({needed_for}); cd to a "
                           "directory that exists") from None


def _loops(path: Path) -> bool:
    """Whether following *path*'s symbolic links goes round in a loop."""
    try:
        path.resolve()
    except (RuntimeError, OSError):  # (RuntimeError up to Python 3.12, OSError after)
        return True
    return False


class RunPath(click.Path):
    """A run directory's path; an empty one is refused, where a path would
    read it as the current directory (``--run "$UNSET"``)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path, readable=False)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value == "":
            self.fail("'' names no directory; give the run directory's path", param, ctx)
        return super().convert(value, param, ctx)


def run_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Let *command* take ``--run DIR`` after its name too (``corral status --run
    DIR``), where people put it as often as before it; there it wins over the group's."""
    @functools.wraps(command)
    def taking_run(*args: Any, run_dir: Path | None = None, **kwargs: Any) -> Any:
        _run_here(click.get_current_context(), run_dir)
        return command(*args, **kwargs)

    return click.option("--run", "run_dir", type=RunPath(),
                        default=None, help="The run directory (as corral --run DIR).")(taking_run)
