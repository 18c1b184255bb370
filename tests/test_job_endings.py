"""How a job's end is recorded and explained: a cancelled command's end time,
mail that cannot be sent, and failure messages that point at files that last."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral import JobStatus
from corral.config import Config, load_config, user_config_path

import jobs
from support.cli import Corral
from support.waiting import wait_until


def corral_status_time(corral_cli: Corral, job_id: str) -> str:
    outcome = corral_cli("status", "--all")
    assert outcome.status in (0, 1), str(outcome)
    return outcome.rows()[job_id]["TIME"]


# -- a cancelled running command has an end time ----------------------------------------------


def test_a_command_cancelled_while_running_has_an_end_time_that_corral_status_shows(tmp_path):
    run = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run) as scheduler:
        job = scheduler.shell("sleep 1000", name="long")
        wait_until(lambda: job.status is JobStatus.RUNNING, 20, "the command to start")
        assert job.cancel()
        assert job.ended is not None and job.record.ended >= job.started

    [stored] = corral.Scheduler.open(run).jobs()
    assert stored.status is JobStatus.CANCELLED and stored.ended == job.ended
    # The driver has ended: a job without an end time would show "?" here.
    cli = Corral(tmp_path / "home", run)
    assert corral_status_time(cli, str(job.id)) not in ("", "?")


@pytest.fixture
def two_core_daemon(tmp_path: Path) -> Iterator[Corral]:
    cli = Corral(tmp_path / "home", tmp_path / "run", cwd=tmp_path)
    cli.config.write_text("[daemon]\ncores = 2\n")
    yield cli
    cli.stop_daemon()


def test_corral_cancel_and_corral_stop_record_when_running_commands_ended(two_core_daemon):
    cli = two_core_daemon
    cancelled = cli.submit("--name", "cancel-me", "--", "sleep 1000")
    stopped = cli.submit("--name", "stop-me", "--", "sleep 1000")
    cli.wait_for_status(cancelled, "RUNNING")
    cli.wait_for_status(stopped, "RUNNING")

    cli.ok("cancel", cancelled)
    cli.wait_for_status(cancelled, "CANCELLED")
    cli.stop_daemon()  # ``corral stop``: cancels the other one

    assert cli.status_of(stopped) == "CANCELLED"
    stored = {str(job.id): job for job in corral.Scheduler.open(cli.run).jobs()}
    assert stored[stopped].reason == "the daemon was stopped (corral stop or a signal)"
    # No driver any more: an end time never recorded would show "?".
    for job_id in (cancelled, stopped):
        assert corral_status_time(cli, job_id) not in ("", "?")
    ended = {str(job.id): job.ended for job in corral.Scheduler.open(cli.run).jobs()}
    assert None not in (ended[cancelled], ended[stopped])


# -- notify= needs an [smtp] table ----------------------------------------------------------------


def test_notify_without_an_smtp_table_is_refused_when_the_job_is_made(tmp_path, monkeypatch):
    user_file = tmp_path / "user-corral.toml"
    user_file.write_text('[profiles.short]\nwalltime = "30m"\n')
    monkeypatch.setenv("CORRAL_CONFIG", os.fspath(user_file))
    monkeypatch.chdir(tmp_path)
    assert load_config().smtp is None

    with corral.Scheduler(cores=1) as scheduler:
        with pytest.raises(ValueError) as refused:
            scheduler.options(notify="me@example.org").submit(abs, -1)
        assert scheduler.jobs() == []
    assert str(refused.value) == (
        "job 'abs': notify= needs a mail server and none is configured; set [smtp] host in "
        f'{user_file} or {tmp_path / "corral.toml"} (e.g. host = "smtp.example.org", port = 587)')


def test_a_config_given_without_smtp_names_the_user_config_file(tmp_path):
    config_file = re.escape(str(user_config_path()))
    with (corral.Scheduler(cores=1, config=Config()) as scheduler,
          pytest.raises(ValueError, match=rf"set \[smtp\] host in {config_file} ")):
        scheduler.shell("true", notify="me@example.org")


def test_corral_submit_with_notify_and_no_smtp_is_one_line_naming_the_key(tmp_path):
    """The daemon's config files are named, not the submitting directory's:
    (a cold review set [smtp] there, and was told to set it in the user's file only)."""
    cli = Corral(tmp_path / "home", tmp_path / "run", cwd=tmp_path)
    (tmp_path / "corral.toml").write_text('[smtp]\nhost = "127.0.0.1"\n')
    try:
        outcome = cli("submit", "--notify", "me@example.org", "--", "true")
    finally:
        cli.stop_daemon()
    assert outcome.status == 2 and "Traceback" not in outcome.err, str(outcome)
    # (and the [smtp] table there is said not to be read: a second cold review
    # read that corral.toml "overrides key by key" and took the error for a bug)
    assert outcome.err.splitlines() == [
        f"corral: note: the [smtp] table of {tmp_path / 'corral.toml'} is not read: the daemon "
        f"of {cli.run} takes its settings from {cli.config} and {cli.run / 'corral.toml'}",
        "corral: error: job 'true': notify= needs a mail server and none is configured; set "
        f'[smtp] host in {cli.config} or {cli.run / "corral.toml"} (e.g. host = '
        '"smtp.example.org", port = 587)']


# -- failure messages point only at files that last --------------------------------------------


FAILING = "echo 'disk full' >&2; exit 7"


def test_a_failure_in_a_temporary_run_directory_does_not_point_into_it():
    with corral.Scheduler(cores=1) as scheduler:  # no workdir: a temporary one
        job = scheduler.shell(FAILING, name="writer")
        message = str(job.exception(timeout=30))
        run_dir = scheduler.run_dir

    assert not run_dir.exists()  # removed at shutdown, as promised
    assert os.fspath(run_dir) not in message
    assert message == ("job 1 'writer' failed: exit code 7\n"
                       "last lines of its stderr (all of it is in job.stderr):\ndisk full")
    assert job.stderr == "disk full\n"


def test_a_failure_in_a_kept_run_directory_points_at_its_stderr_file(tmp_path):
    with corral.Scheduler(cores=1, workdir=tmp_path / "run") as scheduler:
        job = scheduler.shell(FAILING, name="writer")
        message = str(job.exception(timeout=30))

    path = message.splitlines()[1].removeprefix("last lines of its stderr (").removesuffix("):")
    assert Path(path).read_text() == "disk full\n"


# -- a reason is a line, however long the exception's text --------------------------------------


def test_a_call_that_raised_with_a_huge_message_keeps_it_but_its_reason_is_a_line(tmp_path):
    """A job that raised with a 5 MB message put all of it in its reason, and so
    on every status line, event and mail, and in ``corral wait``'s summary
    (hostile-input review). The exception keeps all of it."""
    run_dir = tmp_path / "run"
    with corral.Scheduler(cores=1, journal=run_dir) as scheduler:
        job = scheduler.submit(jobs.raise_custom, "start " + "y" * 5_000_000 + " end")
        error = job.exception(timeout=60)
    assert str(error) == "start " + "y" * 5_000_000 + " end"
    assert job.reason is not None and len(job.reason) < 2_100
    assert job.reason.startswith("raised CustomError: start yyy")
    assert re.search(r"yyy \[\.\.\. 4,998,010 characters left out \.\.\.\] y{396} end$",
                     job.reason)
    cli = Corral(tmp_path / "home", run_dir)
    outcome = cli("wait")
    assert outcome.status == 1 and len(outcome.err) < 3_000, len(outcome.err)
    assert re.fullmatch(r"job 1 'raise_custom' FAILED: raised CustomError: start y+\.\.\.\n"
                        r"corral: 1 job ended: 1 failed\n", outcome.err)  # (a line of it)
    shown = cli("status", str(job.id))  # its traceback too (in failure mail as well)
    assert shown.status == 1 and len(shown.out) < 12_000, len(shown.out)


def test_a_name_longer_than_a_status_line_can_show_is_refused_when_the_job_is_made():
    with corral.Scheduler(cores=1) as scheduler:
        with pytest.raises(ValueError, match=r"^name='nnn.*' is 5,000 characters long; a name is "
                                             r"shown on every status line, so it may hold 1,024 "
                                             r"at most$"):
            scheduler.options(name="n" * 5_000).submit(print)
        assert scheduler.options(name="n" * 1_024).submit(print).result(timeout=30) is None
        with pytest.raises(ValueError, match=r"^queue='qqq.*' is 2,000 characters long; it may "
                                             r"hold 1,024 at most$"):
            scheduler.options(queue="q" * 2_000).submit(print)
