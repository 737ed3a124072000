"""app.mime (the writing speed-up) writes the very bytes Flask-Mail writes, faster, and a shared body addresses each copy right."""

import email
import random
import string
from email import policy

import pytest
from flask_mail import BadHeaderError, Message, sanitize_address

from app.delivery import build_message
from app.dev.previews import PREVIEWS
from app.mime import SMTP_POLICY, MailMessage, SharedMail, header_address, set_boundaries
from app.smtp import relay_connections

STOCK = policy.SMTP  # what Flask-Mail's Message writes with


def written(mime, writing_policy):
    """`mime` as bytes under a policy."""
    mime.policy = writing_policy
    return mime.as_bytes()


@pytest.mark.parametrize("template", sorted(PREVIEWS))
@pytest.mark.parametrize("subject_extra, to", [
    ("", "ada@example.com"),
    (" with  two  spaces\tand a tab and enough words to need folding past seventy-eight", "o'neil+tag@example.com"),
    (" – Ümlaut", "ada@bücher.example"),
    (" 確認メールです。" * 6, "ada@example.com"),  # long and non-ASCII: folded into encoded words
])
def test_smtp_policy_writes_what_flask_mail_writes(app, template, subject_extra, to):
    with app.test_request_context():
        preview = PREVIEWS[template]
        message = build_message(template, to, preview["subject"] + subject_extra, preview["context"](), "<t.1@example.com>")
        mime = message._message()
        set_boundaries(mime)
        assert written(mime, SMTP_POLICY) == written(mime, STOCK)


def test_boundaries_are_set_once_and_unique(app):
    with app.test_request_context():
        preview = PREVIEWS["email/confirm"]
        mime = build_message("email/confirm", "ada@example.com", "Hi", preview["context"](), "<t.1@example.com>")._message()
        set_boundaries(mime)
        boundaries = [part.get_boundary() for part in mime.walk() if part.is_multipart()]
        assert len(boundaries) == 2 and len(set(boundaries)) == 2
        assert all(boundary is not None for boundary in boundaries)


def test_shared_mail_copies_differ_only_in_recipient_and_message_id(app):
    with app.test_request_context():
        context = {"body": "Line one.\nLine two."}
        shared = SharedMail("email/announcement", "News", context, "first@example.com", "<a.1@example.com>")
        copy = shared.to("second@bücher.example", "<a.2@example.com>")
        parsed = email.message_from_bytes(copy.as_bytes(), policy=policy.default)
        alone = email.message_from_bytes(
            build_message("email/announcement", "second@bücher.example", "News", context, "<a.2@example.com>").as_bytes(),
            policy=policy.default,
        )
    assert copy.recipients == ["second@bücher.example"] and copy.msgId == "<a.2@example.com>"
    assert parsed["To"] == alone["To"] == "second@xn--bcher-kva.example"
    assert parsed["Message-ID"] == "<a.2@example.com>"
    assert parsed["Subject"] == alone["Subject"]
    for kind in ("plain", "html"):
        assert parsed.get_body((kind,)).get_content() == alone.get_body((kind,)).get_content()
    assert getattr(shared.first, "prepared", None) is None  # the first message still writes itself


def test_header_address_is_what_flask_mail_writes():
    rng = random.Random(5)
    local, domain = string.ascii_letters + string.digits + ".!#$%&'*+/=?^_`{|}~-", string.ascii_letters + string.digits + ".-"
    bare = [
        "".join(rng.choice(local) for _ in range(rng.randint(1, 12))) + "@" + "".join(rng.choice(domain) for _ in range(rng.randint(1, 10)))
        for _ in range(20_000)
    ]
    # Flask-Mail's parse changes these (a display name, IDN, a comment, spaces, brackets): no fast path.
    parsed = ["Ada <ada@example.com>", "ada@bücher.example", "a(note)@example.com", " ada@example.com ",
              "ada@exa mple.com", "Zoë <zoe@example.com>", "<ada@example.com>", "ada@example.com (Ada)"]
    for address in bare + parsed:
        assert header_address(address) == sanitize_address(address), address
    assert [sanitize_address(address) != address for address in parsed] == [True] * len(parsed)


def test_shared_mail_sends_what_flask_mail_sends(app, smtp_server):
    """SharedMail.send() skips Flask-Mail's per-copy parsing: same envelope, same bytes."""
    with app.test_request_context():
        shared = SharedMail("email/announcement", "News", {"body": "Hello."}, "first@example.com", "<a.1@example.com>")
        with relay_connections().connection() as connection:
            connection.send(shared.to("o'neil+news@example.com", "<a.2@example.com>"))  # Flask-Mail's own way
            shared.send(connection, "o'neil+news@example.com", "<a.3@example.com>")
            shared.send(connection, "ada@bücher.example", "<a.4@example.com>")  # needs Flask-Mail's encoding
        relay_connections().close_all()
    maildir = smtp_server.handler.maildir
    stored = sorted((maildir.get_bytes(key) for key in maildir.keys()), key=lambda raw: raw.split(b"Message-ID: ")[1][:12])
    assert stored[0].replace(b"<a.2@", b"<a.3@") == stored[1]
    by_flask_mail, by_shared, by_fallback = smtp_server.handler.envelopes
    assert by_shared == by_flask_mail == ("noreply@example.com", ["o'neil+news@example.com"])
    assert by_fallback == ("noreply@example.com", ["ada@xn--bcher-kva.example"])
    assert b"To: ada@xn--bcher-kva.example\r\n" in stored[2]


def test_shared_mail_refuses_a_subject_that_would_add_headers(app):
    with app.test_request_context(), pytest.raises(BadHeaderError):
        SharedMail("email/announcement", "Hi\r\nBcc: victim@evil.example", {"body": "x"}, "a@example.com", "<a.1@example.com>")


def test_single_mails_are_written_by_the_lean_policy_with_the_same_content(app):
    with app.test_request_context():
        preview = PREVIEWS["email/confirm"]
        message = build_message("email/confirm", "ada@bücher.example", "Bienvenue – ça va", preview["context"](), "<t.1@example.com>")
        message.date = 1_700_000_000  # Flask-Mail would stamp the time of writing
        lean = email.message_from_bytes(message.as_bytes(), policy=policy.default)
        stock = email.message_from_bytes(Message.as_bytes(message), policy=policy.default)
    assert isinstance(message, MailMessage)
    assert lean.keys() == stock.keys()
    for name in stock.keys():
        if name != "Content-Type":  # the boundary is random
            assert lean[name] == stock[name], name
    for kind in ("plain", "html"):
        assert lean.get_body((kind,)).get_content() == stock.get_body((kind,)).get_content()
