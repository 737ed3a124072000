"""A local SMTP catcher (aiosmtpd) that keeps every message in a Maildir for the dev inbox.

Run it with:  python -m app.dev.mailcatcher --port 1025 --maildir instance/maildir
"""

import argparse
import asyncio
import logging
import mailbox
import os
import signal

from aiosmtpd.controller import Controller

log = logging.getLogger("mailcatcher")


class MaildirHandler:
    """aiosmtpd handler: accept every message and store it, bytes unchanged, in a Maildir."""

    def __init__(self, maildir_path):
        """Open (or create) the Maildir; mailbox makes cur/, new/ and tmp/ only for a new folder."""
        os.makedirs(os.path.dirname(os.path.abspath(maildir_path)), exist_ok=True)
        self.maildir = mailbox.Maildir(maildir_path, create=True)

    async def handle_DATA(self, server, session, envelope):
        """Store the message and answer 250."""
        key = self.maildir.add(envelope.original_content or envelope.content)
        log.info("stored mail %s from %s to %s", key, envelope.mail_from, ", ".join(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


def start_catcher(maildir_path, host="127.0.0.1", port=1025, handler=None):
    """Start the SMTP server in a background thread and return its aiosmtpd Controller."""
    controller = Controller(handler or MaildirHandler(maildir_path), hostname=host, port=port)
    controller.start()
    return controller


def main():
    """Command line entry: run until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MAIL_PORT", 1025)))
    parser.add_argument("--maildir", default=os.environ.get("MAILDIR", "instance/maildir"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every connection

    controller = start_catcher(args.maildir, args.host, args.port)
    log.info("SMTP catcher on %s:%s, storing mail in %s", args.host, args.port, os.path.abspath(args.maildir))
    loop = asyncio.new_event_loop()
    stop = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    loop.run_until_complete(stop)
    controller.stop()


if __name__ == "__main__":
    main()
