"""How a mail travels: SMTP connections to the relay (verified TLS, RFC 5321 timeouts), a few kept open, all Flask-Mail's.

Every mail goes out through Flask-Mail's Connection.send(), so Flask-Mail's email_dispatched
signal fires for it and mail.record_messages() sees it. The one thing changed is how a
Connection opens its SMTP session (configure_host, which Connection.__enter__ calls).
"""

import queue
import smtplib
import ssl
import threading
import time
from contextlib import ExitStack, contextmanager

from flask import current_app
from flask_mail import Connection


class RelaySMTP(smtplib.SMTP):
    """smtplib.SMTP that waits up to `data_timeout` seconds for the reply to the mail's DATA.

    The relay answers DATA only once it stored the mail; RFC 5321 (4.5.3.2) gives it 10 minutes.
    Giving up sooner is how one mail is sent twice: stored there, retried here.
    """

    data_timeout = 600

    def data(self, msg):
        """Send the mail's content with the long timeout, then go back to the short one."""
        self.sock.settimeout(self.data_timeout)
        try:
            return super().data(msg)
        finally:
            if self.sock is not None:
                self.sock.settimeout(self.timeout)


class RelaySMTP_SSL(RelaySMTP, smtplib.SMTP_SSL):  # noqa: N801 - named after smtplib.SMTP_SSL
    """The same, over implicit TLS (port 465)."""


def tls_context(config):
    """A TLS context that checks the relay's certificate and name (MAIL_CA_FILE adds a CA)."""
    return ssl.create_default_context(cafile=config["MAIL_CA_FILE"] or None)


class RelayConnection(Connection):
    """Flask-Mail's Connection, its SMTP session opened with verified TLS, a fixed EHLO name and RFC timeouts.

    Without a context, smtplib's starttls() and SMTP_SSL accept any certificate; without
    local_hostname, it looks up this host's FQDN on every new connection.
    """

    def configure_host(self):
        """Open the SMTP session the way Flask-Mail does, with those settings."""
        config = current_app.config
        options = {"local_hostname": config["MAIL_LOCAL_HOSTNAME"], "timeout": config["MAIL_TIMEOUT"]}
        if self.mail.use_ssl:
            host = RelaySMTP_SSL(self.mail.server, self.mail.port, context=tls_context(config), **options)
        else:
            host = RelaySMTP(self.mail.server, self.mail.port, **options)
        host.data_timeout = config["MAIL_DATA_TIMEOUT"]
        try:
            if self.mail.use_tls:
                host.starttls(context=tls_context(config))
            if self.mail.username and self.mail.password:
                host.login(self.mail.username, self.mail.password)
        except BaseException:
            host.close()  # Connection.__enter__ has not returned: nobody else would close it
            raise
        return host


class PooledConnection:
    """A RelayConnection entered as its `with` block would enter it, kept open until close()."""

    def __init__(self):
        """Enter a new connection (no SMTP session when MAIL_SUPPRESS_SEND is on, as in Flask-Mail)."""
        self.stack = ExitStack()
        self.connection = self.stack.enter_context(RelayConnection(current_app.extensions["mail"]))
        self.used_at = time.monotonic()

    def answers(self):
        """True if the server still answers NOOP (or there is no server: sending is suppressed)."""
        if self.connection.host is None:
            return True
        try:
            return self.connection.host.noop()[0] == 250
        except (smtplib.SMTPException, OSError):
            return False

    def close(self):
        """Leave the `with` block: Flask-Mail says QUIT; a server that is already gone is only closed."""
        try:
            self.stack.close()
        except (smtplib.SMTPException, OSError):
            self.connection.host.close()


class ConnectionPool:
    """Up to MAIL_MAX_CONNECTIONS SMTP connections to the relay, kept open and lent out one at a time.

    Each concurrent sender borrows one, so a worker running 25 mails at once holds at most
    25 connections (relays limit them: MAIL_MAX_CONNECTIONS); a sender waits for a free one.
    A connection idle for IDLE_CHECK seconds is checked with NOOP before reuse (servers drop
    idle clients), and any error while it was lent out closes it.
    """

    IDLE_CHECK = 10

    def __init__(self, size):
        """Start with no connection open; they are opened as senders need them."""
        self.slots = threading.BoundedSemaphore(size)
        self.idle = queue.LifoQueue()  # most recently used first

    @contextmanager
    def connection(self):
        """Lend an open Flask-Mail Connection for one send (or several), and take it back afterwards."""
        self.slots.acquire()
        kept = None
        try:
            kept = self.take()
            yield kept.connection
            kept.used_at = time.monotonic()
            self.idle.put(kept)
        except BaseException:
            if kept is not None:
                kept.close()
            raise
        finally:
            self.slots.release()

    def take(self):
        """An idle connection that still answers, or a new one."""
        while True:
            try:
                kept = self.idle.get_nowait()
            except queue.Empty:
                return PooledConnection()
            if time.monotonic() - kept.used_at < self.IDLE_CHECK or kept.answers():
                return kept
            kept.close()

    def close_all(self):
        """Say goodbye to the relay on every idle connection (at worker exit)."""
        while True:
            try:
                self.idle.get_nowait().close()
            except queue.Empty:
                return


_pool_lock = threading.Lock()


def relay_connections():
    """The current app's pool of SMTP connections to the relay (created on first use)."""
    app = current_app._get_current_object()
    with _pool_lock:
        if "smtp_pool" not in app.extensions:
            app.extensions["smtp_pool"] = ConnectionPool(app.config["MAIL_MAX_CONNECTIONS"])
        return app.extensions["smtp_pool"]

