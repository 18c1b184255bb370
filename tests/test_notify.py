"""Job notices by e-mail, delivered to a real SMTP server on loopback."""

from __future__ import annotations

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
    notifier = Notifier(settings_for(smtp_server.port))
    smtp_server.accepting.clear()  # the server holds every message at DATA
    for job_id in range(3):
        notifier.send(failed_notice(job_id=job_id), ["ann@example.org"])
    assert notifier.sent == 0  # send() did not wait for the held delivery

    closer = threading.Thread(target=notifier.close)
    closer.start()
    closer.join(0.05)
    assert closer.is_alive(), "close() returned while mail was still queued"
    smtp_server.accepting.set()
    closer.join(10)
    assert not closer.is_alive()

    assert (notifier.sent, notifier.failed) == (3, 0)
    assert len(smtp_server.received) == 3  # already there when close() returned
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
