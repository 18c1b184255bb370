"""One codec for a job's spec to and from JSON (issue 9, item 6, last bullet).

The journal stores every job's spec through :func:`corral.journal.codec.encode_spec`
and the daemon makes a ``corral submit`` job again from it after a restart
through :func:`~corral.journal.codec.decode_spec`. Before, the two disagreed: the
journal left out a job's placement (partition, account, qos, constraint, setup,
extra flags, python, bundle), so a job submitted with ``--partition X`` and run
again by a restarted daemon went to the default partition.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from datetime import timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from corral import Run
from corral.options import JOB_OPTIONS
from corral.spec import Script, Shell, make_spec, make_task
from corral.journal.codec import JournaledSpec, decode_spec, encode_spec, rebuild_spec

import jobs
from support.cli import Corral, kill_and_wait
from support.waiting import wait_until

_TEXT = st.text(min_size=1, max_size=12).filter(lambda text: text.strip() and "\0" not in text)
_LINE = _TEXT.filter(lambda text: "\n" not in text and "\r" not in text)
_DURATION = st.one_of(st.floats(min_value=0.001, max_value=3e9),
                      st.integers(min_value=1, max_value=3_000_000_000),
                      st.sampled_from(["90s", "30m", "1h30m", "1:30:00", "2-00:00:00"]),
                      st.timedeltas(min_value=timedelta(milliseconds=1),
                                    max_value=timedelta(days=10_000)))
_DIRECTORIES = ["/", tempfile.gettempdir(), os.path.dirname(__file__)]

#: A valid value for every option of the registry but ``after`` (its Jobs are
#: journaled as dependency ids, not in the spec).
VALID = {
    "cores": st.integers(min_value=1, max_value=2**63 - 1),
    "memory": (st.integers(min_value=64, max_value=2**40)
               | st.sampled_from(["512M", "4G", "1.5GB", "4M", "1M", "63M"])),
    # (a bare number under a minute is refused as hours or minutes meant)
    "walltime": _DURATION.filter(lambda value: not isinstance(value, (int, float)) or value >= 60),
    "gpus": st.integers(min_value=0, max_value=64),
    "name": _TEXT,
    "queue": _TEXT,
    "tokens": st.integers(min_value=0, max_value=2**63 - 1),
    "priority": st.integers(min_value=-2**63, max_value=2**63 - 1),
    "retries": st.integers(min_value=0, max_value=100),
    "timeout": _DURATION,
    "cwd": st.sampled_from(_DIRECTORIES),
    "env": st.dictionaries(_TEXT.filter(lambda name: "=" not in name), _TEXT | st.none(),
                           max_size=4),
    "notify": st.lists(st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.org", fullmatch=True), max_size=3),
    "notify_on": st.sampled_from(["failure", "end"]),
    "partition": _LINE,
    "account": _LINE,
    "qos": _LINE,
    "constraint": _LINE,
    "setup": st.lists(_TEXT, max_size=3) | _TEXT,
    "extra_flags": st.lists(st.from_regex(r"--?[a-z][a-z-]{0,9}(=[a-z0-9]{1,5})?",
                                          fullmatch=True), max_size=3),
    "python": st.sampled_from([sys.executable, "python3"]) | _TEXT,
    "bundle": st.integers(min_value=1, max_value=1000),
}

SCRIPT = os.path.abspath(jobs.__file__)
_WORDS = st.lists(_TEXT, max_size=4).map(tuple)
TASKS = st.one_of(
    _TEXT.map(Shell),
    st.tuples(_TEXT, _WORDS).map(lambda words: Shell((words[0], *words[1]))),
    _WORDS.map(lambda words: Script(SCRIPT, words)),
    _WORDS.map(lambda words: Script(SCRIPT, words, "python3")),
)


def test_the_round_trip_covers_every_option_of_the_registry():
    """An option added to the registry must be added here, and so to the round trip."""
    assert set(VALID) == set(JOB_OPTIONS) - {"after"}


@settings(max_examples=300, deadline=None, database=None)
@given(task=TASKS, options=st.fixed_dictionaries({}, optional=VALID))
# (Found here: a walltime under a minute given with its unit was journaled as seconds,
# a bare number, which the options refuse so small, and it could not be rebuilt.)
@example(task=Shell("0"), options={"walltime": "2s"})
@example(task=Shell("0"), options={"walltime": timedelta(microseconds=1)})
def test_a_commands_spec_comes_back_equal_from_its_json(task, options):
    spec = make_spec(make_task(task), options)
    text = encode_spec(spec)
    assert json.loads(text)  # plain JSON, readable by anything
    assert rebuild_spec(text) == spec
    assert rebuild_spec(json.loads(text)) == spec  # as the journal reader hands it over


@settings(max_examples=100, deadline=None, database=None)
@given(args=st.lists(st.integers(), max_size=3), options=st.fixed_dictionaries({}, optional=VALID))
def test_a_calls_options_come_back_equal_given_its_function(args, options):
    call = make_task(jobs.add, args)
    spec = make_spec(call, options)
    assert decode_spec(encode_spec(spec)).task is None  # a call's function is not in JSON
    assert rebuild_spec(encode_spec(spec), task=call) == spec


def test_the_json_holds_placement_by_option_name_and_leaves_out_defaults():
    spec = make_spec(make_task(Shell("make test")), {
        "memory": "2G", "partition": "short", "account": "lab", "qos": "high",
        "constraint": "avx512&ib", "setup": "module load gcc", "extra_flags": "--exclusive",
        "python": "python3", "bundle": 4})
    assert json.loads(encode_spec(spec)) == {
        "task": {"shell": "make test"},
        "options": {"memory": 2048, "partition": "short", "account": "lab", "qos": "high",
                    "constraint": "avx512&ib", "setup": ["module load gcc"],
                    "extra_flags": ["--exclusive"], "python": "python3", "bundle": 4}}


def test_a_spec_journaled_by_an_earlier_version_still_decodes():
    flat = ('{"cores": 2, "memory_mb": 1024, "walltime_s": 60.0, "gpus": 0, "queue": null, '
            '"tokens": 0, "priority": 3, "retries": 1, "timeout_s": null, "cwd": "/", '
            '"env": {"A": "1", "B": null}, "notify": [], "notify_on": "failure", '
            '"argv": ["echo", "hi there"]}')
    assert decode_spec(flat) == JournaledSpec(
        Shell(("echo", "hi there")),
        {"cores": 2, "memory": 1024, "walltime": 60.0, "gpus": 0, "tokens": 0, "priority": 3,
         "retries": 1, "cwd": "/", "env": {"A": "1", "B": None}, "notify": [],
         "notify_on": "failure"})
    spec = rebuild_spec(flat)
    assert (spec.resources.memory_mb, spec.priority, spec.env) == (1024, 3, (("A", "1"),
                                                                              ("B", None)))


@pytest.mark.parametrize("record, message", [
    ("not json", r"^the journaled spec is not JSON: "),
    ("[1, 2]", r"^the journaled spec \[1, 2\] is not a JSON object$"),
    ('{"task": {"shell": 5}, "options": {}}', r"^the journaled spec's shell 5 is not a string$"),
    ('{"task": {"argv": ["a", null]}, "options": {}}',
     r"^the journaled spec's argv \['a', None\] is not a list of strings"),
    ('{"task": {"shell": "ls"}, "options": {"memroy": 5}}',
     r"^unknown job option 'memroy'; did you mean 'memory'\?$"),
    ('{"task": {"call": "jobs.add"}, "options": {}}',
     r"^the journaled spec is a Python call's, whose function and arguments are not in it"),
])
def test_a_damaged_spec_is_refused_saying_what_is_wrong(record, message):
    with pytest.raises(ValueError, match=message):
        rebuild_spec(record)


def test_a_word_that_was_a_jobs_result_is_journaled_as_null():
    from corral import Job

    parent = Job(jobs.square, (3,))
    spec = make_spec(make_task(Shell(("echo", parent))), {})
    assert json.loads(encode_spec(spec))["task"] == {"argv": ["echo", None]}


# -- the daemon, which rebuilds jobs from the journal --------------------------------------------


def test_a_submitted_jobs_placement_survives_a_daemon_restart(tmp_path):
    """``corral submit --partition X ...``, the daemon killed before the job ran,
    and the next daemon runs it again: with every option it was submitted with."""
    release = tmp_path / "release"
    user = Corral(tmp_path / "home", tmp_path / "run", cwd=tmp_path)
    placement = ["--partition", "short", "--account", "lab", "--qos", "high",
                 "--constraint", "avx512&ib", "--setup", "module load gcc",
                 "--extra-flags=--exclusive", "--python", "python3", "--bundle", "4",
                 "--memory", "64M", "--walltime", "1h", "--retries", "2"]
    try:
        blocker = user.submit(f"while [ ! -e {shlex.quote(os.fspath(release))} ]; "
                              "do sleep 0.02; done")
        placed = user.submit(*placement, "--", "echo placed")
        user.wait_for_status(blocker, "RUNNING")  # the daemon runs one job at a time
        assert user.status_of(placed) == "QUEUED"
        kill_and_wait(user.daemon_pid())
        release.touch()
        user.ok("wait")  # starts a new daemon, which runs both again
        wait_until(lambda: user.status_of(placed) == "COMPLETED", message="the placed job")
    finally:
        release.touch()
        user.stop_daemon()
    journaled = decode_spec(Run(user.run).job(placed).spec)  # rewritten by the new daemon
    assert journaled.task == Shell("echo placed")
    assert {name: journaled.options.get(name) for name in (
        "partition", "account", "qos", "constraint", "setup", "extra_flags", "python", "bundle",
        "memory", "walltime", "retries")} == {
        "partition": "short", "account": "lab", "qos": "high", "constraint": "avx512&ib",
        "setup": ["module load gcc"], "extra_flags": ["--exclusive"], "python": "python3",
        "bundle": 4, "memory": 64, "walltime": 3600.0, "retries": 2}
    assert journaled.options["cwd"] == os.fspath(tmp_path)
    assert user.ok("logs", placed).out == "placed\n"


def test_jobs_journaled_one_after_another_each_get_their_own_options():
    """The options' JSON of the job before is reused only when the options are the same."""
    task = make_task(print, ("x",), {})
    plain, big, renamed = (make_spec(task, options) for options in
                           ({}, {"cores": 2, "memory": "1G"}, {"name": "other"}))
    texts = [json.loads(encode_spec(spec))["options"] for spec in (plain, big, plain, renamed)]
    assert texts == [{}, {"cores": 2, "memory": 1024}, {}, {"name": "other"}]
