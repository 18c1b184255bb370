"""E-mail a notice when a job ends, without ever holding up the scheduler.

A job's ``notify=`` addresses get one message when it fails (or whenever it
ends, with ``notify_on="end"``). A mail server can be slow or down, so
:class:`Notifier` only queues notices; one background thread composes and
delivers them through the ``[smtp]`` settings of :mod:`corral.config`. Notices
that pile up for the same addresses while it delivers go together in one
digest: 500 jobs failing at once made 500 mails, most lost when the program
ended (attack review). A delivery that fails
is logged on ``corral.core.notify`` (so in a journaled run's ``corral.log``, as is
every message delivered) and counted; it never raises into the code that
asked for it, because a lost e-mail must not fail or stall a run.
"""

from __future__ import annotations

import collections
import logging
import shlex
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from corral.config import SmtpSettings
from corral.core.kept_notices import forget, keep, left_behind
from corral.runtime.threads import start_thread
from corral.safe_repr import first_few
from corral.units import format_span

__all__ = ["JobNotice", "Notifier", "compose", "compose_digest", "DIGEST_MAX"]

log = logging.getLogger("corral.notify")  # the name users filter on; kept when modules move

_SUBJECT_REASON_MAX = 120
#: The last lines of a raised traceback a notice shows (``corral status`` shows all).
_TRACEBACK_LINES = 40
#: Lines of a table value (a reason) a mail shows, and characters of each.
_VALUE_LINES = 20
_LINE_CHARS = 1000
#: The most notices one digest holds.
DIGEST_MAX = 200
#: Lines of stderr a digest shows of each job.
_DIGEST_TAIL_LINES = 5


@dataclass(frozen=True, slots=True)
class JobNotice:
    """What a notice says about one job: plain values, so it travels anywhere.

    ``started`` and ``ended`` are Unix timestamps; ``stderr_tail`` holds the
    last lines of the job's stderr ("" when there were none); ``traceback``
    the one a Python call raised ("" for a command), which is in no output
    file: ``corral status ID`` shows it.
    """

    job_id: int | str
    name: str
    status: str
    reason: str | None = None
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    attempts: int = 1
    run_dir: str | None = None
    stderr_tail: str = ""
    host: str = field(default_factory=socket.gethostname)
    traceback: str = ""


def compose(record: JobNotice, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """Build the e-mail for *record*: a one-line subject and a plain-text body.

    The subject reads ``[corral] job 12 'train' FAILED: exit code 3`` so a
    mailbox list says what happened; the body adds times, host, the stderr
    tail and the command that shows the whole logs.
    """
    message = EmailMessage()
    message["Subject"] = _subject(record)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("corral", domain=record.host)  # getfqdn() may block
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message["X-Corral-Job"] = str(record.job_id)
    message.set_content(_sayable(_body(record)))
    return message


def compose_digest(records: Sequence[JobNotice], sender: str,
                   recipients: Sequence[str]) -> EmailMessage:
    """One e-mail for several notices: a line and the stderr tail of each, and
    where to see the rest."""
    first = records[0]
    statuses = sorted({record.status for record in records})
    message = EmailMessage()
    message["Subject"] = (f"[corral] {len(records)} jobs {'/'.join(statuses)}, the first "
                          f"{_headline(first)}")
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("corral", domain=first.host)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Corral-Job"] = ", ".join(str(record.job_id) for record in records)
    lines = [f"{len(records)} jobs ended so, in the order they ended:", ""]
    for record in records:
        headline = _headline(record)
        lines.append(headline[0].upper() + headline[1:])
        tail = record.stderr_tail.rstrip("\n").splitlines()[-_DIGEST_TAIL_LINES:]
        lines += [f"    {line[:_LINE_CHARS]}" for line in tail]
    runs = sorted({record.run_dir for record in records if record.run_dir})
    if runs:
        lines += ["", "See each job's logs with:"]
        lines += [f"    {shlex.join(['corral', '--run', run, 'status', '--all'])}" for run in runs]
    lines += ["", "-- ", f"Sent by corral on {first.host}."]
    message.set_content(_sayable("\n".join(lines) + "\n"))
    return message


def _sayable(text: str) -> str:
    """*text* as a mail can carry it: a run directory whose name is no UTF-8
    (held as surrogates) made every notice fail to compose, and the error
    crashed the run (attack review)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _headline(record: JobNotice) -> str:
    detail = record.reason
    if not detail and record.exit_code not in (None, 0):
        detail = f"exit code {record.exit_code}"
    text = f"job {record.job_id} {record.name!r} {record.status}"
    if detail:
        first = " ".join(detail.split())  # a header is one line
        if len(first) > _SUBJECT_REASON_MAX:
            first = first[:_SUBJECT_REASON_MAX - 3] + "..."
        text += f": {first}"
    return text


def _subject(record: JobNotice) -> str:
    return _sayable(f"[corral] {_headline(record)}")


def _time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _continued(value: str) -> str:
    """A table value of several lines, its later lines under its first (attack
    review: an exception's message of several lines broke the table, a line of
    it at the margin), each cut short, and at most :data:`_VALUE_LINES` of them."""
    lines = value.splitlines() or [""]
    if len(lines) > _VALUE_LINES:
        lines = [*lines[:_VALUE_LINES], f"[... {len(lines) - _VALUE_LINES:,} more lines]"]
    cut = [line if len(line) <= _LINE_CHARS else f"{line[:_LINE_CHARS]} [... cut short]"
           for line in lines]
    return f"\n{' ' * 13}".join(cut)


def _body(record: JobNotice) -> str:
    duration = "-"
    if record.started is not None and record.ended is not None:
        duration = format_span(record.ended - record.started)  # as corral status shows it
    rows = [
        ("status", record.status),
        ("reason", record.reason or "-"),
        ("exit code", "-" if record.exit_code is None else str(record.exit_code)),
        ("attempts", str(record.attempts)),
        ("started", _time(record.started)),
        ("ended", _time(record.ended)),
        ("duration", duration),
        ("host", record.host),
        ("run dir", record.run_dir or "-"),
    ]
    headline = _headline(record)
    lines = [headline[0].upper() + headline[1:], ""]
    lines += [f"  {label:<10} {_continued(value)}" for label, value in rows]
    lines.append("")
    raised = record.traceback.rstrip("\n").splitlines()[-_TRACEBACK_LINES:]
    if raised:
        lines.append("The traceback it raised:")
        lines += [f"    {line}" for line in raised]
        lines.append("")
    tail = record.stderr_tail.rstrip("\n")
    if tail:
        lines.append("Last lines of stderr:")
        lines += [f"    {line}" for line in tail.splitlines()]
    else:
        lines.append("The job wrote nothing to stderr.")
    if record.run_dir:
        command = shlex.join(["corral", "--run", record.run_dir, "logs", str(record.job_id),
                              "--stderr"])
        lines += ["", "See the whole log with:", f"    {command}"]
        if raised:
            command = shlex.join(["corral", "--run", record.run_dir, "status",
                                  str(record.job_id)])
            lines += ["and the whole traceback with:", f"    {command}"]
    lines += ["", "-- ", f"Sent by corral on {record.host}."]
    return "\n".join(lines) + "\n"


class Notifier:
    """Deliver job notices in the background through one SMTP server.

    :meth:`send` queues and returns at once; a daemon thread, started on the
    first send, opens one SMTP connection per message: one notice, or a digest
    of those queued for the same addresses (at most :data:`DIGEST_MAX`). A failed delivery is
    logged on ``corral.core.notify`` (naming server and recipients) and counted in
    :attr:`failed`, never raised. :meth:`close` waits for the queue to drain.
    All methods are thread-safe.

    With *keep_in* (a journaled run's ``notices`` folder), each notice waits
    there on disk until it was delivered or its failure logged, and what a
    killed driver left there is sent first (see :mod:`corral.core.kept_notices`).
    """

    def __init__(self, settings: SmtpSettings, keep_in: Path | None = None) -> None:
        self._settings = settings
        self.keep_in = keep_in
        self._condition = threading.Condition()
        #: Each notice with its recipients and the file it is kept in (if any).
        self._queue: collections.deque[_Queued] = collections.deque()
        #: Notices sent through :meth:`send` (not left by an earlier driver).
        self._own = 0
        #: The files of the notices being delivered.
        self._in_flight: list[Path] = []
        self._busy = 0  # notices queued or being delivered
        self._sent = 0
        self._failed = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        #: When close() gives up on what is queued (time.monotonic()); None: not closing.
        self._give_up_at: float | None = None
        #: The most close() waits, once hurried (see hurry()).
        self._patience = float("inf")
        if keep_in is not None:
            self._send_what_was_left(keep_in)

    @property
    def sent(self) -> int:
        """Messages the server accepted for every recipient."""
        with self._condition:
            return self._sent

    @property
    def failed(self) -> int:
        """Messages not delivered to every recipient (each one was logged)."""
        with self._condition:
            return self._failed

    def __repr__(self) -> str:
        with self._condition:
            state = "closed" if self._closed else "open"
            return (f"<Notifier smtp://{self._settings.host}:{self._settings.port} {state} "
                    f"sent={self._sent} failed={self._failed} queued={self._busy}>")

    def send(self, notice: JobNotice, recipients: Sequence[str]) -> None:
        """Queue the notice for *recipients* and return without waiting.

        Raises:
            ValueError: *recipients* is empty.
            RuntimeError: the notifier was closed.
        """
        recipients = tuple(recipients)
        if not recipients:
            raise ValueError(f"no recipients for the notice of job {notice.job_id}")
        with self._condition:  # (composed by the thread: a failure there stops no run)
            if self._closed:
                raise RuntimeError("the notifier is closed; no more notices can be sent")
            self._queue.append((notice, recipients, self._kept(notice, recipients)))
            self._busy += 1
            self._own += 1
            if self._thread is None:
                self._thread = start_thread(self._deliver_all, name="corral-notify")
            self._condition.notify_all()

    def _kept(self, notice: JobNotice, recipients: tuple[str, ...]) -> Path | None:
        """The file *notice* waits in (called with the lock held); None when it
        is kept nowhere, or cannot be written (said once, and the mail goes on)."""
        if self.keep_in is None:
            return None
        try:
            return keep(self.keep_in, notice, recipients)
        except OSError as error:
            if not self._said_unkept:
                log.warning("could not keep job notices in %s until they are sent (%s): a "
                            "driver killed before it sends them loses them", self.keep_in, error)
            self._said_unkept = True
            return None

    _said_unkept = False

    def _send_what_was_left(self, directory: Path) -> None:
        """Queue the notices a killed driver of the run left undelivered.
        Never raises: what is found there must not stop the run."""
        try:
            left = left_behind(directory, JobNotice)
        except Exception as error:
            log.error("could not read the job notices left in %s (%s: %s)", directory,
                      type(error).__name__, error)
            return
        if not left:
            return
        log.warning("sending %d job notice(s) that a driver of this run, killed, had not sent "
                    "(of jobs %s)", len(left),
                    first_few([str(notice.job_id) for _, notice, _ in left], 20))
        with self._condition:
            self._queue.extend((notice, recipients, path) for path, notice, recipients in left)
            self._busy += len(left)
            self._thread = start_thread(self._deliver_all, name="corral-notify")

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new notices, wait up to *timeout* s for queued ones, stop the thread.

        Messages still queued after *timeout* (or after :meth:`hurry`) are
        logged as not sent; the thread is a daemon, so it cannot keep the
        process alive. Calling ``close`` again is harmless.
        """
        started = time.monotonic()
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            if not self._own:  # (only an earlier driver's: a program that sent no mail
                # must not wait 10 s on a server that does not answer: attack review)
                timeout = min(timeout, LEFT_OVER_PATIENCE_S)
            self._give_up_at = started + min(timeout, self._patience)
            while self._busy and (left := self._give_up_at - time.monotonic()) > 0:
                self._condition.wait(left)
            left_over, thread, give_up_at = self._busy, self._thread, self._give_up_at
        if left_over:
            with self._condition:
                queued = [str(notice.job_id) for notice, _, _ in self._queue]
                # Given up, and said so: not sent again by a later driver.
                for path in [*self._in_flight, *(kept for _, _, kept in self._queue)]:
                    if path is not None:
                        forget(path)
            log.warning("%d job notice(s) not delivered through %s:%d after %.3g s, given up: "
                        "%s", left_over, self._settings.host, self._settings.port,
                        give_up_at - started, _not_delivered(queued, left_over - len(queued)))
            return
        if thread is not None:
            thread.join(max(0.0, give_up_at - time.monotonic()))

    def hurry(self, patience: float = 1.0) -> None:
        """Have :meth:`close` wait at most *patience* s for what is queued
        (from now, if it waits already): a person pressed Ctrl-C, and the
        program's end must not wait 10 s on a mail server that does not
        answer (review)."""
        with self._condition:
            self._patience = min(self._patience, patience)
            if self._give_up_at is not None:
                self._give_up_at = min(self._give_up_at, time.monotonic() + patience)
                self._condition.notify_all()

    def _deliver_all(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                notices, recipients, kept = self._take_for_one_message()
                self._in_flight = kept
            delivered = self._compose_and_deliver(notices, recipients)
            with self._condition:
                for path in kept:  # (delivered, or its failure logged)
                    forget(path)
                self._in_flight = []
                self._busy -= len(notices)
                if delivered:
                    self._sent += 1
                else:
                    self._failed += 1
                self._condition.notify_all()

    def _take_for_one_message(self) -> tuple[list[JobNotice], tuple[str, ...], list[Path]]:
        """The first queued notice and the others queued for the same
        addresses, up to :data:`DIGEST_MAX`, and the files they are kept in
        (called with the lock held)."""
        first, recipients, first_kept = self._queue.popleft()
        notices = [first]
        kept = [] if first_kept is None else [first_kept]
        others: list[_Queued] = []
        while self._queue and len(notices) < DIGEST_MAX:
            queued = self._queue.popleft()
            if queued[1] == recipients:
                notices.append(queued[0])
                if queued[2] is not None:
                    kept.append(queued[2])
            else:
                others.append(queued)
        self._queue.extendleft(reversed(others))
        return notices, recipients, kept

    def _compose_and_deliver(self, notices: list[JobNotice],
                             recipients: tuple[str, ...]) -> bool:
        sender = self._settings.sender
        try:
            message = (compose(notices[0], sender, recipients) if len(notices) == 1
                       else compose_digest(notices, sender, recipients))
        except Exception as error:  # a notice no mail can say: logged, and the run goes on
            log.error("could not compose the notice of job(s) %s: %s: %s",
                      ", ".join(str(notice.job_id) for notice in notices[:10]),
                      type(error).__name__, " ".join(str(error).split()))
            return False
        return self._deliver(message, recipients)

    def _deliver(self, message: EmailMessage, recipients: tuple[str, ...]) -> bool:
        settings = self._settings
        server = f"{settings.host}:{settings.port}"
        try:
            refused = _smtp_send(settings, message, recipients)
        except Exception as error:  # any failure is logged, never raised
            log.error("could not e-mail %r to %s through SMTP server %s: %s: %s",
                      message["Subject"], ", ".join(recipients), server,
                      type(error).__name__, " ".join(str(error).split()))  # one line
            return False
        if refused:
            log.error("SMTP server %s refused %s for %r: %s", server, ", ".join(refused),
                      message["Subject"],
                      "; ".join(f"{code} {reply!r}" for code, reply in refused.values()))
            return False
        log.info("e-mailed %r to %s through SMTP server %s", message["Subject"],
                 ", ".join(recipients), server)
        return True


#: The most :meth:`Notifier.close` waits for notices an earlier driver left,
#: when it was given none of its own.
LEFT_OVER_PATIENCE_S = 1.0

#: A queued notice: the notice, its recipients, and the file it is kept in (None: none).
_Queued = tuple[JobNotice, tuple[str, ...], "Path | None"]


def _not_delivered(queued: list[str], in_flight: int) -> str:
    """Which notices a close gave up on: the jobs of those still queued, and
    one being delivered, which the server may yet have taken."""
    said = []
    if queued:
        said.append(f"queued, of jobs {first_few(queued, 20)}")
    if in_flight > 0:
        said.append(f"{in_flight} being delivered, which the server may yet take")
    return "; ".join(said) or "none queued"


def _smtp_send(settings: SmtpSettings, message: EmailMessage,
               recipients: tuple[str, ...]) -> dict[str, tuple[int, bytes]]:
    """Deliver over one connection; return the recipients the server refused."""
    import smtplib  # loaded on first delivery: most runs never send mail
    import ssl

    if settings.ssl:
        client: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port,
                                                timeout=settings.timeout,
                                                context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    with client:
        if settings.starttls:
            client.starttls(context=ssl.create_default_context())
        if settings.username:
            client.login(settings.username, settings.password or "")
        return client.send_message(message, from_addr=settings.sender,
                                   to_addrs=list(recipients))
