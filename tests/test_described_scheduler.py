"""A scheduler described in settings: a ``[schedulers.NAME]`` table of corral.toml
becomes a backend; a bad table is refused naming file, line and key.

The contract suite runs every user story on the fake scheduler configured by such
a table (``tests/support/harnesses/described.py``, ``-k "[described]"``); here are
the table's errors, its parsers on recorded output, and what changes with it
(arrays or none, dependencies or none, holds or none, states it does not know).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

import corral
from corral.backends import backend_info, backend_names, probe_backend, unregister_backend
from corral.backends.batch.described import describe
from corral.backends.batch.scheduler import NativeRow, SubmitRequest
from corral.backends.batch.taskfiles import script_for
from corral.backends.info import NOT_USED
from corral.config import ConfigError, load_config
from corral.errors import BackendError
from corral.spec import Placement, Resources
from corral.status import JobStatus
from support.fakebatch.cluster import FakeBatch
from support.harnesses.described import TABLE

GOLDEN = Path(__file__).with_name("golden") / "described_fakeq_job.sh"

#: ``qstat -u root -F text`` of the fake scheduler (tests/support/fakebatch/qlib.py),
#: recorded: a job that ended well, one that exited 3, one killed at its walltime,
#: one deleted while running, an array of two, one running, one queued, one held.
RECORDED_QSTAT = """\
ID STATE EXIT SIGNAL REASON
1 F 0 - -
2 F 3 - -
3 W - 9 walltime
4 D - 9 deleted
5_1 F 0 - -
5_2 F 0 - -
8 R - - -
9 Q - - -
10 H - - -
"""


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A working directory whose corral.toml a test writes; no user file; the
    schedulers the test's config registered are forgotten afterwards."""
    empty = tmp_path / "empty-user-file.toml"
    empty.write_text("")
    monkeypatch.setenv("CORRAL_CONFIG", os.fspath(empty))
    monkeypatch.chdir(tmp_path)
    before = set(backend_names())
    yield tmp_path
    for name in set(backend_names()) - before:
        unregister_backend(name)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeBatch(tmp_path / "fakebatch")
    fake.root.mkdir()
    for name, value in fake.environ().items():
        monkeypatch.setenv(name, value)
    yield fake
    fake.stop()


def table(**changes: str | None) -> str:
    """The harness's table with top-level keys replaced (a TOML value) or removed (None)."""
    lines = TABLE.splitlines()
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        if key in changes and not line.startswith("["):
            value = changes.pop(key)
            if value is not None:
                out.append(f"{key} = {value}")
            continue
        out.append(line)
    head = out.index("[schedulers.fakeq.directives]")
    out[head:head] = [f"{key} = {value}" for key, value in changes.items() if value is not None]
    return "\n".join(out) + "\n"


def fakeq(text: str = TABLE):
    return describe("fakeq", __import__("tomllib").loads(text)["schedulers"]["fakeq"])


def scheduler_of(text: str = TABLE):
    return fakeq(text).backend_class().scheduler


def on_fakeq(config_dir: Path, **settings) -> corral.Scheduler:
    """A Scheduler on the backend ``fakeq``, known only from the config files."""
    settings.setdefault("backend_options", {"poll_interval": 0.05})
    return corral.Scheduler(backend="fakeq", workdir=config_dir / "run", **settings)


def request(**changes) -> SubmitRequest:
    values = dict(script="/runs/1/job.sh", name="train (+2)",
                  resources=Resources(cores=4, memory_mb=1500, walltime_s=90.5, gpus=1),
                  placement=Placement(partition="gpu", extra_flags=("-V",)), output="/dev/null",
                  array_size=3, throttle=2, dependencies=("7", "8_1"), time_limit_s=90.5)
    return SubmitRequest(**{**values, **changes})


# -- a table becomes a backend ----------------------------------------------------------------


def test_a_table_in_corral_toml_becomes_a_backend_that_says_what_the_table_set(config_dir):
    (config_dir / "corral.toml").write_text(TABLE + '\n[daemon]\nbackend = "fakeq"\n')
    config = load_config()
    assert config.daemon.backend == "fakeq"
    info = backend_info("fakeq")
    assert info.description == "the fake batch scheduler of the tests, described in settings"
    assert info.native_id_column == "FAKEQ ID"
    caps = info.capabilities
    assert (caps.outlives_driver, caps.chains_dependencies, caps.holds,
            caps.enforces_walltime, caps.packs_locally) == (True, True, True, True, False)
    assert info.option_help["cores"] == "-l ncpus=N in the script header (#PBS)"
    assert info.option_help["memory"] == "-l mem=<MB> in the script header (#PBS)"
    assert info.option_help["walltime"] == \
        "-l walltime=<seconds, rounded up> in the script header (#PBS)"
    assert info.option_help["after"] == \
        "-W depend=afterok:<parents' ids, joined by ':'> while the parent is surely known"
    assert info.option_help["partition"] == NOT_USED
    assert "poll_interval" in info.backend_options
    load_config()  # read again: the same table is no new backend
    assert backend_info("fakeq") is info


def test_a_changed_table_replaces_the_one_registered_before(config_dir):
    (config_dir / "corral.toml").write_text(TABLE)
    load_config()
    (config_dir / "corral.toml").write_text(table(hold=None, release=None, dependency=None,
                                                  title='"our queue"'))
    load_config()
    info = backend_info("fakeq")
    assert (info.title, info.capabilities.holds, info.capabilities.chains_dependencies) == \
        ("our queue", False, False)
    backend_class = info.backend_class()  # the class agrees with the registry
    assert backend_class.hold is None and backend_class.chains_dependencies is False


def test_a_scheduler_made_by_name_reads_the_config_that_describes_it(config_dir, cluster):
    (config_dir / "corral.toml").write_text(TABLE)
    assert "fakeq" not in backend_names()
    with on_fakeq(config_dir) as sched:
        job = sched.options(memory="2G", walltime="10m", name="first").submit(abs, -3)
        assert job.result(timeout=60) == 3
    script = next((config_dir / "run").rglob("job.sh")).read_text()
    assert script.startswith("#!/bin/bash\n#PBS -l ncpus=1\n#PBS -l mem=2048\n"
                             "#PBS -l walltime=600\n#PBS -N first\n")


def test_a_placement_option_the_table_has_no_directive_for_is_warned_of_naming_the_table(
        config_dir, cluster, caplog):
    """Attack review: the warning advised extra_flags, where a site's table
    sends the option once it has a directive for it."""
    (config_dir / "corral.toml").write_text(TABLE)
    with on_fakeq(config_dir) as sched:
        assert sched.options(qos="fast").submit(abs, -3).result(timeout=60) == 3
    assert ("job 'abs' asks for qos='fast', which corral cannot ask fakeq for: it runs without "
            "it (and so does every later job that asks for it); to send it, add a line for qos to "
            "[schedulers.fakeq.directives] in the config") in caplog.text


def test_the_probe_answers_when_the_status_command_does(config_dir, cluster, monkeypatch):
    (config_dir / "corral.toml").write_text(TABLE)
    load_config()
    said = probe_backend("fakeq")
    assert said.answers and said.why == (f"qstat -u {__import__('getpass').getuser()} -F text "
                                         "answered ([schedulers.fakeq] of the settings)")
    with monkeypatch.context() as patched:
        patched.setenv("PATH", "/nonexistent")
        assert probe_backend("fakeq") == corral.backends.Probe(False, "qstat is not on PATH")
    # (Cold review: a typo in the cancel command showed only once a job was cancelled,
    # and a path that does not exist was "not on PATH".)
    (config_dir / "corral.toml").write_text(table(cancel='["/opt/site/bin/qdell", "{ids}"]'))
    load_config()
    assert probe_backend("fakeq") == corral.backends.Probe(
        False, "/opt/site/bin/qdell is not a program one may run")


def test_auto_takes_the_sites_described_scheduler_before_a_built_in_one_that_answers(
        config_dir, cluster):
    """A site that wraps PBS's commands in its own, described in a table, had
    backend="auto" choose the built-in PBS backend, which also answers there
    (and submitted past the site's wrappers): the site's table says how jobs
    are submitted there."""
    from corral.backends import resolve_backend

    (config_dir / "corral.toml").write_text(TABLE)
    load_config()
    assert probe_backend("pbs").answers  # (the fake cluster's qstat speaks Torque too)
    assert resolve_backend("auto") == "fakeq"
    with corral.Scheduler(backend="auto") as scheduler:  # (cold review: only its repr said)
        assert scheduler.backend == "fakeq"
    from support.cli import CORRAL

    listed = subprocess.run([CORRAL, "backends", "auto"], capture_output=True, text=True,
                            timeout=60, cwd=config_dir, env={**os.environ, "COLUMNS": "200"})
    assert listed.returncode == 0 and 'backend="auto" chooses fakeq here' in listed.stdout, \
        listed


def test_the_probe_says_when_the_status_output_is_not_what_the_table_describes(
        config_dir, cluster, tmp_path):
    """A sysadmin's review: a table whose columns misread the status output, or
    whose states lack a word the scheduler prints, answered "here" in `corral
    backends`; the first sign was a run whose every poll failed, or jobs waited
    on for ever."""
    script = tmp_path / "listed.sh"
    script.write_text("#!/bin/bash\nsleep 60\n")
    native = subprocess.run(["qsub", "-o", "/dev/null", os.fspath(script)], capture_output=True,
                            text=True, check=True, timeout=30).stdout.strip()
    assert cluster.qstat(native)[native]["state"] in ("Q", "R")
    user = __import__("getpass").getuser()
    asked = f"qstat -u {user} -F text answered"

    def probe(table_text: str) -> corral.backends.Probe:
        (config_dir / "corral.toml").write_text(table_text)
        load_config()
        return probe_backend("fakeq")

    assert probe(TABLE).why == f"{asked} ([schedulers.fakeq] of the settings)"
    misread = probe(table(status_columns=None, status_regex="'^job (?P<id>\\d+) is "
                                                             "(?P<state>\\w)'"))
    assert not misread.answers and re.fullmatch(
        rf"{asked}, but qstat printed no row corral can read: '{native}\s+[QR] .*': see "
        r"status_columns \(or status_regex\) and status_skip in \[schedulers\.fakeq\] of the "
        r"settings", misread.why), misread
    unlisted = probe(table(states='{ F = "ended", D = "cancelled" }'))
    assert unlisted.answers and re.fullmatch(
        rf"{asked}, listing 1 job\(s\), but the state word\(s\) '[QR]' are not in the states "
        r"of \[schedulers\.fakeq\] of the settings: jobs in them are waited on as they were",
        unlisted.why), unlisted
    # (Cold review: words in another case, and a header line read as a job, left a
    # person to guess what was wrong.)
    state = cluster.qstat(native)[native]["state"]
    lower = probe(table(states='{ q = "pending", r = "running", F = "ended" }'))
    assert lower.why.endswith(f"were; {state!r} is {state.lower()!r} in states (state words "
                              "match as written)"), lower
    header = probe(table(status_skip="0"))
    assert header.why.endswith("; a line of the header read as a job? (status_skip = 0)"), header


# -- bad tables -------------------------------------------------------------------------------

BAD = [
    (table(stauts='["qstat"]'), 22, "schedulers.fakeq.stauts",
     "unknown key; did you mean 'status'?"),
    (table(status_columns='["id", "exit_status"]'), 7, "schedulers.fakeq.status_columns",
     "missing 'state': the job id and its state must be read from each line"),
    (table(status_columns='["id", "state", "exitstatus"]'), 7, "schedulers.fakeq.status_columns",
     "unknown column 'exitstatus'; did you mean 'exit_status'? ('-' for a column corral does "
     "not read)"),
    (table(states='{ Q = "pending", R = "runing" }'), 9, "schedulers.fakeq.states.R",
     "'runing' is not one of 'pending', 'held', 'running', 'completed', 'failed', "
     "'cancelled', 'timed_out', 'ended'; did you mean 'running'?"),
    (table(submit='["qsub", "-N", "{nmae}"]'), 4, "schedulers.fakeq.submit",
     "unknown placeholder {nmae} in '{nmae}'; did you mean 'name'? (known here: {name}, "
     "{output}, {script})"),
    (table(job_id="'^\\d+$'"), 5, "schedulers.fakeq.job_id",
     "must have exactly one group, the id, such as '^(\\d+)', not 0"),
    (table(status_regex="'(?P<id>\\S+'"), 22, "schedulers.fakeq.status_regex",
     "give status_columns or status_regex, not both"),
    (table(status_columns=None, status_regex="'(?P<id>\\S+'"), 21,
     "schedulers.fakeq.status_regex", "not a regular expression: missing ), unterminated "
     "subpattern at position 0"),
    (table(status_columns=None), 1, "schedulers.fakeq.status_columns",
     "missing: say how to read the status output with status_columns (names of its columns) "
     "or status_regex (named groups)"),
    (table(release=None), 11, "schedulers.fakeq.hold",
     "release is missing: give both (pause holds, resume releases) or neither"),
    (table(cancel=None), 1, "schedulers.fakeq.cancel",
     "missing: every scheduler table needs submit, job_id, status, states, cancel, "
     "job_id_variable"),
    # (attack review: a bare qdel ran, and the job read CANCELLED and ran on)
    (table(cancel='["qdel"]'), 10, "schedulers.fakeq.cancel",
     "must hold {ids}, where corral puts the job ids, such as [\"qdel\", \"{ids}\"]; "
     "without it the command names no job"),
    (table(hold='["qhold", "-u", "me"]'), 11, "schedulers.fakeq.hold",
     "must hold {ids}, where corral puts the job ids, such as [\"qhold\", \"{ids}\"]"),
    (table(cancel='"qdel {ids}"'), 10, "schedulers.fakeq.cancel",
     "must be a command as a list of strings, such as [\"qstat\", \"-u\", \"{user}\"], not "
     "'qdel {ids}'"),
    (table(submit='[""]'), 4, "schedulers.fakeq.submit",
     "must start with the program to run, a name or a path without blanks around it, not ''"),
    (table(status_columns='["id", "state", "id"]'), 7, "schedulers.fakeq.status_columns",
     "column 'id' named twice; '-' for a column corral does not read"),
    (table(directive_prefix='"#PBS\\nrm -rf /tmp/x"'), 14, "schedulers.fakeq.directive_prefix",
     "must be one line, not '#PBS\\nrm -rf /tmp/x'"),
    (table(walltime_format='"hours"'), 15, "schedulers.fakeq.walltime_format",
     "'hours' is not one of 'seconds', 'minutes', 'hh:mm:ss'"),
    (table(forget_after='"soon"'), 20, "schedulers.fakeq.forget_after",
     "forget_after='soon' is not a duration"),
    (TABLE.replace('gpus = ["-l"', 'cpus = ["-l"'), 26, "schedulers.fakeq.directives.cpus",
     "'cpus' is not one of 'cores', 'memory', 'walltime', 'gpus', 'partition', 'account', "
     "'qos', 'constraint', 'name'; did you mean 'gpus'?"),
    # (not "did you mean 'cores'?": nodes are not cores; cold review)
    (TABLE.replace('gpus = ["-l"', 'nodes = ["-l"'), 26, "schedulers.fakeq.directives.nodes",
     "'nodes' is not one of 'cores', 'memory', 'walltime', 'gpus', 'partition', 'account', "
     "'qos', 'constraint', 'name'; corral has no job option for it: give the scheduler's own "
     "flags with a job's extra_flags option (extra_flags=[\"--nodes=2\"]), or in this table's "
     "submit command for every job"),
    (TABLE.replace('index_variable = "FAKEBATCH_ARRAY_INDEX"\n', ""), 29,
     "schedulers.fakeq.array.index_variable",
     "missing: an array needs argument (e.g. [\"-t\", \"{first}-{last}{throttle}\"]) and "
     "index_variable"),
    (TABLE.replace("[schedulers.fakeq]", "[schedulers.slurm]").replace("schedulers.fakeq.",
                                                                       "schedulers.slurm."),
     1, "schedulers.slurm", "'slurm' is already a backend (batch jobs on a Slurm cluster "
                            "(sbatch, squeue, sacct, scancel)); give the scheduler another name"),
    (TABLE.replace("fakeq", "Fake-Q"), 1, "schedulers.Fake-Q",
     "a scheduler's name is a backend name: a lowercase word other than 'auto' (letters, "
     "digits and '_'), not 'Fake-Q'"),
    # a conversion or format spec would fail only when filled: a poll, a cancel, a task id
    (table(cancel='["qdel", "x{ids:d}"]'), 10, "schedulers.fakeq.cancel",
     "{ids:d} in 'x{ids:d}': a placeholder takes no conversion or format spec; write {ids}"),
    (table(status='["qstat", "-u", "{user:{nope}}"]'), 6, "schedulers.fakeq.status",
     "{user:{nope}} in '{user:{nope}}': a placeholder takes no conversion or format spec; "
     "write {user}"),
    (table(submit='["qsub", "-o", "{output!a}"]'), 4, "schedulers.fakeq.submit",
     "{output!a} in '{output!a}': a placeholder takes no conversion or format spec; "
     "write {output}"),
    (TABLE.replace('task_id = "{job}_{index}"', 'task_id = "{job}_{index:{nope}}"'), 34,
     "schedulers.fakeq.array.task_id", "{index:{nope}} in '{job}_{index:{nope}}': a "
     "placeholder takes no conversion or format spec; write {index}"),
    # (attack review, the four below: each passed, to fail or mislead only when jobs ran)
    (table(directive_prefix='"PBS"'), 14, "schedulers.fakeq.directive_prefix",
     "'PBS' must begin with '#' (such as \"#PBS\"): the job script is a shell script, and a "
     "line without it would run as a command"),
    (table(submit='["qsub\\u0000", "{script}"]'), 4, "schedulers.fakeq.submit",
     "'qsub\\x00' holds a NUL character (\\0), which no command may take"),
    (TABLE.replace('task_id = "{job}_{index}"', 'task_id = "{job}"'), 34,
     "schedulers.fakeq.array.task_id", "'{job}' must hold both {job} and {index}, apart, as "
     "the scheduler names one task of an array"),
    (TABLE.replace('task_id = "{job}_{index}"', 'task_id = "{job}{index}"'), 34,
     "schedulers.fakeq.array.task_id", "'{job}{index}' must hold both {job} and {index}, "
     "apart"),
    (TABLE.replace('"{first}-{last}{throttle}"]', '"{first}-{last}", " {throttle}"]'), 30,
     "schedulers.fakeq.array.argument", "\"{throttle}\" alone is an empty argument"),
    (TABLE.replace('"{first}-{last}{throttle}"]', '"1-2"]'), 30,
     "schedulers.fakeq.array.argument", "['-t', '1-2'] must hold {last} or {size}, where corral "
     "puts how many tasks the array has"),
    (TABLE.replace('"{first}-{last}{throttle}"]', '"{first}-{last}", "{throttle}"]'), 30,
     "schedulers.fakeq.array.argument", "\"{throttle}\" alone is an empty argument when no "
     "throttle is asked: join it to another"),
    (table(title='"fake\\u001b]0;owned\\u0007"'), 2, "schedulers.fakeq.title",
     "'fake\\x1b]0;owned\\x07' is shown to people: give it no control character, tab, "
     "newline or invisible mark"),
    (table(commands_in_job_group='"yes"'), 22, "schedulers.fakeq.commands_in_job_group",
     "must be true or false, not 'yes'"),
    (table(cancel_ended_words='"gone"'), 22, "schedulers.fakeq.cancel_ended_words",
     "must be a list of strings, such as [\"job already gone\"], not 'gone'"),
    (table(cancel_ended_words='["job gone", "e"]'), 22, "schedulers.fakeq.cancel_ended_words",
     "'e' is too short: a cancel error holding it anywhere would read as a job that had "
     "ended; give the scheduler's whole phrase"),
    (TABLE.replace("ncpus={cores}", "ncpus={cores:s}"), 23, "schedulers.fakeq.directives.cores",
     "{cores:s} in 'ncpus={cores:s}': a placeholder takes no conversion or format spec; "
     "write {cores}"),
]


@pytest.mark.parametrize(("text", "line", "key", "problem"), BAD,
                         ids=[bad[2].rsplit(".", 1)[-1] + f"-{n}" for n, bad in enumerate(BAD)])
def test_a_bad_table_is_refused_naming_file_line_and_key(config_dir, text, line, key, problem):
    path = config_dir / "corral.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config()
    error = raised.value
    assert (error.path, error.line, error.key) == (path, line, key), str(error)
    assert error.problem.startswith(problem), error.problem
    assert str(error).startswith(f"{path}:{line}: {key}: {problem}")


# -- building commands ------------------------------------------------------------------------


def test_directives_go_to_the_header_with_a_prefix_and_to_submit_without_one():
    with_prefix = scheduler_of()
    assert with_prefix.submit_argv(request()) == [
        "qsub", "-o", "/dev/null", "-t", "1-3%2", "-W", "depend=afterok:7:8_1", "-V",
        "/runs/1/job.sh"]
    plain = scheduler_of(table(directive_prefix=None, walltime_format='"hh:mm:ss"',
                               memory_unit='"GB"',
                               submit='["qsub", "{script}", "--out={output}"]'))
    assert plain.submit_argv(request(array_size=None, dependencies=())) == [
        "qsub", "-l", "ncpus=4", "-l", "mem=2", "-l", "walltime=00:01:31", "-l", "ngpus=1",
        "-N", "train (+2)", "-V", "/runs/1/job.sh", "--out=/dev/null"]
    assert plain.granted_time_s(90.5) == 91.0
    minutes = scheduler_of(table(walltime_format='"minutes"'))
    assert minutes.granted_time_s(61) == 120.0


def test_ids_are_one_argument_each_or_joined_inside_a_longer_one():
    sched = scheduler_of(table(hold='["qhold", "--jobs={ids}"]', ids_separator='" "'))
    assert sched.cancel_argv(["7", "8_1"]) == ["qdel", "7", "8_1"]
    assert sched.hold_argv(["7", "8_1"]) == ["qhold", "--jobs=7 8_1"]
    assert sched.status_argv("ann") == ["qstat", "-u", "ann", "-F", "text"]
    assert sched.array_task_id("12", 3) == "12_3"
    # (Cold review: -hold_jid {ids} became "-hold_jid 7 8_1", and a job with two
    # parents was refused by every scheduler that takes one list after the flag.)
    # (Cold review: a site's cancel said "job already gone", and the job read as
    # refused, "may still run".)
    gone = "mydel: 1026: Job already GONE\n"
    assert not sched.cancel_answer_usable(1, gone)
    assert scheduler_of(table(cancel_ended_words='["job already gone"]')).cancel_answer_usable(
        1, gone)
    hold_jid = scheduler_of(table(dependency='["-hold_jid", "{ids}"]',
                                  dependency_separator='","'))
    assert hold_jid.submit_argv(request(array_size=None))[-4:] == [
        "-hold_jid", "7,8_1", "-V", "/runs/1/job.sh"]


def test_a_template_that_cannot_be_filled_fails_naming_its_key():
    """Defence in depth: a table the load check let through (built here by hand)
    fails with the key named, never a KeyError or ValueError from str.format."""
    from dataclasses import replace

    from corral.backends.batch.described.scheduler import scheduler_class

    checked = fakeq().backend_class().scheduler.table
    assert checked.array is not None
    broken = scheduler_class(replace(
        checked, cancel=("qdel", "x{ids:d}"), status=("qstat", "-u", "{user:{nope}}"),
        array=replace(checked.array, task_id="{job}_{index!a}")))()
    for call, words in [
            (lambda: broken.cancel_argv(["7"]), "schedulers.fakeq.cancel: cannot fill "
             "'x{ids:d}': {ids} is not a bare placeholder of ['ids']"),
            (lambda: broken.status_argv("ann"), "schedulers.fakeq.status: cannot fill "
             "'{user:{nope}}': {user} is not a bare placeholder of ['user']"),
            (lambda: broken.array_task_id("12", 3), "schedulers.fakeq.array.task_id: cannot "
             "fill '{job}_{index!a}': {index} is not a bare placeholder of ['index', 'job']")]:
        with pytest.raises(BackendError) as raised:
            call()
        assert str(raised.value) == words


def test_a_literal_brace_is_no_placeholder_so_the_script_still_goes_last():
    sched = scheduler_of(table(submit='["qsub", "--tag={{script}}"]'))
    assert sched.submit_argv(request(array_size=None, dependencies=())) == [
        "qsub", "--tag={script}", "-V", "/runs/1/job.sh"]


def test_the_rendered_script_of_the_test_table_matches_its_golden_file():
    rendered = script_for(scheduler_of(), directory=Path("/home/ann/runs/it's 100%/fakeq/7"),
                          tasks=3, setup=("module load python/3.11",),
                          python="/opt/my python/bin/python3",
                          request=request(name="it's $HOME\n; rm -rf ~"))
    if os.environ.get("CORRAL_REGENERATE_GOLDEN") == "1":
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text()
    assert "#PBS -N 'it'\"'\"'s $HOME?; rm -rf ~'\n" in rendered  # one quoted line, no code


def test_a_scheduler_that_signals_the_jobs_group_tells_the_runtime_in_the_script():
    """Cold review (Grid Engine described here): its qdel's SIGKILL reaches the
    batch job's process group only; a command must run in it."""
    def exported(text: str) -> str:
        rendered = script_for(scheduler_of(text), directory=Path("/runs/fakeq/7"), tasks=1,
                              setup=(), python="python3", request=request())
        return re.search(r"CORRAL_COMMANDS_IN_JOB_GROUP=(\S*)", rendered).group(1)

    assert (exported(TABLE), exported(table(commands_in_job_group="true"))) == ("0", "1")


def test_the_job_id_is_read_by_the_table_regex_or_the_output_is_quoted():
    sched = scheduler_of(table(job_id="'Job <(\\d+)> is submitted'"))
    assert sched.parse_submit("Job <42> is submitted to queue <normal>.\n") == "42"
    with pytest.raises(ValueError) as raised:
        sched.parse_submit("qsub: cannot reach the server\n")
    assert str(raised.value) == ("qsub printed no job id that job_id 'Job <(\\\\d+)> is "
                                 "submitted' finds: 'qsub: cannot reach the server'")


# -- reading states ---------------------------------------------------------------------------


def test_recorded_status_rows_and_what_each_state_means():
    sched = scheduler_of()
    rows = sched.parse_status(RECORDED_QSTAT)
    assert list(rows) == ["1", "2", "3", "4", "5_1", "5_2", "8", "9", "10"]
    assert rows["3"] == NativeRow("3", "W", "walltime", None, 9)
    meanings = {native: sched.meaning(row) for native, row in rows.items()}
    assert meanings == {
        "1": (JobStatus.COMPLETED, ""),
        "2": (JobStatus.FAILED, "exit status 3 (fakeq state F)"),
        "3": (JobStatus.TIMED_OUT, "ran past its walltime (fakeq state W, walltime)"),
        "4": (JobStatus.CANCELLED, "cancelled in fakeq (fakeq state D, deleted)"),
        "5_1": (JobStatus.COMPLETED, ""), "5_2": (JobStatus.COMPLETED, ""),
        "8": (JobStatus.RUNNING, ""), "9": (JobStatus.SUBMITTED, ""),
        "10": (JobStatus.SUBMITTED, "")}
    assert [sched.is_pending(rows[n]) for n in ("8", "9", "10")] == [False, True, True]
    assert [sched.is_held(rows[n]) for n in ("8", "9", "10")] == [False, False, True]


def test_a_regex_reads_rows_and_a_reason_maps_to_never_starting():
    sched = scheduler_of(table(
        status_columns=None, status_skip=None,
        status_regex="'^(?P<id>\\d+(?:_\\d+)?)\\|(?P<state>\\w+)\\|(?P<reason>[^|]*)$'",
        never_starts='{ DependencyNeverSatisfied = "dependency", BadConstraints = '
                     '"impossible" }'))
    rows = sched.parse_status("7|Q|DependencyNeverSatisfied\n8_2|Q|BadConstraints\n9|Q|\n")
    assert sched.never_starts(rows["7"]).words == "a job it depends on failed"
    assert sched.never_starts(rows["8_2"]).words == "fakeq says BadConstraints"
    assert sched.never_starts(rows["9"]) is None


def test_a_state_word_the_table_lacks_means_nothing_and_output_without_rows_is_an_error():
    sched = scheduler_of()
    assert sched.meaning(NativeRow("8", "S")) is None  # the base logs it and polls on
    assert sched.parse_status("ID STATE EXIT SIGNAL REASON\n") == {}  # no jobs
    with pytest.raises(ValueError) as raised:
        sched.parse_status("ID STATE EXIT SIGNAL REASON\nUnauthorized\n")
    assert str(raised.value) == "qstat printed no row corral can read: 'Unauthorized'"


@pytest.mark.parametrize(("skip", "output", "message"), [
    ("50", "ID STATE EXIT SIGNAL REASON\n1 R - - -\n",
     "qstat printed '1 R - - -', which reads as a job, but status_skip = 50 skips it as a "
     "header line"),
    ("2", "ID STATE EXIT SIGNAL REASON\n8 R - - -\n9 Q - - -\n",
     "qstat printed '8 R - - -', which reads as a job, but status_skip = 2 skips it as a "
     "header line"),
    ("3", "ID STATE EXIT SIGNAL REASON\n",
     "qstat printed 1 line(s) and no row, fewer than the 3 header lines of status_skip: "
     "'ID STATE EXIT SIGNAL REASON'"),
], ids=["skips-every-line", "skips-a-job", "fewer-lines-than-the-header"])
def test_a_status_skip_that_hides_jobs_is_an_unreadable_answer_not_no_jobs(skip, output,
                                                                          message):
    sched = scheduler_of(table(status_skip=skip))
    with pytest.raises(ValueError) as raised:
        sched.parse_status(output)
    assert str(raised.value) == message
    header_only = scheduler_of(table(status_skip="2"))  # a header and a rule: no jobs
    assert header_only.parse_status("ID STATE EXIT SIGNAL REASON\n-- ----- ----\n") == {}
    assert header_only.parse_status("") == {}


def test_a_job_hidden_by_status_skip_fails_with_the_output_quoted_and_is_cancelled(
        config_dir, cluster):
    (config_dir / "corral.toml").write_text(table(status_skip="50"))
    with on_fakeq(config_dir) as sched:
        job = sched.shell("sleep 60")
        with pytest.raises(corral.JobFailed):
            job.result(timeout=60)
    assert job.reason.startswith("qstat printed what corral cannot read 5 times in a row, so "
                                 "the job could not be followed (its batch job is cancelled): "
                                 "'ID STATE EXIT SIGNAL REASON\\n1 R - - -'"), job.reason
    assert cluster.qstat(job.native_id)[job.native_id]["reason"] == "deleted"


def test_a_number_corral_cannot_read_is_no_value_said_once_and_the_rows_are_read(caplog):
    caplog.set_level(logging.WARNING, logger="corral")
    rows = scheduler_of().parse_status(
        "ID STATE EXIT SIGNAL REASON\n1 F --1 - -\n2 F \u00b9 - -\n3 F " + "9" * 5000
        + " - -\n4 F 0 99999999999 -\n5 F -2 15 -\n6 R - - -\n")
    assert [(row.exit_status, row.signal) for row in rows.values()] == [
        (None, None), (None, None), (None, None), (0, None), (-2, 15), (None, None)]
    assert [record.getMessage() for record in caplog.records] == [
        "qstat printed '--1' as exit_status, not a number corral reads (-?[0-9]{1,9}): read "
        "as no value (said once)",
        "qstat printed '99999999999' as signal, not a number corral reads (-?[0-9]{1,9}): "
        "read as no value (said once)"]


def test_a_running_state_the_table_does_not_know_is_logged_and_the_job_still_ends(
        config_dir, cluster, caplog):
    caplog.set_level(logging.WARNING, logger="corral")
    (config_dir / "corral.toml").write_text(
        table(states='{ Q = "pending", H = "held", F = "ended" }'))
    with on_fakeq(config_dir) as sched:
        release = config_dir / "release"
        job = sched.submit(_wait_for, os.fspath(release))
        from support.waiting import wait_until

        wait_until(lambda: "in a state corral does not know: 'R'" in caplog.text, timeout=30,
                   message="the unknown state to be logged")
        seen = len(cluster.calls("qstat"))
        wait_until(lambda: len(cluster.calls("qstat")) >= seen + 3, timeout=30,
                   message="three more status queries")
        release.touch()
        assert job.result(timeout=60) == "released"
    # Said once, not at every poll (a sysadmin's review: the log filled with it).
    assert caplog.text.count("in a state corral does not know") == 1, caplog.text


def _wait_for(path: str) -> str:
    from jobs import wait_for_file

    wait_for_file(path)
    return "released"


# -- arrays, dependencies and holds, or none --------------------------------------------------


@pytest.mark.parametrize(("arrays", "submits"), [(True, [["-t", "1-3"]]),
                                                  (False, [[], [], []])])
def test_jobs_dispatched_together_are_one_array_or_one_submission_each(
        config_dir, cluster, arrays, submits):
    text = TABLE if arrays else table(array="false").split("[schedulers.fakeq.array]")[0]
    (config_dir / "corral.toml").write_text(text)
    with on_fakeq(config_dir) as sched:
        jobs = [sched.submit(abs, -n) for n in (1, 2, 3)]
        assert [job.result(timeout=60) for job in jobs] == [1, 2, 3]
    assert [args[args.index("-t"):args.index("-t") + 2] if "-t" in args else []
            for _, _, args in cluster.calls("qsub")] == submits
    assert backend_info("fakeq").option_help["bundle"] == (
        "one array task runs them in turn" if arrays else "one batch job runs them in turn")


def test_a_submit_that_hangs_is_not_submitted_again_and_its_children_are_ended(
        config_dir, cluster, monkeypatch):
    """Attack review: a submit wrapper that submitted and then hung was timed
    out, read as "scheduler unreachable" and run again every minute: the call
    ran twice, and the wrapper's children were left."""
    from corral.backends.batch import invoke

    monkeypatch.setattr(invoke, "COMMAND_TIMEOUT_S", 2.0)
    hang = f"1234.{os.getpid()}"  # (this test's own: no other's left-overs are counted)
    (config_dir / "corral.toml").write_text(table(
        submit=f"""["sh", "-c", 'qsub "$@"; sleep {hang}', "wrapper", "-o", "{{output}}"]"""))
    with on_fakeq(config_dir) as sched:
        job = sched.submit(abs, -3)
        with pytest.raises(corral.JobFailed) as failed:
            job.result(timeout=60)
    assert str(failed.value).startswith(
        "job 1 'abs' failed: sh could not run: it did not answer within 2 s; it may have "
        "submitted the job all the same, which corral cannot follow: look for it in fakeq "
        "(its script: ")
    assert len(cluster.calls("qsub")) == 1
    assert not [process for process in psutil.process_iter(["cmdline"])
                if process.info["cmdline"] == ["sleep", hang]]


def test_a_node_whose_clock_is_an_hour_behind_does_not_time_out_its_job(config_dir, cluster,
                                                                         tmp_path):
    """Attack review: the job's start as the node's clock wrote it was read
    with the driver's: a 10-minute timeout fired after 0.7 s."""
    skewed = tmp_path / "skewed"
    skewed.mkdir()
    (skewed / "sitecustomize.py").write_text(
        "import time\n_real = time.time\ntime.time = lambda: _real() - 3600\n")
    (config_dir / "corral.toml").write_text(TABLE)
    with on_fakeq(config_dir) as sched:
        job = sched.options(timeout="10m", setup=[f"export PYTHONPATH={skewed}"]).shell(
            "sleep 1.5; echo done")
        assert job.result(timeout=60) is None and job.stdout == "done\n"
    assert job.record.started <= job.record.ended < job.record.started + 60


def test_without_a_dependency_syntax_a_child_waits_in_corral(config_dir, cluster):
    (config_dir / "corral.toml").write_text(table(dependency=None))
    with on_fakeq(config_dir) as sched:
        parent = sched.submit(abs, -2)
        child = sched.options(after=[parent]).submit(abs, -5)
        assert (parent.result(timeout=60), child.result(timeout=60)) == (2, 5)
    assert not any("-W" in call[2] for call in cluster.calls("qsub"))
    assert backend_info("fakeq").option_help["after"] == \
        "the child waits in corral, then goes out"


def test_a_chained_job_the_scheduler_refuses_waits_in_corral_and_says_why(config_dir, cluster,
                                                                          caplog):
    """Cold review: a table's dependency flag the scheduler did not take refused
    every chained job, and only corral.log said so, at INFO: the DAG lost its
    chaining in the scheduler without a word."""
    (config_dir / "corral.toml").write_text(table(dependency='["--wait-for", "{ids}"]'))
    with caplog.at_level(logging.WARNING, logger="corral"), on_fakeq(config_dir) as sched:
        parent = sched.submit(abs, -2)
        child = sched.options(after=[parent]).submit(abs, -5)
        assert (parent.result(timeout=60), child.result(timeout=60)) == (2, 5)
    said = [record.getMessage() for record in caplog.records
            if record.levelno == logging.WARNING and "wait for their parents here" in
            record.getMessage()]
    assert len(said) == 1 and "unknown argument '--wait-for'" in said[0], caplog.text


def test_without_hold_commands_pause_cannot_act_with_no_driver(config_dir):
    (config_dir / "corral.toml").write_text(table(hold=None, release=None))
    load_config()
    info = backend_info("fakeq")
    assert not info.capabilities.holds
    with pytest.raises(BackendError) as raised:
        info.control_without_driver("pause", ["7"])
    assert str(raised.value) == ("[schedulers.fakeq] has no hold and release commands: pause "
                                 "cannot act on its jobs without a driver")


def test_with_no_driver_cancel_reaches_the_scheduler_through_the_table(config_dir, cluster):
    (config_dir / "corral.toml").write_text(TABLE)
    load_config()
    script = config_dir / "slow.sh"
    script.write_text("#!/bin/bash\nsleep 60\n")
    job_id = cluster.run("qsub", os.fspath(script)).stdout.strip()
    backend_info("fakeq").control_without_driver("pause", [job_id])  # running: not pending
    backend_info("fakeq").control_without_driver("cancel", [job_id])
    assert cluster.qstat(job_id)[job_id]["reason"] == "deleted"


def test_the_architecture_rule_holds_for_a_described_backend(config_dir):
    (config_dir / "corral.toml").write_text(TABLE)
    load_config()
    info = backend_info("fakeq")
    backend_class = info.backend_class()
    assert backend_class.name == "fakeq"
    assert backend_class.enforces_walltime is info.capabilities.enforces_walltime
    assert callable(backend_class.hold) is info.capabilities.holds


@pytest.mark.parametrize(("text", "options", "message"), [
    (table(array="false").split("[schedulers.fakeq.array]")[0], {"max_array_size": 10},
     "max_array_size=10: [schedulers.fakeq] has no arrays (array = false), so each job is one "
     "submission"),
    (TABLE.replace('throttle = "%{limit}"\n', ""), {"array_throttle": 2},
     "array_throttle=2: [schedulers.fakeq] says no way to throttle an array (add throttle to "
     "its array table, e.g. throttle = \"%{limit}\")"),
])
def test_array_options_the_table_cannot_send_are_refused(config_dir, text, options, message):
    (config_dir / "corral.toml").write_text(text)
    with pytest.raises(ValueError) as raised:
        on_fakeq(config_dir, backend_options=options)
    assert str(raised.value) == message


@pytest.mark.parametrize(("directive", "options", "asked"), [
    ('cores = ["-l", "ncpus={cores}"]\n', {"cores": 4}, "4 cores"),  # (re-attack review)
    ('gpus = ["-l", "ngpus={gpus}"]\n', {"gpus": 2}, "2 GPUs"),
    ('memory = ["-l", "mem={memory}"]\n', {"memory": "2G"}, "2048 MB of memory"),
])
def test_a_resource_the_table_has_no_directive_for_is_refused_when_the_job_is_made(
        config_dir, directive, options, asked):
    """Attack review: gpus=2 ran with no GPUs asked for, dropped without a word."""
    (config_dir / "corral.toml").write_text(TABLE.replace(directive, ""))
    resource = directive.split(" ", 1)[0]
    with on_fakeq(config_dir) as scheduler, pytest.raises(corral.ResourceError, match=(
            rf"^job 'true' asks for {asked}, but \[schedulers\.fakeq\] has no {resource} "
            rf"directive to ask fakeq for it; add one to \[schedulers\.fakeq\.directives\], "
            rf"or leave {resource} out$")):
        scheduler.shell("true", **options)


def test_the_local_files_table_replaces_the_users_whole(config_dir, monkeypatch):
    user = config_dir / "user.toml"
    user.write_text(table(title='"from the user file"'))
    monkeypatch.setenv("CORRAL_CONFIG", os.fspath(user))
    (config_dir / "corral.toml").write_text(table(title='"from the project"', hold=None,
                                                  release=None) + '[daemon]\nbackend = "fakeq"\n')
    config = load_config()
    assert backend_info("fakeq").title == "from the project"
    assert not config.schedulers["fakeq"].capabilities.holds


def test_a_scheduler_given_a_config_registers_its_schedulers_again(config_dir, cluster):
    (config_dir / "corral.toml").write_text(TABLE)
    config = load_config()
    unregister_backend("fakeq")
    with on_fakeq(config_dir, config=config) as sched:
        assert sched.submit(abs, -4).result(timeout=60) == 4


def test_corral_backends_shows_a_described_scheduler_and_a_bad_table_is_one_error_line(
        config_dir, cluster):
    from support.cli import CORRAL

    (config_dir / "corral.toml").write_text(TABLE)
    shown = subprocess.run([CORRAL, "backends", "fakeq"], capture_output=True, text=True,
                           timeout=60, cwd=config_dir)
    assert shown.returncode == 0, shown.stderr
    assert "answers: qstat -u" in shown.stdout
    assert "-l ncpus=N in the script header (#PBS)" in shown.stdout
    (config_dir / "corral.toml").write_text(table(states='{ Q = "queued" }'))
    refused = subprocess.run([CORRAL, "options", "--backend", "fakeq"], capture_output=True,
                             text=True, timeout=60, cwd=config_dir)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (f"corral: error: {config_dir / 'corral.toml'}:9: "
                              "schedulers.fakeq.states.Q: 'queued' is not one of 'pending', "
                              "'held', 'running', 'completed', 'failed', 'cancelled', "
                              "'timed_out', 'ended'\n")


def test_a_daemon_that_cannot_see_the_table_of_its_backend_says_where_to_put_it(
        config_dir, cluster, tmp_path):
    """A sysadmin's review: with ``[daemon] backend = "fakeq"`` in the user
    file and the table in the submitting directory's corral.toml, which the
    daemon (in the run directory) does not read, ``corral submit`` printed the
    daemon's traceback."""
    from support.cli import CORRAL, assert_one_line_error, Outcome

    (config_dir / "corral.toml").write_text(TABLE)
    user = tmp_path / "user.toml"
    user.write_text('[daemon]\nbackend = "fakeq"\n')
    run = tmp_path / "run"
    done = subprocess.run([CORRAL, "--run", os.fspath(run), "submit", "true"],
                          capture_output=True, text=True, timeout=60, cwd=config_dir,
                          env={**os.environ, "CORRAL_CONFIG": os.fspath(user)})
    assert_one_line_error(
        Outcome(("submit",), done.returncode, done.stdout, done.stderr), 3,
        rf"^corral: error: the corral daemon for {re.escape(str(run))} could not start: "
        rf"{re.escape(str(user))}:2: daemon\.backend: backend='fakeq' must be one of 'local', "
        rf".*; \[schedulers\.fakeq\] is in {re.escape(str(config_dir / 'corral.toml'))}, which "
        rf"the daemon does not read: put it in the run directory's "
        rf"{re.escape(str(run / 'corral.toml'))} or in your user config {re.escape(str(user))}$")


def _on_the_sites_scheduler(tmp_path: Path, site: Path, cwd: Path, **env: str
                            ) -> tuple[Path, Callable[..., subprocess.CompletedProcess]]:
    """A run in *tmp_path* whose daemon takes the fake scheduler from the site's
    file *site* (written here), and a ``corral --run RUN ...`` that runs in *cwd*
    with *env* added."""
    from support.cli import CORRAL

    site.write_text(TABLE + '\n[daemon]\nbackend = "fakeq"\n')
    run = tmp_path / "run"
    environment = {**os.environ, "CORRAL_SITE_CONFIG": os.fspath(site), **env}

    def corral_command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CORRAL, "--run", os.fspath(run), *args], capture_output=True,
                              text=True, timeout=60, cwd=cwd, env=environment)

    return run, corral_command


def test_a_scheduler_described_in_the_site_file_serves_every_directory_and_the_daemon(
        config_dir, cluster, tmp_path):
    """The site's file (``$CORRAL_SITE_CONFIG``, else /etc/corral/corral.toml)
    describes the scheduler once for every user and directory; a daemon reads
    it too (a sysadmin's review: each user had to copy the table)."""
    site = tmp_path / "etc" / "corral.toml"
    site.parent.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _, corral_command = _on_the_sites_scheduler(tmp_path, site, elsewhere,
                                                CORRAL_DAEMON_IDLE="30")

    try:
        job_id = corral_command("submit", "echo", "on", "the", "site's", "scheduler")
        assert job_id.returncode == 0, job_id
        waited = corral_command("wait", job_id.stdout.strip())
        assert waited.returncode == 0, waited
        assert cluster.calls("qsub"), "the job went through fakeq's qsub"
        logs = corral_command("logs", job_id.stdout.strip())
        assert logs.stdout == "on the site's scheduler\n", logs
    finally:
        corral_command("stop")


def test_corral_submit_of_a_placement_option_the_scheduler_cannot_send_says_so_each_time(
        config_dir, cluster, tmp_path):
    """Re-attack review: the warning went to the daemon's log only, and the
    person who typed --qos saw nothing."""
    site = tmp_path / "etc" / "corral.toml"
    site.parent.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _, corral_command = _on_the_sites_scheduler(tmp_path, site, elsewhere,
                                                CORRAL_DAEMON_IDLE="30")
    said = ("corral: note: qos='fast' is not sent: corral cannot ask fakeq for it, and the "
            "job runs without it (to send it, add a line for qos to [schedulers.fakeq.directives] "
            "in the config)\n")
    try:
        for _ in range(2):  # each time: each submit is its own person's act
            submitted = corral_command("submit", "--qos", "fast", "true")
            assert submitted.returncode == 0 and submitted.stderr == said, submitted
        plain = corral_command("submit", "--memory", "1G", "true")  # (it has a directive)
        assert plain.returncode == 0 and plain.stderr == "", plain
    finally:
        corral_command("stop")


def test_a_command_that_cannot_see_the_runs_scheduler_starts_no_daemon_for_it(
        config_dir, cluster, tmp_path):
    """Re-attack: where the site's table was not read, ``corral cancel`` of a
    job a killed daemon left on it started a daemon on the local backend and
    said "cancelled", while the job ran on in the cluster."""
    from support.cli import CORRAL, kill_and_wait, owner_pid

    site = tmp_path / "etc" / "corral.toml"
    site.parent.mkdir()
    site.write_text(TABLE + '\n[daemon]\nbackend = "fakeq"\n')
    run = tmp_path / "run"
    env = {**os.environ, "CORRAL_SITE_CONFIG": os.fspath(site), "CORRAL_DAEMON_IDLE": "30"}

    def corral_command(*args: str, **changes: str) -> subprocess.CompletedProcess:
        return subprocess.run([CORRAL, "--run", os.fspath(run), *args], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path, env={**env, **changes})

    job = corral_command("submit", "sleep", "60").stdout.strip()
    from support.waiting import wait_until

    wait_until(lambda: "RUNNING" in corral_command("status").stdout, message="it to run")
    kill_and_wait(owner_pid(run))
    blind = corral_command("cancel", job, CORRAL_SITE_CONFIG="")
    assert blind.returncode == 3, blind
    assert blind.stderr.startswith("corral: error: cannot cancel: 1 unfinished job(s) of the run "
                                   f"at {run} went to 'fakeq', which is not a backend here"), blind
    assert owner_pid(run) is None and cluster.calls("qdel") == []
    assert "RUNNING" in corral_command("status").stdout  # nothing was recorded over it


_DYING_DRIVER = """
import os, signal, sys, time, corral
with corral.Scheduler(backend="fakeq", journal=sys.argv[1],
                      backend_options={"poll_interval": 0.05}) as sched:
    job = sched.shell("sleep 60")
    # Killed once its journal says RUNNING (its writer may lag the job by a
    # moment: CI found it killed with SUBMITTED still written).
    deadline = time.monotonic() + 30
    while not corral.Run(sys.argv[1]).jobs("RUNNING", results=False):
        assert time.monotonic() < deadline and not job.done(), job
        time.sleep(0.01)
    print(job.native_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_command_line_shows_and_cancels_a_described_runs_jobs_with_no_driver(
        config_dir, cluster):
    from support.cli import CORRAL

    (config_dir / "corral.toml").write_text(TABLE)
    run = config_dir / "journal"
    died = subprocess.run([sys.executable, "-c", _DYING_DRIVER, os.fspath(run)],
                          capture_output=True, text=True, timeout=60, cwd=config_dir)
    assert died.returncode == -signal.SIGKILL, died.stderr
    native = died.stdout.strip()

    def corral_command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CORRAL, "--run", os.fspath(run), *args], capture_output=True,
                              text=True, timeout=60, cwd=config_dir,
                              env={**os.environ, "COLUMNS": "200"})

    listing = corral_command("status")
    assert listing.returncode == 0, listing.stderr
    assert "FAKEQ ID" in listing.stdout and native in listing.stdout.split()
    assert "as last seen (no driver)" in listing.stdout  # not what fakeq says now
    # From a directory that does not see the table, the job keeps its cluster id
    # (a sysadmin's review: the column was dropped).
    elsewhere = subprocess.run([CORRAL, "--run", os.fspath(run), "status"], capture_output=True,
                               text=True, timeout=60, cwd=config_dir.parent,
                               env={**os.environ, "COLUMNS": "200"})
    assert "FAKEQ ID" in elsewhere.stdout and native in elsewhere.stdout.split(), elsewhere
    assert "may still run on 'fakeq' (unknown here)" in elsewhere.stdout
    cancelled = corral_command("cancel", "1")
    assert (cancelled.returncode, cancelled.stdout.strip()) == (0, "cancelled 1 'sleep'"), \
        cancelled
    assert "no driver runs: cancel sent to fakeq" in cancelled.stderr
    assert cluster.qstat(native)[native]["reason"] == "deleted"
    # Cold review: status went on saying "as last seen", with no sign of the
    # cancel, and a pause then held the jobs the cancel had deleted.
    listing = corral_command("status")
    assert re.search(r"RUNNING .* cancel sent to fakeq at \d\d:\d\d:\d\d \(no driver\)",
                     listing.stdout), listing.stdout
    paused = corral_command("pause")
    assert (paused.returncode, paused.stderr) == (
        0, "no driver runs: nothing left to pause: a cancel went to each of its cluster jobs "
           "(1)\n"), paused


@pytest.mark.parametrize("after_the_kill", ["cancel", "pause, then stop"])
def test_a_job_a_killed_daemon_left_in_the_cluster_is_followed_and_deleted(
        config_dir, cluster, tmp_path, after_the_kill):
    """Helper review: after the daemon of a `corral submit` run was killed, a
    `corral cancel` started a daemon held for it, which kept the job QUEUED, not
    followed in the cluster: the cancel said "cancelled", and no qdel went out
    (the job ran on). A `corral pause` showed it "QUEUED ... paused" while it
    ran, and a `corral stop` then cancelled it the same way."""
    from support.cli import kill_and_wait, owner_pid
    from support.waiting import wait_until

    run, corral_command = _on_the_sites_scheduler(tmp_path, tmp_path / "site.toml", config_dir,
                                                  COLUMNS="200")

    try:
        job = corral_command("submit", "sleep", "60").stdout.strip()
        wait_until(lambda: "RUNNING" in corral_command("status").stdout, message="it to run")
        native = next(iter(cluster.qstat()))
        kill_and_wait(owner_pid(run))
        if after_the_kill == "cancel":
            ended = corral_command("cancel", job)
            assert (ended.returncode, ended.stdout) == (0, f"cancelled {job} 'sleep'\n"), ended
        else:
            assert corral_command("pause").returncode == 0
            listing = corral_command("status", "--all").stdout
            assert "QUEUED" not in listing and native in listing.split(), listing
            ended = corral_command("stop")
            assert ended.returncode == 0, ended
        wait_until(lambda: cluster.qstat(native)[native]["reason"] == "deleted",
                   message="the job deleted in the cluster")
        assert [call[2][-1] for call in cluster.calls("qdel")] == [native]
        row = corral_command("status", "--all").stdout
        assert re.search(rf"^{job}\s+sleep\s+CANCELLED\b", row, re.MULTILINE), row
    finally:
        corral_command("stop")


def test_a_daemon_started_paused_holds_the_pending_jobs_a_killed_daemon_left_in_the_cluster(
        config_dir, cluster, tmp_path):
    """A `corral pause` after the run's daemon was killed started a paused
    daemon, which followed the jobs left in the cluster but held none: one
    still pending there started while the run said it was paused. It is held
    now, as a pause holds what the cluster has not started, and released by
    `corral resume`."""
    from support.cli import kill_and_wait, owner_pid
    from support.waiting import wait_until

    run, corral_command = _on_the_sites_scheduler(tmp_path, tmp_path / "site.toml", config_dir,
                                                  COLUMNS="200", FAKEBATCH_SLOTS="1")
    try:
        corral_command("submit", "sleep", "60")
        corral_command("submit", "sleep", "61")
        wait_until(lambda: len(cluster.qstat()) == 2, message="both in the cluster")
        states = {native: task["state"] for native, task in cluster.qstat().items()}
        assert sorted(states.values()) == ["Q", "R"], states  # one slot: the second waits
        pending = next(native for native, state in states.items() if state == "Q")
        wait_until(lambda: "RUNNING" in corral_command("status").stdout,
                   message="the run to see the first one run")
        kill_and_wait(owner_pid(run))
        assert corral_command("pause").returncode == 0
        wait_until(lambda: cluster.qstat(pending)[pending]["state"] == "H",
                   message="the pending job held in the cluster")
        assert [call[2][-1] for call in cluster.calls("qhold")] == [pending]
        assert corral_command("resume").returncode == 0
        wait_until(lambda: cluster.qstat(pending)[pending]["state"] == "Q",
                   message="the pending job released")
    finally:
        corral_command("stop")


_DYING_DRIVER_OF_A_CHAIN = """
import os, signal, sys, time, corral
with corral.Scheduler(backend="fakeq", journal=sys.argv[1],
                      backend_options={"poll_interval": 0.05}) as sched:
    first = sched.options(name="first").shell("true")
    second = sched.options(name="second", after=[first]).shell("sleep 60")
    third = sched.options(name="third", after=[second]).shell("sleep 60")
    while second.status is not corral.JobStatus.RUNNING or third.native_id is None:
        time.sleep(0.01)
    # Killed only once the journal says so too (it lags the driver by milliseconds).
    while [job.status for job in corral.Run(sys.argv[1]).jobs()][:2] != [
            corral.JobStatus.COMPLETED, corral.JobStatus.RUNNING]:
        time.sleep(0.01)
    print(second.native_id, third.native_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_with_no_driver_a_cancel_takes_the_jobs_that_depend_on_it_not_a_finished_jobs(
        config_dir, cluster):
    """Its dependents go with a cancelled job (a scheduler may start them once it is
    deleted); a finished job is not cancelled, nor are its dependents (BUG, attack
    review: `cancel` of a finished job killed the job running after it)."""
    from support.cli import CORRAL

    (config_dir / "corral.toml").write_text(TABLE)
    run = config_dir / "journal"
    died = subprocess.run([sys.executable, "-c", _DYING_DRIVER_OF_A_CHAIN, os.fspath(run)],
                          capture_output=True, text=True, timeout=60, cwd=config_dir)
    assert died.returncode == -signal.SIGKILL, died.stderr
    second, third = died.stdout.split()

    def corral_command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CORRAL, "--run", os.fspath(run), *args], capture_output=True,
                              text=True, timeout=60, cwd=config_dir)

    finished = corral_command("cancel", "first", "1")
    assert (finished.returncode, finished.stdout, finished.stderr) == (
        2, "", "corral: error: job 1 already ended COMPLETED\n")
    unknown = corral_command("cancel", "99")  # (BUG: "no process drives the run")
    assert (unknown.returncode, unknown.stderr) == (
        2, "corral: error: no job 99 in this run (neither an id nor a job's name)\n")
    assert cluster.qstat(second, third)[second]["reason"] != "deleted"
    cancelled = corral_command("cancel", "2")
    assert (cancelled.returncode, cancelled.stdout) == (
        0, "cancelled 2 'second'\ncancelled 3 'third'\n"), \
        cancelled.stderr
    assert [cluster.qstat(native)[native]["reason"] for native in (second, third)] == [
        "deleted", "deleted"]


def test_with_no_driver_a_run_on_a_table_not_read_here_says_so_and_a_broken_table_why(
        config_dir, cluster, tmp_path):
    from support.cli import CORRAL

    (config_dir / "corral.toml").write_text(TABLE)
    run = config_dir / "journal"
    died = subprocess.run([sys.executable, "-c", _DYING_DRIVER, os.fspath(run)],
                          capture_output=True, text=True, timeout=60, cwd=config_dir)
    assert died.returncode == -signal.SIGKILL, died.stderr
    native = died.stdout.strip()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = subprocess.run([CORRAL, "--run", os.fspath(run), "cancel", "1"],
                             capture_output=True, text=True, timeout=60, cwd=elsewhere)
    assert refused.returncode == 3, refused
    assert refused.stderr == (
        "corral: error: no driver runs, and job(s) 1 went to the backend 'fakeq', unknown "
        "here: corral cannot reach them. A scheduler described in a corral.toml is known "
        "where that file is read (the user's file, or corral.toml in the current directory); "
        "a site's backend, where its package is installed\n")
    (config_dir / "corral.toml").write_text(TABLE.replace('forget_after = "3s"',
                                                          'forget_after = "3 parsecs"'))
    broken = subprocess.run([CORRAL, "--run", os.fspath(run), "cancel", "1"],
                            capture_output=True, text=True, timeout=60, cwd=config_dir)
    assert broken.returncode == 2, broken
    assert broken.stderr.startswith(f"corral: error: {config_dir / 'corral.toml'}:")
    assert "schedulers.fakeq.forget_after" in broken.stderr
    assert cluster.qstat(native)[native]["state"] == "R"  # nothing reached it
    cluster.run("qdel", native)


def test_a_job_whose_status_command_is_missing_is_not_submitted(config_dir, cluster):
    """Submitted, it would run where corral could never follow it (and nothing would
    end the run): refused at once, saying why."""
    (config_dir / "corral.toml").write_text(TABLE.replace('status = ["qstat",',
                                                          'status = ["qstat-nowhere",'))
    with on_fakeq(config_dir) as sched:
        job = sched.submit(abs, -2)
        with pytest.raises(corral.JobFailed):
            job.result(timeout=60)
    assert job.reason == ("not submitted: qstat-nowhere, the status command, is not on "
                          "PATH, so corral could never follow it")
    assert cluster.calls("qsub") == []
