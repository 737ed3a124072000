"""Flask-Mail's contract: every kind of mail goes out through Flask-Mail, so email_dispatched fires and record_messages() sees it.

Each test makes the mail the way the app does (a request, a `flask` command), then runs the
jobs it queued in this process, where Flask-Mail's recorder listens, and checks that what
Flask-Mail recorded is what the real SMTP server received.
"""

import email
from email import policy

import pytest
from flask_mail import email_dispatched

from app.extensions import mail
from app.mail.announcement_batch import PreparedCopy, SharedCopies
from app.mail.messages import ANNOUNCEMENT, build_message
from app.mail.transport import relay_connections
from app.models import User, utcnow
from app.web_extensions import db
from tests.support import csrf_token, login, mailers_queue, signup

PASSWORD = "correct horse battery"


def add_user(app, email, confirmed):
    """An account made directly in the database."""
    with app.app_context():
        user = User(email=email, confirmed_at=utcnow() if confirmed else None)
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()


def make_mails(kind, app):
    """Have the app queue the mails of one kind, as a visitor or an operator would; return their recipients."""
    client, runner = app.test_client(), app.test_cli_runner()
    if kind == "confirmation":
        assert signup(client, "ada@example.com").status_code == 302
        return ["ada@example.com"]
    if kind == "resend":
        add_user(app, "ada@example.com", confirmed=False)
        login(client, "ada@example.com")
        token = csrf_token(client.get("/auth/unconfirmed").get_data(as_text=True))
        assert client.post("/auth/resend", data={"csrf_token": token}).status_code == 302
        return ["ada@example.com"]
    if kind == "account notice":
        add_user(app, "ada@example.com", confirmed=True)
        assert signup(client, "ada@example.com").status_code == 302
        return ["ada@example.com"]
    if kind == "test mail":
        assert runner.invoke(args=["send-test-mail", "ada@example.com"]).exit_code == 0
        return ["ada@example.com"]
    for n in range(3):  # an announcement
        add_user(app, f"user{n}@example.com", confirmed=True)
    assert runner.invoke(args=["announce", "--subject", "News", "--body", "Hello"]).exit_code == 0
    return [f"user{n}@example.com" for n in range(3)]


@pytest.mark.parametrize("kind", ["confirmation", "resend", "account notice", "test mail", "announcement"])
def test_every_kind_of_mail_is_sent_by_flask_mail(kind, app, smtp_server):
    recipients = make_mails(kind, app)
    jobs = mailers_queue(app).jobs
    assert jobs, "nothing was queued"
    dispatched = []

    def on_dispatched(sender, message):
        dispatched.append(message.msgId)

    with app.app_context(), mail.record_messages() as outbox, email_dispatched.connected_to(on_dispatched):
        try:
            for job in jobs:
                job.perform()  # the job's own function, in this process
        finally:
            relay_connections().close_all()  # the kept SMTP connections, as the worker closes them at exit
    assert sorted(r for message in outbox for r in message.recipients) == sorted(recipients)
    received = smtp_server.wait_for_messages(len(recipients))
    assert sorted(message["Message-ID"] for message in received) == sorted(dispatched)
    assert sorted(message.msgId for message in outbox) == sorted(dispatched)


@pytest.mark.parametrize("address", ["second@example.com", "second@bücher.example", "Zoë <zoe@example.com>"])
def test_an_announcement_copy_is_the_mail_flask_mail_writes_for_its_recipient(app, address):
    subject = "News – " + "確認メールです。" * 6  # non-ASCII and long: folded into encoded words
    context = {"body": "Line one.\nLine two."}
    with app.test_request_context():
        first = build_message(ANNOUNCEMENT, "first@example.com", subject, context, "<a.1@example.com>", PreparedCopy)
        shared = SharedCopies(first).copy_for(address, "<a.2@example.com>")
        alone = build_message(ANNOUNCEMENT, address, subject, context, "<a.2@example.com>")
        copy, stock = (email.message_from_bytes(message.as_bytes(), policy=policy.default) for message in (shared, alone))
    assert shared.recipients == [address] and shared.msgId == "<a.2@example.com>"
    assert sorted(copy.keys()) == sorted(stock.keys())
    for name in stock.keys():
        if name not in ("Date", "Content-Type"):  # the time of writing; the random boundary
            assert copy[name] == stock[name], name
    for kind in ("plain", "html"):
        assert copy.get_body((kind,)).get_content() == stock.get_body((kind,)).get_content()
