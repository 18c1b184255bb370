"""The README's promises: its set-up commands exist as documented, and its code runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from support.readme import example_blocks, run_example

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_opens_with_the_two_set_up_commands():
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert README.startswith("# corral\n\n```sh\n")
    assert len(first_block) == 2
    assert first_block[0].endswith("-m corral.demo")
    assert first_block[1].endswith("-m pytest -q")


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert "sed -n 2p" in script and "README.md" in script


def test_the_python_examples_in_the_readme_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 2
    running = {}  # all at once: each one mostly waits on its own jobs
    for number, block in enumerate(blocks):
        if 'backend="slurm"' in block or 'backend="dask"' in block:
            continue  # needs a cluster (a LocalCluster is one): see below and test_dask.py
        (tmp_path / f"example{number}").mkdir()
        example = tmp_path / f"example{number}" / "example.py"
        example.write_text(block)
        running[number] = subprocess.Popen(
            [sys.executable, str(example)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=example.parent)
    try:
        for number, example_process in running.items():
            out, err = example_process.communicate(timeout=120)
            assert example_process.returncode == 0, f"example {number}:\n{err}"
            if number == 0:  # the tour
                assert "22.5" in out
    finally:  # (one failed: the others must not run on, unwatched, for ever)
        for example_process in running.values():
            if example_process.poll() is None:
                example_process.terminate()  # (a driver ends its workers as it goes)
                try:
                    example_process.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    example_process.kill()
                    example_process.communicate()


def test_the_slurm_example_in_the_readme_runs_on_slurm(slurm, tmp_path):
    [block] = [block for block in example_blocks() if 'backend="slurm"' in block]
    done = run_example(block, tmp_path, "slurm_example", timeout=300)
    assert done.stdout.strip() == "9900"
    assert (tmp_path / "runs" / "sweep" / "journal.db").exists()


def test_the_scheduler_table_in_the_readme_is_one_corral_accepts_and_uses(tmp_path):
    """The README's ``[schedulers.ourq]`` example, written to a corral.toml, is
    listed by ``corral backends`` with what the table set."""
    [table] = re.findall(r"```toml\n(\[schedulers\..*?)```", README, re.S)
    (tmp_path / "corral.toml").write_text(table)
    (tmp_path / "empty-user-file.toml").write_text("")
    env = {**os.environ, "CORRAL_CONFIG": os.fspath(tmp_path / "empty-user-file.toml")}
    done = subprocess.run([os.fspath(Path(sys.executable).with_name("corral")), "backends",
                           "ourq"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert "holds pending jobs on pause" in done.stdout
    assert "-l ncpus=N" in done.stdout


def test_the_demo_runs_and_shows_what_went_right_and_wrong(tmp_path):
    # Its temporary directory (kept, for the user to look at) goes in tmp_path, not /tmp.
    done = subprocess.run([sys.executable, "-m", "corral.demo"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert f"files in {tmp_path}{os.sep}corral-demo-" in done.stdout
    assert "total words: 10000" in done.stdout
    assert "after 2 attempts" in done.stdout
    assert "TIMED_OUT" in done.stdout and "upstream job 13 'calibrate' failed" in done.stdout
    assert "corral --run" in done.stdout
    [kept] = tmp_path.glob("corral-demo-*")
    assert f"its files stay until you remove them:  rm -r {kept}" in done.stdout


def test_the_demo_resumes_from_its_journal(tmp_path):
    run = tmp_path / "demo" / "run"
    first = subprocess.run([sys.executable, "-m", "corral.demo", "--run", str(run)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    written = (tmp_path / "demo" / "text-0.txt").stat().st_mtime_ns
    # (resumed by a relative path, the completed jobs are still recognised: cold review)
    again = subprocess.run([sys.executable, "-m", "corral.demo", "--run", "demo/run"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "total words: 10000" in again.stdout
    # 4 writes, 4 counts, the total, top-words and flaky completed before; the rest ran again
    assert "11 jobs came from the journal of the earlier run" in again.stdout
    assert (tmp_path / "demo" / "text-0.txt").stat().st_mtime_ns == written  # not written again


def test_the_demo_resumed_from_another_directory_runs_none_of_its_commands_again(tmp_path):
    """Cold review: the printed resume command, run from another directory, ran
    the demo's shell commands (and the job after them) again: they ran in the
    current directory, and a command is another job where it runs elsewhere."""
    (tmp_path / "first").mkdir()
    (tmp_path / "later").mkdir()
    run = tmp_path / "demo" / "run"
    first = subprocess.run([sys.executable, "-m", "corral.demo", "--run", str(run)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path / "first")
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "-m", "corral.demo", "--run", str(run)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path / "later")
    assert again.returncode == 0, again.stderr
    assert "11 jobs came from the journal of the earlier run" in again.stdout, again.stdout
    assert "runs in" not in again.stderr, again.stderr
