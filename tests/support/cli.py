"""Running the real ``corral`` executable from tests, and cleaning up after it.

The ``corral`` command starts a detached daemon per run directory (its own
session, so it is no child of the test and the autouse "no process left
behind" check cannot see it). Every fixture that lets a daemon start must call
:meth:`Corral.stop_daemon` at teardown: ``corral stop``, then wait until that
pid is gone, and SIGKILL it as a last resort.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psutil

from support.waiting import wait_until

#: The console script installed next to the interpreter running the tests.
CORRAL = os.fspath(Path(sys.executable).with_name("corral"))

FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}

#: One CPU for every process these helpers start. The daemon's Scheduler packs
#: jobs into "all CPUs of its affinity but one, at least one", so a daemon
#: started by a pinned command runs one job at a time on any machine: a second
#: job is queued behind the first, which the tests about queues rely on.
_ONE_CPU = {min(os.sched_getaffinity(0))}


def _pin_to_one_cpu() -> None:
    os.sched_setaffinity(0, _ONE_CPU)


@dataclass(frozen=True)
class Outcome:
    """What one ``corral`` command did."""

    args: tuple[str, ...]
    status: int
    out: str
    err: str

    def __str__(self) -> str:
        return (f"corral {' '.join(self.args)} -> {self.status}\n"
                f"--- stdout\n{self.out}--- stderr\n{self.err}")

    def rows(self) -> dict[str, dict[str, str]]:
        """The job table of ``corral status`` as {id: {column: text}}."""
        return status_rows(self.out)

    @property
    def header(self) -> str:
        return self.out.splitlines()[0] if self.out else ""


def block(release: Path) -> str:
    """Shell code that returns once *release* exists (the job's own polling)."""
    return f"while [ ! -e {shlex.quote(os.fspath(release))} ]; do sleep 0.02; done"


def status_rows(text: str) -> dict[str, dict[str, str]]:
    """Parse the job table printed by ``corral status``.

    Columns are found by the positions of their titles in the title line; a
    line with an empty ID cell continues the row above (a wrapped DETAIL). The
    table ends at the first empty line (what follows it, for jobs asked for by
    id, is their whole reason and traceback).
    """
    lines = text.splitlines()
    titles = next(index for index, line in enumerate(lines) if line.startswith("ID "))
    title_line = lines[titles]
    names = title_line.split()
    starts = [title_line.index(f"{name}") for name in names]
    rows: dict[str, dict[str, str]] = {}
    last: dict[str, str] | None = None
    for line in lines[titles + 1:]:
        if not line.strip():
            break
        cells = [line[start:end].strip() for start, end in
                 zip(starts, [*starts[1:], None], strict=True)]
        row = dict(zip(names, cells, strict=True))
        if row["ID"]:
            rows[row["ID"]] = last = row
        elif last is not None:  # a wrapped cell
            for name, cell in row.items():
                if cell:
                    last[name] = f"{last[name]} {cell}"
    return rows


def assert_one_line_error(outcome: Outcome, status: int, pattern: str) -> str:
    """The command failed with *status* and one ``corral: error:`` line matching
    *pattern* (a regex) on stderr, and no traceback anywhere; one stopped (a
    wait that ran out, a Ctrl-C, a SIGTERM: 124, 130, 143) says ``corral:``
    without "error". Returns the line."""
    assert "Traceback" not in outcome.out + outcome.err, str(outcome)
    lines = outcome.err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr:\n{outcome}"
    stopped = status in (124, 130, 143)
    assert lines[0].startswith("corral: ") and (
        lines[0].startswith("corral: error: ") != stopped), str(outcome)
    assert re.search(pattern, lines[0]), f"{pattern!r} not in:\n{outcome}"
    assert outcome.status == status, str(outcome)
    return lines[0]


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def owner_pid(run_dir: Path) -> int | None:
    """The pid in the run's lock file while a live driver holds the lock, else
    None (also where a test put something else in the lock file's place)."""
    from corral.errors import JournalError
    from corral.journal.files import owner_of

    try:
        owner = owner_of(run_dir)
    except JournalError:
        return None
    return None if owner is None else owner.get("pid")


def kill_and_wait(pid: int, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    wait_until(lambda: pid_gone(pid), timeout, f"pid {pid} to exit after signal {sig}")


class Corral:
    """The ``corral`` command for one run directory, with a private environment:
    HOME, TMPDIR and the config file live in *home*, so nothing of the user's
    (or of another test's) is read or left behind."""

    def __init__(self, home: Path, run: Path, *, idle: float = 30, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.home = home
        self.run = run
        self.config = home / "user-corral.toml"
        self.cwd = cwd or home
        self.tmp = home / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.config.touch()  # (empty: a file $CORRAL_CONFIG names must exist)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.fspath(home),
            "TMPDIR": os.fspath(self.tmp),
            "CORRAL_RUN": os.fspath(run),
            "CORRAL_CONFIG": os.fspath(self.config),
            "CORRAL_SITE_CONFIG": "",  # (none of the machine's: see conftest)
            "CORRAL_DAEMON_IDLE": str(idle),
            "COLUMNS": "400",  # wide enough that no table cell is cut or folded
            "LANG": "C.UTF-8",
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
            **(env or {}),
        }
        self.daemons: set[int] = set()

    def __call__(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                 input: str | None = None, timeout: float = 60) -> Outcome:
        completed = subprocess.run(
            [CORRAL, *args], cwd=cwd or self.cwd, env={**self.env, **(env or {})},
            input=input if input is not None else "", capture_output=True, text=True,
            timeout=timeout, preexec_fn=self._pinning())
        self._note_daemon()
        return Outcome(tuple(args), completed.returncode, completed.stdout, completed.stderr)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a long command (``wait``, ``logs --follow``); the caller must
        end it (``communicate`` or kill) before the test ends."""
        return subprocess.Popen(
            [CORRAL, *args], cwd=self.cwd, env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=self._pinning())

    def ok(self, *args: str, **kwargs) -> Outcome:
        """Run a command that must succeed."""
        outcome = self(*args, **kwargs)
        assert outcome.status == 0 and "Traceback" not in outcome.err, str(outcome)
        return outcome

    def submit(self, *args: str, **kwargs) -> str:
        """``corral submit ARGS``; return the printed job id."""
        outcome = self.ok("submit", *args, **kwargs)
        job_id = outcome.out.strip()
        assert re.fullmatch(r"\d+", job_id), str(outcome)
        return job_id

    def status_of(self, job_id: str) -> str | None:
        """The job's STATUS in ``corral status ID`` (None while it is not listed)."""
        outcome = self("status", "--all")
        assert outcome.status in (0, 1), str(outcome)
        row = outcome.rows().get(job_id)
        return None if row is None else row["STATUS"]

    def wait_for_status(self, job_id: str, wanted: str, timeout: float = 20) -> None:
        """Wait until job *job_id* is *wanted* in the journal, read in-process: a
        command per poll would keep a core busy starting interpreters (the
        command shows what the journal says; status_of asks it)."""
        wait_until(lambda: self._journal_status(job_id) == wanted, timeout,
                   f"job {job_id} to be {wanted} (last: {self._journal_status(job_id)})")

    def _journal_status(self, job_id: str) -> str | None:
        from corral import Run

        try:
            return Run(self.run).job(job_id).status.name
        except (FileNotFoundError, KeyError):
            return None

    def daemon_pid(self) -> int | None:
        return owner_pid(self.run)

    def _pinning(self):
        """Pin a command to one CPU when it may start the daemon (none runs now),
        so that the daemon inherits it; other commands run anywhere."""
        return _pin_to_one_cpu if self.daemon_pid() is None else None

    def _note_daemon(self) -> None:
        try:
            held = (self.run / "owner.lock").exists()
        except OSError:  # (a run path no file can have: a test of that)
            held = False
        pid = self.daemon_pid() if held else None
        if pid:
            self.daemons.add(pid)

    def settle(self) -> None:
        """Leave the run with nothing unfinished and not paused, whatever the test
        did, so that the next test sharing its daemon starts clean. (It reads the
        journal in-process: cheaper than a command, and it asserts nothing.)"""
        from corral import Run

        if self.daemon_pid() is None or not (self.run / "journal.db").exists():
            return
        run = Run(self.run)
        if run.paused:
            self.ok("resume")
        unfinished = [str(job.id) for job in run.jobs() if job.status.name not in FINISHED]
        if unfinished:
            self("cancel", *unfinished)
            wait_until(lambda: all(job.status.name in FINISHED for job in run.jobs()), 20,
                       "the cancelled jobs to end")

    def stop_daemon(self, timeout: float = 20) -> None:
        """Stop every daemon this object saw start; SIGKILL one that does not go."""
        self._note_daemon()
        if self.daemon_pid() is not None:
            self("stop")
        for pid in sorted(self.daemons):
            try:
                wait_until(partial(pid_gone, pid), timeout, f"daemon {pid} to exit")
            except AssertionError:
                kill_and_wait(pid)
                raise
        self.daemons.clear()


def read_until(process: subprocess.Popen, wanted: bytes, timeout: float = 20) -> bytes:
    """Read the process's stdout until *wanted* has appeared (or fail after *timeout*)."""
    import selectors

    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while wanted not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {wanted!r}; got {seen!r}")
            if selector.select(left):
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"stdout closed before {wanted!r}; got {seen!r}")
                seen += chunk
    return seen
