"""The transactional outbox: a mail committed with the data it belongs to, and the sweeper that makes sure it is enqueued.

A view stages the mail in the same transaction as its own rows (stage_mail), commits, then
enqueues it (deliver_staged). If the process dies between the commit and the enqueue, or
Redis loses the job (a restart without AOF, a failover before the job reached the replica),
the row is still in the database: the sweeper enqueues it again. Enqueueing twice is safe:
the job id derives from the Message-ID, and the job's sent-marker stops a second send.
"""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta, timezone

from flask import current_app
from rq.job import Job, JobStatus
from sqlalchemy import delete, select, update

from app.connections import redis_client
from app.delivery import deliver_later, job_id_for, new_message_id, refuse_header_injection, sent_marker
from app.extensions import db
from app.models import utcnow

log = logging.getLogger(__name__)

# A job in one of these states will still run, or waits for a person (failed registry): leave it.
PENDING_STATES = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.FAILED}


class OutboxMail(db.Model):
    """A mail to send, committed with the rows it belongs to; deleted once the mail was sent."""

    __tablename__ = "outbox_mails"

    id = db.Column(db.Integer, primary_key=True)
    message_id = db.Column(db.String(255), unique=True, nullable=False)
    # deliver_later()'s arguments.
    template = db.Column(db.String(100), nullable=False)
    recipient = db.Column(db.String(254), nullable=False)
    subject = db.Column(db.String(255), nullable=False)
    context = db.Column(db.JSON, nullable=False)
    created_at = db.Column(db.DateTime(timezone=True), nullable=False, default=utcnow)
    # The sweeper leaves the row alone until then: the web's own enqueue has that long to land.
    check_after = db.Column(db.DateTime(timezone=True), nullable=False, index=True)
    # How often a sweeper claimed the row; a claim only wins if it saw the current count.
    sweeps = db.Column(db.Integer, nullable=False, default=0)
    # How often a sweeper found the job missing and enqueued it again.
    requeues = db.Column(db.Integer, nullable=False, default=0)

    def __repr__(self):
        """Show the Message-ID and the address when debugging."""
        return f"<OutboxMail {self.message_id} to {self.recipient}>"


def as_utc(moment):
    """An aware UTC datetime (SQLite hands back naive ones)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# --8<-- [start:stage]
def stage_mail(template, to, subject, context, message_id=None):
    """Add a mail (deliver_later()'s arguments) to the current transaction: sent only if it commits."""
    refuse_header_injection(to, subject)
    grace = current_app.config["OUTBOX_GRACE_SECONDS"]
    mail = OutboxMail(message_id=message_id or new_message_id(template), template=template, recipient=to,
                      subject=subject, context=context, check_after=utcnow() + timedelta(seconds=grace))
    db.session.add(mail)
    return mail


def deliver_staged(mail):
    """Enqueue a committed outbox mail now (may raise RedisError: the sweeper sends it later)."""
    return deliver_later(mail.template, mail.recipient, mail.subject, mail.context, mail.message_id)
# --8<-- [end:stage]


def job_state(message_id):
    """'sent', 'pending' or 'missing': what Redis knows of the mail's job, in one round trip.

    Read in one MULTI so the marker and the job's status are seen at the same moment. No job
    hash, or a job stopped or canceled, counts as missing and is enqueued again: to stop a mail
    for good, delete its outbox row too. After a failover the new primary holds a prefix of the
    old one's writes, a state RQ itself recovers from, except a job that is not there at all.
    """
    with redis_client("jobs").pipeline() as pipe:
        pipe.exists(sent_marker(message_id))
        pipe.hget(Job.key_for(job_id_for(message_id)), "status")
        marked, status = pipe.execute()
    status = status.decode() if status else None
    if marked or status == JobStatus.FINISHED:
        return "sent"
    if status in PENDING_STATES:
        return "pending"
    return "missing"


@dataclass
class SweepResult:
    """What one sweep did, row by row."""

    sent: int = 0  # rows removed because their mail went out
    pending: int = 0  # rows whose job is still in Redis
    requeued: int = 0  # rows enqueued again: their job was lost
    given_up: int = 0  # rows older than OUTBOX_GIVE_UP_AFTER, removed without seeing their mail sent

    def __str__(self):
        """One line for logs and the CLI."""
        return f"{self.sent} sent, {self.pending} pending, {self.requeued} requeued, {self.given_up} given up"


def claim(mail, now):
    """Take the row for one grace period; False if another sweeper took it first."""
    grace = timedelta(seconds=current_app.config["OUTBOX_GRACE_SECONDS"])
    claimed = db.session.execute(
        update(OutboxMail)
        .where(OutboxMail.id == mail.id, OutboxMail.sweeps == mail.sweeps)
        .values(sweeps=OutboxMail.sweeps + 1, check_after=now + grace)
    )
    db.session.commit()
    return claimed.rowcount == 1


def settle(mail, oldest):
    """Act on one claimed row and return what happened: 'sent', 'pending', 'requeued' or 'given_up'."""
    state = job_state(mail.message_id)
    fresh = as_utc(mail.created_at) >= oldest
    if state == "pending" and fresh:
        return "pending"
    if state == "missing" and fresh:
        # A stopped or canceled job's hash would make the unique enqueue a no-op: clear it first.
        redis_client("jobs").delete(Job.key_for(job_id_for(mail.message_id)))
        deliver_staged(mail)
        db.session.execute(update(OutboxMail).where(OutboxMail.id == mail.id).values(requeues=OutboxMail.requeues + 1))
        db.session.commit()
        log.warning("outbox: job of %s was not in Redis, enqueued it again", mail.message_id)
        return "requeued"
    if state != "sent":
        # Its link has expired by now; a job Redis still has may run, but nobody watches it any more.
        log.error("outbox: giving up on %s to %s (job %s), staged %s", mail.message_id, mail.recipient, state, mail.created_at)
    db.session.execute(delete(OutboxMail).where(OutboxMail.id == mail.id))
    db.session.commit()
    return "sent" if state == "sent" else "given_up"


def sweep(limit=500):
    """Look at each outbox row past its grace period: clear the sent, enqueue again the lost.

    Safe to run from several hosts at once: each row is claimed before it is looked at.
    Raises RedisError if the jobs Redis is unreachable (the rows stay for the next sweep).
    """
    now = utcnow()
    oldest = now - timedelta(seconds=current_app.config["OUTBOX_GIVE_UP_AFTER"])
    result = SweepResult()
    due = db.session.scalars(
        select(OutboxMail).where(OutboxMail.check_after <= now).order_by(OutboxMail.id).limit(limit)
    ).all()
    for mail in due:
        if claim(mail, now):
            outcome = settle(mail, oldest)
            setattr(result, outcome, getattr(result, outcome) + 1)
    return result


def sweep_forever(every, echo=print):
    """Sweep every `every` seconds until stopped; an unreachable Redis or database waits for the next round."""
    while True:
        try:
            result = sweep()
            if result.sent or result.requeued or result.given_up:
                echo(f"outbox: {result}")
        except Exception as exc:  # noqa: BLE001 - the loop must outlive a Redis or database outage
            db.session.rollback()
            echo(f"outbox: sweep failed, trying again in {every}s: {type(exc).__name__}: {exc}")
        finally:
            db.session.remove()
        time.sleep(every)
