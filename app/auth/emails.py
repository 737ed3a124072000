"""The mails of the signup flow, each enqueued with deliver_later()."""

import time

from flask import url_for

from app.auth.tokens import make_confirm_token
from app.connections import redis_client
from app.delivery import deliver_later, new_message_id

# At most one "you already have an account" mail per address in this many seconds,
# so a double submit (or someone probing addresses) cannot flood an inbox.
NOTICE_WINDOW = 15 * 60


def claim_notice(user):
    """Return True if no account notice went to this user in the current window (and claim it)."""
    key = f"mail:notice:{user.id}"
    return bool(redis_client("jobs").set(key, 1, nx=True, ex=NOTICE_WINDOW))


# --8<-- [start:send_confirmation]
def confirmation_mail(user):
    """deliver_later()'s arguments for the mail with the signed confirmation link."""
    confirm_url = url_for("auth.confirm", token=make_confirm_token(user), _external=True)
    return {"template": "email/confirm", "to": user.email, "subject": "Confirm your account",
            "context": {"email": user.email, "confirm_url": confirm_url}}


def send_confirmation(user):
    """Enqueue a fresh confirmation mail (the resend button; signup goes through the outbox)."""
    return deliver_later(**confirmation_mail(user))

# --8<-- [end:send_confirmation]

def notify_existing_account(user):
    """Tell an address that already has an account so, at most once per window."""
    if not claim_notice(user):
        return None
    window = int(time.time() // NOTICE_WINDOW)
    return deliver_later(
        "email/account_exists",
        to=user.email,
        subject="You already have an account",
        context={"email": user.email, "login_url": url_for("auth.login", _external=True)},
        message_id=new_message_id("account-exists", f"{user.id}.{window}"),
    )
