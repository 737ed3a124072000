"""Bulk mail: an announcement to every confirmed user, in batch jobs that the worker runs side by side.

Each recipient's mail has a Message-ID fixed by (announcement, user), and the job's
sent-marker (app.mail.job), so a batch that is interrupted and run again skips everyone
already served. Each batch borrows one of the worker's kept SMTP connections, so
WORKER_CONCURRENCY batches send at once. The mail is the same for everybody, so a batch
renders its templates once; each copy is a Flask-Mail Message sent by Connection.send().
"""

import copy
import uuid

from flask import current_app
from flask_mail import BadHeaderError
from rq import Retry
from sqlalchemy import select

from app.connections import get_queue, redis_client
from app.extensions import db
from app.mail.job import PermanentMailError, describe, is_permanent, mark_sent, retried_unless_permanent, sent_marker
from app.mail.messages import ANNOUNCEMENT, build_message, has_line_break, new_message_id
from app.mail.transport import relay_connections
from app.models import User

BATCH_JOB = "app.mail.announcements.send_announcement_batch"


def announce(subject, body, batch_size=None):
    """Enqueue an announcement to all confirmed users; return (announcement id, batches, recipients)."""
    if has_line_break(subject):
        raise ValueError("an announcement's subject must not contain line breaks")
    config = current_app.config
    batch_size = batch_size or config["ANNOUNCE_BATCH_SIZE"]
    announcement_id = uuid.uuid4().hex[:12]
    user_ids = db.session.scalars(select(User.id).where(User.confirmed_at.is_not(None)).order_by(User.id)).all()
    batches = [user_ids[start:start + batch_size] for start in range(0, len(user_ids), batch_size)]
    intervals = config["MAIL_RETRY_INTERVALS"]
    jobs = [
        get_queue("mailers").prepare_data(
            BATCH_JOB,
            kwargs={"announcement_id": announcement_id, "subject": subject, "body": body, "user_ids": batch},
            job_id=f"announce-{announcement_id}-{number}",
            description=f"announcement {announcement_id} batch {number} ({len(batch)} users)",
            timeout=config["ANNOUNCE_JOB_TIMEOUT"],
            failure_ttl=config["MAIL_FAILURE_TTL"],
            retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
        )
        for number, batch in enumerate(batches)
    ]
    # One transaction: either every batch is queued or none is.
    get_queue("mailers").enqueue_many(jobs)
    return announcement_id, len(batches), len(user_ids)


def copy_for(first, address, message_id):
    """The batch's rendered Message, addressed to `address` with its own Message-ID (no rendering again)."""
    message = copy.copy(first)  # not Message(): its make_msgid() looks up this host's FQDN each time
    message.recipients = [address]
    message.msgId = message_id
    return message


def send_announcement_batch(announcement_id, subject, body, user_ids):
    """The batch job: send to each user not yet served, over one borrowed SMTP connection.

    Transient errors raise (the batch is retried; sent mails are skipped). Recipients the
    server refuses for good are collected, and the batch then fails with their reasons, so
    a requeue after fixing them resends only to them.
    """
    jobs_redis = redis_client("jobs")
    recipients = db.session.execute(select(User.id, User.email).where(User.id.in_(user_ids)).order_by(User.id)).all()
    # Give the pooled connection back (ending the transaction) before the sends (10 s and more): the
    # worker runs WORKER_CONCURRENCY batches at once, more than the pool has connections.
    db.session.close()
    message_ids = [new_message_id("announce", f"{announcement_id}.{user_id}") for user_id, _ in recipients]
    already_sent = jobs_redis.pipeline(transaction=False)
    for message_id in message_ids:
        already_sent.exists(sent_marker(message_id))
    done = already_sent.execute()

    pending = [(email, message_id) for (_, email), message_id, skip in zip(recipients, message_ids, done, strict=True)
               if not skip]
    sent, refused = 0, {}
    if not pending:
        return {"sent": 0, "skipped": len(recipients)}
    with retried_unless_permanent(f"announcement {announcement_id}"):  # e.g. a missing template, a bad subject
        first = build_message(ANNOUNCEMENT, pending[0][0], subject, {"body": body}, pending[0][1])
        if first.has_bad_headers():
            raise BadHeaderError
    with relay_connections().connection() as smtp:
        for email, message_id in pending:
            try:
                smtp.send(copy_for(first, email, message_id))  # Flask-Mail's Connection.send: email_dispatched fires
            except Exception as exc:
                if not is_permanent(exc):
                    raise  # the borrowed connection is closed; the retried batch skips who got it
                refused[email] = describe(exc)
                continue
            mark_sent(message_id)
            sent += 1
    if refused:
        with retried_unless_permanent(f"announcement {announcement_id}"):
            raise PermanentMailError(f"{len(refused)} recipient(s) refused: {refused}")
    return {"sent": sent, "skipped": len(recipients) - len(pending)}
