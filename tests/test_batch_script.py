"""The batch script each scheduler's template renders, pinned by a golden file.

A change to a template (or to how the base fills it) shows here as a diff of
the whole script. After a deliberate change, regenerate the files with::

    CORRAL_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_batch_script.py
"""

from __future__ import annotations

import difflib
import inspect
import os
import subprocess
from pathlib import Path

import pytest

from corral.backends import backend_info, backend_names
from corral.backends.batch.scheduler import BatchScheduler
from corral.backends.batch.taskfiles import script_for
from support.fakebatch.scheduler import FakeBatchScheduler  # noqa: F401 (a scheduler too)

GOLDEN = Path(__file__).with_name("golden")
REGENERATE = os.environ.get("CORRAL_REGENERATE_GOLDEN") == "1"


def every_scheduler() -> list[BatchScheduler]:
    """Every scheduler corral ships (each registered backend's, and its dialects:
    every concrete subclass) and the fake one the tests ship. A new one needs only
    its golden file, ``golden/<name>_<template file's stem>``. A scheduler built
    from more than its options (one described in settings) sets ``golden = False``
    and pins its scripts in its own tests."""
    for name in backend_names():
        backend_info(name).backend_class()  # imports its scheduler
    found, todo = [], list(BatchScheduler.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo += cls.__subclasses__()
        if not inspect.isabstract(cls) and cls.__dict__.get("golden", True):
            found.append(cls())
    return sorted(found, key=golden_name)


def golden_name(scheduler: BatchScheduler) -> str:
    return f"{scheduler.name}_{scheduler.template.name.removesuffix('.template')}"


SCHEDULERS = every_scheduler()


def render_fixed_job(scheduler: BatchScheduler) -> str:
    """The script of a fixed submission: three jobs per array task, two setup
    lines, an interpreter and a run directory that need quoting."""
    return script_for(scheduler, directory=Path(f"/home/ann/runs/it's 100%/{scheduler.name}/7"),
                      tasks=3,
                      setup=("module load python/3.11", "export OMP_NUM_THREADS=1"),
                      python="/opt/my python/bin/python3")


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=golden_name)
def test_the_rendered_batch_script_matches_its_golden_file(scheduler):
    golden = GOLDEN / golden_name(scheduler)
    rendered = render_fixed_job(scheduler)
    if REGENERATE:
        golden.write_text(rendered)
    expected = golden.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True),
                                        rendered.splitlines(keepends=True),
                                        fromfile=f"golden/{golden.name}", tofile="rendered"))
    assert not diff, (f"the {scheduler.title} batch script changed:\n{diff}\n"
                      "(if meant, set CORRAL_REGENERATE_GOLDEN=1 and run this test again)")


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=golden_name)
def test_the_rendered_batch_script_is_valid_shell(scheduler, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(render_fixed_job(scheduler))
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=golden_name)
def test_the_batch_script_names_the_schedulers_variables_for_the_runtime(scheduler):
    from corral.runtime.batch import FAILED_EXIT_STATUS_VAR, SCHEDULER_VARIABLES

    rendered = render_fixed_job(scheduler)
    for name in (*SCHEDULER_VARIABLES.values(), FAILED_EXIT_STATUS_VAR):
        assert f"{name}=" in rendered, f"the {scheduler.title} template does not set {name}"
