"""A job and a driver session as the journal holds them: what ``corral
status``, the report and a resumed run read of a run, from any process.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from corral.status import TERMINAL, JobStatus
from corral.errors import JournalError
from corral.journal.files import JOURNAL_FILE

__all__ = ["StoredJob", "directory_now", "StoredSession", "DRIVER_GONE",
           "COMPLETED_ALL_THE_SAME"]

#: How the reason of a job whose driver died before it ended begins (here, not
#: with the driver's side that writes it: ``corral status`` reads it too).
DRIVER_GONE = "its driver ended before it did"

#: Ends the reason of a job cancelled while its worker was finishing it: it
#: completed all the same, and a resumed run does not run it again. (Here: the
#: journal settles such jobs a dead driver left, as well as the engine.)
COMPLETED_ALL_THE_SAME = "it had completed before the cancel reached it"


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One job as the journal last recorded it (plain values, no live process)."""

    id: int | str
    key: str
    name: str
    kind: str
    command: str
    spec: dict[str, Any]
    deps: tuple[int | str, ...]
    status: JobStatus
    reason: str | None
    exit_code: int | None
    attempts: int
    native_id: str | None
    started: float | None
    ended: float | None
    jobdir: str | None
    result: bytes | None
    error: bytes | None
    session: int | None
    live: tuple[str, str] | None = None  # stdout, stderr files while it runs
    #: Its key with the code left out (see corral.core.identity.job_digests).
    slot: str | None = None
    #: The journal file it was read from, for error messages.
    journal: str | None = field(default=None, compare=False, repr=False)
    #: Whether *result* and *error* were read (``Run.jobs(results=False)`` leaves them out).
    results_read: bool = field(default=True, compare=False, repr=False)
    #: What the vocabulary knows it by (it cannot import this layer):
    #: :func:`corral.job_refs.read_back_job_problem`.
    _is_read_back_corral_job: ClassVar[bool] = True

    @property
    def meta(self) -> Any:
        """What the job was given as ``meta=``: as JSON gives it back, or its
        repr when it was not plain data; None if it had none."""
        return self.spec.get("meta") if isinstance(self.spec, dict) else None

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.COMPLETED

    def result_value(self) -> Any:
        """The job's return value: a call's, or the JSON a command left (None
        for a command that left none).

        Raises:
            concurrent.futures.InvalidStateError: the job has not finished (an
                answer of None could not be told from a call that returned
                None: submitit review).
            Exception: as a live Job's result(): the job's own exception, if
                it raised one (with its remote traceback as ``__cause__``);
                else JobTimedOut if it timed out, JobFailed if it failed, and
                concurrent.futures.CancelledError if it was cancelled.
            JournalError: the stored result (or error) cannot be loaded: a
                damaged value is never answered as None.
        """
        from corral.errors import JobFailed, JobTimedOut, RemoteTraceback, cancelled_message
        from corral.runtime.payload import loads_error

        if self.error is not None:
            error, traceback_text, summary = self._load("error", loads_error, self.error)
            if self.status is JobStatus.TIMED_OUT:  # a call stopped at its timeout: its
                # JobStopped says where it was, as a live Job's JobTimedOut does
                timed_out = JobTimedOut(f"job {self.id} {self.name!r} {self.reason}",
                                        job_id=self.id, status=self.status, reason=self.reason)
                timed_out.__cause__ = RemoteTraceback(traceback_text)
                raise timed_out
            if error is not None:
                error.__cause__ = RemoteTraceback(traceback_text)
                raise error
            # (One this process cannot load: said with its traceback, as live.)
            raise JobFailed(f"job {self.id} {self.name!r} raised {summary}\n{traceback_text}",
                            job_id=self.id, status=self.status, reason=self.reason,
                            exit_code=self.exit_code)
        if self.status not in TERMINAL:
            from concurrent.futures import InvalidStateError

            raise InvalidStateError(f"job {self.id} {self.name!r} has not finished "
                                    f"({self.status.name} when the journal last heard of "
                                    "it): it has no value yet")
        if self.status is JobStatus.CANCELLED:  # (as a live Job's result(): cold review)
            from concurrent.futures import CancelledError

            raise CancelledError(cancelled_message(self.id, self.name, self.reason))
        if self.status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            kind = JobTimedOut if self.status is JobStatus.TIMED_OUT else JobFailed
            raise kind(self._failure(), job_id=self.id, status=self.status,
                       reason=self.reason, exit_code=self.exit_code)
        return self.load_result()

    def _failure(self) -> str:
        """Why it has no value, as a live Job's JobFailed says it: with the last
        lines of its stderr when it failed (a cold review: a failed script read
        back said only "exit code 3")."""
        message = f"job {self.id} {self.name!r} {self.status.name}: {self.reason}"
        tail = self.stderr_tail()
        return message if tail is None else f"{message}\n{tail}"

    def stderr_tail(self) -> str | None:
        """``last lines of its stderr (PATH):`` and those lines, or a line
        saying it cannot be read; None when it wrote nothing there (or has no
        files)."""
        path = self.output_path("stderr")
        if path is None:
            return None
        from corral.runtime.spool import TAIL_BYTES, last_lines, read_output, with_stderr_tail

        try:
            tail = last_lines(read_output(path, last_bytes=TAIL_BYTES))
        except OSError as error:  # (unreadable: its job's error is still the answer)
            return f"(its stderr, {path}, cannot be read: {error.strerror or error})"
        return with_stderr_tail("", tail, path).lstrip("\n") or None

    @property
    def result_lost(self) -> bool:
        """Whether it completed as a Python call whose value the journal does not
        hold: a value too big for SQLite (a gigabyte), or a damaged row. A call
        that returned None holds None's pickle, so this is never a None."""
        return (self.results_read and self.result is None and self.status is JobStatus.COMPLETED
                and self.kind in ("call", "function"))

    def load_result(self) -> Any:
        """The stored return value, whatever the status (None if none is stored).

        Raises:
            JournalError: it cannot be loaded, or a completed call's was not
                recorded (never answered as None: hostile-input review).
        """
        if self.result_lost:
            where = f" in {self.journal}" if self.journal else ""
            raise JournalError(f"job {self.id} {self.name!r} completed, but its result is not "
                               f"stored{where} (too big for the journal, or the journal is "
                               "damaged); run it again")
        return None if self.result is None else self._load("result", pickle.loads, self.result)

    def _load(self, what: str, load: Callable[[bytes], Any], blob: bytes) -> Any:
        try:
            return load(blob)
        except Exception as problem:
            where = f" in {self.journal}" if self.journal else ""
            raise JournalError(
                f"job {self.id} {self.name!r}: its stored {what}{where} cannot be loaded "
                f"({type(problem).__name__}: {problem}); the journal is damaged, or the value "
                "needs code this process cannot import") from None

    def traceback_text(self) -> str | None:
        """The remote traceback of the exception the job raised, as text; None if it
        raised none (or its record was read without results, or cannot be read)."""
        from corral.runtime.payload import error_traceback

        if self.error is None:
            return None
        try:
            return error_traceback(self.error)
        except Exception:
            return None

    @property
    def directory(self) -> str | None:
        """The job's directory as its run holds it now (None: it has none).

        :attr:`jobdir` is where it was made: in a run that was moved or copied
        since, that is the run's old place, where another run may live now
        (``corral clean`` of a copy deleted the original's files, and ``logs``
        showed the original's output). So the job's directory is the one of
        the same name in this run when the one recorded is in another run's
        directory, or in one that is gone, whether it exists or not. One made
        elsewhere on purpose (``Scheduler(workdir=...)``) stays where it is.
        """
        if not self.jobdir or not self.journal:
            return self.jobdir
        return directory_now(self.jobdir, os.path.dirname(self.journal))

    def output_path(self, stream: str = "stdout") -> str | None:
        """Where *stream* is now: a spool file while the job runs, else its job file."""
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream={stream!r} must be 'stdout' or 'stderr'")
        directory = self.directory
        if self.live is not None and self.status is JobStatus.RUNNING:
            live = self.live[0] if stream == "stdout" else self.live[1]
            if os.path.exists(live) or not directory:  # (else: moved, its worker dead)
                return live
        return os.path.join(directory, stream) if directory else None

    def output_written_at(self) -> float | None:
        """When the job last wrote to its stdout or stderr file (None: no file)."""
        times = []
        for stream in ("stdout", "stderr"):
            path = self.output_path(stream)
            if path:
                try:
                    times.append(os.stat(path).st_mtime)
                except OSError:
                    pass
        return max(times, default=None)

    def output(self, stream: str = "stdout") -> str:
        """What the job wrote to *stream* (``"stdout"`` or ``"stderr"``), "" if nothing.

        Raises:
            FileNotFoundError: ``corral clean`` removed the job's files (cold
                review: its output read as "", as if it had written nothing,
                where ``corral logs`` said that it was removed).
        """
        from corral.runtime.spool import read_output

        path = self.output_path(stream)
        if path is None:
            return ""
        if self.journal and not os.path.exists(path):
            from corral.journal.cleaned import was_cleaned

            if was_cleaned(os.path.dirname(self.journal), self):
                raise FileNotFoundError(f"job {self.id}'s output files were removed "
                                        "(corral clean)")
        return read_output(path)

    @property
    def stdout(self) -> str:
        """What the job wrote to its standard output, as a live ``Job.stdout``
        gives it (cold review: a job read back from the journal had another API)."""
        return self.output("stdout")

    @property
    def stderr(self) -> str:
        """What the job wrote to its standard error."""
        return self.output("stderr")


def directory_now(jobdir: str, run_dir: str) -> str:
    """Where the job directory recorded as *jobdir* is in the run at *run_dir*
    now (see :attr:`StoredJob.directory`): in this run, at the same place
    under it as it was made under the run's old place (its ``workdir=`` may
    be a folder inside the run), unless it was made elsewhere on purpose (in
    a directory of no run)."""
    place = os.path.dirname(jobdir)
    while True:
        try:
            if os.path.samefile(place, run_dir):
                return jobdir
        except (OSError, UnicodeEncodeError):  # gone: the run was moved away from it (or
            # its name cannot be said in this locale's encoding, LC_ALL=C: attack review)
            return _where_it_came(jobdir, run_dir)
        if os.path.lexists(os.path.join(place, JOURNAL_FILE)):  # another run's, now
            return os.path.join(run_dir, os.path.relpath(jobdir, place))
        parent = os.path.dirname(place)
        if parent == place:  # (the root: made in no run's directory)
            return jobdir
        place = parent


def _where_it_came(jobdir: str, run_dir: str) -> str:
    """The job directory of a run moved away from the place *jobdir* was made
    in, which is gone: the deepest of its places under *run_dir* that exists
    (``files/1`` of a run made with ``workdir="run/files"``), else the one of
    its name."""
    place = os.path.dirname(jobdir)
    while os.path.dirname(place) != place:
        candidate = os.path.join(run_dir, os.path.relpath(jobdir, place))
        if os.path.isdir(candidate):
            return candidate
        place = os.path.dirname(place)
    return os.path.join(run_dir, os.path.basename(jobdir))




@dataclass(frozen=True)
class StoredSession:
    """One driver session of a run: who drove it, on which backend, and what
    that backend could run at once (``cores`` None: unknown, or a cluster that
    packs on its own)."""

    id: int
    kind: str
    backend: str | None
    started: float | None
    ended: float | None
    cores: int | None
    #: Why its program left the ``with`` block before its jobs had ended (a
    #: Ctrl-C, an exception), cancelling them; None if it did not.
    left_early: str | None = None
