"""Where jobs run: the registry of backends.

``base`` defines the protocol; each backend is a package (``local/``,
``batch/slurm/``) whose light ``__init__`` declares a :class:`BackendInfo`
named ``BACKEND``: its name, its :class:`Capabilities`, its help per job
option, how to tell whether it answers here, and where its code is. Nothing
outside ``backends/`` names a backend: it asks this registry.

A site adds a backend that every corral process knows (the ``corral`` command
and the daemon too) through the entry-point group :data:`ENTRY_POINT_GROUP`;
a program or a test adds one for itself with :func:`register_backend`.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

from corral.backends.info import BackendInfo, Capabilities, Probe
from corral.suggest import did_you_mean

if TYPE_CHECKING:
    from corral.backends.base import Backend

__all__ = ["AUTO", "DEFAULT_BACKEND", "BackendInfo", "Capabilities", "backend_info",
           "backend_names", "is_backend", "register_backend", "unregister_backend",
           "resolve_backend", "make_backend", "outlives_driver", "registered_info",
           "probe_backend", "Probe", "auto_order"]

#: The name that stands for "the first registered backend that answers here".
AUTO = "auto"
#: The backend used when none is named, and by "auto" when no other answers.
DEFAULT_BACKEND = "local"

#: Each built-in backend's name and package (a test checks it against their ``BACKEND``).
_BUILT_IN_BY_NAME = {"local": "corral.backends.local", "slurm": "corral.backends.batch.slurm",
                     "sge": "corral.backends.batch.sge", "pbs": "corral.backends.batch.pbs",
                     "lsf": "corral.backends.batch.lsf", "dask": "corral.backends.dask"}
_BUILT_IN = tuple(_BUILT_IN_BY_NAME.values())

_lock = threading.Lock()
_registry: dict[str, BackendInfo] = {}
_loaded = False


#: The entry-point group through which an installed package adds a backend that
#: every corral process knows (the ``corral`` command and the daemon included), not
#: only the program that called :func:`register_backend`. Each entry point names a
#: :class:`BackendInfo`, e.g. in the site package's pyproject.toml::
#:
#:     [project.entry-points."corral.backends"]
#:     oursched = "oursched.corral_backend:BACKEND"
ENTRY_POINT_GROUP = "corral.backends"


def _backends() -> dict[str, BackendInfo]:
    """The registry, with the built-in backends and the installed ones declared on
    first use (their packages import this module, so they cannot be imported at
    its top)."""
    global _loaded
    with _lock:
        if not _loaded:
            for package in _BUILT_IN:
                info = importlib.import_module(package).BACKEND
                _registry.setdefault(info.name, info)
            for info in _installed_backends():
                _registry.setdefault(info.name, info)
            _loaded = True
        return _registry


def _installed_backends() -> list[BackendInfo]:
    """The backends installed packages declare under :data:`ENTRY_POINT_GROUP`. One
    that cannot be loaded is logged and left out: a broken plug-in must not stop
    runs on every other backend."""
    import logging
    from importlib.metadata import entry_points

    found = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            info = entry.load()
        except Exception:
            logging.getLogger("corral").exception("could not load the backend %r (%s)",
                                                  entry.name, entry.value)
            continue
        if isinstance(info, BackendInfo):
            found.append(info)
        else:
            logging.getLogger("corral").error(
                "the entry point %r (%s) is not a corral BackendInfo but %s; left out",
                entry.name, entry.value, type(info).__name__)
    return found


def register_backend(info: BackendInfo) -> None:
    """Make a backend known by its name to the Scheduler, the config and the CLI.

    Raises:
        ValueError: the name is taken, or is not a lowercase word; or its jobs
            outlive the driver but it gives no ``driverless_control``, which
            ``corral cancel`` needs when no driver runs.
    """
    if not isinstance(info, BackendInfo):
        raise ValueError(f"register_backend takes a BackendInfo, not {type(info).__name__}")
    if (not isinstance(info.name, str) or not info.name.isidentifier()
            or info.name != info.name.lower() or info.name == AUTO):
        raise ValueError(f"backend name {info.name!r} must be a lowercase word other than "
                         f"{AUTO!r} (letters, digits and '_')")
    for field_name in ("factory", "driverless_control"):
        target = getattr(info, field_name)
        if (field_name == "factory" or target is not None) and not _is_target(target):
            raise ValueError(f"backend {info.name!r}: {field_name}={target!r} must be "
                             f"'module:{'Class' if field_name == 'factory' else 'function'}'")
    if not isinstance(info.capabilities, Capabilities):
        raise ValueError(f"backend {info.name!r}: capabilities={info.capabilities!r} must be "
                         "a corral.backends.Capabilities")
    if info.answers is not None and not callable(info.answers):
        raise ValueError(f"backend {info.name!r}: answers={info.answers!r} must be a function "
                         "taking no argument and returning whether the backend works here")
    if info.capabilities.outlives_driver and info.driverless_control is None:
        raise ValueError(f"backend {info.name!r}: its jobs outlive the driver, so it needs a "
                         "driverless_control ('module:function') for corral cancel/pause/resume")
    backends = _backends()
    with _lock:
        if info.name in backends:
            raise ValueError(f"a backend named {info.name!r} is already registered")
        backends[info.name] = info


def _is_target(target: object) -> bool:
    """Whether *target* reads as ``"package.module:name"``."""
    if not isinstance(target, str) or target.count(":") != 1:
        return False
    module, name = target.split(":")
    return all(part.isidentifier() for part in module.split(".")) and name.isidentifier()


#: Seconds a backend's ``answers`` probe may take before "auto" goes on without it.
PROBE_TIMEOUT_S = 10.0


def probe_backend(name: str) -> Probe:
    """Ask the backend *name* whether it can be used here, and why (for
    ``backend="auto"`` and ``corral backends``). A probe that fails, or takes more
    than :data:`PROBE_TIMEOUT_S`, counts as no: a site's broken probe must not stop
    (or hang) a program that would run on this machine.

    Raises:
        ValueError: no backend has that name.
    """
    import logging  # (these modules serve every command's look at the registry: asked here)
    import queue

    from corral.runtime.threads import start_thread

    info = backend_info(name)
    if info.answers is None:
        return Probe(False, "it is never chosen by 'auto' (it has no probe)")
    probe, answer = info.answers, queue.SimpleQueue[object]()

    def ask() -> None:
        try:
            answer.put(probe())
        except Exception as error:
            answer.put(error)

    start_thread(ask, name=f"corral probe {info.name}")
    try:
        said = answer.get(timeout=PROBE_TIMEOUT_S)
    except queue.Empty:
        logging.getLogger("corral").error("the %s backend's probe did not answer within %.0f s; "
                                          "taken as not answering", info.name, PROBE_TIMEOUT_S)
        return Probe(False, f"its probe did not answer within {PROBE_TIMEOUT_S:.0f} s")
    if isinstance(said, Exception):
        logging.getLogger("corral").error("the %s backend's probe failed (%s: %s); taken as "
                                          "not answering", info.name, type(said).__name__, said)
        return Probe(False, f"its probe failed ({type(said).__name__}: {said})")
    if isinstance(said, Probe):
        return said
    return Probe(bool(said), "its probe said " + ("yes" if said else "no"))


def unregister_backend(name: str) -> None:
    """Forget a backend added with :func:`register_backend` (tests clean up with it).

    Raises:
        KeyError: no backend has that name.
        ValueError: *name* is one of corral's own backends, which stay.
    """
    backends = _backends()
    if name in {_declared_name(package) for package in _BUILT_IN}:
        raise ValueError(f"the {name} backend is corral's own and cannot be unregistered")
    with _lock:
        del backends[name]


def _declared_name(package: str) -> str:
    return str(importlib.import_module(package).BACKEND.name)


def is_backend(name: str) -> bool:
    """Whether *name* is a registered backend. One of corral's own is known
    without loading the installed packages' entry points (a sixth of a
    Scheduler's start): an installed or registered backend cannot take a
    built-in name."""
    return name in _BUILT_IN_BY_NAME or name in _backends()


def backend_names() -> tuple[str, ...]:
    """Every registered backend's name, in the order they were registered."""
    return tuple(_backends())


def auto_order() -> tuple[str, ...]:
    """Every registered backend's name in the order ``backend="auto"`` asks them:
    a site's own first (described in settings, installed or registered), then
    corral's. A site that describes its scheduler says how jobs are submitted
    there: its table wraps the commands a built-in backend would take for its
    own (a site's PBS behind wrappers went to the built-in PBS backend)."""
    names = backend_names()
    return (*(name for name in names if name not in _BUILT_IN_BY_NAME),
            *(name for name in names if name in _BUILT_IN_BY_NAME))


def backend_info(name: str) -> BackendInfo:
    """The registered backend called *name* (``"auto"`` resolved first).

    Raises:
        ValueError: no backend has that name (the message suggests the closest).
    """
    if not _loaded:  # (one of corral's own: see is_backend)
        info = registered_info(name)
        if info is not None:
            return info
    return _backends()[resolve_backend(name)]


def outlives_driver(name: str | None) -> bool:
    """Whether jobs of the backend *name* keep running without a driver. A name
    not registered here (a journal written where another backend was added)
    counts as not: nothing here could reach its jobs."""
    info = registered_info(name) if isinstance(name, str) else None
    return info is not None and info.capabilities.outlives_driver


def registered_info(name: str) -> BackendInfo | None:
    """The backend registered as *name*, or None. One of corral's own is found
    without looking through the installed packages' entry points, which costs
    every ``corral status`` a sixth of its time (``importlib.metadata``); an
    installed or registered backend cannot take a built-in name."""
    if not _loaded:
        package = _BUILT_IN_BY_NAME.get(name)
        if package is not None:
            return importlib.import_module(package).BACKEND
    return _backends().get(name)


def resolve_backend(name: str) -> str:
    """The registered backend *name* stands for.

    ``"auto"`` asks each registered backend that has an ``answers`` probe, in
    :func:`auto_order`, whether it can be used here (Slurm: ``sbatch`` and ``squeue`` are
    on PATH and ``squeue --me`` answers within a few seconds), and takes the
    first that does; else :data:`DEFAULT_BACKEND`.

    Raises:
        ValueError: *name* is not a registered backend (nor ``"auto"``).
    """
    if isinstance(name, str) and name in _BUILT_IN_BY_NAME:  # (see is_backend)
        return name
    backends = _backends()
    if name == AUTO:
        for info in [backends[name] for name in auto_order()]:
            if info.auto and info.answers is not None and probe_backend(info.name).answers:
                return info.name
        return DEFAULT_BACKEND
    if isinstance(name, str) and name in backends:
        return name
    known = (*backends, AUTO)
    meant = _OTHER_NAMES.get(name.lower()) if isinstance(name, str) else None
    if meant is None and isinstance(name, str) and name.lower() in known:
        meant = name.lower()  # "SLURM"
    hint = f"did you mean {meant!r}?" if meant in known else did_you_mean(name, known)
    raise ValueError(f"unknown backend {name!r}{'; ' + hint if hint else ''} "
                     f"(known: {', '.join(known)}){'' if hint else _where_schedulers_are()}")


def _where_schedulers_are() -> str:
    """Where a site's scheduler would have been described (cold review: a
    script run from another directory than its corral.toml's was told only
    that the name was unknown)."""
    from corral.config_files import CONFIG_NAME, site_config_path, user_config_path

    site = site_config_path()
    return ("; a site's own scheduler is known from a [schedulers.NAME] table of "
            + (f"{site}, " if site is not None else "")
            + f"{user_config_path()} or of {CONFIG_NAME} in the current directory")


#: Schedulers served by a backend of another name.
_OTHER_NAMES = {"torque": "pbs", "openpbs": "pbs", "pbspro": "pbs", "pbs_pro": "pbs",
                "gridengine": "sge", "grid_engine": "sge", "uge": "sge", "soge": "sge",
                "sungridengine": "sge", "oge": "sge", "son_of_grid_engine": "sge",
                "ibm_lsf": "lsf", "spectrum_lsf": "lsf", "dask_jobqueue": "dask",
                "distributed": "dask", "locally": "local", "multiprocessing": "local",
                "processes": "local"}


def make_backend(name: str, **settings: Any) -> Backend:
    """Build the backend called *name* (already resolved) with the scheduler's settings.

    Raises:
        ValueError: the registered class calls itself by another name (a copied
            backend renamed in one place only: its jobs, files and journal rows
            would carry the other name).
    """
    info = backend_info(name)
    backend_class = info.backend_class()
    own_name = getattr(backend_class, "name", name)
    if own_name != name:
        raise ValueError(f"backend {name!r}: its class {backend_class.__name__} calls itself "
                         f"{own_name!r}; give both the same name")
    return backend_class(**settings)
