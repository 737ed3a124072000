"""Read the catcher's Maildir: the messages for the dev inbox, newest first."""

import mailbox
import os
from email import policy
from email.parser import BytesParser
from email.utils import parsedate_to_datetime


def open_maildir(path):
    """Open the Maildir read-only in spirit (we never write to it here)."""
    return mailbox.Maildir(path, factory=None, create=False) if os.path.isdir(path) else None


def parse(raw_bytes):
    """Parse a stored message with the modern email API."""
    return BytesParser(policy=policy.default).parsebytes(raw_bytes)


def summary(key, message):
    """The inbox row of a message: to, subject, date."""
    date = message["Date"]
    return {
        "key": key,
        "to": str(message["To"] or ""),
        "subject": str(message["Subject"] or ""),
        "date": parsedate_to_datetime(date) if date else None,
    }


def list_messages(path):
    """Return every stored message's summary, newest first."""
    maildir = open_maildir(path)
    if maildir is None:
        return []
    rows = [summary(key, parse(maildir.get_bytes(key))) for key in maildir.keys()]
    return sorted(rows, key=lambda row: (row["date"] is not None, row["date"]), reverse=True)


def read_message(path, key):
    """Return one message's headers, text and HTML, or None if there is no such key."""
    maildir = open_maildir(path)
    if maildir is None or key not in maildir:
        return None
    message = parse(maildir.get_bytes(key))
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return {
        **summary(key, message),
        "headers": list(message.items()),
        "text": text.get_content() if text else "",
        "html": html.get_content() if html else "",
    }
