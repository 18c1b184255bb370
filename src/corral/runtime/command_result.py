"""A command's or script's result: the JSON it leaves in ``$CORRAL_RESULT_FILE``.

A Python call returns its value; a command has only its exit status and its
output. So that a script's job has data too (hypertunity's ``output_file``,
where a script dumps what it found), every command is told a path in its
job's directory; what it writes there, as JSON, is its job's result:
``job.result()``, ``Result.data``, a dependent's argument and the journal's
row. JSON, not pickle: a shell script, an R script or a C++ program can write
it, and a file that cannot be read as JSON says so in the job's reason rather
than passing for a string.

The driver reads the file when the command has exited 0: one ``open`` per
command, none per call. A file left by an earlier attempt is moved aside with
that attempt's output (see :func:`corral.runtime.spool.keep_earlier_attempt`),
so a retry that writes none has none.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

__all__ = ["RESULT_FILE_NAME", "RESULT_FILE_VARIABLE", "MAX_RESULT_BYTES", "read_command_result",
           "read_result_bytes"]

#: The file, in the job's directory, whose JSON is a command's result.
RESULT_FILE_NAME = "result.json"
#: The environment variable that names that file to the command.
RESULT_FILE_VARIABLE = "CORRAL_RESULT_FILE"
#: Larger results are refused: the driver reads them between other jobs' events.
MAX_RESULT_BYTES = 64 * 1024 * 1024


def read_command_result(jobdir: str | None) -> tuple[Any, str | None]:
    """``(value, None)``: the JSON the command wrote (None where it wrote no
    file); or ``(None, why)`` where something is there but is no result.

    The driver's control loop reads it, so nothing the command left there may
    hold it (attack review): a FIFO would block ``open()`` for good, a link to
    ``/dev/zero`` never ends, and JSON nested a thousand deep raised
    RecursionError out of the loop. Only a regular file is read (not through a
    link, never blocking), at most :data:`MAX_RESULT_BYTES` of it.
    """
    if not jobdir:
        return None, None
    path = os.path.join(jobdir, RESULT_FILE_NAME)
    text, why = read_result_bytes(path)
    if text is None:
        return None, why
    if len(text) > MAX_RESULT_BYTES:
        return None, (f"its result file {path} holds more than {MAX_RESULT_BYTES // 2**20} MiB: "
                      "write large data to a file of your own and put its path in the result")
    import json  # (here: workers import this module for its names, and start without json)

    try:
        return json.loads(text), None
    except ValueError as error:  # (UnicodeDecodeError is one too)
        return None, f"its result file {path} is not JSON: {error}"
    except RecursionError:
        return None, f"its result file {path} nests its JSON too deep to be read here"


def read_result_bytes(path: str) -> tuple[bytes | None, str | None]:
    """``(content, None)``: the bytes of the result file *path*, at most one
    more than :data:`MAX_RESULT_BYTES` (so that one too large can be told);
    ``(None, None)`` where there is none; ``(None, why)`` where something is
    there that is no regular file, or cannot be read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as error:  # (ELOOP: a symbolic link)
        what = "a symbolic link" if error.errno == errno.ELOOP else error.strerror or error
        return None, f"its result file {path} cannot be read: {what}"
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None, f"its result file {path} is not a regular file"
        with open(descriptor, "rb", closefd=False) as handle:
            return handle.read(MAX_RESULT_BYTES + 1), None
    except OSError as error:
        return None, f"its result file {path} cannot be read: {error.strerror or error}"
    finally:
        os.close(descriptor)
