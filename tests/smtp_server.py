"""A real SMTP server on loopback that keeps what it receives, for mail tests.

aiosmtpd serves in its own thread; the handler parses each message and wakes
whoever waits for it through a condition, so tests wait for mail, not time.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    """One delivered message and its envelope (what the client said in MAIL/RCPT)."""

    message: EmailMessage
    mail_from: str
    recipients: tuple[str, ...]

    @property
    def body(self) -> str:
        return self.message.get_content()


class _AnyFreePortController(Controller):
    """A Controller that binds port 0 and learns the port the kernel chose.

    Controller's own ``port=0`` does not work: it connects to ``self.port`` to
    check the server is up. Binding inside ``_create_server`` also leaves no
    window in which another process could take the port.
    """

    def _create_server(self) -> Awaitable[Any]:
        async def bind() -> Any:
            server = await self.loop.create_server(self._factory_invoker, host=self.hostname,
                                                   port=0, ssl=self.ssl_context)
            self.port = server.sockets[0].getsockname()[1]
            return server
        return bind()


class SmtpServer:
    """Start with :meth:`start`, stop with :meth:`stop`; mail lands in :attr:`received`.

    With *logins* (username -> password) the server offers AUTH without TLS
    and refuses any other credentials. Clearing :attr:`accepting` holds every
    message at DATA (the client waits for the reply) until it is set again.
    """

    def __init__(self, logins: dict[str, str] | None = None) -> None:
        self.received: list[Received] = []
        self.logins_seen: list[str] = []
        self._logins = logins
        self._condition = threading.Condition()
        self._controller: Controller | None = None
        self.accepting = threading.Event()
        self.accepting.set()
        #: Set once a client's message has come to DATA (and is held there while
        #: :attr:`accepting` is clear).
        self.at_data = threading.Event()
        self.host = HOST
        self.port = 0

    def start(self) -> SmtpServer:
        extra: dict[str, Any] = {}
        if self._logins is not None:
            extra = {"authenticator": self._authenticate, "auth_require_tls": False,
                     "auth_required": True}
        self._controller = _AnyFreePortController(self, hostname=HOST, port=0, **extra)
        self._controller.start()
        self.port = self._controller.port
        return self

    def stop(self) -> None:
        self.accepting.set()  # let a held client go, or stopping would wait for it
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Return the first *count* messages once they arrived; fail after *timeout* s."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} message(s) within {timeout} s, "
                                         f"got {len(self.received)}")
                self._condition.wait(left)
            return list(self.received[:count])

    # aiosmtpd hooks, called in the server's thread ------------------------------------------

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.at_data.set()
        await asyncio.get_running_loop().run_in_executor(None, self.accepting.wait, 10.0)
        message = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
        received = Received(message, envelope.mail_from, tuple(envelope.rcpt_tos))
        with self._condition:
            self.received.append(received)
            self._condition.notify_all()
        return "250 Message accepted for delivery"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if self._logins is not None and self._logins.get(user) == password:
                self.logins_seen.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

