"""The console the tables of the command are printed on: a terminal's width,
or plain lines with no trailing spaces for a file or a pipe."""

from __future__ import annotations

import functools
import os
import sys
from typing import IO, TYPE_CHECKING, Any, cast

from corral.cli.streams import ReaderGone

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["make_console"]


def make_console() -> Console:
    """A console for this command's output (rich is imported only by the
    commands that print tables: ``corral logs`` does without it)."""
    if sys.stdout.isatty():
        width, file = None, None
    else:  # a file or a pipe: no spaces that pad the last column to the line's end
        width = int(os.environ.get("COLUMNS", "160"))
        file = cast("IO[str]", _LinesTrimmed(sys.stdout))
    # markup=False: names and commands are shown as typed, "[/]" and all
    return _console_class()(width=width, file=file, highlight=False, soft_wrap=False,
                            markup=False)


@functools.cache
def _console_class() -> type[Console]:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            """End as :func:`corral.cli.main.main` ends every command whose reader
            went away: rich's own way exits 1, which says a job failed (attack review)."""
            self.quiet = True
            raise ReaderGone

    return _Console


class _LinesTrimmed:
    """A text stream that drops the spaces at the end of each line written to
    it: rich pads every row of a grid to its full width, which a file or a
    ``grep`` then carries. (Rich writes each print whole, lines and all.)"""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        # (line by line: a regex over a 20,000-line table took a tenth of a second)
        self._stream.write("\n".join([line.rstrip(" ") for line in text.split("\n")]))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the stream's
        return getattr(self._stream, name)
