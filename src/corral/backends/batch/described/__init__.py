"""A batch scheduler described in settings: a ``[schedulers.NAME]`` table of a
``corral.toml`` becomes the backend ``NAME``, on the same batch base as Slurm
(arrays, bundles, reattach, pause/resume, the CLI with no driver).

A site whose scheduler is not built in, or that wraps one in its own commands,
writes what corral needs to know as a table; ``Scheduler(backend="NAME")``,
``[daemon] backend = "NAME"`` and ``backend="auto"`` then use it. An example, the
fake PBS-like scheduler the tests ship::

    [schedulers.fakeq]
    title = "fakeq"                                # in messages and `corral status`
    submit = ["qsub", "-o", "{output}"]            # {name} {output} {script}
    job_id = '^(\\d+)'                             # one group: the id in qsub's output
    status = ["qstat", "-u", "{user}", "-F", "text"]      # one query for all jobs
    status_columns = ["id", "state", "exit_status", "signal", "reason"]
    status_skip = 1                                # header lines
    states = { Q = "pending", H = "held", R = "running", F = "ended",
               W = "timed_out", D = "cancelled" }
    cancel = ["qdel", "{ids}"]
    hold = ["qhold", "{ids}"]                      # hold and release: pause/resume
    release = ["qrls", "{ids}"]
    signal = ["qsig", "-s", "USR1", "{ids}"]       # abort (else only the cancel after it)
    directive_prefix = "#PBS"                      # directives go in the script's header
    memory_unit = "MB"
    walltime_format = "seconds"
    dependency = ["-W", "depend=afterok:{ids}"]    # ids joined by dependency_separator
    job_id_variable = "FAKEBATCH_JOBID"
    failed_exit_status = 1
    forget_after = "3s"                            # how long qstat lists ended jobs

    [schedulers.fakeq.directives]
    cores = ["-l", "ncpus={cores}"]
    memory = ["-l", "mem={memory}"]
    walltime = ["-l", "walltime={walltime}"]
    name = ["-N", "{name}"]

    [schedulers.fakeq.array]
    argument = ["-t", "{first}-{last}{throttle}"]  # {first} {last} {size} {throttle}
    throttle = "%{limit}"
    index_variable = "FAKEBATCH_ARRAY_INDEX"
    first_index = 1
    task_id = "{job}_{index}"                      # how the status query spells a task

The keys:

* Commands are lists of strings (never a shell) with placeholders in ``{}``
  (``{{`` for a brace; a placeholder is bare, ``{ids}``: a conversion or format
  spec such as ``{ids:d}`` or ``{output!r}`` is refused): ``submit`` (``{name}``,
  ``{output}``, ``{script}``; the script goes last unless placed), ``status``
  (``{user}``), ``cancel``, ``hold``, ``release``, ``signal`` and ``accounting``
  (``{ids}``: alone in an element one argument per id, else the ids joined by
  ``ids_separator``, default ``,``).
  Required: ``submit``, ``job_id``, ``status``, ``states``, ``cancel``,
  ``job_id_variable``.
* Reading the status (and ``accounting``) output: ``status_columns`` names its
  whitespace-separated columns in order (``id``, ``state``, ``reason``,
  ``exit_status``, ``signal``, ``-`` for one not read; the last takes the rest
  of the line), or ``status_regex`` has the same names as groups; ``status_skip``
  header lines are skipped; ``-`` or nothing means no value; ``exit_status`` and
  ``signal`` are read where they are ``-?[0-9]{1,9}`` (else no value, logged).
  ``accounting_*`` default to the ``status_*`` keys. With no jobs the command
  prints nothing or its header; other output with no row (lines after the
  header, fewer lines than ``status_skip``, a header line that reads as a job
  of a known state) is an answer corral cannot read, never "no jobs". The regex
  runs on every line of every poll, in the control loop: keep it linear (no
  nested repeats such as ``(a+)+``, which can take forever on a line it does
  not match); corral cannot time it out.
* ``states`` maps each state word to ``pending``, ``held``, ``running``,
  ``completed``, ``failed``, ``cancelled``, ``timed_out`` or ``ended`` (completed or
  failed, as the exit status and signal say). A word not in it is logged and
  polled again, never an error. ``never_starts`` maps a pending reason to
  ``dependency`` (a parent failed: the job ends CANCELLED) or ``impossible``.
* Resources: ``directives`` gives per resource (``cores``, ``memory`` in
  ``memory_unit`` KB/MB/GB, ``walltime`` in ``walltime_format`` seconds/minutes/
  hh:mm:ss, ``gpus``, ``partition``, ``account``, ``qos``, ``constraint``,
  ``name``) the arguments that ask for it, with the resource's placeholder. With
  ``directive_prefix`` (a comment to the shell: it begins with ``#``) they are
  lines of the script's header, else arguments of the submit command. A resource
  with no directive is not sent; with no ``walltime`` directive corral ends a job
  at its walltime itself.
* ``array = false`` (the default): one submission per job. Else a table:
  ``argument`` (with ``{last}`` or ``{size}``; ``{throttle}`` joined to another
  piece, as it is empty when no throttle is asked), ``index_variable`` (set in
  each task, unset outside arrays), ``first_index`` (default 1), ``task_id``
  (with ``{job}`` and ``{index}``, default ``{job}_{index}``), ``max_size`` (default 1000),
  ``throttle`` (``{limit}``; without it ``array_throttle`` is not applied) and
  ``job_id_variable`` (the array's id, default the job's).
* ``dependency``: the submit arguments that make a job wait for others to end
  well (``{ids}`` joined by ``dependency_separator``, default ``:``, also where it
  stands alone: ``["-hold_jid", "{ids}"]`` gives ``-hold_jid 7,8``). Without it a
  child waits in corral for its parents and is submitted once they completed.
* ``job_id_variable``/``restart_count_variable``: the variables the scheduler sets
  in a job; ``failed_exit_status`` (default 1): the batch job's exit status when a
  job in it failed; ``forget_after`` (default 5 minutes): how long the status query
  still lists an ended job. A status command that drops a job as soon as it ends
  wants it short (``"10s"``): a job the scheduler killed, which wrote no result,
  reads as running until then (one that wrote its result is decided at once).
* ``cancel_ended_words``: more words (any case) by which the cancel command says
  that a job had ended already (``["already gone"]``), besides the built-in
  schedulers' ("has finished", "does not exist", "unknown job id", ...): such an
  answer is no refusal.
* Placeholders of resources are numbers alone, without a unit: ``{memory}`` in
  ``memory_unit``, ``{walltime}`` as ``walltime_format`` says, ``{cores}`` and
  ``{gpus}`` counts. Every command runs with the driver's environment.
* ``commands_in_job_group`` (default false): true where the scheduler ends and
  suspends a job by signalling its process group, with no SIGTERM first (Grid
  Engine's ``qdel`` and suspend). A job's command then runs in that group: in a
  session of its own, as elsewhere, the SIGKILL would leave it running.

This package is light: the table is checked here (:func:`describe`); the
scheduler's code is imported when a backend is made.
"""

from __future__ import annotations

import getpass
import itertools
from collections.abc import Mapping
from typing import Any

from corral.backends.info import BackendInfo, Capabilities, Probe, option_help
from corral.backends.batch import probing
from corral.backends.batch.described.table import Table, TableError, parse_table, render
from corral.backends.batch.settings import options_help

__all__ = ["describe", "table_of", "table_for_key", "TableError", "Table"]

_MODULE = "corral.backends.batch.described.backend"
_tables: dict[str, Table] = {}
_keys = itertools.count(1)


def describe(name: str, raw: Mapping[str, Any]) -> BackendInfo:
    """The backend the table *raw* describes, called *name*; not registered
    (:func:`corral.backends.register_backend` does that).

    Raises:
        TableError: the table is wrong; its ``key`` says where.
    """
    table = parse_table(name, raw)
    key = f"{name}_{next(_keys)}"
    _tables[key] = table
    hold = table.hold is not None
    return BackendInfo(
        name=name, title=table.title, description=table.description,
        capabilities=Capabilities(outlives_driver=True,
                                  chains_dependencies=table.dependency is not None, holds=hold,
                                  enforces_walltime="walltime" in table.directives,
                                  packs_locally=False),
        factory=f"{_MODULE}:backend_{key}", option_help=_option_help(table),
        answers=lambda: _answers(table), backend_options=options_help(),
        driverless_control=f"{_MODULE}:control_{key}",
        placement_hint=(f"to send it, add a line for {{option}} to [schedulers.{table.name}."
                        "directives] in the config"))


def table_for_key(key: str) -> Table:
    """The table :func:`describe` kept under *key* (named in a BackendInfo's factory).

    Raises:
        AttributeError: no table has that key in this process.
    """
    try:
        return _tables[key]
    except KeyError:
        raise AttributeError(f"no scheduler described in settings has the key {key!r}") \
            from None


def table_of(info: BackendInfo) -> Table | None:
    """The table *info* was described from, or None for any other backend."""
    module, _, target = info.factory.partition(":")
    return _tables.get(target.removeprefix("backend_")) if module == _MODULE else None


def _answers(table: Table, timeout: float = 5.0) -> Probe:
    """Whether the table's status command answers with exit status 0 within
    *timeout*, and prints what the table says it does: output its columns or
    regex cannot read, and state words missing from its ``states``, are said
    here, where a person setting the table up looks (else they showed first as
    a run whose polls failed, or jobs waited on for ever)."""
    from corral.backends.batch.described.scheduler import status_rows

    argv = [render(part, {"user": getpass.getuser()}, f"schedulers.{table.name}.status")
            for part in table.status]
    # (the submit and cancel commands too: cold review, a typo in one showed only
    # when the first job failed)
    if (absent := probing.missing(argv[0], table.submit[0], table.cancel[0])) is not None:
        return absent
    done = probing.answered(argv, timeout)
    if isinstance(done, Probe):
        return done
    asked, where = " ".join(argv), f"[schedulers.{table.name}] of the settings"
    try:
        rows = status_rows(table, done.stdout, argv[0])
    except ValueError as error:
        return Probe(False, f"{asked} answered, but {error}: see status_columns (or "
                            f"status_regex) and status_skip in {where}")
    unknown = sorted({row.state for row in rows.values()} - set(table.states))
    if unknown:
        words = ", ".join(repr(word) for word in unknown)
        return Probe(True, f"{asked} answered, listing {len(rows)} job(s), but the state "
                           f"word(s) {words} are not in the states of {where}: jobs in them "
                           "are waited on as they were" + _hints(unknown, table))
    return Probe(True, f"{asked} answered ({where})")


def _hints(unknown: list[str], table: Table) -> str:
    """What may be wrong where state words are not in the table (cold review: a
    separator line read as a job, and words in another case, left a person to
    guess): the words as the table spells them, and a header line read as a job."""
    spelled = {word.lower(): word for word in table.states}
    hints = [f"{word!r} is {spelled[word.lower()]!r} in states (state words match as "
             "written)" for word in unknown if word.lower() in spelled]
    headings = {"state", "st", "status", *(table.status_parser.columns or ())}
    if any(word.lower() in headings or not any(character.isalnum() for character in word)
           for word in unknown):  # (a column's heading, or a line of dashes)
        hints.append(f"a line of the header read as a job? (status_skip = "
                     f"{table.status_parser.skip})")
    return "".join(f"; {hint}" for hint in hints)


def _value_shown(resource: str, table: Table) -> str:
    """What fills a directive's placeholder, in the words of the built-in
    schedulers' rows (``--mem=<MB>M``): a raw ``{memory}`` left the user to
    guess its unit (a sysadmin's review)."""
    if resource == "memory":
        return f"<{table.memory_unit}, rounded up>" if table.memory_unit != "MB" else "<MB>"
    if resource == "walltime":
        return {"minutes": "<minutes, rounded up>", "hh:mm:ss": "<hh:mm:ss>"}.get(
            table.walltime_format, "<seconds, rounded up>")
    if resource in ("cores", "gpus"):
        return "N"
    return f"<{resource}>"


def _option_help(table: Table) -> Mapping[str, str]:
    where = f" in the script header ({table.directive_prefix})" if table.directive_prefix \
        else ""
    sent = {resource: " ".join(piece.replace(f"{{{resource}}}", _value_shown(resource, table))
                               for piece in pieces) + where
            for resource, pieces in table.directives.items()}
    if "walltime" not in sent:
        sent["walltime"] = "not sent: corral ends the job at it"
    submit, array = table.submit[0], table.array is not None
    own = {
        **sent,
        "after": (" ".join(table.dependency).replace(
            "{ids}", f"<parents' ids, joined by {table.dependency_separator!r}>")
            + " while the parent is surely known"
                  if table.dependency else "the child waits in corral, then goes out"),
        "priority": "order of submission",
        "retries": f"a new {submit} per retry",
        "timeout": f"{table.cancel[0]} after it",
        "cwd": "corral's runtime changes to it",
        "env": "set by corral's runtime",
        "setup": "lines of the batch script",
        "extra_flags": f"added to {submit}",
        "python": "runs corral's runtime in the batch script",
        "bundle": "one array task runs them in turn" if array
        else "one batch job runs them in turn",
    }
    unused = [option for option in ("cores", "memory", "gpus", "partition", "account", "qos",
                                    "constraint", "name") if option not in own]
    return option_help(own, not_used=unused) if unused else option_help(own)



