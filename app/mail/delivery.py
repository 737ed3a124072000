"""deliver_later(): a mail staged in the caller's transaction and enqueued once it commits, and the sweeper behind it.

The outbox: deliver_later() adds an outbox row to the current transaction and enqueues the
mail's job once that transaction commits (Rails 7.2's enqueue after commit), so a mail exists
exactly when the data it belongs to does. If Redis is down or full then, or the process dies
between the commit and the enqueue, or Redis later loses the job (a restart without AOF, a
failover before the job reached the replica), the row is still in the database: the sweeper
enqueues it again. Enqueueing twice is safe: the job id derives from the Message-ID (RQ's
unique=True), and the job's sent-marker stops a second send.
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from flask import current_app
from redis.exceptions import RedisError
from rq import Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session

from app.connections import get_queue, redis_client, wait_for_replica
from app.mail.job import job_id_for, send_mail_job, sent_marker
from app.mail.messages import ANNOUNCEMENT, ANNOUNCEMENT_BATCH_JOB, build_message, has_line_break, new_message_id
from app.mail.transport import relay_connections
from app.models import utcnow
from app.web_extensions import db

log = logging.getLogger(__name__)

STAGED = "mail.staged"  # session.info key: the mails of the open transaction, enqueued after its commit
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
    # When the mail is due (deliver_later(wait=...) or wait_until=...); None: at once.
    send_at = db.Column(db.DateTime(timezone=True), nullable=True)
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

    @property
    def job_id(self):
        """The id of the mail's RQ job (from its Message-ID)."""
        return job_id_for(self.message_id)

    def job_arguments(self):
        """enqueue()'s arguments for this row, plain values that outlive the session."""
        return {"template": self.template, "to": self.recipient, "subject": self.subject, "context": self.context,
                "message_id": self.message_id, "send_at": as_utc(self.send_at) if self.send_at else None}


def as_utc(moment):
    """An aware UTC datetime (SQLite hands back naive ones)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def refuse_header_injection(to, subject):
    """Raise ValueError if the recipient or subject could smuggle in extra mail headers."""
    if has_line_break(to, subject):
        raise ValueError("mail headers must not contain line breaks")


def due_time(wait=None, wait_until=None):
    """When a mail is due: now + `wait` (seconds or a timedelta), `wait_until` (an aware datetime), or None for now."""
    if wait is not None and wait_until is not None:
        raise ValueError("give wait or wait_until, not both")
    if wait is not None:
        return utcnow() + (wait if isinstance(wait, timedelta) else timedelta(seconds=wait))
    if wait_until is not None:
        if not isinstance(wait_until, datetime) or wait_until.tzinfo is None:
            raise ValueError("wait_until must be a timezone-aware datetime")
        return wait_until.astimezone(timezone.utc)
    return None


# --8<-- [start:deliver_later]
def deliver_later(template, to, subject, context, message_id=None, wait=None, wait_until=None):
    """Stage a mail in the current transaction; its job is enqueued once the transaction commits.

    `context` must be JSON-safe. `wait` (seconds or a timedelta) or `wait_until` (an aware
    datetime) delay it, as ActionMailer's deliver_later(wait:) and (wait_until:) do. Returns
    the outbox row; the same Message-ID staged again returns the row already there.
    """
    refuse_header_injection(to, subject)
    send_at = due_time(wait, wait_until)
    message_id = message_id or new_message_id(template)
    staged = db.session.scalar(select(OutboxMail).filter_by(message_id=message_id))
    if staged is not None:
        return staged
    grace = timedelta(seconds=current_app.config["OUTBOX_GRACE_SECONDS"])
    mail = OutboxMail(message_id=message_id, template=template, recipient=to, subject=subject, context=context,
                      send_at=send_at, check_after=(send_at or utcnow()) + grace)
    db.session.add(mail)
    db.session.info.setdefault(STAGED, []).append(mail.job_arguments())
    return mail


@event.listens_for(Session, "after_commit")
def enqueue_committed(session):
    """After a commit, enqueue the mails it staged; one that fails to enqueue is left to the sweeper."""
    for arguments in session.info.pop(STAGED, []):
        try:
            enqueue(**arguments)
        except RedisError as exc:  # the row is committed: the sweeper enqueues it after OUTBOX_GRACE_SECONDS
            log.warning("mail %s left to the outbox sweeper: %s", arguments["message_id"], exc)


@event.listens_for(Session, "after_rollback")
def forget_rolled_back(session):
    """A rolled-back transaction staged nothing: its mails are not enqueued."""
    session.info.pop(STAGED, None)
# --8<-- [end:deliver_later]


# --8<-- [start:enqueue]
def enqueue(template, to, subject, context, message_id, send_at=None):
    """Put a committed mail's job on `mailers` (or scheduled until `send_at`) and return the RQ job; never talks to SMTP."""
    config, queue = current_app.config, get_queue("mailers")
    intervals = config["MAIL_RETRY_INTERVALS"]  # a transient failure (or a killed worker) is retried after these
    function, kwargs = send_mail_job, {"template": template, "to": to, "subject": subject, "context": context,
                                       "message_id": message_id}
    if template == ANNOUNCEMENT:  # one batch of an announcement: its job, its recipients in the context
        function, kwargs = ANNOUNCEMENT_BATCH_JOB, {**context, "subject": subject, "message_id": message_id}
    job = {
        "kwargs": kwargs,
        "job_id": job_id_for(message_id),
        "unique": True,  # the same mail enqueued again raises DuplicateJobError: the job is there already
        "description": f"mail {template} to {to}",
        "job_timeout": config["ANNOUNCE_JOB_TIMEOUT" if template == ANNOUNCEMENT else "MAIL_JOB_TIMEOUT"],
        "failure_ttl": config["MAIL_FAILURE_TTL"],
        "retry": Retry(max=len(intervals), interval=intervals) if intervals else None,
    }
    try:
        if send_at is not None and send_at > utcnow():
            enqueued = queue.enqueue_at(send_at, function, **job)  # RQ's scheduler moves it to the queue when due
        else:
            enqueued = queue.enqueue(function, **job)  # stored as "app.mail.job.send_mail_job"; the worker imports it
    except DuplicateJobError:
        return queue.fetch_job(job["job_id"])
    wait_for_replica()  # a failover right after this cannot lose the job (app.connections)
    return enqueued
# --8<-- [end:enqueue]


def deliver_now(template, to, subject, context, message_id=None):
    """Render and send a mail right now over SMTP, with no outbox and no job; return its Message-ID."""
    message = build_message(template, to, subject, context, message_id or new_message_id(template))
    with relay_connections().connection() as smtp:
        smtp.send(message)
    return message.msgId


# --- the sweeper ----------------------------------------------------------------------------------


def job_state(message_id):
    """'sent', 'pending' or 'missing': what Redis knows of the mail's job (RQ's Job.fetch and get_status).

    No job, or a job stopped or canceled, counts as missing and is enqueued again: to stop a
    mail for good, delete its outbox row too. The job is read before the marker, so a job that
    finishes and expires in between is still seen as sent.
    """
    connection = redis_client("jobs")
    try:
        status = Job.fetch(job_id_for(message_id), connection=connection, serializer=JSONSerializer).get_status()
    except NoSuchJobError:
        status = None
    if status == JobStatus.FINISHED or connection.exists(sent_marker(message_id)):
        return "sent"
    return "pending" if status in PENDING_STATES else "missing"


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
    fresh = as_utc(mail.send_at or mail.created_at) >= oldest  # a scheduled mail is as old as its due time
    if state == "pending" and fresh:
        return "pending"
    if state == "missing" and fresh:
        # A stopped or canceled job would make the unique enqueue a no-op: delete it first (RQ's Job.delete).
        try:
            Job.fetch(mail.job_id, connection=redis_client("jobs"), serializer=JSONSerializer).delete()
        except NoSuchJobError:
            pass
        enqueue(**mail.job_arguments())
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
