"""What a state row sends in place of a result its journal row holds already.

A job restored from the journal is written again (its event, its reason),
but not its result: each rerun wrote every restored result again (attack
review: a 400 MB one took 11 s of the rerun's shutdown, after going through
the pipe to the writer). The driver sends :data:`KEPT_RESULT`, the writer
leaves the row's result as it is (:mod:`corral.journal.writer`). Its own
small module: the writer process unpickles it, and the engine, which every
program imports, sets it.
"""

from __future__ import annotations

__all__ = ["KeptResult", "KEPT_RESULT"]


class KeptResult(bytes):
    """In a state row, in place of a job's result: the row holds it already."""

    __slots__ = ()


#: The one KeptResult a driver sends.
KEPT_RESULT = KeptResult()
