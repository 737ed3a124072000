"""Signed, salted, time-limited confirmation tokens (itsdangerous)."""

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

CONFIRM_SALT = "email-confirm"


class TokenInvalid(Exception):
    """The token was tampered with or is not a confirmation token."""


class TokenExpired(Exception):
    """The token is genuine but older than CONFIRM_TOKEN_MAX_AGE."""


def _serializer():
    """The serializer keyed with SECRET_KEY and salted for confirmation links only."""
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=CONFIRM_SALT)


def make_confirm_token(user):
    """Return a token naming the user and the address it confirms."""
    return _serializer().dumps({"uid": user.id, "email": user.email})


def read_confirm_token(token):
    """Return (user id, email) from a token, or raise TokenInvalid / TokenExpired."""
    try:
        data = _serializer().loads(token, max_age=current_app.config["CONFIRM_TOKEN_MAX_AGE"])
    except SignatureExpired as exc:
        raise TokenExpired() from exc
    except BadSignature as exc:
        raise TokenInvalid() from exc
    if not isinstance(data, dict) or "uid" not in data or "email" not in data:
        raise TokenInvalid()
    return data["uid"], data["email"]
