"""The Slurm backend: jobs become batch jobs on a Slurm cluster.

How a dispatch goes out:

* Each job's request is written to ``<jobdir>/task``; jobs dispatched
  together with equal resources and placement go out as **one**
  ``sbatch --array`` (chunked below the cluster's MaxArraySize, optionally
  throttled with ``%N``). With the ``bundle=N`` job option, up to N jobs share
  one array task, run in turn by :mod:`corral.runtime.batch` — the same
  runtime code the local workers use.
* The batch script is rendered from ``slurm_job.sh.template``; every user
  value reaches Slurm as one ``sbatch`` argument, never through a shell; only
  ``setup`` lines are shell code, by intent.
* A dependency on a job that Slurm still has pending or running is also handed
  to Slurm (``--dependency=afterok:ID``), so the chain goes on without the
  driver. Never on a job Slurm may have forgotten: ``afterok`` on an unknown id
  counts as satisfied.

How state comes back: one ``squeue`` per poll for all of the user's jobs
(finished ones included), polled more slowly while nothing changes. A job's
outcome is its result file when the runtime wrote one; otherwise Slurm's
state, from squeue, or from ``sacct`` when accounting is on and squeue has
forgotten the job. Jobs that can never start (``PartitionConfig``, or a
dependency that failed) are cancelled with a clear reason.
"""

from __future__ import annotations

import dataclasses
import getpass
import itertools
import json
import logging
import os
import pickle
import shlex
import string
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from corral.errors import BackendError
from corral.runtime.batch import (CANCELLED_MARK, MARGIN_S, RESULT_FILE, STARTED_FILE, TASK_FILE,
                             claim_for_cancel, read_result)
from corral.spec import Placement, Resources
from corral.status import JobStatus
from corral.units import parse_duration
from corral.backends.batch.slurm import commands
from corral.backends.base import Capacity, Submission, Update

__all__ = ["SlurmBackend", "SLURM_OPTIONS", "control_without_driver"]

log = logging.getLogger("corral.backends.slurm")

_TEMPLATE = Path(__file__).with_name("job.sh.template")
_COMMAND_TIMEOUT_S = 60.0
_LEFTOVER_TRIES = 3  # times a bundle's unstarted job is submitted again
_TAIL_LINES = 3
_HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})

#: ``backend_options`` the Slurm backend takes, with their defaults and meaning.
SLURM_OPTIONS: dict[str, tuple[Any, str]] = {
    "poll_interval": (0.5, "seconds between squeue calls right after a change"),
    "max_poll_interval": (5.0, "the longest wait between squeue calls while nothing changes"),
    "array_throttle": (None, "at most this many tasks of one array run at once (%N)"),
    "max_array_size": (None, "split arrays below this many tasks (default: the cluster's MaxArraySize)"),
    "user": (None, "whose jobs squeue lists (default: this user)"),
}


@dataclass(slots=True)
class _Task:
    """One corral job in Slurm's hands."""

    job_id: int | str
    jobdir: str
    is_command: bool
    bundled: bool
    group: _Group
    native_id: str = ""
    running: bool = False
    leftovers: int = 0
    submitted_at: float = 0.0  # monotonic time of our sbatch; 0 for an attached job
    release_if_held: bool = False  # attached while not paused: a dead driver's hold goes


@dataclass(slots=True)
class _SlurmJob:
    """One Slurm job or array task and the corral jobs it runs."""

    native_id: str
    log_path: str
    tasks: list[_Task] = field(default_factory=list)
    row: commands.SlurmRow | None = None
    #: The runtime took at least one of its jobs: the batch job works, so jobs
    #: it did not take were left (cancelled, out of time) and go out again.
    runtime_ran: bool = False


@dataclass(slots=True)
class _Group:
    """Jobs that can share one sbatch: everything in the key is equal."""

    resources: Resources
    placement: Placement
    after: tuple[str, ...]
    bundle: int
    submissions: list[Submission] = field(default_factory=list)
    #: Job directories of the parents in ``after``: their results tell whether a
    #: dependency Slurm calls never satisfied was in fact met.
    after_jobdirs: tuple[str, ...] = ()


def _settings(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(SLURM_OPTIONS))
    if unknown:
        import difflib

        close = [name for name in SLURM_OPTIONS if name.startswith(unknown[0])] or \
            difflib.get_close_matches(unknown[0], SLURM_OPTIONS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown Slurm backend option {unknown[0]!r}{hint} "
                         f"(known: {', '.join(SLURM_OPTIONS)})")
    values = {name: default for name, (default, _) in SLURM_OPTIONS.items()}
    values.update(options)
    for name in ("poll_interval", "max_poll_interval"):
        values[name] = parse_duration(values[name], name)
        if values[name] <= 0:
            raise ValueError(f"{name}={options[name]!r} must be more than 0 seconds")
    for name in ("array_throttle", "max_array_size"):
        value = values[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}={value!r} must be an int >= 1")
    if values["user"] is not None and not isinstance(values["user"], str):
        raise ValueError(f"user={values['user']!r} must be a user name")
    values["max_poll_interval"] = max(values["max_poll_interval"], values["poll_interval"])
    return values


class SlurmBackend:
    """Runs jobs as Slurm batch jobs. See the module docstring."""

    name: ClassVar[str] = "slurm"
    #: Slurm ends a job at its ``--time``; the scheduler only arms ``timeout``.
    enforces_walltime: ClassVar[bool] = True
    #: Dependencies between running jobs may be handed to Slurm (see :meth:`can_chain`).
    chains_dependencies: ClassVar[bool] = True
    #: sbatch costs ~10 ms and Slurm starts jobs on ~1 s ticks: waiting 50 ms for
    #: more jobs makes a loop of submits one array instead of one job and the rest.
    gather_s: ClassVar[float] = 0.05

    def __init__(self, cores: int | None = None, memory: int | None = None,
                 gpus: int | None = None, python: str = sys.executable,
                 options: dict[str, Any] | None = None) -> None:
        self._settings = _settings(options or {})
        self._capacity = Capacity(cores, memory, gpus)  # None: the cluster packs
        self._python = python
        self._user = self._settings["user"] or getpass.getuser()
        self._wake = threading.Event()
        self._tasks: dict[int | str, _Task] = {}
        self._jobs: dict[str, _SlurmJob] = {}
        self._updates: list[Update] = []
        self._cluster: dict[str, str] | None = None
        self._group_numbers = itertools.count(1)
        self._interval = self._settings["poll_interval"]
        self._next_poll = 0.0
        self._last_poll = 0.0
        self._closed = False
        #: How many times each Slurm command ran: for tests and benchmarks.
        self.invocations: Counter[str] = Counter()
        #: Where a temporary run directory goes: jobs run on other nodes, so not /tmp.
        from platformdirs import user_cache_dir

        self.workdir_parent = os.path.join(user_cache_dir("corral"), "runs")

    # -- what the scheduler asks -------------------------------------------------------

    def capacity(self) -> Capacity:
        return self._capacity

    def check(self, resources: Resources) -> None:
        """Slurm decides what fits: an impossible request is detected by its
        pending reason (see :data:`commands.IMPOSSIBLE_REASONS`)."""

    def submit(self, batch: Sequence[Submission]) -> list[str]:
        if not batch:
            return []
        base = Path(batch[0].jobdir).parent / "slurm"
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        groups: dict[tuple, _Group] = {}
        for submission in batch:
            parents = [self._tasks[parent] for parent in submission.after if parent in self._tasks]
            after = tuple(parent.native_id for parent in parents)
            placement = submission.placement
            key = (submission.resources, placement, after)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(submission.resources, placement, after,
                                             placement.bundle,
                                             after_jobdirs=tuple(p.jobdir for p in parents))
            group.submissions.append(submission)
        for group in groups.values():
            self._submit_group(group, base)
        self._poll_soon()
        return [self._tasks[s.job_id].native_id if s.job_id in self._tasks else ""
                for s in batch]

    def attach(self, submission: Submission, native_id: str) -> None:
        """Follow a job an earlier driver submitted, by its Slurm id, without submitting it."""
        group = _Group(submission.resources, submission.placement, (), submission.placement.bundle)
        group.submissions.append(submission)
        task = _Task(submission.job_id, os.fspath(submission.jobdir), bool(submission.argv),
                     submission.placement.bundle > 1, group, native_id)
        slurm_job = self._jobs.get(native_id)
        if slurm_job is None:
            slurm_job = self._jobs[native_id] = _SlurmJob(native_id, _attached_log(task.jobdir))
        slurm_job.tasks.append(task)
        self._tasks[task.job_id] = task
        self._poll_soon()

    def can_chain(self, job_id: int | str) -> bool:
        """Whether a dependency on *job_id* may be handed to Slurm now: only on a
        job that Slurm surely still knows (seen pending or running in a recent
        poll, unbundled), since ``afterok`` on a forgotten job id counts as met."""
        task = self._tasks.get(job_id)
        if task is None or task.bundled or not task.native_id:
            return False
        slurm_job = self._jobs.get(task.native_id)
        if slurm_job is None or read_result(task.jobdir) is not None:
            return False
        safe_for = _seconds(self._cluster_setting("MinJobAge", "300")) / 2
        if slurm_job.row is None:  # not polled yet: known to Slurm if we just submitted it
            return task.submitted_at > 0 and time.monotonic() - task.submitted_at < safe_for
        meaning = commands.state_of(slurm_job.row)
        if meaning is None or meaning[0] not in (JobStatus.SUBMITTED, JobStatus.RUNNING):
            return False
        return time.monotonic() - self._last_poll < safe_for

    def updates(self, timeout: float | None) -> list[Update]:
        if not self._updates:
            wait = timeout
            if self._jobs:
                until_poll = max(0.0, self._next_poll - time.monotonic())
                wait = until_poll if wait is None else min(wait, until_poll)
            if wait is None or wait > 0:
                self._wake.wait(wait)
            self._wake.clear()
            if self._jobs and time.monotonic() >= self._next_poll:
                self._poll()
        found, self._updates = self._updates, []
        return found

    def wake(self) -> None:
        self._wake.set()

    def kill(self, job_ids: Collection[int | str]) -> None:
        """Cancel the jobs now: scancel (a bundled job that has not started is
        just marked, so its bundle skips it); each is reported CANCELLED."""
        to_cancel: set[str] = set()
        for job_id in job_ids:
            task = self._tasks.get(job_id)
            if task is None:
                continue
            slurm_job = self._jobs.get(task.native_id)
            if task.bundled and claim_for_cancel(task.jobdir):
                pass  # its bundle will skip it
            elif task.native_id:
                # Running: end its batch job. Its bundle's jobs that have not
                # started are then submitted again (see _settle_ended).
                to_cancel.add(task.native_id)
                if slurm_job is not None:
                    slurm_job.runtime_ran = True
            self._finish(task, Update(job_id, JobStatus.CANCELLED, task.native_id or None,
                                      reason="cancelled"))
            if slurm_job is not None and not slurm_job.tasks:
                to_cancel.add(slurm_job.native_id)  # nothing left for it to do
        if to_cancel:
            self._run_quietly("scancel", sorted(to_cancel))

    def terminate(self, job_ids: Collection[int | str]) -> None:
        """Ask running jobs to stop: SIGUSR1 to the batch step, which sets
        :func:`corral.abort_requested` in the job."""
        natives = sorted({self._tasks[job_id].native_id for job_id in job_ids
                          if job_id in self._tasks and self._tasks[job_id].native_id})
        if natives:
            self._run_quietly("scancel", ["--signal=USR1", "--batch", *natives])

    def hold(self, job_ids: Collection[int | str]) -> None:
        """Keep pending jobs from starting (``scontrol hold``); for pause."""
        natives = self._pending_natives(job_ids)
        if natives:
            self._run_quietly("scontrol", ["hold", ",".join(natives)])

    def release(self, job_ids: Collection[int | str]) -> None:
        """Let held jobs start again (``scontrol release``); for resume. An
        attached job not polled yet is released at its first poll if held (a
        driver killed while paused left it so)."""
        for job_id in job_ids:
            task = self._tasks.get(job_id)
            slurm_job = None if task is None else self._jobs.get(task.native_id)
            if slurm_job is not None and slurm_job.row is None:
                task.release_if_held = True
        natives = [native for native in self._pending_natives(job_ids)
                   if self._jobs[native].row is not None]
        if natives:
            self._run_quietly("scontrol", ["release", ",".join(natives)])

    def close(self) -> None:
        """Cancel what is still in Slurm's hands: a driver that stops cleanly
        leaves nothing running (one killed outright is found again by its journal)."""
        if self._closed:
            return
        self._closed = True
        natives = sorted({task.native_id for task in self._tasks.values() if task.native_id}
                         | set(self._jobs))
        if natives:
            self._run_quietly("scancel", natives)
        self._tasks.clear()
        self._jobs.clear()

    # -- submitting ------------------------------------------------------------------------

    def _submit_group(self, group: _Group, base: Path) -> None:
        bundles = [group.submissions[first:first + group.bundle]
                   for first in range(0, len(group.submissions), group.bundle)]
        limit = self._settings["max_array_size"] or max(
            1, int(self._cluster_setting("MaxArraySize", "1001")) - 1)
        for first, size in commands.array_ranges(len(bundles), limit):
            self._submit_chunk(group, bundles[first:first + size], base)

    def _submit_chunk(self, group: _Group, bundles: list[list[Submission]], base: Path) -> None:
        directory = self._new_directory(base)
        bundled = group.bundle > 1
        walltime = group.resources.walltime_s
        time_limit = None
        if walltime is not None:  # Slurm's whole minutes, with room for the runtime's margin
            wanted = walltime * max(len(b) for b in bundles) + (MARGIN_S if bundled else 0)
            time_limit = 60.0 * commands.walltime_minutes(wanted)
        for index, members in enumerate(bundles):
            for submission in members:
                self._write_task(submission)
            bundle = {"jobdirs": [os.fspath(s.jobdir) for s in members],
                      "time_limit_s": time_limit if bundled else None, "sys_path": sys.path}
            (directory / f"{index}.json").write_text(json.dumps(bundle))
        script = directory / "job.sh"
        script.write_text(self._render(group, directory, max(len(b) for b in bundles)))
        is_array = len(bundles) > 1
        # The script sends its own output to its log (slurm-<array index>.out in
        # its directory), so no path of ours goes through Slurm's %-patterns,
        # which a '%' or a backslash in the run directory would break.
        argv = commands.sbatch_argv(
            script=os.fspath(script), name=_slurm_name(bundles[0][0].name, len(bundles)),
            resources=group.resources, placement=group.placement, output="/dev/null",
            array_size=len(bundles) if is_array else None,
            throttle=self._settings["array_throttle"] if is_array else None,
            dependencies=group.after, time_limit_s=time_limit)
        try:
            output = self._run("sbatch", argv[1:])
            slurm_id = commands.parse_sbatch(output)
        except (BackendError, ValueError) as error:
            for members in bundles:
                for submission in members:
                    self._updates.append(Update(submission.job_id, JobStatus.FAILED,
                                                reason=f"sbatch refused it: {error}"))
            return
        for index, members in enumerate(bundles):
            native_id = f"{slurm_id}_{index}" if is_array else slurm_id
            log_path = os.fspath(directory / f"slurm-{index}.out")
            slurm_job = self._jobs[native_id] = _SlurmJob(native_id, log_path)
            for submission in members:
                task = self._tasks.get(submission.job_id)
                if task is None:
                    task = _Task(submission.job_id, os.fspath(submission.jobdir),
                                 bool(submission.argv), bundled, group)
                    self._tasks[submission.job_id] = task
                task.native_id = native_id
                task.running = False
                task.submitted_at = time.monotonic()
                slurm_job.tasks.append(task)

    def _new_directory(self, base: Path) -> Path:
        """A fresh directory for one sbatch: numbered on from what earlier
        drivers of the same run directory left."""
        while True:
            directory = base / str(next(self._group_numbers))
            try:
                directory.mkdir(mode=0o700)
                return directory
            except FileExistsError:
                continue

    def _write_task(self, submission: Submission) -> None:
        jobdir = os.fspath(submission.jobdir)
        os.makedirs(jobdir, mode=0o700, exist_ok=True)
        for stale in (STARTED_FILE, RESULT_FILE, "stdout", "stderr"):  # an earlier attempt's
            try:
                os.unlink(os.path.join(jobdir, stale))
            except FileNotFoundError:
                pass
        # A dependency still running here: the runtime reads its result file
        # (job directories are siblings in the run directory).
        upstream = [entry if isinstance(entry, bytes)
                    else os.path.join(os.path.dirname(jobdir), str(entry))
                    for entry in submission.upstream]
        task = {"job_id": submission.job_id, "argv": list(submission.argv),
                "payload": submission.call, "upstream": upstream, "env": list(submission.env),
                "cwd": submission.cwd,
                # The runtime enforces the walltime to the second; Slurm's --time,
                # in whole minutes, is the backstop.
                "walltime_s": submission.resources.walltime_s}
        with open(os.path.join(jobdir, TASK_FILE), "wb") as handle:
            pickle.dump(task, handle, pickle.HIGHEST_PROTOCOL)

    def _render(self, group: _Group, directory: Path, tasks: int) -> str:
        python = group.placement.python or self._python
        return string.Template(_TEMPLATE.read_text()).substitute(
            tasks=tasks, bundle_dir_comment=_printable(os.fspath(directory)),
            setup="\n".join(group.placement.setup),
            python=shlex.quote(python), bundle_dir=shlex.quote(os.fspath(directory)))

    # -- polling -----------------------------------------------------------------------------

    def _poll_soon(self) -> None:
        self._interval = self._settings["poll_interval"]
        self._next_poll = min(self._next_poll or float("inf"), time.monotonic() + self._interval)

    def _poll(self) -> None:
        before = len(self._updates)
        try:
            rows = commands.parse_squeue(self._run("squeue", commands.squeue_argv(self._user)[1:]))
        except BackendError as error:
            log.warning("squeue failed, trying again later: %s", error)
            rows = None
        now = time.monotonic()
        changed = False
        if rows is not None:
            self._last_poll = now
            # Forgotten jobs first: a parent Slurm dropped (a pending array task
            # cancelled) must be reported before a child it let run.
            forgotten = [job for job in self._jobs.values() if job.native_id not in rows]
            if forgotten:
                self._decide_forgotten(forgotten)
            for slurm_job in list(self._jobs.values()):
                row = rows.get(slurm_job.native_id)
                if row is None or self._jobs.get(slurm_job.native_id) is not slurm_job:
                    continue
                changed |= row != slurm_job.row
                slurm_job.row = row
                self._follow(slurm_job)
        changed |= len(self._updates) > before
        if changed:
            self._interval = self._settings["poll_interval"]
        else:
            self._interval = min(self._interval * 1.5, self._settings["max_poll_interval"])
        self._next_poll = now + self._interval

    def _follow(self, slurm_job: _SlurmJob) -> None:
        """Turn what squeue says of one Slurm job into updates for its tasks."""
        row = slurm_job.row
        assert row is not None
        meaning = commands.state_of(row)
        if meaning is None:
            log.warning("Slurm job %s is in a state corral does not know: %r; still polling",
                        slurm_job.native_id, row.state)
            return
        status, words = meaning
        if status is JobStatus.SUBMITTED:
            self._check_pending(slurm_job, row)
            return
        for task in list(slurm_job.tasks):
            result = read_result(task.jobdir)
            if result is not None:
                self._finish(task, self._from_result(task, result))
            elif status is JobStatus.RUNNING and not task.running and self._has_started(task):
                task.running = True
                self._updates.append(Update(task.job_id, JobStatus.RUNNING, task.native_id,
                                            live_output=_live_files(task.jobdir),
                                            at=_start_time(task.jobdir)))
        if status is not JobStatus.RUNNING:
            self._settle_ended(slurm_job, status, words, row)

    def _check_pending(self, slurm_job: _SlurmJob, row: commands.SlurmRow) -> None:
        never = commands.describe_pending(row.reason)
        if row.reason in _HELD_REASONS and any(task.release_if_held for task in slurm_job.tasks):
            for task in slurm_job.tasks:
                task.release_if_held = False
            self._run_quietly("scontrol", ["release", slurm_job.native_id])
            return
        if row.reason == commands.NEVER_REASON and self._parents_completed(slurm_job):
            # Slurm judged a parent failed whose result says it completed (its
            # batch job ended badly after writing it): run the job without it.
            log.warning("Slurm job %s: its dependencies completed, but Slurm says %s; "
                        "submitting it again without them", slurm_job.native_id, row.reason)
            self._run_quietly("scancel", [slurm_job.native_id])
            self._jobs.pop(slurm_job.native_id, None)
            self._resubmit(slurm_job.tasks, count=False)
            return
        if row.reason == commands.NEVER_REASON:
            reason = (f"a job it depends on did not complete (Slurm: {row.reason}; "
                      f"Slurm job {slurm_job.native_id} cancelled)")
            final = JobStatus.CANCELLED
        elif never is not None:
            reason = (f"Slurm can never start it: {never} (Slurm reason {row.reason}; "
                      f"Slurm job {slurm_job.native_id} cancelled)")
            final = JobStatus.FAILED
        else:
            return
        self._run_quietly("scancel", [slurm_job.native_id])
        for task in list(slurm_job.tasks):
            self._finish(task, Update(task.job_id, final, slurm_job.native_id, reason=reason))

    def _settle_ended(self, slurm_job: _SlurmJob, status: JobStatus, words: str,
                      row: commands.SlurmRow | None) -> None:
        """The Slurm job is over: each task has a result, was cancelled, was left
        for lack of time (submitted again), or failed with the Slurm job."""
        leftovers = []
        someone_ran = slurm_job.runtime_ran or any(
            _started_by_runtime(task.jobdir) for task in slurm_job.tasks)
        for task in list(slurm_job.tasks):
            result = read_result(task.jobdir)
            if result is not None:
                self._finish(task, self._from_result(task, result))
                continue
            started = _read_started(task.jobdir)
            if started == CANCELLED_MARK:
                self._finish(task, Update(task.job_id, JobStatus.CANCELLED, task.native_id,
                                          reason="cancelled"))
            elif (started is None and task.bundled and task.leftovers < _LEFTOVER_TRIES
                  and (someone_ran or status is JobStatus.COMPLETED)):
                leftovers.append(task)
            else:
                self._finish(task, self._from_slurm(task, slurm_job, status, words, row))
        self._jobs.pop(slurm_job.native_id, None)
        if leftovers:
            try:
                self._resubmit(leftovers)
            except Exception as error:  # a bug or a full disk must not stop the loop
                log.exception("could not submit %d bundled jobs again", len(leftovers))
                for task in leftovers:
                    self._finish(task, Update(task.job_id, JobStatus.FAILED, task.native_id,
                                              reason=f"could not be submitted again: {error}"))

    def _parents_completed(self, slurm_job: _SlurmJob) -> bool:
        groups = {id(task.group): task.group for task in slurm_job.tasks}.values()
        dirs = [jobdir for group in groups for jobdir in group.after_jobdirs]
        return bool(dirs) and all((read_result(jobdir) or (False,))[0] for jobdir in dirs)

    def _resubmit(self, tasks: list[_Task], count: bool = True) -> None:
        """Submit again jobs that a batch job left (without dependencies: their
        parents are over)."""
        by_group: dict[int, list[_Task]] = {}
        for task in list(tasks):
            task.leftovers += count
            by_group.setdefault(id(task.group), []).append(task)
        for members in by_group.values():
            old = members[0].group
            wanted = {task.job_id for task in members}
            group = _Group(old.resources, old.placement, (), old.bundle,
                           [s for s in old.submissions if s.job_id in wanted])
            for task in members:
                task.group = group
            log.info("submitting %d jobs again that their batch job did not run", len(members))
            self._submit_group(group, Path(members[0].jobdir).parent / "slurm")

    def _decide_forgotten(self, forgotten: list[_SlurmJob]) -> None:
        """Jobs squeue no longer lists (purged after MinJobAge): their result
        files decide; failing that, sacct when accounting is on."""
        rows: dict[str, commands.SlurmRow] = {}
        undecided = [job for job in forgotten
                     if not all(read_result(task.jobdir) is not None for task in job.tasks)]
        if undecided and self._accounting():
            try:
                rows = commands.parse_sacct(self._run(
                    "sacct", commands.sacct_argv(job.native_id for job in undecided)[1:]))
            except BackendError as error:
                log.warning("sacct failed: %s", error)
        for slurm_job in forgotten:
            row = rows.get(slurm_job.native_id)
            meaning = commands.state_of(row) if row is not None else None
            if meaning is None or meaning[0] in (JobStatus.SUBMITTED, JobStatus.RUNNING):
                if slurm_job in undecided and row is None:
                    if not any(_started_by_runtime(task.jobdir) for task in slurm_job.tasks):
                        meaning = (JobStatus.CANCELLED,
                                   "Slurm no longer lists it and it never started (cancelled "
                                   "outside corral, or ended without starting long ago)")
                    else:
                        meaning = (JobStatus.FAILED,
                                   "Slurm no longer knows the job and it left no result"
                                   + ("" if self._accounting() else
                                      " (purged after MinJobAge; no accounting to ask)"))
                else:
                    meaning = (JobStatus.COMPLETED, "")
                    if row is not None:  # sacct says it still runs: wait
                        slurm_job.row = row
                        continue
            self._settle_ended(slurm_job, meaning[0], meaning[1], row)

    # -- outcomes ------------------------------------------------------------------------------

    def _from_result(self, task: _Task,
                     result: tuple[bool, bytes | None, int | None, str | None]) -> Update:
        ok, blob, exit_code, reason = result
        where = f"Slurm job {task.native_id}"
        if ok:
            return Update(task.job_id, JobStatus.COMPLETED, task.native_id, exit_code=exit_code,
                          value=None if task.is_command else blob)
        if reason is not None and reason.startswith("timed out: "):
            return Update(task.job_id, JobStatus.TIMED_OUT, task.native_id,
                          reason=f"{reason[len('timed out: '):]} ({where})")
        if blob is not None and not task.is_command:
            return Update(task.job_id, JobStatus.FAILED, task.native_id, exit_code=exit_code,
                          error=blob, reason=where)
        if reason is None and blob is not None:  # the runtime's own error, e.g. a bad env
            from corral.runtime.payload import loads_error

            reason = loads_error(blob)[2]
        text = reason or f"exit code {exit_code}"
        return Update(task.job_id, JobStatus.FAILED, task.native_id, exit_code=exit_code,
                      reason=f"{text} ({where}){_tail_text(task.jobdir, '')}")

    def _from_slurm(self, task: _Task, slurm_job: _SlurmJob, status: JobStatus, words: str,
                    row: commands.SlurmRow | None) -> Update:
        exit_code = None if row is None else commands.exit_code_of(row)
        if status is JobStatus.COMPLETED:  # ended well, yet the runtime wrote nothing
            status = JobStatus.FAILED
            words = "the batch job ended without running it"
        reason = f"{words} (Slurm job {slurm_job.native_id})"
        if status is not JobStatus.CANCELLED:
            reason += _tail_text(task.jobdir, slurm_job.log_path)
        return Update(task.job_id, status, slurm_job.native_id, exit_code=exit_code, reason=reason)

    def _finish(self, task: _Task, update: Update) -> None:
        """Report a task's final update, once, and stop following it."""
        if self._tasks.get(task.job_id) is not task:
            return
        del self._tasks[task.job_id]
        slurm_job = self._jobs.get(task.native_id)
        if slurm_job is not None:
            if _started_by_runtime(task.jobdir):  # the batch job works: see _settle_ended
                slurm_job.runtime_ran = True
            if task in slurm_job.tasks:
                slurm_job.tasks.remove(task)
            if not slurm_job.tasks:
                del self._jobs[task.native_id]
        if not task.running and _started_by_runtime(task.jobdir):  # it ran between two polls
            self._updates.append(Update(task.job_id, JobStatus.RUNNING, task.native_id or None,
                                        at=_start_time(task.jobdir)))
        if update.at is None and update.state is not JobStatus.CANCELLED:
            update = dataclasses.replace(update, at=_end_time(task.jobdir))
        self._updates.append(update)

    @staticmethod
    def _has_started(task: _Task) -> bool:
        return not task.bundled or _started_by_runtime(task.jobdir)

    # -- the cluster ---------------------------------------------------------------------------

    def _cluster_setting(self, key: str, default: str) -> str:
        if self._cluster is None:
            try:
                self._cluster = commands.parse_config(self._run("scontrol", ["show", "config"]))
            except BackendError as error:
                log.warning("cannot read Slurm's configuration (%s); assuming defaults", error)
                self._cluster = {}
        return self._cluster.get(key, default)

    def _accounting(self) -> bool:
        return self._cluster_setting("AccountingStorageType", "accounting_storage/none") not in (
            "accounting_storage/none", "(null)", "")

    def _pending_natives(self, job_ids: Collection[int | str]) -> list[str]:
        natives = set()
        for job_id in job_ids:
            task = self._tasks.get(job_id)
            if task is None or not task.native_id or task.running:
                continue
            slurm_job = self._jobs.get(task.native_id)
            if slurm_job is not None and (slurm_job.row is None
                                          or slurm_job.row.state == "PENDING"):
                natives.add(task.native_id)
        return sorted(natives)

    def _run_quietly(self, program: str, arguments: Sequence[str]) -> None:
        """Run a control command whose failure is logged, not raised: the job
        may have ended meanwhile, and the next poll tells what became of it."""
        try:
            self._run(program, arguments)
        except BackendError as error:
            log.warning("%s", error)

    def _run(self, program: str, arguments: Sequence[str]) -> str:
        """Run a Slurm command; return its stdout. Raises BackendError with its stderr."""
        self.invocations[program] += 1
        return _run_command([program, *arguments])


def control_without_driver(verb: str, native_ids: Sequence[str]) -> str:
    """Act on Slurm jobs directly, for the ``corral`` command when no driver runs:
    ``cancel`` (scancel), ``pause`` (hold) or ``resume`` (release). Returns what
    Slurm said. The next driver of the run finds the outcome when it attaches.

    Raises:
        BackendError: the Slurm command failed (its message included).
    """
    if verb != "cancel":  # hold/release only what Slurm still has pending
        rows = commands.parse_squeue(_run_command(commands.squeue_argv(getpass.getuser())))
        native_ids = [native for native in native_ids
                      if native in rows and rows[native].state == "PENDING"]
        if not native_ids:
            return ""
    arguments = {"cancel": ["scancel", *native_ids],
                 "pause": ["scontrol", "hold", ",".join(native_ids)],
                 "resume": ["scontrol", "release", ",".join(native_ids)]}[verb]
    return _run_command(arguments)


def _run_command(arguments: Sequence[str]) -> str:
    """Run a Slurm command; return its stdout. Raises BackendError with its message."""
    try:
        done = subprocess.run(arguments, capture_output=True, text=True,
                              timeout=_COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as error:
        raise BackendError(f"{arguments[0]} could not run: {error}") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise BackendError(f"{arguments[0]} exited {done.returncode}: "
                           f"{' '.join(message[-2:]) or 'no message'}")
    return done.stdout


def _seconds(text: str) -> float:
    digits = "".join(itertools.takewhile(str.isdigit, text.strip()))
    return float(digits) if digits else 300.0


def _slurm_name(name: str, count: int) -> str:
    text = _printable(name)[:100]
    return text if count == 1 else f"{text} (+{count - 1})"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def _live_files(jobdir: str) -> tuple[str, str]:
    return os.path.join(jobdir, "stdout"), os.path.join(jobdir, "stderr")


def _read_started(jobdir: str) -> bytes | None:
    try:
        with open(os.path.join(jobdir, STARTED_FILE), "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _start_time(jobdir: str) -> float | None:
    """When the runtime took the job, from its ``started`` record."""
    try:
        return float(json.loads(_read_started(jobdir) or b"{}").get("time"))
    except (ValueError, TypeError, AttributeError):
        return None


def _end_time(jobdir: str) -> float | None:
    """When the runtime wrote the job's result (its file's time)."""
    try:
        return os.stat(os.path.join(jobdir, RESULT_FILE)).st_mtime
    except OSError:
        return None


def _started_by_runtime(jobdir: str) -> bool:
    started = _read_started(jobdir)
    return bool(started) and started != CANCELLED_MARK


def _attached_log(jobdir: str) -> str:
    """An attached job's batch log is not recorded; its stderr file tells most."""
    return ""


def _tail_text(jobdir: str, log_path: str) -> str:
    """The last lines of the job's stderr (or else of its Slurm log), for a reason."""
    for path in (os.path.join(jobdir, "stderr"), log_path):
        if not path:
            continue
        try:
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 2000))
                lines = handle.read().decode(errors="replace").strip().splitlines()
        except OSError:
            continue
        if lines:
            tail = " | ".join(line.strip() for line in lines[-_TAIL_LINES:])
            return f"; stderr ends: {tail[-300:]}"
    return ""
