"""The ``corral`` command: one verb per thing people do with a run.

Read-only verbs (status, logs, options, profiles) read the journal and config
files directly, so they work with no driver alive; ``wait`` reads them too, and
starts a command-line run's daemon when its unfinished jobs need one to go on.
Control verbs (submit, cancel, pause, resume, abort, clear, stop) talk to the
process that drives the run over its control socket; ``submit`` (and cancel,
pause, resume and clear on a command-line run) start the run's daemon first if
none runs, ``abort`` and ``stop`` never do. Only ``submit``
creates a run: any other verb on a directory without a journal exits 3.

Every failure is one line on stderr — ``corral: error: ...`` — never a
traceback. Exit status: 0 fine, 1 a job listed failed (status, wait), 2 a
usage error or bad input, 3 the run cannot be reached or controlled.

The run directory is ``--run DIR``, else ``$CORRAL_RUN``, else
``<user state dir>/corral/default``.
"""

from __future__ import annotations

from collections import Counter
import contextlib
import functools
import os
import re
import shlex
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, cast

import click
from click.exceptions import NoArgsIsHelpError

from corral.cli.entry import EXIT_INTERRUPTED, INTERRUPTED
from corral.errors import CorralError
from corral.options import JOB_OPTIONS, parse_options, peers_word_hint
from corral.safe_repr import first_few
from corral.status import TERMINAL, JobStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from corral.journal.store import StoredJob

__all__ = ["main", "cli"]

EXIT_FAILED_JOB = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

#: Ended without doing its work: what makes status and wait exit 1 (a cancelled
#: job too, so that ``corral wait ID && deploy`` does not deploy).
_FAILED = {JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED}


class CommandError(Exception):
    """A one-line error with its exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def default_run_dir() -> Path:
    from platformdirs import user_state_path

    return user_state_path("corral") / "default"


def _run_dir(context: click.Context) -> Path:
    """The run directory chosen (checked only here: a bad ``$CORRAL_RUN`` must
    not stop a command given its own ``--run``, nor one that needs no run)."""
    run: Path = context.obj["run"]
    if _loops(run):
        raise CommandError(f"{context.obj['run_from']} {run}: a loop of symbolic links, which "
                           "names no directory")
    if run.exists() and not run.is_dir():
        raise CommandError(f"{context.obj['run_from']} {run}: not a directory (a run "
                           "directory holds a journal)")
    return run


def _open_run(context: click.Context):
    from corral.journal.run import Run

    run_dir = _run_dir(context)
    try:
        return Run(run_dir)
    except FileNotFoundError:
        below = sorted(shlex.quote(str(path.parent))
                       for path in run_dir.glob("*/journal.db"))[:3]
        hint = (f"; did you mean {' or '.join(below)}?" if below else
                "; choose one with corral --run DIR COMMAND or $CORRAL_RUN (a script's "
                "run is seen from here when it journals: Scheduler(journal=DIR))")
        raise CommandError(f"no corral run at {run_dir} (nothing was submitted there yet)"
                           f"{hint}", EXIT_UNREACHABLE) from None
    except PermissionError:
        raise CommandError(f"permission denied: the run at {run_dir} belongs to another "
                           "user", EXIT_UNREACHABLE) from None


def _control(context: click.Context, request: dict[str, Any], start: bool = True) -> dict[str, Any]:
    """Send *request* to the run's driver, starting the daemon when the run is
    the command line's own (a script's run is driven by the script only)."""
    from corral.control import server
    from corral.control.server import NoDriver
    from corral.cli.daemon import HELD_FOR, ensure_daemon
    from corral.journal.store import owner_of, read_meta

    run_dir = _run_dir(context)
    try:
        return _send(run_dir, request)
    except NoDriver:
        pass
    holder = owner_of(run_dir)
    if holder is not None:  # (send_when_served waited for it to serve)
        raise CommandError(
            f"process {holder.get('pid', '?')} ({holder.get('kind', 'a corral driver')}) "
            f"holds the run at {run_dir} but has not answered within "
            f"{server.STARTING_DRIVER_PATIENCE_S:g} s", EXIT_UNREACHABLE)
    if request["verb"] not in _VERBS_THAT_MAKE_A_RUN:
        _require_existing_run(run_dir)
    origin = None
    try:
        origin = read_meta(run_dir).get("origin")
    except FileNotFoundError:
        pass
    except PermissionError:
        raise CommandError(f"permission denied: the run at {run_dir} belongs to another "
                           "user", EXIT_UNREACHABLE) from None
    if origin not in (None, "daemon"):
        if request["verb"] in _CLUSTER_VERBS:
            _check_config(run_dir)  # it may describe the scheduler the jobs run on
            reply = _control_cluster_jobs(run_dir, request)
            if reply is not None:
                return reply
        if request["verb"] in ("stop", "abort"):  # nothing to end: no advice to run it again
            raise CommandError(f"no process drives the run at {run_dir} (it was made by a "
                               f"script, which is not running): nothing runs there to "
                               f"{request['verb']}", EXIT_UNREACHABLE)
        raise CommandError(
            f"no process drives the run at {run_dir}: it was made by a script, which is not "
            "running; run the script again to resume it", EXIT_UNREACHABLE)
    if origin == "daemon" and request["verb"] == "cancel":
        answer = _nothing_left_to_cancel(run_dir, request)
        if answer is not None:
            return answer
    if not start:  # (whatever the config files say: no daemon reads them)
        raise CommandError(f"no corral daemon runs for {run_dir}, so nothing runs there "
                           f"to {request['verb']}", EXIT_UNREACHABLE)
    _check_config(run_dir)  # a bad config file is one line here, not a daemon that died
    from corral.cli.daemon import idle_seconds

    try:
        idle_seconds()  # (checked here too: the daemon's refusal would be its log's tail)
    except CorralError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    pausing = request["verb"] == "pause"
    left_paused = (request["verb"] not in _VERBS_THAT_MAKE_A_RUN  # (none yet to read)
                   and read_meta(run_dir).get("paused") == "1")
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
            reply = _send(run_dir, request)
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

    if verb in ("submit", "ping"):  # (submit's job is why; wait says it in its own words)
        return
    try:
        unfinished = sum(job.status not in TERMINAL for job in Run(run_dir).jobs(results=False))
    except (CorralError, OSError):
        return  # (what is wrong with the run, the daemon says)
    if unfinished:
        waits = "; paused, it starts none of them" if paused and verb != "resume" else ""
        click.echo(f"corral: note: the run's daemon had stopped; a new one takes up its "
                   f"{unfinished} unfinished job(s) again{waits}", err=True)


#: Daemons one command starts at most when the one it reached stops meanwhile.
_DAEMON_ROUNDS = 3


_CLUSTER_VERBS = ("cancel", "pause", "resume")

#: Only submit may create a run; a typo in ``--run`` with any other verb must
#: not leave a directory and a daemon behind and report success.
_VERBS_THAT_MAKE_A_RUN = ("submit",)


def _require_existing_run(run_dir: Path) -> None:
    """Refuse (exit 3) a control verb on a directory that holds no journal."""
    from corral.journal.store import journal_path

    try:
        exists = journal_path(run_dir).exists()
    except PermissionError:
        raise CommandError(f"permission denied: the run at {run_dir} belongs to another "
                           "user", EXIT_UNREACHABLE) from None
    if not exists:
        raise CommandError(f"no corral run at {run_dir} (nothing was submitted there); "
                           "choose one with corral --run DIR COMMAND or $CORRAL_RUN",
                           EXIT_UNREACHABLE)


def _control_cluster_jobs(run_dir: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """No driver runs, but jobs it handed to a cluster scheduler still do: act on
    them there (scancel, hold, release); None if there are none. The script's
    next run attaches to them and finds what became of them."""
    from corral.journal.run import Run
    from corral.status import TERMINAL

    run = Run(run_dir)
    every = run.jobs(results=False)
    jobs = [job for job in every if job.status not in TERMINAL]
    problems = []
    if request["verb"] == "cancel":
        from corral.control.verbs import id_or_name
        from corral.errors import CorralError

        given, request["ids"] = request["ids"], []
        for job_ref in given:
            try:
                request["ids"].append(str(id_or_name(job_ref, every)))
            except CorralError as error:
                problems.append(str(error))
        # (a finished job's dependents are not the cancel's: they run on)
        wanted = _with_dependents({str(job.id) for job in jobs} & set(request["ids"]), jobs)
        jobs = [job for job in jobs if str(job.id) in wanted]
    on_cluster = run.cluster_jobs(jobs)
    unknown = run.jobs_of_unknown_backends(jobs)
    if unknown:  # a scheduler described in a config file not read here, or one with a mistake
        _register_configured_backends(strict=True)
        raise CommandError(_unreachable(unknown), EXIT_UNREACHABLE)
    unfinished = {str(job.id) for job in jobs}
    already, ended = _ended_among(request.get("ids", ()), unfinished, every)
    names = {str(job.id): job.name for job in every}
    if request["verb"] == "cancel" and not jobs:  # nothing it names is left to cancel
        return {"cancelled": [], "already_cancelled": already, "problems": problems + ended,
                "names": names}
    if not on_cluster:  # a driver would have to act: none runs
        return None
    chosen = [job for job in jobs if str(job.id) in on_cluster]
    if request["verb"] != "cancel":  # (a job a cancel went to is no longer there to hold)
        from corral.cli.sent_without_driver import cancelled_without_driver

        gone = cancelled_without_driver(run_dir, chosen)
        chosen = [job for job in chosen if str(job.id) not in gone]
        if gone and not chosen:
            click.echo(f"no driver runs: nothing left to {request['verb']}: a cancel went to "
                       f"each of its cluster jobs ({', '.join(sorted(gone, key=int))})", err=True)
    if request["verb"] == "cancel":
        from corral.runtime.batch import claim_for_cancel

        for job in chosen:  # one that has not started never will, even if the scheduler lags
            if job.directory:
                claim_for_cancel(job.directory)
    for backend, members in _by_backend(chosen, on_cluster).items():
        _control_in_backend(run_dir, backend, request["verb"], members)
    ids = [str(job.id) for job in chosen]
    # Named, unfinished, never handed to the scheduler: it waited in the dead driver.
    unreachable = [f"job {job_id} was never handed to the scheduler (it waited for the driver, "
                   "which is gone): the script's next run runs it"
                   for job_id in dict.fromkeys(request.get("ids", ())) if job_id in unfinished
                   and job_id not in on_cluster]
    return {"cancelled": ids, "already_cancelled": already,
            "problems": problems + ended + unreachable, "names": names}


def _ended_among(ids: Sequence[str], unfinished: set[str], every: list[StoredJob]
                 ) -> tuple[list[str], list[str]]:
    """Of the jobs *ids* names, those not *unfinished*: the ids of those
    cancelled already (no problem for a cancel), and what to say of the others."""
    from corral.control.verbs import ended_message

    status = {str(job.id): job.status for job in every}
    finished = [job_id for job_id in dict.fromkeys(ids) if job_id not in unfinished]
    return ([job_id for job_id in finished if status[job_id] is JobStatus.CANCELLED],
            [ended_message(job_id, status[job_id]) for job_id in finished
             if status[job_id] is not JobStatus.CANCELLED])


def _nothing_left_to_cancel(run_dir: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """The answer to a cancel on a daemon's run with no daemon, when none of the
    jobs it names is unfinished (unknown, ended, cancelled already): no daemon
    is started to give it, which would stay up for its idle time (attack
    review). None when one of them is unfinished: a daemon must cancel it."""
    from corral.control.verbs import id_or_name
    from corral.journal.run import Run

    every = Run(run_dir).jobs(results=False)
    unfinished = {str(job.id) for job in every if job.status not in TERMINAL}
    already: list[str] = []
    problems: list[str] = []
    seen: set[str] = set()
    for job_ref in request["ids"]:  # (said in the order given, as the daemon says it)
        try:
            job_id = str(id_or_name(job_ref, every))
        except CorralError as error:
            problems.append(str(error))
            continue
        if job_id in unfinished:
            return None
        if job_id not in seen:  # (named twice, by its id and its name: answered once)
            seen.add(job_id)
            cancelled, ended = _ended_among([job_id], unfinished, every)
            already += cancelled
            problems += ended
    return {"cancelled": [], "already_cancelled": already, "problems": problems,
            "names": {str(job.id): job.name for job in every}}


def _with_dependents(ids: set[str], unfinished: list[StoredJob]) -> set[str]:
    """*ids* and every unfinished job that depends on one of them, however
    indirectly: cancelled with no driver to cancel them in turn, they would
    run in a scheduler whose dependency lets go when its parent is deleted
    (Grid Engine's ``-hold_jid`` does)."""
    dependents: dict[str, list[str]] = {}
    for job in unfinished:
        for dep in job.deps:
            dependents.setdefault(str(dep), []).append(str(job.id))
    found, todo = set(ids), list(ids)
    while todo:
        for dependent in dependents.get(todo.pop(), ()):
            if dependent not in found:
                found.add(dependent)
                todo.append(dependent)
    return found


def _unreachable(unknown: dict[str, str]) -> str:
    """Why no driver and nothing here can act on jobs of backends unknown here."""
    backends = sorted(set(unknown.values()))
    ids = sorted(unknown, key=lambda job_id: (len(job_id), job_id))
    return (f"no driver runs, and job(s) {', '.join(ids)} went to the "
            f"backend {', '.join(map(repr, backends))}, unknown here: corral cannot reach "
            "them. A scheduler described in a corral.toml is known where that file is read "
            "(the user's file, or corral.toml in the current directory); a site's backend, "
            "where its package is installed")


def _by_backend(jobs: list[StoredJob], backends: dict[str, str]) -> dict[str, list[StoredJob]]:
    """The jobs grouped by the backend that runs them (each session of a run
    may have used another one)."""
    grouped: dict[str, list[StoredJob]] = {}
    for job in jobs:
        grouped.setdefault(backends[str(job.id)], []).append(job)
    return grouped


def _control_in_backend(run_dir: Path, backend: str, verb: str, jobs: list[StoredJob]) -> None:
    """Cancel, pause or resume *jobs* in their backend itself, as no driver can,
    note it for ``corral status``, and say so on stderr."""
    from corral.backends import backend_info
    from corral.cli.sent_without_driver import note_sent
    from corral.errors import BackendError

    info = backend_info(backend)
    try:
        info.control_without_driver(verb, [str(job.native_id) for job in jobs])
    except BackendError as error:
        raise CommandError(str(error), EXIT_UNREACHABLE) from None
    note_sent(run_dir, verb, info.title, jobs)
    ids = [str(job.id) for job in jobs]
    which = "" if verb == "cancel" else "those still pending of "  # (a hold is for those)
    click.echo(f"no driver runs: {verb} sent to {info.title} for {which}"
               f"{len(ids)} job(s) ({', '.join(ids)}); the script's next run records it",
               err=True)


def _check_config(run_dir: Path) -> None:
    """Read the config as the run's daemon will: the user's file, and
    ``corral.toml`` in the run directory (the daemon serves submissions from
    any directory, so the submitting one's file is not its own)."""
    from corral.config import load_config

    try:
        load_config(cwd=run_dir)
    except ValueError as error:
        raise CommandError(str(error)) from None


def _send(run_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
    """send_request, with its failures turned into one-line errors (not NoDriver)."""
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


def _run_here(context: click.Context, run_dir: Path | None) -> None:
    """A command's own ``--run`` (``corral report --run DIR``) wins over the group's."""
    if run_dir is not None:
        context.obj.update(run=_resolved(run_dir), run_from="--run")


def _resolved(path: Path) -> Path:
    """*path* made absolute, its links followed where they lead somewhere (a
    loop of links is said by :func:`_run_dir`, for the commands that use a run)."""
    path = path.expanduser()
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # (RuntimeError up to Python 3.12, OSError after)
        return path.absolute()


def _loops(path: Path) -> bool:
    """Whether following *path*'s symbolic links goes round in a loop."""
    try:
        path.resolve()
    except (RuntimeError, OSError):  # (RuntimeError up to Python 3.12, OSError after)
        return True
    return False


class _RunPath(click.Path):
    """A run directory's path; an empty one is refused, where a path would
    read it as the current directory (``--run "$UNSET"``)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path, readable=False)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value == "":
            self.fail("'' names no directory; give the run directory's path", param, ctx)
        return super().convert(value, param, ctx)


def _run_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Let *command* take ``--run DIR`` after its name too (``corral status --run
    DIR``), where people put it as often as before it; there it wins over the group's."""
    @functools.wraps(command)
    def taking_run(*args: Any, run_dir: Path | None = None, **kwargs: Any) -> Any:
        _run_here(click.get_current_context(), run_dir)
        return command(*args, **kwargs)

    return click.option("--run", "run_dir", type=_RunPath(),
                        default=None, help="The run directory (as corral --run DIR).")(taking_run)


# -- the command group -----------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--run", "run_dir", type=_RunPath(),
              envvar="CORRAL_RUN",
              help="The run directory (default: $CORRAL_RUN, else the user's default run).")
@click.version_option(package_name="corral", prog_name="corral")
@click.pass_context
def cli(context: click.Context, run_dir: Path | None) -> None:
    """Run jobs with resources and dependencies, and watch or control a run from any
    terminal."""
    run = _resolved(Path(run_dir if run_dir is not None else default_run_dir()))
    from_environment = (context.get_parameter_source("run_dir")
                        is click.core.ParameterSource.ENVIRONMENT)
    context.obj = {"run": run, "run_from": "$CORRAL_RUN" if from_environment else "--run"}
    _register_configured_backends(strict=False)  # a run on one shows its ids, is controlled


def _job_option_flags(command):
    """Give *command* a flag for every job option the registry offers to the
    command line, with the registry's help: one list of options for the API,
    this command and ``corral options``."""
    from corral.options import NOTIFY_WHEN

    from corral.units import DURATION_FORMS, DURATION_TEXT_FORMS

    types = {"int": click.INT, "text": click.STRING, "choice": click.Choice(NOTIFY_WHEN)}
    for option in reversed(list(JOB_OPTIONS.values())):
        if option.cli:
            # Typed, "90" is text: refused as ambiguous, so the help offers no bare number.
            accepts = (DURATION_TEXT_FORMS if option.accepts == DURATION_FORMS
                       else option.accepts)
            command = click.option(option.flag, option.name, type=types[option.cli],
                                   help=f"{option.help} ({accepts})")(command)
    return command


def _refuse_megabytes_meant_otherwise(memory: object) -> None:
    """Refuse ``--memory 4``: a number without a unit is megabytes, as Slurm
    reads it, but so little is no job's need: gigabytes were meant (a cold
    review's PBS and fyrd habit), and the job ran packed as if it took none."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*", memory, re.ASCII) if isinstance(
        memory, str) else None
    if found is not None and 0 < float(found[1]) < 64:  # (0 is refused as no size at all)
        number = found[1]
        raise CommandError(f"--memory {number}: a number without a unit is megabytes, and "
                           f"{number} MB is too little for a job; give the unit: --memory "
                           f"{number}G (or {number}M if megabytes are meant)", EXIT_USAGE)


#: The job options whose values may begin with '-' (a scheduler's own flags, shell lines).
_MAY_BEGIN_WITH_DASH = frozenset({"extra_flags", "setup"})


@cli.command(context_settings={"ignore_unknown_options": False,
                              "allow_interspersed_args": False})
@_run_option
@_job_option_flags
@click.option("--after", multiple=True, metavar="ID|NAME",
              help="a job (its id, or its name if no other job has it) that must complete "
                   "first (repeatable)")
@click.option("--profile", help="a named set of options from the config files (corral profiles)")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="directory the job runs in (default: the current one)")
@click.argument("command", nargs=-1, required=True)
@click.pass_context
def submit(context: click.Context, command: tuple[str, ...], after: tuple[str, ...],
           profile: str | None, workdir: Path | None, **given: Any) -> None:
    """Submit COMMAND as a job; print its id.

    One argument runs through /bin/sh (corral submit -- 'make && make test');
    several run as they are, without a shell (corral submit -- python train.py).
    The job gets this terminal's environment and directory.
    """
    from corral.core.registry import is_number_text

    options: dict[str, Any] = {}
    if profile is not None:
        options.update(_profile_options(profile, _run_dir(context)))
    for name, value in given.items():
        if isinstance(value, str) and value.startswith("-") and name not in _MAY_BEGIN_WITH_DASH:
            # `--name -- echo hi` named the job "--" (attack review): no option's
            # value begins with '-', and a name that did could not be typed back.
            flag = JOB_OPTIONS[name].flag
            raise CommandError(f"{flag} {value!r}: no value of {flag} begins with '-'; was "
                               f"{flag}'s value left out?", EXIT_USAGE)
    options.update({name: value for name, value in given.items() if value is not None})
    if isinstance(options.get("name"), str) and is_number_text(options["name"]):
        raise CommandError(f"--name {options['name']}: a name that is a number would be taken "
                           "for a job's id by logs, cancel, status and --after; give a name with "
                           "a letter in it", EXIT_USAGE)
    _refuse_megabytes_meant_otherwise(options.get("memory"))
    if workdir is not None and not workdir.is_dir():
        raise CommandError(f"--workdir {workdir}: not an existing directory")
    # The daemon runs elsewhere: a relative directory means the one seen from here.
    options["cwd"] = os.path.abspath(workdir) if workdir is not None else os.getcwd()
    options["env"] = dict(os.environ)
    try:
        parse_options(options)  # bad values are reported here, before the daemon starts
    except ValueError as error:
        raise CommandError(_as_flag_message(str(error))) from None
    run_dir = _run_dir(context)
    new_run = _check_new_run_dir(run_dir)
    _note_tables_not_read(run_dir, notify=options.get("notify") is not None)
    try:
        reply = _control(context, {"verb": "submit", "command": command[0] if len(command) == 1
                                   else list(command), "options": options, "after": list(after)})
    except CommandError:
        if new_run:  # a refused first job leaves no run and no daemon behind
            _undo_new_run(run_dir)
        raise
    click.echo(reply["id"])
    if reply.get("note"):
        click.echo(f"corral: note: {reply['note']}", err=True)


def _note_tables_not_read(run_dir: Path, notify: bool) -> None:
    """Say that the ``[daemon]`` table of the submitting directory's
    ``corral.toml`` is not the run's (when the run is elsewhere), nor its
    ``[smtp]`` table for a job that asks for mail, rather than leave the user
    to wonder why its queues are unknown or no mail server is configured."""
    from corral.config_files import CONFIG_NAME, config_paths, same_file

    in_cwd = Path.cwd() / CONFIG_NAME
    if not in_cwd.is_file():
        return
    read = config_paths(run_dir)  # the daemon's: the user's file, then the run's
    if any(same_file(in_cwd, path) for path in read):
        return
    from corral.config import tables_in  # (the settings' checks: a fifth of a submit)

    tables = tables_in(in_cwd, ("daemon", "smtp") if notify else ("daemon",))
    if tables:
        said = " and ".join(f"[{name}]" for name in tables)
        click.echo(f"corral: note: the {said} table{'s' * (len(tables) > 1)} of {in_cwd} "
                   f"{'are' if len(tables) > 1 else 'is'} not read: the daemon of {run_dir} "
                   f"takes its settings from {' and '.join(map(str, read))}", err=True)


def _check_new_run_dir(run_dir: Path) -> bool:
    """Whether *run_dir* holds no run yet (this submit makes it); refuse a
    directory with other files in it, which corral would make private and fill
    (all but the run's own ``corral.toml``, its daemon's settings: made first)."""
    from corral.core.run_files import holds_other_files
    from corral.journal.store import journal_path

    if journal_path(run_dir).exists():
        return False
    if holds_other_files(run_dir):
        raise CommandError(f"{run_dir} is not a corral run but holds other files; give --run "
                           "a new or empty directory, or one with only a corral.toml (corral "
                           "makes it private to you)")
    return True


def _undo_new_run(run_dir: Path) -> None:
    """Stop the daemon this submit started and remove the run it made, unless
    another submit started at the same moment on the new run has a job in it:
    then the run is that one's too, and stays."""
    import fcntl
    import shutil
    import time

    from corral.control.server import NoDriver
    from corral.journal.store import LOCK_FILE, owner_of

    try:
        _send(run_dir, {"verb": "stop", "unless_used": True})
    except (NoDriver, OSError):
        pass
    except CommandError:  # it has another submit's jobs
        return
    deadline = time.monotonic() + 10
    while owner_of(run_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.02)  # the daemon closes its journal, then lets go of the run
    try:  # held while the run goes: a submit racing this one cannot take it meanwhile
        lock = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115
    except OSError:
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another submit's daemon drives it now
        if _has_jobs(run_dir):
            return
        # Moved out of the way first, and removed after: a daemon that another
        # submit starts from now on makes the run anew, and nothing it writes is
        # removed with this one. (Removed in place, a daemon that started while
        # the removal ran lost its files under it.)
        gone = run_dir.with_name(f".{run_dir.name}.removed-{os.getpid()}")
        try:
            os.rename(run_dir, gone)
        except OSError:
            return
    _keep_settings(gone, run_dir)
    shutil.rmtree(gone, ignore_errors=True)


def _keep_settings(gone: Path, run_dir: Path) -> None:
    """Put back the ``corral.toml`` the person had made in the run directory
    before its first submit, which was refused (its settings may be why)."""
    from corral.config_files import CONFIG_NAME

    if not (gone / CONFIG_NAME).exists():
        return
    with contextlib.suppress(FileExistsError):
        os.mkdir(run_dir, 0o700)
    if not (run_dir / CONFIG_NAME).exists():  # (a submit since then may have made the run)
        with contextlib.suppress(OSError):
            os.rename(gone / CONFIG_NAME, run_dir / CONFIG_NAME)


def _has_jobs(run_dir: Path) -> bool:
    from corral.journal.run import Run

    try:
        return bool(Run(run_dir).jobs(results=False))
    except FileNotFoundError:  # no journal was made
        return False
    except Exception:  # unreadable: not ours to remove
        return True


def _profile_options(name: str, run_dir: Path) -> dict[str, Any]:
    """Profile *name* of the user's file, the run directory's ``corral.toml``
    (the daemon's files) and this directory's, the later winning."""
    from corral.config import load_config

    try:
        return load_config(run_dir=run_dir).profile(name)
    except ValueError as error:
        raise CommandError(str(error)) from None


def _never_started(context: click.Context, job: StoredJob, follow: bool) -> None:
    """Say that *job* ended without starting; a followed one that failed so exits 1."""
    click.echo(f"corral: job {job.id} {job.name!r} never started ({job.status.name}: "
               f"{job.reason}): no output", err=True)
    if follow and job.status in _FAILED:  # as a followed job that ended so says
        context.exit(EXIT_FAILED_JOB)


def _as_flag_message(message: str) -> str:
    """Turn option names in an API message into the flags typed here."""
    for name, option in JOB_OPTIONS.items():
        message = message.replace(f"{name}=", f"{option.flag} ").replace(
            f"'{name}'", f"'{option.flag}'")
    return message


@cli.command()
@_run_option
@click.option("--all", "show_all", is_flag=True, help="also list every finished job")
@click.argument("ids", nargs=-1)
@click.pass_context
def status(context: click.Context, show_all: bool, ids: tuple[str, ...]) -> None:
    """Show the run's jobs; exit 1 if a listed job failed, timed out or was cancelled.

    Without IDs: the first 100 unfinished jobs, the first 10 that failed or
    timed out, and the last 10 finished ones, with counts of the others (all
    of them with --all).
    """
    from rich.text import Text

    from corral.cli.views import (ORPHANED_REASON, hidden_note, paused_reason, run_header,
                                  status_table, unlisted_note)
    from corral.safe_repr import printable

    run = _open_run(context)
    notes = []
    if not ids and not show_all:  # a million-job run answers as fast as a small one
        overview = run.overview(_UNFINISHED_SHOWN, _FINISHED_SHOWN, _FAILED_SHOWN)
        jobs = overview.unfinished + overview.finished
        if overview.finished_left_out:
            shown = Counter(job.status for job in overview.finished)
            notes.append(hidden_note(overview.finished_left_out, {
                status: overview.counts.get(status, 0) - shown[status]
                for status in JobStatus
                if status in TERMINAL and status is not JobStatus.COMPLETED}))
        if overview.unfinished_left_out:
            notes.append(unlisted_note(overview.unfinished_left_out, overview.counts))
    else:
        jobs = _select(run, ids)
    on_cluster = run.cluster_jobs(jobs)  # (they run on without a driver)
    driven = run.owner is not None
    console = _console()
    console.print(run_header(run))
    for note in notes:  # above the table, where it is seen before the list is read as complete
        console.print(note)
    from corral.cli.sent_without_driver import sent_requests

    sent = {} if driven or not on_cluster else sent_requests(run.path, jobs)
    status_table(jobs, driver_alive=driven, cluster_jobs=on_cluster, paused=run.paused,
                 width=console.width, unknown_backend_jobs=run.jobs_of_unknown_backends(jobs),
                 sent_without_driver=sent).print(console)
    for job in jobs if ids else ():  # the jobs asked for by id: their whole reason, and
        reason = job.reason          # what their Python raised, as lines of their own
        if not driven and job.status not in TERMINAL and str(job.id) not in on_cluster:
            reason = ORPHANED_REASON  # (not what it waited for when its driver died)
        elif run.paused and job.status is JobStatus.QUEUED:
            reason = paused_reason(job)  # (not the room it waited for before: attack review)
        if reason:
            console.print(Text(printable(f"\njob {job.id} {job.name!r} {job.status.name}: "
                                         f"{reason}")), soft_wrap=True)
        traceback = job.traceback_text()
        if traceback:
            console.print(Text(printable(f"\njob {job.id} {job.name!r} raised:\n"
                                         f"{traceback.rstrip()}")), soft_wrap=True)
        elif traceback is None and job.error is not None:
            console.print(Text(f"\njob {job.id} {job.name!r}: the traceback it raised cannot be "
                               "read from the journal (its record of it is damaged)"))
    stranded = [] if driven else [job for job in jobs if job.status not in TERMINAL
                                  and str(job.id) not in on_cluster]
    if stranded:  # before a failure's exit status: the run cannot even finish
        click.echo(f"corral: no process drives the run: {len(stranded)} unfinished "
                   f"job{'s' * (len(stranded) != 1)} listed will not go on until it runs "
                   f"again ({_how_it_goes_on(run)})", err=True)
        context.exit(EXIT_UNREACHABLE)
    if any(job.status in _FAILED for job in jobs):
        context.exit(EXIT_FAILED_JOB)


#: How many finished jobs ``corral status`` lists without ``--all``.
_FINISHED_SHOWN = 10
#: How many unfinished jobs it lists without ``--all`` (the others are counted).
_UNFINISHED_SHOWN = 100
#: How many of the jobs that failed or timed out it lists without ``--all``, the
#: first ones, however old (the others are counted).
_FAILED_SHOWN = 10


#: ``3-7``: the jobs numbered 3 to 7 (CustomXepr's remove_items(3, 7)).
_ID_RANGE = re.compile(r"(\d{1,18})-(\d{1,18})")


def _with_ranges(run, ids: tuple[str, ...], unfinished: bool = False) -> tuple[str, ...]:
    """*ids* with each range ``A-B`` (that is no job's name) replaced by the
    ids of the run's jobs numbered A to B, in order; with *unfinished*, only
    those that have not ended (a cancel of a range: the rest are no error).

    Raises:
        CommandError: a range runs backwards, or no job is numbered in it.
    """
    if not any(_ID_RANGE.fullmatch(given) for given in ids):
        return ids
    every = run.jobs(results=False)
    names = {job.name for job in every}
    found: list[str] = []
    for given in ids:
        bounds = _ID_RANGE.fullmatch(given)
        if bounds is None or given in names:
            found.append(given)
            continue
        low, high = int(bounds[1]), int(bounds[2])
        if low > high:
            raise CommandError(f"the range {given} runs backwards; write {high}-{low}")
        inside = [job for job in every if isinstance(job.id, int) and low <= job.id <= high]
        if not inside:
            raise CommandError(f"no job numbered {low} to {high} in the run at {run.path} "
                               f"({len(every)} jobs; corral status --all lists them)")
        found += [str(job.id) for job in inside
                  if not (unfinished and job.status in TERMINAL)]
    return tuple(dict.fromkeys(found))


def _select(run, ids: tuple[str, ...]):
    """The jobs named by *ids*, each an id (read by its key: a big run costs no
    more), a range of ids (``3-7``) or else the name of one job, as ``cancel``
    and ``--after`` take it; or every job."""
    from corral.control.verbs import AmbiguousName, id_or_name
    from corral.errors import CorralError

    if not ids:
        return run.jobs(results=False)
    ids = _with_ranges(run, ids)
    found, unknown = [], []
    every = None
    for job_id in ids:
        try:
            found.append(run.job(job_id))
            continue
        except KeyError:
            pass
        every = run.jobs(results=False) if every is None else every
        try:
            found.append(run.job(id_or_name(job_id, every)))
        except AmbiguousName as error:
            raise CommandError(str(error)) from None
        except CorralError:
            unknown.append(job_id)
    if unknown:
        count = sum(run.overview(0, 0).counts.values())  # (counted, not read: a big run)
        raise CommandError(f"no job {', '.join(unknown)} in the run at {run.path} "
                           f"({count} jobs, by id or name; corral status --all lists them)")
    return found


def _console():
    from rich.console import Console

    if sys.stdout.isatty():
        width, file = None, None
    else:  # a file or a pipe: no spaces that pad the last column to the line's end
        width = int(os.environ.get("COLUMNS", "160"))
        file = cast("IO[str]", _LinesTrimmed(sys.stdout))
    # markup=False: names and commands are shown as typed, "[/]" and all
    return Console(width=width, file=file, highlight=False, soft_wrap=False, markup=False)


class _LinesTrimmed:
    """A text stream that drops the spaces at the end of each line written to
    it: rich pads every row of a grid to its full width, which a file or a
    ``grep`` then carries. (Rich writes each print whole, lines and all.)"""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        # (line by line: a regex over a 20,000-line table took a tenth of a second)
        self._stream.write("\n".join([line.rstrip(" ") for line in text.split("\n")]))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the stream's
        return getattr(self._stream, name)


@cli.command()
@_run_option
@click.argument("job_id", metavar="ID")
@click.option("--stderr", "show_stderr", is_flag=True, help="show standard error instead")
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
@click.option("--attempt", type=click.IntRange(min=1), metavar="N",
              help="what attempt N of a retried job wrote (default: its latest)")
@click.pass_context
def logs(context: click.Context, job_id: str, show_stderr: bool, follow: bool,
         attempt: int | None) -> None:
    """Print what job ID wrote to its standard output (or error)."""
    from corral.cli.logs import follow_output
    from corral.journal.cleaning import was_cleaned
    from corral.runtime.spool import NOT_SAVED

    run = _open_run(context)
    stream = "stderr" if show_stderr else "stdout"
    [job] = _select(run, (job_id,))
    if was_cleaned(run.path, job):
        raise CommandError(f"job {job.id}'s output files were removed (corral clean)",
                           EXIT_UNREACHABLE)
    not_started = job.status in (JobStatus.NEW, JobStatus.WAITING, JobStatus.QUEUED,
                                 JobStatus.SUBMITTED)
    # (A job waiting for its retry has ended attempt N, kept as stdout.N: review.)
    if attempt is not None and (attempt != job.attempts or not_started):
        _print_earlier_attempt(job, attempt, stream, follow)
        return
    if not_started:
        if not follow:
            earlier = (f"; what attempt {job.attempts} wrote: --attempt {job.attempts}"
                       if job.attempts else "")
            click.echo(f"corral: job {job.id} {job.name!r} has not started ({job.status.name}):"
                       f" no output yet (--follow waits for it{earlier})", err=True)
            return
        click.echo(f"corral: job {job.id} {job.name!r} has not started ({job.status.name}): "
                   "waiting for it", err=True)
    if job.status in TERMINAL and job.started is None:
        _never_started(context, job, follow)
        return
    job_id = str(job.id)  # (given by its name, perhaps)
    if not follow_output(run, job_id, stream, follow, sys.stdout):  # an empty page says why
        if follow and (final := run.job(job_id)).status in TERMINAL and final.started is None:
            _never_started(context, final, follow)  # (cancelled while it waited)
            return
        now = run.job(job_id)
        ended = now.status in TERMINAL
        if ended and NOT_SAVED in (now.reason or ""):  # (it wrote, and what it wrote is lost)
            click.echo(f"corral: job {job.id} {job.name!r}: what it wrote was lost: "
                       f"{now.reason.split(NOT_SAVED, 1)[1].removeprefix(': ')} (its output "
                       "could not be saved)", err=True)
        elif ended and not show_stderr and not _has_output(now.output_path("stderr")):
            click.echo(f"corral: job {job.id} {job.name!r} wrote nothing, to its stdout or its "
                       "stderr", err=True)
        else:
            click.echo(f"corral: job {job.id} {job.name!r} wrote nothing to its {stream}"
                       + ("" if ended else " so far")
                       + ("" if show_stderr else " (--stderr shows its standard error)"),
                       err=True)
    if follow:  # followed to its end: how it ended, as wait says (corral logs -f 7 && ...)
        ended_as = run.job(job_id)
        if ended_as.status not in TERMINAL:  # its driver died
            raise CommandError(f"no process drives the run at {run.path} any more; job "
                               f"{job.id} will not go on ({_how_it_goes_on(run)})",
                               EXIT_UNREACHABLE)
        if ended_as.status in _FAILED:
            click.echo(f"corral: job {job.id} {job.name!r} {ended_as.status.name}: "
                       f"{ended_as.reason}", err=True)
            context.exit(EXIT_FAILED_JOB)


def _print_earlier_attempt(job: Any, attempt: int, stream: str, follow: bool) -> None:
    """Print what an earlier attempt of a retried job wrote: kept as
    ``stdout.N`` beside the job's own files when the next attempt began (cold
    review: nothing showed them)."""
    from corral.cli.logs import print_file

    if follow:
        raise CommandError("--follow follows the latest attempt; an earlier one has ended "
                           "(leave out --attempt, or --follow)")
    if attempt > job.attempts:
        ran = (f"ran {job.attempts} attempt{'s' if job.attempts != 1 else ''}"
               if job.attempts else "has not started")
        raise CommandError(f"job {job.id} {job.name!r} {ran}; --attempt takes "
                           + (f"1 to {job.attempts}" if job.attempts > 1 else "1 only"
                              if job.attempts else "none yet"))
    path = os.path.join(job.directory, f"{stream}.{attempt}") if job.directory else None
    if not print_file(path, sys.stdout):
        click.echo(f"corral: attempt {attempt} of job {job.id} {job.name!r} wrote nothing to "
                   f"its {stream}", err=True)


def _how_it_goes_on(run: Any) -> str:
    """What makes the unfinished jobs of a run that no process drives go on."""
    return ("corral wait or corral submit starts a new daemon, which runs them again"
            if run.meta().get("origin") == "daemon" else "run the script again")


#: Daemons one ``corral wait`` starts at most when the run's daemon dies while it
#: waits (killed, or out of memory): as many as a new ``corral wait`` would, not for ever.
_DAEMON_RESTARTS_IN_A_WAIT = 3


class _Seconds(click.ParamType):
    """A waiting time: seconds as a number (``30``, ``0.5``), or a duration as
    the job options write one (``90s``, ``1m``, ``1:30``). A bare number is
    not ambiguous here, as it is for a job's walltime: no scheduler reads it."""

    name = "seconds"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = float(value)
        except ValueError:
            from corral.units import DURATION_TEXT_FORMS, parse_duration

            try:
                return parse_duration(value, "--timeout", zero=True)
            except ValueError as error:
                said = str(error)
                self.fail(said if "is not a duration" not in said else
                          f"{value!r} is neither a number of seconds nor {DURATION_TEXT_FORMS}",
                          param, ctx)
        if not seconds >= 0 or seconds == float("inf"):
            self.fail(f"{value!r} must be a number of seconds >= 0", param, ctx)
        return seconds


@cli.command()
@_run_option
@click.argument("ids", nargs=-1)
@click.option("--timeout", type=_Seconds(), default=None,
              help="give up after this long (exit 3): seconds, or a duration such as '90s' "
                   "or '5m'")
@click.pass_context
def wait(context: click.Context, ids: tuple[str, ...], timeout: float | None) -> None:
    """Wait for jobs (default: all of the run) with a progress bar; exit 1 if any did not
    complete (failed, timed out or cancelled)."""
    import time

    from corral.cli.waiting import live_script, unfinished, wait_with_progress
    from corral.units import format_span

    run = _open_run(context)
    if ids:  # (names given: their ids, each once)
        ids = tuple(dict.fromkeys(str(job.id) for job in _select(run, ids)))
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = sys.stderr.isatty()
    for _ in range(_DAEMON_RESTARTS_IN_A_WAIT + 1):
        # Counted, not read: the rows of a run of 100,000 jobs take seconds to read.
        waited_for = unfinished(run.status_counts(ids or None))
        if waited_for and run.owner is None:  # (before the wait, or during it: killed)
            _control(context, {"verb": "ping"})  # restarts the daemon of a command-line run
            click.echo(f"corral: note: the run's daemon had stopped; a new one takes up its "
                       f"unfinished jobs again ({waited_for} of those waited for)", err=True)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        outcome = wait_with_progress(run, ids, left, shown)
        if outcome != "orphaned":
            break
    if outcome == "timeout":
        counts = run.status_counts(ids or None)
        waited_for = unfinished(counts)
        script = None if waited_for or ids else live_script(run)
        if script is not None:  # (a script's whole run: it may make more)
            made = "every job has ended" if counts else "it has made no job yet"
            raise CommandError(f"{made}, but the script that drives the run (pid {script}) "
                               f"still runs after {format_span(timeout or 0)}; it may make "
                               "more jobs", EXIT_UNREACHABLE)
        raise CommandError(f"{waited_for} job{'s' * (waited_for != 1)} still unfinished after "
                           f"{format_span(timeout or 0)} (corral status lists them)",
                           EXIT_UNREACHABLE)
    if outcome == "cut short":
        raise CommandError(f"the script that drove the run at {run.path} ended without closing "
                           "it (killed?): every job it made has ended, but it may not have made "
                           "them all; run it again to finish the run (what completed is not run "
                           "again)", EXIT_UNREACHABLE)
    if outcome == "orphaned":
        raise CommandError(f"no process drives the run at {run.path} any more; its unfinished "
                           "jobs will not progress", EXIT_UNREACHABLE)
    if outcome == "journal stopped":
        raise CommandError(f"the journal of the run at {run.path} stopped: "
                           f"{run.journal_stopped()}; how its jobs end cannot be seen from here "
                           "(the driver's log says); corral stop ends the driver",
                           EXIT_UNREACHABLE)
    counts = Counter(run.status_counts(ids or None))
    failed = sum(counts[status] for status in _FAILED)
    if failed:  # (their rows are read only then)
        for job in _select(run, ids):
            if job.status in _FAILED:
                click.echo(f"job {job.id} {job.name!r} {job.status.name}: {job.reason}",
                           err=True)
    total = counts.total()
    if not total:
        click.echo("corral: no jobs to wait for", err=True)
    else:  # (in a terminal too, below the bar: a line to read, and to scroll back to)
        click.echo(f"corral: {total} job{'s' * (total != 1)} ended: " + ", ".join(
            f"{count} {status.name.lower().replace('_', ' ')}"
            for status, count in counts.most_common()), err=True)
    if failed:
        context.exit(EXIT_FAILED_JOB)


@cli.command()
@_run_option
@click.argument("ids", nargs=-1, required=True)
@click.pass_context
def cancel(context: click.Context, ids: tuple[str, ...]) -> None:
    """Cancel jobs, by id, range of ids (3-7) or name, running or not (a running job's
    processes are killed)."""
    if any(_ID_RANGE.fullmatch(given) for given in ids):
        ids = _with_ranges(_open_run(context), ids, unfinished=True)
        if not ids:
            click.echo("nothing to cancel: every job in the range has ended")
            return
    reply = _control(context, {"verb": "cancel", "ids": list(ids)})
    names = reply.get("names", {})  # (a daemon of an earlier version sends none)
    # With its name: `cancel w30 w31` answered "cancelled 31" and "cancelled 32",
    # which read as the wrong jobs (new-user review).
    named = lambda job_id: (f"{job_id} {names[str(job_id)]!r}"  # noqa: E731
                            if str(job_id) in names else str(job_id))
    for job_id in reply["cancelled"]:
        click.echo(f"cancelled {named(job_id)}")
    for job_id in reply.get("already_cancelled", ()):
        click.echo(f"job {named(job_id)} was already cancelled")
    for problem in reply["problems"]:
        click.echo(f"corral: error: {problem}", err=True)
    if reply["problems"]:
        context.exit(EXIT_USAGE)


@cli.command()
@_run_option
@click.pass_context
def pause(context: click.Context) -> None:
    """Start no new job; running ones finish."""
    reply = _control(context, {"verb": "pause"})
    click.echo("paused" + (" (it already was)" if reply.get("was_paused") else ""))


@cli.command()
@_run_option
@click.pass_context
def resume(context: click.Context) -> None:
    """Start jobs again after pause."""
    reply = _control(context, {"verb": "resume"})
    click.echo("resumed" + (" (it was not paused)" if reply.get("was_paused") is False else ""))


@cli.command()
@_run_option
@click.argument("job_id", metavar="[ID]", required=False)
@click.pass_context
def abort(context: click.Context, job_id: str | None) -> None:
    """Stop the running job(s), or the one ID (an id or a name); the queue goes on.
    They get abort_requested() and SIGTERM, then are killed after the grace period."""
    request: dict[str, Any] = {"verb": "abort"}
    if job_id is not None:
        request["id"] = job_id
    reply = _control(context, request, start=False)
    click.echo(f"aborting {reply['aborted']} job(s)")


@cli.command()
@_run_option
@click.pass_context
def clear(context: click.Context) -> None:
    """Cancel every job that has not started."""
    reply = _control(context, {"verb": "clear"})
    click.echo(f"cleared {reply['cleared']} job(s)")


@cli.command()
@_run_option
@click.pass_context
def stop(context: click.Context) -> None:
    """Stop the run's daemon; its unfinished jobs are cancelled."""
    _control(context, {"verb": "stop"}, start=False)
    click.echo("stopping")


@cli.command()
@_run_option
@click.option("--yes", "-y", is_flag=True, help="do not ask")
@click.pass_context
def clean(context: click.Context, yes: bool) -> None:
    """Delete the files of finished jobs (their records stay in the journal)."""
    from corral.journal.cleaning import clean_jobs, files_to_clean

    run = _open_run(context)
    finished = run.jobs("finished", results=False)
    found = files_to_clean(finished)
    for note in found.notes:
        click.echo(f"corral: note: {note}", err=True)
    if not found.directories:
        click.echo("nothing to clean")
        return
    count, size = len(found.directories), found.size
    question = (f"delete the files of {count} finished job(s), {size / 1e6:.1f} MB, "
                f"in {run.path}?")
    if not yes and not _confirm(question):
        click.echo("nothing deleted")
        return
    try:
        failures = clean_jobs(run.path, finished, found).failures
    except OSError as error:  # a read-only mount, a directory of another mode
        raise CommandError(f"cannot delete anything in {run.path}: "
                           f"{error.strerror or error}", EXIT_UNREACHABLE) from None
    deleted = count - len(failures)
    click.echo(f"deleted the files of {deleted} job(s), {size / 1e6:.1f} MB" if not failures
               else f"deleted the files of {deleted} of {count} job(s)")
    if failures:
        raise CommandError("could not delete " + first_few(failures, 5, "; "), EXIT_UNREACHABLE)


def _has_output(path: str | os.PathLike[str] | None) -> bool:
    try:
        return path is not None and os.path.getsize(path) > 0
    except OSError:
        return False


def _confirm(question: str) -> bool:
    """Ask on stderr; with no answer to read (no terminal, input closed), refuse
    with a message that says how to go on instead of a bare "aborted"."""
    try:
        return click.confirm(question, err=True)
    except click.Abort:
        if sys.stdin is not None and sys.stdin.isatty():
            raise  # Ctrl-C or Ctrl-D at the prompt: the user chose to stop
        click.echo("", err=True)  # end the prompt's line
        raise CommandError("refusing to delete without confirmation: no answer came (its "
                           "input ended; it reads 'y' from a pipe too); pass --yes") from None


@cli.command()
@_run_option
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="where to write it (default report.html, or report.svg; - for stdout)")
@click.option("--format", "format_", type=click.Choice(["html", "svg"]), default=None,
              help="html: the whole report (default); svg: the timeline as a picture")
@click.pass_context
def report(context: click.Context, output: Path | None, format_: str | None) -> None:
    """Write the run's report: one HTML file with a summary, the jobs that did not
    complete and a timeline, viewable with no network; or the timeline as SVG."""
    from corral.report import choose_format, report_text, write_report

    run = _open_run(context)
    try:
        chosen = choose_format(output if output is not None and str(output) != "-" else None,
                               format_)
    except ValueError:
        raise CommandError(f"-o {output}: corral writes a report as .html or .svg; name the "
                           "file so, or add --format html or --format svg") from None
    if output is not None and str(output) == "-":
        sys.stdout.write(report_text(run, chosen))
        return
    target = output if output is not None else Path(f"report.{chosen}")
    if target.parent != Path() and not target.parent.expanduser().is_dir():
        raise CommandError(f"-o {target}: no directory {target.parent}")
    try:
        written = write_report(run, target, chosen)
    except OSError as error:
        raise CommandError(f"-o {target}: cannot write it ({error.strerror or error})") from None
    click.echo(f"wrote {written}")


@cli.command()
@_run_option
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="the port to listen on (default: any free one)")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="the address to listen on; anything but loopback exposes your runs "
                   "to whoever reaches it and has the token")
@click.pass_context
def dashboard(context: click.Context, port: int, host: str) -> None:
    """Serve a live page of the run (and of the others in your state directory) on
    this machine; prints its URL with the token it needs. Ctrl-C stops it."""
    from corral.web import MISSING_EXTRA

    _open_run(context)  # a wrong --run is one line now, not a page that says so
    try:
        from corral.web.app import serve
    except ImportError as error:
        if getattr(error, "name", "") and str(error.name).split(".")[0] == "aiohttp":
            raise CommandError(MISSING_EXTRA) from None
        raise
    state_dir = default_run_dir().parent

    def ready(url: str) -> None:
        click.echo(f"corral dashboard of {_run_dir(context)}\n  {url}\n"
                   "(the token in the URL is the key: share it with no one; Ctrl-C stops)",
                   err=False)
        sys.stdout.flush()

    try:
        serve(_run_dir(context), state_dir, host=host, port=port, ready=ready)
    except OSError as error:
        raise CommandError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


@cli.command()
@click.option("--backend", "backends", multiple=True, metavar="NAME",
              help="Show only what the options become on this backend (repeatable).")
@click.argument("names", nargs=-1, metavar="[OPTION]...")
def options(backends: tuple[str, ...], names: tuple[str, ...]) -> None:
    """Every job option (or those named: corral options memory walltime): what it
    accepts, its units, default, and what it becomes on each backend."""
    from corral.backends import AUTO, backend_names, resolve_backend
    from corral.cli.backend_views import options_table
    from corral.options import JOB_OPTIONS, unknown_option_message

    names = tuple(name.lstrip("-").replace("-", "_") for name in names)  # --memory too
    for name in names:
        if name not in JOB_OPTIONS:
            raise CommandError(unknown_option_message(name, JOB_OPTIONS), EXIT_USAGE)
    _register_configured_backends()
    for name in backends:
        if name not in backend_names() and name != AUTO:
            raise CommandError(_unknown_backend(name))
    # "auto": the backend it chooses here (as Scheduler(backend="auto") would)
    chosen = tuple(dict.fromkeys(resolve_backend(name) if name == AUTO else name
                                 for name in backends))
    _console().print(options_table(chosen or None, names or None))


@cli.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
def backends(names: tuple[str, ...]) -> None:
    """Every backend (or those NAMEd): whether it answers here and why, what it
    does, its backend options and what each job option becomes there; and the
    one backend="auto" chooses."""
    from concurrent.futures import ThreadPoolExecutor

    from corral.backends import (AUTO, DEFAULT_BACKEND, Probe, backend_info, backend_names,
                                 probe_backend)
    from corral.cli.backend_views import backends_view

    _register_configured_backends()
    for name in names:
        if name not in backend_names() and name != AUTO:
            raise CommandError(_unknown_backend(name))
    every = backend_names()
    with ThreadPoolExecutor(max_workers=len(every)) as pool:  # probes wait on commands
        probes = dict(zip(every, pool.map(probe_backend, every), strict=True))
    probes[DEFAULT_BACKEND] = Probe(True, "always: worker processes on this machine; "
                                          f"{AUTO!r} falls back to it")
    auto = next((name for name in every if name != DEFAULT_BACKEND and probes[name].answers
                 and backend_info(name).auto), DEFAULT_BACKEND)
    shown = {name: probes[name]  # ("auto": the backend it chooses)
             for name in dict.fromkeys(auto if name == AUTO else name for name in names or every)}
    _console().print(backends_view(shown, auto))


def _unknown_backend(name: str) -> str:
    from corral.backends import resolve_backend

    try:
        resolve_backend(name)
    except ValueError as error:
        return str(error)
    return f"unknown backend {name!r}"  # "auto": not a backend of its own


def _register_configured_backends(strict: bool = True) -> None:
    """Make the schedulers the config files describe (``[schedulers.NAME]``) known
    here. A config file with a mistake is an error when *strict*; otherwise it is
    left to the commands that read the config, which say what is wrong."""
    from corral.config_files import config_files_in

    if not config_files_in():  # nothing to register: not worth importing what reads them
        return
    from corral.config import load_config

    try:
        load_config()  # registers them
    except ValueError as error:
        if strict:
            raise CommandError(str(error)) from None


@cli.command()
@_run_option
@click.argument("name", required=False)
@click.pass_context
def profiles(context: click.Context, name: str | None) -> None:
    """List the profiles of the config files (the user's, the run directory's
    and this directory's corral.toml), or show profile NAME."""
    from corral.cli.views import profiles_view
    from corral.config import load_config

    try:
        config = load_config(run_dir=_run_dir(context))
        chosen = None if name is None else {name: config.profile(name)}
    except ValueError as error:
        raise CommandError(str(error)) from None
    _console().print(profiles_view(config, chosen))


# -- entry point ----------------------------------------------------------------------------


def _fail(message: str, status: int) -> NoReturn:
    click.echo(f"corral: error: {message}", err=True)
    sys.exit(status)


def _os_error_text(error: OSError) -> str:
    """``<file>: <why>`` rather than Python's ``[Errno 36] ...`` form."""
    if error.filename is None or not error.strerror:
        return str(error)
    return f"{error.filename}: {error.strerror}"


def _no_such_option(error: click.NoSuchOption) -> str:
    """Click's words for an unknown flag, or ours where the flag is another
    tool's name for a job option (``--cpus``: click offers ``--gpus`` too)."""
    where = f"corral {error.ctx.info_name}" if error.ctx is not None else "corral"
    hint = (peers_word_hint(error.option_name.lstrip("-").replace("-", "_"))
            if where == "corral submit" else None)
    if hint is None:
        return f"{' '.join(error.format_message().split())} (see '{where} --help')"
    return (f"no such option {error.option_name}; "
            + re.sub(r"'(\w+)'", lambda found: "--" + found[1].replace("_", "-"), hint))


def main(argv: list[str] | None = None) -> None:
    """Run the command; every error becomes one line and an exit status."""
    from corral.runtime.tempdirs import remove_dead_owners_tempdirs

    remove_dead_owners_tempdirs()  # what drivers killed with SIGKILL left in /tmp
    try:
        status = cli.main(args=argv, prog_name="corral", standalone_mode=False)
    except NoArgsIsHelpError as error:  # plain `corral`: the help is the answer, not an error
        click.echo(error.ctx.get_help() if error.ctx is not None else cli.get_help(
            click.Context(cli, info_name="corral")))
        sys.exit(0)
    except click.NoSuchOption as error:
        _fail(_no_such_option(error), EXIT_USAGE)
    except click.UsageError as error:
        where = f"corral {error.ctx.info_name}" if error.ctx is not None and \
            error.ctx.info_name != "corral" else "corral"
        message = " ".join(error.format_message().split())
        _fail(f"{message} (see '{where} --help')", EXIT_USAGE)
    except (click.Abort, KeyboardInterrupt):  # (click makes a Ctrl-C an Abort)
        _fail(INTERRUPTED, EXIT_INTERRUPTED)
    except click.ClickException as error:
        _fail(error.format_message(), error.exit_code)
    except CommandError as error:
        _fail(str(error), error.status)
    except OSError as error:  # (one the command did not word itself: its file and why)
        _fail(_os_error_text(error), EXIT_UNREACHABLE)
    except CorralError as error:
        _fail(str(error), EXIT_UNREACHABLE)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
