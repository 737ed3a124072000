"""An announcement's batch job: one mail to each recipient not yet served, the batches side by side in the worker.

Each recipient's mail has a Message-ID fixed by (announcement, user), and the job's
sent-marker (app.mail.job), so a batch that is interrupted and run again skips everyone
already served. Each batch borrows one of the worker's kept SMTP connections, so
WORKER_CONCURRENCY batches send at once. The mail is the same for everybody, so a batch
renders and writes it once (SharedCopies); each copy is a Flask-Mail Message sent by Connection.send().
The batch's arguments carry its recipients (app.mail.announcements): no database here.
"""

import copy
import re
from email import policy

from flask_mail import BadHeaderError, Message, sanitize_address

from app.connections import redis_client
from app.mail.job import PermanentMailError, describe, is_permanent, mark_sent, retried_unless_permanent, sent_marker
from app.mail.messages import ANNOUNCEMENT, build_message, new_message_id
from app.mail.transport import relay_connections


# --8<-- [start:shared_copies]
class PreparedCopy(Message):
    """Flask-Mail's Message, carrying its bytes when they were written beforehand (a copy of an announcement)."""

    prepared = None

    def as_bytes(self):
        """The bytes Connection.send() sends: written beforehand, or by Flask-Mail now."""
        return self.prepared if self.prepared is not None else super().as_bytes()


class SharedCopies:
    """One announcement written once by Flask-Mail, then addressed to each recipient with two header lines.

    Writing the MIME message is most of a copy's cost (about 1 ms). The first message's bytes,
    from Flask-Mail's own Message.as_bytes(), are kept but for their To and Message-ID headers;
    each copy gets those two, folded by the policy Flask-Mail writes with (email.policy.SMTP),
    and still goes out through Connection.send(), which checks and records it like any mail.
    """

    PER_RECIPIENT = (b"to:", b"message-id:")

    def __init__(self, first):
        """Write `first` (a PreparedCopy) once and keep the parts every copy shares."""
        self.first = first
        head, _, self.body = first.as_bytes().partition(b"\r\n\r\n")
        headers = re.split(rb"\r\n(?![ \t])", head)  # one item per header, its folded lines included
        self.head = b"".join(line + b"\r\n" for line in headers if not line.lower().startswith(self.PER_RECIPIENT))

    def copy_for(self, address, message_id):
        """The message for `address` with its own Message-ID, its bytes ready (no rendering, no MIME writing)."""
        message = copy.copy(self.first)  # not Message(): its make_msgid() looks up this host's FQDN each time
        message.recipients = [address]
        message.msgId = message_id
        to = policy.SMTP.fold_binary("To", sanitize_address(address, self.first.charset or "utf-8"))
        message.prepared = self.head + to + policy.SMTP.fold_binary("Message-ID", message_id) + b"\r\n" + self.body
        return message
# --8<-- [end:shared_copies]


def send_announcement_batch(announcement_id, subject, body, recipients, message_id):
    """The batch job: send to each user not yet served, over one borrowed SMTP connection.

    Transient errors raise (the batch is retried; sent mails are skipped). Recipients the
    server refuses for good are collected, and the batch then fails with their reasons, so
    a requeue after fixing them resends only to them. `message_id` names the batch's outbox
    row; its sent-marker, written at the end, tells the sweeper the batch is done. `recipients`
    is a list of [user id, address] pairs.
    """
    jobs_redis = redis_client("jobs")
    message_ids = [new_message_id("announce", f"{announcement_id}.{user_id}") for user_id, _ in recipients]
    already_sent = jobs_redis.pipeline(transaction=False)
    for recipient_id in message_ids:
        already_sent.exists(sent_marker(recipient_id))
    done = already_sent.execute()

    pending = [(email, mail_id) for (_, email), mail_id, skip in zip(recipients, message_ids, done, strict=True)
               if not skip]
    sent, refused = 0, {}
    if not pending:
        mark_sent(message_id)
        return {"sent": 0, "skipped": len(recipients)}
    with retried_unless_permanent(f"announcement {announcement_id}"):  # e.g. a missing template, a bad subject
        first = build_message(ANNOUNCEMENT, pending[0][0], subject, {"body": body}, pending[0][1], PreparedCopy)
        if first.has_bad_headers():
            raise BadHeaderError
        copies = SharedCopies(first)
    with relay_connections().connection() as smtp:
        for email, mail_id in pending:
            try:
                smtp.send(copies.copy_for(email, mail_id))  # Flask-Mail's Connection.send: email_dispatched fires
            except Exception as exc:
                if not is_permanent(exc):
                    raise  # the borrowed connection is closed; the retried batch skips who got it
                refused[email] = describe(exc)
                continue
            mark_sent(mail_id)
            sent += 1
    if refused:
        with retried_unless_permanent(f"announcement {announcement_id}"):
            raise PermanentMailError(f"{len(refused)} recipient(s) refused: {refused}")
    mark_sent(message_id)  # the whole batch: the sweeper clears its outbox row
    return {"sent": sent, "skipped": len(recipients) - len(pending)}
