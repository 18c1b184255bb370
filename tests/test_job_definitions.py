"""Making jobs: the four kinds of task, options, and a clear error for every bad input."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

import corral
from corral import Job, JobStatus, Shell

import jobs


def test_a_job_can_be_made_unsubmitted_with_its_resources_parsed():
    job = Job(jobs.square, args=(3,), cores=2, memory="1.5G", walltime="1:30:00", gpus=1,
              name="sq", priority=5, retries=2, timeout="90s", meta={"k": 1})
    assert job.status is JobStatus.NEW
    assert job.name == "sq" and job.meta == {"k": 1}
    resources = job.spec.resources
    assert (resources.cores, resources.memory_mb, resources.walltime_s, resources.gpus) == (
        2, 1536, 5400, 1)
    assert job.spec.kill_after_s == 90
    assert repr(job) == "<Job ? 'sq' NEW>"


def test_string_tasks_are_module_functions_or_scripts(tmp_path):
    script = tmp_path / "work.py"
    script.write_text("print('hi')\n")
    assert isinstance(Job("json:dumps", args=([1],)).spec.task, corral.FunctionRef)
    assert isinstance(Job(str(script), args=("--fast",)).spec.task, corral.Script)
    assert Job(Shell("make -j2")).name == "make"


def test_the_default_name_comes_from_the_task():
    assert Job(jobs.square, (2,)).name == "square"
    assert Job(Shell(["/usr/bin/env", "true"])).name == "env"


@pytest.mark.parametrize("options, message", [
    ({"memroy": "4G"}, "unknown job option 'memroy'; did you mean 'memory'?"),
    ({"cores": 0}, r"cores=0 must be an int >= 1"),
    ({"cores": 1.5}, r"cores=1.5 must be an int >= 1"),
    ({"gpus": -1}, r"gpus=-1 must be an int >= 0"),
    ({"memory": "lots"}, r"memory='lots' is not a memory size; use an int of megabytes"),
    ({"walltime": "30"}, r"walltime='30' is ambiguous"),
    ({"timeout": "forever"}, r"timeout='forever' is not a duration"),
    ({"priority": "high"}, r"priority='high' must be an int"),
    ({"retries": -1}, r"retries=-1 must be an int >= 0"),
    ({"name": ""}, r"name='' must be a non-empty string"),
    ({"after": [42]}, r"after: 42 is neither a Job nor the name of a job"),
    ({"cwd": "/no/such/dir"}, r"cwd='/no/such/dir' is not an existing directory"),
    ({"env": {"A=B": "x"}}, r"env: 'A=B'='x' is not a valid environment variable"),
    ({"env": ["A"]}, r"env=\['A'\] must be a mapping"),
])
def test_bad_options_name_the_option_and_what_it_accepts(options, message):
    with pytest.raises(ValueError, match=message):
        Job(jobs.noop, **options)


@pytest.mark.parametrize("task, message", [
    (42, r"task 42 is not runnable: give a callable, 'package.module:function', a .py script"),
    ("ls -l", r"task 'ls -l' is neither 'package.module:function' nor a path to a .py script; "
              r"for a shell command use corral.Shell"),
    ("no_such_module_xyz:run", r"no module named 'no_such_module_xyz' can be imported"),
    # A module this process has imported is looked into (jobs is, above): a typo fails here.
    ("jobs:nop", r"function reference 'jobs:nop': module 'jobs' has no attribute 'nop'; "
                 r"did you mean 'noop'\?"),
    ("jobs:CustomError.add_not", r"'jobs:CustomError' has no attribute 'add_not'; "
                                 r"did you mean 'add_note'\?"),
    ("jobs:__doc__", r"function reference 'jobs:__doc__' is not callable"),
    ("missing_script.py", r"script 'missing_script.py' does not exist"),
    (Shell(""), r"shell command is empty"),
    (Shell([]), r"shell command is an empty argument list"),
])
def test_bad_tasks_are_refused_when_the_job_is_made(task, message):
    with pytest.raises(ValueError, match=message):
        Job(task)


def test_a_job_id_must_be_an_int_or_a_string():
    with pytest.raises(ValueError, match=r"id=1.5 must be an int or a string"):
        Job(jobs.noop, id=1.5)


def test_an_unsubmitted_job_can_be_cancelled_like_a_future():
    job = Job(jobs.noop)
    assert job.cancel() is True
    assert job.status is JobStatus.CANCELLED
    with pytest.raises(concurrent.futures.CancelledError, match="cancelled by user"):
        job.result()


def test_jobs_are_futures():
    assert isinstance(Job(jobs.noop), concurrent.futures.Future)


def test_unpicklable_arguments_are_refused_at_submission(scheduler):
    with pytest.raises(ValueError, match=r"job 'identity' cannot be sent to a worker: its "
                                         r"function or arguments cannot be pickled \(TypeError"):
        scheduler.submit(jobs.identity, threading.Lock())
    assert scheduler.jobs() == []
