"""A stored result, shown to a person at a terminal without running anyone's code.

A job's result is kept pickled in the journal. ``corral status ID`` shows it
(cold review: what a command left in ``$CORRAL_RESULT_FILE`` could be read only
from Python), but loading a pickle may import and call anything it names: a
journal is the user's own, yet a command that only reads must not run a job's
classes (nor fail because this interpreter lacks their modules). So the value
is loaded only if it is plain data: numbers, strings, bytes, lists, tuples,
dicts, sets, None and booleans, and a few standard types that hold nothing
else; anything more is named, with the way to load it in Python.
"""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

from corral.safe_repr import safe_repr

__all__ = ["shown_result"]

#: The classes a plain value's pickle may name (the types above need none).
#: (Not range, bytearray nor Fraction: called by a crafted pickle with a huge
#: number, each took gigabytes or minutes: re-attack review.)
_PLAIN_CLASSES = frozenset({
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"),
    ("collections", "OrderedDict"), ("datetime", "datetime"), ("datetime", "date"),
    ("datetime", "time"), ("datetime", "timedelta"), ("datetime", "timezone"),
    ("decimal", "Decimal"),
})


class _NotPlain(Exception):
    """The pickle names a class outside :data:`_PLAIN_CLASSES`."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PLAIN_CLASSES:
            raise _NotPlain(f"{module}.{name}")
        return super().find_class(module, name)


def shown_result(blob: bytes, job_id: object, as_json: bool) -> str:
    """The result pickled in *blob* as a line for a person, if it is plain data:
    *as_json* (a command's or script's, which it wrote as JSON) as JSON, else its
    repr, cut to a few hundred characters; otherwise what it is and how to load it."""
    try:
        value = _PlainUnpickler(io.BytesIO(blob)).load()
    except _NotPlain as named:
        return (f"not plain data (its pickle names {named}): not loaded here, which would "
                f"run its code; in Python: corral.Run(RUN).job({str(job_id)!r}).result_value()")
    except Exception:  # (any damage: the row is said to be unreadable)
        return "cannot be read: its record in the journal is damaged"
    # As JSON from a small pickle only: one string referred to a million times
    # is a small pickle and a JSON text of terabytes (re-attack review).
    if as_json and len(blob) <= _MOST_JSON_BLOB:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            pass
        else:  # (cut, its spaces kept: they may be a path's)
            return text if len(text) <= _MOST_SHOWN else text[:_MOST_SHOWN - 3] + "..."
    return safe_repr(value)


#: The most characters of a result shown.
_MOST_SHOWN = 400
#: The largest pickle whose value is shown as JSON (others by their bounded repr).
_MOST_JSON_BLOB = 64 * 1024
