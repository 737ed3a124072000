"""Delivering mail: deliver_later() puts a job on `mailers`, send_mail_job() is that job."""

import hashlib
import logging
import smtplib
import uuid
from contextlib import contextmanager
from email.utils import parseaddr

from flask import current_app, render_template
from flask_mail import BadHeaderError
from jinja2 import TemplateNotFound
from rq import Retry, get_current_job
from rq.exceptions import DuplicateJobError

from app.connections import get_queue, redis_client, wait_for_replica
from app.mime import MailMessage
from app.smtp import relay_connections

log = logging.getLogger(__name__)

SENT_MARKER_PREFIX = "mail:sent:"


class PermanentMailError(Exception):
    """A mail that can never be sent as it is (a 5xx refusal, a bad address): retrying cannot help."""


def has_line_break(*values):
    """True if any value holds CR or LF, the way a header injection starts."""
    return any("\r" in value or "\n" in value for value in values)


def refuse_header_injection(to, subject):
    """Raise ValueError if the recipient or subject could smuggle in extra mail headers."""
    if has_line_break(to, subject):
        raise ValueError("mail headers must not contain line breaks")


def sent_marker(message_id):
    """The Redis key that says the relay accepted this mail (mail:sent:<Message-ID>)."""
    return SENT_MARKER_PREFIX + message_id


def new_message_id(kind, key=None):
    """A Message-ID fixed before the job exists, so every run sends the same mail (random unless `key` fixes it)."""
    domain = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])[1].partition("@")[2] or "localhost"
    local_part = f"{kind}.{key}" if key is not None else f"{kind}.{uuid.uuid4().hex}"
    return f"<{local_part.replace('/', '.')}@{domain}>"


def job_id_for(message_id):
    """The RQ job id of a mail, derived from its Message-ID."""
    return "mail-" + hashlib.sha256(message_id.encode()).hexdigest()[:32]


# --8<-- [start:build_message]
def build_message(template, to, subject, context, message_id):
    """Render `<template>.txt` and `<template>.html` into a Flask-Mail Message (app.mime writes it faster)."""
    message = MailMessage(
        subject=current_app.config["MAIL_SUBJECT_PREFIX"] + subject,
        recipients=[to],
        body=render_template(f"{template}.txt", **context),
        html=render_template(f"{template}.html", **context),
    )
    message.msgId = message_id
    return message
# --8<-- [end:build_message]


# --8<-- [start:deliver_later]
def deliver_later(template, to, subject, context, message_id=None):
    """Enqueue a mail on `mailers` (context: JSON-safe) and return its RQ job; never talks to SMTP."""
    refuse_header_injection(to, subject)
    message_id = message_id or new_message_id(template)
    config, queue = current_app.config, get_queue("mailers")
    intervals = config["MAIL_RETRY_INTERVALS"]  # a transient failure (or a killed worker) is retried after these
    try:
        job = queue.enqueue(
            send_mail_job,  # stored as "app.delivery.send_mail_job"; the worker imports it
            kwargs={"template": template, "to": to, "subject": subject, "context": context, "message_id": message_id},
            job_id=job_id_for(message_id),
            unique=True,  # the same mail enqueued again raises: we return the job already there
            description=f"mail {template} to {to}",
            job_timeout=config["MAIL_JOB_TIMEOUT"],
            failure_ttl=config["MAIL_FAILURE_TTL"],
            retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
        )
    except DuplicateJobError:
        return queue.fetch_job(job_id_for(message_id))
    wait_for_replica()  # a failover right after this answer cannot lose the job (app.connections)
    return job
# --8<-- [end:deliver_later]


def deliver_now(template, to, subject, context, message_id=None):
    """Render and send a mail right now over SMTP; return its Message-ID."""
    message = build_message(template, to, subject, context, message_id or new_message_id(template))
    with relay_connections().connection() as smtp:
        smtp.send(message)
    return message.msgId


# --8<-- [start:is_permanent]
# A 5xx while connecting, greeting or logging in is about the relay or our settings (a wrong
# MAIL_PASSWORD, too many connections), not the mail: retried, so mails wait for the fix.
RELAY_ERRORS = (smtplib.SMTPConnectError, smtplib.SMTPHeloError, smtplib.SMTPAuthenticationError)


def is_permanent(exc):
    """Classify a send error: True for one a retry cannot fix (a 5xx for this mail; an address or header that cannot be encoded)."""
    if isinstance(exc, RELAY_ERRORS):
        return False
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code >= 500
    permanent = (PermanentMailError, BadHeaderError, TemplateNotFound, smtplib.SMTPNotSupportedError, UnicodeError)
    return isinstance(exc, permanent)
# --8<-- [end:is_permanent]


def describe(exc):
    """A one-line, readable reason for the failed registry (the caller names the recipient: one per mail)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{code} {msg.decode(errors='replace')}" for code, msg in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error
        return f"SMTP {exc.smtp_code} {error.decode(errors='replace') if isinstance(error, bytes) else error}"
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def retried_unless_permanent(label):
    """Let transient errors through (RQ retries the job); fail it for good on permanent ones."""
    try:
        yield
    except Exception as exc:
        if not is_permanent(exc):
            raise
        if (job := get_current_job()) is not None:
            job.retries_left = 0  # RQ would otherwise retry it like any other error
        if isinstance(exc, PermanentMailError):
            raise
        raise PermanentMailError(f"{label}: {describe(exc)}") from exc


def mark_sent(message_id):
    """Remember that the relay accepted this mail, so no later run of its job sends it again."""
    redis_client("jobs").set(sent_marker(message_id), 1, ex=current_app.config["MAIL_SENT_MARKER_TTL"])


# --8<-- [start:send_mail_job]
def send_mail_job(template, to, subject, context, message_id):
    """The RQ job on `mailers` (in the app context app.worker gives it): send one mail once, however often it runs."""
    if redis_client("jobs").exists(sent_marker(message_id)):
        log.info("mail %s already accepted by the SMTP server, not sending again", message_id)
        return {"message_id": message_id, "skipped": True}
    with retried_unless_permanent(to):
        message = build_message(template, to, subject, context, message_id)
        with relay_connections().connection() as smtp:  # one of the worker's kept SMTP connections
            smtp.send(message)
    # A crash between the relay's answer and this write is the one window for a duplicate.
    mark_sent(message_id)
    return {"message_id": message_id, "skipped": False}
# --8<-- [end:send_mail_job]
