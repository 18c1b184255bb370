"""Control a journaled run from another process, over a Unix socket.

The process that drives a run (a script's Scheduler or the daemon) serves
``<run dir>/control.sock``; the ``corral`` command sends it one request per
connection: a line of JSON such as ``{"verb": "pause"}``, answered by a line
of JSON, ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.

A client waits for its answer (it may shut its sending side first). One that
hangs up before the driver takes its request up has given up, as a client
whose wait ran out tells its user it did: the request is dropped, never
carried out behind its back.

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
import select
import socket
import struct
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from corral.errors import CorralError
from corral.errors import JournalError
from corral.journal.files import RunPlace, file_kind, owner_of
from corral.runtime.procstate import process_state
from corral.runtime.threads import start_thread

__all__ = ["SOCKET_FILE", "ControlServer", "Denied", "DriverStopped", "NoDriver", "Refused",
           "RequestTooLarge", "Stopping", "send_request", "stopped_driver"]

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


class DriverStopped(CorralError):
    """The driver is stopped (Ctrl-Z, SIGSTOP): it answers once it is continued."""


@contextlib.contextmanager
def _reachable_socket_path(run_dir: Path) -> Iterator[str]:
    """:func:`_socket_path`, with a run directory that does not exist yet (a
    long path is reached through the directory itself) as no driver, and one
    that cannot be (a name too long) as one line naming it."""
    try:
        context = _socket_path(run_dir)
        path = context.__enter__()
    except FileNotFoundError as error:
        raise NoDriver(f"no corral process drives the run at {run_dir}") from error
    except OSError as error:
        raise CorralError(f"the run at {run_dir} cannot be reached: "
                          f"{error.strerror or error}") from error
    try:
        yield path
    finally:
        context.__exit__(None, None, None)


class RequestTooLarge(CorralError):
    """A request over :data:`_MAX_REQUEST` bytes (the driver reads no more)."""


def _too_large(size: int | None = None) -> RequestTooLarge:
    """*size*: the request's, where known (the driver stops reading at the limit)."""
    told = f"over {_MAX_REQUEST:,} bytes" if size is None else (
        f"{size:,} bytes, at most {_MAX_REQUEST:,}")
    return RequestTooLarge(f"the request is too large: {told} (a submit carries the command "
                           "and the environment it runs in)")


def _read_line(connection: socket.socket, deadline: float | None = None) -> bytes:
    """One line from *connection*; with *deadline* (``time.monotonic()``), the
    whole of it by then, however slowly it trickles in (TimeoutError).

    Raises:
        RequestTooLarge: (with *deadline*: a request) over :data:`_MAX_REQUEST` bytes.
    """
    chunks = []
    size = 0
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not arrive in time")
            connection.settimeout(left)
        chunk = connection.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        newline = chunk.find(b"\n")  # (what follows the line, stray bytes, is ignored)
        line_size = size if newline < 0 else size - len(chunk) + newline + 1
        if deadline is not None and line_size > _MAX_REQUEST:
            raise _too_large()
        if newline >= 0:
            break
    line = b"".join(chunks)
    return line[:line.index(b"\n") + 1] if b"\n" in line else line


def _client_left(connection: socket.socket) -> bool:
    """Whether the client closed its connection: it gave up waiting (a driver
    stopped with SIGSTOP, or busy), and was told so; its request must not be
    carried out behind its back. (A client that only shut its sending side,
    as ``socat`` and ``nc -N`` do, still waits for the answer: that is no
    hang-up.)"""
    watch = select.poll()
    watch.register(connection, select.POLLIN)
    return any(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
               for _, events in watch.poll(0))


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
    data = json.dumps(request).encode() + b"\n"
    if len(data) > _MAX_REQUEST:
        raise Refused(str(_too_large(len(data))))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        with _reachable_socket_path(run_dir) as path:
            busy_until = time.monotonic() + timeout
            while True:
                try:
                    connection.connect(path)
                    break
                except (FileNotFoundError, ConnectionRefusedError) as error:
                    raise NoDriver(f"no corral process drives the run at {run_dir}") from error
                except NotADirectoryError as error:  # (a file where a directory should be)
                    raise CorralError(f"the run at {run_dir} cannot be reached: a part of its "
                                      "path is a file, not a directory") from error
                except BlockingIOError:  # its queue of connections is full: it is busy
                    _raise_if_stopped(run_dir, traced=False)  # (or stopped, callers queued)
                    if time.monotonic() >= busy_until:
                        raise CorralError(f"the process driving {run_dir} takes no "
                                          "connection: it is too busy") from None
                    time.sleep(0.01)
                except TimeoutError:
                    raise _no_answer(run_dir, timeout) from None
        try:
            connection.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read everything: its answer says why
        except TimeoutError:
            raise _no_answer(run_dir, timeout) from None
        try:
            _wait_for_answer(connection, run_dir, time.monotonic() + timeout)
            answer = _read_line(connection)
        except ConnectionResetError:
            answer = b""
        except TimeoutError:
            raise _no_answer(run_dir, timeout) from None
    if not answer:
        raise CorralError(f"the process driving {run_dir} closed the connection without answering "
                          "(did it die?): the request may or may not have been carried out; "
                          "see corral status")
    reply = json.loads(answer)
    if reply.get("denied"):
        raise Denied(reply.get("error") or "permission denied")
    if reply.get("stopping"):
        raise Stopping(reply.get("error") or f"the process driving {run_dir} is stopping")
    if reply.get("unavailable"):  # (the journal or the disk failed it, not its words)
        raise CorralError(reply.get("error") or "the run could not carry out the request")
    if not reply.get("ok"):
        raise Refused(reply.get("error") or "the request was refused")
    return reply


#: How long a driver may be seen stopped (Ctrl-Z, SIGSTOP, a debugger) before a
#: request to it is given up, and how often it is looked at meanwhile.
_STOPPED_PATIENCE_S = 1.0
_STOPPED_LOOK_S = 0.25


def _wait_for_answer(connection: socket.socket, run_dir: Path, deadline: float) -> None:
    """Return once the answer is there to read; raise TimeoutError at *deadline*,
    or :class:`DriverStopped` as soon as the driver is seen stopped for
    :data:`_STOPPED_PATIENCE_S` (a script suspended with Ctrl-Z answers nothing
    until it is resumed, and each command waited the whole timeout for it)."""
    watch = select.poll()
    watch.register(connection, select.POLLIN)
    stopped_since: float | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer in time")
        if watch.poll(min(left, _STOPPED_LOOK_S) * 1000):
            return
        pid = stopped_driver(run_dir)
        now = time.monotonic()
        if pid is None:
            stopped_since = None
        elif stopped_since is None:
            stopped_since = now
        elif now - stopped_since >= _STOPPED_PATIENCE_S:
            _raise_if_stopped(run_dir)


def _raise_if_stopped(run_dir: Path, traced: bool = True) -> None:
    """Raise :class:`DriverStopped` if the run's driver is stopped now (see
    :func:`stopped_driver` for *traced*)."""
    pid = stopped_driver(run_dir, traced)
    if pid is not None:
        raise DriverStopped(
            f"the process driving {run_dir} (pid {pid}) is stopped (Ctrl-Z, SIGSTOP or a "
            f"debugger) and answers nothing until it runs again (kill -CONT {pid}, or fg in "
            "the terminal it runs in); it will not carry out this request unless it had "
            "already begun it: see corral status")


def stopped_driver(run_dir: Path, traced: bool = True) -> int | None:
    """The pid of the run's driver if it runs on this host and is stopped
    (*traced*: also in a tracing stop, which a debugger's breakpoint holds, but
    ``strace`` makes for an instant at each system call: one look at a process
    under strace often finds it so)."""
    owner = owner_of(run_dir) or {}
    pid = owner.get("pid")
    if not isinstance(pid, int) or owner.get("host", os.uname().nodename) != os.uname().nodename:
        return None  # (a driver on another host of a shared file system: not seen from here)
    state = process_state(pid)
    return pid if state == "T" or (traced and state == "t") else None


def _no_answer(run_dir: Path, timeout: float) -> CorralError:
    """Why a request got no answer, and what became of it: the driver drops a
    request whose client has gone before it took it up (see
    :func:`_client_left`), but one it had begun may still take effect."""
    return CorralError(
        f"the process driving {run_dir} did not answer within {timeout:g} s (stopped, or "
        "too busy); it will not carry out the request unless it had already begun it: "
        "see corral status")


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
    deadline = time.monotonic() + (STARTING_DRIVER_PATIENCE_S if patience is None else patience)
    in_the_way_since: float | None = None  # since when something not a socket is in its place
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
            kind = _not_a_socket(Path(run_dir))
            if kind is None:
                in_the_way_since = None
            elif in_the_way_since is None:
                in_the_way_since = time.monotonic()
            elif time.monotonic() - in_the_way_since > _IN_THE_WAY_S:  # (no driver made it so)
                raise CorralError(
                    f"the run at {run_dir} cannot be reached: its {SOCKET_FILE} is a {kind}, "
                    "not the socket of its driver; remove it, and the driver makes its socket "
                    "again within a second") from None
        time.sleep(0.05)  # polling a socket another process is about to open


def _not_a_socket(run_dir: Path) -> str | None:
    """What is at the run's socket file if not a socket ("directory", "file"...);
    None for a socket or nothing."""
    try:
        mode = os.lstat(run_dir / SOCKET_FILE).st_mode
    except OSError:
        return None
    return None if stat.S_ISSOCK(mode) else file_kind(mode)


#: How long something else may sit where a live driver's socket should be
#: before a command says so: a driver replaces a file there within a second.
_IN_THE_WAY_S = 2.5


_SERVERS: weakref.WeakSet[ControlServer] = weakref.WeakSet()


def _close_listeners_in_child() -> None:
    """A forked child must not hold the listening socket, nor a connection
    being answered: callers would wait on them, unanswered, after the driver
    is gone, for as long as the child lives."""
    for server in list(_SERVERS):
        listener, server._listener = server._listener, None
        held, server._connections = list(server._connections), set()
        for connection in [listener, *held]:
            if connection is not None:
                with contextlib.suppress(OSError, ValueError):
                    connection.close()


os.register_at_fork(after_in_child=_close_listeners_in_child)


#: Seconds the driver waits for the whole of a connected client's request. A
#: client sends it as soon as it is connected; each connection is read on a
#: thread of its own, so one that sends nothing holds up no other.
_READ_PATIENCE_S = 5.0
#: Connections read at once; a further one waits to be accepted.
_READERS = 64
#: The same, for each request queued on the socket of a driver that stops: one
#: that sends nothing must not hold its exit up.
_DRAIN_PATIENCE_S = 1.0

#: How often, without requests, a driver looks whether its socket file is still there.
_SOCKET_LOOK_S = 1.0


class ControlServer:
    """Serves control requests for one Scheduler on a thread of its own."""

    def __init__(self, handler: Callable[[dict[str, Any]], dict[str, Any]], run_dir: Path,
                 keep_lock_file: Callable[[], None] | None = None) -> None:
        #: Answers one request (see :func:`corral.control.verbs.handle`); given
        #: by the Scheduler, bound to itself, so that this module imports neither.
        self.handler = handler
        #: Makes the run's lock file again if it was deleted (the journal's):
        #: called with the socket file's look, while the run is still here.
        self._keep_lock_file = keep_lock_file
        self.run_dir = run_dir
        self.last_request = 0.0  # time.monotonic() of the last request served
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: Requests are read concurrently but carried out one at a time, in
        #: the order they arrived whole (the verbs were written for that).
        self._serving = threading.RLock()
        self._readers = threading.BoundedSemaphore(_READERS)
        self._reading: set[threading.Thread] = set()
        self._connections: set[socket.socket] = set()  # accepted, not answered yet
        self._listening = threading.Lock()  # guards _listener: stop() and a new socket file
        self._socket_file = 0  # the inode of the socket file listened at
        self._said = ""  # the last failure to make the socket again, warned of once
        #: The run directory as it was at the start: one deleted and made
        #: again at its path is another run's, whose socket is not ours to make.
        self._place = RunPlace(run_dir)

    def start(self, held: bool = False) -> None:
        """Listen. *held*: read requests but carry none out until
        :meth:`open` (a daemon takes up the jobs a dead one left first: a
        ``corral cancel`` must find them)."""
        if held:
            self._serving.acquire()  # (released by open(), on this same thread)
        self._listener = self._listen()
        self._thread = start_thread(self._serve, name="corral-control")
        _SERVERS.add(self)

    def _listen(self) -> socket.socket:
        """A listening socket at the run's socket file, made anew."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _socket_path(self.run_dir) as path:
                with contextlib.suppress(FileNotFoundError):
                    try:
                        os.unlink(path)  # left by a driver that died; we hold the run's lock
                    except IsADirectoryError:
                        os.rmdir(path)  # (an empty one only: what is in one is someone's)
                listener.bind(path)
                # Not through the umask (process-wide, shared with the user's threads); the
                # run directory (0700) already keeps others out while this is not yet done.
                os.chmod(path, 0o600)
                self._socket_file = os.stat(path).st_ino
        except OSError as error:
            listener.close()
            raise CorralError(f"cannot make the control socket of the run at {self.run_dir} "
                              f"({error.strerror or error}): its directory may not be "
                              "writable (see ls -l, lsattr, mount)") from None
        listener.listen(128)  # (many `corral submit &` at once connect together)
        listener.settimeout(_SOCKET_LOOK_S)  # (accepted sockets block: see socket.accept)
        return listener

    def _keep_socket_file(self, listener: socket.socket) -> socket.socket:
        """The listener to accept on: *listener*, or a new one where its
        socket file was deleted or replaced (a clean-up of the run directory):
        every command then waited 30 s for a driver it could not reach, and
        said only that it had not answered; ``corral stop`` could not end it."""
        try:
            with _socket_path(self.run_dir) as path:
                if os.lstat(path).st_ino == self._socket_file:
                    return listener
        except FileNotFoundError:
            pass
        except OSError:
            return listener
        if not self._place.here():
            # The run directory is being deleted, or gone, or another run's is
            # at its path: two daemons took turns making the socket there, and
            # `corral submit` reached the one whose run was deleted (review).
            return listener
        with self._listening:
            if self._listener is not listener:  # stopping: stop() closes what it took
                return listener
            try:
                self._listener = self._listen()
            except CorralError as error:
                if str(error) != self._said:  # (once, not every second)
                    self._said = str(error)
                    log.warning("%s", error)
                return listener
        self._said = ""
        listener.close()
        log.warning("the control socket of the run at %s was gone: made again", self.run_dir)
        return self._listener

    def run_deleted(self) -> bool:
        """Whether the run directory (or its journal) was deleted under this
        driver; a run moved elsewhere is not (see :class:`RunPlace`)."""
        return self._place.deleted()

    def open(self) -> None:
        """Carry out requests from now on (after ``start(held=True)``)."""
        self._serving.release()

    def stop(self) -> None:
        """Stop serving. A request already waiting for its turn is answered
        that this driver is stopping (its client then waits for the run to be
        let go: see :class:`Stopping`), not left to find the connection closed."""
        with self._listening:
            listener, self._listener = self._listener, None
            if listener is None:
                return
            self._stopping = True
        with contextlib.suppress(OSError), _socket_path(self.run_dir) as path:
            if os.lstat(path).st_ino == self._socket_file:  # (not another run's, made since)
                os.unlink(path)  # no new connection from now on
        self._place.close()
        listener.settimeout(0)
        while True:  # those queued already: read together, each told this driver stops
            try:
                connection, _ = listener.accept()
            except OSError:  # (none left)
                break
            self._read_on_a_thread(connection, _DRAIN_PATIENCE_S)
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        # A request being carried out ends first; those read meanwhile are told
        # that this driver stops, and those still arriving get a moment, together.
        if self._serving.acquire(timeout=10):
            self._serving.release()
        drained_by = time.monotonic() + _DRAIN_PATIENCE_S
        for reader in list(self._reading):
            if reader is not threading.current_thread():
                reader.join(timeout=max(0.0, drained_by - time.monotonic()))

    def _serve(self) -> None:
        listener = self._listener
        while not self._stopping and listener is not None:
            if not self._readers.acquire(timeout=0.1):
                continue  # every reader busy: accept no more until one is done
            try:
                connection, _ = listener.accept()
            except TimeoutError:  # a moment without requests: is the socket file still there?
                self._readers.release()
                listener = self._keep_socket_file(listener)
                if self._keep_lock_file is not None and self._place.here():
                    try:  # (and the lock file: status reads it)
                        self._keep_lock_file()
                    except Exception:  # (never the end of the serving thread)
                        log.exception("cannot make the lock file of %s again", self.run_dir)
                continue
            except OSError:
                self._readers.release()
                return
            self._read_on_a_thread(connection, _READ_PATIENCE_S, counted=True)

    def _read_on_a_thread(self, connection: socket.socket, patience: float,
                          counted: bool = False) -> None:
        """Read and answer *connection* on a thread of its own (*counted*: one
        of the :data:`_READERS`, released when done)."""
        self._connections.add(connection)
        reader = threading.Thread(target=self._read_and_answer,
                                  args=(connection, patience, counted),
                                  name="corral-control-request", daemon=True)
        self._reading.add(reader)
        reader.start()

    def _read_and_answer(self, connection: socket.socket, patience: float,
                         counted: bool) -> None:
        try:
            with connection:
                self._answer(connection, patience)
        finally:
            self._connections.discard(connection)
            self._reading.discard(threading.current_thread())
            if counted:
                self._readers.release()

    def _answer(self, connection: socket.socket, patience: float = _READ_PATIENCE_S) -> None:
        """Read one request from *connection* (all of it within *patience*
        seconds) and answer it, unless its client has gone meanwhile."""
        uid = _peer_uid(connection)
        too_large: RequestTooLarge | None = None
        try:
            # Read also from a stranger: replying first would break its pipe.
            line = _read_line(connection, deadline=time.monotonic() + patience)
        except TimeoutError:
            log.info("a control client sent no whole request within %g s", patience)
            return
        except RequestTooLarge as error:
            line, too_large = b"", error
        except OSError as error:
            log.info("a control client left before its request was read (%s)", error)
            return
        if uid != os.geteuid():
            log.warning("refused a control request from uid %s", uid)
            reply: dict[str, Any] = {"ok": False, "denied": True, "error": (
                f"permission denied: this run belongs to uid {os.geteuid()}")}
        elif too_large is not None:
            reply = {"ok": False, "error": str(too_large)}
        elif not self._take_turn():
            reply = _stopping_reply(self.run_dir)
        else:
            try:
                if _client_left(connection):
                    log.info("a control client gave up before its request was served; "
                             "the request is not carried out")
                    return
                reply = self._reply_to(line)
            finally:
                self._serving.release()
        self.last_request = time.monotonic()
        try:
            connection.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as error:
            log.info("a control client left before its answer was sent (%s)", error)

    def _take_turn(self) -> bool:
        """Wait for the request before to be carried out; False (and no
        turn) once the driver stops meanwhile."""
        while not self._serving.acquire(timeout=0.1):
            if self._stopping:
                return False
        return True

    def _reply_to(self, line: bytes) -> dict[str, Any]:
        try:
            if self._stopping:
                return _stopping_reply(self.run_dir)
            try:
                request = json.loads(line or b"{}")
            except ValueError as error:
                raise Refused(f"a request is one line of JSON; this one is not ({error})"
                              ) from None
            return {"ok": True, **self._handle(request)}
        except Stopping as error:
            return {"ok": False, "stopping": True, "error": str(error)}
        except (JournalError, OSError) as error:  # not the request's fault: the run's state
            return {"ok": False, "unavailable": True, "error": str(error) or type(error).__name__}
        except Exception as error:  # (a refusal the verb says why of is no bug to log)
            if not isinstance(error, (CorralError, ValueError, TypeError, RuntimeError)):
                log.exception("control request failed: %.200r", line)
            return {"ok": False, "error": str(error) or type(error).__name__}

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.handler(request)


def _stopping_reply(run_dir: Path) -> dict[str, Any]:
    return {"ok": False, "stopping": True,
            "error": f"the process driving {run_dir} is stopping"}


def _peer_uid(connection: socket.socket) -> int:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", credentials)
    return uid
