"""The report as one self-contained HTML page: styles, script and data inline.

Nothing is fetched when it is opened (no CDN, no fonts), so it can be mailed,
attached to a ticket or opened years later. The dashboard serves the same page
with no data in it and fills it from its API (:mod:`corral.web`).
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from typing import Any

__all__ = ["render_page", "page_asset"]


def page_asset(name: str) -> str:
    """One of the page's files (``page.html``, ``page.css``, ``page.js``), as text."""
    return resources.files("corral.report").joinpath("static", name).read_text("utf-8")


def script_json(data: Any) -> str:
    """*data* as JSON safe inside a ``<script>`` element: no ``</script>``, no
    ``<!--`` from a job's name or stderr can end the element early."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_page(data: Any, title: str, extra_script: str = "") -> str:
    """The page with *data* embedded (``None``: filled later by *extra_script*)."""
    parts = {"@@TITLE@@": html.escape(title), "@@CSS@@": page_asset("page.css"),
             "@@JS@@": page_asset("page.js") + extra_script, "@@DATA@@": script_json(data)}
    # One pass: what goes in (a run called "@@JS@@", a job's name) is never read as a marker.
    return re.sub("@@(TITLE|CSS|JS|DATA)@@", lambda found: parts[found.group(0)],
                  page_asset("page.html"))
