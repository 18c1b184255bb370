"""The per-run daemon: what runs ``corral submit`` jobs after the command returns.

``corral submit`` needs a live process to run the job once the command has
exited. :func:`ensure_daemon` starts one on demand — detached, one per run
directory (the run's lock makes a second one exit at once) — and waits until
it answers on the control socket. The daemon hosts a journaled
:class:`~corral.core.scheduler.Scheduler` on the local backend and:

* on start, runs again the commands its journal left unfinished (a daemon that
  was killed loses nothing that was submitted), paused if the run was paused;
* serves control requests (:mod:`corral.control.server`);
* exits once nothing is left to run and no request came for ``idle`` seconds
  (``CORRAL_DAEMON_IDLE``, default 300), or on ``corral stop`` / SIGTERM,
  which cancel what is unfinished. (A daemon that is killed outright cancels
  nothing: the next one runs its unfinished jobs again.)

Its own messages go to ``<run dir>/daemon.log`` and the run's ``corral.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corral.journal.session_env import ENVIRONMENT_KEY, environment_again
from corral.control.server import NoDriver, send_request, send_when_served
from corral.control.verbs import STOPPED_REASON
from corral.core.run_files import DAEMON_LOG
from corral.config_files import CONFIG_NAME, config_paths, same_file, user_config_path
from corral.cli.exits import Terminated, raise_terminated
from corral.errors import CorralError
from corral.status import TERMINAL, JobStatus
from corral.errors import RunInUse, RunLockTakenAway
from corral.journal.files import STOP_ASKED_FILE, private_file, private_run_dir
from corral.journal.reading import read_meta
from corral.journal.stored import StoredJob

__all__ = ["ensure_daemon", "serve", "DAEMON_LOG", "HELD_FOR", "idle_seconds"]

log = logging.getLogger("corral.daemon")

_START_TIMEOUT_S = 20.0
#: Daemons started at most by one command: one that finds the run held and
#: nobody serving it (see :func:`ensure_daemon`) is followed by another.
_START_ATTEMPTS = 3
#: The daemon's exit status when its settings or its backend refused to start: its
#: log then holds one line saying why.
_REFUSED = 2
_REFUSAL_MARK = "corral daemon: cannot start: "


def idle_seconds(default: float = 300.0) -> float:
    """``$CORRAL_DAEMON_IDLE`` if set, else *default* (the ``[daemon]`` idle setting)."""
    value = os.environ.get("CORRAL_DAEMON_IDLE")
    if value is None:
        return default
    from corral.config import check_idle  # (the bounds of [daemon] idle too)

    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    try:
        return check_idle(seconds, f"CORRAL_DAEMON_IDLE={value!r} must be a number of seconds")
    except ValueError as error:
        raise CorralError(str(error)) from None


def ensure_daemon(run_dir: Path, paused: bool = False, held: bool = False) -> dict[str, Any]:
    """Return the ping answer of the run's driver, starting a daemon if none runs
    (*paused*: one that starts paused, before it runs again what a dead one left;
    *held*: one that starts none of those jobs before this command's request,
    such as a cancel of one of them, is carried out: see :func:`serve`).

    Raises:
        CorralError: the daemon could not start (its log's last lines say why).
    """
    for attempt in range(_START_ATTEMPTS):
        try:  # (one starting, another command's daemon or a script, is waited for)
            return send_when_served(run_dir, {"verb": "ping"})
        except NoDriver:
            pass
        process = None
        try:
            run_dir = private_run_dir(run_dir)
            private_file(run_dir / DAEMON_LOG)
            with open(run_dir / DAEMON_LOG, "ab") as log, _ctrl_c_after_the_start():
                written_before = log.seek(0, os.SEEK_END)
                process = subprocess.Popen(
                    [sys.executable, "-m", "corral.cli.daemon", os.fspath(run_dir),
                     *(["--paused"] if paused else []), *(["--held"] if held else [])],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                    cwd=run_dir, env=_daemon_environment())
            started = _wait_started(run_dir, process)
        except FileNotFoundError:
            # A refused first submit racing this one took the new run away
            # between its making and the daemon's start (CI: "run: No such
            # file or directory"): it is made anew, as a daemon would.
            if process is None and attempt + 1 < _START_ATTEMPTS \
                    and not os.path.lexists(run_dir):
                continue
            raise
        except (KeyboardInterrupt, Terminated):  # (attack review: it made the run after the
            # submit gave up)
            if process is not None:
                _end_unanswered(process)
            raise
        if not isinstance(started, int):
            return started
        code = started
        try:  # lost a race with another daemon starting: that one answers once started
            return send_when_served(run_dir, {"verb": "ping"})
        except NoDriver:
            said = _refusal(run_dir / DAEMON_LOG, written_before)
            if code == _REFUSED and said:
                raise CorralError(f"the corral daemon for {run_dir} could not start: "
                                  f"{said}{_unseen_table_hint(said, run_dir)}") from None
            if code == 0 and attempt + 1 < _START_ATTEMPTS:
                # It found the run held (another daemon starting, or a refused
                # first submit taking its new run away), and nobody serves it now.
                continue
            said = _tail(run_dir / DAEMON_LOG).strip() or _why_silent(run_dir)
            raise CorralError(f"the corral daemon for {run_dir} exited ({code}) at start:\n"
                              f"{said}") from None
    raise AssertionError("unreachable: the last attempt returns or raises")


@contextlib.contextmanager
def _ctrl_c_after_the_start() -> Iterator[None]:
    """Hold a Ctrl-C (or the command's SIGTERM) that comes while the daemon's
    process is being started until its ``Popen`` is known, so that the daemon
    can be ended: one that came within ``Popen`` left a daemon nobody knew of
    (seen under load)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    # (SIGTERM too where the command raises it: a supervisor's, timeout's)
    signums = [signal.SIGINT] + ([signal.SIGTERM] if signal.getsignal(signal.SIGTERM)
                                 is raise_terminated else [])
    before = {signum: signal.signal(signum, lambda number, frame: held.append(number))
              for signum in signums}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    if signal.SIGINT in held:
        raise KeyboardInterrupt
    if held:
        raise Terminated


def _end_unanswered(process: subprocess.Popen[bytes]) -> None:
    """End a daemon this command started, and stopped waiting for (Ctrl-C),
    before it makes a run nobody asked for any more: a refused or interrupted
    first submit then finds the run's files to take away, and no daemon."""
    process.terminate()  # (its SIGTERM: it closes what it opened)
    try:
        process.wait(_END_PATIENCE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


#: Seconds a daemon told to end as it starts is given before it is killed.
_END_PATIENCE_S = 10.0


def _daemon_environment() -> dict[str, str]:
    """This command's environment for the daemon, with ``$CORRAL_CONFIG`` made
    absolute: the daemon runs in the run directory, where a relative one named
    no file, and it went on silently with no [daemon] table (jobs meant for
    Slurm ran here) while the command had checked the submit against it."""
    environment = os.environ.copy()
    if environment.get("CORRAL_CONFIG"):
        environment["CORRAL_CONFIG"] = os.fspath(user_config_path().absolute())
    if environment.get("CORRAL_SITE_CONFIG"):
        environment["CORRAL_SITE_CONFIG"] = os.path.abspath(
            os.path.expanduser(environment["CORRAL_SITE_CONFIG"]))
    return environment


def _wait_started(run_dir: Path, process: subprocess.Popen[bytes]) -> dict[str, Any] | int:
    """Wait until the daemon just started answers (its ping answer) or exits
    (its exit code).

    Raises:
        CorralError: it did neither within :data:`_START_TIMEOUT_S` (it is killed).
    """
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        try:
            return send_request(run_dir, {"verb": "ping"})
        except NoDriver:
            pass
        code = process.poll()
        if code is not None:
            return code
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise CorralError(f"the corral daemon for {run_dir} did not answer within "
                              f"{_START_TIMEOUT_S:.0f} s; see {run_dir / DAEMON_LOG}")
        time.sleep(0.02)  # polling a process we just started; nothing to wait on instead


def _refusal(path: Path, offset: int) -> str:
    """Why the daemon refused to start, from what it wrote to its log after
    *offset* (a backend's own log lines may come before it); "" if it did not say."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            written = handle.read(256 * 1024).decode(errors="replace")
    except OSError:
        return ""
    said = [line[len(_REFUSAL_MARK):] for line in written.splitlines()
            if line.startswith(_REFUSAL_MARK)]
    return said[-1] if said else ""


def _why_silent(run_dir: Path) -> str:
    """What to say of a daemon that exited at its start leaving its log empty:
    on a full disk it could not write a word (the message was empty)."""
    try:
        room = os.statvfs(run_dir)
    except OSError as error:
        return f"(its log is empty, and {run_dir} cannot be looked at: {error.strerror})"
    if room.f_bavail * room.f_frsize < 64 * 1024 or (room.f_files and not room.f_favail):
        return (f"(its log is empty: the disk that holds {run_dir} is full; make room there, "
                "or choose a run directory on another disk)")
    return f"(its log, {run_dir / DAEMON_LOG}, is empty)"


def _unseen_table_hint(said: str, run_dir: Path) -> str:
    """Where a daemon refused a backend it does not know that the submitting
    directory's ``corral.toml`` describes: the daemon reads the run
    directory's file and the user's, not that one (a sysadmin's review got a
    traceback, then only "must be one of")."""
    import re
    import tomllib

    named = re.search(r"backend='([^']+)' must be one of", said)
    user_file, here = config_paths()
    if named is None or same_file(here, run_dir / CONFIG_NAME):
        return ""
    try:
        tables = tomllib.loads(here.read_text(errors="replace")).get("schedulers")
    except (OSError, ValueError):
        return ""
    if not isinstance(tables, dict) or named.group(1) not in tables:
        return ""
    return (f"; [schedulers.{named.group(1)}] is in {here}, which the daemon does not read: "
            f"put it in the run directory's {run_dir / CONFIG_NAME} or in your user config "
            f"{user_file}")


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _unfinished_submissions(journal) -> list[StoredJob]:
    """Commands that ``corral submit`` gave an earlier daemon and that did not
    finish, in submission order. A script's jobs are the script's to run again."""
    return [job for job in journal.previous.unfinished()
            if job.status not in TERMINAL and job.kind == "shell"
            and journal.session_kinds.get(job.session) == "daemon"]


def _rebuild(stored: StoredJob, rebuilt: dict[str, Any], finished: dict[str, JobStatus],
             meta: dict[str, str]):
    """A Job for a command the journal left unfinished, with its old id and
    every option it was submitted with (its journaled spec, decoded by the
    same codec that encoded it); a job that cannot be made again is doomed,
    with the reason, rather than run otherwise than it was submitted."""
    from corral.core.job import Job, doom
    from corral.journal.codec import decode_spec

    after = []
    doomed = None
    for dep in stored.deps:
        if str(dep) in rebuilt:
            after.append(rebuilt[str(dep)])
        elif finished.get(str(dep)) is not JobStatus.COMPLETED:
            # Its parent failed or was lost: it would never run; say so in the journal.
            status = finished.get(str(dep))
            doomed = f"upstream job {dep} {'was lost' if status is None else status.name}"
    try:
        journaled = decode_spec(stored.spec)
        if journaled.task is None:
            raise ValueError("the journal holds no command for it")
        options = {**journaled.options, "after": after or None}
        # (A command submitted with the daemon's very environment has no env option.)
        options["env"] = environment_again(options.get("env") or {}, stored.session, meta)
        job = Job(journaled.task, id=stored.id, **options)
    except (ValueError, TypeError) as error:  # a damaged spec, a directory removed since...
        return _doomed_job(stored, f"cannot run again after the daemon restarted: {error}")
    return job if doomed is None else doom(job, doomed)


def _doomed_job(stored: StoredJob, reason: str):
    """A stand-in for a journaled job that cannot run again: dispatched only
    to record, under its id and name, that it was cancelled and why."""
    from corral.core.job import Job, doom
    from corral.options import MAX_NAME_CHARACTERS
    from corral.safe_repr import shortened
    from corral.spec import Shell

    name = (stored.name or "job")[:MAX_NAME_CHARACTERS]
    try:  # its command as the journal shows it (never run), so ``corral status`` still shows it
        job = Job(Shell(stored.command or "true"), id=stored.id, name=name)
    except (ValueError, TypeError):  # one that cannot be made now (too long to run, or a
        # journal of a corral that took longer names): a stand-in that can, its row kept
        # (attack review: the daemon died at its start on it, and the run with it)
        shown = shortened((stored.command or "true").replace("\0", "\\0"), 1000)
        job = Job(Shell(shown), id=stored.id, name=name)
    return doom(job, reason)


def serve(run_dir: Path, idle: float | None = None, paused: bool = False,
          held: bool = False) -> int:
    """Run the daemon until idle or stopped; return the exit status. *paused*:
    start paused (``corral pause`` of a run whose daemon had died must not
    start again the jobs it left unfinished). *held*: start the jobs a dead
    daemon left only once a request of :data:`HELD_FOR` is carried out (the
    one of the command that started this daemon: ``corral cancel 6`` must
    not start job 6 first), or after :data:`_HELD_FOR_COMMAND_S`.

    Its packing comes from the ``[daemon]`` table of the user's config (and of
    ``corral.toml`` in the run directory).
    """
    from corral.cli.daemon_settings import SettingsWatch, settings_stamps
    from corral.config import load_config
    from corral.core.scheduler import Scheduler

    stamps = settings_stamps(run_dir)  # first: an edit made while they are read is seen
    try:
        config = load_config(cwd=run_dir)
        settings = config.daemon
        idle = idle if idle is not None else idle_seconds(settings.idle)
        scheduler = Scheduler(backend=settings.backend, journal=run_dir, _owner="daemon",
                              config=config,
                              cores=settings.cores,  # (megabytes said: "48M" is no 48 GB)
                              memory=None if settings.memory_mb is None
                              else f"{settings.memory_mb}M",
                              gpus=settings.gpus, queues=dict(settings.queues),
                              tokens=settings.tokens, address=settings.address,
                              backend_options=dict(settings.backend_options) or None)
    except RunLockTakenAway as error:  # (not a race: said, as a refusal is)
        print(f"{_REFUSAL_MARK}{error}", file=sys.stderr, flush=True)
        os._exit(_REFUSED)
    except RunInUse:
        return 0  # another daemon won the race to start; it serves the run
    except Exception as error:  # its settings, or its backend, refused
        print(f"{_REFUSAL_MARK}{error}", file=sys.stderr, flush=True)
        # Now: a half-made client of a backend's may take its time to close at exit.
        os._exit(_REFUSED)
    _settle_in(run_dir)
    journal = scheduler._journal
    assert journal is not None, "a daemon's scheduler keeps the run's journal"
    # The environment its jobs' are stored against (see environment_again).
    journal.set_meta(ENVIRONMENT_KEY.format(session=journal.session), json.dumps(dict(os.environ)))
    stop = threading.Event()
    scheduler._stop_requested = stop
    scheduler._settings_check = SettingsWatch(run_dir, config, stamps, scheduler,
                                              stop).before_submit
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    control = scheduler._control
    assert control is not None, "a scheduler with a journal serves its control socket"
    # A run directory deleted under the daemon (and made again by the next
    # command, for another run) left it running its jobs, unseen and beyond
    # reach, for as long as they ran: it ends them and itself (review).
    lost = False
    holding = held and not paused and not scheduler.paused
    if paused:
        scheduler.pause()
    elif holding:  # (not in the journal: a daemon that dies holding leaves no pause)
        scheduler._engine.call(scheduler._engine.set_paused, True, False)
    stop_left = (run_dir / STOP_ASKED_FILE).exists()
    held_already = paused or holding or scheduler.paused
    if stop_left:  # nothing it left may start before its stop is carried out
        scheduler._engine.call(scheduler._engine.set_paused, True, False)
    try:  # (a run left paused: the Scheduler started paused, before it served a request)
        command_served = _CommandWatch(control) if holding else None
        try:  # the control socket reads requests but holds them until the jobs are taken up
            _resubmit(scheduler, run_dir)
            if stop_left:
                _finish_the_stop(scheduler, run_dir, release=not held_already)
        finally:
            control.open()
        if command_served is not None:
            command_served.wait_and_release(scheduler)
        last_busy = time.monotonic()
        while not stop.wait(min(1.0, idle / 4)):
            now = time.monotonic()
            if scheduler._engine.stopped.is_set():  # its control loop crashed (logged): the
                break  # next command's daemon takes the run up (attack review: it never exited)
            if control.run_deleted():
                lost = True
                break
            if scheduler._engine.unfinished:
                last_busy = now
            quiet_since = max(last_busy, control.last_request)
            if now - quiet_since >= idle:
                break
    finally:
        if lost:
            log.warning("the run directory %s was deleted: its jobs are ended, and the daemon "
                        "with them", run_dir)
            scheduler.interrupt("the run directory was deleted")
        elif stop.is_set():
            scheduler.interrupt(STOPPED_REASON)
            _stop_carried_out(run_dir)
        scheduler.shutdown(wait=True)
    return 1 if lost else 0


def _finish_the_stop(scheduler: Any, run_dir: Path, release: bool) -> None:
    """Carry out a ``corral stop`` that a daemon answered and was killed before
    it had cancelled its jobs: cancel what it left (in a cluster too), as it
    would have, instead of running it again; *release*: then let new jobs start."""
    log.warning("the daemon before this one was stopped (corral stop) and ended before it "
                "had cancelled its jobs: they are cancelled now")
    scheduler.interrupt(STOPPED_REASON)
    _stop_carried_out(run_dir)
    if release:
        scheduler._engine.call(scheduler._engine.set_paused, False, False)


def _stop_carried_out(run_dir: Path) -> None:
    """Take the note of a pending ``corral stop`` away: its cancels are with
    the journal's writer, which writes them if this daemon dies now."""
    with contextlib.suppress(OSError):
        os.unlink(run_dir / STOP_ASKED_FILE)


def _settle_in(run_dir: Path) -> None:
    """Work in, and log to, the run directory that this daemon holds now.

    The command that started it opened the log and chose the working
    directory before the daemon took the run; a refused first submit may have
    moved that run away meanwhile (``corral.cli.new_run.undo_new_run``), and this
    daemon then made the run anew. Its workers must not start in a removed
    directory, nor its log lines go to a removed file.
    """
    os.chdir(run_dir)
    log = run_dir / DAEMON_LOG
    try:
        same = os.path.samestat(os.fstat(sys.stderr.fileno()), os.stat(log))
    except (OSError, ValueError):
        same = False
    if not same:
        private_file(log)
        descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(descriptor, sys.stdout.fileno())
        os.dup2(descriptor, sys.stderr.fileno())
        os.close(descriptor)


#: How long a held daemon (see :func:`serve`) waits for the request of the
#: command that started it: it follows the start at once, unless that command died.
_HELD_FOR_COMMAND_S = 10.0
#: The requests a daemon is held for: a cancel must find the jobs it names
#: taken up, and none of them started again. (Not clear: it cancels what has
#: not started, and the job that ran when the daemon died is to run again.)
HELD_FOR = ("cancel",)


class _CommandWatch:
    """Sees the cancel of the command that started the daemon carried out,
    and whether a request paused or resumed the run meanwhile, by wrapping
    the server's handler. (Another command's submit may come first: it does
    not end the hold.)"""

    def __init__(self, control) -> None:
        self._control, self._handler = control, control.handler
        self._served = threading.Event()
        self._decided = False
        control.handler = self._handle

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        verb = request.get("verb") if isinstance(request, dict) else None
        try:
            return self._handler(request)
        finally:
            if verb in ("pause", "resume"):  # the user's word: it stands
                self._decided = True
            if verb in HELD_FOR:
                self._served.set()

    def wait_and_release(self, scheduler) -> None:
        """Resume *scheduler* once the command's request is carried out (or
        the wait is over), unless a request paused or resumed it meanwhile."""
        self._served.wait(_HELD_FOR_COMMAND_S)
        self._control.handler = self._handler
        if not self._decided:
            scheduler.resume()


def _resubmit(scheduler, run_dir: Path) -> None:
    journal = scheduler._journal
    leftovers = _unfinished_submissions(journal)
    if not leftovers:
        return
    meta = read_meta(run_dir)
    upstream = {str(dep) for stored in leftovers for dep in stored.deps}
    finished = {job_id: status for job_id, status in journal.previous.statuses(upstream).items()
                if status in TERMINAL}
    rebuilt: dict[str, Any] = {}
    for stored in leftovers:  # in submission order: parents first
        job = _rebuild(stored, rebuilt, finished, meta)
        try:
            scheduler.dispatch([job])
        except ValueError as error:  # e.g. its queue left the [daemon] table meanwhile
            job = _doomed_job(stored, f"cannot run again after the daemon restarted: {error}")
            scheduler.dispatch([job])
        rebuilt[str(stored.id)] = job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.cli.daemon",
                                     description="Serve one corral run directory.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--idle", type=float, default=None,
                        help="exit after this many seconds with nothing to do "
                             "(default: $CORRAL_DAEMON_IDLE, else [daemon] idle, else 300)")
    parser.add_argument("--paused", action="store_true",
                        help="start paused, before running again what a dead daemon left")
    parser.add_argument("--held", action="store_true",
                        help="run again what a dead daemon left only once the cancel of the "
                             "command that starts this daemon is carried out")
    options = parser.parse_args(argv)
    return serve(options.run_dir, options.idle, options.paused, options.held)


if __name__ == "__main__":
    sys.exit(main())
