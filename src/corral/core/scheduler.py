"""The public face of corral: :class:`Scheduler` and its :class:`Submitter`.

A Scheduler is a context manager and a ``concurrent.futures.Executor``. This
module does what must happen in the caller's thread — validate, resolve
dependencies, pickle calls, assign ids — and then hands jobs to the control
loop (:mod:`corral.core.engine`), which owns everything that changes afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import numbers
import os
import shutil
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Never, overload

from corral.core import driver_signals
from corral.runtime.stdfds import open_standard_fds
from corral.backends import (AUTO, DEFAULT_BACKEND, backend_info, backend_names, is_backend,
                             make_backend, outlives_driver, resolve_backend)
from corral.suggest import closest, did_you_mean
from corral.call_fit import check_map_fits
from corral.control.server import ControlServer
from corral.control.verbs import handle as handle_request
from corral.core.engine import Engine, LoopStuck
from corral.errors import (BackendError, DependencyError, DriverTerminated, NotPicklable,
                           ResourceError)
from corral.events import Event
from corral.core.graph import plan_batch, replace_jobs
from corral.core.job import Job, Result, refuse_formatted_jobs
from corral.core.chunk_sizes import AutoChunks, ChunkSizer, EarlierChunks, as_chunk
from corral.core.identity import call_label, map_signature
from corral.core.mapping import MapFeed, chunk_items, chunked, unchunked
from corral.core.record import JobRecord
from corral.options import (JOB_OPTIONS, bounded_tuple, laid_over, parse_options,
                            peers_word_hint)
from corral.core.packing import Packer
from corral.core.registry import JobRegistry, is_number_text
from corral.core.queued import P, QueuedFunction, R, queue_with
from corral.core.resume import Resumer, sweep_left_processes
from corral.core.unused_placement import UnusedPlacement
from corral.core.scheduler_setup import (check_journal_dir, check_workdir, checked_count,
                                         checked_queues, prepare_workdir, remove_stale_spools,
                                         tidy_after_dead_drivers, unknown_argument, with_address)
from corral.journal.run import Run
from corral.journal.workdir_mark import check_workdir_free, claim_workdir
from corral.core.kept_notices import NOTICES_DIR, waiting
from corral.core.run_files import NAMES_NO_JOB_MAY_TAKE
from corral.core.runlog import attach_run_log, warn_user
from corral.runtime.chunks import ChunkRunner
from corral.runtime.loading import refuse_submission_while_importing
from corral.runtime.payload import dumps_call, dumps_function, unpicklable_part
from corral.runtime.threads import SLICE_S, plain_timeout, wait_in_slices
from corral.safe_repr import describe_error, safe_repr
from corral.spec import (Call, FunctionRef, Script, Shell, Task, make_spec, make_task,
                         named_function, spec_maker)
from corral.status import JobStatus, statuses_named
from corral.errors import JournalError
from corral.journal.store import Journal
from corral.journal.stored import StoredJob
from corral.units import parse_duration, parse_memory

if TYPE_CHECKING:
    from corral.config import Config
    from corral.core.notify import Notifier

__all__ = ["Scheduler", "Submitter", "MAP_WINDOW", "CHUNK_WINDOW"]

#: Calls that :meth:`Submitter.map` makes and dispatches as one batch (at
#: most two batches are unfinished at a time). Small enough that a map's
#: unfinished jobs stay a small heap: each is about twenty objects the garbage
#: collector tracks, and its full collections walk all of them. With 10,000 a
#: journaled million-call map spent a fifth of its time in them; with 1,000,
#: 2 %, at the same rate on 50,000 calls without a journal.
MAP_WINDOW = 1_000
#: The most chunk jobs of a ``map(chunksize=N)`` made and dispatched at once for
#: the sake of keeping workers busy (two per core, where the backend has cores).
CHUNK_WINDOW = 32
#: An automatic chunk (``chunksize="auto"``) that has run this many times the
#: backend's chunk time ends after the call that runs; other jobs take the rest.
AUTO_CHUNK_BUDGET = 4


class Submitter:
    """Submits jobs with a set of default options; made by :meth:`Scheduler.options`.

    Every method validates its options at once and raises ``ValueError``
    (naming the option and the accepted forms) for a bad one.
    """

    def __init__(self, scheduler: Scheduler, defaults: Mapping[str, Any],
                 profiled: Mapping[str, Any] | None = None) -> None:
        self._scheduler = scheduler
        self._defaults = dict(defaults)
        # Options that profiles brought in: beneath every option given by name,
        # wherever in the chain it was given (options review: a profile named
        # after options(memory="8G") overrode its memory).
        self._profiled = dict(profiled or {})

    def options(self, **options: Any) -> Submitter:
        """A submitter whose defaults are these *options* on top of the current ones.

        ``profile="name"`` brings in a named set of options from the config
        files (see :mod:`corral.config`); options given by name, here or
        earlier in the chain, win over it.
        """
        profiled, options = self._layered(options)
        parse_options({**profiled, **options})
        return Submitter(self._scheduler, options, profiled)

    def _layered(self, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The profiles' options and those given by name, with *options* on top."""
        given = dict(options)
        profiled = self._profiled
        if "profile" in given:
            profiled = laid_over(profiled, self._scheduler._profile(given.pop("profile")))
        return profiled, laid_over(self._defaults, given)

    def _job_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """A job's options: *options* on top of this submitter's, the profiles' beneath."""
        if not self._profiled and "profile" not in options and not (
                "env" in options and "env" in self._defaults):
            return {**self._defaults, **options}  # (the same, on every submit's path)
        return laid_over(*self._layered(options))

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Job:
        """Run ``fn(*args, **kwargs)`` as a job (Executor semantics); return its Job.

        A Job among the arguments is a dependency; its result is passed in its place.

        Raises:
            TypeError: *fn* cannot take these arguments (Python's words, and
                for a keyword named like a job option, ``tokens=2`` or
                ``tokns=2``, where job options go:
                ``scheduler.options(tokens=2).submit(fn)``).
        """
        return self._make(make_task(fn, args, kwargs), {})

    @overload
    def job(self, func: Callable[P, R], /, **options: Any) -> QueuedFunction[P, R]: ...

    @overload
    def job(self, func: None = None, /, **options: Any
            ) -> Callable[[Callable[P, R]], QueuedFunction[P, R]]: ...

    def job(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorate a function so that calling it submits it as a job.

        ``@submitter.job`` or ``@submitter.job(cores=2, walltime="1h")``: a call
        of the decorated function returns its :class:`Job` at once; the plain
        function stays reachable as ``.func``. See :mod:`corral.core.queued`.

        Raises:
            ValueError: a bad option, at decoration time, naming it.
            TypeError: what is decorated is not callable.
        """
        return queue_with(self, func, options)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int | Literal["auto"] = 1) -> Iterator[Any]:
        """Like ``Executor.map``: results in order, jobs run in parallel.

        Every call is a job of its own (status, result, output, journal row),
        made and dispatched in batches of up to :data:`MAP_WINDOW` (1,000) calls (the
        options are checked once per map), at most two batches unfinished at
        a time; the iterables are read as batches are made, not all at once
        as ``Executor.map`` does, so a map over millions of items whose
        results are read runs in flat memory (see :mod:`corral.core.mapping`).
        Every call runs whether its result is read or not. Tiny calls travel
        to the workers in batches anyway (see :mod:`corral.core.ahead`).
        Leaving the iterator early cancels the jobs whose results were not read.

        With *chunksize* N above 1, every N calls are one job instead, as
        ``ProcessPoolExecutor.map`` chunks them: the map still yields each
        call's result and raises each call's exception at its place, but a
        chunk has one status, one output and one journal row, and is retried,
        cancelled and resumed as a whole (see :mod:`corral.runtime.chunks`).
        For calls of microseconds, where a job per call costs more than the
        call, this is many times faster. With ``"auto"``, the size of each
        chunk is learnt from how long the calls before it took: calls of
        microseconds go thousands to a job, calls that take longer than the
        backend's chunk time (5 ms locally) one to a job (see
        :mod:`corral.core.chunk_sizes`).

        Raises:
            TypeError: *fn* cannot take one argument from each iterable.
            ValueError: *fn* is neither a callable nor ``"package.module:function"``,
                *chunksize* is neither a whole number of at least 1 nor ``"auto"``,
                or a bad option (when called), or the first call (or chunk) cannot
                be pickled; from the iterator, at its place after the results
                before it, for a later call that cannot be pickled (its message
                names the input item, or the chunk's, counting from 0).
            TimeoutError: from the iterator, when a result is not there
                *timeout* seconds after this call.
            RuntimeError: called in an on_event, on_finish or done callback.
        """
        # Its calls are dispatched by a thread that needs the loop: read there, they never
        # would come.
        self._scheduler._refuse_on_loop_thread("map()")
        refuse_submission_while_importing()  # (its calls are dispatched by another thread)
        deadline = None if timeout is None else time.monotonic() + timeout
        automatic = isinstance(chunksize, str) and chunksize == "auto"
        if not automatic and (type(chunksize) is not int or not 1 <= chunksize <= sys.maxsize):
            too_large = type(chunksize) is int and chunksize > sys.maxsize
            raise ValueError("map(): chunksize must be a whole number of calls per job, at least "
                             "1 (a job per call)" + (", at most sys.maxsize" if too_large else "")
                             + f", or 'auto', not {safe_repr(chunksize)}")
        task = make_task(fn, (), {}, arguments_later=True)
        if not isinstance(task, (Call, FunctionRef)):
            raise ValueError(f"map() takes a callable or 'package.module:function', not "
                             f"{safe_repr(fn)}")
        function = task.fn if isinstance(task, Call) else named_function(task.target)
        if function is not None:
            check_map_fits(function, len(iterables))
        calls: Iterator[tuple] = zip(*iterables, strict=False)
        window = MAP_WINDOW
        fixed = None if automatic else int(chunksize)  # calls per job, if not learnt
        chunks = fixed is None or fixed > 1
        chunk_seconds = self._scheduler._engine.capabilities.chunk_seconds
        runner = None
        if chunks:
            runner = ChunkRunner(task.fn if isinstance(task, Call) else task.target,
                                 AUTO_CHUNK_BUDGET * chunk_seconds if automatic else None)
            task = make_task(runner, arguments_later=True)
        spec_for = spec_maker(make_spec(task, self._job_options({})))
        scheduler = self._scheduler

        def dispatch(batch: list[Job]) -> None:
            if batch:
                scheduler._dispatch(batch, collectable=False)

        def make(arguments: tuple) -> Job:
            return Job._from_spec(spec_for(arguments))

        def cancel(jobs: list[Job], left_by: BaseException | None, began: float) -> None:
            scheduler._cancel_many(jobs, driver_signals.unread_reason(left_by, began))

        follow_up = None
        if runner is not None:
            # Enough chunks at once to keep every slot busy (at least MAP_WINDOW
            # calls' worth of a fixed size); not more: the driver holds each chunk's calls.
            slots = scheduler._slots or CHUNK_WINDOW
            if fixed is None:
                follow_up = scheduler._automatic_chunks(runner, make, chunk_seconds)
                calls = follow_up.chunks(calls)
                window = min(CHUNK_WINDOW, max(4, 2 * slots))
            else:
                calls = chunked(calls, fixed)
                window = max(-(-MAP_WINDOW // fixed), min(CHUNK_WINDOW, 2 * slots))
        feed = MapFeed(make, dispatch, cancel, calls, window, follow_up,
                       chunk_items if chunks else None, deadline)
        scheduler._feeds.add(feed)
        results = feed.results(deadline)
        return unchunked(results) if chunks else results

    def shell(self, command: str | Iterable[Any], **options: Any) -> Job:
        """Run a shell command: a string goes to ``/bin/sh -c``, a list runs without a shell."""
        if isinstance(command, (bytes, bytearray)) or not isinstance(command, (str, Iterable)):
            raise ValueError("shell() takes a command string or a list of arguments, not "
                             f"{safe_repr(command)}")
        checked = command if isinstance(command, str) else bounded_tuple(command, "command")
        refuse_formatted_jobs([checked] if isinstance(checked, str) else checked, "the command")
        return self._make(make_task(Shell(checked)), options)

    def script(self, path: str | os.PathLike[str], *argv: Any, **options: Any) -> Job:
        """Run ``python path argv…`` in a fresh interpreter."""
        refuse_formatted_jobs(argv, "the script's arguments", verb="hold")
        return self._make(make_task(Script(os.fspath(path), tuple(argv))), options)

    def call(self, target: str, *args: Any, kwargs: Mapping[str, Any] | None = None,
             **options: Any) -> Job:
        """Import ``"package.module:function"`` in a worker and call it with *args*/*kwargs*."""
        if not isinstance(target, str):
            raise ValueError(f"call() takes 'package.module:function', not {safe_repr(target)}; "
                             "use submit() for a callable")
        stray = [name for name in options if name not in JOB_OPTIONS and name != "profile"
                 and closest(name, JOB_OPTIONS) is None and peers_word_hint(name) is None]
        if stray:  # (a misspelt option is told the option it is like, further on)
            raise ValueError(_stray_call_keyword(target, stray[0]))
        return self._make(make_task(FunctionRef(target, tuple(args), dict(kwargs or {}))), options)

    def _make(self, task: Any, options: Mapping[str, Any]) -> Job:
        job = Job._from_task(task, self._job_options(options))
        self._scheduler._dispatch([job], collectable=False)
        return job


class Scheduler(Executor):
    """Runs jobs with resources and dependencies on a backend.

    Args:
        backend: where jobs run: ``"local"`` (this machine), a cluster scheduler
            (``"slurm"``, ``"sge"``, ``"pbs"``, ``"lsf"``, or one described in
            the settings), ``"dask"``, or ``"auto"``: the first scheduler that
            answers here, else local (``corral backends`` lists them and why).
        cores: cores to pack jobs into; default all CPUs but one (at least 1): those
            this process may run on, and no more than its cgroup's CPU quota allows.
        memory: memory to pack jobs into (``"16G"``, int MB); default all of it.
        gpus: GPUs to hand out; default those visible (CUDA_VISIBLE_DEVICES or nvidia-smi).
        max_jobs: at most this many jobs run at once, whatever their size.
        queues: named queues and how many of their jobs may run at once, e.g. ``{"io": 2}``.
        tokens: a pool of tokens; a job with ``tokens=k`` holds k of them while it runs.
        workdir: directory for the jobs' files (``<workdir>/<job id>/stdout`` ...);
            default a temporary one, removed at shutdown (outputs are kept in memory; one
            of more than 4 MB in its files, until its Job is freed).
        on_finish: called with each finished Job (not cancelled ones); return True
            to run that job again.
        abort_grace: seconds an aborted job gets to stop by itself before it is killed.
        journal: a run directory to journal the run in (created private to the
            user). Running the same script again with the same journal returns
            the results of jobs that completed before instead of running them
            again; ``corral --run DIR status`` shows the run from any terminal,
            and ``corral --run DIR pause`` (resume, cancel, ...) controls it.
            Job files go there too unless *workdir* says otherwise.
        config: settings for e-mail notifications (``notify=`` job option);
            default: read from the config files (see :mod:`corral.config`).
        backend_options: settings of the backend itself; for batch schedulers see
            :mod:`corral.backends.batch.settings` (``poll_interval``,
            ``array_throttle``, ...); ``corral backends`` lists each backend's.
        address: where the backend's own scheduler listens, for a backend that
            connects to one: Dask's ``"tcp://host:8786"``, or a
            ``distributed.Client`` or cluster object (LocalCluster, dask-jobqueue).

    Raises:
        ValueError: a bad argument, naming it and the accepted forms.
    """

    def __init__(self, backend: str = DEFAULT_BACKEND, cores: int | None = None,
                 memory: int | str | None = None, gpus: int | None = None,
                 max_jobs: int | None = None, queues: Mapping[str, int] | None = None,
                 tokens: int | None = None, workdir: str | os.PathLike[str] | None = None,
                 on_finish: Callable[[Job], Any] | None = None,
                 abort_grace: float | str = 5.0,
                 journal: str | os.PathLike[str] | None = None,
                 config: Config | None = None,
                 backend_options: Mapping[str, Any] | None = None,
                 address: Any = None,
                 _owner: str = "script", **unknown: Never) -> None:
        if unknown:
            raise TypeError(unknown_argument(next(iter(unknown)), Scheduler))
        if not isinstance(backend, str):
            raise ValueError(f"backend={backend!r} must be a backend name such as "
                             f"{DEFAULT_BACKEND!r}; to set how many jobs run at once use "
                             "Scheduler(cores=N)")
        self._config = config
        if backend == AUTO or not is_backend(backend):  # maybe one the settings describe
            from corral.config import register_schedulers

            register_schedulers(self._loaded_config())
        backend = resolve_backend(backend)
        if backend_options is not None and not isinstance(backend_options, Mapping):
            raise ValueError(f"backend_options={backend_options!r} must be a dict of settings, "
                             "e.g. {'array_throttle': 8}")
        backend_options = with_address(backend, address, backend_options)
        cores = checked_count("cores", cores, 1)
        memory_mb = None if memory is None else parse_memory(memory, "memory")
        gpus = checked_count("gpus", gpus, 0)
        self._max_jobs = checked_count("max_jobs", max_jobs, 1)
        self._queues = checked_queues(queues)
        self._tokens = checked_count("tokens", tokens, 0) or 0
        if on_finish is not None and not callable(on_finish):
            raise ValueError(f"on_finish={on_finish!r} must be a callable taking a Job")
        grace = parse_duration(abort_grace, "abort_grace")
        if journal is not None:
            check_journal_dir(journal)
        check_workdir(workdir)  # before anything is started that would need stopping
        _watch_interpreter_exit()
        _refuse_after_interpreter_exit()  # before anything is started
        tidy_after_dead_drivers()
        driver_signals.install()
        # A driver started with stdout closed (`>&-`) opened its run's lock as fd 1:
        # a write to stdout went into it (fix review). /dev/null there, as in its workers.
        open_standard_fds()
        self._journal: Journal | None = None
        self._resumer: Resumer | None = None
        self._control: ControlServer | None = None
        self._detach_log: Callable[[], None] | None = None
        if journal is not None:
            self._journal = Journal(journal, kind=_owner, backend=backend)
            attachable = None
            if outlives_driver(backend):
                current = self._journal

                def attachable(stored: StoredJob) -> bool:
                    return (current.outlives_driver(stored) and current.session_backends.get(
                        stored.session or 0) == backend)
            self._resumer = Resumer(self._journal.previous, self._journal.run_dir, attachable,
                                    self._journal.failures_so_far)
        settings: dict[str, Any] = {}
        if self._journal is not None and backend_info(backend).capabilities.packs_locally:
            # Spool files inside the run: a killed driver's are found (and removed) next time.
            settings["spool_parent"] = os.fspath(self._journal.run_dir)
            remove_stale_spools(self._journal.run_dir)
        if self._journal is not None:
            sweep_left_processes(self._journal)  # before anything runs again
        try:
            self._backend = make_backend(backend, cores=cores, memory=memory_mb, gpus=gpus,
                                         options=dict(backend_options or {}), **settings)
        except BaseException:
            self._close_journal()
            raise
        try:
            # The local backend's: what its jobs' processes carry (see sweep_left_processes).
            mark: str | None = getattr(self._backend, "worker_mark", None)
            if self._journal is not None and mark is not None:
                self._journal.record_worker_mark(mark)
            if workdir is None and self._journal is not None:
                self._run_dir, self._temporary = self._journal.run_dir, False
            else:
                self._run_dir, self._temporary = prepare_workdir(
                    workdir, getattr(self._backend, "workdir_parent", None))
                if self._journal is not None:
                    claim_workdir(self._run_dir, self._journal.run_dir)
                elif not self._temporary:
                    check_workdir_free(self._run_dir, None)
            capacity = self._backend.capacity()
            #: Jobs of one core that may run at once (None: the backend does not say).
            self._slots = capacity.cores
            if self._journal is not None:
                self._journal.record_capacity(capacity.cores, capacity.memory_mb, capacity.gpus)
            packer = Packer(capacity, self._max_jobs, self._queues, self._tokens)
            self._engine = Engine(self._backend, packer, self._run_dir, on_finish, grace,
                                  journal=self._journal,
                                  capabilities=backend_info(backend).capabilities)
            self._engine.on_stopped = self._finish_outside_loop
            self._engine.files_are_temporary = self._temporary
            self._unused_placement = UnusedPlacement(backend)
            self._plain = Submitter(self, {})
            #: The feeders of map() calls that may still dispatch (see corral.core.mapping).
            self._feeds: weakref.WeakSet[MapFeed] = weakref.WeakSet()
            self._lock = threading.Lock()  # guards dispatching, the registry's ids and shutdown
            self._automatic_maps: dict[str, int] = {}  # by signature: see _automatic_map_number
            self._registry = JobRegistry(
                self._engine, self._resumer.first_free_id if self._resumer else 1,
                keep_each_finished=self._resumer is not None)
            self._engine.on_final = self._registry.finished
            self._engine.on_removed = self._registry.forget
            self._shut = False
            self._owner_pid = os.getpid()
            self._owner_kind = _owner
            #: Set by the daemon: a ``corral stop`` request sets it (scripts refuse it).
            self._stop_requested: threading.Event | None = None
            self._paused_by_request = False  # (see corral.control.verbs: _pause, _stop)
            #: Set by the daemon: follows its config files (corral.cli.daemon_settings).
            self._settings_check: Callable[[], str | None] | None = None
            if self._journal is not None:
                if self._journal.left_paused:  # before it serves: a submit came first and ran
                    self._engine.set_paused(True)
                self._detach_log = attach_run_log(self._journal.run_dir)
                self._send_notices_left()
                self._control = ControlServer(functools.partial(handle_request, self),
                                              self._journal.run_dir,
                                              self._journal.keep_lock_file)
                # A daemon answers no request before it has taken up a dead one's jobs.
                self._control.start(held=_owner == "daemon")
            _open_schedulers.add(self)  # shut down at interpreter exit
        except BaseException:  # stop what was started, free the run for the next try
            engine = getattr(self, "_engine", None)
            if engine is not None:  # (its loop, if it runs, closes the backend: closed
                engine.close(wait=True)  # under its wait, the loop crashed: attack review)
            else:
                self._backend.close()
            if self._control is not None:
                self._control.stop()
            self._close_journal()
            raise

    # -- submitting ---------------------------------------------------------------------

    def options(self, **options: Any) -> Submitter:
        """A submitter that applies these job options to everything it submits."""
        return self._plain.options(**options)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Job:
        """Run ``fn(*args, **kwargs)`` as a job and return its :class:`Job`."""
        return self._plain.submit(fn, *args, **kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int | Literal["auto"] = 1) -> Iterator[Any]:
        return self._plain.map(fn, *iterables, timeout=timeout, chunksize=chunksize)

    map.__doc__ = Submitter.map.__doc__  # the whole text, for help(Scheduler.map)

    @overload
    def job(self, func: Callable[P, R], /, **options: Any) -> QueuedFunction[P, R]: ...

    @overload
    def job(self, func: None = None, /, **options: Any
            ) -> Callable[[Callable[P, R]], QueuedFunction[P, R]]: ...

    def job(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorate a function so that calling it submits it as a job (see
        :meth:`Submitter.job`): ``@scheduler.job`` or ``@scheduler.job(cores=2)``."""
        return self._plain.job(func, **options)

    def shell(self, command: str | Iterable[Any], **options: Any) -> Job:
        """Run a shell command (string: ``/bin/sh -c``; list: no shell)."""
        return self._plain.shell(command, **options)

    def script(self, path: str | os.PathLike[str], *argv: Any, **options: Any) -> Job:
        """Run ``python path argv…`` in a fresh interpreter."""
        return self._plain.script(path, *argv, **options)

    def call(self, target: str, *args: Any, kwargs: Mapping[str, Any] | None = None,
             **options: Any) -> Job:
        """Call ``"package.module:function"`` in a worker."""
        return self._plain.call(target, *args, kwargs=kwargs, **options)

    def dispatch(self, jobs: Job | Iterable[Job]) -> list[Job]:
        """Hand unsubmitted jobs to the scheduler without waiting; return them.

        Dependencies that were never dispatched (Jobs among arguments or in
        ``after=``) are dispatched with them.

        Raises:
            ValueError: a job was already dispatched, depends on another
                scheduler's job, or asks for an unknown queue.
            ResourceError: a job asks for more than this scheduler has.
            DependencyError: a cycle, or ``after=`` naming no job.
            RuntimeError: the scheduler was shut down, or the interpreter is exiting.
        """
        return self._dispatch(jobs, collectable=True)

    def _automatic_chunks(self, runner: ChunkRunner, make: Callable[[tuple], Job],
                          seconds: float) -> AutoChunks:
        """The chunks of one ``map(chunksize="auto")`` of *runner*'s function."""
        engine = self._engine

        def begin(first_call: tuple) -> None:  # numbered before any chunk is keyed
            runner.series = self._automatic_map_number(map_signature(runner, first_call))

        return AutoChunks(
            ChunkSizer(seconds), make, self._earlier_chunks(runner, make),
            lambda job, reason: engine.post(engine.note_reason, job._record, reason), begin)

    def _automatic_map_number(self, signature: str) -> int:
        """How many automatic maps of the same function, whose first call was
        the same (*signature*), this scheduler has begun, this one included.
        Only such maps would take each other's chunks in a rerun; numbered in
        the order they begin, as a rerun of the same program begins them."""
        with self._lock:
            number = self._automatic_maps[signature] = self._automatic_maps.get(signature, 0) + 1
        return number

    def _earlier_chunks(self, fn: Any, make: Callable[[tuple], Job]) -> EarlierChunks | None:
        """What an automatic map (``chunksize="auto"``) of a journaled rerun
        knows of the chunks earlier runs made of *fn*'s map; None when there
        is no earlier run. (A chunk with Jobs among its arguments is keyed
        with theirs, known only when it is dispatched: it is not restored.)"""
        resumer = self._resumer
        if resumer is None or not len(resumer.previous):
            return None
        label = call_label(fn)

        def found(calls: list[tuple], first: int) -> tuple[bool, bool]:
            record = make((as_chunk(calls), first))._record
            return (False, False) if _value_deps(record) else resumer.earlier(record)

        return EarlierChunks(lambda first: resumer.chunk_sizes_at(label, first), found,
                             lambda first: resumer.next_chunk_start(label, first))

    def _dispatch(self, jobs: Job | Iterable[Job], collectable: bool) -> list[Job]:
        """:meth:`dispatch`; *collectable* jobs' Results go to :meth:`collect`
        (those of submit() and the like do not: nobody would collect them)."""
        refuse_submission_while_importing()  # (in a worker: see corral.runtime.loading)
        given = [jobs] if isinstance(jobs, Job) else list(jobs)
        for job in given:
            if not isinstance(job, Job):
                raise TypeError(f"dispatch() takes Jobs, not {job!r}")
            if job._record.owner is not None:
                raise ValueError(f"{job!r} was already dispatched")
            if job.status is not JobStatus.NEW or job.done():
                raise ValueError(f"{job!r} cannot be dispatched: it is {job.status.name}")
        driver_signals.going_on()
        with self._lock:
            _refuse_after_interpreter_exit()  # before anything is registered
            if self._shut:
                raise RuntimeError("cannot dispatch jobs after the scheduler was shut down")
            if self._engine.crash is not None:  # nothing would ever run them
                raise BackendError(f"cannot dispatch jobs: this scheduler's control loop "
                                   f"crashed ({self._engine.crash!r}; see the log); make a "
                                   "new Scheduler")
            batch = plan_batch(given, self._registry.named, _value_deps, self._record_with_id)
            records = [job._record for job in batch]
            first_number = self._registry.next_number
            numbered: set[str] = set()
            try:
                ids = self._validate(records, numbered)
            except BaseException:
                self._registry.next_number = first_number  # the numbers stay free
                raise
            for job, record, job_id in zip(batch, records, ids, strict=True):
                record.id = job_id
                record.future = job  # the loop resolves it, and keeps it alive until then
                record.owner = self._engine
                record.collectable = collectable
            self._registry.register(batch, numbered)
            with self._engine.results_ready:  # collect(n) may count them from now on
                self._engine.unfinished += len(batch)
                if collectable:
                    self._engine.uncollected += len(batch)
            # Posted under the lock, so that a concurrent shutdown() is posted after it.
            self._engine.post(self._engine.add, records)
        return given

    def _validate(self, batch: list[JobRecord], numbered: set[str]) -> list[int | str]:
        """Check every job and pickle its call; assign nothing until all pass.
        The ids numbered here (not chosen by the caller or the journal) are
        added to *numbered*."""
        chosen: list[int | str | None] = []  # the caller's id, or None: one is made below
        taken: set[str] = set()
        functions: dict[int, tuple[Any, bytes]] = {}  # pickled once per batch
        for job in batch:
            if job.status is not JobStatus.NEW and job.owner is None:  # a cancelled dependency
                raise ValueError(f"{_label(job)} cannot be dispatched: it is {job.status.name}")
            for dep in job.deps:
                if dep.owner is not None and dep.owner is not self._engine:
                    raise ValueError(f"job {job.name!r} depends on {_label(dep)}, "
                                     "which belongs to another scheduler")
            try:
                self._backend.check(job.spec.resources)
            except ResourceError as error:
                hint = "" if error.setting is None else "; ask for less or " + self._where_set(
                    error.setting, "N", f"raise Scheduler({error.setting}=...)")
                raise ResourceError(f"job {job.name!r} {error}{hint}",
                                    setting=error.setting) from None
            self._check_queue_and_tokens(job)
            job_id = job.id
            if isinstance(job_id, str):  # (most jobs' ids are numbered: None here)
                if job_id in ("", ".", "..") or "/" in job_id or "\0" in job_id:
                    raise ValueError(f"job id {job_id!r} cannot name a directory: use a "
                                     "non-empty string without '/'")
                if job_id in NAMES_NO_JOB_MAY_TAKE:
                    raise ValueError(
                        f"job id {job_id!r} names a file corral keeps in a run directory, where "
                        f"the job's files would go: choose another (these are taken: "
                        f"{', '.join(sorted(NAMES_NO_JOB_MAY_TAKE))})")
                if job_id in backend_names():  # (attack review: clean of it took them all)
                    raise ValueError(
                        f"job id {job_id!r} is a backend's name, which a cluster backend gives "
                        "the folder of a run's batch submissions, where the job's files would "
                        "go: choose another")
            if job_id is not None:
                if self._registry.id_taken(str(job_id)) or str(job_id) in taken:
                    raise ValueError(f"job id {job_id!r} is already used in this scheduler "
                                     "(ids name job directories: 7 and '7' are the same)")
                taken.add(str(job_id))
            chosen.append(job_id)
            _pickle_call(job, functions)
            if job.spec.notify:
                self._notifier(job)  # a missing [smtp] table is reported now, not at the first mail
        ids: list[int | str]
        if self._resumer is not None:
            ids = self._resumer.plan(batch, lambda: self._new_id(taken, numbered),
                                     lambda job_id: job_id in taken
                                     or self._registry.id_taken(job_id), taken)
        else:
            ids = [self._new_id(taken, numbered) if job_id is None else job_id
                   for job_id in chosen]
        for job in batch:
            for dep in job.value_deps:
                dep.feeds_values = True
        if self._unused_placement.options:  # (a cluster's; once the batch is sure to go)
            for job in batch:
                self._unused_placement.note(job.name, job.spec.placement)
        return ids

    def _placement_unused(self, options: Mapping[str, Any]) -> str | None:
        """What a ``corral submit`` of *options* is told of the placement
        options this run's backend cannot send (see corral.core.unused_placement)."""
        return self._unused_placement.unused_in(options)

    def _new_id(self, taken: set[str], numbered: set[str]) -> int:
        """The next number not taken by an explicit ``id=`` (this batch's or earlier)."""
        registry = self._registry
        while True:
            job_id = registry.next_number
            if registry.id_taken(str(job_id)) or str(job_id) in taken:
                registry.next_number += 1
                continue
            registry.next_number += 1
            taken.add(str(job_id))
            numbered.add(str(job_id))
            return job_id

    def _profile(self, name: Any) -> dict[str, Any]:
        """The options of profile *name* in the config files."""
        return self._loaded_config().profile(name)

    def _loaded_config(self) -> Config:
        if self._config is None:
            from corral.config import load_config

            self._config = load_config()
        return self._config

    def _notifier(self, job: JobRecord) -> Notifier:
        """The e-mail sender, made on first use from the [smtp] config.

        Raises:
            ValueError: *job* asks for mail and the config has no ``[smtp]``
                table, or its password variable is not set.
        """
        if self._engine.notifier is None:
            from corral.core.notify import Notifier

            config = self._loaded_config()
            if config.smtp is None:
                raise ValueError(f"job {job.name!r}: notify= needs a mail server and none is "
                                 f"configured; {config.where_to_set_smtp()}")
            if config.smtp.unset_password is not None:
                raise ValueError(f"job {job.name!r}: notify= cannot send mail: "
                                 f"{config.smtp.unset_password}")
            self._engine.notifier = Notifier(config.smtp, keep_in=self._notices_dir())
        return self._engine.notifier

    def _notices_dir(self) -> Path | None:
        """Where a journaled run's notices wait until they are sent."""
        return None if self._journal is None else self._journal.run_dir / NOTICES_DIR

    def _send_notices_left(self) -> None:
        """Send the job notices a killed driver of this run left undelivered
        (see :mod:`corral.core.kept_notices`) through the config's ``[smtp]``;
        with no mail server to send them through, say that they wait."""
        directory = self._notices_dir()
        if directory is None or not waiting(directory):
            return
        log = logging.getLogger("corral.notify")
        try:
            smtp = self._loaded_config().smtp
        except Exception as error:  # (a script that sends no mail must still run)
            log.warning("job notices left unsent in %s by a killed driver wait there: the "
                        "config cannot be read (%s)", directory, error)
            return
        if smtp is None or smtp.unset_password is not None:
            log.warning("job notices left unsent in %s by a killed driver wait there: %s",
                        directory, "no [smtp] table to send them through" if smtp is None
                        else smtp.unset_password)
            return
        from corral.core.notify import Notifier

        self._engine.notifier = Notifier(smtp, keep_in=directory)

    def _check_queue_and_tokens(self, job: JobRecord) -> None:
        queue = job.spec.queue
        if queue is not None and queue not in self._queues:
            known = sorted(self._queues)
            where = self._where_set("queues", "{name = 2}", "Scheduler(queues={'name': capacity})")
            hint = "; " + did_you_mean(queue, known, cutoff=0.5, otherwise=(
                f"known queues: {', '.join(known)}" if known else
                f"this scheduler has no queues ({where})"))
            daemon = self._owner_kind == "daemon"  # (fyrd review: told partition= in a shell)
            cluster = ("" if self._engine.capabilities.packs_locally else
                       f"; {'--queue' if daemon else 'queue='} is one of corral's own queues: "
                       f"a cluster's queue is {'--partition' if daemon else 'partition='}")
            raise ValueError(f"job {job.name!r} asks for unknown queue {queue!r}{hint}{cluster}")
        if job.spec.tokens > self._tokens:
            where = self._where_set("tokens", "N", "Scheduler(tokens=N)")
            raise ResourceError(f"job {job.name!r} asks for {job.spec.tokens} tokens but the "
                                f"scheduler's pool has {self._tokens} ({where})")

    def _where_set(self, setting: str, example: str, in_python: str) -> str:
        """Where a person sets a scheduler setting: the daemon's come from the
        config files it reads, named (a newcomer would otherwise write it in
        the submitting directory's corral.toml, which the daemon does not read)."""
        if self._owner_kind == "daemon":
            from corral.config_files import every_config_path, where_to_write

            files = where_to_write(every_config_path(self._engine.run_dir))
            return f"set {setting} = {example} in the [daemon] table of {files}"
        return in_python

    def _at_exit(self) -> None:
        # A child forked from this program (a fork-based pool) runs the same
        # hooks when it ends; the scheduler is not its to wait for.
        if os.getpid() == self._owner_pid:
            reason = driver_signals.termination_reason()
            if reason is not None:  # SIGTERM/SIGINT ended the program: do not wait for jobs
                self._hurry_mail()
                try:
                    self._engine.call(self._engine.interrupt, reason)
                except LoopStuck:
                    self._give_up()
                    return
            else:
                self._say_what_exit_waits_for()
            self.shutdown(wait=True)

    def _say_what_exit_waits_for(self) -> None:
        """A program that ends without ``shutdown()`` waits for its jobs, as
        ``concurrent.futures`` does; it sat silent for as long (cold review: a
        Parsl user's script, which relies on the DataFlowKernel's own exit).
        Said to a person at a terminal only: an Executor's exit is silent, and
        programs that read its stderr count on that (CPython's own tests do)."""
        try:
            at_a_terminal = sys.stderr is not None and sys.stderr.isatty()
        except (ValueError, OSError):  # (closed)
            at_a_terminal = False
        left = sum(1 for job in self.jobs() if not job.done()) if at_a_terminal else 0
        if left:
            them = "them" if left > 1 else "it"
            warn_user(f"the program ended with {left} job{'s' if left > 1 else ''} not "
                      f"finished; waiting for {them} (end a with-block or call shutdown() "
                      "to say when; shutdown(cancel_futures=True) drops those not started)")

    # -- results ------------------------------------------------------------------------

    def collect(self, n: int = 0, timeout: float | None = None, *,
                n_results: None = None) -> list[Result]:
        """Return finished jobs' :class:`Result` records, each once, in finishing order.

        Only jobs handed over with :meth:`dispatch` are collected: a job from
        :meth:`submit` (and the like) is read through its Job, and keeping its
        Result here until someone collects it would keep it forever.

        With ``n <= 0`` return what is available now; otherwise wait until at
        least *n* are available and return all of them.

        *n_results*, hypertunity's name for *n*, is refused with a pointer to
        *n* (a cold review: Python's own "unexpected keyword" said nothing of it).

        Raises:
            TimeoutError: *timeout* seconds passed before *n* results arrived.
            ValueError: fewer than *n* results can ever arrive.
        """
        engine = self._engine
        if n_results is not None:
            raise TypeError(f"collect() takes how many results to wait for as n, not n_results: "
                            f"collect({safe_repr(n_results)}, timeout=...)")
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"collect(n) takes how many results to wait for, an int, not "
                            f"{type(n).__name__} {safe_repr(n)}")
        n = int(n)
        timeout = plain_timeout(timeout)
        if n > 0:
            self._refuse_on_loop_thread("collect(n)")
        with engine.results_ready:
            if n > 0:
                def possible() -> int:
                    return len(engine.results) + engine.uncollected

                if possible() < n:
                    raise ValueError(f"collect({n}) cannot be satisfied: {len(engine.results)} "
                                     f"results are waiting and {engine.uncollected} dispatched "
                                     "jobs unfinished")
                arrived = engine.results_ready.wait_for(
                    lambda: len(engine.results) >= n or possible() < n, timeout)
                if not arrived:
                    raise TimeoutError(f"only {len(engine.results)} of {n} results arrived "
                                       f"within {timeout} s")
                if len(engine.results) < n:
                    raise ValueError(f"collect({n}) cannot be satisfied any more: jobs were "
                                     "removed or the scheduler stopped")
            results = list(engine.results)
            engine.results.clear()
        return results

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every dispatched job is finished, and every call of a
        ``map()`` (whose later calls are dispatched as its earlier ones end);
        False if *timeout* passed first.

        To wait for some jobs only, :func:`corral.wait` takes them, as
        ``concurrent.futures.wait`` does.
        """
        self._refuse_on_loop_thread("wait()")
        if isinstance(timeout, Job) or _is_iterable(timeout):
            raise TypeError("Scheduler.wait() waits for every job of the scheduler and takes "
                            "only a timeout; to wait for some jobs: corral.wait(jobs) or "
                            "job.result()")
        timeout = plain_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        # (Cold review: wait() after map() of 5,000 calls returned with a
        # quarter of them run, the rest not dispatched yet.)
        for feed in list(self._feeds):
            if not feed.join(None if deadline is None else max(0.0, deadline - time.monotonic())):
                return False
        return self._wait_for_jobs(deadline)

    def _wait_for_jobs(self, deadline: float | None) -> bool:
        for job in [job for job in self.jobs() if not job.done()]:
            # One job at a time, on its own condition: waiting on all of them at
            # once in slices took every Future's lock each slice (100,000 jobs: 3 s of CPU).
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not job._wait_done(left):
                return False
        return True

    # -- looking at the queue ------------------------------------------------------------

    def jobs(self, status: JobStatus | str | None = None) -> list[Job]:
        """Jobs of this scheduler in submission order, optionally only those in *status*.

        Listed are the unfinished jobs and the finished ones the program still
        holds: a finished Job nobody references any more is freed (its record
        stays in the journal, if any), as ``concurrent.futures`` frees its futures.

        *status* is a :class:`JobStatus`, its name (``"running"``), or a group:
        ``"pending"``/``"queued"`` (not started), ``"active"`` (submitted or
        running), ``"finished"``/``"history"``/``"done"``.
        """
        everything = self._registry.live()
        if status is None:
            return everything
        wanted = statuses_named(status)
        return [job for job in everything if job.status in wanted]

    def qsize(self, status: JobStatus | str | None = None) -> int:
        """How many jobs are in *status* (see :meth:`jobs`: unfinished, or
        finished and still held); all of those when None."""
        return len(self.jobs(status))

    def on_event(self, callback: Callable[[Event], Any]) -> Callable[[Event], Any]:
        """Call *callback* (on the control-loop thread) for every added, removed
        and status-changed event. Returns *callback*, so it works as a decorator."""
        if not callable(callback):
            raise ValueError(f"on_event() takes a callable, not {callback!r}")
        self._engine.listeners = [*self._engine.listeners, callback]
        return callback

    # -- control ------------------------------------------------------------------------

    def pause(self) -> None:
        """Start nothing new; running jobs finish. Undo with :meth:`resume`.

        Jobs handed ahead to a worker are taken back; this returns once each
        is back in the queue or has started (the worker had begun it), so no
        job starts after pause() returns. A worker whose job holds the GIL
        cannot answer: after a second, this returns with its jobs still
        SUBMITTED; they come back QUEUED when that job ends (the worker reads
        the request before it starts the next).
        """
        asked = self._engine.call(self._engine.set_paused, True)
        self._engine.wait_taken_back(asked, until_ended=False)

    def _pause_by_person(self) -> None:
        """``corral pause`` (or the dashboard's) of a script's run: as
        :meth:`pause`, and it holds through the end of the ``with`` block,
        which waits for the person's ``corral resume``, where the program's
        own pause is resumed there (nobody else could)."""
        asked = self._engine.call(self._engine.set_paused, True, True, True)
        self._engine.wait_taken_back(asked, until_ended=False)

    def resume(self) -> None:
        """Start jobs again after :meth:`pause`. A pause a person made from
        outside (``corral pause``, the dashboard) holds on: they lift it
        (``corral resume``), and this logs a warning that it does."""
        self._engine.post(self._engine.set_paused, False)

    def _resume_by_person(self) -> None:
        """``corral resume`` (or the dashboard's): lifts every pause, a
        person's and the program's own."""
        self._engine.post(self._engine.set_paused, False, True, True)

    @property
    def paused(self) -> bool:
        return self._engine.paused

    def abort(self, job: Job | int | str | None = None) -> int:
        """Stop the running job(s): ``corral.abort_requested()`` turns True in
        them, and after ``abort_grace`` seconds they are killed. They end
        CANCELLED with reason "aborted"; the queue goes on: jobs SUBMITTED to
        a backend's queue (a worker's, Dask's, a cluster's) are not running,
        and run in their turn. Returns how many jobs were asked to stop.

        Raises:
            ValueError: *job* is not running.
        """
        target = None if job is None else self._job(job)._record
        return self._engine.call(self._engine.abort, target)

    def clear(self) -> int:
        """:meth:`remove` every job that has not started (each ends CANCELLED,
        reason "cleared", with a "removed" event); return how many. Jobs that
        waited in a worker's queue are taken back before this returns; in a
        callback, which cannot wait for that, they are counted as they are
        asked back, and one a worker started meanwhile runs on."""
        self._stop_maps("the queue was cleared")
        queued = self._engine.call(self._engine.queued_ahead_ids)
        asked = self._engine.call(self._engine.cancel_pending, "cleared", True)
        self._engine.wait_taken_back(queued, until_ended=True)
        # Not one a worker had started as it was asked back: that one runs on. (On the
        # loop thread, in a callback, those being taken back are counted: they are
        # removed once back, which cannot be waited for there; one a worker starts
        # meanwhile, at most one a worker, is counted and runs on.)
        return sum(1 for record in asked if record.status is JobStatus.CANCELLED
                   or not record.final)

    def remove(self, job: Job | int | str) -> None:
        """Take a job that has not started out of the queue (it ends CANCELLED).

        One waiting in a worker's queue is asked back first; if the worker
        had started it, this raises, and the job runs on. A worker that does
        not answer within a second (its job holds the GIL) has the job
        removed all the same: it reads the request before it starts its
        next job (one it starts after all is killed).

        Raises:
            ValueError: the job is running or finished, or unknown, or its
                worker did not give it back.
        """
        target = self._job(job)
        record = target._record
        queued = self._engine.call(self._engine.still_queued_ahead, [record.dispatched_id])
        self._engine.call(self._engine.remove, record)
        self._engine.wait_taken_back(queued, until_ended=True)
        on_loop = self._engine.on_loop_thread()  # (a callback cannot wait: removed once back)
        if queued and record.status is not JobStatus.CANCELLED and not on_loop:
            # It waited in a worker's queue, and the worker started it as it was asked
            # back: it runs on, as cancel() says by returning False.
            raise ValueError(f"cannot remove job {record.id} {record.name!r}: its worker had "
                             "started it; use cancel() or abort() to stop it")
        self._registry.forget(target)

    def interrupt(self, reason: str = "interrupted") -> None:
        """Kill every running job and cancel every pending one, now (also the
        calls of a map not dispatched yet); *reason* is what their status says."""
        self._stop_maps(f"the scheduler was interrupted ({reason})")
        self._engine.call(self._engine.interrupt, reason)

    def _hurry_mail(self) -> None:
        """Give the mail still queued a second at most, not the 10 s of a
        calm end: a person stops the program with Ctrl-C or SIGTERM (review:
        it waited on a mail server that did not answer). Not for interrupt()
        itself, nor a daemon's stop: nobody waits on their end."""
        notifier = self._engine.notifier
        if notifier is not None:
            notifier.hurry()

    def _stop_maps(self, why: str) -> None:
        """Dispatch no more calls of any map (its iterator raises CancelledError)."""
        for feed in list(self._feeds):
            feed.stop(why)

    def _cancel_many(self, jobs: list[Job], reason: str) -> None:
        """Cancel *jobs* in one step of the control loop (not one round trip each)."""
        queued = self._engine.call(self._engine.cancel_many, [job._record for job in jobs],
                                   reason)
        self._engine.wait_taken_back(queued, until_ended=True)

    def _lookup(self, job_id: object) -> Job | None:
        """The live job with this id; ``"7"`` finds job 7 (ids come as text from outside)."""
        found = self._registry.get(job_id)
        if found is None and isinstance(job_id, str) and is_number_text(job_id):
            found = self._registry.get(int(job_id))
        return found

    def _record_with_id(self, job_id: int | str) -> JobRecord | None:
        """The record of the dispatched job *job_id* names in ``after=``, or
        None; one that finished and was let go of cannot be waited after."""
        found = self._lookup(job_id)
        if found is None and isinstance(job_id, int):  # (7 and "7" name one job: re-attack)
            found = self._registry.get(str(job_id))
        if found is None and self._registry.id_taken(str(job_id)):
            raise DependencyError(f"after={job_id!r}: job {job_id} has finished and this program "
                                  "no longer holds it; pass the Job itself")
        return None if found is None else found._record

    def _ended_as(self, job_id: int | str, name: str) -> JobStatus | None:
        """How a job of this session that the program no longer holds ended
        (see :meth:`JobRegistry.ended_as`); None if it did not end here."""
        return self._registry.ended_as(job_id, name)

    def _submit_from_outside(self, task: Task, options: dict[str, Any],
                             doomed: str | None = None,
                             ended_deps: tuple[int | str, ...] = ()) -> Job:
        """Make and dispatch a job that ``corral submit`` sent over the control
        socket, and return once its id is in the journal (the id answered to
        the command is on disk). The same command submitted again is new work:
        it is never matched against earlier runs. A *doomed* job is recorded
        CANCELLED with that reason, and never runs (one after a job that failed).
        *ended_deps*: ids of jobs it comes after that had ended before (its row
        names them, for the report's edges and a restarted daemon).

        Raises:
            JournalError: the journal could not write what came before (no job
                is made), or the job's own rows (the job is cancelled: the
                command says it failed, so it must not run).
        """
        job = Job(task, **options)
        job._record.always_new = job._record.recorded_first = True
        job._record.doomed = doomed
        job._record.ended_deps = ended_deps
        # What the journal failed to write before is said now, to this command,
        # before its job exists: after it, it would be taken for the job's own.
        try:
            self._flush_journal_now()
        except JournalError as error:
            if self._journal is not None and self._journal.stopped:
                raise JournalError(f"{error} (this submit was not taken: this driver can journal "
                                   "no job any more; corral stop ends it, cancelling its "
                                   "unfinished jobs, and the next corral submit starts a new "
                                   "one)") from None
            raise JournalError(f"{error} (before this submit, which was not taken: "
                               "submit again)") from None
        self.dispatch([job])
        # The loop takes it in first, committing its row before it may start
        # (a job the journal could not record is cancelled there, never run).
        self._engine.call(_nothing)
        if job._record.unrecorded is not None:
            raise JournalError(f"{job._record.unrecorded} (this submit was not taken: its job "
                               f"{job.id} is cancelled; submit again once the journal can be "
                               "written)") from None
        return job

    def _check_from_outside(self, task: Task, options: dict[str, Any], waits: bool) -> None:
        """Raise what :meth:`_submit_from_outside` would for this job's options,
        resources, queue and tokens, and make nothing: a command that makes
        several jobs checks them all first (``corral rerun``: all or none).
        One that *waits* for others may name a directory they make."""
        checked = {**options, "after": None}
        if waits:
            checked["cwd"] = None  # (see spec.check_cwd_exists)
        record = Job(task, **checked)._record
        self._backend.check(record.spec.resources)
        self._check_queue_and_tokens(record)

    def _flush_journal_now(self) -> None:
        """Return once everything the loop recorded so far is in the journal."""
        if self._journal is not None:
            self._engine.call(self._journal.flush, True)

    def _job(self, job: Job | int | str) -> Job:
        if isinstance(job, Job):
            if job._record.owner is not self._engine:
                raise ValueError(f"{job!r} does not belong to this scheduler")
            return job
        found = self._registry.get(job)
        if found is None and self._registry.id_taken(str(job)):
            raise ValueError(f"job {job!r} has finished and this program no longer holds it; "
                             "pass the Job itself to act on a finished job")
        if found is None:
            raise ValueError(f"no job with id {job!r} in this scheduler")
        return found

    # -- ending ---------------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking jobs; let the dispatched ones finish (or cancel the pending
        ones with *cancel_futures*); then stop every worker process."""
        if wait:
            self._refuse_on_loop_thread("shutdown(wait=True)")
        feeds = list(self._feeds)  # a map's calls not dispatched yet: all, or none
        if feeds and wait and not cancel_futures and not self._shut:
            # A feeder dispatches a map's next calls as the ones before end:
            # paused, they would not, and shutdown would wait for ever.
            self._engine.call(self._engine.resume_to_finish)
        for feed in feeds:
            if wait and not cancel_futures:
                feed.join()
            else:
                feed.stop("the scheduler was shut down")
        with self._lock:
            first = not self._shut
            self._shut = True
        if first and cancel_futures:
            self._engine.call(self._engine.cancel_pending, "scheduler shut down")
        if first:
            self._engine.close(wait=False)
        if wait:
            try:
                wait_in_slices(self._engine.finished.wait, None)
            except BaseException as error:  # Ctrl-C or SIGTERM while it waited: say which
                self._hurry_mail()
                try:
                    self.interrupt(driver_signals.reason_for(error))
                    while not self._engine.finished.wait(SLICE_S):
                        if self._engine.stuck():
                            raise self._engine.stuck_error() from None
                except LoopStuck:
                    self._give_up()
                raise
            self._remove_temporary_files()
            _open_schedulers.discard(self)  # (after shutdown(wait=False), exit waits for it)
            if not _open_schedulers:
                driver_signals.uninstall()  # the program's signals are its own again
            if self._journal is not None:
                self._journal.raise_if_failed()  # a journal that misses a row never passes silently

    def _finish_outside_loop(self) -> None:
        """After the loop stopped: stop serving, send queued mail, close the journal."""
        if self._control is not None:
            self._control.stop()
        notifier = self._engine.notifier
        if notifier is not None:
            notifier.close()
        summary = self._engine.tally.summary()
        if summary is not None:  # else a failure nobody asked about would pass unseen
            warn_user(summary)
        self._close_journal()

    def _close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
        if self._detach_log is not None:
            self._detach_log()
            self._detach_log = None

    @property
    def run_dir(self) -> Path:
        """The directory holding the jobs' files (and the journal, if any)."""
        return self._run_dir

    @property
    def backend(self) -> str:
        """The name of the backend that runs the jobs: ``"local"``, ``"slurm"``,
        a scheduler described in settings, ...; for ``backend="auto"``, the one
        chosen (cold review: only the repr said it)."""
        return self._backend.name

    @staticmethod
    def open(path: str | os.PathLike[str]) -> Run:
        """Read a journaled run back: its jobs, statuses and results.

        Starts no backend and takes no lock: a run that is still going can be
        read while its driver works. See :class:`corral.Run`.

        Raises:
            FileNotFoundError: *path* holds no journal.
        """
        return Run(path)

    def _refuse_on_loop_thread(self, what: str) -> None:
        if threading.current_thread() is self._engine._thread:
            raise RuntimeError(f"{what} cannot be called from an on_event, on_finish or "
                               "done callback: it would wait for the thread that runs them")

    def close(self) -> None:
        """Same as ``shutdown(wait=True)``."""
        self.shutdown(wait=True)

    def _remove_temporary_files(self) -> None:
        """Remove a run directory of this scheduler's own making. The output of
        the jobs the program still holds is kept for ``job.stdout``: in memory,
        or, past :data:`_OUTPUT_KEPT_IN_MEMORY`, in its files, which go when
        the Job does, or at exit (attack review: 200 MB of a job's stderr became
        400 MB of the driver's memory at shutdown)."""
        if not (self._temporary and self._run_dir.exists()):
            return
        left = {}
        for job in self.jobs():
            record = job._record
            if not record.keep_output(_OUTPUT_KEPT_IN_MEMORY) and record.jobdir is not None:
                left[os.path.realpath(record.jobdir)] = job
        if not left:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            return
        for entry in os.scandir(self._run_dir):
            if os.path.realpath(entry.path) not in left:
                _remove_path(entry.path)
        for jobdir, job in left.items():
            weakref.finalize(job, _remove_job_files, jobdir, os.fspath(self._run_dir))

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        # (SIGTERM and Ctrl-C arrive here too: see driver_signals)
        failed = not (isinstance(exc, SystemExit) and exc.code in (0, None))
        if isinstance(exc, (KeyboardInterrupt, DriverTerminated)) or (
                driver_signals.termination_reason() is not None):  # (async with: a cancel)
            self._hurry_mail()
        if exc_type is not None and not self._interrupt(driver_signals.reason_for(exc), failed):
            return  # (a stuck loop: the exception goes on, and the driver ends)
        self.shutdown(wait=True)

    def _interrupt(self, reason: str, failed: bool = True) -> bool:
        """Cancel every unfinished job with *reason*, as a with block left by
        an exception does (*failed*: not ``sys.exit(0)``); False when the
        control loop is stuck (then the driver is given up: see :meth:`_give_up`)."""
        self._stop_maps(f"the with block was left: {reason}")
        try:
            self._engine.call(self._engine.interrupt, reason, True, failed)
        except LoopStuck:
            self._give_up()
            return False
        return True

    async def __aenter__(self) -> Scheduler:
        return self

    async def __aexit__(self, exc_type, exc, traceback) -> None:
        """``async with``: as ``with``, its wait for the jobs off the event loop;
        the task cancelled meanwhile cancels the jobs (see core.async_exit)."""
        from corral.core.async_exit import leave_async_block

        await leave_async_block(functools.partial(self.__exit__, exc_type, exc, traceback),
                                functools.partial(self._interrupt, _TASK_CANCELLED))

    def _give_up(self) -> None:
        """Leave a control loop that a callback holds while the driver ends
        (the engine has said why): its workers end with the driver's process
        (see corral.runtime.guard), and the next run of a journaled script
        settles what it left."""
        _open_schedulers.discard(self)  # (interpreter exit must not wait for it either)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for job in self.jobs():
            counts[job.status.name.lower()] = counts.get(job.status.name.lower(), 0) + 1
        summary = ", ".join(f"{count} {name}" for name, count in counts.items()) or "no jobs"
        # How many jobs of a core it runs at once (cold review: where all CPUs but one is
        # one core, nothing showed why 200 calls ran one at a time).
        cores = "" if self._slots is None else f", {self._slots} core{'s' * (self._slots != 1)}"
        return f"<Scheduler {self._backend.name}{cores}: {summary}>"


#: Why jobs end CANCELLED when the task leaving their ``async with`` block is.
_TASK_CANCELLED = ("interrupted: the task leaving the async with block was cancelled "
                   "(Ctrl-C under asyncio.run, a timeout, or Task.cancel())")

#: Schedulers to shut down when the interpreter exits, as concurrent.futures
#: does with its pools. Held weakly: a shut-down Scheduler the program dropped
#: is garbage, and one still open is kept alive by its control loop anyway.
_open_schedulers: weakref.WeakSet[Scheduler] = weakref.WeakSet()
_exit_hook_lock = threading.Lock()
_exit_hook_registered = False
_interpreter_exiting = False


def _watch_interpreter_exit() -> None:
    """Once per process: at interpreter exit, shut down the open schedulers
    (waiting for their jobs) and refuse new jobs from then on.

    The hook runs with threading's own exit hooks, before ``atexit``
    handlers. Those run last registered first, and the one of
    ``concurrent.futures.thread`` refuses every pool's new work from then on:
    it is imported first, so that this hook runs before it (a Dask client's
    calls go through such a pool: the exit with a job running hung for ever,
    "cannot schedule new futures after interpreter shutdown"; dask review).
    """
    global _exit_hook_registered, _interpreter_exiting
    import concurrent.futures.thread  # noqa: F401 (its exit hook registered before ours)

    with _exit_hook_lock:
        if not _exit_hook_registered:
            try:
                threading._register_atexit(_at_interpreter_exit)  # type: ignore[attr-defined]
            except RuntimeError:  # threading is already shutting down
                _interpreter_exiting = True
            else:
                _exit_hook_registered = True


def _at_interpreter_exit() -> None:
    global _interpreter_exiting
    _interpreter_exiting = True
    ended_by: BaseException | None = None
    for scheduler in list(_open_schedulers):
        for _ in range(3):  # Ctrl-C while the exit waited: the jobs were cancelled and
            # waited for, and the one line said so; the interpreter printed a traceback
            # of its own as well (cold review). Again, to tidy up; the next see the signal.
            try:
                scheduler._at_exit()
                break
            except (KeyboardInterrupt, DriverTerminated) as error:
                ended_by = error
                continue
            except Exception:  # one scheduler's failure must not leave the others running
                logging.getLogger("corral.scheduler").exception(
                    "could not shut %r down at exit", scheduler)
                break
    if ended_by is not None:
        _end_by_the_signal(ended_by)


def _end_by_the_signal(error: BaseException) -> None:
    """End the program as the signal that cut its exit short would have: the
    interpreter's exit, past this hook, says 0 (re-attack review: a SIGTERM,
    SIGHUP or Ctrl-C while the exit waited for the jobs cancelled them, and the
    program exited 0, which CI and ``timeout`` read as success)."""
    code = getattr(error, "code", None)
    signum = code - 128 if isinstance(code, int) and code > 128 else signal.SIGINT
    logging.shutdown()  # (corral.log and the program's handlers: written now)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _refuse_after_interpreter_exit() -> None:
    """Raise RuntimeError once the interpreter has begun to exit: workers and
    threads cannot be started any more, and nothing would wait for the job.
    Checked before a job is registered anywhere, so a refused job leaves no trace."""
    if _interpreter_exiting:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


#: The most output (stdout and stderr together) of one job that a temporary run
#: copies into memory when it removes its files; a job that wrote more keeps its
#: files until its Job is freed (see Scheduler._remove_temporary_files).
_OUTPUT_KEPT_IN_MEMORY = 4 << 20


def _remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _remove_job_files(jobdir: str, run_dir: str) -> None:
    """A temporary run's last files: a freed Job's, then the run directory once empty."""
    shutil.rmtree(jobdir, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(run_dir)


def _is_iterable(value: object) -> bool:
    """Whether *value* is a collection of things (jobs passed where a number was asked)."""
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes))


def _label(job: JobRecord) -> str:
    """A job as its Job's repr shows it (``<Job 3 'train' RUNNING>``), for messages."""
    return repr(job.future) if job.future is not None else (
        f"<Job {'?' if job.id is None else job.id} {job.name!r} {job.status.name}>")


def _value_deps(job: JobRecord) -> list[Job]:
    """Find the Jobs among a job's arguments and keep the arguments with placeholders."""
    task = job.spec.task
    found: list[Job] = []
    try:
        if isinstance(task, (Call, FunctionRef)):
            job.call_parts = (replace_jobs(task.args, found),
                               replace_jobs(dict(task.kwargs), found))
        elif isinstance(task, Script):
            job.argv_template = replace_jobs(tuple(task.argv), found)
        elif isinstance(task, Shell) and not isinstance(task.command, str):
            job.argv_template = replace_jobs(task.command, found)
    except RecursionError:
        raise ValueError(f"job {job.name!r}: its arguments are nested too deeply to be sent to "
                         "a worker (lists or dicts inside each other thousands of levels deep)"
                         ) from None
    return found


def _pickle_call(job: JobRecord, functions: dict[int, tuple[Any, bytes]]) -> None:
    """Pickle *job*'s call into its payload. *functions* holds the functions
    this batch pickled so far, by ``id``, each with the object itself (which
    keeps its ``id`` from being reused meanwhile): a map's thousand calls of
    one function pickle it once."""
    task = job.spec.task
    if not isinstance(task, (Call, FunctionRef)):
        return
    args, kwargs = job.call_parts
    target = task.fn if isinstance(task, Call) else task.target
    try:
        known = functions.get(id(target))
        if known is None:
            known = functions[id(target)] = (target, dumps_function(target))
        job.payload = dumps_call(target, args, kwargs, bool(job.value_deps), known[1])
    except Exception as error:
        said = describe_error(error)  # (never raises: an exception's __str__ may: attack review)
        hint = "" if "open it where it is read" in said else (
            "; make what cannot travel (a lock, a connection, an open file) in the function, "
            "from what it is made of")
        part = unpicklable_part(target, args, kwargs) or "its function or arguments"
        if isinstance(target, ChunkRunner) and part == "its argument args[0]":
            part = "the arguments of one of its calls"  # (a chunk's: a list of calls)
        # (Made where it is raised: an exception held by a local of this frame is a
        # cycle through its traceback, which kept a map's jobs alive.)
        raise NotPicklable(f"job {job.name!r} cannot be sent to a worker: {part} cannot be "
                           f"pickled ({said}){hint}",  # (the call's own, not every call's:
                           # a map names its input item even for its first)
                           in_arguments=not part.startswith("its function")) from error


def _nothing() -> None:
    """Run on the control loop to wait for what was posted before it."""


def _stray_call_keyword(target: str, name: str) -> str:
    """Why ``call(target, ..., name=...)`` is refused: call() takes job options
    as keywords (the reverse of submit()), the function's in ``kwargs=``."""
    said = f"call() takes job options as keywords, and {name!r} is none; "
    if name == "args":
        return said + f"the function's positional arguments follow its name: call({target!r}, 1, 2)"
    if closest(name, ["kwargs"]) is not None:
        return said + "did you mean kwargs=?"
    return said + (f"keyword arguments of the function go in kwargs={{...}}: "
                   f"call({target!r}, ..., kwargs={{{name!r}: ...}})")
