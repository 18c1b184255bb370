"""The batch script each scheduler's template renders, pinned by a golden file.

A change to a template (or to how the base fills it) shows here as a diff of
the whole script. After a deliberate change, regenerate the files with::

    CORRAL_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_batch_script.py
"""

from __future__ import annotations

import difflib
import os
import subprocess
from pathlib import Path

import pytest

from corral.backends.batch.scheduler import BatchScheduler
from corral.backends.batch.slurm.scheduler import SlurmScheduler
from corral.backends.batch.taskfiles import script_for
from support.fakebatch.scheduler import FakeBatchScheduler

GOLDEN = Path(__file__).with_name("golden")
REGENERATE = os.environ.get("CORRAL_REGENERATE_GOLDEN") == "1"
#: Every scheduler corral ships, and the fake one the tests ship; a new one
#: adds itself here and a golden file.
SCHEDULERS = [SlurmScheduler(), FakeBatchScheduler()]


def render_fixed_job(scheduler: BatchScheduler) -> str:
    """The script of a fixed submission: three jobs per array task, two setup
    lines, an interpreter and a run directory that need quoting."""
    return script_for(scheduler, directory=Path(f"/home/ann/runs/it's 100%/{scheduler.name}/7"),
                      tasks=3,
                      setup=("module load python/3.11", "export OMP_NUM_THREADS=1"),
                      python="/opt/my python/bin/python3")


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda scheduler: scheduler.name)
def test_the_rendered_batch_script_matches_its_golden_file(scheduler):
    golden = GOLDEN / f"{scheduler.name}_job.sh"
    rendered = render_fixed_job(scheduler)
    if REGENERATE:
        golden.write_text(rendered)
    expected = golden.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True),
                                        rendered.splitlines(keepends=True),
                                        fromfile=f"golden/{golden.name}", tofile="rendered"))
    assert not diff, (f"the {scheduler.title} batch script changed:\n{diff}\n"
                      "(if meant, set CORRAL_REGENERATE_GOLDEN=1 and run this test again)")


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda scheduler: scheduler.name)
def test_the_rendered_batch_script_is_valid_shell(scheduler, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(render_fixed_job(scheduler))
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda scheduler: scheduler.name)
def test_the_batch_script_names_the_schedulers_variables_for_the_runtime(scheduler):
    from corral.runtime.batch import FAILED_EXIT_STATUS_VAR, SCHEDULER_VARIABLES

    rendered = render_fixed_job(scheduler)
    for name in (*SCHEDULER_VARIABLES.values(), FAILED_EXIT_STATUS_VAR):
        assert f"{name}=" in rendered, f"the {scheduler.title} template does not set {name}"
