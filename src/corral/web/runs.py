"""The runs a dashboard shows, and each one's state, read again only when it changed.

A dashboard shows the run it was started for and the runs in the user's state
directory (where ``corral submit`` keeps them), and no other path: the API never
opens a directory a request names unless it is one of these.

Reading a 10,000-job run takes about 0.4 s, and the page asks twice a second; so
each run's page data is kept with the signature of its journal files (size and
modification time of ``journal.db`` and its write-ahead log, the live driver)
and read again only when that changes: a small run at most every
:data:`MAX_STALE_S`, a big run that changes all the time not sooner than twice
its reading took, so a dashboard spends at most about half a core on reading (and
a 10,000-job run, 0.4 s a read, is at most a second behind).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.journal.run import Run
from corral.status import TERMINAL
from corral.journal.files import JOURNAL_FILE, owner_of
from corral.report import page_data, read_view
from corral.report.model import DASHBOARD_TAILS

__all__ = ["RunList", "RunState", "driver_note", "MAX_STALE_S"]

#: How long a changed run's data may be answered as it was (seconds); longer for
#: a run that takes longer to read.
MAX_STALE_S = 0.25


def _signature(path: Path) -> tuple:
    """What changes when the run does. The lock file's owner is asked, not its
    file read: a driver killed outright leaves the file as it was."""
    owner = owner_of(path)
    parts: list[Any] = [None if owner is None else owner.get("pid")]
    for name in (JOURNAL_FILE, f"{JOURNAL_FILE}-wal"):
        try:
            info = os.stat(path / name)
            parts.append((info.st_size, info.st_mtime_ns))
        except OSError:
            parts.append(None)
    return tuple(parts)


@dataclass
class RunState:
    """What the page gets for one run at one moment."""

    data: dict[str, Any]
    etag: str
    read_at: float = 0.0
    #: How long reading it took (seconds).
    cost: float = 0.0


def driver_note(run: Run) -> dict[str, Any]:
    """Whether the page's controls can act, and why not."""
    owner = run.owner
    if owner is None:
        # (with what makes its unfinished jobs go on, as corral status says: cold review)
        unfinished = any(count for status, count in run.status_counts().items()
                         if status not in TERMINAL)
        going_on = f"; {run.how_unfinished_jobs_go_on()}" if unfinished else ""
        return {"driven": False, "paused": run.paused,
                "why": "read-only: no corral process drives this run now (it ended, or its "
                       f"driver was stopped); the controls act through that process{going_on}"}
    return {"driven": True, "paused": run.paused, "kind": owner.get("kind"),
            "pid": owner.get("pid"), "why": None}


class RunList:
    """The runs one may look at: *first* and those under *state_dir*."""

    def __init__(self, first: Path, state_dir: Path | None) -> None:
        self.first = first.resolve()
        self.state_dir = state_dir
        self._cache: dict[Path, tuple[tuple, RunState]] = {}
        self._lock = threading.Lock()
        #: One reader per run at a time: requests that arrive while it reads
        #: wait for its answer instead of reading the same journal again.
        self._reading: dict[Path, threading.Lock] = {}
        self._listed: tuple[float, set[Path]] | None = None

    def runs(self) -> list[dict[str, Any]]:
        """Every run to list: name, path, when it last changed, whether it is driven."""
        found = {self.first}
        if self.state_dir is not None and self.state_dir.is_dir():
            try:
                found.update(entry.resolve() for entry in self.state_dir.iterdir()
                             if (entry / JOURNAL_FILE).is_file())
            except OSError:
                pass
        listed = []
        for path in sorted(found, key=lambda p: (p != self.first, str(p))):
            try:
                changed = os.stat(path / JOURNAL_FILE).st_mtime
            except OSError:
                changed = None
            listed.append({"path": str(path), "name": path.name, "changed": changed,
                           "first": path == self.first})
        return listed

    def allowed(self, path: str) -> Path | None:
        """*path* if it is one of the runs listed, else None. (The list is read
        again at most once a second: every request asks.)"""
        wanted = Path(path)
        with self._lock:
            listed = self._listed
        if listed is None or time.monotonic() - listed[0] > 1.0:
            listed = (time.monotonic(), {Path(run["path"]) for run in self.runs()})
            with self._lock:
                self._listed = listed
        return wanted if wanted in listed[1] else None

    def state(self, path: Path) -> RunState:
        """The run's page data (without stderr tails) and its control note.

        Raises:
            FileNotFoundError, PermissionError, corral.JournalError: as Run does.
        """
        with self._lock:
            reading = self._reading.setdefault(path, threading.Lock())
        with reading:
            return self._fresh_state(path)

    def _fresh_state(self, path: Path) -> RunState:
        signature = _signature(path)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None:
            earlier = cached[1]
            if cached[0] == signature or (
                    time.monotonic() - earlier.read_at < max(MAX_STALE_S, 2 * earlier.cost)):
                return earlier
        begun = time.monotonic()
        run = Run(path)
        control = driver_note(run)
        data = page_data(read_view(run, tracebacks=DASHBOARD_TAILS), tails="failures")
        data["control"] = control
        state = RunState(data, f'"{hash((signature, control["driven"], control["paused"]))}"',
                         read_at=time.monotonic(), cost=time.monotonic() - begun)
        with self._lock:
            self._cache[path] = (signature, state)
        return state
