"""A Scheduler's arguments checked, and its directories made, before anything
is started that would need stopping: each bad argument is one ``ValueError``
or ``TypeError`` naming it and what it takes (another tool's word for it too:
``n_jobs`` is ``cores`` here)."""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from corral.backends import backend_info, backend_names
from corral.core.run_files import holds_other_files
from corral.options import JOB_OPTIONS, peers_word
from corral.runtime.tempdirs import (RUN_PREFIX, SPOOL_PREFIX, make_owned_tempdir,
                                     remove_dead_owners_tempdirs)
from corral.suggest import did_you_mean

__all__ = ["unknown_argument", "tidy_after_dead_drivers", "remove_stale_spools", "with_address",
           "checked_count", "checked_queues", "check_journal_dir", "check_workdir",
           "prepare_workdir"]


#: What other tools call the arguments of a pool, by name: a close spelling
#: would suggest another argument (n_workers: workdir).
_PEERS_WORDS = {"n_jobs": "cores", "n_workers": "cores", "max_workers": "cores",
                "processes": "cores", "num_cpus": "cores", "ncores": "cores", "cpus": "cores",
                "ncpus": "cores", "n_cpus": "cores", "threads": "cores", "n_parallel": "cores",
                "mem": "memory", "num_gpus": "gpus"}


def unknown_argument(name: str, scheduler: Callable[..., Any]) -> str:
    """Why ``Scheduler(name=...)`` is refused: the closest of *scheduler*'s
    arguments, or the job option it is (those go to ``options()`` or
    ``submit``'s job)."""
    arguments = [parameter for parameter in inspect.signature(scheduler).parameters
                 if not parameter.startswith("_") and parameter != "unknown"]
    if name in _PEERS_WORDS:
        return (f"Scheduler() takes no argument {name!r}; did you mean "
                f"{_PEERS_WORDS[name]!r}?")
    if name in JOB_OPTIONS:
        return (f"Scheduler() takes no argument {name!r}: it is a job option, which goes in "
                f"scheduler.options({name}=...).submit(...)")
    option = peers_word(name)
    if option is not None:  # e3's job_timeout: a job option here, for all jobs of a Submitter
        return (f"Scheduler() takes no argument {name!r}: that is the job option {option!r} "
                f"here, which goes in scheduler.options({option}=...).submit(...) (for every "
                f"job of that Submitter: submitter = scheduler.options({option}=...))")
    hint = did_you_mean(name, arguments, otherwise="its arguments are " + ", ".join(arguments))
    return f"Scheduler() takes no argument {name!r}; {hint}"


_tidied = False


def tidy_after_dead_drivers() -> None:
    """Once per process: remove temporary and spool directories that drivers
    killed with SIGKILL left in the system's temporary directory."""
    global _tidied
    if not _tidied:
        _tidied = True
        remove_dead_owners_tempdirs()


def remove_stale_spools(run_dir: Path) -> None:
    """Spool directories of dead sessions (this process holds the run's lock)."""
    for stale in run_dir.glob(f"{SPOOL_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def with_address(backend: str, address: Any,
                  backend_options: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """*backend_options* with ``address`` in it, for a backend that takes one."""
    if address is None:
        return backend_options
    if "address" not in backend_info(backend).backend_options:
        takers = [name for name in backend_names()
                  if "address" in backend_info(name).backend_options]
        raise ValueError(f"address={address!r} is for a backend that connects to a scheduler "
                         f"of its own ({', '.join(takers)}); the {backend} backend takes none")
    if backend_options and ("address" in backend_options or "client" in backend_options):
        raise ValueError("give the address once: address= or backend_options['address'], "
                         "not both")
    return {**(backend_options or {}), "address": address}


#: What None means for each of the Scheduler's counts, for its error message.
_NONE_MEANS = {"cores": "the backend's own (on this machine: all its CPUs but one)",
               "gpus": "the GPUs found here", "max_jobs": "no limit", "tokens": "none"}

#: A bound on every count, far above any real one: a number from a config file
#: of 20 digits stopped a daemon with "int too large to convert" (attack review).
_LARGEST_COUNT = 2**31 - 1


def checked_count(name: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or value > _LARGEST_COUNT):
        joblib = " (-1 means all CPUs to joblib)" if name == "cores" and value == -1 else ""
        raise ValueError(f"{name}={value!r} must be an int from {minimum} to {_LARGEST_COUNT}, "
                         f"or None for {_NONE_MEANS[name]}{joblib}")
    return value


def checked_queues(queues: Mapping[str, int] | None) -> dict[str, int]:
    if queues is None:
        return {}
    if not isinstance(queues, Mapping):
        raise ValueError(f"queues={queues!r} must be a dict of queue names to capacities")
    for name, capacity in queues.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"queues: {name!r} is not a queue name (a non-empty string)")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"queues: capacity of {name!r} is {capacity!r}; "
                             "it must be an int >= 1")
    return dict(queues)


def check_journal_dir(journal: object) -> None:
    """Refuse a run directory corral must not make private and fill: one
    that holds other files (see :mod:`corral.core.run_files`), or an empty
    path, which would be the current directory unasked."""
    if not isinstance(journal, (str, os.PathLike)):
        raise ValueError(f"journal={journal!r} must be a directory path")
    if not os.fspath(journal):
        raise ValueError("journal='' names no directory; give the run directory's path (a new "
                         "or empty directory, or an earlier run's)")
    _refuse_nul("journal", journal)
    run_dir = Path(journal).expanduser()
    if holds_other_files(run_dir):
        raise ValueError(f"journal={os.fspath(journal)!r}: {run_dir.resolve()} is not a corral "
                         "run but holds other files; give a new or empty directory, or an "
                         "earlier run's (corral makes it private to you and fills it)")


def _refuse_nul(name: str, path: str | os.PathLike[str]) -> None:
    """Refuse a path with a NUL in it, naming the option (attack review: a bare
    "embedded null byte" named neither)."""
    if "\0" in os.fspath(path):
        raise ValueError(f"{name}={os.fspath(path)!r} holds a NUL character, which no path may")


def check_workdir(workdir: object) -> None:
    if workdir is None:
        return
    if not isinstance(workdir, (str, os.PathLike)):
        raise ValueError(f"workdir={workdir!r} must be a directory path")
    _refuse_nul("workdir", workdir)
    if os.path.exists(os.path.expanduser(workdir)) and not os.path.isdir(
            os.path.expanduser(workdir)):
        raise ValueError(f"workdir={os.fspath(workdir)!r} exists and is not a directory")


def prepare_workdir(workdir: str | os.PathLike[str] | None,
                     temporary_parent: str | None = None) -> tuple[Path, bool]:
    """The run's directory and whether it is temporary. A backend whose jobs run
    elsewhere names a *temporary_parent* they can reach (a shared filesystem)."""
    if workdir is None:
        if temporary_parent is not None:
            os.makedirs(temporary_parent, mode=0o700, exist_ok=True)
        return Path(make_owned_tempdir(RUN_PREFIX, temporary_parent)), True
    check_workdir(workdir)
    path = Path(workdir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path, False
