"""Match the jobs of a new run against what its journal remembers.

When a script runs again on the same journal, each job it dispatches is looked
up by its key (:mod:`corral.core.identity`):

* COMPLETED before: it is not run again; its stored result is returned. (A
  call that a dead driver left unfinished but whose worker had logged its
  outcome was settled COMPLETED when the journal was opened: see
  :meth:`corral.journal.store.Journal._close_orphans`. So was a job cancelled as
  its worker was finishing it: it stays CANCELLED, with its result.) If the stored
  result cannot be loaded, the journal is damaged there: the job runs again;
* left unfinished by a driver that died: it runs again (a command still
  running from the dead driver is killed first, so that it cannot run twice
  at once);
* left submitted to a cluster scheduler (Slurm) by a driver that died: it is
  not submitted again; the backend attaches to it by its native id;
* anything else (failed, cancelled, never started): it runs again.

A matched job keeps its old id, and so its job directory; new jobs get ids
above every id the journal has seen.
"""

from __future__ import annotations

import bisect
import logging
import pickle
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.core.identity import chunk_place, describe, job_digest, job_digests
from corral.core.provenance import changed_since
from corral.core.record import COMPLETED_ALL_THE_SAME
from corral.journal.codec import encode_spec
from corral.runtime.chunks import ChunkRunner
from corral.runtime.proctree import kill_marked
from corral.runtime.reaper import MARK_VARIABLE
from corral.runtime.spool import keep_earlier_attempt
from corral.spec import Shell
from corral.status import ACTIVE, TERMINAL, JobStatus

if TYPE_CHECKING:
    from corral.core.record import JobRecord
    from corral.journal.previous import PreviousJobs
    from corral.journal.store import Journal
    from corral.journal.stored import StoredJob

__all__ = ["Resumer", "run_again", "sweep_left_processes"]

log = logging.getLogger("corral.resume")

_STALE_START_TOLERANCE_S = 5.0

#: How many chunks' loaded results :meth:`Resumer.earlier` keeps for :meth:`Resumer.plan`.
_LOADED_KEPT = 256


class Resumer:
    """Keys, ids and restored outcomes for a journaled scheduler."""

    def __init__(self, previous: PreviousJobs[StoredJob], run_dir: Path,
                 attachable: Callable[[StoredJob], bool] | None = None,
                 failures: dict[str, int] | None = None) -> None:
        self.previous = previous
        #: Failed tries so far of the jobs a killed daemon left with a retry to come.
        self._failures = failures or {}
        #: Whether an unfinished job still runs in a cluster this run can attach to.
        self._attachable = attachable or (lambda stored: False)
        self.run_dir = run_dir
        for stored in previous.unfinished():  # whether or not they are dispatched again
            if (stored.status in ACTIVE and stored.kind in ("shell", "script")
                    and not self._attachable(stored)):
                _kill_stale_command(stored)
        #: How often each digest was seen this session, by the digest's hash:
        #: a plain dict of ints, which the garbage collector does not track (a
        #: Counter it would walk, a million entries, at every full collection),
        #: and smaller than one by the digests' text (60 MB a million). Two
        #: digests of one hash, about one chance in 40 million in a run of a
        #: million jobs, would number a job #2 that is #1: it would run again,
        #: never take another's result.
        self._occurrences: dict[int, int] = {}
        #: The same, of slots that are not keys (calls: see identity.job_digests).
        self._slots_seen: dict[int, int] = {}
        self.first_free_id = previous.max_int_id + 1
        #: Where the chunks of earlier automatic maps began, and their sizes,
        #: by function (see chunk_sizes_at), read when a map of it first asks.
        self._chunk_sizes: dict[str, tuple[dict[int, list[int]], list[int]]] = {}
        self._chunks_lock = threading.Lock()
        #: ``{earlier job's id: (restorable, value)}`` of the chunks :meth:`earlier`
        #: found lately: a map dispatches them soon after, and :meth:`plan` takes
        #: their values rather than unpickle them again (a chunk's results,
        #: thousands of them, were loaded twice in a rerun). The oldest go
        #: beyond :data:`_LOADED_KEPT`: those of a map left unread.
        self._loaded_lately: dict[int | str, tuple[bool, Any]] = {}

    def plan(self, batch: list[JobRecord], new_id: Callable[[], int],
             is_taken: Callable[[str], bool], taken: set[str]) -> list[int | str]:
        """Key every job of a validated batch (dependencies first) and return its ids.

        *new_id* makes an id for a job the journal has never seen; *is_taken*
        says whether an id (as text) is used in this session already, and
        *taken* (this batch's ids) gets the ids chosen here. A previous job
        whose id is taken already (by an explicit ``id=``) is not matched: its
        key now belongs to another job.
        """
        keys = [self._key(job) for job in batch]
        if len(batch) > 1:
            self.previous.read_ahead(key for (key, _), job in zip(keys, batch, strict=True)
                                     if not job.always_new)
        ids = []
        for job, (key, slot) in zip(batch, keys, strict=True):
            stored = None if job.always_new else self.previous.get(key)
            if stored is not None and is_taken(str(stored.id)):
                stored = None
            if stored is None and job.id is not None:
                # An id chosen again for what may be other work: the daemon
                # re-dispatching a command, or a script that names its jobs.
                stored = self.previous.by_id(str(job.id))
                if stored is not None and completed_before(stored):
                    stored = None if stored.key != key else stored
            if stored is None and slot != key and job.id is None:
                stored = self._in_its_slot(slot, is_taken, isinstance(job.spec.task, Shell))
                if stored is not None and self._still_in_cluster(stored):
                    ids.append(stored.id)
                    taken.add(str(stored.id))
                    _follow_old_code(job, stored)
                    continue
                if stored is not None:  # the same call, its code changed: it runs again
                    ids.append(stored.id)
                    taken.add(str(stored.id))
                    self._run_again(job, stored)
                    continue
            if stored is None:
                ids.append(job.id if job.id is not None else new_id())
                taken.add(str(ids[-1]))
                continue
            ids.append(stored.id)
            taken.add(str(stored.id))
            restorable, value = self._loaded(stored)
            if restorable and _short_chunk(job, value):
                log.warning("job %s %r: its stored result holds fewer results than its chunk "
                            "has calls (it stopped early); it runs again", stored.id, stored.name)
                restorable = False
            if restorable and stored.kind in ("shell", "script"):
                changed = changed_since(job.spec, stored.spec, stored.started)
                if changed is not None:  # (its text is its key: see corral.core.provenance)
                    log.warning("job %s %r completed in an earlier run, but %s: it runs again",
                                stored.id, stored.name, changed)
                    restorable = False
                else:  # (its row keeps where the result was made: re-attack review)
                    _keep_where_it_was_made(job, stored)
            if restorable:
                job.restored = stored
                job.data = value  # (loaded once, here: Engine._restore keeps it)
                if job.id is not None:
                    _restore_by_id(job, stored, slot)
            elif self._still_in_cluster(stored):
                job.reattach = stored  # not submitted again: found by its native id
            else:
                self._run_again(job, stored)
        return ids

    def _run_again(self, job: JobRecord, stored: StoredJob) -> None:
        """:func:`run_again`, its failed tries counted on where a killed daemon
        left them (its retries are not granted anew)."""
        run_again(job, stored)
        job.failures = self._failures.get(str(stored.id), 0)

    def _key(self, job: JobRecord) -> tuple[str, str]:
        """Give *job* its key and slot (see :func:`corral.core.identity.job_digests`)
        and its journal entry, and return them; the jobs of a batch in order, as
        the keys number the same call's occurrences."""
        if job.always_new:
            key = slot = f"new:{uuid.uuid4().hex}"  # never matched: run it, whatever ran before
        elif job.id is not None:
            # Found by its id; its slot says what it does, so that a rerun
            # that gives the id to other work is told (see _did_other_work).
            key, slot = f"id:{job.id}", f"id:{job.id}@{job_digests(job)[0]}"
        else:
            digest, slot_digest = job_digests(job)
            seen = _counted(self._occurrences, digest)
            key = f"{digest}#{seen}"
            if slot_digest == digest:
                slot = key
            else:  # numbered apart: two versions of one call share a slot, not a key
                slot = f"{slot_digest}#{_counted(self._slots_seen, slot_digest)}"
        job.key, job.slot = key, slot
        job.journal_entry = (key, slot, *describe(job))
        return key, slot

    def _in_its_slot(self, slot: str, is_taken: Callable[[str], bool],
                     named_command: bool = False) -> StoredJob | None:
        """The earlier job of *slot* that a job whose code changed runs again
        in place of; None if there is none, or if it still runs in a cluster
        (the old code runs there, and its row keeps following it). A named
        command's slot is its name and its place among the commands of that
        name: it takes only a row that did not complete (a step added in front
        of a loop's others took the next one's row, each the next's, and all
        ran again: re-attack review)."""
        if not len(self.previous):
            return None
        stored = self.previous.by_slot(slot)
        if stored is None or is_taken(str(stored.id)):
            return None
        if named_command and completed_before(stored):
            return None
        return stored

    def _still_in_cluster(self, stored: StoredJob) -> bool:
        """Whether *stored* was left unfinished in a cluster this run can attach to."""
        return stored.status not in TERMINAL and self._attachable(stored)

    def chunk_sizes_at(self, label: str, first: int) -> list[int]:
        """The sizes, largest first, of the chunks earlier runs made of a map
        of the function *label* (see :func:`corral.core.identity.call_label`)
        starting at the map's call *first*."""
        return self._chunk_places(label)[0].get(first, [])

    def next_chunk_start(self, label: str, first: int) -> int | None:
        """Where the first chunk an earlier run made of a map of *label* after
        the map's call *first* began; None past the last one."""
        starts = self._chunk_places(label)[1]
        found = bisect.bisect_right(starts, first)
        return starts[found] if found < len(starts) else None

    def _chunk_places(self, label: str) -> tuple[dict[int, list[int]], list[int]]:
        """``({start: sizes, largest first}, the starts in order)`` of the chunks
        of *label*'s maps, read from the journal once a label."""
        with self._chunks_lock:
            places = self._chunk_sizes.get(label)
            if places is None:
                found: dict[int, set[int]] = {}
                for command in self.previous.commands_starting(f"{label} ×"):
                    place = chunk_place(command)
                    if place is not None and place[0] == label:
                        found.setdefault(place[1], set()).add(place[2])
                sizes = {start: sorted(known, reverse=True) for start, known in found.items()}
                places = self._chunk_sizes[label] = (sizes, sorted(sizes))
        return places

    def earlier(self, job: JobRecord) -> tuple[bool, bool]:
        """``(an earlier run made this very job, it would be restored)``, as
        :meth:`plan` would key *job* if it were dispatched now. Nothing is
        counted or taken (an automatic map finds its earlier chunks with it)."""
        if not len(self.previous) or job.always_new or job.id is not None:
            return False, False
        digest = job_digest(job)
        stored = self.previous.get(f"{digest}#{self._occurrences.get(hash(digest), 0) + 1}")
        if stored is None:
            return False, False
        loaded = _restorable(stored)
        with self._chunks_lock:
            self._loaded_lately[stored.id] = loaded
            if len(self._loaded_lately) > _LOADED_KEPT:
                del self._loaded_lately[next(iter(self._loaded_lately))]
        return True, loaded[0]

    def _loaded(self, stored: StoredJob) -> tuple[bool, Any]:
        """:func:`_restorable` of *stored*, taken from what :meth:`earlier` loaded
        if it did (and let go of there)."""
        if self._loaded_lately:
            with self._chunks_lock:
                loaded = self._loaded_lately.pop(stored.id, None)
            if loaded is not None:
                return loaded
        return _restorable(stored)


def _follow_old_code(job: JobRecord, stored: StoredJob) -> None:
    """*job*'s code changed since an earlier driver submitted it, which still
    runs in the cluster with the code it had then: follow that one, as a job
    whose code is unchanged would be, rather than submit the new code beside
    it (submitit review: both ran, and the old rows stayed RUNNING for good).
    Its row keeps the old key, so the next run, once it has ended, runs the new code."""
    log.warning("job %s %r: its code changed since an earlier driver submitted it to the "
                "cluster (%s) with the code it had then, which it runs (or ran): followed, not "
                "submitted again; to run the new code once it has ended, run this again",
                stored.id, stored.name, stored.native_id)
    # Its row keeps saying what runs there (re-attack review: the new command text
    # stood beside the old command's result).
    _, slot, kind, _, spec = job.journal_entry
    job.key = stored.key
    job.journal_entry = (stored.key, slot, kind, stored.command, spec)
    job.reattach = stored


def _counted(seen: dict[int, int], digest: str) -> int:
    """Count one more *digest* in *seen*; return how many there have been."""
    number = seen[hash(digest)] = seen.get(hash(digest), 0) + 1
    return number


def _restore_by_id(job: JobRecord, stored: StoredJob, slot: str) -> None:
    """Restore the job of an ``id=`` from *stored*, as the id decides, saying so
    when the job now given that id does other work than the one that made the
    stored result (cold review, a hypertunity port: trials numbered from a
    counter, the grid changed, and trial 7 returned the old trial 7's result
    without a word). Its row keeps the slot of the work that made the result:
    the next rerun is told too (a journal from before slots: nothing known)."""
    if _did_other_work(stored, slot):
        log.warning("job %s %r: restored from the journal, though its function, arguments or "
                    "settings are not those of the run that made that result (the id decides; "
                    "give it another id, or use a new journal, to run it)", job.id, job.name)
    key, _, kind, command, spec = job.journal_entry
    job.journal_entry = (key, stored.slot or key, kind, command, spec)


def _keep_where_it_was_made(job: JobRecord, stored: StoredJob) -> None:
    """The journal entry of *job*, restored from *stored*, with *stored*'s
    record of where its result was made (or none, as a journal from before
    has): the row is written again, and a rerun from the first directory
    after one from another was told it "ran in" the second."""
    made = stored.spec.get("made") if isinstance(stored.spec, dict) else None
    key, slot, kind, command, _ = job.journal_entry
    job.journal_entry = (key, slot, kind, command, encode_spec(
        job.spec, job.meta, made if isinstance(made, dict) else None))


def _did_other_work(stored: StoredJob, slot: str) -> bool:
    """Whether the earlier job of an ``id=`` did other work than the job now
    given that id: another function, other arguments (by their pickled bytes),
    name, directory or environment. A journal from before ids had slots
    cannot say: no."""
    return stored.slot is not None and stored.slot != stored.key and stored.slot != slot


def _short_chunk(job: JobRecord, value: Any) -> bool:
    """Whether *value*, stored for a chunk of a map of fixed ``chunksize``,
    holds fewer results than the chunk has calls: what an aborted chunk
    returned, which a journal written before that was fixed could keep as a
    completion. Restored, it would hand each later result to the wrong item.
    (An automatic map's chunk may stop short by design: its map runs the rest.)"""
    runner = getattr(job.spec.task, "fn", None)
    if not isinstance(runner, ChunkRunner) or runner.budget_s is not None:
        return False
    arguments = job.call_parts[0]
    return bool(arguments) and isinstance(value, list) and len(value) < len(arguments[0])


def completed_before(stored: StoredJob) -> bool:
    """Whether an earlier run's job completed: COMPLETED, or CANCELLED as its
    worker was finishing it, its result kept (see ``Engine._completed_all_the_same``)."""
    return stored.status is JobStatus.COMPLETED or (
        stored.status is JobStatus.CANCELLED and stored.exit_code == 0
        and (stored.reason or "").endswith(COMPLETED_ALL_THE_SAME))


def _restorable(stored: StoredJob) -> tuple[bool, Any]:
    """Whether an earlier job is restored rather than run again, and its value."""
    if not completed_before(stored):
        return False, None
    return _loaded_result(stored)


def _loaded_result(stored: StoredJob) -> tuple[bool, Any]:
    """``(True, value)`` for a completed job whose stored result loads; else
    ``(False, None)``: the journal is damaged there (or the value needs code
    gone since), and the job must run again rather than hand its dependents None."""
    if stored.result_lost:  # (hostile-input review: restored as None)
        log.warning("job %s %r: its result is not stored (too big for the journal, or the "
                    "journal is damaged); it runs again", stored.id, stored.name)
        return False, None
    if stored.result is None:
        return True, None
    try:
        return True, pickle.loads(stored.result)
    except Exception as error:
        log.warning("job %s %r: its stored result cannot be loaded (%s: %s); it runs again",
                    stored.id, stored.name, type(error).__name__, error)
        return False, None


def run_again(job: JobRecord, stored: StoredJob) -> None:
    """*job* runs again as the earlier *stored*: its tries go on counting
    (a job that ran twice says so), and what its last attempt wrote is
    kept as that attempt's (``stdout.N``), as a retry's is."""
    job.attempts = stored.attempts
    if stored.status is JobStatus.SUBMITTED and stored.started is None:
        job.attempts -= 1  # (it waited in Dask's or a cluster's queue and never began:
        # cold review, each such job showed one try more after a rerun)
    # (Where a copied run's files are: not the original's.)
    keep_earlier_attempt(stored.directory or None, stored.attempts)
    if job.jobdir is None:  # (one cancelled before it starts keeps where they are: cold review)
        job.jobdir = stored.directory or None


def sweep_left_processes(journal: Journal) -> None:
    """Kill what earlier sessions of the run that were killed left running on
    this machine, by the mark in its environment: when a driver dies its
    reaper kills its jobs' processes, but not when the reaper was killed with
    it, and a job run again would then run twice at once (attack review)."""
    for session, (mark, pid, started) in journal.marks_left.items():
        created = _created(pid)
        if created is not None and created <= started + _STALE_START_TOLERANCE_S:
            continue  # its driver still runs (this is a copy of a run that goes on): not ours
        killed = kill_marked(MARK_VARIABLE, mark + ".")
        if killed:
            log.warning("killed %d process%s left running by a driver of this run that was "
                        "killed (session %d); their jobs run again", killed,
                        "es" * (killed != 1), session)
        journal.swept(session)


def _created(pid: int | None) -> float | None:
    """When process *pid* started (None: there is no such process, or no pid)."""
    if not isinstance(pid, int):  # (psutil.Process(None) would be this process)
        return None
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError):
        return None


def _kill_stale_command(stored: StoredJob) -> None:
    """Kill a command a dead driver started, if it still runs: it is about to run again.

    Its pid is trusted only if that process started when the journal says the
    job did, so that a recycled pid is never killed.
    """
    if not stored.native_id or not stored.native_id.isdigit() or stored.started is None:
        return
    pid = int(stored.native_id)
    created = _created(pid)
    if created is None or abs(created - stored.started) > _STALE_START_TOLERANCE_S:
        return
    log.warning("killing job %s's command (pid %d), left running by a driver that died; "
                "it runs again", stored.id, pid)
    from corral.runtime.proctree import kill_tree

    kill_tree(pid)
