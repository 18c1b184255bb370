"""Sending a control verb (submit, cancel, pause, ...) to the process that
drives a run, and starting the run's daemon when the run is the command line's
own and none answers. A script's run is driven by its script only: with the
script gone, what can still be done goes straight to the cluster
(:mod:`corral.cli.without_driver`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from corral.cli.config_checks import check_config
from corral.cli.exits import EXIT_UNREACHABLE, EXIT_USAGE, CommandError
from corral.cli.run_dirs import chosen_run_dir, require_existing_run
from corral.cli.without_driver import control_cluster_jobs, nothing_left_to_cancel
from corral.errors import CorralError
from corral.status import TERMINAL

__all__ = ["control_request", "send_to_driver"]


def control_request(context: click.Context, request: dict[str, Any],
                    start: bool = True) -> dict[str, Any]:
    """Send *request* to the run's driver, starting the daemon when the run is
    the command line's own (a script's run is driven by the script only)."""
    from corral.control import server
    from corral.control.server import NoDriver
    from corral.journal.files import owner_of
    from corral.journal.reading import read_meta

    run_dir = chosen_run_dir(context)
    try:
        return send_to_driver(run_dir, request)
    except NoDriver:
        pass
    holder = owner_of(run_dir)
    if holder is not None:  # (send_when_served waited for it to serve)
        raise CommandError(
            f"process {holder.get('pid', '?')} ({holder.get('kind', 'a corral driver')}) "
            f"holds the run at {run_dir} but has not answered within "
            f"{server.STARTING_DRIVER_PATIENCE_S:g} s", EXIT_UNREACHABLE)
    if request["verb"] not in _VERBS_THAT_MAKE_A_RUN:
        require_existing_run(run_dir)
    meta: dict[str, str] = {}
    try:
        meta = read_meta(run_dir)
    except FileNotFoundError:  # (a run this command makes)
        pass
    except PermissionError:
        raise CommandError(f"permission denied: the run at {run_dir} belongs to another "
                           "user", EXIT_UNREACHABLE) from None
    origin = meta.get("origin")
    if origin not in (None, "daemon"):
        if request["verb"] in _CLUSTER_VERBS:
            check_config(run_dir)  # it may describe the scheduler the jobs run on
            reply = control_cluster_jobs(run_dir, request)
            if reply is not None:
                return reply
        if request["verb"] in ("stop", "abort"):  # nothing to end: no advice to run it again
            raise CommandError(f"no process drives the run at {run_dir} (it was made by a "
                               f"script, which is not running): nothing runs there to "
                               f"{request['verb']}", EXIT_UNREACHABLE)
        if request["verb"] == "submit":  # (cold review: told only to run the script again)
            raise CommandError(
                f"no process drives the run at {run_dir}: it was made by a script, which is "
                "not running, and takes no command of yours then; submit it to a run of its "
                "own (corral --run OTHER_DIR submit ...), or run the script again to resume "
                "its run", EXIT_UNREACHABLE)
        raise CommandError(
            f"no process drives the run at {run_dir}: it was made by a script, which is not "
            "running; run the script again to resume it", EXIT_UNREACHABLE)
    if origin == "daemon" and request["verb"] == "cancel":
        answer = nothing_left_to_cancel(run_dir, request)
        if answer is not None:
            return answer
    if not start:  # (whatever the config files say: no daemon reads them)
        raise CommandError(f"no corral daemon runs for {run_dir}, so nothing runs there "
                           f"to {request['verb']}", EXIT_UNREACHABLE)
    check_config(run_dir)  # a bad config file is one line here, not a daemon that died
    _refuse_a_daemon_blind_to_its_jobs(run_dir, request["verb"])
    from corral.cli.daemon import HELD_FOR, ensure_daemon, idle_seconds  # (none answered)

    try:
        idle_seconds()  # (checked here too: the daemon's refusal would be its log's tail)
    except CorralError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    pausing = request["verb"] == "pause"
    left_paused = meta.get("paused") == "1"
    _note_what_a_new_daemon_runs_again(run_dir, request["verb"], pausing or left_paused)
    for attempt in range(_DAEMON_ROUNDS):
        try:
            ensure_daemon(run_dir, paused=pausing,
                          held=request["verb"] in HELD_FOR)
        except ValueError as error:  # its run directory cannot be made (read-only, /proc)
            raise CommandError(str(error), EXIT_UNREACHABLE) from None
        except CorralError as error:
            raise CommandError(str(error), EXIT_UNREACHABLE) from None
        try:
            reply = send_to_driver(run_dir, request)
        except NoDriver as error:  # it stopped meanwhile (corral stop, idle): start another
            if attempt + 1 == _DAEMON_ROUNDS:
                raise CommandError(str(error), EXIT_UNREACHABLE) from None
            continue
        if pausing:  # (it started paused: whether the run was already, the journal said)
            reply["was_paused"] = left_paused
        return reply
    raise AssertionError("unreachable: the last round returns or raises")


def _note_what_a_new_daemon_runs_again(run_dir: Path, verb: str, paused: bool) -> None:
    """Say that the daemon this command starts on a run whose daemon died runs
    its unfinished jobs again, or, *paused* (by ``pause``, or left so), that
    they wait."""
    from corral.journal.run import Run

    # (wait says it in its own words; a submit does not: among many first submits at
    # once, some saw jobs and no owner for a moment, and said so falsely: re-attack review)
    if verb in ("submit", "ping"):
        return
    try:
        run = Run(run_dir)
        unfinished = sum(job.status not in TERMINAL for job in run.jobs(results=False))
    except (CorralError, OSError):
        return  # (what is wrong with the run, the daemon says)
    if unfinished and run.stop_pending():
        click.echo(f"corral: note: the run's daemon had stopped before it carried out a corral "
                   f"stop; a new one does, cancelling its {unfinished} unfinished job(s)",
                   err=True)
    elif unfinished:
        waits = "; paused, it starts none of them" if paused and verb != "resume" else ""
        click.echo(f"corral: note: the run's daemon had stopped; a new one takes up its "
                   f"{unfinished} unfinished job(s) again{waits}", err=True)


#: Daemons one command starts at most when the one it reached stops meanwhile.
_DAEMON_ROUNDS = 3


_CLUSTER_VERBS = ("cancel", "pause", "resume")


#: Only submit, and pause (which readies a run for jobs that wait for a resume),
#: may create a run; a typo in ``--run`` with any other verb must not leave a
#: directory and a daemon behind and report success. (Pause says that its run
#: is new, and where.)
_VERBS_THAT_MAKE_A_RUN = ("submit", "pause")


def _refuse_a_daemon_blind_to_its_jobs(run_dir: Path, verb: str) -> None:
    """Refuse to start a daemon for a run whose unfinished jobs went to a
    backend this process does not know (a site's scheduler whose table is
    not in the files read here): it would take them up on another backend,
    and a cancel would say "cancelled" of a job that runs on in the cluster
    (re-attack review)."""
    from corral.journal.run import Run
    from corral.journal.files import journal_path

    if not journal_path(run_dir).exists():
        return
    run = Run(run_dir)
    if not run.unknown_backends():  # (the usual case: no job row is read, of maybe millions)
        return
    unfinished = [job for job in run.jobs(results=False) if job.status not in TERMINAL]
    unknown = run.jobs_of_unknown_backends(unfinished) if unfinished else {}
    if unknown:
        backends = ", ".join(sorted(set(unknown.values())))
        raise CommandError(
            f"cannot {verb}: {len(unknown)} unfinished job(s) of the run at {run_dir} went to "
            f"{backends!r}, which is not a backend here (its [schedulers.NAME] table is not in "
            "the config files this command reads); run it where that table is read",
            EXIT_UNREACHABLE)


def send_to_driver(run_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
    """send_when_served, with its failures turned into one-line errors (not NoDriver)."""
    from corral.control.server import Denied, NoDriver, Refused, send_when_served

    try:
        return send_when_served(run_dir, request)
    except NoDriver:
        raise
    except Denied as error:
        raise CommandError(str(error), EXIT_UNREACHABLE) from None
    except PermissionError:
        raise CommandError(f"permission denied: the run at {run_dir} belongs to another "
                           "user", EXIT_UNREACHABLE) from None
    except Refused as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    except CorralError as error:
        raise CommandError(str(error), EXIT_UNREACHABLE) from None
