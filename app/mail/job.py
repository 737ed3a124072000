"""The RQ job that sends one mail, and its failure policy: retry what may pass, fail for good what cannot, never send twice."""

import hashlib
import logging
import smtplib
from contextlib import contextmanager

from flask import current_app
from flask_mail import BadHeaderError
from jinja2 import TemplateNotFound
from rq import get_current_job

from app.connections import redis_client
from app.mail.messages import build_message
from app.mail.transport import relay_connections

log = logging.getLogger(__name__)

SENT_MARKER_PREFIX = "mail:sent:"


class PermanentMailError(Exception):
    """A mail that can never be sent as it is (a 5xx refusal, a bad address): retrying cannot help."""


def job_id_for(message_id):
    """The RQ job id of a mail, derived from its Message-ID."""
    return "mail-" + hashlib.sha256(message_id.encode()).hexdigest()[:32]


def sent_marker(message_id):
    """The Redis key that says the relay accepted this mail (mail:sent:<Message-ID>)."""
    return SENT_MARKER_PREFIX + message_id


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


# --8<-- [start:retried_unless_permanent]
@contextmanager
def retried_unless_permanent(label):
    """Let transient errors through (RQ retries the job); fail it for good on permanent ones."""
    try:
        yield
    except Exception as exc:
        if not is_permanent(exc):
            raise
        if (job := get_current_job()) is not None:
            # RQ 3.0 retries every exception of a job enqueued with Retry and documents no way to
            # stop for one: its worker retries while Job.retries_left > 0, so this ends the retries.
            job.retries_left = 0
        if isinstance(exc, PermanentMailError):
            raise
        raise PermanentMailError(f"{label}: {describe(exc)}") from exc
# --8<-- [end:retried_unless_permanent]


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
        with relay_connections().connection() as smtp:  # a kept Flask-Mail Connection (app.mail.transport)
            smtp.send(message)
    # A crash between the relay's answer and this write is the one window for a duplicate.
    mark_sent(message_id)
    return {"message_id": message_id, "skipped": False}
# --8<-- [end:send_mail_job]
