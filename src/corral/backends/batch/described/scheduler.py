"""The pieces of a scheduler described in settings: :class:`DescribedScheduler`
fills the argv templates of its :class:`~corral.backends.batch.described.table.Table`,
reads the status output by the table's columns or regex, and maps the state words
through the table's ``states``. Pure, like every scheduler's pieces: the batch
base runs the commands."""

from __future__ import annotations

import logging
import math
import re
import shlex
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from corral.backends.batch.described.table import (MEMORY_UNITS, Parser, StateWord, Table,
                                                   fields_of, render)
from corral.backends.batch.scheduler import (BatchScheduler, ClusterLimits, Meaning, NativeRow,
                                             NeverKind, NeverStarts, SubmitRequest)
from corral.backends.batch.taskfiles import printable
from corral.errors import BackendError
from corral.spec import Resources
from corral.status import JobStatus

__all__ = ["DescribedScheduler", "scheduler_class", "status_rows"]

log = logging.getLogger(__name__)
_NUMBER = re.compile("-?[0-9]{1,9}")

_ACTIVE = {StateWord.PENDING: JobStatus.SUBMITTED, StateWord.HELD: JobStatus.SUBMITTED,
           StateWord.RUNNING: JobStatus.RUNNING, StateWord.COMPLETED: JobStatus.COMPLETED}
#: Variables no scheduler sets: what the script exports where the table names none.
_UNSET = "CORRAL_NOT_SET_BY_THE_SCHEDULER"


class DescribedScheduler(BatchScheduler):
    """A scheduler whose commands and words come from a ``[schedulers.NAME]`` table:
    one subclass per table (:func:`scheduler_class`)."""

    table: ClassVar[Table]
    template: ClassVar[Path] = Path(__file__).with_name("job.sh.template")
    #: Its script depends on its table: pinned by the tests of the described scheduler.
    golden: ClassVar[bool] = False
    #: (program, column) whose numbers could not be read, logged already (one set per table).
    odd_numbers: ClassVar[set[tuple[str, str]]]

    # -- submitting ------------------------------------------------------------------------

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        table = self.table
        extra: list[str] = []
        if table.directive_prefix is None:
            extra += [piece for pieces in self._directives(request) for piece in pieces]
        if request.array_size is not None and table.array is not None:
            last = table.array.first_index + request.array_size - 1
            limit = "" if request.throttle is None or table.array.throttle is None \
                else render(table.array.throttle, {"limit": request.throttle},
                            self._key("array", "throttle"))
            values = {"first": table.array.first_index, "last": last,
                      "size": request.array_size, "throttle": limit}
            extra += [render(part, values, self._key("array", "argument"))
                      for part in table.array.argument]
        if request.dependencies:
            extra += _with_ids(table.dependency or (), request.dependencies,
                               table.dependency_separator, self._key("dependency"),
                               one_per_id=False)
        extra += request.placement.extra_flags
        placed = [i for i, part in enumerate(table.submit) if "script" in fields_of(part)]
        submit = table.submit if placed else (*table.submit, "{script}")
        at = placed[0] if placed else len(table.submit)
        values = {"name": request.name, "output": request.output, "script": request.script}
        argv = [render(part, values, self._key("submit")) for part in submit]
        return [*argv[:at], *extra, *argv[at:]]

    def _key(self, *key: str) -> str:
        """Where a template is in the config files, for an error filling it."""
        return ".".join(("schedulers", self.table.name, *key))

    def request_problem(self, resources: Resources) -> str | None:
        """A job asking for cores, GPUs or memory that the table has no
        directive to ask for ran without them, dropped without a word (attack
        review)."""
        for resource, asked, what in (("cores", resources.cores > 1, f"{resources.cores} cores"),
                                      ("gpus", resources.gpus, f"{resources.gpus} GPUs"),
                                      ("memory", resources.memory_mb,
                                       f"{resources.memory_mb} MB of memory")):
            if asked and resource not in self.table.directives:
                return (f"asks for {what}, but [schedulers.{self.table.name}] has no "
                        f"{resource} directive to ask {self.table.title} for it; add one to "
                        f"[schedulers.{self.table.name}.directives], or leave {resource} out")
        return None

    def _directives(self, request: SubmitRequest) -> list[list[str]]:
        """Each resource directive the request sets, filled in."""
        resources, placement, table = request.resources, request.placement, self.table
        values: dict[str, object] = {"cores": resources.cores, "name": request.name,
                                     "partition": placement.partition,
                                     "account": placement.account, "qos": placement.qos,
                                     "constraint": placement.constraint,
                                     "gpus": resources.gpus or None}
        if resources.memory_mb is not None:
            values["memory"] = math.ceil(resources.memory_mb / MEMORY_UNITS[table.memory_unit])
        if request.time_limit_s is not None:
            values["walltime"] = _walltime(request.time_limit_s, table.walltime_format)
        return [[render(part, {resource: values[resource]}, self._key("directives", resource))
                 for part in pieces]
                for resource, pieces in table.directives.items()
                if values.get(resource) is not None]

    def parse_submit(self, stdout: str) -> str:
        found = self.table.job_id.search(stdout)
        if found is None or not found.group(1):
            raise ValueError(f"{self.table.submit[0]} printed no job id that job_id "
                             f"{self.table.job_id.pattern!r} finds: {stdout.strip()[:200]!r}")
        return found.group(1)

    def array_task_id(self, job_id: str, index: int) -> str:
        form = self.table.array.task_id if self.table.array else "{job}_{index}"
        return render(form, {"job": job_id, "index": index}, self._key("array", "task_id"))

    def granted_time_s(self, seconds: float) -> float:
        if self.table.walltime_format == "minutes":
            return 60.0 * max(1, math.ceil(seconds / 60))
        return float(math.ceil(seconds))

    def script_template(self, request: SubmitRequest | None) -> str:
        """The template with the table's variables, and the request's directives in
        its header when the table has a ``directive_prefix``."""
        table, array = self.table, self.table.array
        header = ""
        if table.directive_prefix is not None and request is not None:
            header = "".join(f"{table.directive_prefix} "
                             f"{' '.join(shlex.quote(printable(p)) for p in pieces)}\n"
                             for pieces in self._directives(request)).replace("$", "$$")
        return _TableTemplate(self.template.read_text()).substitute(
            directives=header, name=table.name,
            title=printable(table.title).replace("$", "$$"),
            job_id_variable=table.job_id_variable,
            array_job_id_variable=(array and array.job_id_variable) or table.job_id_variable,
            index_variable=array.index_variable if array else _UNSET,
            restart_count_variable=table.restart_count_variable or _UNSET,
            commands_in_job_group=int(table.commands_in_job_group))

    # -- watching --------------------------------------------------------------------------

    def status_argv(self, user: str) -> list[str]:
        return [render(part, {"user": user}, self._key("status")) for part in self.table.status]

    def parse_status(self, stdout: str) -> dict[str, NativeRow]:
        return _rows(self.table.status_parser, stdout, self.table.status[0], self.table.states,
                     "status_skip", self.odd_numbers)

    def accounting_argv(self, native_ids: Sequence[str]) -> list[str] | None:
        if self.table.accounting is None:
            return None
        return _with_ids(self.table.accounting, native_ids, self.table.ids_separator,
                         self._key("accounting"))

    def parse_accounting(self, stdout: str) -> dict[str, NativeRow]:
        program = self.table.accounting[0] if self.table.accounting else "accounting"
        return _rows(self.table.accounting_parser, stdout, program, self.table.states,
                     "accounting_skip", self.odd_numbers)

    # -- meaning ---------------------------------------------------------------------------

    def meaning(self, row: NativeRow) -> Meaning | None:
        word = self.table.states.get(row.state)
        if word is None:
            return None
        if word in _ACTIVE:
            return _ACTIVE[word], ""
        said = f"{self.title} state {row.state}" + (f", {row.reason}" if row.reason else "")
        if word is StateWord.CANCELLED:
            return JobStatus.CANCELLED, f"cancelled in {self.title} ({said})"
        if word is StateWord.TIMED_OUT:
            return JobStatus.TIMED_OUT, f"ran past its walltime ({said})"
        if word is StateWord.ENDED and not row.signal and row.exit_status in (0, None):
            return JobStatus.COMPLETED, ""
        if row.signal:
            return JobStatus.FAILED, f"killed by signal {row.signal} ({said})"
        if row.exit_status:
            return JobStatus.FAILED, f"exit status {row.exit_status} ({said})"
        return JobStatus.FAILED, f"failed ({said})"

    def never_starts(self, row: NativeRow) -> NeverStarts | None:
        kind = self.table.never_starts.get(row.reason)
        if kind == "dependency":
            return NeverStarts(NeverKind.DEPENDENCY_FAILED, "a job it depends on failed")
        if kind == "impossible":
            return NeverStarts(NeverKind.IMPOSSIBLE, f"{self.title} says {row.reason}")
        return None

    def is_pending(self, row: NativeRow) -> bool:
        return self.table.states.get(row.state) in (StateWord.PENDING, StateWord.HELD)

    def is_held(self, row: NativeRow) -> bool:
        return self.table.states.get(row.state) is StateWord.HELD

    # -- control ---------------------------------------------------------------------------

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        return _with_ids(self.table.cancel, native_ids, self.table.ids_separator,
                         self._key("cancel"))

    def signal_argv(self, native_ids: Sequence[str]) -> list[str]:
        return self._optional("signal", native_ids)

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        return self._optional("hold", native_ids)

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return self._optional("release", native_ids)

    def _optional(self, command: str, native_ids: Sequence[str]) -> list[str]:
        argv = getattr(self.table, command)
        if argv is None:
            raise BackendError(f"[schedulers.{self.name}] has no {command} command")
        return _with_ids(argv, native_ids, self.table.ids_separator, self._key(command))


def scheduler_class(table: Table) -> type[DescribedScheduler]:
    """The scheduler of *table*: a subclass whose class attributes come from it."""
    array = table.array
    return type(f"DescribedScheduler_{table.name}", (DescribedScheduler,), {
        "table": table, "name": table.name, "title": table.title, "golden": False,
        "odd_numbers": set(),
        "array_index_base": array.first_index if array else 0,
        "failed_exit_status": table.failed_exit_status,
        "default_limits": ClusterLimits(array.max_size if array else 1, table.forget_after_s,
                                        table.accounting is not None),
        "forgotten_words": f"no longer listed by {table.status[0]} once it ended",
        "already_ended_signs": (*DescribedScheduler.already_ended_signs,
                                *table.cancel_ended_words)})


class _TableTemplate(string.Template):
    """The first pass over the template file: the table's parts, written ``@{...}``
    (``${...}`` is left for the base's pass)."""

    delimiter = "@"


def _walltime(seconds: float, form: str) -> str:
    if form == "minutes":
        return str(max(1, math.ceil(seconds / 60)))
    whole = math.ceil(seconds)
    if form == "hh:mm:ss":
        return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
    return str(whole)


def _with_ids(argv: Sequence[str], native_ids: Sequence[str], separator: str,
              where: str, one_per_id: bool = True) -> list[str]:
    """*argv* with ``{ids}``: an element that is just ``{ids}`` becomes one argument
    per id (with *one_per_id*: a cancel or status command's list); in a longer
    element, or without *one_per_id*, the ids are joined by *separator*
    (``-hold_jid {ids}`` is one argument: cold review, it became ``-hold_jid 1 2``)."""
    filled: list[str] = []
    for part in argv:
        if part == "{ids}" and one_per_id:
            filled += native_ids
        else:
            filled.append(render(part, {"ids": separator.join(native_ids)}, where))
    return filled


def status_rows(table: Table, stdout: str, program: str) -> dict[str, NativeRow]:
    """The rows of the status command's *stdout*, read as *table* says (for its probe).

    Raises:
        ValueError: as :func:`_rows`.
    """
    return _rows(table.status_parser, stdout, program, table.states, "status_skip", set())


def _rows(parser: Parser, stdout: str, program: str, states: Mapping[str, StateWord],
          skip_key: str, logged: set[tuple[str, str]]) -> dict[str, NativeRow]:
    """Rows by native id; lines that cannot be read are skipped, and so is a
    number that is not ``-?[0-9]{1,9}`` (logged once; read as no value).

    Raises:
        ValueError: output that is not what the table describes, which read as
            "no jobs" would end every job early: lines after the header but not
            one row (a banner, a changed format); fewer lines than the header and
            no row; or a header line that reads as a job (*skip_key* too large).
    """
    lines = stdout.rstrip().splitlines()
    for line in lines[:parser.skip]:
        fields = _fields(parser, line)
        if fields.get("state") in states and re.search("[0-9]", fields.get("id", "")):
            raise ValueError(f"{program} printed {line.strip()[:200]!r}, which reads as a job, "
                             f"but {skip_key} = {parser.skip} skips it as a header line")
    rows, unreadable = {}, []
    for line in lines[parser.skip:]:
        if not line.strip():
            continue
        fields = _fields(parser, line)
        if not fields.get("id") or not fields.get("state"):
            unreadable.append(line)
            continue
        rows[fields["id"]] = NativeRow(fields["id"], fields["state"], fields.get("reason", ""),
                                       _number(fields.get("exit_status"), program, "exit_status",
                                               logged),
                                       _number(fields.get("signal"), program, "signal", logged)
                                       or None)
    if unreadable and not rows:
        raise ValueError(f"{program} printed no row corral can read: {unreadable[0][:200]!r}")
    if not rows and len(lines) < parser.skip and any(line.strip() for line in lines):
        raise ValueError(f"{program} printed {len(lines)} line(s) and no row, fewer than the "
                         f"{parser.skip} header lines of {skip_key}: "
                         f"{next(line for line in lines if line.strip())[:200]!r}")
    return rows


def _fields(parser: Parser, line: str) -> dict[str, str]:
    if parser.regex is not None:
        found = parser.regex.search(line)
        values = found.groupdict() if found else {}
    else:
        columns = parser.columns or ()
        values = dict(zip(columns, line.split(None, len(columns) - 1), strict=False))
    return {name: value.strip() for name, value in values.items()
            if value is not None and value.strip() not in ("", "-")}


def _number(text: str | None, program: str, column: str,
            logged: set[tuple[str, str]]) -> int | None:
    """*text* as an int when it is ``-?[0-9]{1,9}``, else None (logged once per column)."""
    if text is None:
        return None
    if _NUMBER.fullmatch(text):
        return int(text)
    if (program, column) not in logged:
        logged.add((program, column))
        log.warning("%s printed %r as %s, not a number corral reads (-?[0-9]{1,9}): read as "
                    "no value (said once)", program, text[:40], column)
    return None
