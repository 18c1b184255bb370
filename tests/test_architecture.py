"""The walls of the house: what backends are, and where they may be named.

Backends are found in a registry (corral.backends) and described by their
capabilities; the rest of corral asks the registry and never compares a
backend's name, so that a new backend is a new folder in ``backends/``, not an
edit in the engine, the journal or the CLI.
"""

from __future__ import annotations

import ast
import sqlite3
import os
import subprocess
import sys
import threading
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral

from corral.backends import (BackendInfo, Capabilities, backend_info, backend_names,
                             make_backend, outlives_driver, register_backend, resolve_backend,
                             unregister_backend)
from corral.backends.local.backend import LocalBackend
from corral.cli.views import status_table
from corral.journal.stored import StoredJob
from corral.options import JOB_OPTIONS
from corral.status import JobStatus

SOURCE = Path(__file__).resolve().parents[1] / "src" / "corral"


# -- no backend named outside backends/ -------------------------------------------------------

def _docstring_lines(tree: ast.AST) -> set[int]:
    """Lines of bare string statements: docstrings, which may explain by example."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


#: Token types that hold text of a string literal (3.12 splits f-strings into parts).
_STRING_TYPES = {tokenize.STRING} | {getattr(tokenize, name) for name in
                                     ("FSTRING_MIDDLE", "TSTRING_MIDDLE")
                                     if hasattr(tokenize, name)}


def backend_names_in_code(path: Path, names: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """``(line, token)`` for each string literal that holds one of *names* as a
    word ("slurm", "sent to Slurm", "SLURM_JOB_ID") and each identifier made of
    one (``slurm_answers``), outside docstrings and comments."""
    text = path.read_text()
    skip = _docstring_lines(ast.parse(text))
    word = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, names)) + r")(?![A-Za-z0-9])",
                      re.IGNORECASE)
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        line = token.start[0]
        if line in skip:
            continue
        in_text = token.type in _STRING_TYPES and word.search(token.string)
        as_identifier = (token.type == tokenize.NAME
                         and set(token.string.lower().split("_")) & set(names))
        if in_text or as_identifier:
            yield line, token.string


def _outside_backends() -> list[Path]:
    return sorted(path for path in SOURCE.rglob("*.py")
                  if path.relative_to(SOURCE).parts[0] != "backends")


def test_no_backend_name_outside_backends():
    names = backend_names()
    found = [f"src/corral/{path.relative_to(SOURCE)}:{line}: {token}"
             for path in _outside_backends()
             for line, token in backend_names_in_code(path, names)]
    assert not found, ("a backend is named outside corral/backends/; ask the registry "
                       "(corral.backends: backend_info(name).capabilities, ...) instead:\n"
                       + "\n".join(found))


def test_only_the_core_touches_the_engines_record_of_a_job():
    """``Job`` is the user's read-only view: the engine's record behind it
    (``job._record``) is written by the core alone."""
    found = [f"src/corral/{path.relative_to(SOURCE)}:{number}"
             for path in SOURCE.rglob("*.py") if path.relative_to(SOURCE).parts[0] != "core"
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if "._record" in line]
    assert not found, "the engine's job record is used outside corral/core/:\n" + "\n".join(found)


@pytest.mark.parametrize(("code", "lines"), [
    ('if backend == "slurm":\n    pass\n', [1]),
    ('count = 3\nmessage = f"sent to Slurm for {count} jobs"\n', [2]),
    ("variable = 'SLURM_ARRAY_TASK_ID'\n", [1]),
    ("def slurm_answers():\n    pass\n", [1]),
    ('def f():\n    """Runs on Slurm, or on the local machine."""\n', []),
    ("# the local backend\nlocalhost = 'localhost'\nstate = threading_locals\n", []),
], ids=["compared", "in a message", "a scheduler variable", "an identifier",
        "a docstring", "a comment and a longer word"])
def test_the_scan_finds_names_in_code_not_in_docstrings(tmp_path, code, lines):
    module = tmp_path / "module.py"
    module.write_text(code)
    assert [line for line, _ in backend_names_in_code(module, ("local", "slurm"))] == lines


# -- the registry -------------------------------------------------------------------------------

def test_each_backend_declares_help_for_every_job_option():
    """Every registered backend, the one the tests ship included."""
    from support.fakebatch.scheduler import registered

    with registered():
        names = backend_names()
        assert "fakebatch" in names
        for name in names:
            assert set(backend_info(name).option_help) == set(JOB_OPTIONS), name


#: corral's own backends, in the order the registry declares them.
CORRALS_OWN = ["local", "slurm", "sge", "pbs", "lsf", "dask"]


@pytest.mark.parametrize("name", CORRALS_OWN)
def test_a_backend_class_agrees_with_its_registered_capabilities(name):
    """The engine reads the class's flags; the journal and CLI read the
    registry: both must tell the same story."""
    info = backend_info(name)
    backend_class = info.backend_class()
    assert backend_class.name == name
    assert bool(getattr(backend_class, "enforces_walltime", False)) is \
        info.capabilities.enforces_walltime
    assert bool(getattr(backend_class, "chains_dependencies", False)) is \
        info.capabilities.chains_dependencies
    assert callable(getattr(backend_class, "hold", None)) is info.capabilities.holds
    assert callable(getattr(backend_class, "attach", None)) is info.capabilities.outlives_driver


def test_local_jobs_end_with_their_driver_and_slurm_jobs_do_not():
    assert not outlives_driver("local") and outlives_driver("slurm")
    assert not outlives_driver("a-backend-this-process-never-heard-of")
    assert not outlives_driver(None)


class FakeSchedBackend(LocalBackend):
    """The local backend under another name: a registered backend for these tests."""

    name = "fakesched"


def _fake_info(name: str = "fakesched", **changes) -> BackendInfo:
    values = dict(name=name, title="FakeSched", description="a scheduler for tests",
                  capabilities=Capabilities(outlives_driver=False, chains_dependencies=True,
                                            holds=False, enforces_walltime=False,
                                            packs_locally=True),
                  factory="test_architecture:FakeSchedBackend",
                  answers=lambda: True)
    values.update(changes)
    return BackendInfo(**values)


@pytest.fixture
def fake_registered() -> Iterator[BackendInfo]:
    info = _fake_info()
    register_backend(info)
    yield info
    unregister_backend(info.name)


def test_a_registered_backend_is_known_by_name_and_chosen_by_auto(fake_registered, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch: Slurm (registered first) is silent
    assert "fakesched" in backend_names()
    assert resolve_backend("fakesched") == "fakesched"
    assert resolve_backend("auto") == "fakesched"  # the first that answers
    assert not outlives_driver("fakesched")
    backend = make_backend("fakesched", cores=1)
    try:
        assert backend.capacity().cores == 1
    finally:
        backend.close()


def test_auto_is_the_default_backend_when_no_backend_answers(monkeypatch):
    register_backend(_fake_info(answers=lambda: False))
    try:
        monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch: Slurm does not answer
        assert resolve_backend("auto") == "local"
    finally:
        unregister_backend("fakesched")


def test_an_unknown_backend_name_suggests_the_closest_registered_one(fake_registered):
    known = ", ".join([*backend_names(), "auto"])  # whatever else a test registered too
    assert known.startswith("local, slurm, ") and "fakesched" in known
    with pytest.raises(ValueError, match=r"^unknown backend 'fakeshed'; did you mean 'fakesched'"
                                         rf"\? \(known: {re.escape(known)}\)$"):
        resolve_backend("fakeshed")


@pytest.mark.parametrize(("info", "message"), [
    (_fake_info(name="local"), r"^a backend named 'local' is already registered$"),
    (_fake_info(name="Fake"), r"^backend name 'Fake' must be a lowercase word other than 'auto'"),
    (_fake_info(name="auto"), r"^backend name 'auto' must be a lowercase word other than 'auto'"),
    (_fake_info(factory="corral.backends.local.backend.LocalBackend"),
     r"^backend 'fakesched': factory='corral\.backends\.local\.backend\.LocalBackend' must be "
     r"'module:Class'$"),
    (_fake_info(capabilities=Capabilities(outlives_driver=True, chains_dependencies=True,
                                          holds=True, enforces_walltime=True,
                                          packs_locally=False)),
     r"^backend 'fakesched': its jobs outlive the driver, so it needs a driverless_control "
     r"\('module:function'\) for corral cancel/pause/resume$"),
    ("fakesched", r"^register_backend takes a BackendInfo, not str$"),
    (_fake_info(name=5), r"^backend name 5 must be a lowercase word"),
    (_fake_info(factory=":"), r"^backend 'fakesched': factory=':' must be 'module:Class'$"),
    (_fake_info(factory=None), r"^backend 'fakesched': factory=None must be 'module:Class'$"),
    (_fake_info(driverless_control="nocolon"),
     r"^backend 'fakesched': driverless_control='nocolon' must be 'module:function'$"),
    (_fake_info(capabilities=None),
     r"^backend 'fakesched': capabilities=None must be a corral.backends.Capabilities$"),
    (_fake_info(answers=5), r"^backend 'fakesched': answers=5 must be a function taking no "
                            r"argument"),
], ids=["a taken name", "not lowercase", "auto", "a factory without ':'",
        "outlives its driver without driverless control", "not a BackendInfo", "a number",
        "an empty factory", "no factory", "a driverless control without ':'",
        "no capabilities", "answers not callable"])
def test_a_bad_registration_is_refused_with_what_to_fix(info, message):
    with pytest.raises(ValueError, match=message):
        register_backend(info)
    assert "fakesched" not in backend_names()


def test_control_without_a_driver_is_refused_for_a_backend_whose_jobs_end_with_it():
    with pytest.raises(ValueError, match=r"^the local backend's jobs end with their driver: "
                                         r"there is nothing to control without one$"):
        backend_info("local").control_without_driver("cancel", ["123"])
    with pytest.raises(ValueError, match=r"^'frobnicate' cannot be done without a driver; "
                                         r"only cancel, pause, resume$"):
        backend_info("slurm").control_without_driver("frobnicate", ["123"])


# -- what the CLI shows comes from the registry ----------------------------------------------------

def _running_job(native_id: str) -> StoredJob:
    return StoredJob(id=1, key="k", name="train", kind="shell", command="sleep 60", spec={},
                     deps=(), status=JobStatus.RUNNING, reason=None, exit_code=None, attempts=1,
                     native_id=native_id, started=None, ended=None, jobdir=None, result=None,
                     error=None, session=1)


def _column_titles(listing) -> list[str]:
    return list(listing.names)


def test_status_names_the_native_id_column_after_the_backend_that_runs_the_job():
    shown = status_table([_running_job("81237")], driver_alive=False, cluster_jobs={"1": "slurm"})
    assert "SLURM ID" in _column_titles(shown)


def test_a_registered_backend_names_its_own_status_column(monkeypatch):
    register_backend(_fake_info(
        title="QSim",  # its own word, not its registry name
        capabilities=Capabilities(outlives_driver=True, chains_dependencies=True, holds=True,
                                  enforces_walltime=True, packs_locally=False),
        driverless_control="corral.backends.batch.slurm.backend:control_without_driver"))
    try:
        shown = status_table([_running_job("q.7")], driver_alive=False,
                             cluster_jobs={"1": "fakesched"})
        assert "QSIM ID" in _column_titles(shown)
        assert outlives_driver("fakesched")
    finally:
        unregister_backend("fakesched")


# -- imports point down the layers (.importlinter) --------------------------------------------

CONTRACTS = SOURCE.parents[1] / ".importlinter"


def _layers() -> list[list[str]]:
    """The layers of .importlinter, top first; each a list of module names."""
    text = CONTRACTS.read_text()
    block = text.split("layers =", 1)[1]
    layers = []
    for line in block.splitlines()[1:]:
        if not line.startswith("    "):
            break
        layers.append([name.strip() for name in re.split(r"[:|]", line) if name.strip()])
    return layers


def test_imports_point_down_the_layers_of_the_architecture():
    """A module that imports one from a layer above it (the engine importing the CLI,
    the journal importing the engine) breaks the contract, naming the import."""
    import logging

    from importlinter.cli import lint_imports

    # lint_imports configures logging with dictConfig, which disables every
    # logger that exists (corral's too): later tests' caplog would see nothing.
    loggers = [logger for logger in logging.root.manager.loggerDict.values()
               if isinstance(logger, logging.Logger) and not logger.disabled]
    try:
        assert lint_imports(config_filename=str(CONTRACTS), no_cache=True) == 0, (
            "an import points up the layers; run .venv/bin/lint-imports to see which")
    finally:
        for logger in loggers:
            logger.disabled = False


def test_every_module_of_corral_belongs_to_a_layer():
    """A new top-level module or package must be given a place in .importlinter,
    or the contract would silently say nothing about it."""
    placed = {name for layer in _layers() for name in layer}
    unplaced = []
    for path in SOURCE.iterdir():
        if path.name.startswith(("_", ".")) or not (path.suffix == ".py" or path.is_dir()):
            continue
        module = f"corral.{path.stem}"
        inside = {name for name in placed if name.startswith(module + ".")}
        if module not in placed and not inside:
            unplaced.append(module)
        elif module not in placed:  # a package split across layers: every module placed
            for child in path.glob("*.py"):
                if child.stem != "__init__" and f"{module}.{child.stem}" not in placed:
                    unplaced.append(f"{module}.{child.stem}")
    assert not unplaced, f"modules with no layer in .importlinter: {unplaced}"


# -- backends installed by other packages ------------------------------------------------------

def _installed_plugin(site: Path, target: str) -> None:
    """A distribution on *site* whose entry point in corral's group names *target*."""
    dist = site / "oursched-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: oursched\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[corral.backends]\noursched = {target}\n")
    (site / "oursched_backend.py").write_text(
        "from corral.backends.base import BackendInfo, Capabilities\n"
        "from corral.options import JOB_OPTIONS\n"
        "BACKEND = BackendInfo(name='oursched', title='OurSched', description='a site scheduler',\n"
        "    capabilities=Capabilities(outlives_driver=False, chains_dependencies=False,\n"
        "        holds=False, enforces_walltime=False, packs_locally=True),\n"
        "    factory='corral.backends.local.backend:LocalBackend',\n"
        "    option_help={name: '' for name in JOB_OPTIONS})\n")


def _names_in_fresh_process(site: Path) -> subprocess.CompletedProcess[str]:
    code = "from corral.backends import backend_names; print(' '.join(backend_names()))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_backend_an_installed_package_declares_is_known_to_every_corral_process(tmp_path):
    """The `corral` command and the daemon are other processes than the program that
    would call register_backend: an installed site backend reaches them by its entry point."""
    _installed_plugin(tmp_path, "oursched_backend:BACKEND")
    shown = _names_in_fresh_process(tmp_path)
    assert shown.stdout.split() == [*CORRALS_OWN, "oursched"], shown.stderr


def test_a_broken_backend_entry_point_is_logged_and_the_others_still_work(tmp_path):
    _installed_plugin(tmp_path, "oursched_backend:NO_SUCH_NAME")
    shown = _names_in_fresh_process(tmp_path)
    assert shown.stdout.split() == CORRALS_OWN
    assert "could not load the backend 'oursched' (oursched_backend:NO_SUCH_NAME)" in shown.stderr


def test_a_probe_that_fails_counts_as_not_answering_and_auto_goes_on(monkeypatch, caplog):
    def broken_probe() -> bool:
        raise OSError("the site's command is missing")

    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch: Slurm (registered first) is silent
    register_backend(_fake_info(answers=broken_probe))
    try:
        assert resolve_backend("auto") == "local"
    finally:
        unregister_backend("fakesched")
    assert ("the fakesched backend's probe failed (OSError: the site's command is missing); "
            "taken as not answering") in caplog.text


def test_corrals_own_backends_cannot_be_unregistered():
    with pytest.raises(ValueError, match=r"^the local backend is corral's own and cannot be "
                                         r"unregistered$"):
        unregister_backend("local")
    assert "local" in backend_names()


def test_a_backend_whose_class_calls_itself_otherwise_is_refused_when_made():
    """A copied backend renamed in one place only would write its jobs, files and
    journal rows under the other name."""
    register_backend(_fake_info(name="copied"))
    try:
        with pytest.raises(ValueError, match=r"^backend 'copied': its class FakeSchedBackend "
                                             r"calls itself 'fakesched'; give both the same "
                                             r"name$"):
            make_backend("copied", cores=1)
    finally:
        unregister_backend("copied")


# -- a run whose backend is not installed here -------------------------------------------------

def _run_left_to_an_unknown_backend(tmp_path: Path) -> Path:
    """A journaled run whose one job an earlier session handed to a backend
    'oursched' that this process does not know, and which was still running."""
    run_dir = tmp_path / "run"
    with corral.Scheduler(journal=run_dir, cores=1) as scheduler:
        scheduler.shell("echo done", name="step")
    with sqlite3.connect(run_dir / "journal.db") as db:
        db.execute("UPDATE jobs SET status='running', native_id='q.7', ended=NULL")
        db.execute("UPDATE sessions SET backend='oursched'")
    return run_dir


def test_status_says_a_job_of_a_backend_not_installed_here_may_still_run(tmp_path):
    """Not "its driver is gone: nothing runs it now": its scheduler may run it still."""
    run_dir = _run_left_to_an_unknown_backend(tmp_path)
    shown = subprocess.run([sys.executable, "-m", "corral.cli", "--run", os.fspath(run_dir),
                            "status"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "200"})
    assert "may still run on 'oursched' (unknown here)" in shown.stdout, \
        shown.stdout + shown.stderr
    assert "nothing runs it now" not in shown.stdout


def test_status_knows_a_backend_an_installed_package_declares(tmp_path):
    """corral's own backends are found without reading the installed packages'
    entry points (a sixth of a `corral status`); any other name still is looked up there."""
    run_dir = _run_left_to_an_unknown_backend(tmp_path)
    site = tmp_path / "site"
    _installed_plugin(site, "oursched_backend:BACKEND")
    shown = subprocess.run([sys.executable, "-m", "corral.cli", "--run", os.fspath(run_dir),
                            "status"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "200",
                                "PYTHONPATH": os.pathsep.join([str(site), *sys.path])})
    assert shown.returncode == 3, shown.stdout + shown.stderr  # its driver is gone
    assert "unknown here" not in shown.stdout, shown.stdout


def test_corrals_own_backends_are_found_by_name_before_any_other_is_looked_for():
    code = ("import sys; from corral.backends import registered_info; "
            f"print([registered_info(name).name for name in {CORRALS_OWN!r}]); "
            "print('importlib.metadata' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60)
    assert shown.stdout.split("\n")[:2] == [repr(CORRALS_OWN), "False"], shown.stderr


def test_resuming_a_run_of_a_backend_not_installed_here_warns_that_it_may_still_run(
        tmp_path, caplog):
    run_dir = _run_left_to_an_unknown_backend(tmp_path)
    with corral.Scheduler(journal=run_dir, cores=1) as scheduler:
        job = scheduler.shell("echo done", name="step")  # the script, run again
        assert job.result(timeout=60) is None  # run again here, as the log says
    assert ("job 1 'step' was handed to the 'oursched' backend, which is not installed here; "
            "it may still run there (native id q.7) and this run will run it again") in caplog.text
    reasons = [event[4] for event in corral.Scheduler.open(run_dir).events(1)]
    assert ("its driver ended before it did; it was handed to the 'oursched' backend, which is "
            "not installed here, and may still run there as q.7 (the next run of the script "
            "runs it again)") in reasons


def test_a_probe_that_hangs_counts_as_not_answering_and_auto_goes_on(monkeypatch, caplog):
    import corral.backends as registry

    release = threading.Event()
    monkeypatch.setattr(registry, "PROBE_TIMEOUT_S", 0.2)
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch: Slurm (registered first) is silent
    register_backend(_fake_info(answers=release.wait))
    try:
        assert resolve_backend("auto") == "local"
    finally:
        release.set()
        unregister_backend("fakesched")
    assert "the fakesched backend's probe did not answer within 0 s; taken as not answering" \
        in caplog.text


def test_every_batch_script_template_is_package_data():
    """A template left out of package data is missing from a non-editable install:
    its scheduler fails at its first submission."""
    import tomllib

    shipped = tomllib.loads((SOURCE.parent.parent / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]
    for template in SOURCE.rglob("*.template"):
        package = ".".join(template.parent.relative_to(SOURCE.parent).parts)
        assert any(template.match(pattern) for pattern in shipped.get(package, ())), (
            f"{template.relative_to(SOURCE.parent)} is not in [tool.setuptools.package-data]")


#: What the commands people run most, on a run that has ended, have no use for:
#: each costs a fresh `corral` interpreter milliseconds (a progress bar nobody
#: sees, the driver's side of the journal, job specs, OpenSSL for one digest).
_NOT_FOR_READING_A_RUN = ("logging", "rich.progress", "hashlib", "argparse", "corral.spec",
                          "corral.journal.store", "corral.control.server", "corral.cli.daemon")


@pytest.mark.parametrize("command", [["status"], ["wait"], ["logs", "1"]])
def test_the_commands_that_read_a_run_import_only_what_they_use(tmp_path, command):
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as scheduler:
        scheduler.submit(print, "x").result(timeout=30)
    done = subprocess.run([os.fspath(Path(sys.executable).with_name("corral")), "--run",
                           os.fspath(run), *command], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1",
                               "CORRAL_CONFIG": os.devnull})
    assert done.returncode == 0, done.stderr
    imported = set(re.findall(r"^import time:.*\|\s*([\w.]+)$", done.stderr, re.M))
    assert "corral.cli.main" in imported  # (the list is read right)
    assert imported.isdisjoint(_NOT_FOR_READING_A_RUN), \
        sorted(imported & set(_NOT_FOR_READING_A_RUN))
