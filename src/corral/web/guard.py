"""Who may use the dashboard: whoever holds its token, from its own page.

As Jupyter does, the server makes a random token at start and prints the URL
with it; the page sends it back on every request, in a header. Without it the
answer is 403, so another user of the machine (or a web page in the user's
browser) cannot read a run's jobs, commands and output through the port. No
cookie is set: browsers send a cookie for 127.0.0.1 to every port of it, so any
other local server would receive the token.

A request that changes something (pause, cancel, ...) must carry the token in
the header, not in the URL, and must come from the page's own origin (its Origin,
when sent, names the host the request was sent to): a page elsewhere cannot set
that header without the browser asking us first (CORS), and we never say yes.
On loopback the Host header must name loopback too, so a DNS name rebound to
127.0.0.1 gets nothing either.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping

__all__ = ["Guard", "TOKEN_HEADER"]

TOKEN_HEADER = "X-Corral-Token"
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class Guard:
    """Checks each request against this server's token, host and port."""

    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(24)
        self.host = host
        self.port = port

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")

    def _matches(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(
            offered.encode("utf-8", "replace"), self.token.encode())

    def refusal(self, method: str, headers: Mapping[str, str],
                query: Mapping[str, str]) -> str | None:
        """Why this request is refused (a 403's text), or None to serve it."""
        if self.loopback and not self._host_is_loopback(headers.get("Host", "")):
            return "this dashboard answers only requests addressed to 127.0.0.1 or localhost"
        if method in ("GET", "HEAD"):
            if self._matches(headers.get(TOKEN_HEADER)) or self._matches(query.get("token")):
                return None
            return ("no valid token: open the URL that corral dashboard printed "
                    "(it ends with ?token=...)")
        if not self._matches(headers.get(TOKEN_HEADER)):
            return f"a request that changes a run needs the token in the {TOKEN_HEADER} header"
        origin = headers.get("Origin")
        if origin is not None and origin != f"http://{headers.get('Host', '')}":
            return f"refused: a request from {origin}, not from this dashboard's own page"
        if headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return "refused: a request from another site"
        return None

    def _host_is_loopback(self, host: str) -> bool:
        return host in {f"{name}:{self.port}" for name in _LOOPBACK_NAMES}
