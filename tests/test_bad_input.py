"""Every bad input gets a clear error when the job is made (issue 9, item 4).

Found by fuzzing every option: values that overflowed, that broke the error
message itself, or that were accepted and failed only when the job ran. Each
must now be a ValueError naming the option and the forms it accepts, raised by
``Job(...)``, ``submit``/``shell``/``script``/``call``, ``options(...)`` and
``corral submit`` alike; the hypothesis test at the end asserts exactly that for
arbitrary values of every option in the registry.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import os
import re
import subprocess
import sys
import threading
import types
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corral
from corral import call_fit
from corral import Job, Shell
from corral.config import Config
from corral.options import JOB_OPTIONS

import jobs
from support.cli import Corral, assert_one_line_error

TOO_LONG_CLOCK = "9" * 400 + ":00"


def nested_list(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


DEEP = nested_list(5000)
HUGE = 10**5000  # repr() of it raises ValueError: past CPython's 4,300-digit limit


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "show_argv.py"
    path.write_text("import sys\nprint(sys.argv[1:])\n")
    return path


# -- numbers too large to compute with ------------------------------------------------------


def test_a_clock_too_long_to_compute_is_refused_not_an_overflow():
    with pytest.raises(ValueError, match=r"^walltime='9{47}\.\.\.9{45}:00' must be a positive "
                       r"duration of at most 100 years; use a number of seconds or a string "
                       r"such as '90s', '30m', '2h', '1h30m', '1:30:00', '30:00', '2-00:00:00'$"):
        Job(jobs.noop, walltime=TOO_LONG_CLOCK)


@pytest.mark.parametrize("option", ["walltime", "timeout"])
@pytest.mark.parametrize("value", [TOO_LONG_CLOCK, "1:" + "9" * 400 + ":00", "9" * 5000 + ":00",
                                   "1-" + "9" * 200, "9" * 5000 + "s", "1-" + "9" * 5000 + ":00"])
def test_every_duration_too_long_to_compute_is_refused_naming_the_option(option, value):
    with pytest.raises(ValueError, match=rf"^{option}='.*' must be a positive duration of at "
                       "most 100 years"):
        Job(jobs.noop, **{option: value})


def test_huge_numbers_are_refused_with_a_readable_message():
    with pytest.raises(ValueError, match=r"^timeout=<int of 16610 bits> must be a positive "
                       r"duration of at most 100 years"):
        Job(jobs.noop, timeout=HUGE)
    with pytest.raises(ValueError, match=r"^cores=<int of 16610 bits> must be an int >= 1"):
        Job(jobs.noop, cores=HUGE)
    with pytest.raises(ValueError, match=r"^memory=<int of 16610 bits> must be a positive memory "
                       "size below 1 EB"):
        Job(jobs.noop, memory=HUGE)


@pytest.mark.parametrize(("memory", "shown", "number"), [
    ("4", "'4'", "4"), (" 16 ", "' 16 '", "16"), ("1.5", "'1.5'", "1.5"), (4, "4", "4"),
    (63, "63", "63"), (1.5, "1.5", "1.5")])
def test_a_memory_of_few_megabytes_without_a_unit_is_refused_as_gigabytes_meant(
        memory, shown, number):
    """Cold reviews: memory="4" ran as 4 MB (a cluster would kill the job), where
    --memory 4 and a config file's memory = 4 were refused; then memory=4, an int."""
    with pytest.raises(ValueError, match=rf"^memory={re.escape(shown)} has no unit, and "
                                         rf"{number} megabytes are so little that gigabytes "
                                         rf"are likely meant: write '{number}G' \(or "
                                         rf"'{number}M' if megabytes are meant\)$"):
        Job(jobs.noop, memory=memory)
    with pytest.raises(ValueError, match=rf"^memory={re.escape(shown)} has no unit"):
        corral.Scheduler(memory=memory)
    assert Job(jobs.noop, memory=64).spec.resources.memory_mb == 64
    assert Job(jobs.noop, memory="4M").spec.resources.memory_mb == 4
    assert Job(jobs.noop, memory="4000").spec.resources.memory_mb == 4000


@pytest.mark.parametrize("option, value, message", [
    ("priority", -2**63 - 1, r"^priority=-9223372036854775809 must be an int from -2\*\*63 to "
                             r"2\*\*63 - 1"),
    ("tokens", 2**70, r"^tokens=1180591620717411303424 must be an int >= 0 \(and below 2\*\*63\)"),
])
def test_int_options_stay_within_64_bits(option, value, message):
    with pytest.raises(ValueError, match=message):
        Job(jobs.noop, **{option: value})
    Job(jobs.noop, **{option: 2**63 - 1})


def test_the_same_overflow_is_refused_by_every_way_of_making_a_job(scheduler, script):
    too_long = {"walltime": TOO_LONG_CLOCK}
    for make in (lambda: Job(jobs.noop, **too_long),
                 lambda: scheduler.options(**too_long),
                 lambda: scheduler.shell("true", **too_long),
                 lambda: scheduler.script(script, **too_long),
                 lambda: scheduler.call("os:getcwd", **too_long),
                 lambda: scheduler.options(cores=1).shell("true", **too_long)):
        with pytest.raises(ValueError, match=r"^walltime='9*\.\.\.9*:00' must be a positive "
                           "duration"):
            make()
    assert scheduler.jobs() == []


# -- profile= ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, shown", [(None, "None"), (3, "3"), (["short"], r"\['short'\]"),
                                         ("", "''")])
def test_a_profile_that_is_not_a_name_is_refused_naming_profile(tmp_path, name, shown):
    config = Config(profiles={"short": {"cores": 1}})
    with pytest.raises(ValueError, match=rf"^profile={shown} must be the name of a "
                       r"\[profiles.NAME\] table of the config files \(known profiles: short\)"):
        config.profile(name)
    with corral.Scheduler(cores=1, workdir=tmp_path / "run", config=config) as scheduler:
        with pytest.raises(ValueError, match=rf"^profile={shown} must be the name"):
            scheduler.options(profile=name)
        with pytest.raises(ValueError, match=rf"^profile={shown} must be the name"):
            scheduler.shell("true", profile=name)


def test_a_profile_given_to_a_job_made_on_its_own_says_where_it_belongs():
    with pytest.raises(ValueError, match=r"^profile= names a set of options in the config files, "
                       r"which a Scheduler reads: give it to scheduler.options\(profile=...\)"):
        Job(jobs.noop, profile="short")


def test_an_id_given_as_a_job_option_says_where_it_belongs(tmp_path):
    """Cold review (a build engineer): shell(cmd, id=...) said only "unknown job
    option 'id'" and listed the options."""
    said = (r"^id= is given where a job is made on its own: corral.Job\(task, args, kwargs, "
            r"id=...\), then scheduler.dispatch\(\[...\]\)")
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        with pytest.raises(ValueError, match=said):
            scheduler.shell("true", id="compile")
        with pytest.raises(ValueError, match=said):
            scheduler.options(id="compile")


# -- text the operating system cannot take -----------------------------------------------------


@pytest.mark.parametrize("env, message", [
    ({"GREETING": "hello\0world"}, r"^env: 'GREETING'='hello\\x00world' is not a valid "
                                   r"environment variable: its value contains a NUL character"),
    ({"GREET\0ING": "hello"}, r"^env: 'GREET\\x00ING'='hello' is not a valid environment "
                              r"variable: its name contains a NUL character"),
    ({"A=B": "hello"}, r"^env: 'A=B'='hello' is not a valid environment variable: its name "
                       r"holds '='"),
    ({"": "x"}, r"^env: ''='x' is not a valid environment variable: its name is not a "
                r"non-empty string"),
    ({"A": 1}, r"^env: 'A'=1 is not a valid environment variable: its value is neither a "
               r"string nor None"),
    ({"A": "\udc80\ud800"}, r"^env: 'A'=.* its value holds characters that the file system "
                            r"encoding cannot write"),
])
def test_an_environment_the_os_would_refuse_is_refused_when_the_job_is_made(env, message):
    with pytest.raises(ValueError, match=message):
        Job(jobs.noop, env=env)


def test_a_directory_with_a_nul_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^cwd='/tmp\\x00/x' contains a NUL character .*; give "
                       r"a directory path"):
        Job(jobs.noop, cwd="/tmp\0/x")

    class BytesPath:
        def __fspath__(self):
            return b"/tmp"
    with pytest.raises(ValueError, match=r"^cwd=<.*BytesPath.*> must be a directory path"):
        Job(jobs.noop, cwd=BytesPath())


@pytest.mark.parametrize("option, value, message", [
    ("name", "a\0b", r"^name='a\\x00b' contains a NUL character"),
    ("queue", "io\0", r"^queue='io\\x00' contains a NUL character"),
    ("notify", "me\0@example.org", r"^notify: 'me\\x00@example.org' is not an e-mail address"),
    ("python", "python3\0", r"^python='python3\\x00' contains a NUL character"),
    ("partition", "short\0", r"^partition='short\\x00' must be a non-empty string on one line"),
    ("setup", ["module load\0 x"], r"^setup: 'module load\\x00 x' is not a line of shell code"),
])
def test_other_text_options_with_a_nul_are_refused(option, value, message):
    with pytest.raises(ValueError, match=message):
        Job(jobs.noop, **{option: value})


def test_command_words_with_a_nul_are_refused_when_the_job_is_made(scheduler, script):
    with pytest.raises(ValueError, match=r"^shell command 'echo a\\x00b' contains a NUL"):
        scheduler.shell("echo a\0b")
    with pytest.raises(ValueError, match=r"^shell command: word 1 \('a\\x00b'\) contains a NUL "
                       r"character .*; command words are strings, paths, numbers, or Jobs"):
        scheduler.shell(["echo", "a\0b"])
    with pytest.raises(ValueError, match=r"^script '.*show_argv.py': argument 0 \('a\\x00b'\) "
                       r"contains a NUL character"):
        scheduler.script(script, "a\0b")
    with pytest.raises(ValueError, match=r"^script '/no\\x00such.py' contains a NUL character"):
        Job(corral.Script("/no\0such.py"))
    assert scheduler.jobs() == []


@pytest.mark.parametrize("word, kind", [(None, "NoneType"), (b"bytes", "bytes"),
                                        ({"x": 1}, "dict"), (["a", "b"], "list")])
def test_a_command_word_that_is_not_one_word_is_refused(scheduler, script, word, kind):
    """str() of these would run something else than was meant: 'None',
    "b'bytes'", "{'x': 1}"."""
    with pytest.raises(ValueError, match=rf"^shell command: word 1 \(.*\) is a {kind}, not one "
                       "word"):
        scheduler.shell(["echo", word])
    with pytest.raises(ValueError, match=rf"^script .*: argument 0 \(.*\) is a {kind}, not one "
                       "word"):
        scheduler.script(script, word)


@pytest.mark.parametrize("word", [threading.Lock(), object()])
def test_a_command_word_whose_text_is_only_its_memory_address_is_refused(scheduler, script,
                                                                         word):
    """Cold review: a lock among the words ran as "<unlocked _thread.lock object at
    0x7fa0...>", a mistake, and a different command every run."""
    said = r"has no text of its own, only its type and memory address; command words are"
    with pytest.raises(ValueError, match=rf"^shell command: word 1 \(<.* at 0x[0-9a-f]+>\) "
                                         rf"{said}"):
        scheduler.shell(["echo", word])
    with pytest.raises(ValueError, match=rf"^script .*: argument 0 \(<.*>\) {said}"):
        scheduler.script(script, word)


# -- arguments --------------------------------------------------------------------------------


def test_a_dict_given_as_a_scripts_arguments_is_refused_not_turned_into_its_keys(script, scheduler):
    with pytest.raises(ValueError, match=r"^args=\{'x': 1\} must be a list or tuple of "
                       r"positional arguments \(for a script: its command-line words, "
                       r"e.g. \['--x', '1'\]\)"):
        Job(script, {"x": 1})
    with pytest.raises(ValueError, match=r"^args='abc' must be a list or tuple"):
        Job(jobs.square, "abc")
    with pytest.raises(ValueError, match=r"^args=\{'x': 1\} must be a list or tuple"):
        Job(Shell("echo"), {"x": 1})
    # The list of words the message asks for works:
    job = scheduler.dispatch([Job(script, ["--x", "1"])])[0]
    job.result(timeout=60)
    assert job.stdout == "['--x', '1']\n"


def test_keyword_arguments_must_have_string_keys():
    with pytest.raises(ValueError, match=r"^kwargs=\{1: 2\} must be a dict of keyword arguments "
                       "with string keys"):
        Job(jobs.square, (), {1: 2})
    with pytest.raises(ValueError, match=r"^kwargs=\['x'\] must be a dict"):
        Job(jobs.square, (), ["x"])


@pytest.mark.parametrize(("given", "shown"), [((5,), "5"), ((5, {"lr": 0.1}), "5, {'lr': 0.1}"),
                                              (("trial-3",), "'trial-3'")])
def test_an_id_given_by_position_as_hypertunity_did_says_to_give_it_by_name(given, shown):
    """Cold review (a hypertunity user): Job(task, args, 5) said "kwargs=5 must be a
    dict", and Job(task, args, 5, meta) "takes from 2 to 4 positional arguments"."""
    with pytest.raises(TypeError) as raised:
        Job(jobs.square, (3,), *given)
    assert str(raised.value) == (
        "Job() takes task, args and kwargs by position, and id= and meta= by name: "
        f"Job(task, args, id=..., meta=...), not Job(task, args, {shown})")


# -- calls their function cannot take, refused when the job is made ---------------------------


class Counter:
    def __init__(self, start: int) -> None:
        self.start = start

    def add(self, step: int) -> int:
        return self.start + step


def _keyword_only(x: int, *, scale: int) -> int:
    return x * scale


def _with_timeout(fn):
    """A decorator whose wrapper takes more than what it wraps."""
    @functools.wraps(fn)
    def wrapper(*args, timeout=None, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


square_with_timeout = _with_timeout(jobs.square)


@pytest.mark.parametrize(("make", "message"), [
    (lambda s: s.submit(jobs.square, 3, corse=2),
     "square() takes no argument 'corse' (did you mean the job option 'cores'?): keyword "
     "arguments go to the function, as with Executor.submit; job options go in "
     "scheduler.options(cores=...).submit(square, ...), or Job(square, ..., cores=...)"),
    (lambda s: s.submit(jobs.wait_for_file, "f", limt=3),
     "wait_for_file() takes no argument 'limt'; did you mean 'limit'?"),
    # A Job's id and meta are given where it is made (cold review, a hypertunity port).
    (lambda s: s.submit(jobs.square, 3, id=7),
     "square() takes no argument 'id': keyword arguments go to the function, as with "
     "Executor.submit; a job's own id is given where it is made: "
     "scheduler.dispatch(corral.Job(square, (...), id=...))"),
    (lambda s: s.submit(jobs.square),
     "square() cannot be called with these arguments: missing a required argument: 'x'"),
    (lambda s: s.submit(jobs.square, 1, 2), "square() cannot be called with these arguments: "
     "too many positional arguments: it takes 1, given 2"),
    (lambda s: s.submit(jobs.square, 1, x=2), "square() cannot be called with these arguments: "
     "multiple values for argument 'x'"),
    (lambda s: s.submit(_keyword_only, 2), "_keyword_only() cannot be called with these "
     "arguments: missing a required argument: 'scale'"),
    (lambda s: s.submit(Counter(1).add, 1, 2), "Counter.add() cannot be called with these "
     "arguments: too many positional arguments: it takes 1, given 2"),
    (lambda s: s.submit(Counter), "Counter() cannot be called with these arguments: missing a "
     "required argument: 'start'"),
    (lambda s: s.submit(Job(jobs.square, (1, 2))), "square() cannot be called with these "
     "arguments: too many positional arguments: it takes 1, given 2"),
    (lambda s: s.submit(Job(corral.Call(jobs.square, (), {"z": 1}))),
     "square() cannot be called with these arguments: got an unexpected keyword argument 'z'"),
    (lambda s: list(s.map(jobs.square, [1], [2])), "map() calls with 2 arguments, one from each "
     "iterable: square() cannot be called with these arguments: too many positional arguments: "
     "it takes 1, given 2"),
    (lambda s: list(s.map(jobs.square, [1], [2], chunksize="auto")), "map() calls with 2 "
     "arguments, one from each iterable: square() cannot be called"),
    (lambda s: s.job(jobs.square)(1, 2), "square() cannot be called with these arguments: too "
     "many positional arguments"),
    (lambda s: s.call("jobs:square", 1, 2), "square() cannot be called with these arguments: "
     "too many positional arguments"),
    (lambda s: s.map("jobs:square", [1], [2]), "map() calls with 2 arguments, one from each "
     "iterable: square() cannot be called with these arguments: too many positional arguments"),
    (lambda s: s.submit(functools.partial(jobs.square, 1), 2), "square() cannot be called with "
     "these arguments: too many positional arguments: it takes 0, given 1 (after the 1 "
     "positional and 0 keyword arguments of its functools.partial)"),
], ids=["a job option misspelt", "its own argument misspelt", "a Job's id",
        "an argument missing", "an argument too many", "an argument twice",
        "a keyword-only argument missing",
        "a method's argument too many", "a class's argument missing", "Job(...)",
        "Call(...)", "map() of two iterables", "map(chunksize='auto')", "a decorated function",
        "a function by name, its module imported here", "map() of a function by name",
        "a partial, named by its function"])
def test_a_call_its_function_cannot_take_is_refused_when_the_job_is_made(scheduler, make,
                                                                         message):
    """Cold review: ``submit(f, 3, corse=2)`` was accepted, and the job failed
    when a worker ran it (on a cluster: after its wait in the queue), where
    the call could be checked against the function's signature at once."""
    with pytest.raises(TypeError, match="^" + re.escape(message)):
        make(scheduler)
    assert scheduler.jobs() == []


class StaticCall:
    """Its ``__call__`` a staticmethod: Python 3.11's inspect drops its first parameter."""

    __call__ = staticmethod(jobs.square)


class LyingSignature:
    @property
    def __signature__(self):
        raise RuntimeError("its own code, reading its signature")

    def __call__(self, x):
        return -x


service = Counter(1)  # for a reference through an instance: its method comes bound


def test_calls_whose_function_has_no_signature_or_takes_more_than_it_says_run(scheduler):
    """No false refusal (attack review of the check): a builtin without a
    signature, a decorator whose wrapper takes more than what it wraps, a
    partial, ``*args`` and ``**kwargs``, a callable object inspect misreads or
    whose signature raises, a method named through an instance, a map of no
    iterable."""
    handles = [scheduler.submit(max, 3, 5), scheduler.submit(square_with_timeout, 4, timeout=9),
               scheduler.submit(functools.partial(jobs.add, 1), 2, 3),
               scheduler.submit(functools.partial(Counter(10).add), 5),
               scheduler.submit(Counter(10).add, step=5), scheduler.submit(StaticCall(), 3),
               scheduler.submit(LyingSignature(), 2),
               scheduler.call("test_bad_input:service.add", 2),
               scheduler.submit(jobs.report_environment, "HOME")]
    assert [handle.result(timeout=60) for handle in handles[:-1]] == [5, 16, 6, 15, 15, 9, -2,
                                                                     3]
    assert list(scheduler.map(pow)) == []


def test_a_function_patched_in_place_is_checked_as_it_is_now(scheduler):
    """A notebook's autoreload replaces a function's code and defaults in place:
    the signature read before must not refuse the calls it takes now."""
    def later(x, y=10):
        return x + y

    def patched(x):
        return x

    scheduler.submit(patched, 1).result(timeout=60)
    patched.__code__, patched.__defaults__ = later.__code__, later.__defaults__
    assert scheduler.submit(patched, 1, 2).result(timeout=60) == 3
    with pytest.raises(TypeError, match=r"^test_a_function_patched_in_place_is_checked_as_it_is_"
                                        r"now.<locals>.patched\(\) cannot be called with these "
                                        r"arguments: too many positional arguments"):
        scheduler.submit(patched, 1, 2, 3)
    # A partial's call too: its function's shape is the one read again.
    assert scheduler.submit(functools.partial(patched, 1), 2).result(timeout=60) == 3
    with pytest.raises(TypeError, match=r"patched\(\) cannot be called with these arguments: too "
                                        r"many positional arguments: it takes 1, given 2 \(after "
                                        r"the 1 positional and 0 keyword arguments of its "
                                        r"functools.partial\)"):
        scheduler.submit(functools.partial(patched, 1), 2, 3)


def _shows_what_it_wraps(fn):
    """A wrapper that takes more than what it wraps, yet shows its signature
    (for help() and editors), as some decorators do."""
    @functools.wraps(fn)
    def wrapper(*args, verbose=False, **kwargs):
        return fn(*args, **kwargs)

    wrapper.__signature__ = inspect.signature(fn)
    return wrapper


class _Proxy:
    """Passes for the function it wraps, as wrapt's proxies do (isinstance
    sees a function), and takes a keyword of its own."""

    def __init__(self, wrapped):
        self._wrapped = wrapped

    @property
    def __class__(self):
        return type(self._wrapped)

    def __call__(self, *args, verbose=False, **kwargs):
        return self._wrapped(*args, **kwargs)


def test_calls_a_wrapper_takes_though_its_signature_says_otherwise_run(scheduler):
    """No false refusal (attack review, round 2): Python's call ignores
    ``__signature__``, and a proxy's isinstance answers for what it wraps; a
    keyword default changed in place (its dict) is seen."""
    assert scheduler.submit(_shows_what_it_wraps(jobs.square), 3, verbose=True
                            ).result(timeout=60) == 9
    call_fit.check_call_fits(_Proxy(jobs.square), (3,), {"verbose": True})  # (not picklable)

    def scaled(x, *, factor):
        return x * factor

    scaled.__kwdefaults__ = {"factor": 2}
    scheduler.submit(scaled, 1).result(timeout=60)
    scaled.__kwdefaults__.clear()  # factor is required now
    with pytest.raises(TypeError, match=r"missing a required argument: 'factor'"):
        scheduler.submit(scaled, 1)


def test_a_hint_names_only_what_a_keyword_can_pass_and_many_unknown_keywords_are_refused():
    """Attack review, round 2: ``def star(*items)`` called with ``item=1`` was
    told "did you mean 'items'?", which no keyword can pass; and a hundred
    thousand unknown keywords were compared each with every name."""
    def star(*items):
        return items

    with pytest.raises(TypeError, match=r"<locals>.star\(\) cannot be called with these "
                                        r"arguments: got an unexpected keyword argument 'item'$"):
        call_fit.check_call_fits(star, (), {"item": 1})
    with pytest.raises(TypeError, match=r"^square\(\) cannot be called with these arguments: "
                                        r"got an unexpected keyword argument 'k0'$"):
        call_fit.check_call_fits(jobs.square, (1,), {f"k{n}": n for n in range(100_000)})


def test_a_function_by_name_patched_here_or_re_exported_from_an_edited_file_is_not_checked(
        scheduler, monkeypatch):
    """Attack review, round 2: the worker imports the module afresh, so a
    function patched into it here (or one its package takes in from a file
    edited since) is not what it runs: such a call is not refused for it."""
    monkeypatch.setattr(jobs, "square", lambda: None)  # (takes nothing, here only)
    assert scheduler.call("jobs:square", 4).result(timeout=60) == 16


def test_a_module_edited_before_corral_was_imported_is_not_checked(tmp_path):
    """The module this process imported may differ from its file, edited since
    the process started (even before corral was imported): the worker imports
    the file, so what it has decides, not the signature read here."""
    module = tmp_path / "edited_first.py"
    module.write_text("def fn(x):\n    return x\n")
    os.utime(module, (0, 0))
    program = ("import sys, pathlib, edited_first\n"
               "pathlib.Path(sys.argv[1]).write_text('def fn(x, y):\\n    return x + y\\n')\n"
               "import corral\n"
               "with corral.Scheduler(cores=1) as scheduler:\n"
               "    print(scheduler.call('edited_first:fn', 1, 2).result(timeout=60))\n")
    done = subprocess.run([sys.executable, "-c", program, str(module)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.stdout == "3\n", done.stderr


def test_a_job_option_given_to_submit_for_a_function_that_cannot_take_it_is_refused(scheduler):
    """Cold review: ``submit(slow, 1, tokens=2)`` went to the function, as
    Executor.submit does, and the job failed only once it ran: "slow() got an
    unexpected keyword argument 'tokens'"."""
    with pytest.raises(TypeError, match=re.escape(
            "square() takes no argument 'tokens', 'cores': keyword arguments go to the "
            "function, as with Executor.submit; job options go in "
            "scheduler.options(tokens=...).submit(square, ...), or Job(square, ..., tokens=...)")):
        scheduler.submit(jobs.square, 3, tokens=2, cores=1)
    assert scheduler.jobs() == []
    # A function that takes an argument of that name, or any keyword, gets it:
    assert scheduler.submit(jobs.report_environment, "HOME").result(timeout=60) is not None
    assert scheduler.submit(_takes_a_priority, priority=3).result(timeout=60) == 3
    assert scheduler.submit(dict, cores=4).result(timeout=60) == {"cores": 4}


def test_a_function_keyword_given_to_call_is_told_to_go_in_kwargs(scheduler):
    """New-user review: ``call("json:dumps", [1], indent=2)`` said "unknown job
    option 'indent'; known options: ...", where call() takes the function's
    keywords in kwargs={...} (the reverse of submit())."""
    with pytest.raises(ValueError, match=re.escape(
            "call() takes job options as keywords, and 'indent' is none; keyword arguments of "
            "the function go in kwargs={...}: call('json:dumps', ..., kwargs={'indent': ...})")):
        scheduler.call("json:dumps", [1], indent=2)
    with pytest.raises(ValueError, match=r"unknown job option 'corse'; did you mean 'cores'"):
        scheduler.call("json:dumps", [1], corse=2)
    with pytest.raises(ValueError, match=r"'kwarg' is none; did you mean kwargs=\?$"):
        scheduler.call("json:dumps", [1], kwarg={"indent": 2})
    with pytest.raises(ValueError, match=r"'args' is none; the function's positional arguments "
                                         r"follow its name: call\('json:dumps', 1, 2\)$"):
        scheduler.call("json:dumps", args=[1])
    assert scheduler.call("json:dumps", [1], kwargs={"indent": 2}).result(timeout=60) == \
        "[\n  1\n]"


def _takes_a_priority(priority: int) -> int:
    return priority


def test_an_endless_iterator_is_refused_instead_of_filling_memory():
    with pytest.raises(ValueError, match=r"^after=count\(\d+\) holds more than 1,000,000 items"):
        Job(jobs.noop, after=itertools.count())
    with pytest.raises(ValueError, match=r"^args=range\(0, 1000000000000000000\) holds more than "
                       "1,000,000 items"):
        Job(jobs.add, range(10**18))


# -- ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["two\nlines", "x\x1b[31mred", "a\tb", "bell\x07",
                                    "x\u2028y", "zero\u200bwidth"])
def test_an_id_with_a_control_character_is_refused(job_id):
    """A newline split the id's row of `corral status`, an escape went raw to
    the terminal (attack review); U+2028 showed as a space (attack review 2)."""
    with pytest.raises(ValueError, match=rf"^id={re.escape(repr(job_id))} cannot be shown or "
                       r"typed as it is \(it holds a control character or an invisible one: a "
                       r"newline, a tab, a line separator…\): a string id is a non-empty name "
                       r".* without '/', NUL or characters that do not print"):
        Job(jobs.noop, id=job_id)
    assert Job(jobs.noop, id="a name with spaces, é and ✓").id == "a name with spaces, é and ✓"


def test_an_id_too_long_for_a_directory_name_is_refused_before_the_job_runs(scheduler):
    with pytest.raises(ValueError, match=r"^id='xxxx*\.\.\.x*' cannot name a directory \(it is "
                       r"too long \(300 bytes\)\): a string id is a non-empty name of at most 200 "
                       r"bytes of UTF-8"):
        Job(jobs.noop, id="x" * 300)
    with pytest.raises(ValueError, match=r"it is too long \(201 bytes\)"):
        Job(jobs.noop, id="é" * 100 + "x")  # 101 characters, 201 bytes
    longest = scheduler.dispatch([Job(jobs.square, (3,), id="x" * 200)])[0]
    assert longest.result(timeout=60) == 9


def test_an_id_that_is_a_backends_name_is_refused_before_the_job_runs(tmp_path):
    """Attack review: a job with the id of the cluster backend it ran on had
    the run's folder of batch submissions for its directory, and clean of it
    deleted every submission, a queued job's too."""
    refused = (r"^job id 'slurm' is a backend's name, which a cluster backend gives the folder "
               r"of a run's batch submissions, where the job's files would go: choose another$")
    with (corral.Scheduler(cores=1, journal=tmp_path / "run") as scheduler,
          pytest.raises(ValueError, match=refused)):
        scheduler.dispatch([Job(corral.Shell("true"), id="slurm")])


@pytest.mark.parametrize("job_id", ["outcomes", "corral.log", "journal.db", "control.sock",
                                    "cleaned.json"])
def test_an_id_naming_a_file_of_the_run_directory_is_refused_before_the_job_runs(tmp_path,
                                                                                  job_id):
    """Attack review: a job with id "outcomes" lost its output (the run's
    outcome logs are removed at its end, its directory with them); one with id
    "corral.log" ran, then failed to save its output, and ran again at every rerun."""
    ran = tmp_path / "ran"
    with corral.Scheduler(cores=1, journal=tmp_path / "run") as scheduler:
        with pytest.raises(ValueError, match=(
                rf"^job id '{re.escape(job_id)}' names a file corral keeps in a run directory, "
                r"where the job's files would go: choose another \(these are taken: "
                r"cleaned.json, control.sock, corral.log, .*outcomes, owner.lock, stop-asked, "
                r"writer.lock\)$")):
            scheduler.dispatch([Job(corral.Shell(f"touch {ran}"), id=job_id)])
        kept = scheduler.dispatch([Job(corral.Shell("echo kept"), id="outcome")])[0]
        kept.result(timeout=60)
    assert not ran.exists()
    assert (tmp_path / "run" / "outcome" / "stdout").read_text() == "kept\n"


@pytest.mark.parametrize("job_id", [2**63, -2**63 - 1, 10**30])
def test_an_int_id_sqlite_cannot_store_is_refused(job_id):
    with pytest.raises(ValueError, match=rf"^id={job_id} must be an int from -2\*\*63 to "
                       r"2\*\*63 - 1 \(the journal stores 64-bit ints\); use a string for a larger "
                       "id"):
        Job(jobs.noop, id=job_id)
    Job(jobs.noop, id=2**63 - 1)
    Job(jobs.noop, id=-2**63)


def test_an_id_that_is_neither_int_nor_string_is_refused():
    with pytest.raises(ValueError, match=r"^id=\[\[\[\[\.\.\.\]\]\]\] must be an int or a string"):
        Job(jobs.noop, id=DEEP)
    with pytest.raises(ValueError, match=r"^id=True must be an int or a string"):
        Job(jobs.noop, id=True)


# -- messages about hostile values ------------------------------------------------------------


@pytest.mark.parametrize("option, message", [
    ("after", r"^after: \[\[\[\[\.\.\.\]\]\]\] is neither a Job nor a job's name or id$"),
    ("env", r"^env=\[\[\[\[\.\.\.\]\]\]\] must be a mapping of variable names to strings$"),
    ("cores", r"^cores=\[\[\[\[\.\.\.\]\]\]\] must be an int >= 1"),
    ("walltime", r"^walltime=\[\[\[\[\.\.\.\]\]\]\] is not a duration"),
    ("notify", r"^notify: \[\[\[\[\.\.\.\]\]\]\] is not an e-mail address"),
])
def test_a_value_nested_5000_deep_gets_a_short_message_not_a_recursion_error(option, message):
    with pytest.raises(ValueError, match=message) as caught:
        Job(jobs.noop, **{option: DEEP})
    assert len(str(caught.value)) < 400


def test_a_value_whose_repr_fails_still_gets_the_message():
    class Hostile:
        def __repr__(self):
            raise RuntimeError("no repr for you")

    with pytest.raises(ValueError, match=r"^cores=<Hostile object> must be an int >= 1"):
        Job(jobs.noop, cores=Hostile())


def test_a_long_value_is_shortened_in_the_message():
    with pytest.raises(ValueError) as caught:
        Job(jobs.noop, queue=["q" * 100_000])
    assert caught.value.args[0].startswith("queue=['qqq")
    assert "..." in str(caught.value) and len(str(caught.value)) < 300


# -- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize("flags, message", [
    (("--walltime", TOO_LONG_CLOCK), r"--walltime '9*\.\.\.9*:00' must be a positive duration of "
                                     r"at most 100 years"),
    (("--timeout", "9" * 5000 + ":00"), r"--timeout '9*\.\.\.9*:00' must be a positive duration"),
    (("--priority", str(2**63)), r"--priority 9223372036854775808 must be an int from -2\*\*63"),
])
def test_corral_submit_prints_one_line_for_an_overflowing_value(tmp_path, flags, message):
    corral_command = Corral(tmp_path / "home", tmp_path / "run", cwd=tmp_path)
    outcome = corral_command("submit", *flags, "--", "true")
    assert_one_line_error(outcome, 2, message)
    assert not (tmp_path / "run").exists(), "no daemon is started for a refused job"


# -- output -----------------------------------------------------------------------------------


def test_stdout_keeps_carriage_returns_as_the_job_wrote_them(scheduler):
    progress = scheduler.shell(r"printf 'step 1\rstep 2\r\nend\r\n'; printf 'oops\r' >&2")
    progress.result(timeout=60)
    assert progress.stdout == "step 1\rstep 2\r\nend\r\n"
    assert progress.stderr == "oops\r"
    call = scheduler.submit(jobs.talk, "a\rb")
    call.result(timeout=60)
    assert "a\rb" in call.stdout


def test_kept_output_keeps_carriage_returns_after_the_files_are_gone(tmp_path):
    with corral.Scheduler(cores=1) as scheduler:  # a temporary workdir, removed at shutdown
        job = scheduler.shell(r"printf '50%%\r100%%\r\n'")
    assert job.stdout == "50%\r100%\r\n"


# -- any value of any option ------------------------------------------------------------------


class _Weird:
    """An object that is none of what any option accepts."""

    def __str__(self) -> str:
        return "weird"


ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.integers(min_value=2**62, max_value=2**70), st.integers(min_value=-2**70, max_value=-2**62),
    st.just(HUGE), st.just(-HUGE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(), st.text(max_size=8).map(lambda text: text + "\0"), st.binary(),
    st.sampled_from([TOO_LONG_CLOCK, "9" * 5000, "9" * 5000 + "s", "1:" + "9" * 400 + ":00",
                     "4G", "1.5GB", "90s", "1:30:00", "2-00:00:00", "failure", "end",
                     "a@b.org", "--exclusive", sys.executable, os.getcwd(), "/", "\udc80"]),
    st.lists(st.text(max_size=5) | st.integers(), max_size=4),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.none() | st.integers(),
                    max_size=3),
    st.just(DEEP), st.builds(itertools.count),
    st.timedeltas(), st.from_type(complex), st.from_type(Decimal), st.from_type(Fraction),
    st.from_type(bytearray), st.frozensets(st.integers(), max_size=3),
    st.tuples(st.text(max_size=3), st.integers()), st.builds(_Weird), st.just(math.inf),
    st.just(Path("/")), st.just(range(10)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          database=None)
@given(option=st.sampled_from([*sorted(JOB_OPTIONS), "id"]), value=ANY_VALUE)
def test_any_value_of_any_option_is_accepted_or_refused_naming_the_option(option, value):
    """Making a Job either succeeds or raises ValueError/TypeError whose short
    message names the option: never OverflowError, RecursionError or a message
    that does not say what was wrong."""
    try:
        Job(jobs.noop, **{option: value})
    except (ValueError, TypeError) as error:
        message = str(error)
        assert re.search(rf"\b{option}\b", message), message
        assert len(message) < 1000, message


@settings(max_examples=100, deadline=None, database=None)
@given(value=ANY_VALUE)
def test_any_value_of_a_profile_is_accepted_or_refused_naming_profile(value):
    config = Config(profiles={"short": {"cores": 1}})
    try:
        config.profile(value)
    except ValueError as error:
        assert "profile" in str(error)


def test_arguments_nested_thousands_deep_are_refused_when_the_job_is_made(
        scheduler: corral.Scheduler) -> None:
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(ValueError, match="job 'len': its arguments are nested too deeply"):
        scheduler.submit(len, nested)
    assert scheduler.jobs() == []


def test_a_hostile_command_or_target_is_refused_with_a_short_message(
        scheduler: corral.Scheduler) -> None:
    import itertools

    with pytest.raises(ValueError, match=r"^shell\(\) takes a command string or a list of "
                                         r"arguments, not <int of 16610 bits>$"):
        scheduler.shell(10**5000)
    with pytest.raises(ValueError, match=r"^call\(\) takes 'package.module:function', not "
                                         r"<int of 16610 bits>"):
        scheduler.call(10**5000)
    with pytest.raises(ValueError, match=r"command=count\(.*\) holds more than 1,000,000 items"):
        scheduler.shell(itertools.count())


def test_a_job_formatted_into_a_command_is_refused_and_its_argument_form_shown(
        scheduler: corral.Scheduler) -> None:
    value = scheduler.submit(len, "abc")
    with pytest.raises(ValueError, match=r"^the command holds <Job 1 'len' \w+>, a Job formatted "
                                         r"into a string: that is its repr, not its result\. "
                                         r"Pass the Job itself as an argument"):
        scheduler.shell(f"echo got {value}")
    with pytest.raises(ValueError, match=r"^the script's arguments hold <Job 1 'len' \w+>"):
        scheduler.script("count.py", f"--n={value}")
    shown = scheduler.shell(["sh", "-c", "echo got $0", value])
    assert shown.result(timeout=30) is None and shown.stdout == "got 3\n"
    named = corral.Job(print, id="prep")  # (review: ids of words, names with quotes passed)
    quoted = scheduler.options(name="it's").submit(len, "x")
    for job in (named, quoted):
        with pytest.raises(ValueError, match=r"^the command holds <Job .*, a Job formatted"):
            scheduler.shell(f"echo {job}")
    # A command that merely looks alike is run as written.
    assert scheduler.shell("echo '<Job 1>'").result(timeout=30) is None


def test_an_environment_value_linux_cannot_pass_is_refused_when_the_job_is_made(
        scheduler: corral.Scheduler) -> None:
    with pytest.raises(ValueError, match=r"env: 'BIG'=.* is not a valid environment variable: "
                                         r"NAME=value is longer than the 128 KiB Linux allows"):
        scheduler.shell("true", env={"BIG": "x" * 3_000_000})
    assert scheduler.shell("true", env={"FINE": "x" * 100_000}).result(timeout=30) is None


def test_a_command_linux_cannot_start_is_refused_when_the_job_is_made(
        scheduler: corral.Scheduler, tmp_path) -> None:
    """The OS refuses an argument of 128 KiB or more, and a command line over
    ARG_MAX, only when the job starts ("Argument list too long"), long after
    the line that made it."""
    with pytest.raises(ValueError, match=r"^shell command 'echo xx.*' is 200,005 bytes long, and "
                                         r"Linux refuses any one argument of 128 KiB or more "
                                         r"\('Argument list too long'\); put a long script in a "
                                         r"file and run the file"):
        scheduler.shell("echo " + "x" * 200_000)
    with pytest.raises(ValueError, match=r"^shell command: word 1 \('éé.*'\) is 140,000 bytes "
                                         r"long, and Linux refuses any one argument of 128 KiB"):
        scheduler.shell(["echo", "é" * 70_000])  # (bytes counted, not characters)
    with pytest.raises(ValueError, match=r"^shell command: its words come to 3,000,283 bytes, "
                                         r"more than the [\d,]+ KiB this system lets a command "
                                         r"line hold"):
        scheduler.shell(["echo"] + ["x" * 100_000] * 30)
    script = tmp_path / "show.py"
    script.write_text("import sys; print(len(sys.argv[1]))\n")
    with pytest.raises(ValueError, match=r"^script '.*show.py': argument 0 \('xx.*'\) is 131,072 "
                                         r"bytes long"):
        scheduler.script(script, "x" * 131_072)
    # Each word costs the OS a pointer too: 300,000 one-letter words do not fit.
    with pytest.raises(ValueError, match=r"^shell command: its words come to 3,000,013 bytes"):
        scheduler.shell(["true"] + ["a"] * 300_000)
    # A script whose path holds a colon is named whole (the attack review's a:b.py).
    colon = tmp_path / "a:b.py"
    colon.write_text("pass\n")
    with pytest.raises(ValueError, match=r"^script '.*/a:b\.py': its words come to"):
        scheduler.script(colon, *["x" * 120_000] * 18)
    # A str subclass is measured as it is sent: an enum's value, not its str().
    import enum

    class Big(str, enum.Enum):  # noqa: UP042 (its str() is "Big.WORD", not its value)
        WORD = "y" * 200_000

    with pytest.raises(ValueError, match=r"^shell command: word 1 \(.*\) is 200,000 bytes long"):
        scheduler.shell(["echo", Big.WORD])
    # A NUL is not told to go in a file.
    with pytest.raises(ValueError, match=r"contains a NUL character \('\\0'\), which no "
                                         r"argument, path or variable can hold$"):
        scheduler.shell("echo \0 hi")
    # Just under the limit still runs.
    assert scheduler.shell(["echo", "x" * 131_000]).result(timeout=30) is None
    assert scheduler.script(script, "x" * 131_071).result(timeout=30) is None


class _RaisingIterable:
    def __iter__(self):
        raise RuntimeError("boom")


class _RaisingPath:
    def __fspath__(self):
        raise RuntimeError("boom")


class _RaisingMapping(dict):
    def items(self):
        raise RuntimeError("boom")


class _RaisingText(str):
    def __eq__(self, other):
        raise RuntimeError("boom")

    __hash__ = str.__hash__


@pytest.mark.parametrize("name, value", [
    ("after", _RaisingIterable()), ("notify", _RaisingIterable()), ("setup", _RaisingIterable()),
    ("extra_flags", _RaisingIterable()), ("cwd", _RaisingPath()), ("python", _RaisingPath()),
    ("env", _RaisingMapping(a="1")), ("notify_on", _RaisingText("end")),
])
def test_a_value_whose_own_methods_raise_is_refused_naming_the_option(name, value):
    """Found by the attack review: these let a RuntimeError out of Job()."""
    with pytest.raises(ValueError,
                       match=rf"^{name}=.* cannot be read as .*\(RuntimeError: boom\)$"):
        Job("platform:node", **{name: value})


def test_a_task_whose_fspath_raises_is_refused():
    with pytest.raises(ValueError, match=r"is a path that cannot be read as text; give a str path"):
        Job(_RaisingPath())


@pytest.mark.parametrize("given, message", [
    ({"corse": 2}, r"^Scheduler\(\) takes no argument 'corse'; did you mean 'cores'\?$"),
    ({"journl": "run"}, r"^Scheduler\(\) takes no argument 'journl'; did you mean 'journal'\?$"),
    ({"walltime": "1h"}, r"^Scheduler\(\) takes no argument 'walltime': it is a job option, "
                         r"which goes in scheduler\.options\(walltime=\.\.\.\)\.submit\(\.\.\.\)$"),
    ({"xyzzy": 1}, r"^Scheduler\(\) takes no argument 'xyzzy'; its arguments are backend, cores, "),
    ({"n_workers": 2}, r"^Scheduler\(\) takes no argument 'n_workers'; did you mean 'cores'\?$"),
    ({"n_jobs": 2}, r"^Scheduler\(\) takes no argument 'n_jobs'; did you mean 'cores'\?$"),
    ({"n_parallel": 2}, r"^Scheduler\(\) takes no argument 'n_parallel'; did you mean 'cores'\?$"),
    ({"cpus": 2}, r"^Scheduler\(\) takes no argument 'cpus'; did you mean 'cores'\?$"),
    ({"job_timeout": 10}, r"^Scheduler\(\) takes no argument 'job_timeout': that is the job "
                          r"option 'timeout' here, which goes in scheduler\.options\(timeout="
                          r"\.\.\.\)\.submit\(\.\.\.\) \(for every job of that Submitter"),
])
def test_a_misspelt_or_misplaced_scheduler_argument_names_what_was_meant(given, message):
    with pytest.raises(TypeError, match=message):
        corral.Scheduler(**given)


def test_jobs_given_to_scheduler_wait_are_pointed_to_corral_wait(scheduler):
    """Found by hand: ``scheduler.wait(jobs)`` raised "unsupported operand
    type(s) for +: 'float' and 'list'" from inside corral."""
    job = scheduler.submit(jobs.noop)
    for passed in ([job], job, (job,)):
        with pytest.raises(TypeError, match=r"^Scheduler\.wait\(\) waits for every job of the "
                                            r"scheduler and takes only a timeout; to wait for "
                                            r"some jobs: corral\.wait\(jobs\)"):
            scheduler.wait(passed)
    assert scheduler.wait(60) is True


@pytest.mark.parametrize("wait", [
    lambda scheduler, job, timeout: job.result(timeout=timeout),
    lambda scheduler, job, timeout: job.exception(timeout=timeout),
    lambda scheduler, job, timeout: scheduler.wait(timeout=timeout),
    lambda scheduler, job, timeout: scheduler.collect(1, timeout=timeout),
    lambda scheduler, job, timeout: corral.wait([job], timeout=timeout),
    lambda scheduler, job, timeout: list(corral.as_completed([job], timeout=timeout)),
], ids=["result", "exception", "Scheduler.wait", "collect", "corral.wait", "as_completed"])
def test_a_timeout_that_is_no_number_is_named(scheduler, wait):
    job = scheduler.dispatch(Job(jobs.noop))[0]
    with pytest.raises(TypeError, match=r"^timeout must be a number of seconds or None, "
                                        r"not str '5'$"):
        wait(scheduler, job, "5")
    assert job.result(timeout=60) is None


@pytest.mark.parametrize("holder", [lambda job: types.SimpleNamespace(job=job),
                                    lambda job: {job: 1}], ids=["an object", "a dict's key"])
def test_a_job_inside_another_object_is_refused_saying_where_a_job_may_be(scheduler, holder):
    """Attack review: it said only "cannot pickle '_thread.RLock' object"; then,
    for a Job as a dict's key, that a Job may be in a dict."""
    first = scheduler.submit(jobs.square, 2)
    with pytest.raises(ValueError, match=r"job 'identity' cannot be sent to a worker: its "
                                         r"argument args\[0\] cannot be pickled \(TypeError: "
                                         r"<Job 1 'square' .*> cannot be pickled: a job that needs "
                                         r"its result takes it among its arguments \(directly, "
                                         r"or in a list, tuple or set, or as a dict's value\), "
                                         r"not as a dict's key, inside another object or in a "
                                         r"function's closure\)"):
        scheduler.submit(jobs.identity, holder(first)).result(timeout=60)


def test_a_job_copied_is_refused_as_the_one_handle_of_its_job(scheduler):
    """Re-attack review: copy.copy(job) was told the Job "cannot be pickled"."""
    import copy

    job = scheduler.submit(jobs.square, 2)
    for copying in (copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match=r"^<Job 1 'square' .*> cannot be copied: it is the "
                                            r"one handle of its job$"):
            copying(job)
    assert job.result(timeout=60) == 4


def test_hypertunitys_n_results_to_collect_points_to_n(scheduler):
    scheduler.dispatch(Job(jobs.noop))
    with pytest.raises(TypeError, match=r"^collect\(\) takes how many results to wait for as n, "
                                        r"not n_results: collect\(1, timeout=...\)$"):
        scheduler.collect(n_results=1, timeout=60)
    assert len(scheduler.collect(1, timeout=60)) == 1


def test_a_count_to_collect_that_is_no_int_is_named(scheduler):
    scheduler.dispatch(Job(jobs.noop))
    with pytest.raises(TypeError, match=r"^collect\(n\) takes how many results to wait for, "
                                        r"an int, not str '1'$"):
        scheduler.collect("1")
    assert len(scheduler.collect(1, timeout=60)) == 1


@pytest.mark.parametrize("given, meant", [
    ("cpus", "cores"), ("threads", "cores"), ("ntasks", "cores"), ("num_gpus", "gpus"),
    ("depends_on", "after"), ("job_name", "name"), ("workdir", "cwd"), ("email", "notify"),
    ("modules", "setup"),
])
def test_another_tools_word_for_a_job_option_is_pointed_to_corrals(given, meant):
    """Cold review (a fyrd user): ``cpus=2`` was offered 'gpus' (which asks for a
    GPU), ``time="1h"`` 'timeout', ``nodes=2`` 'cores'; by spelling alone. (Words
    of options with a unit: test_another_tools_option_with_a_unit_is_offered_with_its_unit.)"""
    with pytest.raises(ValueError, match=rf"^unknown job option '{given}'; did you mean "
                                         rf"'{meant}'\?$"):
        Job(jobs.noop, **{given: 2})


def test_a_job_read_back_from_a_journal_is_a_record_among_arguments_and_refused_in_after(
        tmp_path):
    """Attack review: ``after=[Run(dir).job(1)]`` said it was "neither a Job nor a
    job's name or id". Among a call's arguments it is a record, passed as
    itself (re-attack: refusing it there broke a job that summarises a run)."""
    with corral.Scheduler(cores=1, journal=tmp_path / "earlier") as earlier:
        earlier.options(name="sq").submit(jobs.square, 3).result(timeout=30)
    stored = corral.Run(tmp_path / "earlier").job(1)
    with corral.Scheduler(cores=1) as scheduler:
        with pytest.raises(ValueError, match=(
                rf"^after: job 1 'sq' of {re.escape(str(tmp_path / 'earlier' / 'journal.db'))} "
                r"was read back from a journal: it is a record, not a job of this Scheduler to "
                r"wait for; give after= the Job that submit\(\) returned, or its id or name$")):
            scheduler.options(after=[stored]).submit(jobs.noop)
        assert scheduler.submit(jobs.identity, stored).result(timeout=30) == stored


def test_nodes_is_told_each_job_runs_on_one_node_and_how_to_ask_for_more():
    with pytest.raises(ValueError, match=r"^unknown job option 'nodes'; corral runs each job on "
                                         r"one node \(cores is its cores there\); a multi-node "
                                         r"job asks its cluster through extra_flags, e\.g\. "
                                         r"extra_flags=\['--nodes=2'\]"):
        Job(jobs.noop, nodes=2)


def test_an_output_file_option_is_told_where_a_jobs_output_goes(scheduler):
    """Cold review (a Parsl user): ``shell("true", stdout="x.out")`` was offered
    'timeout', by spelling alone."""
    for word in ("stdout", "stderr"):
        with pytest.raises(ValueError, match=rf"^unknown job option '{word}'; corral keeps each "
                                             r"job's output in files of its own \(job\.stdout, "
                                             r"job\.stderr; corral logs ID\); for a file of your "
                                             r"choosing, redirect inside the command"):
            scheduler.shell("true", **{word: "x.out"})


def test_hypertunitys_output_file_is_told_where_a_scripts_result_goes(scheduler):
    with pytest.raises(ValueError, match=r"^unknown job option 'output_file'; a command or "
                                         r"script writes its result, as JSON, to the file "
                                         r"\$CORRAL_RESULT_FILE names, and job\.result\(\) "
                                         r"returns it"):
        scheduler.shell("true", output_file="out.json")


@pytest.mark.parametrize("walltime", [1.5, 4, 59])
def test_a_walltime_as_a_bare_number_under_a_minute_is_refused_as_hours_or_minutes_meant(
        walltime):
    """Cold review: walltime=1.5, meant as hours, killed the job after 1.5 s."""
    with pytest.raises(ValueError) as raised:
        Job(jobs.noop, walltime=walltime)
    assert str(raised.value) == (
        f"walltime={walltime!r} is {walltime:g} seconds, which no walltime is meant to be: give "
        f"its unit, '{walltime:g}h' for hours or '{walltime:g}m' for minutes ('{walltime:g}s' if "
        "seconds are meant)")
    assert Job(jobs.noop, walltime=f"{walltime}s").spec.resources.walltime_s == walltime
    assert Job(jobs.noop, walltime=60).spec.resources.walltime_s == 60


@pytest.mark.parametrize("given, message", [
    ({"timeout_min": 10}, "did you mean walltime='10m'?"),
    ({"walltime_min": 1.5}, "did you mean walltime='1.5m'?"),
    ({"mem_gb": 4}, "did you mean memory='4G'?"),
    ({"mem_mb": 4000}, "did you mean memory='4000M'?"),
    ({"slurm_time": 30}, "did you mean 'walltime'? (a bare number there is seconds: give the "
                         "unit, as in '90m')"),
    ({"time": "01:00:00"}, "did you mean 'walltime'? (a bare number there is seconds: give the "
                           "unit, as in '90m')"),
    ({"mem": 4}, "did you mean 'memory'? (a bare number there is megabytes: give the unit, as "
                 "in '4G')"),
    ({"mem_per_cpu": "2G"}, "corral's memory is the whole job's: the memory per core times "
                            "cores (2G a core on 4 cores is a memory of 8G)"),
    ({"mem_mb": 1024000}, "did you mean memory='1024000M'?"),  # (not '1.024e+06M': re-attack)
    ({"mem_gb": 1e300}, "did you mean 'memory'? (a bare number there is megabytes: give the "
                        "unit, as in '4G')"),
    ({"slurm_mem_gb": 4}, "did you mean memory='4G'?"),  # submitit's: a scheduler's prefix
    ({"slurm_partition": "short"}, "did you mean 'partition'?"),
    ({"slurm_gres": "gpu:2"}, "did you mean 'gpus'?"),
    ({"job_extra_directives": ["--exclusive"]}, "did you mean 'extra_flags'?"),
    ({"job_script_prologue": ["module load x"]}, "did you mean 'setup'?"),
    ({"qos_name": "high"}, "did you mean 'qos'?"),
    # (attack review: spelling alone offered gpus, account, name and memory)
    ({"cpu": 2}, "did you mean 'cores'?"),
    ({"ncpu": 2}, "did you mean 'cores'?"),
    ({"core_count": 2}, "did you mean 'cores'?"),
    ({"gpu_count": 1}, "did you mean 'gpus'?"),
    ({"queue_name": "io"}, "did you mean 'queue'?"),
    ({"partition_name": "short"}, "did you mean 'partition'?"),
    ({"walltime_hours": 4}, "did you mean walltime='4h'?"),
    ({"memory_per_cpu": "2G"}, "corral's memory is the whole job's: the memory per core times "
                               "cores (2G a core on 4 cores is a memory of 8G)"),
])
def test_another_tools_option_with_a_unit_is_offered_with_its_unit(scheduler, given, message):
    """Options review: submitit's timeout_min=10 was offered 'walltime', and
    walltime=10 is ten seconds (mem_gb=4: memory=4 is four megabytes): a user
    who followed the hint got a job killed at once, without a word."""
    name = next(iter(given))
    with pytest.raises(ValueError) as raised:
        scheduler.options(**given)
    assert str(raised.value) == f"unknown job option {name!r}; {message}"
    with pytest.raises(ValueError) as raised:  # (re-attack: call() said "go in kwargs={...}")
        scheduler.call("os:getpid", **given)
    assert str(raised.value) == f"unknown job option {name!r}; {message}"


@pytest.mark.parametrize("flag, message", [
    ("--cpus", r"^corral: error: no such option --cpus; did you mean --cores\?$"),
    ("--time", r"^corral: error: no such option --time; did you mean --walltime\? \(with its "
               r"unit, as in 90m\)$"),
    ("--mem-gb", r"^corral: error: no such option --mem-gb; did you mean --memory\? \(with its "
                 r"unit, as in 4G\)$"),
    ("--job-name", r"^corral: error: no such option --job-name; did you mean --name\?$"),
    # (cold review: `corral submit --lr 0.2 -- python train.py`)
    ("--bogus", r"^corral: error: No such option '--bogus'\..*\(see 'corral submit --help'\); "
                r"the command's own options go after it: corral submit \[OPTIONS\] -- COMMAND "
                r"\[ITS OPTIONS\]$"),
    # (cold review: these two job options have no flag, and were answered
    # "did you mean --env?")
    ("--env", r"^corral: error: no such option --env: the job gets this terminal's environment; "
              r"set a variable in the command itself \(corral submit -- env NAME=value"),
    ("--cwd", r"^corral: error: no such option --cwd: the directory a job runs in is "
              r"--workdir DIR \(else this terminal's directory\)$"),
])
def test_corral_submit_points_another_tools_flag_to_corrals(tmp_path, flag, message):
    outcome = Corral(tmp_path / "home", tmp_path / "run")("submit", flag, "2", "true")
    assert_one_line_error(outcome, 2, message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("given, meant", [("torque", "pbs"), ("Torque", "pbs"),
                                          ("SLURM", "slurm"), ("gridengine", "sge"),
                                          ("openpbs", "pbs")])
def test_a_backend_named_as_its_scheduler_is_known_or_in_capitals_is_pointed_to(given, meant):
    """Cold review: 'torque' (which the README says "pbs" serves) and 'SLURM'
    got no suggestion, where a typo such as 'sitee' did."""
    with pytest.raises(ValueError, match=rf"^unknown backend '{given}'; did you mean '{meant}'\?"):
        corral.Scheduler(backend=given)


def test_an_unknown_backend_says_where_a_sites_scheduler_would_be_described(tmp_path,
                                                                            monkeypatch):
    """Cold review (a PLAMS port): a script run away from its corral.toml heard
    only that 'myq' was unknown; the command line said where tables are read."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.toml").write_text("")
    monkeypatch.setenv("CORRAL_CONFIG", str(tmp_path / "mine.toml"))
    with pytest.raises(ValueError, match=r"^unknown backend 'myq' \(known: local, slurm, [^)]*\); "
                       + re.escape("a site's own scheduler is known from a [schedulers.NAME] "
                                   f"table of {tmp_path / 'mine.toml'} or of corral.toml in the "
                                   "current directory") + "$"):
        corral.Scheduler(backend="myq")
    (tmp_path / "site.toml").write_text("")
    monkeypatch.setenv("CORRAL_SITE_CONFIG", str(tmp_path / "site.toml"))
    with pytest.raises(ValueError, match=re.escape(
            f"[schedulers.NAME] table of {tmp_path / 'site.toml'}, {tmp_path / 'mine.toml'} or "
            "of corral.toml in the current directory")):
        corral.Scheduler(backend="myq")


def test_a_call_a_modules_builtin_function_cannot_take_is_refused_when_made(scheduler):
    """Cold review: ``submit(print, "x", corse=2)`` was taken and failed when it ran."""
    import math

    with pytest.raises(TypeError, match=r"^print\(\) takes no argument 'corse' \(did you mean "
                                        r"the job option 'cores'\?\)"):
        scheduler.submit(print, "x", corse=2)
    with pytest.raises(TypeError, match=r"^sqrt\(\) cannot be called with these arguments: too "
                                        r"many positional arguments"):
        scheduler.submit(math.sqrt, 1, 2)
    assert scheduler.submit(math.sqrt, 16).result(timeout=60) == 4.0
    assert scheduler.submit(print, "x", end="").result(timeout=60) is None
