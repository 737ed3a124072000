"""Bulk mail: an announcement to every confirmed user, staged as batch jobs in the caller's transaction.

Each batch is an outbox row (app.mail.delivery), enqueued after the commit and swept like any
mail. A batch carries its recipients' ids and addresses, read here in one query, so the worker
that sends it (app.mail.announcement_batch) needs no database.
"""

import uuid

from flask import current_app
from sqlalchemy import select

from app.mail.delivery import deliver_later
from app.mail.messages import ANNOUNCEMENT, has_line_break, new_message_id
from app.models import User
from app.web_extensions import db


def announce(subject, body, batch_size=None):
    """Stage an announcement to all confirmed users, one outbox row per batch, and commit; return (id, batches, recipients).

    The batch jobs are enqueued after the commit, and the outbox sweeper enqueues again any
    that Redis did not take or lost, as for every other mail. The addresses are those of the
    moment of the announcement, as a confirmation mail's address is that of its signup.
    """
    if has_line_break(subject):
        raise ValueError("an announcement's subject must not contain line breaks")
    batch_size = batch_size or current_app.config["ANNOUNCE_BATCH_SIZE"]
    announcement_id = uuid.uuid4().hex[:12]
    users = db.session.execute(select(User.id, User.email).where(User.confirmed_at.is_not(None)).order_by(User.id)).all()
    recipients = [[user_id, email] for user_id, email in users]  # JSON-ready: the job's arguments
    batches = [recipients[start:start + batch_size] for start in range(0, len(recipients), batch_size)]
    for number, batch in enumerate(batches):
        deliver_later(ANNOUNCEMENT, f"batch {number} of announcement {announcement_id} ({len(batch)} users)", subject,
                      {"announcement_id": announcement_id, "body": body, "recipients": batch},
                      message_id=new_message_id("announce", f"{announcement_id}.batch{number}"))
    db.session.commit()  # every batch or none
    return announcement_id, len(batches), len(recipients)
