"""Where a command or a script ran, and what its script file held, kept with
its journal row: a rerun from another directory, or after the script was
edited, runs it again in its place rather than restore what it did before.

A command or a script is keyed by its text (see :mod:`corral.core.identity`):
``cat VERSION`` is the same text in every directory, and ``python build.py``
the same after ``build.py`` changed. Putting the directory and the file's
digest in the key would have run every command of every earlier journal again
after an upgrade; kept beside it, they are compared only where they were
recorded (cold review, a build engineer: a rerun from another checkout
restored the first checkout's output without a word).

What a job inherits from its driver's environment is not compared: a
terminal's variables change between any two runs; what matters is given as
``env=``, which is in the key.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from corral.spec import JobSpec, Script, Shell

__all__ = ["made_in", "changed_since"]

#: Digests of script files by (path, inode, size, mtime): a rerun of a
#: thousand jobs of one script reads it once.
_digests: dict[tuple[str, int, int, int], str] = {}
_DIGESTS_KEPT = 256


def made_in(spec: JobSpec) -> dict[str, str] | None:
    """``{"dir": the directory a command or script runs in when it sets none,
    "script": the digest of its script file}`` of what can be known now;
    None for a Python call (its code is in its key)."""
    task = spec.task
    if not isinstance(task, (Shell, Script)):
        return None
    made: dict[str, str] = {}
    if spec.cwd is None:
        try:
            made["dir"] = os.getcwd()
        except OSError:  # (the driver's directory was removed under it: nothing to compare)
            pass
    if isinstance(task, Script):
        digest = _file_digest(task.path if spec.cwd is None
                              else os.path.join(spec.cwd, task.path))
        if digest is not None:
            made["script"] = digest
    return made or None


def changed_since(spec: JobSpec, stored_spec: Any) -> str | None:
    """Why a command or script would not do what its earlier run (whose
    journaled spec is *stored_spec*) did: another directory, an edited
    script; None when nothing recorded differs."""
    before = stored_spec.get("made") if isinstance(stored_spec, dict) else None
    if not isinstance(before, dict):  # (a journal from before: nothing recorded)
        return None
    now = made_in(spec) or {}
    if isinstance(before.get("dir"), str) and "dir" in now and before["dir"] != now["dir"]:
        return f"it ran in {before['dir']}, and runs in {now['dir']} now"
    if (isinstance(before.get("script"), str) and "script" in now
            and before["script"] != now["script"]):
        assert isinstance(spec.task, Script)
        return f"its script {spec.task.path} changed since"
    return None


def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            status = os.fstat(handle.fileno())
            seen = (os.path.abspath(path), status.st_ino, status.st_size, status.st_mtime_ns)
            digest = _digests.get(seen)
            if digest is None:
                digest = hashlib.sha256(handle.read()).hexdigest()[:24]
                if len(_digests) >= _DIGESTS_KEPT:
                    _digests.clear()
                _digests[seen] = digest
    except OSError:  # (a script not there yet, or not readable: it fails when it runs)
        return None
    return digest
