"""Job notices by e-mail, delivered to a real SMTP server on loopback."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import datetime

import pytest
from smtp_server import SmtpServer

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
