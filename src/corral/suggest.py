"""The "did you mean" hint, written once.

Every message about an unknown name (a job option, a profile, a config key, a
backend, a backend option, a queue) offers the closest known name, so a typo
is fixed from the message alone. One helper keeps the hints alike everywhere
and keeps a non-string "name" (``5``, ``None``) from crashing the message.

This module imports nothing of corral's: vocabulary modules may use it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["closest", "did_you_mean"]


def closest(word: object, known: Iterable[str], *, cutoff: float = 0.6,
            prefix_first: bool = False) -> str | None:
    """The known name *word* was most likely meant to be, or None.

    *cutoff* is :func:`difflib.get_close_matches`'s: how alike the two must be
    (0 to 1). With *prefix_first*, a known name that starts with *word* wins
    over the most alike one: for long names typed in part (``poll`` for
    ``poll_interval``), which difflib ranks too low to offer.
    """
    if not isinstance(word, str) or not word:
        return None
    names = [name for name in known if isinstance(name, str)]
    if prefix_first:
        for name in names:
            if name.startswith(word):
                return name
    import difflib  # (only a mistyped name pays its import: every command imports this)

    close = difflib.get_close_matches(word, names, n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: object, known: Iterable[str], *, cutoff: float = 0.6,
                 prefix_first: bool = False, otherwise: str = "") -> str:
    """``"did you mean 'NAME'?"`` for the closest known name, else *otherwise*.

    The caller places it in its own sentence (after ``"; "`` as a rule), so
    that the rest of each message keeps its own wording.
    """
    match = closest(word, known, cutoff=cutoff, prefix_first=prefix_first)
    return f"did you mean {match!r}?" if match is not None else otherwise
