"""Which Dask directories of a run's sessions a new session waits for and
removes (corral.backends.dask.shares): only those of dead drivers, never what
a link points to."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from corral.backends.dask import shares
from support.waiting import wait_until


def _session(run: Path, token: str, driver: str | None) -> Path:
    share = run / f"{shares.PREFIX}{token}"
    (share / "claims").mkdir(parents=True)
    if driver is not None:
        (share / "driver").write_text(driver)
    return share


def _dead_pid() -> int:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(ended.stdout)


def _started(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19].decode()


def test_a_killed_driver_its_parent_has_not_reaped_is_dead(tmp_path):
    """Review: a zombie keeps its /proc entry and its start time."""
    run = tmp_path / "run"
    own = run / f"{shares.PREFIX}own"
    shares.make(own, ("claims",))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{child.pid}/stat")
        wait_until(lambda: stat.read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z",
                   timeout=30, message="the child to end, unreaped")
        zombie = _session(run, "zombie", f"{socket.gethostname()} {child.pid} "
                                         f"{_started(child.pid)}")
        assert shares.left_by_dead_drivers(run, own) == [zombie]
    finally:
        child.wait()


def test_only_dead_drivers_directories_are_left_and_only_this_hosts_are_removed(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("keep me")
    own = run / f"{shares.PREFIX}own"
    shares.make(own, ("claims",))
    here, parent = socket.gethostname(), os.getppid()
    live = _session(run, "live", f"{here} {parent} {_started(parent)}")
    dead = _session(run, "dead", f"{here} {_dead_pid()} 12345")
    # A pid used again (a container restarted): another process, or this one.
    reused = _session(run, "reused", f"{here} {parent} 1")
    mine_before = _session(run, "mine-before", f"{here} {os.getpid()} 1")
    # (another Scheduler of this program: two in one notebook)
    mine_too = _session(run, "mine-too", f"{here} {os.getpid()} {_started(os.getpid())}")
    unnamed = _session(run, "unnamed", None)
    garbled = _session(run, "garbled", "not a driver line at all")
    remote = _session(run, "remote", f"another-host-{here} {parent} {_started(parent)}")
    (run / f"{shares.PREFIX}link").symlink_to(elsewhere)
    (run / f"{shares.PREFIX}file").write_text("a file, not a session's directory")

    left = shares.left_by_dead_drivers(run, own)

    assert sorted(left) == sorted([dead, reused, mine_before, unnamed, garbled, remote])
    assert shares.token_of(dead) == "dead"
    shares.remove(left)
    assert not any(path.exists() for path in (dead, reused, mine_before, unnamed, garbled))
    assert remote.is_dir()  # (another host's driver may live: its own to remove)
    assert own.is_dir() and (own / "claims").is_dir() and live.is_dir() and mine_too.is_dir()
    assert (elsewhere / "precious").read_text() == "keep me"
    assert not list(run.glob(".making*"))
