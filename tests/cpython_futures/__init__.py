"""CPython's own ``concurrent.futures`` tests, importable here and pointed at corral.

CPython ships them as the package ``test.test_concurrent_futures`` (3.11.6 and
later), but many installs leave the ``test`` package out, and corral's workers
must import the modules the tests submit functions from (``mul``,
``sleep_and_print``, ...). So this package takes CPython's directory into its
own ``__path__``: ``cpython_futures.executor`` is CPython's
``test/test_concurrent_futures/executor.py``, importable by the driver and by
every worker (tests/ is on their ``sys.path``).

Where the running interpreter has no copy, another installed CPython's is used
(same minor version first, then the newest); names that newer copies import
from ``test.support`` and this interpreter lacks are filled in with what they
mean on it. :data:`MISSING` says why nothing could be found.

:class:`CorralPool` is the executor the tests make: a corral Scheduler that
takes ``max_workers`` like a pool.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import corral

__all__ = ["CorralPool", "FOUND_AT", "MISSING"]

_NEEDED = ("__init__.py", "util.py", "executor.py", "test_shutdown.py", "test_wait.py",
           "test_as_completed.py", "test_future.py")


def _candidates() -> list[Path]:
    """Copies of the package on this machine, best first."""
    found: list[Path] = []
    try:
        spec = importlib.util.find_spec("test.test_concurrent_futures")
    except ImportError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        found.extend(Path(location) for location in spec.submodule_search_locations)
    patterns = [os.path.join(sys.base_prefix, "lib", "python3.*", "test"),
                # pyenv, uv and the like keep other versions beside this one
                os.path.join(os.path.dirname(sys.base_prefix), "*", "lib", "python3.*", "test"),
                "/usr/lib/python3*/test", "/usr/local/lib/python3*/test"]
    for pattern in patterns:
        found.extend(Path(test) / "test_concurrent_futures" for test in sorted(glob.glob(pattern)))
    usable = [path for path in dict.fromkeys(found)
              if all((path / name).is_file() for name in _NEEDED)]
    here = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return sorted(usable, key=lambda path: (path.parent.parent.name != here,
                                            [-int(part) for part in
                                             path.parent.parent.name[6:].split(".")
                                             if part.isdigit()]))


def _fill_in_test_support() -> None:
    """Names newer copies import from test.support, as they apply to this interpreter."""
    from test import support

    if not hasattr(support, "Py_GIL_DISABLED"):
        support.Py_GIL_DISABLED = False  # only free-threaded 3.13+ builds disable the GIL
    if not hasattr(support, "requires_gil_enabled"):
        support.requires_gil_enabled = lambda reason="": (lambda test: test)


_copies = _candidates()
FOUND_AT: Path | None = _copies[0] if _copies else None
MISSING: str | None = None
if FOUND_AT is None:
    MISSING = (f"no copy of CPython's test.test_concurrent_futures package on this machine "
               f"(looked in {sys.base_prefix}, beside it and in /usr/lib, /usr/local/lib); "
               "install one, e.g. Debian's libpython3.11-testsuite")
else:
    _fill_in_test_support()
    __path__.append(os.fspath(FOUND_AT))  # type: ignore[name-defined]


class CorralPool(corral.Scheduler):
    """A corral Scheduler made like a pool: ``CorralPool(max_workers=5)`` runs
    up to five one-core jobs at once.

    corral keeps what a job prints in ``job.stdout``; CPython's tests look
    for it on the program's own output, so each finished job's output is
    echoed there.
    """

    def __init__(self, max_workers: int | None = None, **options: Any) -> None:
        super().__init__(cores=max_workers, on_finish=_echo_output, **options)

    @property
    def _threads(self) -> list[Any]:
        """The threads CPython's thread-pool tests join after a shutdown: the control loop."""
        thread = self._engine._thread
        return [] if thread is None else [thread]


def _echo_output(job: corral.Job) -> None:
    sys.stdout.write(job.stdout)
    sys.stdout.flush()
    sys.stderr.write(job.stderr)
    sys.stderr.flush()
