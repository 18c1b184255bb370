"""Telling SQLite's errors of the disk (full, failing) from those of a row.

Apart from the writer, which needs it in its own process, so that the readers
(``corral status``, ``logs``) need not import the writer to ask.
"""

from __future__ import annotations

__all__ = ["no_room"]

#: SQLite's primary result codes for a full disk and an I/O error.
_SQLITE_FULL, _SQLITE_IOERR = 13, 10


def no_room(error: object) -> bool:
    """Whether *error* is the disk's (full, or an I/O error), not a row's."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
