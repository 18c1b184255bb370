"""The log of a journaled run: ``<run dir>/corral.log``, and the console.

corral logs through the standard ``logging`` module under the ``corral``
logger. A journaled run also keeps its own log file (INFO and up), which is
what ``corral logs --run``-style questions ("why did the queue stop?") need
after the terminal is gone. Adding a handler switches off Python's
last-resort console output for corral's records, so warnings are then sent
to stderr explicitly, unless the program configured logging itself.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["LOG_FILE", "attach_run_log", "warn_user"]

LOG_FILE = "corral.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d]: %(message)s"


def attach_run_log(run_dir: Path) -> Callable[[], None]:
    """Send corral's log to ``run_dir/corral.log``; return what undoes it."""
    logger = logging.getLogger("corral")
    from corral.journal.files import private_file

    private_file(run_dir / LOG_FILE)
    file_handler = _RunLogFile(run_dir / LOG_FILE)
    file_handler.setLevel(logging.INFO)
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    handlers: list[logging.Handler] = [file_handler]
    if not logging.getLogger().handlers and not any(
            not isinstance(handler, logging.FileHandler) for handler in logger.handlers):
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        console.setFormatter(_ConsoleFormatter())
        handlers.append(console)
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    for handler in handlers:
        logger.addHandler(handler)

    def detach() -> None:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(old_level)

    return detach


class _RunLogFile(logging.FileHandler):
    """``corral.log``, which says once, on stderr, that it cannot be written
    (a full disk), and then stays quiet: logging's own handling printed a
    traceback for every record, hundreds of lines among the program's output."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", errors="surrogateescape")  # (a path
        # of bytes this locale cannot say, LC_ALL=C: written as its bytes, re-attack review)
        self.failed = False

    def handleError(self, record: logging.LogRecord | None) -> None:
        if self.failed:
            return
        self.failed = True
        error = sys.exc_info()[1]
        said = getattr(error, "strerror", None) or error
        print(f"corral: cannot write {self.baseFilename} ({said}): the run's log goes on "
              "without it", file=sys.stderr, flush=True)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError:
            self.handleError(None)

    def close(self) -> None:  # (its last flush fails as the others did)
        try:
            super().close()
        except OSError:
            self.handleError(None)


class _ConsoleFormatter(logging.Formatter):
    """``corral: message`` for warnings, ``corral: error: message`` above them:
    the same lines a run without a journal prints (see :func:`warn_user`)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "corral: error: " if record.levelno >= logging.ERROR else "corral: "
        return prefix + super().format(record)


def warn_user(message: str) -> None:
    """Log a warning a person must see, such as the run's closing summary.

    It goes through corral's log (``corral.log`` and the console handler of
    :func:`attach_run_log`, or the program's own logging). With no handler
    anywhere, Python would print the bare message; this prints it as
    ``corral: message`` instead, so the reader knows where it comes from.
    """
    logger = logging.getLogger("corral")
    if logger.hasHandlers():
        logger.warning(message)
        if not _reaches_the_console(logger):  # (a program that logs to a file: cold review)
            print(f"corral: {message}", file=sys.stderr, flush=True)
    elif logger.isEnabledFor(logging.WARNING) and logging.lastResort is not None:
        print(f"corral: {message}", file=sys.stderr, flush=True)


def _reaches_the_console(logger: logging.Logger) -> bool:
    """Whether a warning of *logger* is printed on stderr or stdout by one of
    the handlers it goes through (a program may log to a file only, where
    nobody reads the line a person must see)."""
    consoles = {sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__}
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if (isinstance(handler, logging.StreamHandler)
                    and not isinstance(handler, logging.FileHandler)
                    and handler.stream in consoles and handler.level <= logging.WARNING):
                return True
        current = current.parent if current.propagate else None
    return False
