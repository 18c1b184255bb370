"""The environment a daemon's command runs with, again in another daemon.

A command submitted from a terminal runs with that terminal's environment,
kept in its row as what differed from the environment of the daemon that took
it; each daemon's session keeps its own environment in the journal's meta. A
command run again by a later daemon (one a killed daemon left, or ``corral
rerun``) gets the terminal's environment back from the two.
"""

from __future__ import annotations

import json
import os

__all__ = ["ENVIRONMENT_KEY", "environment_again"]


#: The meta key of the environment a daemon's session ran with.
ENVIRONMENT_KEY = "daemon_environment.{session}"


def environment_again(stored_env: dict[str, str | None], session: int | None,
                      meta: dict[str, str]) -> dict[str, str | None] | None:
    """A command's ``env`` option for this daemon: the submitter's environment,
    which was stored as what differed from the environment of the daemon that
    took the command. Applied to this daemon's own, the command ran with
    another one (cold review, a sysadmin: a command a killed daemon left ran
    again from cron with cron's HOME and without the submitter's variables).
    An older journal, which kept no daemon's environment, gives it as stored."""
    said = meta.get(ENVIRONMENT_KEY.format(session=session))
    if said is None:
        return stored_env or None
    try:
        then = json.loads(said)
    except ValueError:
        return stored_env
    wanted = {**then, **stored_env}
    wanted = {name: value for name, value in wanted.items() if value is not None}
    return {**{name: value for name, value in wanted.items() if os.environ.get(name) != value},
            **{name: None for name in os.environ if name not in wanted}}
