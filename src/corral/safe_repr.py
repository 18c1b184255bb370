"""A bounded ``repr`` for error messages about values users typed.

An error message that quotes the bad value is the most useful one, but
quoting it must never fail or flood: ``repr`` of a list nested 5,000 deep
raises RecursionError, ``repr`` of an int of 5,000 digits raises ValueError
(CPython's limit on int-to-text conversion), and a 10 MB string would become a
10 MB message. :func:`safe_repr` shows the start of such values and says what
the rest is, so a validator can always raise the ValueError it means to.

This module imports nothing of corral's: it is vocabulary.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import Any

__all__ = ["safe_repr", "writable_text", "printable", "describe_error", "first_few",
           "bidi_shown", "shortened", "one_line"]

#: Ints longer than this many bits are described, not spelled out.
_MAX_INT_BITS = 256


class _Bounded(reprlib.Repr):
    """reprlib's limits, wide enough for paths and commands, plus big ints."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = 100
        self.maxother = 100
        self.maxlong = 80
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 8
        self.maxdict = 8

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > _MAX_INT_BITS:
            sign = "-" if x < 0 else ""
            return f"<{sign}int of {x.bit_length()} bits>"
        return super().repr_int(x, level)

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception:  # a hostile __repr__ (or RecursionError) must not hide the error
            return f"<{type(x).__name__} object>"
        if len(text) > self.maxother:
            keep = (self.maxother - 3) // 2
            text = text[:keep] + "..." + text[-keep:]
        return text


_BOUNDED = _Bounded()


def safe_repr(value: Any) -> str:
    """``repr(value)`` cut to a few hundred characters; never raises."""
    try:
        return _BOUNDED.repr(value)
    except Exception:  # a message must always be made
        return f"<{type(value).__name__} object>"


def describe_error(error: BaseException) -> str:
    """``"ValueError: bad x"``; never raises, also for an exception whose
    ``__str__`` does (that would turn the job's failure into corral's)."""
    try:
        text = str(error)
    except Exception as problem:
        text = f"<its str() raised {type(problem).__name__}>"
    return f"{type(error).__qualname__}: {shortened(text)}"


#: The most characters of an exception's text a job's reason carries: the
#: reason is on every status line, event and mail, and a job that raised with
#: a 50 MB message flooded ``corral wait`` (hostile-input review). The whole
#: exception, and its traceback, stay the job's.
MAX_REASON_CHARACTERS = 2000


def shortened(text: str, most: int = MAX_REASON_CHARACTERS) -> str:
    """*text*, or its start and end with how much was left out between them
    (never longer than *text*: a little over *most* is kept whole)."""
    if len(text) <= most + 64:
        return text
    tail = most // 5
    head = most - tail
    return f"{text[:head]} [... {len(text) - head - tail:,} characters left out ...] {text[-tail:]}"


def one_line(text: str, limit: int) -> str:
    """*text* on one line, cut to *limit* characters at a word's end where one
    is near, so that a reason is not left with half a word or number ("exit
    code 13..." for "exit code 137"). For a line among many: a run's closing
    line, ``corral wait``'s list of failures."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit - 3]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space].rstrip(",;:")
    return cut + "..."


def writable_text(text: str) -> str:
    """*text*, with any lone surrogate (the raw bytes of an undecodable file
    name, as Python keeps them) written as ``\\udcff``: such a string cannot be
    stored in SQLite, sent between processes as UTF-8 or logged to a file."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


#: Control characters (C0 but tab and newline, DEL, C1) as ``\xNN``: a reason or
#: name that carries ESC sequences must not clear the screen or retitle the
#: terminal of the person reading it.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7f, 0xa0))
             if code not in (0x09, 0x0a)}
#: ... and the invisible characters that reorder or hide text (bidirectional
#: overrides, isolates and marks, zero-width and joining marks, fillers that
#: show as blanks, the line and paragraph separators, tag characters), as
#: ``\uNNNN``: "evil\u202etxt.exe" must not read as "evilexe.txt", nor two
#: names that look alike be told apart by a character no one sees.
_CONTROLS.update({code: f"\\u{code:04x}" for code in (
    0x00ad, 0x034f, 0x061c, 0x115f, 0x1160, 0x17b4, 0x17b5, 0x180e, *range(0x200b, 0x2010),
    0x2028, 0x2029, *range(0x202a, 0x202f), *range(0x2060, 0x2065), *range(0x2066, 0x2070),
    0x3164, 0xfeff, 0xffa0, *range(0xfff9, 0xfffc))})
_CONTROLS.update({code: f"\\U{code:08x}" for code in range(0xe0000, 0xe0080)})


def printable(text: str) -> str:
    """*text* with its control characters escaped (see :data:`_CONTROLS`),
    for a terminal; tabs and newlines stay."""
    return text.translate(_CONTROLS)


def shows_as_written(text: str) -> bool:
    """Whether *text* is one line a terminal shows as it is: no control
    character, invisible reordering mark, tab or newline."""
    return printable(text) == text and "\t" not in text and "\n" not in text


def first_few(items: Sequence[str], most: int = 5, separator: str = ", ") -> str:
    """The first *most* of *items* joined, and how many more there are: a
    message about 20,000 jobs names a few, not all (one line of 129 KB)."""
    shown = separator.join(items[:most])
    return shown + (f" and {len(items) - most:,} more" if len(items) > most else "")


#: The characters that reorder the text around them (right-to-left overrides,
#: isolates, marks), each to its escape.
_BIDI = {code: f"\\u{code:04x}" for code in (
    0x061c, 0x200e, 0x200f, *range(0x202a, 0x202f), *range(0x2066, 0x206a))}


def bidi_shown(text: str) -> str:
    """*text* with its bidirectional controls shown as escapes, for a page: a
    job named ``"\\u202eexe.png"`` must not read "gnp.exe" there, nor output
    "evil" read "live"; all else (newlines, other scripts) stays."""
    return text.translate(_BIDI)

