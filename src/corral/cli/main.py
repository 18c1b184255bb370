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
usage error or bad input, 3 the run cannot be reached or controlled, 141 the
reader of its output went away (``| head -1``: said by no word, as ``ls`` does).

The run directory is ``--run DIR``, else ``$CORRAL_RUN``, else
``<user state dir>/corral/default``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from click.exceptions import NoArgsIsHelpError

from corral.cli.config_checks import (note_tables_not_read, profile_options,
                                      register_configured_backends)
from corral.cli.console import make_console
from corral.cli.control_requests import control_request
from corral.cli.exits import (EXIT_BROKEN_PIPE, EXIT_FAILED_JOB, EXIT_INTERRUPTED,
                              EXIT_TERMINATED, EXIT_TIMED_OUT, EXIT_UNREACHABLE, EXIT_USAGE,
                              INTERRUPTED, TERMINATED, CommandError, Terminated, raise_terminated)
from corral.cli.job_selection import ID_RANGE, jobs_with_ids, select_jobs, with_ranges
from corral.cli.new_run import making_run
from corral.cli.run_dirs import (RunPath, chosen_run_dir, current_directory, default_run_dir,
                                 open_run, resolved_path, run_option)
from corral.cli.streams import (ReaderGone, drop_unwritten_output, flush_output,
                                guard_standard_streams, reader_gone)
from corral.errors import CorralError
from corral.options import (JOB_OPTIONS, megabytes_meant_otherwise, parse_options,
                            peers_word_hint, split_flags)
from corral.safe_repr import first_few, one_line, printable
from corral.status import PENDING, TERMINAL, JobStatus, statuses_named

if TYPE_CHECKING:
    from collections.abc import Callable

    from corral.journal.stored import StoredJob

__all__ = ["main", "cli"]


#: Ended without doing its work: what makes status and wait exit 1 (a cancelled
#: job too, so that ``corral wait ID && deploy`` does not deploy).
_FAILED_IN_ORDER = (JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED)
_FAILED = set(_FAILED_IN_ORDER)


# -- the command group -----------------------------------------------------------------------


@contextmanager
def _said_if_reader_gone() -> Iterator[None]:
    """Make a broken pipe of the command's output :class:`ReaderGone`, which
    :func:`main` ends quietly: click makes it exit 1 (attack review: ``corral
    status --all | head -1`` said a job had failed)."""
    try:
        yield
    except BrokenPipeError as error:
        if reader_gone(error):
            raise ReaderGone from None
        raise CommandError(_os_error_text(error), EXIT_UNREACHABLE) from None


class _Commands(click.Group):
    """The ``corral`` group: its commands' broken pipes are said by :func:`main`."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        with _said_if_reader_gone():  # (--help and --version print here)
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _said_if_reader_gone():
            return super().invoke(ctx)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--run", "run_dir", type=RunPath(),
              envvar="CORRAL_RUN",
              help="The run directory (default: $CORRAL_RUN, else the user's default run).")
@click.version_option(package_name="corral", prog_name="corral")
@click.pass_context
def cli(context: click.Context, run_dir: Path | None) -> None:
    """Run jobs with resources and dependencies, and watch or control a run from any
    terminal."""
    run = resolved_path(Path(run_dir if run_dir is not None else default_run_dir()))
    from_environment = (context.get_parameter_source("run_dir")
                        is click.core.ParameterSource.ENVIRONMENT)
    context.obj = {"run": run, "run_from": "$CORRAL_RUN" if from_environment else "--run"}
    register_configured_backends(strict=False)  # a run on one shows its ids, is controlled


def _job_option_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give *command* a flag for every job option the registry offers to the
    command line, with the registry's help: one list of options for the API,
    this command and ``corral options``."""
    from corral.options import NOTIFY_WHEN

    from corral.units import DURATION_FORMS, DURATION_TEXT_FORMS

    types = {"int": click.INT, "text": click.STRING, "choice": click.Choice(NOTIFY_WHEN),
             "list": click.STRING}
    for option in reversed(list(JOB_OPTIONS.values())):
        if option.cli:
            # Typed, "90" is text: refused as ambiguous, so the help offers no bare number.
            accepts = (DURATION_TEXT_FORMS if option.accepts == DURATION_FORMS
                       else option.accepts)
            repeatable = option.cli == "list"
            if repeatable:  # (the API's "or a list of them" is the flag given again here)
                accepts = _ONE_VALUE.get(option.name, accepts) + "; repeat the flag for more"
            command = click.option(option.flag, option.name, type=types[option.cli],
                                   multiple=repeatable,
                                   help=f"{option.help} ({accepts})")(command)
    return command


#: What one value of a repeatable flag is.
_ONE_VALUE = {"notify": "an e-mail address", "setup": "a line of shell code",
              "extra_flags": "flags, split like a shell"}


def _gathered_list_flags(given: dict[str, Any]) -> dict[str, Any]:
    """*given* with each repeatable flag's values as one option value (None
    when the flag was not given): a second ``--notify`` used to replace the
    first without a word (options review). Each ``--extra-flags`` is split like
    a shell, as the option's one string is."""
    gathered = dict(given)
    for name, option in JOB_OPTIONS.items():
        if option.cli == "list" and name in given:
            values = given[name]
            if not values:
                gathered[name] = None
            elif name == "extra_flags":  # (-l h_rt=60 given as two flags: one list)
                gathered[name] = [word for value in values for word in split_flags(value)]
            else:
                gathered[name] = list(values)
    return gathered


def _refuse_megabytes_meant_otherwise(memory: object, said: str = "--memory") -> None:
    """Refuse ``--memory 4``: a number without a unit is megabytes, as Slurm
    reads it, but so little is no job's need: gigabytes were meant (a cold
    review's PBS and fyrd habit), and the job ran packed as if it took none."""
    number = megabytes_meant_otherwise(memory)
    if number is not None:
        raise CommandError(f"{said} {number}: a number without a unit is megabytes, and "
                           f"{number} MB is so little that gigabytes are likely meant; give "
                           f"the unit: {said} {number}G (or {number}M if megabytes are meant)",
                           EXIT_USAGE)


#: The job options whose values may begin with '-' (a scheduler's own flags, shell lines).
_MAY_BEGIN_WITH_DASH = frozenset({"extra_flags", "setup"})


@cli.command(context_settings={"ignore_unknown_options": False,
                              "allow_interspersed_args": False})
@run_option
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
        options.update(profile_options(profile, chosen_run_dir(context)))
    for name, values in given.items():
        for value in values if isinstance(values, tuple) else (values,):
            if (isinstance(value, str) and value.startswith("-")
                    and name not in _MAY_BEGIN_WITH_DASH):
                # `--name -- echo hi` named the job "--" (attack review): no option's
                # value begins with '-', and a name that did could not be typed back.
                flag = JOB_OPTIONS[name].flag
                raise CommandError(f"{flag} {value!r}: no value of {flag} begins with '-'; was "
                                   f"{flag}'s value left out?", EXIT_USAGE)
    try:
        given = _gathered_list_flags(given)
    except ValueError as error:
        raise CommandError(_as_flag_message(str(error))) from None
    options.update({name: value for name, value in given.items() if value is not None})
    # Named as the person gave it: the flag, or the profile's key (attack review).
    said = {name: (JOB_OPTIONS[name].flag if given.get(name) is not None
                   else f"profile {profile!r}: {name} =") for name in ("name", "memory")}
    # (" 7" too: a table shows it as 7, which status 7 reads as job 7: attack review)
    if isinstance(options.get("name"), str) and is_number_text(options["name"].strip()):
        raise CommandError(f"{said['name']} {options['name']}: a name that is a number would be "
                           "taken for a job's id by logs, cancel, status and --after; give a "
                           "name with a letter in it", EXIT_USAGE)
    if isinstance(options.get("name"), str) and ID_RANGE.fullmatch(options["name"].strip()):
        raise CommandError(f"{said['name']} {options['name']}: a name that is a range of ids "
                           "would be taken for the jobs numbered in it by cancel, status and "
                           "logs; give a name with a letter in it", EXIT_USAGE)
    _refuse_megabytes_meant_otherwise(options.get("memory"), said["memory"])
    options["cwd"] = _job_directory(workdir, options.get("cwd"), profile, waits=bool(after))
    profile_env = options.get("env")
    if profile_env is None or isinstance(profile_env, dict):  # (else parse_options says why)
        options["env"] = {**os.environ, **(profile_env or {})}
    try:
        parse_options(options)  # bad values are reported here, before the daemon starts
    except ValueError as error:
        raise CommandError(_as_flag_message(str(error))) from None
    run_dir = chosen_run_dir(context)
    with making_run(run_dir, "nothing was submitted"):
        note_tables_not_read(run_dir, notify=options.get("notify") is not None)
        given_command = command[0] if len(command) == 1 else list(command)
        reply = control_request(context, {"verb": "submit", "command": given_command,
                                          "options": options, "after": list(after)})
    click.echo(reply["id"])
    if reply.get("note"):
        click.echo(f"corral: note: {printable(reply['note'])}", err=True)


def _job_directory(workdir: Path | None, profile_cwd: Any, profile: str | None,
                   waits: bool) -> str:
    """The absolute directory a submitted job runs in: ``--workdir``, else its
    profile's ``cwd``, else the current directory. The daemon runs elsewhere: a
    relative directory means the one seen from here. (A profile's cwd and env
    hold unless --workdir is given: attack review.)

    A current directory that was deleted is refused when it is needed (attack
    review: the job was submitted, to fail when it started).
    """
    if workdir is None and profile_cwd is None:
        return current_directory("a job runs in the directory it is submitted from; "
                                 "--workdir DIR runs it elsewhere")
    given = workdir if workdir is not None else Path(str(profile_cwd)).expanduser()
    said = f"--workdir {workdir}" if workdir is not None else f"profile {profile!r}: cwd = {given}"
    if not given.is_absolute():
        given = Path(current_directory(f"{said} is relative to it"), given)
    if not waits and not given.is_dir():  # (one --after may make it)
        raise CommandError(f"{said}: not an existing directory (a job that runs after the one "
                           "that makes it may name it: --after)")
    return os.path.abspath(given)


def _never_started(context: click.Context, job: StoredJob, follow: bool) -> None:
    """Say that *job* ended without starting; a followed one that failed so exits 1."""
    if job.attempts:  # it ran in an earlier run, and not in this one (cold review)
        click.echo(f"corral: job {job.id} {job.name!r} did not start again ({job.status.name}:"
                   f" {job.reason}); what its attempt {job.attempts}, in an earlier run, "
                   f"wrote: --attempt {job.attempts}", err=True)
    else:
        click.echo(f"corral: job {job.id} {job.name!r} never started ({job.status.name}: "
                   f"{job.reason}): no output", err=True)
    if follow and job.status in _FAILED:  # as a followed job that ended so says
        context.exit(EXIT_FAILED_JOB)


def _as_flag_message(message: str) -> str:
    """Turn option names in an API message into the flags typed here, and the
    forms it offers into those a flag takes (no bare number of seconds: options
    review)."""
    from corral.units import DURATION_FORMS, DURATION_TEXT_FORMS

    message = message.replace(DURATION_FORMS, DURATION_TEXT_FORMS)
    for name, option in JOB_OPTIONS.items():
        if message.startswith(f"{name}: "):  # (a list's item: "extra_flags: 'x' is not a flag")
            message = option.flag + message[len(name):]
        message = message.replace(f"{name}=", f"{option.flag} ").replace(
            f"'{name}'", f"'{option.flag}'")
    return message


@cli.command()
@run_option
@click.option("--all", "show_all", is_flag=True, help="also list every finished job")
@click.option("--state", metavar="STATE", default=None,
              help="list every job in this state (failed, timed_out, running, ...) or group: "
                   "pending (not handed to the backend yet), active (submitted, which a "
                   "cluster may still hold in its queue, or running), finished; several with "
                   "commas: running,queued")
@click.argument("ids", nargs=-1)
@click.pass_context
def status(context: click.Context, show_all: bool, state: str | None,
           ids: tuple[str, ...]) -> None:
    """Show the run's jobs; exit 1 if a listed job failed, timed out or was cancelled.

    Without IDs: the first 100 unfinished jobs, the first 10 that failed or
    timed out, and the last 10 finished ones, with counts of the others (all
    of them with --all; those in a state with --state).
    """
    from rich.text import Text

    from corral.cli.views import (ORPHANED_REASON, earlier_tries, hidden_note, paused_reason,
                                  run_header, status_table, unlisted_note)
    from corral.journal.cleaning import was_cleaned
    from corral.journal.reading import reruns_in

    wanted: set[JobStatus] | None = None
    if state is not None:  # (cold review: of 50,000 jobs, no way to list the failed ones)
        try:  # (a state by its name first: "queued" is also the group of pending ones)
            wanted = set()
            for one in state.split(","):  # running,queued: either (attack review)
                key = one.strip().lower()
                wanted |= ({JobStatus(key)} if key in {member.value for member in JobStatus}
                           else statuses_named(one))
        except ValueError as error:
            raise CommandError(f"--state: {error}".replace("use a JobStatus or one of",
                                                           "use one of")) from None
    run = open_run(context)
    notes = []
    if wanted is not None:  # (their rows only, by a query: a big run answers at once)
        jobs = ([job for job in select_jobs(run, ids) if job.status in wanted] if ids
                else run.jobs_in(wanted))
    elif not ids and not show_all:  # a million-job run answers as fast as a small one
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
        jobs = select_jobs(run, ids)
    on_cluster = run.cluster_jobs(jobs)  # (they run on without a driver)
    driven = run.owner is not None
    console = make_console()
    console.print(run_header(run))
    for note in notes:  # above the table, where it is seen before the list is read as complete
        console.print(note)
    from corral.cli.sent_without_driver import sent_requests

    sent = {} if driven or not on_cluster else sent_requests(run.path, jobs)
    settings = run.meta()  # (read once: per job, status 1-20000 spent 7 s opening the journal)
    paused, reruns = settings.get("paused") == "1", reruns_in(settings)
    status_table(jobs, driver_alive=driven, cluster_jobs=on_cluster, paused=paused,
                 width=console.width, unknown_backend_jobs=run.jobs_of_unknown_backends(jobs),
                 sent_without_driver=sent, reruns=reruns).print(console)
    # The jobs asked for by id or name: their whole reason, and what their Python raised,
    # as lines of their own; of a range, only those that did not complete (cold review:
    # status 1-2000 repeated every row as a paragraph under the table).
    named = {given for given in ids if not ID_RANGE.fullmatch(given)}
    for job in jobs if ids else ():
        if (str(job.id) not in named and job.name not in named
                and job.status not in (JobStatus.FAILED, JobStatus.TIMED_OUT,
                                       JobStatus.CANCELLED)):
            continue
        reason = job.reason
        if not driven and job.status not in TERMINAL and str(job.id) not in on_cluster:
            reason = ORPHANED_REASON  # (not what it waited for when its driver died)
        elif paused and job.status is JobStatus.QUEUED:
            reason = paused_reason(job)  # (not the room it waited for before: attack review)
        if reason:
            console.print(Text(printable(f"\njob {job.id} {job.name!r} {job.status.name}: "
                                         f"{reason}")), soft_wrap=True)
        tries = earlier_tries(run, job) if job.attempts > 1 else []
        if tries:  # (cold review: why a retried job's first try failed was only in corral.log)
            console.print(Text(printable(f"\njob {job.id} {job.name!r} earlier tries:\n"
                                         + "\n".join(tries))), soft_wrap=True)
        if job.meta is not None:  # (what a search's trial carried: its hyperparameters)
            meta = job.meta if isinstance(job.meta, str) else json.dumps(job.meta)
            console.print(Text(printable(f"\njob {job.id} {job.name!r} meta: {meta}")),
                          soft_wrap=True)
        if (job.status is JobStatus.COMPLETED and job.result is not None
                and (str(job.id) in named or job.name in named)):  # (cold review)
            from corral.cli.result_shown import shown_result

            as_json = job.kind not in ("call", "function")  # (what it wrote, as it wrote it)
            console.print(Text(printable(f"\njob {job.id} {job.name!r} result: "
                                         f"{shown_result(job.result, job.id, as_json)}")),
                          soft_wrap=True)
        traceback = job.traceback_text()
        if traceback:
            said = ("was on this line when its timeout stopped it"
                    if job.status is JobStatus.TIMED_OUT else "raised")
            console.print(Text(printable(f"\njob {job.id} {job.name!r} {said}:\n"
                                         f"{traceback.rstrip()}")), soft_wrap=True)
        elif traceback is None and job.error is not None:
            console.print(Text(f"\njob {job.id} {job.name!r}: the traceback it raised cannot be "
                               "read from the journal (its record of it is damaged)"))
        elif job.status in (JobStatus.FAILED, JobStatus.TIMED_OUT) and (
                str(job.id) in named or job.name in named):  # (not each of a range's)
            # (cold review, a build engineer: a failed compile said "exit code 2"; the
            # compiler's error took a corral logs --stderr more)
            tail = ("its output files were removed (corral clean)" if was_cleaned(run.path, job)
                    else job.stderr_tail())
            if tail is not None:
                console.print(Text(printable(f"\njob {job.id} {job.name!r}: {tail}")),
                              soft_wrap=True)
    stranded = [] if driven else [job for job in jobs if job.status not in TERMINAL
                                  and str(job.id) not in on_cluster]
    if stranded:  # before a failure's exit status: the run cannot even finish
        click.echo(f"corral: no process drives the run: {len(stranded)} unfinished "
                   f"job{'s' * (len(stranded) != 1)} listed will not go on until it runs "
                   f"again ({run.how_unfinished_jobs_go_on()})", err=True)
        context.exit(EXIT_UNREACHABLE)
    # (a job corral rerun ran again counts by its rerun, as wait counts it, unless asked for)
    run_again = {} if ids else reruns
    if any(job.status in _FAILED and str(job.id) not in run_again for job in jobs):
        context.exit(EXIT_FAILED_JOB)


#: How many finished jobs ``corral status`` lists without ``--all``.
_FINISHED_SHOWN = 10
#: How many unfinished jobs it lists without ``--all`` (the others are counted).
_UNFINISHED_SHOWN = 100
#: How many of the jobs that failed or timed out it lists without ``--all``, the
#: first ones, however old (the others are counted).
_FAILED_SHOWN = 10

#: Of those, how many failed commands' and scripts' stderr tails ``corral wait`` prints.
_TAILS_SHOWN = 3

#: The failures whose stderr may say why (a cancelled job's does not).
_TAILED = (JobStatus.FAILED, JobStatus.TIMED_OUT)


def _indented(text: str) -> str:
    """*text* with each line indented, to read as part of the line above it."""
    return "\n".join(f"  {line}" for line in text.splitlines())


@cli.command()
@run_option
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

    run = open_run(context)
    stream = "stderr" if show_stderr else "stdout"
    chosen = select_jobs(run, (job_id,), ranges=False)  # (no range: not told to give one)
    if len(chosen) != 1:  # (a range: re-attack review, a traceback)
        raise CommandError(f"corral logs shows one job, and {job_id} is jobs "
                           f"{first_few([str(job.id) for job in chosen], 5)}; give one of them")
    [job] = chosen
    if was_cleaned(run.path, job):
        raise CommandError(f"job {job.id}'s output files were removed (corral clean)",
                           EXIT_UNREACHABLE)
    not_started = job.status in (JobStatus.NEW, JobStatus.WAITING, JobStatus.QUEUED,
                                 JobStatus.SUBMITTED)
    # (A job waiting for its retry has ended attempt N, kept as stdout.N: review. So has
    # one that ran in an earlier run and did not start in this one: cold review.)
    not_started_again = job.status in TERMINAL and job.started is None
    if attempt is not None and (attempt != job.attempts or not_started or not_started_again):
        _print_earlier_attempt(job, attempt, stream, follow)
        return
    if not_started:
        if not follow:
            earlier = (f"; what attempt {job.attempts} wrote: --attempt {job.attempts}"
                       if job.attempts else "")
            click.echo(f"corral: job {job.id} {job.name!r} has not started ({job.status.name}):"
                       f" no output yet (--follow waits for it{earlier})", err=True)
            return
        paused = ("; the run is paused: it starts after corral resume"
                  if job.status is not JobStatus.SUBMITTED and run.paused else "")
        click.echo(f"corral: job {job.id} {job.name!r} has not started ({job.status.name}): "
                   f"waiting for it{paused}", err=True)
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
        reason = now.reason or ""
        if ended and NOT_SAVED in reason:  # (it wrote, and what it wrote is lost)
            click.echo(f"corral: job {job.id} {job.name!r}: what it wrote was lost: "
                       f"{reason.split(NOT_SAVED, 1)[1].removeprefix(': ')} (its output "
                       "could not be saved)", err=True)
        elif ended and not show_stderr and not _has_output(now.output_path("stderr")):
            # (Cold review: a failed call's traceback is no output; say where it is.)
            click.echo(f"corral: job {job.id} {job.name!r} wrote nothing, to its stdout or its "
                       f"stderr{_traceback_elsewhere(job.id, reason)}", err=True)
        else:
            click.echo(f"corral: job {job.id} {job.name!r} wrote nothing to its {stream}"
                       + ("" if ended else " so far")
                       + (_traceback_elsewhere(job.id, reason) if show_stderr and ended else "")
                       + ("" if show_stderr else " (--stderr shows its standard error)"),
                       err=True)
    if follow:  # followed to its end: how it ended, as wait says (corral logs -f 7 && ...)
        ended_as = run.job(job_id)
        if ended_as.status not in TERMINAL:  # its driver died
            raise CommandError(f"no process drives the run at {run.path} any more; job "
                               f"{job.id} will not go on ({run.how_unfinished_jobs_go_on()})",
                               EXIT_UNREACHABLE)
        if ended_as.status in _FAILED:
            click.echo(f"corral: job {job.id} {job.name!r} {ended_as.status.name}: "
                       f"{ended_as.reason}", err=True)
            context.exit(EXIT_FAILED_JOB)


def _print_earlier_attempt(job: StoredJob, attempt: int, stream: str, follow: bool) -> None:
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


#: How many of the latest changes ``corral events`` prints without ``--all``.
_CHANGES_SHOWN = 20


@cli.command()
@run_option
@click.argument("ids", nargs=-1)
@click.option("--all", "show_all", is_flag=True, help="every change, not only the last ones")
@click.option("--last", type=click.IntRange(min=1), default=_CHANGES_SHOWN, show_default=True,
              metavar="N", help="how many of the latest changes to print")
@click.option("--follow", "-f", is_flag=True,
              help="then print each change as it happens, until the jobs IDS have ended "
                   "(all: until no process drives the run)")
@click.pass_context
def events(context: click.Context, ids: tuple[str, ...], show_all: bool, last: int,
           follow: bool) -> None:
    """Print the run's state changes (of the jobs IDS: ids, ranges 3-7 or names),
    one a line: when, which job, from which status to which, and why."""
    from corral.cli.changes import print_changes

    run = open_run(context)
    only = {str(job.id) for job in select_jobs(run, ids)} if ids else None
    print_changes(run, only, None if show_all else last, follow, sys.stdout,
                  lambda line: click.echo(line, err=True))


@cli.command()
@run_option
@click.argument("ids", nargs=-1)
@click.option("--timeout", type=_Seconds(), default=None,
              help="give up after this long (exit 124): seconds, or a duration such as '90s' "
                   "or '5m'")
@click.option("-q", "--quiet", is_flag=True,
              help="say nothing when every job completed (for cron, which mails any output)")
@click.pass_context
def wait(context: click.Context, ids: tuple[str, ...], timeout: float | None,
         quiet: bool) -> None:
    """Wait for jobs (default: all of the run) with a progress bar; exit 1 if any did not
    complete (failed, timed out or cancelled)."""
    import time

    from corral.cli.waiting import live_script, unfinished, wait_with_progress
    from corral.units import format_span

    run = open_run(context)
    if ids:  # (names given: their ids, each once)
        ids = tuple(dict.fromkeys(str(job.id) for job in select_jobs(run, ids)))
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = sys.stderr.isatty()
    if run.paused and any(run.status_counts(ids or None).get(status) for status in PENDING):
        # (cold review: a wait on a paused run waited in silence, for ever without --timeout)
        click.echo("corral: note: the run is paused: the jobs that have not started wait for "
                   "corral resume", err=True)
    for _ in range(_DAEMON_RESTARTS_IN_A_WAIT + 1):
        # Counted, not read: the rows of a run of 100,000 jobs take seconds to read.
        waited_for = unfinished(run.status_counts(ids or None))
        if waited_for and run.owner is None:  # (before the wait, or during it: killed)
            stop_pending = run.stop_pending()  # (before the new daemon carries it out)
            control_request(context, {"verb": "ping"})  # restarts the daemon of a command-line run
            what = ("carries out the corral stop it had not, cancelling its unfinished jobs"
                    if stop_pending else "takes up its unfinished jobs again")
            paused = ("; paused, it starts none of them" if not stop_pending and run.paused
                      else "")  # (as the other commands say it: attack review)
            click.echo(f"corral: note: the run's daemon had stopped; a new one {what} "
                       f"({waited_for} of those waited for){paused}", err=True)
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
                               "more jobs", EXIT_TIMED_OUT)
        held = any(counts.get(status) for status in PENDING)  # (a running one is not)
        paused = ("; the run is paused: corral resume lets it go on" if held and run.paused
                  else "")
        raise CommandError(f"{waited_for} job{'s' * (waited_for != 1)} still unfinished after "
                           f"{format_span(timeout or 0)} (corral status lists them){paused}",
                           EXIT_TIMED_OUT)
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
    # A whole run's jobs that corral rerun ran again are not counted: their
    # reruns are (cold review: a nightly wait failed for every failure fixed).
    superseded = [] if ids else jobs_with_ids(run, tuple(run.reruns()))
    counts.subtract(job.status for job in superseded)
    counts = +counts
    failed = sum(counts[status] for status in _FAILED)
    if failed:  # (their rows are read only then; by the ids waited for, not one at a time)
        # Those of the latest session first (cold review: a rerun whose edited
        # code made new jobs listed the earlier pass's stale rows, and the new
        # pass's real failures fell under "and 200 more"); in dispatch order
        # within a session.
        run_again = {str(job.id) for job in superseded}
        failures = ((job for job in jobs_with_ids(run, ids) if job.status in _FAILED) if ids
                    else iter(sorted((job for job in run.jobs_in(_FAILED)
                                      if str(job.id) not in run_again),
                                     key=lambda job: -(job.session or 0))))
        # The first few, a line each (cold review: 500 failures printed a megabyte,
        # with -q too, for cron to mail).
        from corral.journal.cleaning import was_cleaned

        tails_left = _TAILS_SHOWN
        for job in itertools.islice(failures, _FAILED_SHOWN):
            click.echo(printable(f"job {job.id} {one_line(repr(job.name), 100)} "
                                 f"{job.status.name}: {one_line(job.reason or '', 200)}"),
                       err=True)
            # A command's or script's reason is its exit code: the last lines of
            # its stderr say why (cold review, a build engineer: `corral wait`
            # said "exit code 2", and the compiler's error took a `corral logs
            # --stderr` more). A call's reason is its exception already.
            if tails_left and job.kind not in ("call", "function") and job.status in _TAILED:
                tail = job.stderr_tail() if not was_cleaned(run.path, job) else None
                if tail is not None:
                    tails_left -= 1
                    click.echo(printable(_indented(tail)), err=True)
        if failed > _FAILED_SHOWN:
            listing = " and ".join(f"corral status --state {status.value}"
                                   for status in _FAILED_IN_ORDER if counts[status])
            click.echo(f"corral: and {failed - _FAILED_SHOWN:,} more that did not complete "
                       f"({listing} list{'s' * (' and ' not in listing)} them)", err=True)
    total = counts.total()
    last = run.sessions()[-1:] if not ids else []
    if not total and last and last[0].kind == "script" and last[0].left_early:
        raise CommandError(f"the script that drove the run at {run.path} left it early "
                           f"({last[0].left_early}) before it made any job",
                           EXIT_UNREACHABLE)  # (fyrd review: "no jobs to wait for", exit 0)
    if quiet and not failed:  # (cold review, a sysadmin: cron mailed every good night)
        pass
    elif not total:
        click.echo("corral: no jobs to wait for", err=True)
    else:  # (in a terminal too, below the bar: a line to read, and to scroll back to)
        click.echo(f"corral: {total} job{'s' * (total != 1)} ended: " + ", ".join(
            f"{count} {status.name.lower().replace('_', ' ')}"
            for status, count in counts.most_common())
            + (f" ({len(superseded)} more ran again, counted by their reruns)"
               if superseded else ""), err=True)
    if last and not (quiet and not failed) and last[0].kind == "script" and last[0].left_early:
        # (Cold review: a map of 50,000 calls interrupted after 3,000 said "3018 jobs
        # ended", as if that were the run.)
        click.echo(f"corral: note: the script that drove the run left it early "
                   f"({last[0].left_early}): it may not have made all its jobs; run it again "
                   "to finish the run (what completed is not run again)", err=True)
    if failed:
        context.exit(EXIT_FAILED_JOB)


@cli.command()
@run_option
@click.argument("ids", nargs=-1, required=True)
@click.pass_context
def cancel(context: click.Context, ids: tuple[str, ...]) -> None:
    """Cancel jobs, by id, range of ids (3-7) or name, running or not (a running job's
    processes are killed)."""
    request: dict[str, Any] = {"verb": "cancel"}
    if any(ID_RANGE.fullmatch(given) for given in ids):
        ended: list[str] = []
        given = set(ids)
        ids = with_ranges(open_run(context), ids, lambda job: job.status not in TERMINAL, ended)
        if not ids:
            click.echo("nothing to cancel: every job in the range has ended")
            return
        ended = [job_id for job_id in ended if job_id not in given]  # (named alone: its own
        # answer, an error, not also "left": re-attack review)
        if ended:  # (said, not an error: attack review found them left out without a word)
            click.echo(f"left {first_few(ended, 10)}: ended already")
        # Those of a range that end before the cancel reaches them are no error
        # either (the journal read here lags the driver by a few milliseconds).
        request["ended_ok"] = [job_id for job_id in ids if job_id not in given]
    request["ids"] = list(ids)
    reply = control_request(context, request)
    names = reply.get("names", {})  # (a daemon of an earlier version sends none)
    # With its name: `cancel w30 w31` answered "cancelled 31" and "cancelled 32",
    # which read as the wrong jobs (new-user review).
    named = lambda job_id: (f"{job_id} {names[str(job_id)]!r}"  # noqa: E731
                            if str(job_id) in names else str(job_id))
    for job_id in reply["cancelled"]:
        click.echo(f"cancelled {named(job_id)}")
    if reply["cancelled"] and reply.get("kind") == "script":  # (cold review: cancelling
        click.echo(_ENDS_THE_SCRIPT_UNLESS_CAUGHT)  # 10 calls of a map ended its pipeline)
    for job_id in reply.get("already_cancelled", ()):
        click.echo(f"job {named(job_id)} was already cancelled")
    if reply.get("ended"):
        click.echo(f"left {first_few([str(job_id) for job_id in reply['ended']], 10)}: "
                   "ended as the cancel came")
    for problem in reply["problems"]:
        click.echo(f"corral: error: {problem}", err=True)
    if reply["problems"]:
        context.exit(EXIT_USAGE)


@cli.command()
@run_option
@click.argument("ids", nargs=-1, required=True)
@click.pass_context
def rerun(context: click.Context, ids: tuple[str, ...]) -> None:
    """Run ended jobs again, each as a new job: the same command, directory,
    environment and options. Print the new ids, one a line, in the order of
    the jobs. By id, name or range of ids (3-7: those in it that ended without
    completing). Jobs run again together keep their order."""
    if any(ID_RANGE.fullmatch(given) for given in ids):
        run = open_run(context)
        reruns = run.reruns()
        left: list[str] = []
        given = set(ids)
        ids = with_ranges(run, ids, lambda job: job.status in _FAILED and str(job.id) not in
                          reruns, left)  # (ended without completing, and not run again)
        left = [job_id for job_id in left if job_id not in given]
        again = [job_id for job_id in left if job_id in reruns]  # (cold review: a range ran
        # a failed job a second time beside its rerun)
        others = [job_id for job_id in left if job_id not in reruns]
        if others:
            click.echo(f"corral: note: left {first_few(others, 10)}: completed, or not ended",
                       err=True)
        if again:
            click.echo(f"corral: note: left {first_few(again, 10)}: run again already (corral "
                       "status shows as which)", err=True)
        if not ids:  # (said on stderr: `corral wait $(corral rerun 3-7)` reads stdout)
            click.echo("corral: nothing to run again: every job in the range completed, has "
                       "not ended, or was run again already", err=True)
            return
    reply = control_request(context, {"verb": "rerun", "ids": list(ids)})
    for _, new_id in reply["ids"]:
        click.echo(new_id)
    if reply.get("note"):
        click.echo(f"corral: note: {printable(reply['note'])}", err=True)


@cli.command()
@run_option
@click.pass_context
def pause(context: click.Context) -> None:
    """Start no new job; running ones finish. On a directory that holds no run
    yet, make the run paused: the jobs submitted to it wait for resume."""
    run_dir = chosen_run_dir(context)
    with making_run(run_dir, "nothing was paused") as new_run:
        reply = control_request(context, {"verb": "pause"})
    if new_run is not None and not reply.get("jobs"):  # (said in full: a mistyped --run
        # is seen here, not later)
        click.echo(f"paused a new, empty run at {printable(str(run_dir))}: the jobs "
                   "submitted to it wait until corral resume")
        return
    click.echo("paused" + (" (it already was)" if reply.get("was_paused") else ""))


@cli.command()
@run_option
@click.pass_context
def resume(context: click.Context) -> None:
    """Start jobs again after pause."""
    reply = control_request(context, {"verb": "resume"})
    click.echo("resumed" + (" (it was not paused)" if reply.get("was_paused") is False else ""))


def _traceback_elsewhere(job_id: object, reason: str) -> str:
    """Where the traceback of a call that raised is, when its output has none
    (cold review: `corral logs 7 --stderr` said only that it wrote nothing)."""
    if not reason.startswith("raised "):
        return ""
    return f"; it {reason} (corral status {job_id} shows the traceback)"


#: What a script's run does with jobs cancelled or aborted from outside.
_ENDS_THE_SCRIPT_UNLESS_CAUGHT = (
    "(they end CANCELLED: where the script reads their result() it raises "
    "CancelledError, and unless the script catches it, its run ends there)")


@cli.command()
@run_option
@click.argument("job_id", metavar="[ID]", required=False)
@click.pass_context
def abort(context: click.Context, job_id: str | None) -> None:
    """Stop the running job(s), or the one ID (an id or a name); the queue goes on.
    They get abort_requested() and SIGTERM, then are killed after the grace period.
    They end CANCELLED (one its timeout was already stopping ends TIMED_OUT): in a
    script, their result() raises CancelledError, which ends the script's run unless
    it reads with corral.as_completed and skips them."""
    request: dict[str, Any] = {"verb": "abort"}
    if job_id is not None:
        request["id"] = job_id
    reply = control_request(context, request, start=False)
    if not reply["aborted"]:  # (cold review: "aborting 0 job(s)" read as if it had done so)
        click.echo("no job runs: nothing to abort")
        return
    click.echo(f"aborting {reply['aborted']} job(s)")
    if reply.get("kind") == "script":  # (cold review: one abort ended a night's queue)
        click.echo(_ENDS_THE_SCRIPT_UNLESS_CAUGHT)


@cli.command()
@run_option
@click.pass_context
def clear(context: click.Context) -> None:
    """Cancel every job that has not started."""
    reply = control_request(context, {"verb": "clear"})
    click.echo(f"cleared {reply['cleared']} job(s)")


@cli.command()
@run_option
@click.pass_context
def stop(context: click.Context) -> None:
    """Stop the run's daemon; its unfinished jobs are cancelled."""
    reply = control_request(context, {"verb": "stop"}, start=False)
    unfinished = reply.get("unfinished")  # (a daemon of an earlier version sends none)
    # (cold review: jobs lined up behind a pause were cancelled without a word)
    click.echo("stopping" + (f": cancelling its {unfinished} unfinished job(s)"
                             if unfinished else ""))


@cli.command()
@run_option
@click.option("--yes", "-y", is_flag=True, help="do not ask")
@click.argument("ids", nargs=-1)
@click.pass_context
def clean(context: click.Context, yes: bool, ids: tuple[str, ...]) -> None:
    """Delete the files of finished jobs, or of those of the IDS (ids, ranges such as
    3-7, names) that have finished; their records stay in the journal."""
    from corral.journal.cleaning import clean_jobs, files_to_clean

    run = open_run(context)
    if ids:  # (cold review: a PLAMS user keeps the failed jobs' files, cleans the rest)
        chosen = select_jobs(run, ids)
        finished = [job for job in chosen if job.status in TERMINAL]
        left = [str(job.id) for job in chosen if job.status not in TERMINAL]
        if left:
            click.echo(f"corral: note: left job(s) {first_few(left, 10)}: not finished",
                       err=True)
    else:
        finished = run.jobs("finished", results=False)
    found = files_to_clean(finished, run.path)
    for note in found.notes:
        click.echo(f"corral: note: {printable(note)}", err=True)
    if not found.directories:
        click.echo("nothing to clean")
        return
    count, size = len(found.directories), found.size
    # (cold review: "3 job(s)" of 9 finished read as 6 forgotten)
    others = len(finished) - count
    none_left = f" (the other {others} finished have none)" if others > 0 else ""
    question = (f"delete the files of {count} finished job(s), {size / 1e6:.1f} MB, "
                f"in {run.path}{none_left}?")
    if not yes and not _confirm(question):
        click.echo("nothing deleted")
        return
    try:
        done = clean_jobs(run.path, finished, found)
    except OSError as error:  # a read-only mount, a directory of another mode
        raise CommandError(f"cannot delete anything in {run.path}: "
                           f"{error.strerror or error}", EXIT_UNREACHABLE) from None
    for note in done.notes[len(found.notes):]:  # (what the clean itself found to say)
        click.echo(f"corral: note: {printable(note)}", err=True)
    failures, deleted = done.failures, len(done.jobs)
    click.echo(f"deleted the files of {deleted} job(s), {size / 1e6:.1f} MB{none_left}"
               if not failures else f"deleted the files of {deleted} of {count} job(s)")
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
    except (click.Abort, RuntimeError):  # (RuntimeError: "input(): lost sys.stdin", <&-)
        if sys.stdin is not None and sys.stdin.isatty():
            raise  # Ctrl-C or Ctrl-D at the prompt: the user chose to stop
        click.echo("", err=True)  # end the prompt's line
        raise CommandError("refusing to delete without confirmation: no answer came (its "
                           "input ended; it reads 'y' from a pipe too); pass --yes") from None


@cli.command()
@run_option
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="where to write it (default report.html, or report.svg; - for stdout)")
@click.option("--format", "format_", type=click.Choice(["html", "svg"]), default=None,
              help="html: the whole report (default); svg: the timeline as a picture")
@click.pass_context
def report(context: click.Context, output: Path | None, format_: str | None) -> None:
    """Write the run's report: one HTML file with a summary, the jobs that did not
    complete and a timeline, viewable with no network; or the timeline as SVG."""
    from corral.report import choose_format, report_text, write_report

    run = open_run(context)
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
    if not target.expanduser().is_absolute():
        current_directory(f"-o {target} is written in it; give -o an absolute path")
    if target.parent != Path() and not target.parent.expanduser().is_dir():
        raise CommandError(f"-o {target}: no directory {target.parent}")
    try:
        written = write_report(run, target, chosen)
    except OSError as error:
        raise CommandError(f"-o {target}: cannot write it ({error.strerror or error})") from None
    click.echo(f"wrote {written}")


@cli.command()
@run_option
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

    open_run(context)  # a wrong --run is one line now, not a page that says so
    try:
        from corral.web.app import serve
    except ImportError as error:
        if getattr(error, "name", "") and str(error.name).split(".")[0] == "aiohttp":
            raise CommandError(MISSING_EXTRA) from None
        raise
    state_dir = default_run_dir().parent

    def ready(url: str) -> None:
        click.echo(f"corral dashboard of {chosen_run_dir(context)}\n  {url}\n"
                   "(the token in the URL is the key: share it with no one; Ctrl-C stops)",
                   err=False)
        sys.stdout.flush()

    try:
        terminated = serve(chosen_run_dir(context), state_dir, host=host, port=port, ready=ready)
    except OSError as error:
        raise CommandError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    if terminated:
        raise Terminated


@cli.command(context_settings={"ignore_unknown_options": True})  # (--memory: an option)
@click.option("--backend", "backends", multiple=True, metavar="NAME",
              help="Show only what the options become on this backend (repeatable).")
@click.argument("names", nargs=-1, metavar="[OPTION]...")
def options(backends: tuple[str, ...], names: tuple[str, ...]) -> None:
    """Every job option (or those named: corral options memory walltime): what it
    accepts, its units, default, and what it becomes on each backend."""
    from corral.backends import AUTO, backend_names, resolve_backend
    from corral.cli.backend_views import option_of_flag, options_table
    from corral.cli.config_checks import unknown_backend_said
    from corral.options import JOB_OPTIONS, unknown_option_message

    names = tuple(option_of_flag(name.lstrip("-").replace("-", "_"))  # --memory, --workdir too
                  for name in names)
    for name in names:
        if name == "profile":  # (the API's words for it name a Job made on its own)
            raise CommandError("profile names a set of job options in the config files, not "
                               "an option of its own: corral profiles lists them, corral "
                               "submit --profile NAME uses one", EXIT_USAGE)
        if name not in JOB_OPTIONS:
            raise CommandError(unknown_option_message(name, JOB_OPTIONS), EXIT_USAGE)
    # The table a misspelt profile's user opens to find the right name: shown
    # whatever the config files say, with what is wrong in them (options review).
    problem = register_configured_backends(strict=False)
    for name in backends:
        if name not in backend_names() and name != AUTO:
            # (a scheduler the broken file describes: what is wrong there; a typo:
            # that it is unknown, which the file's mistake hid: attack review)
            raise CommandError(unknown_backend_said(name, _unknown_backend(name), problem))
    if problem is not None:
        click.echo(f"corral: warning: {problem} (fix it; the table leaves out the schedulers "
                   "described there)", err=True)
    # "auto": the backend it chooses here (as Scheduler(backend="auto") would)
    chosen = tuple(dict.fromkeys(resolve_backend(name) if name == AUTO else name
                                 for name in backends))
    make_console().print(options_table(chosen or None, names or None))


@cli.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
def backends(names: tuple[str, ...]) -> None:
    """Every backend (or those NAMEd): whether it answers here and why, what it
    does, its backend options and what each job option becomes there; and the
    one backend="auto" chooses."""
    from concurrent.futures import ThreadPoolExecutor

    from corral.backends import (AUTO, DEFAULT_BACKEND, Probe, auto_order, backend_info,
                                 backend_names, probe_backend)
    from corral.cli.backend_views import backends_view

    register_configured_backends()
    for name in names:
        if name not in backend_names() and name != AUTO:
            raise CommandError(_unknown_backend(name))
    every = auto_order()  # (listed in the order "auto" asks them)
    with ThreadPoolExecutor(max_workers=len(every)) as pool:  # probes wait on commands
        probes = dict(zip(every, pool.map(probe_backend, every), strict=True))
    probes[DEFAULT_BACKEND] = Probe(True, "always: worker processes on this machine; "
                                          f"{AUTO!r} falls back to it")
    auto = next((name for name in every if name != DEFAULT_BACKEND and probes[name].answers
                 and backend_info(name).auto), DEFAULT_BACKEND)
    shown = {name: probes[name]  # ("auto": the backend it chooses)
             for name in dict.fromkeys(auto if name == AUTO else name for name in names or every)}
    make_console().print(backends_view(shown, auto))


def _unknown_backend(name: str) -> str:
    from corral.backends import resolve_backend

    try:
        resolve_backend(name)
    except ValueError as error:
        return str(error)
    return f"unknown backend {name!r}"  # "auto": not a backend of its own


@cli.command()
@run_option
@click.argument("name", required=False)
@click.pass_context
def profiles(context: click.Context, name: str | None) -> None:
    """List the profiles of the config files (the user's, the run directory's
    and this directory's corral.toml), or show profile NAME."""
    from corral.cli.views import profiles_view
    from corral.config import load_config

    try:
        config = load_config(run_dir=chosen_run_dir(context))
        chosen = None if name is None else {name: config.profile(name)}
    except ValueError as error:
        raise CommandError(str(error)) from None
    make_console().print(profiles_view(config, chosen))


# -- entry point ----------------------------------------------------------------------------


def _fail(message: str, status: int) -> NoReturn:
    # (Escaped here, whatever it quotes: a config key, a file name, a scheduler's words.)
    # A wait that ran out, a Ctrl-C or a SIGTERM of the command is no error: the
    # run goes on, and the line says so without the word (cold review).
    label = "" if status in _ENDINGS_NOT_ERRORS else "error: "
    click.echo(f"corral: {label}{printable(message)}", err=True)
    sys.exit(status)


#: The exit statuses of a command stopped, not failed (see :func:`_fail`).
_ENDINGS_NOT_ERRORS = frozenset({EXIT_TIMED_OUT, EXIT_INTERRUPTED, EXIT_TERMINATED})


def _os_error_text(error: OSError) -> str:
    """``<file>: <why>`` rather than Python's ``[Errno 36] ...`` form."""
    if not error.strerror:
        return str(error)
    if error.filename is None:  # (its output, written to a full disk: /dev/full)
        return error.strerror
    return f"{error.filename}: {error.strerror}"


#: Job options of Python's that ``corral submit`` takes from the terminal
#: instead of a flag: what to do instead (cold review: ``--env`` was answered
#: "did you mean --env?").
_NO_SUBMIT_FLAG = {
    "env": "the job gets this terminal's environment; set a variable in the command "
           "itself (corral submit -- env NAME=value program ...), or export it first",
    "cwd": "the directory a job runs in is --workdir DIR (else this terminal's directory)",
}


def _no_such_option(error: click.NoSuchOption) -> str:
    """Click's words for an unknown flag, or ours where the flag is another
    tool's name for a job option (``--cpus``: click offers ``--gpus`` too)."""
    where = f"corral {error.ctx.info_name}" if error.ctx is not None else "corral"
    typed = error.option_name.lstrip("-").replace("-", "_")
    if where == "corral submit" and typed in _NO_SUBMIT_FLAG:
        return f"no such option {error.option_name}: {_NO_SUBMIT_FLAG[typed]}"
    hint = (peers_word_hint(typed, flags=True)
            if where == "corral submit" else None)
    if hint is None:
        import difflib  # (only a mistyped option pays its import)

        if where == "corral submit" and not difflib.get_close_matches(
                typed, [name.lstrip("-") for name in error.possibilities or []], cutoff=0.75):
            # (no typo of one of ours: cold review, `corral submit --lr 0.2 -- python train.py`)
            return (f"{' '.join(error.format_message().split())} (see '{where} --help'); the "
                    "command's own options go after it: corral submit [OPTIONS] -- COMMAND "
                    "[ITS OPTIONS]")
        return f"{' '.join(error.format_message().split())} (see '{where} --help')"
    return (f"no such option {error.option_name}; "
            + re.sub(r"'(\w+)'", lambda found: ("--" + found[1].replace("_", "-")
                                               if found[1] in JOB_OPTIONS else found[1]), hint))


def main(argv: list[str] | None = None) -> None:
    """Run the command; every error becomes one line and an exit status.

    Its output may go anywhere, closed and gone too (:mod:`corral.cli.streams`):
    a reader that went away ends it quietly, with :data:`EXIT_BROKEN_PIPE`.
    """
    guard_standard_streams()  # (before anything opens a file that could take fd 1 or 2)
    ours = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # (a program's own is kept)
    if ours:
        signal.signal(signal.SIGTERM, raise_terminated)
    try:
        try:
            _run_command(argv)
        finally:  # (what is left in the buffers fails here, where it can be said)
            flush_output()
            if ours:  # (main() called in a program's process: its default again)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ReaderGone:
        _end_reader_gone()
    except OSError as error:  # the last of its output, on a full disk or to a reader gone
        if reader_gone(error):  # (or written outside the commands: corral | head -0)
            _end_reader_gone()
        drop_unwritten_output(1)
        _fail(_os_error_text(error), EXIT_UNREACHABLE)


def _end_reader_gone() -> NoReturn:
    """End without a word (whom to say it to?), as ``ls | head -1`` does."""
    drop_unwritten_output(1, 2)
    sys.exit(EXIT_BROKEN_PIPE)


def _run_command(argv: list[str] | None) -> NoReturn:
    """:func:`main`, its output aside."""
    try:  # (a Ctrl-C from the first moment is one line too: attack review)
        from corral.runtime.tempdirs import remove_dead_owners_tempdirs

        remove_dead_owners_tempdirs()  # what drivers killed with SIGKILL left in /tmp
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
    except Terminated:
        _fail(TERMINATED, EXIT_TERMINATED)
    except click.ClickException as error:
        _fail(error.format_message(), error.exit_code)
    except CommandError as error:
        _fail(str(error), error.status)
    except OSError as error:  # (one the command did not word itself: its file and why)
        if error.filename is None:  # its output could not be written: what is left of it
            drop_unwritten_output(1)  # would fail again as Python exits, and exit 120
        _fail(_os_error_text(error), EXIT_UNREACHABLE)
    except CorralError as error:
        _fail(str(error), EXIT_UNREACHABLE)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
