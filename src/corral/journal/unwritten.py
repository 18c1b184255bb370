"""What the journal's writer process was sent and may not have committed yet.

The writer commits the driver's batches a few milliseconds after they come.
If it dies in between (killed, out of memory), what it held is lost, and
with it the end of a command that finished meanwhile, which the next run
would run again. So the driver numbers each batch, keeps it until the
journal says it is committed (the writer records the number of the last
batch of each transaction in it, in the same transaction), and sends what
is left to the writer that takes over (``Journal._take_over`` in
:mod:`corral.journal.store`).

Asking the journal costs a query, so it is asked only when many batches, or
many megabytes of them, are kept, and again only after as many more.
"""

from __future__ import annotations

import pickle
import sqlite3
from collections import deque
from pathlib import Path

from corral.journal.writer import last_written

__all__ = ["Unwritten"]

#: Batches, or bytes of them, kept before the journal is asked which it has committed.
_ASK_AFTER = 1000
_ASK_AFTER_BYTES = 16 << 20


class Unwritten:
    """The numbered batches sent to the writer of *session*, kept until committed."""

    def __init__(self, path: Path, session: int) -> None:
        self._path = path
        self._session = session
        self._kept: deque[tuple[int, bytes]] = deque()
        self._bytes = 0
        self._number = 0
        self._ask_at = (_ASK_AFTER, _ASK_AFTER_BYTES)

    def numbered(self, message: tuple) -> bytes:
        """*message* with its number, pickled, and kept until the journal has it."""
        self._number += 1
        data = pickle.dumps((*message, self._number), pickle.HIGHEST_PROTOCOL)
        self._kept.append((self._number, data))
        self._bytes += len(data)
        if len(self._kept) >= self._ask_at[0] or self._bytes >= self._ask_at[1]:
            self._drop_committed()
            self._ask_at = (max(_ASK_AFTER, 2 * len(self._kept)),
                            max(_ASK_AFTER_BYTES, 2 * self._bytes))
        return data

    def not_committed(self) -> list[bytes]:
        """The batches the journal does not hold, oldest first (its writer is gone)."""
        self._drop_committed()
        return [data for _, data in self._kept]

    def __len__(self) -> int:
        return len(self._kept)

    def _drop_committed(self) -> None:
        committed = self._committed()
        while self._kept and self._kept[0][0] <= committed:
            self._bytes -= len(self._kept.popleft()[1])

    def _committed(self) -> int:
        """The number of the last batch the journal has committed (0: none, or unknown)."""
        try:
            db = sqlite3.connect(f"{self._path.absolute().as_uri()}?mode=ro", uri=True,
                                 timeout=30, isolation_level=None)
            try:
                return last_written(db, self._session)
            finally:
                db.close()
        except sqlite3.Error:
            return 0  # keep them all: sent again, the writer skips what the journal holds
