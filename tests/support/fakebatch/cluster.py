"""Starting and stopping the fake batch scheduler in a test, and reading what it saw."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from support.fakebatch.scheduler import BIN

__all__ = ["FakeBatch"]


@dataclass
class FakeBatch:
    """One fake cluster: its state file under *root*; :meth:`environ` puts it on PATH."""

    root: Path
    forget_s: float = 3.0
    slots: int = 64

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    def environ(self) -> dict[str, str]:
        """The variables a process needs to use this cluster."""
        return {"FAKEBATCH_STATE": os.fspath(self.state),
                "FAKEBATCH_FORGET_S": str(self.forget_s), "FAKEBATCH_SLOTS": str(self.slots),
                "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        """Run one of the commands on this cluster."""
        return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                              env={**os.environ, **self.environ()})

    def qstat(self, *ids: str) -> dict[str, dict]:
        done = self.run("qstat", *ids)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def calls(self, name: str | None = None) -> list[tuple[str, float, list[str]]]:
        """Every command run on this cluster (or only *name*): (name, time, arguments)."""
        path = Path(f"{self.state}.calls")
        logged = [tuple(json.loads(line)) for line in path.read_text().splitlines()] \
            if path.exists() else []
        return [call for call in logged if name is None or call[0] == name]  # type: ignore[misc]

    def executors(self) -> list[int]:
        """The pids of executors still running a job."""
        try:
            state = json.loads(self.state.read_text())
        except FileNotFoundError:
            return []
        return [pid for pid in state["executors"].values() if _alive(pid)]

    def stop(self, timeout: float = 15.0) -> None:
        """Delete every unfinished job and wait for the executors to end; kill
        those still there at the deadline, so no test leaves a process behind.

        Raises:
            AssertionError: an executor had to be killed.
        """
        if not self.state.exists():
            return
        unfinished = [n for n, task in self.qstat().items() if task["state"] != "F"]
        if unfinished:
            self.run("qdel", *unfinished)
        deadline = time.monotonic() + timeout
        while self.executors() and time.monotonic() < deadline:
            time.sleep(0.02)
        left = self.executors()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"fakebatch executors still running after {timeout} s: {left}"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
