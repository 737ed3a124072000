"""SMTP transport: Flask-Mail's connection with a fixed EHLO name, kept open across jobs in a worker."""

import smtplib
import time

from flask import current_app
from flask_mail import Connection


class MailConnection(Connection):
    """Flask-Mail's SMTP connection, plus a fixed EHLO name and a socket timeout.

    Without local_hostname, smtplib looks up this host's FQDN on every new connection.
    """

    def configure_host(self):
        """Open the SMTP connection the way Flask-Mail does, with our two extra settings."""
        config = current_app.config
        smtp_class = smtplib.SMTP_SSL if self.mail.use_ssl else smtplib.SMTP
        host = smtp_class(
            self.mail.server,
            self.mail.port,
            local_hostname=config["MAIL_LOCAL_HOSTNAME"],
            timeout=config["MAIL_TIMEOUT"],
        )
        if self.mail.use_tls:
            host.starttls()
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host


class KeptConnection:
    """One SMTP connection that a worker process reuses from job to job.

    Connecting, EHLO and QUIT cost a few round trips per mail; a worker sending mail after
    mail can skip them. A connection idle for longer than IDLE_CHECK seconds is checked with
    NOOP before reuse, because servers drop idle clients. Any send error drops it.
    """

    IDLE_CHECK = 10

    def __init__(self):
        """Start with no connection; the first get() opens one."""
        self.connection = None
        self.last_used = 0.0

    def get(self):
        """Return an open connection, reconnecting if the old one went stale."""
        if self.connection is not None and time.monotonic() - self.last_used > self.IDLE_CHECK:
            try:
                self.connection.host.noop()
            except (smtplib.SMTPException, OSError):
                self.drop()
        if self.connection is None:
            self.connection = MailConnection(current_app.extensions["mail"])
            self.connection.host = self.connection.configure_host()
        return self.connection

    def mark_used(self):
        """Note that the connection just worked."""
        self.last_used = time.monotonic()

    def drop(self):
        """Close and forget the connection (after an error, or at worker exit)."""
        connection, self.connection = self.connection, None
        if connection is not None and connection.host is not None:
            try:
                connection.host.quit()
            except (smtplib.SMTPException, OSError):
                connection.host.close()
