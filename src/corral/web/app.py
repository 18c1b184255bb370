"""The dashboard's server: the page, a JSON API, and nothing else.

Routes (all behind :class:`corral.web.guard.Guard`):

* ``GET /`` the page, with the token and the first run written into it;
* ``GET /api/runs`` the runs it may show;
* ``GET /api/state?run=PATH`` a run's page data and control note (ETag; 304 when
  unchanged, which is most of the page's polls);
* ``GET /api/output?run=PATH&job=ID&stream=stdout&offset=N`` what the job wrote
  from byte N on (the running job's spool file, or its job file once it ended);
* ``POST /api/control`` ``{"run", "verb", "id"}``: pause, resume, cancel, abort,
  sent to the run's driver through its control socket.

Reading the journal and talking to the control socket block, so they run in
threads: a big run being read never stalls another request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from importlib import resources
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from corral.control.server import Denied, NoDriver, Refused, send_request
from corral.errors import CorralError
from corral.journal.run import Run
from corral.errors import JournalError
from corral.safe_repr import bidi_shown
from corral.report.html import render_page, script_json
from corral.web.guard import Guard
from corral.web.runs import RunList

__all__ = ["make_app", "serve", "OUTPUT_CHUNK"]

#: The most bytes of a job's output one request returns; the page asks again.
OUTPUT_CHUNK = 256 * 1024
_VERBS = ("pause", "resume", "cancel", "abort")
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(guard: Guard, runs: RunList) -> web.Application:
    @web.middleware
    async def checked(request: web.Request, handler: Handler) -> web.StreamResponse:
        why = guard.refusal(request.method, request.headers, request.query)
        if why is not None:
            return web.Response(status=403, text=why + "\n")
        response = await handler(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def page(request: web.Request) -> web.Response:
        config = {"token": guard.token, "run": str(runs.first)}
        script = ("\nwindow.Corral.dashboard = " + script_json(config) + ";\n"
                  + resources.files("corral.web").joinpath("static", "dashboard.js")
                  .read_text("utf-8"))
        return web.Response(text=render_page(None, "corral dashboard", script),
                            content_type="text/html")

    async def chosen(request: web.Request) -> Path:
        path = await asyncio.to_thread(runs.allowed, request.query.get("run", str(runs.first)))
        if path is None:
            raise web.HTTPNotFound(text="not a run this dashboard shows\n")
        return path

    async def list_runs(request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(runs.runs))

    async def state(request: web.Request) -> web.Response:
        path = await chosen(request)
        try:
            current = await asyncio.to_thread(runs.state, path)
        except FileNotFoundError as error:
            return _error(404, f"{error}")
        except PermissionError:
            return _error(403, f"the run at {path} belongs to another user")
        except JournalError as error:
            return _error(500, str(error))
        if request.headers.get("If-None-Match") == current.etag:
            return web.Response(status=304, headers={"ETag": current.etag})
        body = json.dumps(current.data, separators=(",", ":"), allow_nan=False)
        return web.Response(text=body, content_type="application/json",
                            headers={"ETag": current.etag})

    async def output(request: web.Request) -> web.Response:
        path = await chosen(request)
        stream = request.query.get("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            return _error(400, f"stream={stream!r} must be stdout or stderr")
        try:
            offset = max(0, int(request.query.get("offset", "0")))
            tail = int(request.query["tail"]) if "tail" in request.query else None
        except ValueError:
            return _error(400, "offset and tail must be whole numbers of bytes")
        try:
            answer = await asyncio.to_thread(read_output, path, request.query.get("job", ""),
                                             stream, offset, tail)
        except KeyError as error:
            return _error(404, str(error.args[0]) if error.args else "no such job")
        except FileNotFoundError as error:
            return _error(404, str(error))
        except PermissionError:
            return _error(403, f"the run at {path} belongs to another user")
        except JournalError as error:
            return _error(500, str(error))
        return web.json_response(answer)

    async def control(request: web.Request) -> web.Response:
        try:
            asked = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the request must be JSON")
        if not isinstance(asked, dict) or asked.get("verb") not in _VERBS:
            return _error(400, f"verb must be one of {', '.join(_VERBS)}")
        path = await asyncio.to_thread(runs.allowed, str(asked.get("run", runs.first)))
        if path is None:
            return _error(404, "not a run this dashboard shows")
        message: dict[str, Any] = {"verb": asked["verb"]}
        job = asked.get("id")
        if asked["verb"] == "cancel":
            if job is None:
                return _error(400, "cancel needs the id of a job")
            message["ids"] = [str(job)]
        elif asked["verb"] == "abort" and job is not None:
            message["id"] = str(job)
        try:
            reply = await asyncio.to_thread(send_request, path, message, 30.0)
        except NoDriver:
            return _error(409, "no corral process drives this run now, so nothing can act "
                               "on it from here")
        except (Denied, PermissionError):
            return _error(403, f"the run at {path} belongs to another user")
        except Refused as error:
            return _error(409, str(error))
        except CorralError as error:
            return _error(502, str(error))
        problems = reply.get("problems") or []
        if problems:
            return _error(409, "; ".join(map(str, problems)))
        return web.json_response({"ok": True, "reply": reply})

    app = web.Application(middlewares=[checked], client_max_size=64 * 1024)
    app.add_routes([web.get("/", page), web.get("/api/runs", list_runs),
                    web.get("/api/state", state), web.get("/api/output", output),
                    web.post("/api/control", control)])
    return app


def read_output(run_dir: Path, job_id: str, stream: str, offset: int,
                tail: int | None = None) -> dict[str, Any]:
    """What job *job_id* wrote to *stream* from byte *offset* on (with *tail*: its
    last *tail* bytes instead), as text, at most :data:`OUTPUT_CHUNK` bytes.

    A running job writes to a spool file that becomes its job file when it
    ends; if the file is now shorter than *offset* it is read from the start
    (``"reset": true``). A character cut by the chunk's end, or still being
    written, is left for the next request; ``"more"`` says the file holds
    more than was answered."""
    job = Run(run_dir).job(job_id)
    where = job.output_path(stream)
    answer: dict[str, Any] = {"status": job.status.name, "text": "", "offset": offset,
                              "reset": False, "done": job.status.is_terminal, "more": False,
                              "skipped": 0}
    if where is None:
        return answer
    try:
        with open(where, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if tail is not None:
                offset = max(0, size - max(0, tail))
                answer["skipped"] = offset
            elif size < offset:
                offset, answer["reset"] = 0, True
            handle.seek(offset)
            chunk = handle.read(OUTPUT_CHUNK)
    except OSError:
        return answer
    start = 0
    if tail is not None:  # begin on a character, not inside one
        while start < min(4, len(chunk)) and chunk[start] & 0xC0 == 0x80:
            start += 1
    at_the_end = offset + len(chunk) >= size
    end = len(chunk) if at_the_end and answer["done"] else _whole_characters(chunk)
    answer["text"] = bidi_shown(chunk[start:end].decode("utf-8", errors="replace"))
    answer["offset"] = offset + end
    answer["skipped"] = answer["skipped"] + start if tail is not None else 0
    answer["more"] = not at_the_end
    return answer


def _whole_characters(chunk: bytes) -> int:
    """How much of *chunk* to answer so as not to cut its last UTF-8 character
    (what is not UTF-8 at all is answered as is, and shown replaced)."""
    for back in range(1, min(3, len(chunk)) + 1):
        byte = chunk[-back]
        if byte & 0xC0 != 0x80:  # the last byte that starts a character (or is ASCII)
            needed = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else \
                4 if byte & 0xF8 == 0xF0 else 1
            return len(chunk) - back if needed > back else len(chunk)
    return len(chunk)


#: How long the end of a dashboard waits for answers under way.
_SHUTDOWN_TIMEOUT_S = 2.0


async def _serve(guard: Guard, runs: RunList, ready: Callable[[str], None],
                 stop: asyncio.Event | None) -> None:
    runner = web.AppRunner(make_app(guard, runs), access_log=None, handle_signals=False)
    await runner.setup()
    family = socket.AF_INET6 if ":" in guard.host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((guard.host, guard.port))
    except OSError:
        listening.close()
        await runner.cleanup()
        raise
    guard.port = listening.getsockname()[1]
    # Pages poll, so nothing is lost by cutting a slow answer short at the end.
    site = web.SockSite(runner, listening, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    await site.start()
    host = f"[{guard.host}]" if ":" in guard.host else guard.host
    ready(f"http://{host}:{guard.port}/?token={guard.token}")
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()


def serve(run_dir: Path, state_dir: Path | None, host: str = "127.0.0.1", port: int = 0,
          ready: Callable[[str], None] = print) -> bool:
    """Serve the dashboard until interrupted; *ready* gets its URL (with the token).

    Returns whether SIGTERM ended it (the command line says so and exits 143).
    SIGTERM is the event loop's to handle: an exception a signal handler raised
    in one of the loop's callbacks was taken for that callback's error, logged
    and swallowed, and the dashboard served on after ``kill``, at times
    spinning a core (cold review)."""
    guard = Guard(host, port)
    runs = RunList(run_dir, state_dir)
    terminated = False

    async def until_stopped() -> None:
        stop = asyncio.Event()

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            stop.set()

        with contextlib.suppress(ValueError, RuntimeError):  # (no signals off the main thread)
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
        await _serve(guard, runs, ready, stop)

    try:
        asyncio.run(until_stopped())
    except KeyboardInterrupt:
        pass
    return terminated
