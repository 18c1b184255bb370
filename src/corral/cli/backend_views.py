"""The views of ``corral options`` and ``corral backends``: what each backend
does and what each job option becomes there, in the backends' own words.

Apart from :mod:`corral.cli.views` because they read the registry of backends,
which loads every backend's declaration (and the installed plug-ins'): a cost
that ``corral status``, ``submit`` and ``wait``, run often and from scripts,
need not pay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from corral.backends import Capabilities, Probe, backend_info, backend_names
from corral.backends.info import APPLIED_BY_CORRAL, NOT_USED
from corral.options import JOB_OPTIONS
from corral.units import DURATION_FORMS

__all__ = ["backends_view", "options_table"]


def _default_text(value: Any) -> str:
    if value in (None, (), {}):
        return "-"
    return str(value)


#: How the options that have no flag of their own are given on the command line.
_FLAGS_ELSEWHERE = {"after": "--after ID|NAME", "cwd": "--workdir", "env": "(your shell's)"}


def option_of_flag(word: str) -> str:
    """The job option the command line's flag ``--word`` sets (``workdir``:
    ``cwd``), else *word*: ``corral options workdir`` finds what ``corral
    submit --help`` calls it (cold review)."""
    for option, flag in _FLAGS_ELSEWHERE.items():
        if flag.split()[0] == f"--{word}":
            return option
    return word


def _on_each_backend(option: str, backends: Sequence[str]) -> list[tuple[str, str]]:
    """``(backend name, what *option* becomes there)`` for each of *backends*:
    each backend says it in its own BackendInfo.option_help."""
    return [(name, backend_info(name).option_help.get(option, "-")) for name in backends]


def backends_view(found: Mapping[str, Probe], auto: str) -> Group:
    """``corral backends``: each registered backend as a block — whether it answers
    here and why (*found*: its probe, by name), what it does, its
    ``backend_options`` and the job options it uses, in its own words — and the
    one ``backend="auto"`` would choose (*auto*)."""
    blocks: list[Any] = []
    for name, probe in found.items():
        info = backend_info(name)
        head = Text(name, style="bold")
        head.append(f"  {info.title}: {info.description}")
        facts = Table.grid(padding=(0, 2), pad_edge=False)
        facts.add_column(width=2)
        facts.add_column(no_wrap=True, style="dim")
        facts.add_column(overflow="fold")
        here = ("answers" if probe.answers else "not here") + f": {probe.why}"
        facts.add_row("", "here", Text(here, style="green" if probe.answers else ""))
        facts.add_row("", "does", _capabilities_text(info.capabilities))
        if info.backend_options:
            facts.add_row("", "backend_options", "")
            for option, meaning in info.backend_options.items():
                facts.add_row("", f"  {option}", meaning)
        facts.add_row("", "job options", "")
        for option, form in info.option_help.items():
            if form not in (NOT_USED, APPLIED_BY_CORRAL, "-", ""):
                facts.add_row("", f"  {option}", form)
        # (one line each: an option that works alike everywhere must not look missing)
        for label, form in (("applied by corral", APPLIED_BY_CORRAL), ("not used", NOT_USED)):
            options = [option for option, its in info.option_help.items() if its == form]
            if options:
                facts.add_row("", f"  {label}", ", ".join(options))
        blocks += [head, facts, Text("")]
    blocks.append(Text(f'backend="auto" chooses {auto} here. '
                       "Per option on every backend: corral options."))
    return Group(*blocks)


def _capabilities_text(capabilities: Capabilities) -> str:
    """What a backend does, as a user reads it."""
    said = {"outlives_driver": "jobs outlive the driver",
            "chains_dependencies": "chains dependencies itself",
            "holds": "holds pending jobs on pause",
            "enforces_walltime": "enforces walltime itself",
            "packs_locally": "packs jobs on this machine"}
    return ", ".join(words for flag, words in said.items() if getattr(capabilities, flag)) \
        or "-"


def options_table(backends: Sequence[str] | None = None,
                  names: Sequence[str] | None = None) -> Group:
    """Every job option as a block of its own: a title line (name, flag, what it
    does) and one line per fact, with what it becomes on each of *backends* (all
    registered ones by default); only the options *names*, if given. Blocks,
    not one wide table, so that at 80 columns text wraps only between words:
    a form like '1:30:00' or a flag like '--cpus-per-task=N' is never broken
    across lines."""
    shown = list(backends) if backends is not None else list(backend_names())
    blocks: list[Any] = []
    for option in JOB_OPTIONS.values():
        if names and option.name not in names:
            continue
        flag = option.flag if option.cli else _FLAGS_ELSEWHERE.get(option.name, "-")
        title = Table.grid(padding=(0, 2), pad_edge=False)
        title.add_column(no_wrap=True)
        title.add_column(overflow="fold")
        name = Text(option.name, style="bold")
        name.append(f"  {flag}" if flag != "-" else "  (no flag)")
        title.add_row(name, option.help)
        facts = Table.grid(padding=(0, 2), pad_edge=False)
        facts.add_column(width=2)  # the indent that shows what belongs to the title
        facts.add_column(no_wrap=True, style="dim")
        # Wraps between words; folds only a word wider than the screen.
        facts.add_column(overflow="fold")
        accepts = option.accepts
        if accepts == DURATION_FORMS and option.cli:  # typed, "90" is text, and ambiguous
            accepts += f" ({option.flag} takes only the strings: a bare number is refused)"
        for label, value in (("accepts", accepts), ("units", option.units or "-"),
                             ("default", _default_text(option.default)),
                             *_on_each_backend(option.name, shown)):
            facts.add_row("", label, value)
        blocks += [title, facts, Text("")]
    return Group(*blocks[:-1])
