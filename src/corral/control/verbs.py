"""What each control request does to the Scheduler that drives a run.

Requests arrive from :mod:`corral.control.server` as plain dicts. A job that is not
in the driver's memory any more (it finished in an earlier session) is looked
up in the journal, so that ``corral cancel 3`` on a finished job says that it
finished instead of "unknown job".
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Container, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from corral.control.server import Stopping
from corral.journal.files import STOP_ASKED_FILE
from corral.errors import CorralError
from corral.job_refs import ambiguous_name, jobs_called
from corral.spec import Shell
from corral.status import ACTIVE, TERMINAL, JobStatus, upstream_reason

if TYPE_CHECKING:
    from corral.core.job import Job
    from corral.spec import Task

__all__ = ["handle", "VERBS", "Driver"]


class Driver(Protocol):
    """What the verbs need of the :class:`corral.Scheduler` that drives the run.

    A protocol, not an import: the Scheduler starts the control server and
    hands it ``handle`` bound to itself, so control imports nothing of it.
    """

    _owner_kind: str
    _stop_requested: threading.Event | None
    #: The daemon's: reads its config files again if they changed, before a
    #: submission; returns a note for the submitter (see corral.cli.daemon_settings).
    _settings_check: Callable[[], str | None] | None
    _shut: bool     # shut down: it takes no more jobs
    #: Whether a pause request was served: a command that made the run and
    #: failed then leaves it (see _stop).
    _paused_by_request: bool
    _journal: Any   # its Journal (run_dir)
    _engine: Any    # its Engine (unfinished)

    @property
    def paused(self) -> bool: ...

    def _lookup(self, job_id: object) -> Job | None: ...

    def _flush_journal_now(self) -> None: ...

    def _submit_from_outside(self, task: Task, options: dict[str, Any],
                             doomed: str | None = None,
                             ended_deps: tuple[int | str, ...] = ()) -> Job: ...

    def _check_from_outside(self, task: Task, options: dict[str, Any], waits: bool) -> None: ...

    def _ended_as(self, job_id: int | str, name: str) -> JobStatus | None: ...

    def _placement_unused(self, options: dict[str, Any]) -> str | None: ...

    def jobs(self, status: JobStatus | str | None = None) -> list[Job]: ...

    def dispatch(self, jobs: Job | Iterable[Job]) -> list[Job]: ...

    def pause(self) -> None: ...

    def _pause_by_person(self) -> None: ...

    def _resume_by_person(self) -> None: ...

    def qsize(self, status: JobStatus | str | None = None) -> int: ...

    def abort(self, job: Job | int | str | None = None) -> int: ...

    def clear(self) -> int: ...


def _ping(scheduler: Driver, request: dict[str, Any]) -> dict[str, Any]:
    return {"pid": os.getpid(), "kind": scheduler._owner_kind, "paused": scheduler.paused,
            "unfinished": scheduler._engine.unfinished}


def _live_or_stored(scheduler: Driver, job_id: Any):
    """(live Job, None) or (None, the journal's record); CorralError if unknown."""
    job = scheduler._lookup(job_id)
    if job is not None:
        return job, None
    from corral.journal.run import Run

    try:
        return None, Run(scheduler._journal.run_dir).job(job_id)  # (not its workdir)
    except KeyError:
        raise CorralError(f"no job {job_id} in this run") from None


def ended_message(job_id: Any, status: JobStatus) -> str:
    """Why a job that is not unfinished cannot be cancelled (nor waited after)."""
    if status in TERMINAL:
        return f"job {job_id} already ended {status.name}"
    return (f"job {job_id} is {status.name} in the journal but no longer held by the process "
            "that drives the run")


def _id_or_name(scheduler: Driver, given: Any) -> Any:
    """The id of the job *given* names: a job id, else the name of exactly one
    job of the run. An id wins over a name that looks like one.

    Raises:
        CorralError: no job has that id or name, or several have the name.
    """
    if scheduler._lookup(given) is not None:
        return given
    from corral.journal.run import Run

    run = Run(scheduler._journal.run_dir)
    return id_or_name(given, [*run.jobs(results=False), *scheduler.jobs()], run.reruns())


def range_hint(refs: Iterable[Any]) -> str:
    """What a command that takes ranges adds where *refs* named no job and one
    of them is a range with an end left out (``3-``, ``-7``): that a range
    needs both (cold review: ``corral cancel 1-`` said only that there was no
    job "1-"). Not said by one that takes one job: it would be told a range."""
    if any(_HALF_RANGE.fullmatch(str(ref)) for ref in refs):
        return "; a range of ids needs both ends, as in 3-7"
    return ""


_HALF_RANGE = re.compile(r"\d+-|-\d+")


def _is_a_range(given: Any) -> bool:
    """Whether *given*, which named no job, is a range of ids (``3-7``): said
    to commands that take one job (abort, --after) rather than "no job 3-7"."""
    return isinstance(given, str) and _RANGE.fullmatch(given) is not None


_RANGE = re.compile(r"\s*\d+\s*-\s*\d+\s*")


class AmbiguousName(CorralError):
    """Several jobs have the name given for one."""


def id_or_name(given: Any, jobs: Iterable[Any], superseded: Container[str] = ()) -> Any:
    """The id of the one job of *jobs* (anything with ``id`` and ``name``)
    whose id is *given*, else whose name is *given* (of several, the one not
    *superseded*: see :func:`corral.job_refs.jobs_called`).

    Raises:
        AmbiguousName: several jobs have the name.
        CorralError: no job has that id or name.
    """
    named = jobs_called(given, jobs, superseded)
    if not named:
        raise CorralError(f"no job {given} in this run (neither an id nor a job's name)")
    if len({str(job.id) for job in named}) > 1:  # (a job both the journal and the driver list)
        raise AmbiguousName(ambiguous_name(given, named))
    return given if str(named[0].id) == str(given) else str(named[0].id)


def _job_refs(request: dict[str, Any], field: str) -> list[int | str]:
    """The job ids or names a request lists in *field* (none if absent)."""
    given = request.get(field) or []
    if not isinstance(given, list) or not all(
            type(item) in (int, str) for item in given):  # (not bool: True is no job)
        raise CorralError(f"{field!r} must be a list of job ids or names")
    return given


def _submit(scheduler: Driver, request: dict[str, Any]) -> dict[str, Any]:
    command = request.get("command")
    if not command or not isinstance(command, (str, list)) or (
            isinstance(command, list) and not all(isinstance(word, str) for word in command)):
        raise CorralError("submit needs a command: a string, or a list of strings")
    options = request.get("options") or {}
    if not isinstance(options, dict):
        raise CorralError("'options' must be an object of job options")
    _refuse_when_stopping(scheduler)
    check = scheduler._settings_check
    note = check() if check is not None else None
    try:
        job_id, doomed = _take_submission(scheduler, command, dict(options), request)
    except (CorralError, ValueError, TypeError) as error:
        if note is None or isinstance(error, Stopping):
            raise
        raise CorralError(f"{error}; {note}") from None
    cancelled = None if doomed is None else f"job {job_id} is cancelled, and will not run: {doomed}"
    # (attack review: a pause outlives its daemon, and the submit said nothing of it)
    held = (f"the run is paused: job {job_id} starts once it is resumed (corral resume)"
            if doomed is None and scheduler.paused else None)
    note = "; ".join(filter(None, (cancelled, held, scheduler._placement_unused(options),
                                   note))) or None
    return {"id": job_id} if note is None else {"id": job_id, "note": note}


def _take_submission(scheduler: Driver, command: str | list[str], options: dict[str, Any],
                     request: dict[str, Any]) -> tuple[int | str | None, str | None]:
    """Make the job of a submit request; return its id (which it has: it is
    dispatched), and why it was cancelled at once, if it was."""
    after, ended, doomed = _parents(scheduler, _job_refs(request, "after"))
    if after:
        options["after"] = after
    if options.get("env") is not None:
        # Exactly the submitter's environment, stored as what differs from ours
        # (no copy of every variable, or secret): changes, and None to unset.
        given = options["env"]
        options["env"] = {**{name: value for name, value in given.items()
                             if os.environ.get(name) != value},
                          **{name: None for name in os.environ if name not in given}}
    job = _made_from_outside(scheduler, Shell(command if isinstance(command, str)
                                              else tuple(command)), options, doomed, ended)
    return job.id, doomed


#: The jobs a new job comes after: see :func:`_parents`.
_Parents = tuple["list[Job]", list[int | str], str | None]


def _parents(scheduler: Driver, refs: Iterable[int | str]) -> _Parents:
    """The jobs a new job comes after, given by id or name: ``(those this
    driver holds, which it waits for; the ids of those that ended before, which
    only its row names; why it is cancelled at once, if one of them ended
    without completing)``.

    Raises:
        CorralError: a ref names no job, or one that nothing will ever end.
    """
    after: list[Job] = []
    ended: list[int | str] = []  # jobs it comes after that this driver no longer holds
    doomed = None  # why it is cancelled at once: a job it comes after did not complete
    # (Each once: 10,000 --after of one job held every other submitter for 30 s.)
    for parent in dict.fromkeys(refs):
        try:
            parent_id = _id_or_name(scheduler, parent)
        except CorralError as error:
            # (attack review: "no job 1-3" alone did not say why)
            if _is_a_range(parent):
                raise CorralError(f"{error}; --after takes job ids and names, not ranges: give "
                                  "one --after for each job") from None
            raise
        job, stored = _live_or_stored(scheduler, parent_id)
        if job is not None:
            status, name, reason = job.status, job.name, job.reason
        else:  # ended, in this session or before: the loop knows how before the journal does
            status = scheduler._ended_as(stored.id, stored.name) or stored.status
            name, reason = stored.name, stored.reason
        if status in TERMINAL and status is not JobStatus.COMPLETED:
            # Taken, and cancelled as a job submitted a moment before the parent
            # ended is (cold review: refused with exit 2 instead, as bad input,
            # a nightly script stopped half-submitted when a step failed fast).
            doomed = doomed or upstream_reason(parent_id, name, status, reason)
        elif job is None and status is not JobStatus.COMPLETED:  # nothing would ever end it
            raise CorralError(f"{ended_message(parent_id, status)}; a job after it would never run")
        if job is not None:  # (its row names them all, the one that dooms it too)
            after.append(job)
        else:
            ended.append(stored.id)
    return after, ended, doomed


def _made_from_outside(scheduler: Driver, task: Task, options: dict[str, Any],
                       doomed: str | None, ended: list[int | str]) -> Job:
    """The job a command made (submit, rerun), dispatched and in the journal."""
    try:
        return scheduler._submit_from_outside(task, options, doomed, tuple(ended))
    except RuntimeError:  # shut down meanwhile
        _refuse_when_stopping(scheduler)
        raise


def _rerun(scheduler: Driver, request: dict[str, Any]) -> dict[str, Any]:
    """Run ended jobs again (``corral rerun``), each as a new job with the same
    task and options: its command or script, directory, the environment it
    ran with, resources, name, retries and notices. A new job is new work, as
    a submitted one is; the journal's meta says which job it ran again
    (``rerun.OLD``), written as each is made, so that no later range takes
    the old one again.

    Jobs run again together keep their order: one that came after another of
    them comes after its new job. All or none: every job is checked before any
    is made (see :func:`_rerun_plan`)."""
    from corral.journal.reading import RERUN_KEY, reruns_in
    from corral.journal.run import Run

    _refuse_when_stopping(scheduler)
    check = scheduler._settings_check  # (config files edited since: as a submit does)
    settings_note = check() if check is not None else None
    scheduler._flush_journal_now()  # (every job's row as this driver knows it)
    run = Run(scheduler._journal.run_dir)
    known = {str(job.id): job for job in run.jobs(results=False)}
    meta = run.meta()
    reruns = reruns_in(meta)
    chosen: dict[str, Any] = {}
    named: list[str] = []  # each ref's job, twice if named twice: a new id a ref
    for given in _job_refs(request, "ids"):
        try:
            job_id = (str(given) if str(given) in known
                      else str(id_or_name(given, known.values(), reruns)))
        except CorralError as error:  # (rerun takes ranges: a half one is told so)
            raise CorralError(f"{error}{range_hint([given])}") from None
        chosen.setdefault(job_id, known[job_id])
        named.append(job_id)
    if not chosen:
        raise CorralError("rerun needs the ids or names of ended jobs")
    planned = [_rerun_plan(scheduler, stored, chosen, known, reruns, meta)
               for stored in _parents_first(chosen)]
    made: dict[str, Job] = {}
    for stored, task, options, (after, ended, doomed) in planned:
        after = [*after, *(made[str(parent)] for parent in stored.deps if str(parent) in made)]
        made[str(stored.id)] = job = _made_from_outside(
            scheduler, task, {**options, "after": after} if after else options, doomed, ended)
        # (which job ran which again: status says it, and a range or a name takes the new)
        scheduler._engine.call(scheduler._journal.set_meta,
                               RERUN_KEY.format(job=stored.id), str(job.id))
    scheduler._flush_journal_now()
    held = ("the run is paused: the new jobs start once it is resumed (corral resume)"
            if scheduler.paused else None)
    # (in the order given, one a ref: `read a b < <(corral rerun 4 5)`)
    answer: dict[str, Any] = {"ids": [[chosen[job_id].id, made[job_id].id]
                                      for job_id in named]}
    note = "; ".join(filter(None, (held, settings_note)))
    return {**answer, "note": note} if note else answer


def _rerun_plan(scheduler: Driver, stored: Any, chosen: dict[str, Any], known: dict[str, Any],
                reruns: dict[str, str], meta: dict[str, str]
                ) -> tuple[Any, Task, dict[str, Any], _Parents]:
    """``(stored, its task, its options, its parents outside *chosen*)`` for
    :func:`_rerun`; its environment is the one it ran with (re-attack review:
    applied to this daemon's, the row's difference from another daemon's lost
    the submitter's variables). Refused: a job that has not ended; one run
    again already (cold review: a range ran a failed experiment a second
    time, at once, beside its rerun); a Python call, whose function and arguments the
    journal does not hold; one whose options no longer hold (its directory
    removed); one that came after a job left out of *chosen* that ended
    without completing (it would be cancelled at once: the person is told
    which to run together).

    Raises:
        CorralError: saying which job, and why.
    """
    from corral.journal.codec import decode_spec
    from corral.journal.reading import latest_rerun
    from corral.journal.session_env import environment_again

    said = f"job {stored.id} {stored.name!r}"
    status = scheduler._ended_as(stored.id, stored.name) or stored.status
    if status not in TERMINAL:
        raise CorralError(f"{said} is {status.name}: only an ended job runs again")
    if str(stored.id) in reruns:
        latest = latest_rerun(str(stored.id), reruns)
        raise CorralError(f"{said} was run again already, as job {reruns[str(stored.id)]}"
                          + (f" (the latest: job {latest})" if latest != reruns[str(stored.id)]
                             else "") + f"; run that one again (corral rerun {latest})")
    try:
        journaled = decode_spec(stored.spec or {})
    except ValueError as error:
        raise CorralError(f"{said} cannot run again: {error}") from None
    if journaled.task is None:
        raise CorralError(f"{said} is a Python call, whose function and arguments the journal "
                          "does not hold: its script runs it again when run again"
                          if stored.kind in ("call", "function") else
                          f"{said} cannot run again: the journal holds no command for it")
    options = {**journaled.options,
               "env": environment_again(journaled.options.get("env") or {}, stored.session,
                                        meta)}
    # A parent run again since stands for itself by its latest run: its outcome
    # counts, and a new job waits for that one, if it has not ended.
    left_out = [latest_rerun(str(parent), reruns) for parent in stored.deps
                if str(parent) not in chosen]
    if any(_went_wrong(scheduler, known.get(str(parent))) for parent in left_out):
        together = sorted({*chosen, *_failed_ancestors(scheduler, stored, chosen, known, reruns)},
                          key=lambda job_id: (len(job_id), job_id))
        parent = next(parent for parent in left_out
                      if _went_wrong(scheduler, known.get(str(parent))))
        raise CorralError(f"{said} came after job {parent}, which did not complete: run them "
                          f"again together (corral rerun {' '.join(together)})")
    parents = _parents(scheduler, left_out)
    waits = bool(parents[0]) or any(str(parent) in chosen for parent in stored.deps)
    try:  # (all or none: every job checked before any is made)
        scheduler._check_from_outside(journaled.task, options, waits)
    except (ValueError, TypeError, CorralError) as error:
        raise CorralError(f"{said} cannot run again: {error}") from None
    return stored, journaled.task, options, parents


def _parents_first(chosen: dict[str, Any]) -> list[Any]:
    """The jobs of *chosen*, each after those of them it came after (re-attack
    review: in the journal's order, which a daemon's takeover changes, a child
    was made before its parent's new job, and ran at once)."""
    ordered: list[Any] = []
    placed: set[str] = set()
    seen: set[str] = set()  # (a damaged journal's loop of parents is cut where it closes)
    for first in chosen:
        waiting = [(first, False)]
        while waiting:
            job_id, parents_done = waiting.pop()
            if job_id in placed or (not parents_done and job_id in seen):
                continue
            if parents_done:
                placed.add(job_id)
                ordered.append(chosen[job_id])
                continue
            seen.add(job_id)
            waiting.append((job_id, True))
            waiting += [(str(parent), False) for parent in chosen[job_id].deps
                        if str(parent) in chosen and str(parent) not in placed]
    return ordered


def _went_wrong(scheduler: Driver, row: Any) -> bool:
    """Whether the journal's *row* (None: no such job) ended without completing."""
    if row is None:
        return False
    status = scheduler._ended_as(row.id, row.name) or row.status
    return status in TERMINAL and status is not JobStatus.COMPLETED


def _failed_ancestors(scheduler: Driver, stored: Any, chosen: dict[str, Any],
                      known: dict[str, Any], reruns: dict[str, str]) -> set[str]:
    """The jobs *stored* comes after, up its line (each by its latest run),
    that did not complete and are not in *chosen*: those to run again with it
    (cold review: the hint named one level up at a time)."""
    from corral.journal.reading import latest_rerun

    found: set[str] = set()
    waiting = [str(parent) for parent in stored.deps]
    while waiting:
        job_id = latest_rerun(waiting.pop(), reruns)
        row = known.get(job_id)
        if row is None or job_id in found or job_id in chosen or not _went_wrong(scheduler, row):
            continue
        found.add(job_id)
        waiting += [str(parent) for parent in row.deps]
    return found


#: What the jobs a stopped daemon cancels say.
STOPPED_REASON = "the daemon was stopped (corral stop or a signal)"


def _refuse_when_stopping(scheduler: Driver) -> None:
    """Take no job a stopping daemon would cancel (``corral stop``) or could
    not run (shut down once idle): the submitter then starts a new daemon."""
    stop = scheduler._stop_requested
    if (stop is not None and stop.is_set()) or scheduler._shut:
        raise Stopping(f"the daemon of {scheduler._journal.run_dir} is stopping")


def _cancel(scheduler: Driver, request: dict[str, Any]) -> dict[str, Any]:
    """Cancel the jobs named. One cancelled before is no problem (a cancel
    asked twice, from two terminals or a script's retry, is done), but one
    that ended otherwise is: it cannot be cancelled, unless it is among the
    ids of a range (``ended_ok``), which a cancel may find ended since the
    command read the journal: those are answered as ``ended`` (attack review:
    ``corral cancel 1-300`` of a busy run exited 2, "already ended COMPLETED")."""
    cancelled, already, problems, ended = [], [], [], []
    ended_ok = request.get("ended_ok") or []
    if not isinstance(ended_ok, list):
        raise CorralError("'ended_ok' must be a list of job ids")
    ended_ok = {str(job_id) for job_id in ended_ok}
    names: dict[str, str] = {}  # id -> name, for the command to say which job each id is
    seen: set[str] = set()
    for given in _job_refs(request, "ids"):
        try:
            job_id = _id_or_name(scheduler, given)
            job, stored = _live_or_stored(scheduler, job_id)
        except CorralError as error:  # (cancel takes ranges: a half one is told so)
            problems.append(f"{error}{range_hint([given])}")
            continue
        if str(job_id) in seen:  # named twice (by its id and its name, say): answered once
            continue
        seen.add(str(job_id))
        names[str(job_id)] = job.name if job is not None else stored.name
        if job is None:  # (ended here, the journal not written yet: a cancel racing this one)
            status = scheduler._ended_as(stored.id, stored.name) or stored.status
        else:
            status = job.status
        if status is JobStatus.CANCELLED:
            already.append(job_id)
        elif job is not None and job.cancel():
            cancelled.append(job.id)
        elif job is not None and job.status is JobStatus.CANCELLED:  # by a cancel racing this
            already.append(job_id)
        else:
            status = job.status if job is not None else status
            if str(job_id) in ended_ok and status in TERMINAL:
                ended.append(job_id)
            else:
                problems.append(ended_message(job_id, status))
    if cancelled:  # in the journal before the answer, as a submit is (attack review: a
        scheduler._flush_journal_now()  # daemon killed as it answered ran them next time)
    return {"cancelled": cancelled, "already_cancelled": already, "problems": problems,
            "names": names, "ended": ended, "kind": scheduler._owner_kind}


def _pause(scheduler: Driver, request: dict[str, Any]) -> dict[str, Any]:
    # A stopping daemon's pause would end with it: the command starts the next
    # daemon, paused (re-attack review: one stopped by a refused first submit's
    # undo said "paused", and the undo then took the run away). A script's holds
    # while it waits at its end (shut down, its jobs still running).
    if scheduler._stop_requested is not None:
        _refuse_when_stopping(scheduler)
    was = scheduler.paused
    if scheduler._owner_kind == "script":
        scheduler._pause_by_person()  # (holds through the script's end, see there)
    else:
        scheduler.pause()
    # Served: a first submit or pause that fails now leaves the run (attack review: its
    # undo removed a run whose pause another terminal had been told of).
    scheduler._paused_by_request = True
    engine = scheduler._engine  # (jobs this driver took: a pause that made the run says
    # "empty" only if none came in meanwhile from another terminal's first submit)
    return {"paused": True, "was_paused": was,
            "jobs": engine.unfinished + engine.tally.finished}


def _resume(scheduler: Driver, request: dict[str, Any]) -> dict[str, Any]:
    was = scheduler.paused
    scheduler._resume_by_person()
    return {"paused": False, "was_paused": was}


def _abort(scheduler: Driver, request: dict[str, Any]) -> dict[str, Any]:
    given = request.get("id")
    # (the kind: a script reads an aborted job's result as CancelledError, and
    # one that does not expect it ends its run: corral abort says so)
    if given is None:  # (not those SUBMITTED to a backend's queue: they are not running)
        return {"aborted": scheduler.abort(), "kind": scheduler._owner_kind}
    if type(given) not in (int, str):
        raise CorralError("'id' must be a job id or name")
    try:
        job_id = _id_or_name(scheduler, given)
    except CorralError as error:  # (attack review: `abort 1-2` said only "no job 1-2")
        if _is_a_range(given):
            raise CorralError(f"{error}; abort takes one job, by id or name, not a range") from None
        raise
    job, stored = _live_or_stored(scheduler, job_id)
    status = job.status if job is not None else stored.status
    not_running = CorralError(f"job {job_id} is not running (it is {status.name}); abort "
                              "stops running jobs: use corral cancel for others")
    if job is None or status not in ACTIVE:
        raise not_running
    try:
        scheduler.abort(job)
    except ValueError:  # SUBMITTED to a backend's queue: waiting there, not running
        raise not_running from None
    return {"aborted": 1, "kind": scheduler._owner_kind}


def _clear(scheduler: Driver, request: dict[str, Any]) -> dict[str, Any]:
    cleared = scheduler.clear()
    if cleared:  # (in the journal before the answer, as a cancel)
        scheduler._flush_journal_now()
    return {"cleared": cleared}


def _stop(scheduler: Driver, request: dict[str, Any]) -> dict[str, Any]:
    if scheduler._stop_requested is None:
        raise CorralError("this run is driven by a script; stop the script itself "
                          "(or cancel its jobs)")
    if request.get("unless_used") and (scheduler.jobs() or scheduler._paused_by_request):
        # A refused first submit (or pause) undoes the run it made, unless another
        # command started at the same moment has a job in it, or paused it, already.
        raise CorralError("another command has a job in the run, or paused it: it stays")
    # Noted before it is answered: a daemon killed right after answering left its
    # jobs to the next daemon, which ran them (attack review); the next one now
    # finishes the stop (see corral.cli.daemon).
    with contextlib.suppress(OSError):  # (a run directory gone: it stops all the same)
        os.close(os.open(os.path.join(scheduler._journal.run_dir, STOP_ASKED_FILE),
                         os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    scheduler._stop_requested.set()
    return {"unfinished": scheduler._engine.unfinished}


VERBS = {"ping": _ping, "submit": _submit, "rerun": _rerun, "cancel": _cancel, "pause": _pause,
         "resume": _resume, "abort": _abort, "clear": _clear, "stop": _stop}


def handle(scheduler: Driver, request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise CorralError('a request is a JSON object, such as {"verb": "ping"}')
    verb = request.get("verb")
    action = VERBS.get(verb) if isinstance(verb, str) else None
    if action is None:
        raise CorralError(f"unknown request {verb!r}; known: {', '.join(sorted(VERBS))}")
    return action(scheduler, request)
