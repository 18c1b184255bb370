"""What a Scheduler remembers of its jobs, without keeping finished ones alive.

A Scheduler finds its jobs by id (``corral cancel 7``, ``abort(7)``), by name
(``after="prepare"``) and lists them (``jobs()``, ``qsize()``). Holding a
strong reference for each of those would keep every Job, with its callable,
arguments and result, until the program ends: 200,000 small calls would cost
about a gigabyte. So, as ``concurrent.futures`` does, the registry holds jobs
only weakly. An unfinished job stays alive anyway (the control loop holds it),
and a finished one lives exactly as long as the program holds it.

What must outlive a finished job is small and kept apart:

* its name, with how the jobs of that name ended (:class:`FinishedJob`),
  so that ``after="prepare"`` still waits for, or is cancelled by, jobs of
  that name that finished and were dropped. With a journal, each finished
  job is kept instead, in dispatch order: the job keys of jobs after that
  name are made from their keys, and must not depend on when the jobs
  finished. Each is one string in a dict of strings, which the garbage
  collector does not track: a million objects, or one dict holding a million
  of them, would be walked by every full collection, and made a long run
  slower the longer it ran;
* its id, so that no later job takes it (ids name job directories). Numbers
  handed out in this session form one range; only ids chosen otherwise (by
  the caller, or kept from an earlier run of a journal) are stored one by one.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from corral.status import JobStatus

if TYPE_CHECKING:
    from corral.core.job import Job
    from corral.core.record import JobRecord, Owner

__all__ = ["JobRegistry", "FinishedJob", "is_number_text"]


class FinishedJob:
    """Stands, among a new job's dependencies, for a finished job that may be gone.

    It answers what the control loop asks of a finished dependency's record
    (``final``, ``status``, ``id`` and ``name`` for a cancellation's reason,
    ``key`` for the journal's job key, ``owner`` for the scheduler it belongs
    to). Without a journal one stands for all the finished jobs of a name:
    COMPLETED if they all completed, else the first that did not, so a job
    ``after=`` that name is cancelled as it would have been.
    """

    # A journaled run keeps one per finished job: the fewer bytes, the better.
    __slots__ = ("id", "name", "status", "key", "owner")
    final = True
    #: Never filled (only an unfinished job gets dependents), so shared by all.
    dependents: tuple[JobRecord, ...] = ()

    def __init__(self, record: JobRecord, owner: Owner) -> None:
        self.id = record.id
        self.name = record.name
        self.status = record.status
        self.key = record.key
        self.owner = owner

    @classmethod
    def from_entry(cls, job_id: int | str, name: str, entry: str, owner: Owner) -> FinishedJob:
        """The stand-in for a finished job that a journaled run's registry kept
        as *entry* (see :func:`_finished_entry`)."""
        job = cls.__new__(cls)
        key = entry.partition("\0")[2]
        job.id, job.name, job.status, job.key, job.owner = (
            job_id, name, _entry_status(entry), key or None, owner)
        return job

    @property
    def slot(self) -> str | None:
        """Not kept (a million finished jobs would keep a million): a job that
        depends on one the program let go of has, in its slot, that job's key."""
        return self.key

    def __repr__(self) -> str:
        return f"<finished job {self.id} {self.name!r} {self.status.name}>"


def is_number_text(text: str) -> bool:
    """Whether *text* is a job number as corral writes it: "7", not "07", an
    Arabic-Indic seven or "²" (names that look like numbers, as str.isdigit() takes them)."""
    return text.isascii() and text.isdigit() and len(text) < 19 and str(int(text)) == text


#: What a name's table holds for a job still unfinished (its record is in
#: the registry's table of unfinished jobs).
_UNFINISHED = ""
_STATUS_BY_TEXT = {status.value: status for status in JobStatus}


def _entry_status(entry: str) -> JobStatus:
    """The status a :func:`_finished_entry` holds."""
    return _STATUS_BY_TEXT[entry.partition("\0")[0]]


def _finished_entry(record: JobRecord) -> str:
    """A finished job as a journaled run's registry keeps it: its status and
    key in one string, which the garbage collector does not track."""
    return f"{record.status.value}\0{record.key or ''}"


class JobRegistry:
    """The jobs of one Scheduler by id and by name, and the ids it has used.

    Thread-safe: dispatching threads register jobs, the control loop reports
    them finished (:meth:`finished`), any thread looks them up.

    Args:
        keep_each_finished: keep a :class:`FinishedJob` per finished job, in
            dispatch order, so that a dependency on a name hashes the same
            whenever it is dispatched (a journal's job keys need this);
            otherwise one per name.
    """

    def __init__(self, engine: Owner, first_number: int, keep_each_finished: bool) -> None:
        self._engine = engine
        self._keep_each = keep_each_finished
        self._lock = threading.Lock()
        self._by_id: weakref.WeakValueDictionary[int | str, Job] = weakref.WeakValueDictionary()
        #: name -> {job id: _UNFINISHED, then (with keep_each) its
        #: _finished_entry}, in dispatch order. Only strings: see the module's doc.
        self._by_name: dict[str, dict[int | str, str]] = {}
        #: job id -> record, while unfinished: the control loop holds unfinished
        #: records anyway, so this keeps nothing alive that would be freed.
        self._unfinished: dict[int | str, JobRecord] = {}
        self._finished_by_name: dict[str, FinishedJob] = {}  # without keep_each
        self._first_number = first_number
        self.next_number = first_number  # every number below it (from the first) is used
        self._chosen_ids: set[str] = set()  # ids used that were not numbered here

    # -- ids -----------------------------------------------------------------------------

    def id_taken(self, text: str) -> bool:
        """Whether an id (as text: 7 and "7" name the same directory) is used."""
        if text in self._chosen_ids:
            return True
        return is_number_text(text) and self._first_number <= int(text) < self.next_number

    # -- the jobs ------------------------------------------------------------------------

    def register(self, jobs: Iterable[Job], numbered: set[str]) -> None:
        """Remember dispatched jobs; *numbered* are the ids this session numbered."""
        with self._lock:
            for job in jobs:
                job_id = job._record.dispatched_id
                self._by_id[job_id] = job
                if str(job_id) not in numbered:
                    self._chosen_ids.add(str(job_id))
                self._by_name.setdefault(job.name, {})[job_id] = _UNFINISHED
                self._unfinished[job_id] = job._record

    def finished(self, job: JobRecord) -> None:
        """Note that *job* was made final (control-loop thread)."""
        with self._lock:
            job_id = job.dispatched_id
            if self._unfinished.get(job_id) is not job:
                return  # removed, or not dispatched through this registry
            del self._unfinished[job_id]
            namesakes = self._by_name[job.name]
            if self._keep_each:
                namesakes[job_id] = _finished_entry(job)
                return
            del namesakes[job_id]
            if not namesakes:
                del self._by_name[job.name]
            known = self._finished_by_name.get(job.name)
            if known is None or (known.status is JobStatus.COMPLETED
                                 and job.status is not JobStatus.COMPLETED):
                self._finished_by_name[job.name] = FinishedJob(job, self._engine)

    def forget(self, job: Job) -> None:
        """Take a removed job out of the listing and the names (its id stays used)."""
        job_id = job._record.dispatched_id
        with self._lock:
            if self._by_id.get(job_id) is job:
                del self._by_id[job_id]
            if self._unfinished.get(job_id) is job._record:
                del self._unfinished[job_id]
                del self._by_name[job.name][job_id]
            elif self._by_name.get(job.name, {}).get(job_id, _UNFINISHED) != _UNFINISHED:
                del self._by_name[job.name][job_id]  # a finished one kept for its name
            known = self._finished_by_name.get(job.name)
            if known is not None and known.id == job_id:
                del self._finished_by_name[job.name]

    # -- looking up ----------------------------------------------------------------------

    def get(self, job_id: object) -> Job | None:
        """The job with this id, if it is unfinished or still held by the program.

        Any value may be asked (ids come from outside, e.g. the control
        socket's JSON): one of no id's type finds nothing.
        """
        with self._lock:
            # Typed for int | str keys; a lookup with another type is what is meant here.
            return self._by_id.get(job_id)  # type: ignore[call-overload]

    def named(self, name: str) -> list[JobRecord | FinishedJob]:
        """What a job ``after=name`` waits for: the records of the jobs of
        that name, a :class:`FinishedJob` standing for those that finished."""
        with self._lock:
            found: list = [
                self._unfinished[job_id] if entry == _UNFINISHED
                else FinishedJob.from_entry(job_id, name, entry, self._engine)
                for job_id, entry in self._by_name.get(name, {}).items()]
            finished = self._finished_by_name.get(name)
        if finished is not None:
            found.append(finished)
        return found

    def ended_as(self, job_id: int | str, name: str) -> JobStatus | None:
        """How the job *job_id* (named *name*) ended, if it was made final in
        this session (as the control loop knows it: the journal may not have
        it yet); None if not, or no longer known (a run without a journal
        keeps, per name, only the first that did not complete)."""
        forms: list[int | str] = [job_id]
        if isinstance(job_id, str) and is_number_text(job_id):
            forms.append(int(job_id))
        with self._lock:
            namesakes = self._by_name.get(name, {})
            for form in forms:
                entry = namesakes.get(form)
                if entry is not None and entry != _UNFINISHED:
                    return _entry_status(entry)
            known = self._finished_by_name.get(name)
        if known is not None and str(known.id) == str(job_id):
            return known.status
        return None

    def live(self) -> list[Job]:
        """Every job that is unfinished or still held by the program, in
        dispatch order."""
        with self._lock:
            return list(self._by_id.values())
