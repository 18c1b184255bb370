"""The config files as a command reads them: checked as the run's daemon will
read them (a mistake is one line here, not a daemon that died), the schedulers
they describe made known, a profile's options, and a note when the submitting
directory's ``corral.toml`` holds tables the daemon does not read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from corral.safe_repr import printable

from corral.cli.exits import CommandError

__all__ = ["check_config", "register_configured_backends", "profile_options",
           "note_tables_not_read", "unknown_backend_said"]


def check_config(run_dir: Path) -> None:
    """Read the config as the run's daemon will: the user's file, and
    ``corral.toml`` in the run directory (the daemon serves submissions from
    any directory, so the submitting one's file is not its own)."""
    from corral.config import load_config

    try:
        load_config(cwd=run_dir)
    except ValueError as error:
        raise CommandError(str(error)) from None


def register_configured_backends(strict: bool = True) -> str | None:
    """Make the schedulers the config files describe (``[schedulers.NAME]``) known
    here. A config file with a mistake is an error when *strict*; otherwise what
    is wrong is returned (None when nothing is), for the commands that read the
    config to say."""
    from corral.config_files import config_files_in

    if not config_files_in():  # nothing to register: not worth importing what reads them
        return None
    from corral.config import load_config

    try:
        load_config()  # registers them
    except ValueError as error:
        if strict:
            raise CommandError(str(error)) from None
        return str(error)
    return None


def unknown_backend_said(name: str, unknown: str, problem: str | None) -> str:
    """What a command says of backend *name*, which is not known: *unknown*
    (that it is unknown, with the closest names), and *problem*, a config file's
    mistake, if any. Only the mistake where a file has a ``[schedulers.NAME]``
    table: NAME is then a scheduler the mistake keeps unknown. (Attack review:
    "slrum" was told only of a profile's mistake in another table.)"""
    if problem is None:
        return unknown
    from corral.config import scheduler_names_in
    from corral.config_files import config_files_in

    if any(name in scheduler_names_in(path) for path in config_files_in()):
        return problem
    return f"{unknown}; and a config file has a mistake: {problem}"


def profile_options(name: str, run_dir: Path) -> dict[str, Any]:
    """Profile *name* of the user's file, the run directory's ``corral.toml``
    (the daemon's files) and this directory's, the later winning."""
    from corral.config import load_config

    try:
        return load_config(run_dir=run_dir).profile(name)
    except ValueError as error:
        raise CommandError(str(error)) from None


def note_tables_not_read(run_dir: Path, notify: bool) -> None:
    """Say that the ``[daemon]`` table of the submitting directory's
    ``corral.toml`` is not the run's (when the run is elsewhere), nor its
    ``[smtp]`` table for a job that asks for mail, rather than leave the user
    to wonder why its queues are unknown or no mail server is configured."""
    from corral.config_files import config_paths, every_config_path, same_file

    _, in_cwd = config_paths()  # (the user's file, where the current directory was deleted)
    if not in_cwd.is_file():
        return
    read = config_paths(run_dir)  # the daemon's: the user's file, then the run's
    if any(same_file(in_cwd, path) for path in read):
        return
    from corral.config import tables_in  # (the settings' checks: a fifth of a submit)

    tables = tables_in(in_cwd, ("daemon", "smtp") if notify else ("daemon",))
    if tables:
        said = " and ".join(f"[{name}]" for name in tables)
        # (escaped: a directory's name may hold what acts on a terminal, re-attack review)
        click.echo(printable(
            f"corral: note: the {said} table{'s' * (len(tables) > 1)} of {in_cwd} "
            f"{'are' if len(tables) > 1 else 'is'} not read: the daemon of {run_dir} "
            f"takes its settings from {' and '.join(map(str, every_config_path(run_dir)))}"),
            err=True)
