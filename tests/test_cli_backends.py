"""``corral backends``: what answers here and why, and what each backend takes;
``corral options --backend``. Run as a user would: the real ``corral`` command,
with PATH holding only the scheduler commands a test gives it."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from support.cli import Corral, assert_one_line_error
from support.processes import pids_alive
from support.waiting import wait_until

from corral.backends import backend_info, backend_names


def blocks(shown: str) -> dict[str, dict[str, str]]:
    """``corral backends``' output as ``{backend: {fact: value}}``; the closing
    line under the key ``""``."""
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in shown.splitlines():
        if line.startswith('backend="auto"'):
            found[""] = {"auto": line}
        elif line and not line[0].isspace():
            current = found[line.split()[0]] = {"title": line}
        elif line.strip():
            fact, *value = re.split(r" {2,}", line.strip(), maxsplit=1)  # (columns: 2 spaces)
            current[fact] = value[0] if value else ""
    return found


def commands(directory: Path, scripts: dict[str, str]) -> str:
    """A PATH of only *scripts* (name: shell body): no scheduler installed here
    answers through it."""
    directory.mkdir()
    for name, body in scripts.items():
        path = directory / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return os.fspath(directory)


def test_backends_says_for_each_backend_whether_it_answers_here_and_why(tmp_path):
    shown = Corral(tmp_path, tmp_path / "run", env={"PATH": commands(tmp_path / "bin", {})})
    listed = blocks(shown.ok("backends").out)
    assert set(listed) == {*backend_names(), ""}
    assert listed["local"]["here"].startswith("answers: always")
    assert listed["slurm"]["here"] == "not here: sbatch is not on PATH"
    # Dask answers wherever distributed is installed, but "auto" never starts a
    # LocalCluster of its own: it is chosen by its name.
    assert re.fullmatch(r"answers: distributed [\d.]+ is installed; chosen by its name only, "
                        r"never by 'auto'", listed["dask"]["here"])
    assert listed[""]["auto"].startswith('backend="auto" chooses local here.')


def test_backends_names_the_scheduler_that_answers_and_auto_chooses_it(tmp_path):
    path = commands(tmp_path / "bin", {"sbatch": "exit 0", "squeue": "exit 0"})
    listed = blocks(Corral(tmp_path, tmp_path / "run", env={"PATH": path}).ok("backends").out)
    assert listed["slurm"]["here"] == "answers: squeue --me answered"
    assert listed[""]["auto"].startswith('backend="auto" chooses slurm here.')


def test_backends_and_options_of_auto_show_the_backend_it_chooses_here(tmp_path):
    """Cold review: both said "unknown backend 'auto'", though an unknown name's
    error lists auto among the known ones, and Scheduler(backend="auto") works."""
    path = commands(tmp_path / "bin", {"sbatch": "exit 0", "squeue": "exit 0"})
    corral = Corral(tmp_path, tmp_path / "run", env={"PATH": path})
    listed = blocks(corral.ok("backends", "auto").out)
    assert set(listed) == {"slurm", ""}
    assert listed[""]["auto"].startswith('backend="auto" chooses slurm here.')
    facts = [line.split()[0] for line in corral.ok("options", "--backend", "auto").out.splitlines()
             if line.startswith("    ")]
    assert "slurm" in facts and "local" not in facts


def test_a_scheduler_whose_status_command_fails_is_not_here_with_its_message(tmp_path):
    path = commands(tmp_path / "bin", {"sbatch": "exit 0",
                                       "squeue": "echo 'squeue: error: Invalid user' >&2; exit 1"})
    listed = blocks(Corral(tmp_path, tmp_path / "run", env={"PATH": path}).ok("backends").out)
    assert listed["slurm"]["here"] == "not here: squeue --me failed: squeue: error: Invalid user"


def test_backends_shows_the_options_a_backend_takes_in_its_own_words(tmp_path):
    shown = Corral(tmp_path, tmp_path / "run").ok("backends", "slurm").out
    listed = blocks(shown)
    assert list(listed) == ["slurm", ""]
    slurm = listed["slurm"]
    for option, meaning in backend_info("slurm").backend_options.items():
        assert slurm[option] == meaning
    assert slurm["cores"] == "--cpus-per-task=N"
    assert slurm["walltime"] == "--time=<minutes, rounded up>"
    assert "queue" not in slurm  # corral applies it, on every backend alike
    assert slurm["applied by corral"] == "queue, tokens, notify_on"


def test_backends_names_the_options_corral_applies_itself_so_none_looks_missing(tmp_path):
    """BUG (cold review): `corral backends local` left out after, priority, retries,
    queue and tokens, which work there: corral applies them itself."""
    local = blocks(Corral(tmp_path, tmp_path / "run").ok("backends", "local").out)["local"]
    assert local["applied by corral"] == "queue, tokens, notify_on, after, priority, retries"
    assert local["not used"] == "partition, account, qos, constraint, setup, extra_flags, bundle"


def test_backends_of_an_unknown_name_says_which_exist(tmp_path):
    outcome = Corral(tmp_path, tmp_path / "run")("backends", "slrum")
    assert_one_line_error(outcome, 2, r"unknown backend 'slrum'; did you mean 'slurm'\?")


def test_options_for_one_backend_shows_only_its_form_of_each_option(tmp_path):
    shown = Corral(tmp_path, tmp_path / "run").ok("options", "--backend", "slurm").out
    facts = [line.split()[0] for line in shown.splitlines() if line.startswith("    ")]
    assert "slurm" in facts and "local" not in facts
    assert "    slurm    --cpus-per-task=N" in shown.splitlines()


def test_options_named_are_the_only_ones_shown_and_a_typo_is_named(tmp_path):
    """Cold review: `corral options memory` was refused (an unexpected extra
    argument), where backends NAME and profiles NAME take a name."""
    cli = Corral(tmp_path, tmp_path / "run")
    shown = cli.ok("options", "memory", "walltime", "--backend", "slurm").out.splitlines()
    assert [line.split()[0] for line in shown if line and not line.startswith(" ")] == [
        "memory", "walltime"]
    assert "    slurm    --mem=<MB>M" in shown
    assert_one_line_error(cli("options", "memroy"), 2,
                          r"^corral: error: unknown job option 'memroy'; did you mean 'memory'\?$")
    # By the flag corral submit --help shows for it, too (cold review).
    assert cli.ok("options", "workdir").out.startswith("cwd  --workdir  directory the job runs in")
    assert cli.ok("options", "--workdir").out.startswith("cwd  --workdir  ")  # (attack review)


def test_options_shows_its_table_beside_a_misspelt_profile_and_says_what_is_wrong(tmp_path):
    """Options review: a typo in a profile made `corral options`, the table
    its author would open to find the right name, exit 2 with the config error."""
    cli = Corral(tmp_path, tmp_path / "run")
    cli.config.write_text('[profiles.short]\nmemroy = "2G"\n')
    shown = cli("options", "memory")
    assert shown.status == 0 and shown.out.startswith("memory  --memory  ")
    assert shown.err == (f"corral: warning: {cli.config}:2: profiles.short.memroy: unknown job "
                         "option 'memroy'; did you mean 'memory'? (fix it; the table leaves out "
                         "the schedulers described there)\n")


def test_options_of_profile_says_what_a_profile_is(tmp_path):
    assert_one_line_error(Corral(tmp_path, tmp_path / "run")("options", "profile"), 2,
                          r"^corral: error: profile names a set of job options in the config "
                          r"files, not an option of its own: corral profiles lists them, corral "
                          r"submit --profile NAME uses one$")


def test_options_for_an_unknown_backend_is_an_error_naming_it(tmp_path):
    outcome = Corral(tmp_path, tmp_path / "run")("options", "--backend", "nope")
    assert_one_line_error(outcome, 2, r"unknown backend 'nope' \(known: local, slurm")


def test_a_probe_that_hangs_is_given_up_and_leaves_no_process_behind(tmp_path):
    pids = tmp_path / "pids"
    path = commands(tmp_path / "bin", {
        "qsub": "exit 0",
        # A hung qstat with a child of its own, as a wrapper script stuck on its server.
        "qstat": f"/bin/sleep 300 & echo $! >> {pids}\necho $$ >> {pids}\nwait"})
    shown = Corral(tmp_path, tmp_path / "run", env={"PATH": path}).ok("backends", "sge").out
    assert blocks(shown)["sge"]["here"] == "not here: qstat -help did not answer within 5 s"
    started = [int(pid) for pid in pids.read_text().split()]  # PBS's probe asks qstat too
    assert started and len(started) % 2 == 0
    wait_until(lambda: not pids_alive(started), timeout=10,
               message=f"the hung probe's processes {started} to be gone")
