"""Where the ``corral`` console script starts: a Ctrl-C is said the same way
whenever it comes, also while the command's modules are still being imported
(a traceback of an import otherwise)."""

from __future__ import annotations

import signal
import sys

from corral.cli.exits import EXIT_INTERRUPTED, INTERRUPTED

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run the ``corral`` command (:func:`corral.cli.main.main`)."""
    try:
        from corral.cli.main import main as run_command
    except KeyboardInterrupt:
        print(f"corral: {INTERRUPTED}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    try:
        run_command(argv)
    finally:  # Done, and said so: a Ctrl-C as the interpreter ends would end it by
        # SIGINT with nothing said (attack review: a submit that had printed its id).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
