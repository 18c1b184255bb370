"""``@scheduler.job``: calling a decorated function queues it and returns its Job.

Workers must run the plain function, never the wrapper that holds the
scheduler: checked for functions defined in a test (pickled by value), for a
module-level function decorated in place in a real module file that a driver
script imports (its name then means the wrapper), and for an importable
function decorated under another name (pickled by reference).
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import corral

import jobs


def test_calling_a_decorated_function_submits_it_and_returns_its_job(scheduler):
    @scheduler.job
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    job = double(21)

    assert isinstance(job, corral.Job)
    assert job.result(timeout=30) == 42
    assert job.name == "double" and job in scheduler.jobs()
    assert double.func(4) == 8  # the plain function, called here, queues nothing
    assert len(scheduler.jobs()) == 1
    assert (double.__name__, double.__doc__, double.__wrapped__) == ("double", "Twice x.",
                                                                      double.func)
    assert inspect.signature(double) == inspect.signature(double.func)


def test_the_decorator_options_apply_to_every_call(scheduler):
    @scheduler.job(name="reader", env={"CORRAL_TEST_VALUE": "from the decorator"}, retries=1)
    def read_variable(name: str) -> str | None:
        return os.environ.get(name)

    first, second = read_variable("CORRAL_TEST_VALUE"), read_variable("CORRAL_TEST_VALUE")

    assert [first.result(timeout=30), second.result(timeout=30)] == ["from the decorator"] * 2
    assert (first.name, second.name) == ("reader", "reader")
    assert first.spec.retries == 1


def test_the_decorator_works_on_a_submitter_from_options(scheduler):
    submitter = scheduler.options(env={"CORRAL_TEST_VALUE": "from options"})

    @submitter.job(name="reader")
    def read_variable(name: str) -> str | None:
        return os.environ.get(name)

    job = read_variable("CORRAL_TEST_VALUE")
    assert (job.result(timeout=30), job.name) == ("from options", "reader")


def test_a_job_given_to_a_decorated_function_is_a_dependency(scheduler):
    @scheduler.job
    def increment(x: int) -> int:
        return x + 1

    assert increment(increment(increment(0))).result(timeout=30) == 3


@pytest.mark.parametrize("options, error, pattern", [
    ({"memroy": "1G"}, ValueError, r"unknown job option 'memroy'; did you mean 'memory'\?"),
    ({"cores": 0}, ValueError, r"cores"),
    ({"walltime": "soon"}, ValueError, r"walltime"),
], ids=["typo", "bad-cores", "bad-walltime"])
def test_a_bad_option_is_refused_when_the_function_is_decorated(scheduler, options, error,
                                                                  pattern):
    with pytest.raises(error, match=pattern):
        scheduler.job(**options)
    assert scheduler.jobs() == []


def test_decorating_something_that_is_not_a_function_says_how_to_give_options(scheduler):
    with pytest.raises(TypeError, match=r"job\(\) decorates a function, not 'train'; give "
                                        r"options by name, e.g. @scheduler.job\(cores=2\)"):
        scheduler.job("train")
    with pytest.raises(TypeError, match=r"decorates a function, not 3"):
        scheduler.job(cores=1)(3)


def test_a_decorated_function_passed_to_a_job_runs_there_as_the_plain_function(scheduler):
    @scheduler.job
    def square(x: int) -> int:
        return x * x

    def apply(function, value):
        return function(value)  # in the worker: a plain call, no scheduler there

    job = scheduler.submit(apply, square, 7)
    assert job.result(timeout=30) == 49
    assert scheduler.jobs() == [job]  # the call in the worker queued nothing


def test_an_importable_function_decorated_under_another_name_travels_by_reference(scheduler):
    queued_square = scheduler.job(jobs.square)

    assert queued_square(5).result(timeout=30) == 25
    assert pickle.loads(pickle.dumps(queued_square)) is jobs.square
    again = scheduler.job(cores=1)(queued_square)  # re-queued with other options
    assert again.func is jobs.square and again(6).result(timeout=30) == 36


TASKS_MODULE = '''
"""A user's module: a scheduler and functions decorated in place at import."""
import os
from pathlib import Path

import corral

Path(os.environ["IMPORTS"], str(os.getpid())).touch()  # who imported this module
scheduler = corral.Scheduler(cores=2, journal=os.environ["RUN"])


@scheduler.job(name="factorial")
def factorial(n):
    """Calls itself by its module-level name, which is the wrapper here."""
    return 1 if n <= 1 else n * factorial(n - 1)


@scheduler.job
def record_pid(side):
    Path(side, str(os.getpid())).touch()
    return os.getpid()
'''

DRIVER = '''
import json, os, sys
import queued_tasks

with queued_tasks.scheduler:
    job = queued_tasks.factorial(5)
    worker = queued_tasks.record_pid(os.environ["SIDE"])
    print(json.dumps({"factorial": job.result(timeout=60), "name": job.name,
                      "worker": worker.result(timeout=60), "driver": os.getpid()}))
'''


def test_a_module_level_decorated_function_runs_in_workers_without_its_module(tmp_path: Path):
    """The worker gets the plain function by value: it neither imports the
    user's module (which would make a Scheduler in every worker) nor sees the
    wrapper; a second run on the same journal reuses the results."""
    (tmp_path / "queued_tasks.py").write_text(TASKS_MODULE)
    (tmp_path / "driver.py").write_text(DRIVER)
    imports, side = tmp_path / "imports", tmp_path / "side"
    imports.mkdir()
    side.mkdir()
    env = {**os.environ, "IMPORTS": str(imports), "SIDE": str(side), "RUN": str(tmp_path / "run"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}

    def drive(said: str = "") -> dict:
        done = subprocess.run([sys.executable, "driver.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stderr == said, done.stderr  # nothing failed: no closing summary either
        return json.loads(done.stdout)

    first = drive()
    assert (first["factorial"], first["name"]) == (120, "factorial")
    assert first["worker"] != first["driver"]
    assert sorted(os.listdir(imports)) == [str(first["driver"])]  # no worker imported it
    assert os.listdir(side) == [str(first["worker"])]

    second = drive(f"corral: resuming the run at {tmp_path / 'run'}: what completed in an "
                   "earlier run is restored from its journal, not run again (see corral "
                   "status)\n")  # resumed: the journal knows both calls by the plain function
    assert second["factorial"] == 120 and second["worker"] == first["worker"]
    assert os.listdir(side) == [str(first["worker"])]  # record_pid did not run again
