"""Sample data for every mail template, so each can be previewed without sending anything."""

from flask import url_for

# template name -> the subject and a JSON-safe context like the one the real mail gets.
PREVIEWS = {
    "email/confirm": {
        "subject": "Confirm your account",
        "context": lambda: {
            "email": "ada@example.com",
            "confirm_url": url_for("auth.confirm", token="preview-token-not-valid", _external=True),
        },
    },
    "email/account_exists": {
        "subject": "You already have an account",
        "context": lambda: {"email": "ada@example.com", "login_url": url_for("auth.login", _external=True)},
    },
    "email/announcement": {
        "subject": "What's new this month",
        "context": lambda: {"email": "ada@example.com", "body": "We shipped faster mail.\nThanks for being here!"},
    },
}
