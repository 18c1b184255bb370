"""Temporary directories that name their owner, and the removal of dead owners' ones.

A driver killed with SIGKILL cannot remove its temporary run directory or its
spool directory. Each is therefore named after the process that made it
(``corral-run-<machine>.<pid>.<start time>-xxxxxxxx``), and every new scheduler removes
the ones whose owner is gone, as long as they belong to the same user. The
start time tells a dead owner from a new process that got the same pid.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

__all__ = ["make_owned_tempdir", "remove_dead_owners_tempdirs", "machine_tag", "RUN_PREFIX",
           "SPOOL_PREFIX"]

RUN_PREFIX = "corral-run-"
SPOOL_PREFIX = "corral-spool-"
_OWNED = re.compile(r"^corral-(?:run|spool)-([0-9a-f]{8})\.(\d+)\.(\d+)-")


def machine_tag() -> str:
    """This machine since its last boot, in 8 hex digits: a temporary directory
    shared with other hosts (a scratch file system) holds their drivers'
    directories too, and their pids mean nothing here."""
    global _machine_tag
    if _machine_tag is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as boot:
                boot_id = boot.read().strip()
        except OSError:
            boot_id = ""
        named = f"{os.uname().nodename}/{boot_id}".encode()
        try:  # (CPython's own SHA-1: hashlib loads OpenSSL, a tenth of a command's start)
            import _sha1  # type: ignore[import-not-found]

            digest = _sha1.sha1(named).hexdigest()
        except ImportError:
            import hashlib

            digest = hashlib.sha1(named).hexdigest()
        _machine_tag = str(digest)[:8]
    return _machine_tag


_machine_tag: str | None = None


def _start_ticks(pid: int) -> int | None:
    """When *pid* started, in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def make_owned_tempdir(prefix: str, parent: str | None = None) -> str:
    """A new private directory named after this process (see the module docstring)."""
    pid = os.getpid()
    return tempfile.mkdtemp(prefix=f"{prefix}{machine_tag()}.{pid}.{_start_ticks(pid) or 0}-",
                            dir=parent)


def remove_dead_owners_tempdirs(parent: str | None = None) -> list[str]:
    """Remove this user's corral directories in *parent* (default: the system's
    temporary directory) whose owner process is gone; return their paths."""
    parent = parent or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        match = _OWNED.match(entry.name)
        if match is None:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(
                    follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        machine, pid, started = match.group(1), int(match.group(2)), int(match.group(3))
        if machine != machine_tag() or started == 0 or _start_ticks(pid) == started:
            continue  # its owner still runs (or its start time could not be read: keep it)
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed
