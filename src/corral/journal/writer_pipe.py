"""Writing to the journal writer's pipe, and saying why when it takes nothing.

The driver hands its batches of changes to the writer process through a pipe
of 1 MiB. While the writer commits, that is plenty; a writer that takes
nothing (stopped with SIGSTOP or held by a debugger, or waiting on a hung
file system) fills it, and the next write would block the driver's control
loop with no word: no job would start or end, no ``corral`` command would be
answered, and nothing said why. So the pipe is written without blocking, and
a write that has waited :data:`QUIET_S` says, once, what it waits for (and,
when the writer takes up again, that it did). It still waits: every change
must reach the journal, and one held back is the journal's to commit once
the writer goes on.
"""

from __future__ import annotations

import logging
import os
import select
import time
from pathlib import Path

from corral.runtime.procstate import process_state

__all__ = ["QUIET_S", "write_to_writer"]

#: How long a write may find the pipe full, the writer taking nothing, before
#: the driver says so.
QUIET_S = 5.0
#: How often a waiting write looks at the writer again.
_LOOK_S = 1.0

log = logging.getLogger(__name__)


def write_to_writer(descriptor: int, data: bytes, writer_pid: int, run_dir: Path) -> None:
    """Write all of *data* to the writer's pipe (*descriptor*, non-blocking).

    Raises:
        BrokenPipeError: the writer is gone (its end of the pipe closed).
    """
    view = memoryview(data)
    waiting_since: float | None = None  # blocked since, with no byte taken
    said_at: float | None = None  # when the wait was said, until a byte is taken
    watch: select.poll | None = None
    while view:
        try:
            view = view[os.write(descriptor, view):]
        except BlockingIOError:
            now = time.monotonic()
            if waiting_since is None:
                waiting_since = now
            elif said_at is None and now - waiting_since >= QUIET_S:
                said_at = waiting_since
                log.warning("the journal writer of %s (pid %d) has taken nothing for %.0f s%s: "
                            "the run waits for it", run_dir, writer_pid, now - waiting_since,
                            _why_it_waits(writer_pid))
            if watch is None:
                watch = select.poll()
                watch.register(descriptor, select.POLLOUT)
            watch.poll(_LOOK_S * 1000)  # (a closed reader wakes it: the write then raises)
            continue
        if said_at is not None:
            log.warning("the journal writer of %s (pid %d) takes changes again, after %.0f s",
                        run_dir, writer_pid, time.monotonic() - said_at)
            said_at = None
        waiting_since = None


def _why_it_waits(pid: int) -> str:
    """What the writer's state says of why it takes nothing."""
    state = process_state(pid)
    if state in ("T", "t"):
        return f" (it is stopped: SIGSTOP or a debugger; kill -CONT {pid} lets it go on)"
    if state == "D":
        return " (it waits on the disk or a file system that does not answer)"
    return ""
