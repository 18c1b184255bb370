"""Where jobs run. ``base`` defines the protocol; one module per backend."""

from __future__ import annotations

__all__ = ["make_backend", "BACKENDS"]

BACKENDS = ("local",)


def make_backend(name: str, **settings):
    """Build the backend called *name* with the scheduler's settings.

    Raises:
        ValueError: *name* is not a known backend.
    """
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(**settings)
    import difflib

    close = difflib.get_close_matches(name, BACKENDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown backend {name!r}{hint} (known: {', '.join(BACKENDS)})")
