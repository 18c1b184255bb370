"""A function whose calls are queued as jobs: what ``@scheduler.job`` makes.

Decorating a function with :meth:`corral.Scheduler.job` (or the ``job`` method
of a :class:`corral.Submitter`) replaces it with a :class:`QueuedFunction`:
calling that submits the call with the decorator's options and returns its
:class:`corral.Job`, while ``.func`` stays the plain function.

Workers must run the plain function, never the wrapper: the wrapper holds the
scheduler, which no other process can use. Two things make sure of it:

* the scheduler submits ``.func``. A module-level ``def`` decorated in place
  leaves its module's name bound to the wrapper, so ``pickle`` cannot find
  ``.func`` by reference (the name is "not the same object") and the
  function travels by value with cloudpickle, as a function of ``__main__``
  does; a function decorated under another name (``fast = scheduler.job(f)``)
  still travels by reference.
* a wrapper that is pickled itself (named by a recursive function, or passed
  as an argument) pickles as its plain function, so a call inside a worker
  runs the function directly instead of queueing it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    from corral.core.job import Job

__all__ = ["QueuedFunction", "SubmitsJobs"]


class SubmitsJobs(Protocol):
    """What a QueuedFunction needs of :class:`corral.Submitter` (a protocol,
    so that this module, which the scheduler imports, does not import it)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Job: ...

    def options(self, **options: Any) -> SubmitsJobs: ...

P = ParamSpec("P")
R = TypeVar("R")


class QueuedFunction(Generic[P, R]):
    """Calling it submits ``func(*args, **kwargs)`` as a job and returns the Job.

    Made by ``@scheduler.job`` or ``@scheduler.job(cores=2, ...)``; carries the
    function's name, docstring and signature (``functools.wraps``), and the
    plain function as :attr:`func`. Thread-safe as ``Scheduler.submit`` is.
    """

    def __init__(self, func: Callable[P, R], submitter: SubmitsJobs) -> None:
        self.func = func
        self._submitter = submitter
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Submit the call; a Job among the arguments is a dependency.

        Raises:
            NotPicklable: the call cannot be sent to a worker (a ValueError and a TypeError).
            RuntimeError: the scheduler was shut down.
        """
        return self._submitter.submit(self.func, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<QueuedFunction {getattr(self.func, '__qualname__', self.func)!r}>"

    def __reduce__(self) -> tuple[Callable[[Any], Any], tuple[Any]]:
        # Elsewhere (a worker) the scheduler does not exist: travel as the plain function.
        return _plain, (self.func,)


def _plain(func: Callable[..., Any]) -> Callable[..., Any]:
    """Unpickling a QueuedFunction gives back its plain function."""
    return func


def queue_with(submitter: SubmitsJobs, func: Any, options: dict[str, Any]) -> Any:
    """``Submitter.job``'s body: a QueuedFunction, or a decorator making one.

    *options* are checked now, so a typo fails at the decoration, not at the
    first call. A QueuedFunction given as *func* is unwrapped first, so that
    ``scheduler.job(cores=8)(train)`` re-queues an already decorated ``train``
    with other options.

    Raises:
        ValueError: a bad option, naming it (``did you mean 'memory'?``).
        TypeError: *func* is neither a callable nor absent.
    """
    configured = submitter.options(**options) if options else submitter
    if func is None:
        return functools.partial(_queued, configured)
    return _queued(configured, func)


def _queued(submitter: SubmitsJobs, func: Any) -> QueuedFunction[Any, Any]:
    if isinstance(func, QueuedFunction):
        func = func.func
    if not callable(func):
        raise TypeError(f"job() decorates a function, not {func!r}; give options by name, "
                        "e.g. @scheduler.job(cores=2)")
    return QueuedFunction(func, submitter)
