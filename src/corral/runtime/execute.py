"""Run one Python call the way every backend runs it.

The local backend's persistent workers and the batch runner inside a
cluster job (:mod:`corral.runtime.batch`) both call :func:`run_call`, so a
job's environment, working directory, exit semantics and error packing
cannot drift between backends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from corral.runtime.payload import dumps_error, dumps_value, loads_call
from corral.safe_repr import describe_error

__all__ = ["run_call", "kill_leftovers"]


def run_call(job_id: object, payload: bytes, upstream: Sequence[bytes],
             env: tuple[tuple[str, str | None], ...], cwd: str | None,
             home: str) -> tuple[bool, bytes]:
    """Run a pickled call; return ``(ok, blob)``, never raising.

    *blob* is the pickled return value when *ok*, else a packed exception
    (see :mod:`corral.runtime.payload`). ``SystemExit(0)`` counts as success.
    """
    try:
        with _JobContext(job_id, env, cwd, home):
            try:
                target, args, kwargs = loads_call(payload, tuple(upstream))
                value = target(*args, **kwargs)
            except BaseException as error:  # the job's failure, reported, not ours
                if isinstance(error, SystemExit) and error.code in (None, 0):
                    return True, dumps_value(None)
                return False, dumps_error(error)
            try:
                return True, dumps_value(value)
            except Exception as error:
                return False, dumps_error(TypeError(
                    f"the job's return value cannot be pickled: {describe_error(error)}"))
    except Exception as error:  # cannot even set the job up (a bad cwd)
        return False, dumps_error(error)


class _JobContext:
    """Apply a job's environment and working directory, then put them back."""

    def __init__(self, job_id: object, env: tuple[tuple[str, str | None], ...], cwd: str | None,
                 home: str) -> None:
        self.changes = dict(env)
        self.changes["CORRAL_JOB_ID"] = str(job_id)
        self.cwd = cwd or home
        self.home = home

    def __enter__(self) -> None:
        self.moved = self.cwd != self.home
        if self.moved:
            os.chdir(self.cwd)  # first: if it fails, nothing needs undoing
        self.saved = {key: os.environ.get(key) for key in self.changes}
        for key, value in self.changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.moved:  # also when the job's directory was deleted under it
            os.chdir(self.home)


def kill_leftovers() -> None:
    """Kill what the job left running, then reap every zombie we adopted.

    The common case — the job started no process — costs one waitpid call.
    """
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no children at all
        if pid == 0:
            break  # children are alive: kill them below
    import psutil

    from corral.runtime.proctree import kill_tree

    children = [child.pid for child in psutil.Process().children()]
    for pid in children:
        kill_tree(pid)
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    while True:  # orphans of the job's children that we adopted meanwhile
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
