"""A run never ends silently with jobs that did not complete, and its log says
what failed and what was mailed.

The closing line is checked as a user sees it: a driver script run with
subprocess, its stderr read whole.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from corral.config import Config, SmtpSettings

import jobs
from smtp_server import SmtpServer

DRIVER_HEAD = "import corral, sys\n"

TEN_JOBS_ONE_FAILS = DRIVER_HEAD + '''
with corral.Scheduler(cores=2) as scheduler:
    train = scheduler.shell("echo diverged >&2; exit 1", name="train")
    scheduler.shell(["echo", train], name="eval")         # needs train's result
    for number in range(8):
        scheduler.submit(abs, -number)
print("the script went on")
'''

ALL_COMPLETE = DRIVER_HEAD + '''
with corral.Scheduler(cores=2) as scheduler:
    scheduler.shell("echo fine >&2", name="noisy-but-fine")
    for number in range(5):
        scheduler.submit(abs, -number)
'''

SHUTDOWN_WAIT = DRIVER_HEAD + '''
scheduler = corral.Scheduler(cores=1)
scheduler.shell("sleep 5", name="slow", timeout="0.2s")
scheduler.shutdown(wait=True)
print("after shutdown")
'''

MANY_FAILURES = DRIVER_HEAD + '''
def fail(number):
    raise RuntimeError(f"failure number {number}, with a long explanation " + "x" * 500)

with corral.Scheduler(cores=2) as scheduler:
    for number in range(300):
        scheduler.submit(fail, number)
'''


def run_driver(tmp_path: Path, code: str, *argv: str) -> subprocess.CompletedProcess:
    script = tmp_path / "driver.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)


def test_a_script_whose_failed_job_nobody_asked_about_ends_with_one_line_naming_it(tmp_path):
    done = run_driver(tmp_path, TEN_JOBS_ONE_FAILS)

    assert done.returncode == 0 and done.stdout == "the script went on\n", done
    assert done.stderr == (
        "corral: 2 of 10 jobs did not complete: 1 failed (job 1 'train': exit code 1), "
        "1 cancelled (job 2 'eval': upstream job 1 'train' failed)\n")


def test_nothing_is_said_when_every_job_completed(tmp_path):
    done = run_driver(tmp_path, ALL_COMPLETE)

    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_shutdown_with_wait_reports_a_timed_out_job_before_the_script_goes_on(tmp_path):
    done = run_driver(tmp_path, SHUTDOWN_WAIT)

    assert done.stdout == "after shutdown\n", done
    assert done.stderr == ("corral: 1 of 1 job did not complete: 1 timed out (job 1 'slow': "
                           "timed out after 0.2s; killed with its child processes)\n")


THREE_KINDS_OF_FAILURE = """
import corral
def fail(number):
    if number < 40:
        raise ValueError(f"bad value {number}")
    if number < 50:
        raise KeyError(f"k{number}")
    raise RuntimeError(f"boom {number}")
with corral.Scheduler(cores=2) as scheduler:
    for number in range(60):
        scheduler.submit(fail, number)
"""


def test_each_kind_of_failure_has_an_example_before_a_kind_has_two(tmp_path):
    """Cold review: of 60 failures of three exceptions, the first three examples
    were all ValueErrors, and the KeyErrors only "and 20 more"."""
    done = run_driver(tmp_path, THREE_KINDS_OF_FAILURE)

    # (Examples in the order the jobs ended: two workers may end job 2 before job 1.)
    assert re.fullmatch(r"corral: 60 of 60 jobs did not complete: 60 failed \(job \d+ 'fail': "
                        r"raised ValueError: bad value \d+; job (4[1-9]|50) 'fail': raised "
                        r"KeyError: 'k\d+'; job \d+ 'fail': raised RuntimeError: boom \d+; and 57 "
                        r"more\)\n",
                        done.stderr), done.stderr


def test_three_hundred_failures_make_one_short_line(tmp_path):
    done = run_driver(tmp_path, MANY_FAILURES)

    [line] = done.stderr.splitlines()
    example = (r"job \d+ 'fail': raised RuntimeError: failure number \d+, "
               r"with a long explanation\.\.\.")  # (cut where a word ends)
    assert re.fullmatch(rf"corral: 300 of 300 jobs did not complete: 300 failed "
                        rf"\({example}; {example}; {example}; and 297 more\)", line), line
    assert len(line) < 500


SHARED_REASON = """
import sys, corral
with corral.Scheduler(cores=1) as scheduler:
    root = scheduler.shell("exit 1", name="root")
    for _ in range(int(sys.argv[1])):
        scheduler.shell("true", name="leaf", after=[root])
"""


@pytest.mark.parametrize(("leaves", "named"), [
    (5, "jobs 2, 3, 4 and 2 more 'leaf'"),
    (4, "jobs 2, 3, 4, 5 'leaf'"),  # (cold review: "jobs 2, 3, 4 and 1 more", no shorter)
])
def test_jobs_that_share_a_reason_are_named_together_and_it_is_said_once(tmp_path, leaves,
                                                                          named):
    """Cold reviews: the line said one reason three times, once per example; then
    "jobs 2, 3, 4 'leaf': ...; and 2 more", as if the two others had other reasons."""
    done = run_driver(tmp_path, SHARED_REASON, str(leaves))

    assert done.stderr == (
        f"corral: {leaves + 1} of {leaves + 1} jobs did not complete: 1 failed (job 1 'root': "
        f"exit code 1), {leaves} cancelled ({named}: upstream job 1 'root' failed)\n")


def read_log(run: Path) -> str:
    return (run / "corral.log").read_text()


def test_a_journaled_run_logs_every_failure_and_its_closing_line_in_corral_log(tmp_path,
                                                                              caplog):
    run = tmp_path / "run"
    with corral.Scheduler(cores=2, journal=run) as scheduler:
        flaky = scheduler.shell("echo 'no space\nleft' >&2; exit 3", name="flaky", retries=1)
        scheduler.submit(jobs.square, 3)
        flaky.exception(timeout=30)

    log = read_log(run)
    assert "INFO corral.engine" in log
    assert log.count(f"job {flaky.id} 'flaky' failed: exit code 3") == 2
    assert f"job {flaky.id} 'flaky' failed: exit code 3; retry 1 of 1 follows" in log
    assert "WARNING corral [pid" in log
    assert (f"1 of 2 jobs did not complete: 1 failed (job {flaky.id} 'flaky': exit code 3)"
            in log)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def test_every_mail_sent_or_failed_is_in_corral_log(tmp_path, smtp_server):
    sent_run, lost_run = tmp_path / "sent", tmp_path / "lost"
    working = Config(smtp=SmtpSettings(host=smtp_server.host, port=smtp_server.port,
                                       sender="corral@lab.example.org", timeout=5.0))
    broken = Config(smtp=SmtpSettings(host="127.0.0.1", port=closed_port(), timeout=5.0))

    for run, config in ((sent_run, working), (lost_run, broken)):
        with corral.Scheduler(cores=1, journal=run, config=config) as scheduler:
            scheduler.options(notify="me@example.org").submit(jobs.raise_custom, "disk full")

    subject = repr("[corral] job 1 'raise_custom' FAILED: raised CustomError: disk full")
    assert "INFO corral.notify [pid " in read_log(sent_run)
    assert (f"e-mailed {subject} to me@example.org through SMTP server "
            f"{smtp_server.host}:{smtp_server.port}") in read_log(sent_run)
    assert len(smtp_server.received) == 1
    assert "ERROR corral.notify [pid " in read_log(lost_run)
    assert (f"could not e-mail {subject} to me@example.org through SMTP server "
            f"127.0.0.1:{broken.smtp.port}: ConnectionRefusedError") in read_log(lost_run)


def test_a_run_whose_directory_name_is_no_utf8_mails_its_failure_and_runs_on(tmp_path,
                                                                             smtp_server):
    """Attack review: composing the notice raised UnicodeEncodeError on the
    control loop, and every other job failed "corral's scheduler crashed"."""
    run = tmp_path / os.fsdecode(b"r\xe9sultats")
    working = Config(smtp=SmtpSettings(host=smtp_server.host, port=smtp_server.port,
                                       sender="corral@lab.example.org", timeout=5.0))
    with corral.Scheduler(cores=1, journal=run, config=working) as scheduler:
        failing = scheduler.options(notify="me@example.org").shell("exit 3")
        after = [scheduler.shell("true") for _ in range(3)]
        assert all(job.result(timeout=60) is None for job in after)
    assert failing.status is corral.JobStatus.FAILED
    [mail] = smtp_server.wait_for(1)
    assert "r\\udce9sultats" in mail.body


ESCAPES_AND_LONG_REASONS = """
import corral
with corral.Scheduler(cores=1) as scheduler:
    scheduler.shell("exit 1", name="\\x1b]0;pwned\\x07")
    for _ in range(2):
        scheduler.shell("true", name="same", after=["\\x1b]0;pwned\\x07"])
    for last in "12":
        scheduler.shell("exit 1", name="a" * 50 + last)
"""


def test_the_line_escapes_control_characters_and_groups_only_what_is_the_same(tmp_path):
    """Attack review, round 2: a name or reason with ESC sequences reached the
    terminal raw; jobs whose long names differed only after the cut were
    named as one."""
    done = run_driver(tmp_path, ESCAPES_AND_LONG_REASONS)

    assert "\x1b" not in done.stderr and "\x07" not in done.stderr
    assert "job 1 '\\x1b]0;pwned\\x07': exit code 1" in done.stderr
    assert "jobs 2, 3 'same': upstream job 1" in done.stderr
    assert "; job 4 'aaa" in done.stderr and "; job 5 'aaa" in done.stderr


@pytest.mark.parametrize(("reason", "shown"), [
    ("exit code 1", "exit code 1"),
    ("raised ValueError: the value 123456789 is out of range " + "and more " * 20,
     "raised ValueError: the value 123456789 is out of range and more and more and more "
     "and more and..."),
    ("word " * 17 + "exit code 137, and more", "word " * 17 + "exit code..."),
    ("y" * 200, "y" * 97 + "..."),  # (no word ends near: cut where the limit is)
])
def test_a_long_reason_is_cut_where_a_word_ends_not_inside_a_number(reason, shown):
    """Cold review: the line cut reasons mid-token, so "code 137" could read
    as "code 13..."."""
    from corral.safe_repr import one_line

    assert one_line(reason, 100) == shown


def test_jobs_named_together_are_named_in_order_of_their_ids():
    """Cold review: a map whose results were no longer read said "jobs 200,
    199, 198 'f'": its jobs were cancelled last first."""
    from corral.core.summary import _grouped

    examples = [(200, "f", "not read"), (199, "f", "not read"), ("setup", "f", "not read"),
                (10, "f", "not read")]
    assert _grouped(examples, {}) == ["jobs 10, 199, 200, setup 'f': not read"]


def test_the_jobs_a_reason_names_are_its_lowest_ids_whatever_order_they_ended_in():
    """Cold review: a map's five jobs cancelled last first read "jobs 9, 10 and 3 more"."""
    from types import SimpleNamespace

    from corral import JobStatus
    from corral.core.summary import RunTally

    summary = RunTally()
    for job_id in (10, 9, 8, 7, 6):
        summary.count(SimpleNamespace(id=job_id, name="nap", status=JobStatus.CANCELLED,
                                      reason="cancelled by user"))
    assert summary.summary() == ("5 of 5 jobs did not complete: 5 cancelled "
                                 "(jobs 6, 7, 8 and 2 more 'nap': cancelled by user)")
    lone = RunTally()
    for job_id in (5, 4, 3, 2):
        lone.count(SimpleNamespace(id=job_id, name="nap", status=JobStatus.CANCELLED,
                                   reason="cancelled by user"))
    assert lone.summary() == ("4 of 4 jobs did not complete: 4 cancelled "
                              "(jobs 2, 3, 4, 5 'nap': cancelled by user)")


LOGGING_TO_A_FILE = DRIVER_HEAD + '''
import logging
logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
with corral.Scheduler(cores=1) as scheduler:
    scheduler.shell("exit 3", name="boom")
'''


def test_the_closing_line_reaches_stderr_when_the_program_logs_to_a_file(tmp_path):
    """Cold review (an e3 user's build script logs to a file): the line went
    only to the program's log file, and stderr said nothing."""
    log = tmp_path / "user.log"
    done = run_driver(tmp_path, LOGGING_TO_A_FILE, str(log))
    line = "1 of 1 job did not complete: 1 failed (job 1 'boom': exit code 3)"
    assert (done.returncode, done.stderr) == (0, f"corral: {line}\n"), done
    assert f"WARNING:corral:{line}" in log.read_text()


def test_ctrl_c_waits_a_second_at_most_for_mail_a_stalled_server_holds(tmp_path, smtp_server,
                                                                      caplog):
    """Review: the program's end after Ctrl-C waited 10 s on a mail server
    that took the connection but never answered the message."""
    stalled = Config(smtp=SmtpSettings(host=smtp_server.host, port=smtp_server.port,
                                       sender="corral@lab.example.org", timeout=60.0))
    smtp_server.accepting.clear()
    with caplog.at_level(logging.WARNING, logger="corral.notify"), \
            pytest.raises(KeyboardInterrupt), \
            corral.Scheduler(cores=1, journal=tmp_path / "run", config=stalled) as scheduler:
        failing = scheduler.options(notify="me@example.org").shell("exit 3")
        with pytest.raises(corral.JobFailed):
            failing.result(timeout=60)
        assert smtp_server.at_data.wait(30), "the notice never reached the server"
        raise KeyboardInterrupt
    assert ("1 job notice(s) not delivered through "
            f"{smtp_server.host}:{smtp_server.port} after 1 s, given up") in caplog.text


STALLED_MAIL_WITHOUT_WITH = """
import sys, corral
from corral.config import Config, SmtpSettings
config = Config(smtp=SmtpSettings(host="127.0.0.1", port=int(sys.argv[1]), timeout=60.0))
scheduler = corral.Scheduler(cores=1, config=config)  # no with-block: its end is at exit
failing = scheduler.options(notify="me@example.org").shell("exit 3")
corral.wait([failing])
print("failed", flush=True)
scheduler.shell("sleep 300").result()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_program_without_a_with_block_stopped_by_a_signal_gives_mail_a_second(
        tmp_path, smtp_server, signum):
    """Attack review: without a with-block, the exit hook waited the 10 s of
    a calm end on a mail server that did not answer."""
    smtp_server.accepting.clear()
    script = tmp_path / "driver.py"
    script.write_text(STALLED_MAIL_WITHOUT_WITH)
    driver = subprocess.Popen([sys.executable, script, str(smtp_server.port)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "CORRAL_CONFIG": os.devnull})
    try:
        assert driver.stdout.readline() == "failed\n"
        assert smtp_server.at_data.wait(30), "the notice never reached the server"
        driver.send_signal(signum)
        _, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
        driver.wait()
    assert (f"1 job notice(s) not delivered through 127.0.0.1:{smtp_server.port} after 1 s, "
            "given up") in err
