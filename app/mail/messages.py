"""What each mail says: its template, subject and context, its Message-ID, and the Flask-Mail Message it renders to."""

import time
import uuid
from email.utils import parseaddr

from flask import current_app, render_template, url_for
from flask_mail import Message
from redis.exceptions import RedisError

from app.connections import redis_client

# At most one "you already have an account" mail per address in this many seconds,
# so a double submit (or someone probing addresses) cannot flood an inbox.
NOTICE_WINDOW = 15 * 60
# An announcement's outbox row stands for one batch job of it (app.mail.announcements), not for one mail.
ANNOUNCEMENT = "email/announcement"
ANNOUNCEMENT_BATCH_JOB = "app.mail.announcement_batch.send_announcement_batch"


def has_line_break(*values):
    """True if any value holds CR or LF, the way a header injection starts."""
    return any("\r" in value or "\n" in value for value in values)


def new_message_id(kind, key=None):
    """A Message-ID fixed before the job exists, so every run sends the same mail (random unless `key` fixes it)."""
    domain = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])[1].partition("@")[2] or "localhost"
    local_part = f"{kind}.{key}" if key is not None else f"{kind}.{uuid.uuid4().hex}"
    return f"<{local_part.replace('/', '.')}@{domain}>"


# --8<-- [start:confirmation_mail]
def confirmation_mail(user, token):
    """deliver_later()'s arguments for the mail with the confirmation link; `token` is signed by app.auth.tokens."""
    confirm_url = url_for("auth.confirm", token=token, _external=True)
    return {"template": "email/confirm", "to": user.email, "subject": "Confirm your account",
            "context": {"email": user.email, "confirm_url": confirm_url}}
# --8<-- [end:confirmation_mail]


def account_notice(user):
    """deliver_later()'s arguments for "you already have an account": one Message-ID per address and window."""
    window = int(time.time() // NOTICE_WINDOW)
    return {"template": "email/account_exists", "to": user.email, "subject": "You already have an account",
            "context": {"email": user.email, "login_url": url_for("auth.login", _external=True)},
            "message_id": new_message_id("account-exists", f"{user.id}.{window}")}


def sample_confirmation(address):
    """deliver_later()'s arguments for `flask send-test-mail`: the confirmation mail, with a dummy link."""
    link = url_for("auth.confirm", token="this-is-a-test", _external=True)  # on SITE_URL
    return {"template": "email/confirm", "to": address, "subject": "Confirm your account",
            "context": {"email": address, "confirm_url": link}}


def claim_notice(user):
    """True if no account notice went to this user in the current window (and claim it).

    A jobs Redis that is down or full cannot say: the notice is then sent (its Message-ID,
    one per window, still keeps it to one mail), so the answer is the same as when it is up.
    """
    try:
        return bool(redis_client("jobs").set(f"mail:notice:{user.id}", 1, nx=True, ex=NOTICE_WINDOW))
    except RedisError as exc:
        current_app.logger.warning("notice window of user %s not checked: %s", user.id, exc)
        return True


# --8<-- [start:build_message]
def build_message(template, to, subject, context, message_id, message_class=Message):
    """Render `<template>.txt` and `<template>.html` into a Flask-Mail Message with the given Message-ID."""
    message = message_class(
        subject=current_app.config["MAIL_SUBJECT_PREFIX"] + subject,
        recipients=[to],
        body=render_template(f"{template}.txt", **context),
        html=render_template(f"{template}.html", **context),
    )
    message.msgId = message_id
    return message
# --8<-- [end:build_message]
