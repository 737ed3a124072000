"""Mail: deliver_later() enqueues on `mailers`, deliver_now() sends; send_mail_job() is the RQ job."""

import copy
import hashlib
import logging
import smtplib
import uuid
from contextlib import contextmanager
from email.utils import parseaddr

from flask import current_app, render_template
from flask_mail import BadHeaderError, Message
from jinja2 import TemplateNotFound
from rq import Retry, get_current_job

from app.connections import get_queue, redis_client, wait_for_replica
from app.mime import SharedBody, to_bytes
from app.smtp import MailConnection

log = logging.getLogger(__name__)

# The job is enqueued by dotted path, so the web process never imports worker code.
MAIL_JOB = "app.mail.send_mail_job"
SENT_MARKER_PREFIX = "mail:sent:"


class PermanentMailError(Exception):
    """A mail the SMTP server refused for good (5xx): retrying cannot help."""


class MailMessage(Message):
    """Flask-Mail's Message, written out by app.mime.

    Flask-Mail sets email.policy.SMTP before generating, which re-parses every header through
    the header registry: about 3.5 ms a mail here. The headers are already encoded by
    Flask-Mail, so app.mime writes them with a compat32 policy: the same bytes in 0.6 ms.
    """

    #: The whole mail as bytes, when it was written beforehand (see SharedMail).
    prepared = None

    def as_bytes(self):
        """The mail as bytes, ready for SMTP DATA."""
        if self.prepared is not None:
            return self.prepared
        return to_bytes(self._message())


def has_line_break(*values):
    """True if any value holds CR or LF, the way a header injection starts."""
    return any("\r" in value or "\n" in value for value in values)


def new_message_id(kind, key=None):
    """Return a Message-ID fixed at enqueue time, so every re-run of the job sends the same mail.

    With a key (e.g. a user id plus a time window) the id is deterministic; without one it is
    random but still chosen once, before the job exists.
    """
    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    domain = parseaddr(sender)[1].partition("@")[2] or "localhost"
    local_part = f"{kind}.{key}" if key is not None else f"{kind}.{uuid.uuid4().hex}"
    return f"<{local_part.replace('/', '.')}@{domain}>"


def job_id_for(message_id):
    """Derive the RQ job id from the Message-ID: enqueueing one mail twice gives one job."""
    return "mail-" + hashlib.sha256(message_id.encode()).hexdigest()[:32]


# --8<-- [start:build_message]
def build_message(template, to, subject, context, message_id):
    """Render `<template>.txt` and `<template>.html` into a Flask-Mail Message."""
    prefix = current_app.config["MAIL_SUBJECT_PREFIX"]
    message = MailMessage(
        subject=prefix + subject,
        recipients=[to],
        body=render_template(f"{template}.txt", **context),
        html=render_template(f"{template}.html", **context),
    )
    message.msgId = message_id
    return message

# --8<-- [end:build_message]


class SharedMail:
    """One mail rendered and written once, then addressed to many recipients (announcements)."""

    def __init__(self, template, subject, context, to, message_id):
        """Build the mail for one recipient; its body is what every copy shares."""
        self.first = build_message(template, to, subject, context, message_id)
        self.shared = SharedBody(self.first._message(), self.first.charset or "utf-8")

    def to(self, address, message_id):
        """A MailMessage for `address` whose bytes are ready (no rendering, no MIME writing)."""
        message = copy.copy(self.first)  # not MailMessage(): its make_msgid() looks up this host's FQDN
        message.recipients = [address]
        message.msgId = message_id
        message.prepared = self.shared.for_recipient(address, message_id)
        return message


# --8<-- [start:deliver_later]
def deliver_later(template, to, subject, context, message_id=None):
    """Enqueue a mail on the `mailers` queue and return the RQ job. Never talks to SMTP.

    `context` must be JSON-safe: it travels through Redis as the job's arguments.
    """
    if has_line_break(to, subject):
        raise ValueError("mail headers must not contain line breaks")
    message_id = message_id or new_message_id(template)
    config = current_app.config
    intervals = config["MAIL_RETRY_INTERVALS"]
    job = get_queue("mailers").enqueue(
        MAIL_JOB,
        kwargs={
            "template": template,
            "to": to,
            "subject": subject,
            "context": context,
            "message_id": message_id,
        },
        job_id=job_id_for(message_id),
        description=f"mail {template} to {to}",
        job_timeout=config["MAIL_JOB_TIMEOUT"],
        failure_ttl=config["MAIL_FAILURE_TTL"],
        # Transient failures (and a worker killed mid-send) are retried after these delays.
        retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
    )
    wait_for_replica()  # a failover right after this answer cannot lose the job (app.connections)
    return job
# --8<-- [end:deliver_later]


def deliver_now(template, to, subject, context, message_id=None, connection=None):
    """Render and send a mail right now over SMTP; return its Message-ID."""
    message = build_message(template, to, subject, context, message_id or new_message_id(template))
    send_message(message, connection)
    return message.msgId


def send_message(message, connection=None):
    """Send a built message over `connection`, or over a new connection closed afterwards."""
    if connection is not None:
        connection.send(message)
    else:
        with MailConnection(current_app.extensions["mail"]) as new_connection:
            new_connection.send(message)


# --8<-- [start:is_permanent]
def is_permanent(exc):
    """Classify a send error: True for a refusal that a retry cannot fix."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code >= 500
    return isinstance(exc, (BadHeaderError, TemplateNotFound, smtplib.SMTPNotSupportedError))
# --8<-- [end:is_permanent]


def describe(exc):
    """A one-line, readable reason for the failed registry."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(
            f"{rcpt}: {code} {msg.decode(errors='replace')}" for rcpt, (code, msg) in exc.recipients.items()
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        message = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        return f"SMTP {exc.smtp_code} {message}"
    return f"{type(exc).__name__}: {exc}"


# --8<-- [start:send_mail_job]
def send_once(message, kept=None):
    """Send a built message over the worker's kept SMTP connection (or a new one), then write the sent-marker.

    `kept` is the worker process's KeptConnection (set by app.worker.FlaskWorker), if any;
    it is dropped on any error so the next mail starts on a fresh connection.
    """
    try:
        send_message(message, kept.get() if kept else None)
    except Exception:
        if kept:
            kept.drop()
        raise
    if kept:
        kept.mark_used()
    # A crash between the server's accept and this write is the one window for a duplicate.
    redis_client("jobs").set(SENT_MARKER_PREFIX + message.msgId, 1, ex=current_app.config["MAIL_SENT_MARKER_TTL"])


def give_up(reason):
    """A PermanentMailError for the current job, with its retries used up.

    RQ would otherwise retry it like any transient error; raise what this returns.
    """
    job = get_current_job()
    if job is not None:
        job.retries_left = 0
    return PermanentMailError(reason)


@contextmanager
def retried_unless_permanent(label):
    """Let transient errors in the block through (RQ retries them); fail the job for good on permanent ones."""
    try:
        yield
    except Exception as exc:
        if is_permanent(exc):
            raise give_up(f"{label}: {describe(exc)}") from exc
        raise


def send_mail_job(template, to, subject, context, message_id):
    """The RQ job on `mailers`: send one mail once, whatever number of times the job runs.

    Runs inside the Flask app context that app.worker.FlaskWorker pushes for each job.
    """
    if redis_client("jobs").exists(SENT_MARKER_PREFIX + message_id):
        log.info("mail %s already accepted by the SMTP server, not sending again", message_id)
        return {"message_id": message_id, "skipped": True}
    with retried_unless_permanent(to):
        send_once(build_message(template, to, subject, context, message_id), current_app.extensions.get("smtp_connection"))
    return {"message_id": message_id, "skipped": False}
# --8<-- [end:send_mail_job]

