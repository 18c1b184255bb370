"""Making jobs: the four kinds of task, options, and a clear error for every bad input."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
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
    assert Job(Shell(["/usr/bin/env", "true"])).name == "true"


@pytest.mark.parametrize("command, name", [
    ("nproc; echo ok", "nproc"), ("make&&make test", "make"), ("(cd src && make)", "cd"),
    ("python train.py --lr 0.1", "train.py"), ("python3 -u -m pkg.main x", "pkg.main"),
    ("python3 -c 'print(1)'", "python3"), ("bash ./steps/run.sh", "run.sh"),
    ("exec sleep 60", "sleep"), ("OMP_NUM_THREADS=1 nice -n 5 ./solve in.dat", "solve"),
    ("$HOME/bin/tool", "tool"), ("'quoted'", "sh"), (["python3", "/work/fit.py"], "fit.py"),
    # (attack review: an option's value, a number that commands would read as an id)
    ("exec python3 -W ignore -X dev train.py", "train.py"), ("python3 2", "python3"),
    ("./7 now", "sh"), ("python3 ../steps/", "steps")])
def test_a_commands_default_name_is_the_program_or_script_it_runs(command, name):
    """Cold review: 'nproc; echo ok' was named 'nproc;', and every job of
    `corral submit -- python ...` was named python, so that `corral cancel
    python` found several. The key keeps the first word (see test_journal)."""
    assert Job(Shell(command)).name == name


@pytest.mark.parametrize("options, message", [
    ({"memroy": "4G"}, "unknown job option 'memroy'; did you mean 'memory'?"),
    ({"cores": 0}, r"cores=0 must be an int >= 1"),
    ({"cores": 1.5}, r"cores=1.5 must be an int >= 1"),
    ({"gpus": -1}, r"gpus=-1 must be an int >= 0"),
    ({"memory": "lots"}, r"memory='lots' is not a memory size; use an int of megabytes"),
    ({"walltime": "30"}, r"walltime='30' is ambiguous"),
    ({"timeout": "forever"}, r"timeout='forever' is not a duration"),
    ({"priority": "high"}, r"priority='high' must be an int"),
    ({"retries": -1}, r"retries=-1 must be an int from 0 to 1,000"),
    ({"retries": 1001}, r"retries=1001 is more than 1,000: a job that fails at once would be "
                        r"run again as many times; ask for at most 1,000"),
    ({"retries": 2**20000}, r"retries=<int of 20001 bits> is more than 1,000"),
    ({"name": ""}, r"name='' must be a non-empty string"),
    ({"after": [4.2]}, r"after: 4.2 is neither a Job nor a job's name or id"),
    ({"cwd": "/no/such/dir"}, r"cwd='/no/such/dir' is not an existing directory"),
    ({"env": {"A=B": "x"}}, r"env: 'A=B'='x' is not a valid environment variable"),
    ({"env": ["A"]}, r"env=\['A'\] must be a mapping"),
    # (review: 3,000 variables of 1 KB failed 'Argument list too long' when the job started)
    ({"env": {f"V{number}": "z" * 1000 for number in range(3000)}},
     r"env: the job's environment comes to [\d,]+ bytes with the one it is laid over, more "
     r"than the [\d,]+ a program can start with here \(ARG_MAX [\d,]+, less room for its "
     r"command\): it would fail 'Argument list too long'; pass large data in a file$"),
])
def test_bad_options_name_the_option_and_what_it_accepts(options, message):
    with pytest.raises(ValueError, match=message):
        Job(jobs.noop, **options)


def test_a_big_environment_that_a_program_can_still_start_with_is_taken(scheduler):
    """Half a megabyte of variables: counted against ARG_MAX, and well under it."""
    big = {f"V{number}": "z" * 1000 for number in range(500)}
    job = scheduler.shell("echo ${#V499}", env=big)
    job.result(timeout=60)
    assert job.stdout == "1000\n"


@pytest.mark.parametrize("task, message", [
    (42, r"task 42 is not runnable: give a callable, 'package.module:function', a .py script"),
    ("ls -l", r"task 'ls -l' is neither 'package.module:function' nor a path to a .py script; "
              r"for a shell command use corral.Shell"),
    # Another tool's way of naming a function (hypertunity's, a dotted path): what corral's is.
    ("objective.py::objective", r"task 'objective.py::objective' is neither 'package.module:"
                                r"function' nor a path to a .py script; did you mean "
                                r"'objective:objective'\?; for a shell command"),
    ("pkg/sub/mod.py::fit", r"did you mean 'pkg.sub.mod:fit'\?"),
    ("pkg.mod.fit", r"task 'pkg.mod.fit' is neither .*; did you mean 'pkg.mod:fit'\?"),
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


def test_a_shell_script_given_as_a_script_is_refused_with_the_command_that_runs_it(tmp_path):
    """Cold review (PLAMS's runscripts are shell scripts): it ran with Python
    and failed later with a SyntaxError."""
    script = tmp_path / "calc.sh"
    script.write_text("#!/usr/bin/env bash\necho calc $1\n")
    with pytest.raises(ValueError, match=re.escape(
            f"script '{script}' begins with #!/usr/bin/env bash, not Python, which a script job "
            f"runs with; run it as a command: corral.Shell(['/usr/bin/env', 'bash', '{script}', "
            f"'7']) or scheduler.shell(['/usr/bin/env', 'bash', '{script}', '7'])")):
        Job(str(script), ["7"])
    python = tmp_path / "calc.py"
    python.write_text("#!/usr/bin/env python3\nprint('calc')\n")
    assert Job(str(python)).spec.task.path == str(python)  # its own interpreter's line: taken


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
    with pytest.raises(ValueError, match=r"^job 'identity' cannot be sent to a worker: its "
                                         r"argument args\[0\] cannot be pickled \(TypeError: "
                                         r"cannot pickle '_thread.lock' object\); make what "
                                         r"cannot travel \(a lock, a connection, an open file\) "
                                         r"in the function, from what it is made of$"):
        scheduler.submit(jobs.identity, threading.Lock())
    assert scheduler.jobs() == []


_A_LOCK = threading.Lock()


def _reading_a_global_lock():
    """A function that travels by value (it is local) and reads a global lock."""
    def locked():
        with _A_LOCK:
            return 1
    return locked


@pytest.mark.parametrize(("submit", "part"), [
    (lambda scheduler, lock: scheduler.submit(jobs.add, 1, lock), r"its argument args\[1\]"),
    (lambda scheduler, lock: scheduler.submit(jobs.wait_for_file, "/x", value=[lock]),
     r"its keyword argument kwargs\['value'\]"),
    (lambda scheduler, lock: scheduler.submit(lambda: lock),
     r"its function <lambda>, through the variable 'lock' of its closure,"),
    (lambda scheduler, lock: scheduler.submit(_reading_a_global_lock()),
     r"its function locked, through the global '_A_LOCK' it reads,"),
])
def test_the_part_of_a_call_that_cannot_be_pickled_is_named(scheduler, submit, part):
    """Cold review: "its function or arguments cannot be pickled" left a call
    of twenty arguments to be searched by hand, and a script's function that
    uses a lock of the script's to be read for one."""
    with pytest.raises(corral.NotPicklable, match=rf"cannot be sent to a worker: {part} cannot "
                                                  r"be pickled \(TypeError: cannot pickle "
                                                  r"'_thread.lock' object\)"):
        submit(scheduler, threading.Lock())
    assert scheduler.jobs() == []


class _StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("its str fails too")


class _ReduceRaises:
    def __reduce__(self):
        raise _StrRaises()


def test_a_pickling_error_whose_text_cannot_be_made_is_still_said_as_not_picklable(scheduler):
    """Attack review: the RuntimeError of the exception's __str__ came out instead."""
    with pytest.raises(corral.NotPicklable, match=r"its argument args\[1\] cannot be pickled "
                                                  r"\(_StrRaises: <its str\(\) raised "
                                                  r"RuntimeError>\)"):
        scheduler.submit(jobs.add, 1, _ReduceRaises())


def test_an_unpicklable_call_is_caught_as_pickle_and_process_pools_raise_it(scheduler):
    """As a ValueError (every bad input here is one) and as the TypeError that
    pickle and ProcessPoolExecutor raise: code written for either catches it."""
    for caught in (TypeError, ValueError, corral.NotPicklable, corral.CorralError):
        with pytest.raises(caught, match=r"^job 'identity' cannot be sent to a worker"):
            scheduler.submit(jobs.identity, threading.Lock())
    with pytest.raises(TypeError, match=r"^map\(\), input item 1 \(counting from 0\): job "
                                        r"'identity' cannot be sent to a worker"):
        list(scheduler.map(jobs.identity, [1, threading.Lock()]))
    assert scheduler.jobs() == []


def test_an_open_file_is_refused_not_sent_as_a_copy_of_what_it_holds(scheduler, tmp_path):
    """Cold review: a file open for reading went to the worker as a StringIO of
    what was left in it (cloudpickle's way), silently: a 1 MB file passed to
    2,000 calls took 32 s and 1.9 GB. pickle and ProcessPoolExecutor refuse it."""
    (tmp_path / "data.txt").write_text("measurements\n")
    with open(tmp_path / "data.txt") as handle:
        for arguments in ((handle,), (lambda: handle.read(),)):
            with pytest.raises(ValueError, match=r"cannot be pickled \(TypeError: cannot pickle "
                                                 r"'TextIOWrapper' object: an open file \('.*"
                                                 r"data.txt'\) does not travel between "
                                                 r"processes; pass its path, and open it where "
                                                 r"it is read\)$"):
                scheduler.submit(jobs.identity, *arguments)
    assert scheduler.jobs() == []


def test_a_function_reference_is_checked_without_running_the_modules_code(tmp_path, monkeypatch):
    """Only what surely is not there is refused when the job is made: a name a
    module's __getattr__ or a property may give is left to the job, and the
    module's own code (a __getattr__, a property, a __dir__) does not run here."""
    (tmp_path / "lazy_names.py").write_text(
        "def __getattr__(name):\n    raise RuntimeError('ran in the driver')\n")
    (tmp_path / "odd_names.py").write_text(
        "def __dir__():\n    raise RuntimeError('ran in the driver')\n"
        "class K:\n    @property\n    def made(self):\n        raise RuntimeError('ran')\n"
        "    @staticmethod\n    def static(x):\n        return x\n"
        "instance = K()\n")
    for written in tmp_path.iterdir():  # as if written before this process started
        os.utime(written, (0, 0))
    monkeypatch.syspath_prepend(tmp_path)
    import lazy_names  # noqa: F401
    import odd_names  # noqa: F401

    Job("lazy_names:anything")  # its __getattr__ may make it: the job will tell
    Job("odd_names:instance.made")  # a property: not evaluated here
    Job("odd_names:K.static", args=(1,))
    with pytest.raises(TypeError, match=r"^K\.static\(\) cannot be called with these "
                                        r"arguments: missing a required argument: 'x'$"):
        Job("odd_names:K.static")  # read without calling anything, as a call's function is
    with pytest.raises(ValueError, match=r"^function reference 'odd_names:nothing': module "
                                         r"'odd_names' has no attribute 'nothing'$"):
        Job("odd_names:nothing")  # (its __dir__ raises: no hint, and no other error)


def test_a_module_changed_since_the_driver_started_is_not_checked(tmp_path, monkeypatch):
    """A long-lived driver (a notebook) imported the module before the function was
    added to its file; the workers import the file afresh, so the job can run."""
    module = tmp_path / "edited_later.py"
    module.write_text("def first():\n    return 1\n")
    os.utime(module, (0, 0))
    monkeypatch.syspath_prepend(tmp_path)
    import edited_later  # noqa: F401

    module.write_text("def first():\n    return 1\n\ndef second():\n    return 2\n")
    Job("edited_later:second")


@pytest.mark.parametrize("task", [corral.spec.Call(jobs.add, (0,), {"b": 1}),
                                  corral.spec.FunctionRef("jobs:add", (0,), {"b": 1})],
                         ids=["callable", "module:function"])
def test_each_call_of_a_map_has_the_maps_spec_with_its_own_arguments(task):
    template = corral.spec.make_spec(task, {"cores": 2, "name": "adder", "env": {"A": "1"},
                                            "priority": 3, "walltime": "1h"})
    made = corral.spec.spec_maker(template)((7,))
    assert made == dataclasses.replace(template, task=dataclasses.replace(task, args=(7,)))
    assert made.task.args == (7,) and made.task.kwargs == {"b": 1}


def test_spec_maker_refuses_a_command_spec():
    template = corral.spec.make_spec(corral.spec.make_task(Shell("true")), {})
    with pytest.raises(TypeError, match="spec_maker\\(\\) takes a call's spec, not Shell's"):
        corral.spec.spec_maker(template)


@pytest.mark.parametrize("task", [corral.spec.Call(jobs.add, (1, 2)), corral.spec.Shell("true"),
                                  corral.spec.FunctionRef("jobs:add", (1, 2)),
                                  corral.spec.Script("train.py", ("--fast",))],
                         ids=["callable", "shell", "module:function", "script"])
def test_a_job_without_options_has_every_options_default_and_its_tasks_name(task):
    plain = corral.spec.make_spec(task, {})
    assert plain == corral.spec._checked_spec(task, {})  # the shared fields are the defaults
    assert plain.task is task and plain.name == task.label
    named = corral.spec.make_spec(task, {"name": "other"})
    assert named.name == "other" and corral.spec.make_spec(task, {}).name == task.label


def test_the_job_docstring_names_every_job_option():
    """Cold review: it left out notify, notify_on and the cluster's options."""
    from corral.options import JOB_OPTIONS

    doc = " ".join(corral.Job.__doc__.split())
    assert [name for name in JOB_OPTIONS if not re.search(rf"\b{name}\b", doc)] == []
