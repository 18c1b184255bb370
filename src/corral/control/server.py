"""Control a journaled run from another process, over a Unix socket.

The process that drives a run (a script's Scheduler or the daemon) serves
``<run dir>/control.sock``; the ``corral`` command sends it one request per
connection: a line of JSON such as ``{"verb": "pause"}``, answered by a line
of JSON, ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.

Only the run's user may talk to it: the socket lives in the 0700 run
directory, is itself 0600, and the server also checks the caller's uid
(``SO_PEERCRED``) and refuses anyone else, root included.

Unix socket paths are limited to 107 bytes; a deep run directory is reached
through ``/proc/self/fd/<dir fd>/`` instead of its full path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from corral.errors import CorralError
from corral.runtime.threads import start_thread

__all__ = ["SOCKET_FILE", "ControlServer", "Denied", "NoDriver", "Refused", "Stopping",
           "send_request"]

log = logging.getLogger("corral.control")

SOCKET_FILE = "control.sock"
_MAX_REQUEST = 1 << 20
_SUN_PATH_MAX = 107


class NoDriver(CorralError):
    """No live process serves the run's control socket."""


class Denied(CorralError, PermissionError):
    """The driver serves another user: it refused to hear the request."""


class Refused(CorralError):
    """The driver refused the request; the message says why (bad input)."""


class Stopping(NoDriver):
    """The driver is stopping (``corral stop``, or idle): it takes no new jobs.

    Raised by a verb in the driver; the client that gets it waits for the
    driver to let go of the run and then sees no driver (:class:`NoDriver`), so
    that ``corral submit`` starts a new daemon instead of handing a job to one
    that would cancel it."""


@contextlib.contextmanager
def _socket_path(run_dir: Path) -> Iterator[str]:
    path = os.fspath(run_dir / SOCKET_FILE)
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield path
        return
    directory = os.open(run_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{directory}/{SOCKET_FILE}"
    finally:
        os.close(directory)


def _read_line(connection: socket.socket) -> bytes:
    chunks = []
    size = 0
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n") or size > _MAX_REQUEST:
            break
    return b"".join(chunks)


def send_request(run_dir: str | os.PathLike[str], request: dict[str, Any],
                 timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to the run's driver and return its answer.

    Raises:
        NoDriver: nothing serves the run (no socket, or a stale one).
        PermissionError: the run belongs to another user (``Denied`` when its
            driver refused us, rather than the file system).
        Refused: the driver refused the request (its message says why).
        CorralError: the driver went away without answering.
    """
    run_dir = Path(run_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        with _socket_path(run_dir) as path:
            busy_until = time.monotonic() + timeout
            while True:
                try:
                    connection.connect(path)
                    break
                except (FileNotFoundError, ConnectionRefusedError) as error:
                    raise NoDriver(f"no corral process drives the run at {run_dir}") from error
                except BlockingIOError:  # its queue of connections is full: it is busy
                    if time.monotonic() >= busy_until:
                        raise CorralError(f"the process driving {run_dir} takes no "
                                          "connection: it is too busy") from None
                    time.sleep(0.01)
        try:
            connection.sendall(json.dumps(request).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read everything: its answer says why
        try:
            answer = _read_line(connection)
        except ConnectionResetError:
            answer = b""
    if not answer:
        raise CorralError(f"the process driving {run_dir} closed the connection without answering")
    reply = json.loads(answer)
    if reply.get("denied"):
        raise Denied(reply.get("error") or "permission denied")
    if reply.get("stopping"):
        raise Stopping(reply.get("error") or f"the process driving {run_dir} is stopping")
    if not reply.get("ok"):
        raise Refused(reply.get("error") or "the request was refused")
    return reply


#: Seconds :func:`send_when_served` waits for a driver that holds the run but
#: does not answer yet: it is starting, and may first wait up to 10 s for an
#: earlier session's journal writer (see corral.journal.writer_lock).
STARTING_DRIVER_PATIENCE_S = 30.0


def send_when_served(run_dir: str | os.PathLike[str], request: dict[str, Any],
                     patience: float | None = None) -> dict[str, Any]:
    """:func:`send_request`, waiting up to *patience* seconds (default
    :data:`STARTING_DRIVER_PATIENCE_S`) while a live process holds the run but
    has not opened its socket yet (a driver or daemon starting); NoDriver at
    once when no process holds it."""
    from corral.journal.store import owner_of

    deadline = time.monotonic() + (STARTING_DRIVER_PATIENCE_S if patience is None else patience)
    while True:
        try:
            return send_request(run_dir, request)
        except Stopping:
            while owner_of(run_dir) is not None and time.monotonic() < deadline:
                time.sleep(0.05)  # polling a lock another process is about to let go
            raise
        except NoDriver:
            if owner_of(run_dir) is None or time.monotonic() >= deadline:
                raise
        time.sleep(0.05)  # polling a socket another process is about to open


_SERVERS: weakref.WeakSet[ControlServer] = weakref.WeakSet()


def _close_listeners_in_child() -> None:
    """A forked child must not hold the listening socket: callers would queue
    on it, unanswered, after the driver is gone."""
    for server in list(_SERVERS):
        listener, server._listener = server._listener, None
        if listener is not None:
            with contextlib.suppress(OSError, ValueError):
                listener.close()


os.register_at_fork(after_in_child=_close_listeners_in_child)


#: Seconds the driver waits for a connected client's request. A client sends it
#: as soon as it is connected; requests are served one at a time, so one that
#: sends nothing holds the others up this long.
_READ_PATIENCE_S = 5.0
#: The same, for each request queued on the socket of a driver that stops: one
#: that sends nothing must not hold its exit up.
_DRAIN_PATIENCE_S = 1.0


class ControlServer:
    """Serves control requests for one Scheduler on a thread of its own."""

    def __init__(self, handler: Callable[[dict[str, Any]], dict[str, Any]], run_dir: Path) -> None:
        #: Answers one request (see :func:`corral.control.verbs.handle`); given
        #: by the Scheduler, bound to itself, so that this module imports neither.
        self.handler = handler
        self.run_dir = run_dir
        self.last_request = 0.0  # time.monotonic() of the last request served
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _socket_path(self.run_dir) as path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a driver that died; we hold the run's lock
            listener.bind(path)
            # Not through the umask (process-wide, shared with the user's threads); the
            # run directory (0700) already keeps others out while this is not yet done.
            os.chmod(path, 0o600)
        listener.listen(128)  # (many `corral submit &` at once connect together)
        self._listener = listener
        self._thread = start_thread(self._serve, name="corral-control")
        _SERVERS.add(self)

    def stop(self) -> None:
        """Stop serving. A request already waiting for its turn is answered
        that this driver is stopping (its client then waits for the run to be
        let go: see :class:`Stopping`), not left to find the connection closed."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping = True
        with contextlib.suppress(OSError), _socket_path(self.run_dir) as path:
            os.unlink(path)  # no new connection from now on
        listener.settimeout(0)
        while True:  # those queued already
            try:
                connection, _ = listener.accept()
            except OSError:  # (none left)
                break
            with connection:
                try:
                    self._answer(connection, patience=_DRAIN_PATIENCE_S)
                except Exception:
                    log.exception("control request failed")
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _serve(self) -> None:
        listener = self._listener
        while not self._stopping and listener is not None:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                try:
                    self._answer(connection)
                except Exception:
                    log.exception("control request failed")

    def _answer(self, connection: socket.socket, patience: float = _READ_PATIENCE_S) -> None:
        """Read one request from *connection* (waiting at most *patience*
        seconds for it) and answer it."""
        connection.settimeout(patience)
        uid = _peer_uid(connection)
        try:
            line = _read_line(connection)  # also from a stranger: replying first breaks its pipe
        except TimeoutError:
            log.info("a control client sent no request within %g s", patience)
            return
        if uid != os.geteuid():
            log.warning("refused a control request from uid %s", uid)
            reply: dict[str, Any] = {"ok": False, "denied": True, "error": (
                f"permission denied: this run belongs to uid {os.geteuid()}")}
        else:
            try:
                if self._stopping:
                    raise Stopping(f"the process driving {self.run_dir} is stopping")
                reply = {"ok": True, **self._handle(json.loads(line or b"{}"))}
            except Stopping as error:
                reply = {"ok": False, "stopping": True, "error": str(error)}
            except Exception as error:
                reply = {"ok": False, "error": str(error) or type(error).__name__}
        self.last_request = time.monotonic()
        connection.sendall(json.dumps(reply).encode() + b"\n")

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.handler(request)


def _peer_uid(connection: socket.socket) -> int:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", credentials)
    return uid
