"""Saying so when a job asks a cluster for what its scheduler has no way to give.

A placement option (``qos``, ``constraint``, ...) that a cluster backend has
no equivalent for (PBS has no QOS) was dropped without a word: the job ran,
but not where or how its author asked (attack review). It is not refused: a
script written for one cluster must still run on another by changing the
backend's name, as it runs on a laptop, whose local backend ignores all
placement by design. So the first job of a run to ask for each such option
draws one warning, which names the option, the backend, and the way round it
(``extra_flags``, sent to the scheduler as they are; a directive, for a site's
own scheduler described in the config).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from corral.backends import backend_info
from corral.backends.info import NOT_USED
from corral.safe_repr import safe_repr
from corral.spec import Placement

__all__ = ["UnusedPlacement"]

log = logging.getLogger("corral.scheduler")

#: The placement options a backend may have no equivalent for.
_OPTIONS = ("partition", "account", "qos", "constraint", "setup", "extra_flags")


class UnusedPlacement:
    """The placement options one backend ignores, and which of them were said."""

    def __init__(self, backend: str) -> None:
        info = backend_info(backend)
        ignored = [option for option in _OPTIONS if info.option_help.get(option) == NOT_USED]
        #: Empty for a backend that uses them all, and for one that uses none
        #: (the local and Dask backends: placement is a cluster's business).
        self.options: tuple[str, ...] = (
            tuple(ignored) if len(ignored) < len(_OPTIONS) else ())
        self._title = info.title
        self._hint = info.placement_hint or (
            f"if {info.title} has an equivalent, pass it as it is with extra_flags=[...]")
        self._said: set[str] = set()

    def note(self, job_name: str, placement: Placement) -> None:
        """Warn, once per option for the run, about each option *placement*
        sets that this backend does not use."""
        for option in self.options:
            value = getattr(placement, option)
            if not value or option in self._said:
                continue
            self._said.add(option)
            log.warning("job %r asks for %s=%r, which corral cannot ask %s for: it runs "
                        "without it (and so does every later job that asks for it); %s",
                        job_name, option, value, self._title, self._hint.format(option=option))

    def unused_in(self, options: Mapping[str, object]) -> str | None:
        """What the person who submits a job with *options* (``corral submit``)
        is told of the options it sets that this backend does not use: each
        time, as the warning above goes to the run's log, which a person at
        another terminal does not read (re-attack review)."""
        return "; ".join(
            f"{option}={safe_repr(options[option])} is not sent: corral cannot ask "
            f"{self._title} for it, and the job runs without it "
            f"({self._hint.format(option=option)})"
            for option in self.options if options.get(option)) or None
