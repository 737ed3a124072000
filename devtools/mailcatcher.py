"""A local SMTP catcher (aiosmtpd) that keeps every message in a Maildir for the dev inbox.

Run it with:  python -m devtools.mailcatcher --port 1025 --maildir instance/maildir
"""

import argparse
import asyncio
import logging
import mailbox
import os
import signal

from aiosmtpd.controller import Controller

log = logging.getLogger("mailcatcher")


# --8<-- [start:refusals]
# Two made-up mailboxes let you watch failures with the real worker (docs/failures.md):
# the catcher answers like a real server that is busy, or that has no such user.
REFUSALS = {
    "busy": "451 4.3.0 Mailbox busy, try again later (the dev catcher defers busy@ addresses)",
    "bounce": "550 5.1.1 No such user here (the dev catcher refuses bounce@ addresses)",
}
# --8<-- [end:refusals]


class MaildirHandler:
    """aiosmtpd handler: store every message, bytes unchanged, in a Maildir (busy@ and bounce@ are refused)."""

    def __init__(self, maildir_path):
        """Open (or create) the Maildir; mailbox makes cur/, new/ and tmp/ only for a new folder."""
        os.makedirs(os.path.dirname(os.path.abspath(maildir_path)), exist_ok=True)
        self.maildir = mailbox.Maildir(maildir_path, create=True)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """Accept the recipient, unless its mailbox name is one of REFUSALS."""
        refusal = REFUSALS.get(address.partition("@")[0].lower())
        if refusal:
            log.info("refused %s: %s", address, refusal)
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

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
