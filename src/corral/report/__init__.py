"""A run, shown: the self-contained HTML report and the SVG timeline.

``corral report`` and ``Run.report(path)`` come here; the live dashboard
(:mod:`corral.web`) draws the same page from the same data. Nothing here needs
more than the core install.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.report.html import render_page
from corral.report.model import RunSource, RunView, page_data, read_view
from corral.report.svg import render_svg

__all__ = ["write_report", "report_text", "FORMATS", "RunView", "read_view", "page_data"]

FORMATS = ("html", "svg")


def choose_format(path: str | os.PathLike[str] | None, format: str | None) -> str:
    """The format asked for, else the one *path*'s suffix names, else HTML.

    Raises:
        ValueError: a format corral does not write (the message lists those it does).
    """
    if format is None:
        suffix = Path(os.fspath(path)).suffix.lower() if path is not None else ""
        if suffix in ("", ".html", ".htm", ".svg"):
            return "svg" if suffix == ".svg" else "html"
        raise ValueError(f"{path}: corral writes a report as .html or .svg; "
                         "name the file so, or say format='html' or 'svg'")
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: corral writes a report as "
                         f"{' or '.join(map(repr, FORMATS))}")
    return format


def report_text(run: RunSource, format: str = "html") -> str:
    """The report of *run* as it stands now, as text in *format*."""
    view = read_view(run)
    if format == "svg":
        return render_svg(view)
    return render_page(page_data(view), f"corral · {view.path.name}")


#: A run's path read in a locale that cannot say its name (LC_ALL=C) holds its
#: bytes as surrogates: written back as those bytes (attack review: a crash).
_PATH_BYTES = "surrogateescape"


def write_report(run: RunSource, path: str | os.PathLike[str],
                 format: str | None = None) -> Path:
    """Write the report of *run* to *path* (whole or not at all) and return it."""
    chosen = choose_format(path, format)
    text = report_text(run, chosen)
    target = Path(path).expanduser()
    if target.is_symlink() or (target.exists() and not target.is_file()):
        # a link, /dev/stdout, a pipe: written through, never replaced
        with open(target, "w", encoding="utf-8", errors=_PATH_BYTES) as handle:
            handle.write(text)
        return target.absolute()
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        # Private until it has the old file's mode and group: the text was
        # readable to all for a moment as it was written (re-attack review).
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                             0o600)
        with open(descriptor, "w", encoding="utf-8", errors=_PATH_BYTES) as handle:
            handle.write(text)
        _keep_mode_of(target, partial)
        os.replace(partial, target)  # whole or not at all
    finally:
        partial.unlink(missing_ok=True)
    return target.resolve()


def _keep_mode_of(target: Path, replacement: Path) -> None:
    """Give *replacement* the permissions of the *target* it replaces, if any.

    A report rewritten in place must not widen what its owner narrowed: a
    ``chmod 600 report.html`` (a report holds arguments, reasons and stderr
    tails) came back 0644 from the umask after the next write (review)."""
    try:
        old = target.stat()
    except FileNotFoundError:
        os.chmod(replacement, 0o666 & ~_umask())  # a new file: as any file made here
        return
    try:
        os.chown(replacement, -1, old.st_gid)  # (its group too, where one may give it)
    except OSError:
        pass
    os.chmod(replacement, old.st_mode & 0o7777)


def _umask() -> int:
    """This process's umask, read where no other thread can see it change
    (``os.umask`` sets it to read it)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
