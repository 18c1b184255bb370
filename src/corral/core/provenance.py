"""Where a command or a script ran, and whether its script changed since:
a rerun from another directory, or after the script was edited, runs it
again in its place rather than restore what it did before.

A command or a script is keyed by its text (see :mod:`corral.core.identity`):
``cat VERSION`` is the same text in every directory, and ``python build.py``
the same after ``build.py`` changed (cold review, a build engineer: a rerun
from another checkout restored the first checkout's output without a word).
Putting the directory in the key would have run every command of every
earlier journal again after an upgrade; it is kept beside it, in the row's
spec (``"made"``), and compared only where it was recorded. A restored job
keeps the record of the run that made its result.

A script's file is compared as make compares a target with its sources: by
its modification time against when the job began. A digest taken when the
job was made told of a script generated, or edited, while the job waited,
as changed since it ran (re-attack review).

What a job inherits from its driver's environment is not compared: a
terminal's variables change between any two runs; what matters is given as
``env=``, which is in the key.
"""

from __future__ import annotations

import os
from typing import Any

from corral.spec import JobSpec, Script, Shell

__all__ = ["made_in", "changed_since"]


def made_in(spec: JobSpec) -> dict[str, str] | None:
    """``{"dir": the directory a command or script runs in}`` when it sets no
    ``cwd=`` (its own is in its key) and the directory can be known; None
    otherwise, and for a Python call (its code is in its key)."""
    if spec.cwd is not None or not isinstance(spec.task, (Shell, Script)):
        return None
    try:
        return {"dir": os.getcwd()}
    except OSError:  # (the driver's directory was removed under it: nothing to compare)
        return None


def changed_since(spec: JobSpec, stored_spec: Any, started: float | None) -> str | None:
    """Why a command or script would not do what its earlier run did (whose
    journaled spec is *stored_spec*, begun at *started*): another directory,
    or a script modified since it began; None when nothing known differs."""
    before = stored_spec.get("made") if isinstance(stored_spec, dict) else None
    now = made_in(spec)
    if (isinstance(before, dict) and isinstance(before.get("dir"), str) and now is not None
            and before["dir"] != now["dir"]):
        return f"it ran in {before['dir']}, and runs in {now['dir']} now"
    task = spec.task
    if isinstance(task, Script) and started is not None:
        path = task.path if spec.cwd is None else os.path.join(spec.cwd, task.path)
        try:
            modified = os.stat(path).st_mtime
        except OSError:  # (gone: it fails when it runs, as it would have)
            return None
        if modified > started:
            return f"its script {task.path} was modified since it ran"
    return None
