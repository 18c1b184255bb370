"""``corral dashboard``: a run's page, live, served on this machine.

The page is the report's (:mod:`corral.report`), filled from a small JSON API and
refreshed twice a second; its buttons act through the run's control socket,
exactly as ``corral pause`` does. It needs the ``web`` extra
(``pip install 'corral[web]'``: aiohttp); nothing else in corral imports it.

Modules: :mod:`~corral.web.guard` who may ask what (token, origin, host),
:mod:`~corral.web.runs` the runs one may look at and their state,
:mod:`~corral.web.app` the routes and the server.
"""

from __future__ import annotations

__all__ = ["MISSING_EXTRA"]

#: What ``corral dashboard`` says when aiohttp is not installed.
MISSING_EXTRA = ("corral dashboard needs the web extra, which is not installed: "
                 "pip install 'corral[web]' (in a checkout: pip install -e '.[web]')")
