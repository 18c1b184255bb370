"""Job notices by e-mail, delivered to a real SMTP server on loopback."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from smtp_server import SmtpServer
from support.waiting import wait_until

from corral.config import SmtpSettings
from corral.core.notify import JobNotice, Notifier, compose

SENDER = "corral@lab.example.org"


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound by nobody who listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but not listening, so no one else can take it
        yield sock.getsockname()[1]


def failed_notice(**changes: object) -> JobNotice:
    fields: dict[str, object] = {
        "job_id": 12, "name": "train", "status": "FAILED", "reason": "exit code 3",
        "exit_code": 3, "started": 1_700_000_000.0, "ended": 1_700_000_090.0, "attempts": 2,
        "run_dir": "/runs/my run", "stderr_tail": "loading data\nValueError: bad row 17\n",
        "host": "node07",
    }
    fields.update(changes)
    return JobNotice(**fields)  # type: ignore[arg-type]


def settings_for(port: int, **changes: object) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, sender=SENDER, timeout=5.0,
                        **changes)  # type: ignore[arg-type]


def notifier_held_at_data(server: SmtpServer, first_job: int = 1) -> Notifier:
    """A notifier whose first notice (of job *first_job*) the server holds at
    DATA until ``server.accepting`` is set: what is sent next queues behind it."""
    notifier = Notifier(settings_for(server.port))
    server.accepting.clear()
    notifier.send(failed_notice(job_id=first_job), ["ann@example.org"])
    assert server.at_data.wait(10), "the first notice never reached the server"
    return notifier


def test_a_job_of_milliseconds_is_not_said_to_have_taken_a_second(
        smtp_server: SmtpServer) -> None:
    """BUG (cold review): a 1.3 ms job's mail said "duration 00:00:01"."""
    notifier = Notifier(settings_for(smtp_server.port))
    notifier.send(failed_notice(ended=1_700_000_000.0013), ["ann@example.org"])
    notifier.close()
    [mail] = smtp_server.wait_for(1)
    assert "duration   0.0s\r\n" in mail.body


def test_failed_job_mail_reaches_every_recipient(smtp_server: SmtpServer) -> None:
    notifier = Notifier(settings_for(smtp_server.port))
    notifier.send(failed_notice(), ["ann@example.org", "bob@example.org"])
    notifier.close()

    assert (notifier.sent, notifier.failed) == (1, 0)
    [mail] = smtp_server.wait_for(1)
    assert mail.mail_from == SENDER
    assert mail.recipients == ("ann@example.org", "bob@example.org")
    assert mail.message["Subject"] == "[corral] job 12 'train' FAILED: exit code 3"
    assert mail.message["To"] == "ann@example.org, bob@example.org"
    assert mail.message["From"] == SENDER
    body = mail.body
    assert "reason     exit code 3" in body
    assert "attempts   2" in body
    assert "duration   1m30s" in body  # as corral status shows it
    assert datetime.fromtimestamp(1_700_000_000.0).astimezone().isoformat(
        timespec="seconds") in body
    assert "host       node07" in body
    assert "    ValueError: bad row 17" in body
    assert "corral --run '/runs/my run' logs 12 --stderr" in body


# Loopback needs no TLS; aiosmtpd warns about AUTH without it all the same.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_login_uses_the_password_from_settings() -> None:
    server = SmtpServer(logins={"me": "s3cret"}).start()
    try:
        notifier = Notifier(settings_for(server.port, username="me", password="s3cret"))
        notifier.send(failed_notice(), ["ann@example.org"])
        notifier.close()
        assert (notifier.sent, notifier.failed) == (1, 0)
        assert server.logins_seen == ["me"]
    finally:
        server.stop()


def test_delivery_to_a_closed_port_is_logged_not_raised(
        closed_port: int, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(settings_for(closed_port))
    with caplog.at_level(logging.ERROR, logger="corral.notify"):
        notifier.send(failed_notice(), ["ann@example.org"])  # must not raise
        notifier.close()

    assert (notifier.sent, notifier.failed) == (0, 1)
    [record] = [r for r in caplog.records if r.name == "corral.notify"]
    assert record.levelno == logging.ERROR
    assert f"127.0.0.1:{closed_port}" in record.getMessage()
    assert "ann@example.org" in record.getMessage()
    assert "ConnectionRefusedError" in record.getMessage()


def test_send_returns_at_once_and_close_waits_for_queued_mail(smtp_server: SmtpServer) -> None:
    notifier = notifier_held_at_data(smtp_server, first_job=0)
    for job_id in range(1, 3):  # (queued behind the held delivery: one digest of both)
        notifier.send(failed_notice(job_id=job_id), ["ann@example.org"])
    assert notifier.sent == 0  # send() did not wait for the held delivery

    closer = threading.Thread(target=notifier.close)
    closer.start()
    closer.join(0.05)
    assert closer.is_alive(), "close() returned while mail was still queued"
    smtp_server.accepting.set()
    closer.join(10)
    assert not closer.is_alive()

    assert (notifier.sent, notifier.failed) == (2, 0)
    assert len(smtp_server.received) == 2  # already there when close() returned
    with pytest.raises(RuntimeError, match="closed"):
        notifier.send(failed_notice(), ["ann@example.org"])


def test_mail_without_run_dir_or_stderr_says_so() -> None:
    notice = JobNotice(job_id="a1", name="prep", status="COMPLETED")
    message = compose(notice, SENDER, ["ann@example.org"])

    assert message["Subject"] == "[corral] job a1 'prep' COMPLETED"
    body = message.get_content()
    assert body.startswith("Job a1 'prep' COMPLETED\n")
    assert "The job wrote nothing to stderr." in body
    assert "corral --run" not in body
    assert "started    -" in body


def test_multi_line_reason_stays_one_subject_line() -> None:
    notice = failed_notice(reason="killed:\nout of memory " + "x" * 300)
    subject = compose(notice, SENDER, ["ann@example.org"])["Subject"]
    assert "\n" not in subject
    assert subject.startswith("[corral] job 12 'train' FAILED: killed: out of memory x")
    assert subject.endswith("...")


def test_a_reason_of_many_lines_stays_in_its_table_row_and_is_cut_short() -> None:
    """Attack review: a reason's second line began at the margin (a "Bcc: ..."
    line in the body, though no header)."""
    notice = failed_notice(reason="line1\r\nBcc: evil@example.org\n\n" + "z" * 5000
                           + "".join(f"\nmore {n}" for n in range(30)))
    body = compose(notice, SENDER, ["ann@example.org"]).get_content()
    row = body.split("  reason     ", 1)[1].split("\n  exit code", 1)[0].splitlines()
    assert row[:4] == ["line1", " " * 13 + "Bcc: evil@example.org", " " * 13,
                       " " * 13 + "z" * 1000 + " [... cut short]"]
    assert row[-1] == " " * 13 + "[... 14 more lines]" and len(row) == 21
    assert not any(line.startswith("Bcc") for line in body.splitlines())


def test_notices_that_pile_up_for_the_same_addresses_go_in_one_digest(
        smtp_server: SmtpServer) -> None:
    """Attack review: 500 jobs failing at once made 500 mails, one connection
    each, and most were lost when the program ended."""
    notifier = notifier_held_at_data(smtp_server)
    for job_id in range(2, 501):
        notifier.send(failed_notice(job_id=job_id, stderr_tail="line a\nline b\n"),
                      ["ann@example.org"])
    notifier.send(failed_notice(job_id=999), ["bob@example.org"])  # (other addresses: apart)
    smtp_server.accepting.set()
    notifier.close()
    assert (notifier.sent, notifier.failed) == (5, 0)  # 1, 200, 200, 99 and bob's
    mails = smtp_server.wait_for(5)
    digest = mails[1]
    assert digest.message["Subject"] == (
        "[corral] 200 jobs FAILED, the first job 2 'train' FAILED: exit code 3")
    assert digest.recipients == ("ann@example.org",)
    assert "Job 201 'train' FAILED: exit code 3\r\n    line a\r\n    line b\r\n" in digest.body
    assert "corral --run '/runs/my run' status --all" in digest.body
    assert [mail.recipients for mail in mails].count(("bob@example.org",)) == 1
    assert sum(len(mail.message["X-Corral-Job"].split(", ")) for mail in mails) == 501


def test_a_notice_no_mail_can_say_is_logged_and_the_others_go(
        smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    """Attack review: composing a notice raised on the control loop's thread
    (a run directory whose name is no UTF-8; a sender with a line break), and
    every job of the run failed "corral's scheduler crashed"."""
    broken = Notifier(dataclasses.replace(settings_for(smtp_server.port),
                                          sender="a@b.org\nBcc: x@y.org"))
    with caplog.at_level(logging.ERROR, logger="corral.notify"):
        broken.send(failed_notice(), ["ann@example.org"])  # must not raise
        broken.close()
    assert (broken.sent, broken.failed) == (0, 1)
    assert "could not compose the notice of job(s) 12: " in caplog.text
    notifier = Notifier(settings_for(smtp_server.port))
    notifier.send(failed_notice(run_dir="/runs/r\udce9sultats"), ["ann@example.org"])
    notifier.close()
    [mail] = smtp_server.wait_for(1)
    assert "run dir    /runs/r\\udce9sultats" in mail.body


def test_a_close_that_gives_up_names_the_jobs_whose_notices_it_left(
        smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    notifier = notifier_held_at_data(smtp_server)
    notifier.send(failed_notice(job_id=2), ["ann@example.org"])
    notifier.send(failed_notice(job_id=3), ["ann@example.org"])
    with caplog.at_level(logging.WARNING, logger="corral.notify"):
        notifier.close(timeout=0.2)
    assert (f"3 job notice(s) not delivered through 127.0.0.1:{smtp_server.port} after 0.2 s, "
            "given up: queued, of jobs 2, 3; 1 being delivered, which the server may yet "
            "take") in caplog.text


def test_hurry_ends_a_close_that_waits_on_a_server_that_does_not_answer(
        smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    """Review: Ctrl-C still waited the 10 s of a calm end on a stalled server."""
    notifier = notifier_held_at_data(smtp_server)
    closer = threading.Thread(target=notifier.close, kwargs={"timeout": 300})
    with caplog.at_level(logging.WARNING, logger="corral.notify"):
        closer.start()
        closer.join(0.05)
        assert closer.is_alive(), "close() returned while mail was being delivered"
        notifier.hurry(0.1)
        closer.join(30)
        assert not closer.is_alive(), "close() waited on after hurry()"
    assert "1 job notice(s) not delivered through" in caplog.text
    assert "given up: 1 being delivered, which the server may yet take" in caplog.text


# -- notices kept on disk until they are sent -------------------------------------------------


def test_a_kept_notice_waits_on_disk_until_it_is_delivered(smtp_server: SmtpServer,
                                                           tmp_path) -> None:
    """A journaled run keeps each queued notice in a file, so that a driver
    killed before it sends it does not lose it; the file goes once it is sent."""
    kept = tmp_path / "notices"
    notifier = Notifier(settings_for(smtp_server.port), keep_in=kept)
    smtp_server.accepting.clear()
    notifier.send(failed_notice(job_id=7), ["ann@example.org"])
    assert smtp_server.at_data.wait(10), "the notice never reached the server"
    assert len(list(kept.glob("*.json"))) == 1  # on its way: still kept
    smtp_server.accepting.set()
    notifier.close()
    assert "job 7" in smtp_server.wait_for(1)[0].message["Subject"]
    assert list(kept.iterdir()) == []


def test_notices_a_killed_process_left_are_sent_by_the_next_notifier_and_said(
        smtp_server: SmtpServer, tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """Attack review: a daemon killed with mail queued lost it without a word."""
    kept = tmp_path / "notices"
    # A process that keeps two notices it cannot send (its server never answers), killed.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        script = (
            "import sys, time\n"
            "from pathlib import Path\n"
            "from corral.config import SmtpSettings\n"
            "from corral.core.notify import JobNotice, Notifier\n"
            "notifier = Notifier(SmtpSettings(host='127.0.0.1', port=int(sys.argv[2]), "
            "sender='corral@lab.example.org', timeout=60.0), keep_in=Path(sys.argv[1]))\n"
            "for job in (3, 4):\n"
            "    notifier.send(JobNotice(job_id=job, name='fit', status='FAILED', "
            "reason='exit code 1', exit_code=1, started=None, ended=None, attempts=1, "
            "run_dir=None), ['ann@example.org'])\n"
            "print('queued', flush=True)\n"
            "time.sleep(60)\n")
        killed = subprocess.Popen([sys.executable, "-c", script, str(kept),
                                   str(silent.getsockname()[1])], stdout=subprocess.PIPE)
        assert killed.stdout is not None and killed.stdout.readline() == b"queued\n"
        killed.kill()
        # Not reaped yet, a zombie, as a supervisor that starts the next driver first
        # leaves it (attack review: its notices were taken for a live driver's).
        wait_until(lambda: _state(killed.pid) == "Z", message="the killed one to be a zombie")
    assert len(list(kept.glob("*.json"))) == 2
    (kept / "99999999-1.1.json").write_text("{not json")  # damaged: said and removed
    with caplog.at_level(logging.INFO, logger="corral.notify"):
        notifier = Notifier(settings_for(smtp_server.port), keep_in=kept)
        notifier.close()
    killed.wait(timeout=10)
    [mail] = smtp_server.wait_for(1)  # the two, for the same address: one digest
    assert "Job 3 'fit' FAILED" in mail.body and "Job 4 'fit' FAILED" in mail.body, mail.body
    said = [record.getMessage() for record in caplog.records]
    assert "sending 2 job notice(s) that a driver of this run, killed, had not sent (of jobs " \
           "3, 4)" in said, said
    assert any(line.startswith(f"a job notice left in {kept / '99999999-1.1.json'} cannot be "
                               "read (JSONDecodeError:") for line in said), said
    assert list(kept.iterdir()) == []


KILLED_WITH_MAIL_QUEUED = """
import sys, time, corral

def fail():
    raise ValueError("bad row 17")

with corral.Scheduler(cores=1, journal=sys.argv[1]) as scheduler:
    jobs = [scheduler.options(notify="ann@example.org", name=f"fit-{n}").submit(fail)
            for n in range(2)]
    corral.wait(jobs)
    print("failed", flush=True)
    time.sleep(60)  # killed here, its mail not sent
"""


def _state(pid: int) -> str:
    """The state letter of process *pid* (R, S, Z...)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rfind(")") + 2]


def test_what_else_lies_among_the_kept_notices_is_said_or_left_never_followed(
        smtp_server: SmtpServer, tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """Attack review: a FIFO named like a notice hung every driver of the run at
    its start, a name with "²" for a number crashed it, a link was followed to
    a notice outside the run and sent, and a recipient string was mailed one
    character at a time."""
    kept = tmp_path / "notices"
    kept.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"recipients": ["eve@example.org"],
                                   "notice": dataclasses.asdict(failed_notice())}))
    os.mkfifo(kept / "99999998-1.1.json")
    (kept / "99999998-1.2.json").symlink_to(outside)
    (kept / "99999998-1.3.json").write_text(json.dumps(
        {"recipients": "bob@example.org", "notice": dataclasses.asdict(failed_notice())}))
    (kept / "1-1.².json").write_text("{}")  # (no name a notifier writes: left as it is)
    with caplog.at_level(logging.INFO, logger="corral.notify"):
        Notifier(settings_for(smtp_server.port), keep_in=kept).close()
    said = "\n".join(record.getMessage() for record in caplog.records)
    for number, why in ((1, "ValueError: not a regular file"),
                        (2, "OSError: [Errno 40] Too many levels of symbolic links"),
                        (3, "ValueError: its recipients are no list of addresses")):
        assert (f"a job notice left in {kept / f'99999998-1.{number}.json'} cannot be read "
                f"({why}") in said, said
    assert smtp_server.received == [] and outside.exists()
    assert sorted(path.name for path in kept.iterdir()) == ["1-1.².json"]


def test_two_notifiers_of_one_process_keep_their_notices_apart(smtp_server: SmtpServer,
                                                              tmp_path) -> None:
    """Attack review: a daemon whose [smtp] table changed made a second notifier
    beside the first, whose files took the same names: one notice overwrote
    another, and the first's give-up removed the second's."""
    kept = tmp_path / "notices"
    first = Notifier(settings_for(smtp_server.port), keep_in=kept)
    smtp_server.accepting.clear()
    first.send(failed_notice(job_id=1), ["ann@example.org"])
    assert smtp_server.at_data.wait(10)
    second = Notifier(settings_for(smtp_server.port), keep_in=kept)
    second.send(failed_notice(job_id=3), ["bob@example.org"])
    assert len(list(kept.glob("*.json"))) == 2
    smtp_server.accepting.set()
    first.close()
    second.close()
    subjects = sorted(mail.message["Subject"] for mail in smtp_server.wait_for(2))
    assert "job 1" in subjects[0] and "job 3" in subjects[1], subjects
    assert list(kept.iterdir()) == []


def test_a_program_that_sent_no_mail_waits_little_for_what_an_earlier_one_left(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """Attack review: a script that sent no mail waited 10 s at its end for a
    server that did not answer, to send what a killed driver had left."""
    kept = tmp_path / "notices"
    kept.mkdir()
    (kept / "99999997-1.1.json").write_text(json.dumps(
        {"recipients": ["ann@example.org"], "notice": dataclasses.asdict(failed_notice())}))
    with socket.socket() as silent, caplog.at_level(logging.WARNING, logger="corral.notify"):
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        notifier = Notifier(dataclasses.replace(settings_for(silent.getsockname()[1]),
                                                timeout=30.0), keep_in=kept)
        began = time.monotonic()
        notifier.close()
        waited = time.monotonic() - began
    assert waited < 5, waited
    assert any("given up" in record.getMessage() for record in caplog.records), caplog.text


def _killed_with_mail_queued(tmp_path) -> tuple[Path, Path, dict[str, str]]:
    """A journaled script whose two failed jobs' mails were queued for a mail
    server that never answers, killed: its run, its config file, its environment."""
    run = tmp_path / "run"
    config = tmp_path / "user-corral.toml"  # (not ./corral.toml: that one is read whatever)
    with socket.socket() as silent:  # a mail server that never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        config.write_text(f'[smtp]\nhost = "127.0.0.1"\nport = {silent.getsockname()[1]}\n'
                          f'from = "{SENDER}"\ntimeout = 60\n')
        env = {**os.environ, "CORRAL_CONFIG": str(config)}
        killed = subprocess.Popen([sys.executable, "-c", KILLED_WITH_MAIL_QUEUED, str(run)],
                                  env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            assert killed.stdout is not None and killed.stdout.readline() == b"failed\n"
        finally:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait(timeout=10)
    return run, config, env


def _run_again(run: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys, corral\n"
                           "with corral.Scheduler(cores=1, journal=sys.argv[1]):\n    pass\n",
                           str(run)], env=env, cwd=run.parent, capture_output=True, text=True,
                          timeout=60)


def test_mail_a_killed_script_had_not_sent_is_sent_by_its_next_run(smtp_server: SmtpServer,
                                                                    tmp_path) -> None:
    """Attack review: a driver killed with failure mails queued lost them, and
    its log said nothing, though it claims every mail sent or not."""
    run, config, env = _killed_with_mail_queued(tmp_path)
    config.write_text(f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\n'
                      f'from = "{SENDER}"\ntimeout = 10\n')
    rerun = _run_again(run, env)
    assert rerun.returncode == 0, rerun.stderr
    [mail] = smtp_server.wait_for(1)
    assert "Job 1 'fit-0' FAILED" in mail.body and "Job 2 'fit-1' FAILED" in mail.body, mail.body
    log = (run / "corral.log").read_text()
    assert "sending 2 job notice(s) that a driver of this run, killed, had not sent (of jobs " \
           "1, 2)" in log, log
    assert list((run / "notices").iterdir()) == []


def test_mail_a_killed_script_left_waits_for_a_run_that_can_send_it_and_says_so(tmp_path) -> None:
    run, _, env = _killed_with_mail_queued(tmp_path)
    rerun = _run_again(run, {**env, "CORRAL_CONFIG": "/dev/null"})
    assert rerun.returncode == 0, rerun.stderr
    assert (f"job notices left unsent in {run / 'notices'} by a killed driver wait there: no "
            "[smtp] table to send them through") in rerun.stderr, rerun.stderr
    assert len(list((run / "notices").glob("*.json"))) == 2
