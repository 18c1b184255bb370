"""Spool files: where a job's output goes while it runs.

Creating two files and a directory per job costs hundreds of microseconds on
an ordinary disk, more than running a small job. So output is written to spool
files that are reused job after job, and only output that exists is moved to
the job's own ``<jobdir>/stdout`` and ``<jobdir>/stderr`` when the job ends.
A job that prints nothing costs no file operation at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from corral.runtime.command_result import RESULT_FILE_NAME
from corral.runtime.tempdirs import SPOOL_PREFIX
from corral.safe_repr import printable

__all__ = ["open_spool", "hand_over", "read_output", "read_output_if_there", "NOT_SAVED",
           "keep_earlier_attempt", "TAIL_BYTES", "last_lines", "with_stderr_tail",
           "cannot_be_read", "move_spool_file", "keep_dead_drivers_spool"]

#: How a job whose output could not be moved to its directory fails (a full disk):
#: ``corral logs`` tells it from one that wrote nothing by these words.
NOT_SAVED = "cannot save the job's output"

#: Bytes read from a failed job's stderr for the tail its error shows (see
#: :func:`last_lines`).
TAIL_BYTES = 64 * 1024
_TAIL_LINES = 5
_TAIL_LINE_CHARS = 1000

_OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def open_spool(path: str) -> int:
    """Create (or empty) a spool file and return a descriptor that appends to it."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)


#: From this size a spool file is renamed to the job's file and made anew,
#: not copied: a job that wrote 600 MB took 1.2 GB of disk while it was
#: copied (attack review). Below it a copy is cheaper than a new file; and
#: where less than this is left, the output of a job that filled the disk is
#: let go as before, not kept, so that the journal can still be written.
RENAME_FROM_BYTES = 1 << 20


def hand_over(spool: int, jobdir: str, name: str, path: str | None = None) -> bool:
    """Move what *spool* holds to ``jobdir/name`` (if anything) and empty it:
    copied, or, given the spool's *path* and from :data:`RENAME_FROM_BYTES`,
    renamed there, a new spool file taking its place under the same
    descriptor (where both lie on one file system).

    Emptied also when the copy fails (a full disk): kept, it would hold the
    disk full for every job after, and go to the next job's file with its own.
    Returns whether the spool is a new file now (renamed).
    """
    size = os.fstat(spool).st_size
    if not size:
        return False
    try:
        try:
            os.mkdir(jobdir, 0o700)
        except FileExistsError:
            pass
        if (path is not None and size >= RENAME_FROM_BYTES and _has_room(spool)
                and _renamed(spool, path, jobdir, name)):
            return True
        target = os.open(os.path.join(jobdir, name), _OUTPUT_FLAGS, 0o600)
        try:
            offset = 0
            while offset < size:
                sent = os.sendfile(target, spool, offset, size - offset)
                if sent == 0:
                    break
                offset += sent
        finally:
            os.close(target)
    finally:
        os.ftruncate(spool, 0)
    return False


def _has_room(spool: int) -> bool:
    """Whether the spool's file system has room left: on one the job filled,
    the output is not kept (the copy fails, said, and the spool is emptied)
    so that the journal beside it can still be written."""
    try:
        found = os.fstatvfs(spool)
    except OSError:
        return False
    return found.f_bavail * found.f_frsize >= RENAME_FROM_BYTES


def _renamed(spool: int, path: str, jobdir: str, name: str) -> bool:
    """Rename the spool file at *path* (open as *spool*) to ``jobdir/name``
    and open a new one in its place as *spool*; False where it cannot be
    renamed (another file system), nothing done."""
    target = os.path.join(jobdir, name)
    try:
        os.rename(path, target)
    except OSError:
        return False
    try:
        fresh = open_spool(path)
    except OSError:  # (a full directory): the spool goes back, to be copied, not lost
        os.rename(target, path)
        return False
    try:
        os.dup2(fresh, spool, inheritable=os.get_inheritable(spool))
    finally:
        os.close(fresh)
    return True


def read_output(path: str | os.PathLike[str], last_bytes: int | None = None) -> str:
    """A job's output file as text ("" when it wrote nothing, so has no file).

    The bytes are decoded as written: a progress bar's ``\r`` stays ``\r``
    and ``\r\n`` stays ``\r\n`` (no universal newlines), as ``corral logs``
    shows them; bytes that are not UTF-8 become U+FFFD. With *last_bytes*,
    only the file's end: at most that many bytes, from a line's start where
    one begins in them.
    """
    text = read_output_if_there(path, last_bytes)
    return "" if text is None else text


def last_lines(text: str) -> str:
    """The last lines of *text* (a job's stderr end, read with
    ``last_bytes=TAIL_BYTES``), each cut short and its control characters
    escaped, for an error message and a notice mail: the live job's error
    and the stored job's give the same (attack review: a command's 200 MB of
    stderr was read whole, on the control thread, into its error message, and
    a 400 MB notice mail was lost; re-attack: a terminal's escapes and NULs
    went out as they were)."""
    lines = [printable(line) for line in text.rstrip("\n").splitlines()[-_TAIL_LINES:]]
    # A long line keeps its end, where a message says what went wrong
    # (re-attack review: an error after 100 MB of progress never showed).
    return "\n".join(line if len(line) <= _TAIL_LINE_CHARS
                     else f"[line cut short ...] {line[-_TAIL_LINE_CHARS:]}" for line in lines)


def with_stderr_tail(message: str, tail: str, where: object) -> str:
    """A failed job's error *message* followed by its stderr's last lines
    (:func:`last_lines`) and *where* the rest is; the message alone if none;
    the message and the line that says so, where its stderr could not be read."""
    if not tail:
        return message
    if _UNREADABLE in tail and tail.startswith("(its ") and "\n" not in tail:
        return f"{message}\n{tail}"
    return f"{message}\nlast lines of its stderr ({where}):\n{tail}"


def read_output_if_there(path: str | os.PathLike[str],
                         last_bytes: int | None = None) -> str | None:
    """:func:`read_output`, or None when there is no such file (a dead
    worker's spool, moved to the job's own file as it was looked for).

    With *last_bytes* (the end of a failed job's stderr, for its error), a
    file that cannot be read gives a line that says so, not an OSError: the
    error is made on the control loop, which an EMFILE there crashed, failing
    every later job with it (attack review). Read whole, it raises.
    """
    try:
        with open(path, "rb") as handle:
            if last_bytes is None:
                return handle.read().decode("utf-8", errors="replace")
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(size - last_bytes, 0))
            data = handle.read(last_bytes)
    except FileNotFoundError:
        return None
    except OSError as error:
        if last_bytes is None:
            raise
        return cannot_be_read(path, error)
    if size > last_bytes and (newline := data.find(b"\n", 0, len(data) - 1)) >= 0:
        data = data[newline + 1:]  # (not half a line, nor half a character)
    return data.decode("utf-8", errors="replace")


def cannot_be_read(path: str | os.PathLike[str], error: OSError) -> str:
    """What a failed job's error says for an output file that could not be
    read (a directory in its place, too many open files, a failing disk)."""
    name = os.path.basename(path)
    stream = next((each for each in ("stderr", "stdout") if each in name), "output")
    return f"(its {stream}, {os.fspath(path)}{_UNREADABLE}{error.strerror or error})"


_UNREADABLE = ", cannot be read: "


def move_spool_file(path: str, jobdir: str, name: str) -> None:
    """Move a dead worker's spool file to ``jobdir/name``: renamed, at no cost
    whatever its size, where both lie on one file system (a journaled run's
    spools are in its run directory), else copied. The control loop does it:
    a copy of gigabytes would hold every job up (attack review)."""
    try:
        os.mkdir(jobdir, 0o700)
    except FileExistsError:
        pass
    try:
        os.rename(path, os.path.join(jobdir, name))
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    spool = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        hand_over(spool, jobdir, name)
    finally:
        os.close(spool)


def keep_dead_drivers_spool(live: tuple[str, str], jobdir: str, run_dir: str) -> None:
    """Move what a job wrote before its driver was killed, from the spool files
    the journal names (*live*) to its own ``stdout`` and ``stderr`` in *jobdir*:
    the next driver removes the dead one's spools, and the job's interrupted
    try kept nothing (cold review: ``corral logs 1 --attempt 1`` said it "wrote
    nothing" after the rerun). Only regular files of a spool directory right
    under *run_dir* are taken, never one the job already has: the paths come
    from a file on disk, which a damaged or hostile journal could make name any
    file. Nothing is raised; what cannot be moved stays to be removed."""
    home = os.path.realpath(run_dir)
    for path, name in zip(live, ("stdout", "stderr"), strict=True):
        folder = os.path.dirname(path)
        if ("\0" in path + jobdir  # (a NUL, which no path holds: re-attack review)
                or os.path.dirname(os.path.realpath(folder)) != home
                or not os.path.basename(folder).startswith(SPOOL_PREFIX)
                or not os.path.basename(path).startswith("worker-")):
            continue
        try:
            found = os.lstat(path)
            if (not stat.S_ISREG(found.st_mode) or not found.st_size
                    or os.path.lexists(os.path.join(jobdir, name))):
                continue
            move_spool_file(path, jobdir, name)
        except OSError:
            continue


def keep_earlier_attempt(jobdir: str | None, attempt: int) -> None:
    """Move attempt *attempt*'s output files aside, as ``stdout.N`` and
    ``stderr.N``, so that the next attempt's stand alone and the earlier ones'
    tracebacks stay to be read (``corral logs --attempt N``): for a retry, and
    for a job a later session runs again (reviews: a retried job kept only its
    last attempt's output; a job run again lost its earlier run's)."""
    if jobdir is None or attempt < 1:
        return
    for stream in ("stdout", "stderr", RESULT_FILE_NAME):  # (a retry that writes no
        path = os.path.join(jobdir, stream)                # result has none)
        try:
            os.replace(path, f"{path}.{attempt}")
        except FileNotFoundError:
            pass
        except OSError:  # (a directory gone read-only: the next attempt's stands alone)
            with contextlib.suppress(OSError):
                os.unlink(path)
