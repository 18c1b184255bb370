"""Keep a running daemon's settings in step with the config files it read them from.

A daemon reads its settings once, when it starts: the ``[daemon]`` table (cores,
queues, tokens, backend), ``[smtp]`` and ``[schedulers.NAME]`` of the user's
config and of ``corral.toml`` in the run directory. A person who edits one of
those files while it runs (adds a queue, then submits to it) expects the next
``corral submit`` to see the edit. So before each submission the daemon looks
at the files again (one ``stat`` each) and, when one changed, reads them again:

* ``[smtp]`` and ``[schedulers.NAME]`` take effect at once;
* a changed ``[daemon]`` table cannot be applied to a running pool. With
  nothing unfinished, the daemon stops instead of taking the job: the
  submitter then starts a new daemon, with the new settings, and hands the
  job to it (see :class:`corral.control.server.Stopping`). With jobs still
  unfinished, the job is taken under the old settings, and the answer says
  so, as does any refusal the old settings cause;
* a file that no longer reads (a half-saved edit) refuses the submission with
  the file's error, as a daemon starting would.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.config import Config, load_config
from corral.config_files import config_paths, site_config_path
from corral.control.server import Stopping
from corral.errors import CorralError

if TYPE_CHECKING:
    from corral.core.engine import Engine

log = logging.getLogger("corral.daemon")

__all__ = ["SettingsWatch", "settings_stamps"]

#: What tells a file's version from another: None for a missing file.
_Stamp = tuple[int, int, int] | None


def settings_stamps(run_dir: Path) -> tuple[_Stamp, ...]:
    """What tells the versions of *run_dir*'s daemon's config files apart
    (taken before they are read: an edit made as they are read is then seen)."""
    stamps: list[_Stamp] = []
    site = site_config_path()
    for path in (*([site] if site is not None else []), *config_paths(run_dir)):
        try:
            status = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((status.st_ino, status.st_mtime_ns, status.st_size))
    return tuple(stamps)


class SettingsWatch:
    """The daemon's settings, read again when its config files change."""

    def __init__(self, run_dir: Path, config: Config, stamps: tuple[_Stamp, ...],
                 scheduler: Any, stop: threading.Event) -> None:
        """*config* is what the daemon started with, read after *stamps* were taken."""
        self._run_dir = run_dir
        self._started_with = config.daemon
        self._scheduler = scheduler
        self._stop = stop
        self._stamps = stamps
        #: Whether the files' [daemon] table differs from the one the daemon runs with.
        self._table_changed = False

    def before_submit(self) -> str | None:
        """Read the config files again if they changed; return a note for the
        submitter when the daemon keeps settings the files no longer say.

        Raises:
            Stopping: the [daemon] table changed and nothing is unfinished: the
                daemon stops, and the submitter starts one with the new table.
            CorralError: a config file no longer reads; the message says where.
        """
        stamps = settings_stamps(self._run_dir)
        if stamps != self._stamps:
            try:
                config = load_config(cwd=self._run_dir)
            except ValueError as error:
                raise CorralError(f"{error} (the daemon reads its config files again when "
                                  "they change)") from None
            self._stamps = stamps
            engine = self._scheduler._engine
            if self._scheduler._config is None or config.smtp != self._scheduler._config.smtp:
                _take_new_smtp(engine, config)
            self._scheduler._config = config
            self._table_changed = config.daemon != self._started_with
        if not self._table_changed:
            return None
        if not self._scheduler._engine.unfinished:
            self._stop.set()
            raise Stopping(f"the daemon of {self._run_dir} restarts to take up the changed "
                           "[daemon] table of its config")
        return ("the [daemon] table of the config changed since this run's daemon started; "
                "it keeps its old settings while it has unfinished jobs (corral stop "
                "cancels them)")


def _take_new_smtp(engine: Engine, config: Config) -> None:
    """Send the notices of jobs to come through the changed ``[smtp]`` table;
    those queued already go out through the old one, which is closed once
    they are delivered. (The old sender was dropped unclosed: what it held was
    lost, and jobs submitted before the change, with notify=, sent no mail at
    all unless a later submit asked for mail too: attack review.) A table that
    can no longer send keeps the old sender, and says so in the daemon's log."""
    old = engine.notifier
    if old is None:
        return  # made from the new table at its first use
    smtp = config.smtp
    if smtp is None or smtp.unset_password is not None:
        log.warning("the [smtp] table of the config changed and cannot send mail (%s); "
                    "notices go on through the one the daemon read before",
                    "it is gone" if smtp is None else smtp.unset_password)
        return
    from corral.core.notify import Notifier
    from corral.runtime.threads import start_thread

    engine.notifier = Notifier(smtp, keep_in=old.keep_in)
    start_thread(old.close, name="corral-notify-old")
