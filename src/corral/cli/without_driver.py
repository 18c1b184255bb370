"""What the command line does itself when no driver runs: cancel, hold or
release the jobs a script's dead driver left in a cluster scheduler (which run
on without it), and answer a cancel that has nothing left to cancel without
starting a daemon for it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from corral.cli.config_checks import register_configured_backends
from corral.cli.exits import EXIT_UNREACHABLE, CommandError
from corral.errors import CorralError
from corral.status import TERMINAL, JobStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from corral.journal.stored import StoredJob

__all__ = ["control_cluster_jobs", "nothing_left_to_cancel"]


def control_cluster_jobs(run_dir: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """No driver runs, but jobs it handed to a cluster scheduler still do: act on
    them there (scancel, hold, release); None if there are none. The script's
    next run attaches to them and finds what became of them."""
    from corral.journal.run import Run

    run = Run(run_dir)
    every = run.jobs(results=False)
    jobs = [job for job in every if job.status not in TERMINAL]
    problems = []
    if request["verb"] == "cancel":
        from corral.control.verbs import id_or_name

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
        register_configured_backends(strict=True)
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


def nothing_left_to_cancel(run_dir: Path, request: dict[str, Any]) -> dict[str, Any] | None:
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
