"""SMTP over TLS checks the relay's certificate: refused without its CA, sent with it (STARTTLS and SSL)."""

import os
import smtplib
import ssl
import subprocess

import pytest
from aiosmtpd.controller import Controller

from app.mail.delivery import deliver_now
from app.mail.transport import relay_connections
from tests.support import ScriptedMaildirHandler, free_port, wait_for


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for `localhost` (openssl CLI): (cert file, key file)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "relay.pem", directory / "relay.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture(params=["starttls", "ssl"])
def tls_relay(request, certificate, tmp_path):
    """A local aiosmtpd relay speaking STARTTLS or implicit TLS with the self-signed certificate."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = ScriptedMaildirHandler(str(tmp_path / "tls-maildir"))
    port = free_port()
    if request.param == "starttls":
        controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    else:
        controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=context,
                                server_hostname="localhost")
    controller.start()
    yield request.param, port, handler
    controller.stop()


def tls_app(make_app, redis_url, mode, port, ca_file=None):
    """A testing app that sends to the TLS relay on `localhost`, trusting `ca_file` if given."""
    return make_app(redis_url, MAIL_SERVER="localhost", MAIL_PORT=port, MAIL_USE_TLS=mode == "starttls",
                    MAIL_USE_SSL=mode == "ssl", MAIL_CA_FILE=str(ca_file) if ca_file else None)


def send(app):
    """Send one confirmation mail right now, then close the kept connection."""
    with app.test_request_context():
        try:
            return deliver_now("email/confirm", "ada@example.com", "Hi", {"email": "ada@example.com", "confirm_url": "x"})
        finally:
            relay_connections().close_all()


def test_relay_with_an_unknown_certificate_is_refused(make_app, redis_url, tls_relay):
    mode, port, handler = tls_relay
    with pytest.raises(ssl.SSLCertVerificationError):
        send(tls_app(make_app, redis_url, mode, port))
    assert handler.attempts == 0


def test_relay_is_trusted_with_its_ca_file(make_app, redis_url, tls_relay, certificate):
    mode, port, handler = tls_relay
    send(tls_app(make_app, redis_url, mode, port, ca_file=certificate[0]))
    wait_for(lambda: handler.attempts == 1, message="the mail at the TLS relay")


def open_sockets():
    """How many sockets this process holds open (Linux /proc)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
    return count


def test_a_failed_starttls_closes_its_connection(make_app, redis_url, smtp_server):
    """The relay offers no STARTTLS: the send fails, and the half-made connection is closed, not left to the GC."""
    app = make_app(redis_url, MAIL_USE_TLS=True)
    with app.test_request_context():
        before = open_sockets()
        with pytest.raises(smtplib.SMTPNotSupportedError) as failed:  # its traceback still holds the connection
            deliver_now("email/confirm", "ada@example.com", "Hi", {"email": "ada@example.com", "confirm_url": "x"})
        # The SMTP server of the smtp_server fixture runs in this process: its side of the
        # connection closes a moment after ours. A connection left to the GC stays open (the
        # traceback in `failed` holds it), so the count never comes back.
        wait_for(lambda: open_sockets() == before, timeout=3, message=f"the sockets of {failed.value!r} to close")


def test_suppressed_sending_talks_to_no_server(make_app, redis_url, smtp_server):
    """MAIL_SUPPRESS_SEND (Flask-Mail's switch) holds for the pooled connections too: recorded, never sent."""
    app = make_app(redis_url, MAIL_SUPPRESS_SEND=True)  # the real SMTP server: a send would arrive there
    mail = app.extensions["mail"]
    with app.test_request_context(), mail.record_messages() as outbox:
        deliver_now("email/confirm", "ada@example.com", "Hi", {"email": "ada@example.com", "confirm_url": "x"})
        deliver_now("email/confirm", "bob@example.com", "Hi", {"email": "bob@example.com", "confirm_url": "x"})
    assert [message.recipients for message in outbox] == [["ada@example.com"], ["bob@example.com"]]
    assert smtp_server.messages == []
