"""deliver_later(wait=...) and (wait_until=...): the job waits in RQ's scheduled registry, as durable as any mail, sent once when due."""

import time
from datetime import datetime, timedelta, timezone

import pytest
import redis
from rq.registry import ScheduledJobRegistry

from app.mail.delivery import OutboxMail, deliver_later, sweep
from app.mail.messages import sample_confirmation
from app.models import utcnow
from app.web_extensions import db
from tests.support import mailers_queue, wait_for


def stage(app, **when):
    """Stage the test mail with `wait` or `wait_until` and commit, as a view would; return (job id, due time)."""
    with app.test_request_context():
        mail = deliver_later(**sample_confirmation("ada@example.com"), **when)
        db.session.commit()
        return mail.job_id, mail.send_at


def test_wait_puts_the_job_in_the_scheduled_registry_and_the_worker_sends_it_when_due(app, smtp_server, start_worker, worker_env):
    job_id, due = stage(app, wait=timedelta(seconds=3))
    queue = mailers_queue(app)
    registry = ScheduledJobRegistry(queue=queue)
    assert queue.count == 0 and registry.get_job_ids() == [job_id]  # what rq-dashboard lists as "scheduled"
    assert abs((registry.get_scheduled_time(job_id) - due).total_seconds()) < 1
    start_worker(worker_env)
    time.sleep(1.5)
    assert smtp_server.messages == []  # not before it is due
    (message,) = smtp_server.wait_for_messages(1, timeout=30)
    assert time.time() >= due.timestamp() - 1 and message["To"] == "ada@example.com"  # RQ keeps whole seconds


def test_wait_until_takes_an_aware_time(app, smtp_server, start_worker, worker_env):
    due = datetime.now(timezone.utc) + timedelta(seconds=2)
    job_id, send_at = stage(app, wait_until=due)
    assert send_at == due and ScheduledJobRegistry(queue=mailers_queue(app)).get_job_ids() == [job_id]
    start_worker(worker_env)
    smtp_server.wait_for_messages(1, timeout=30)
    assert time.time() >= due.timestamp() - 1  # RQ keeps the scheduled time in whole seconds


def test_a_delayed_mail_redis_lost_is_enqueued_again_by_the_sweeper_once_due_and_sent_once(
    app, smtp_server, start_worker, worker_env
):
    app.config["OUTBOX_GRACE_SECONDS"] = 1
    job_id, due = stage(app, wait=2)
    redis.Redis.from_url(app.config["RQ_REDIS_URL"]).flushdb()  # a restart without AOF, a failover
    with app.app_context():
        assert str(sweep()) == "0 sent, 0 pending, 0 requeued, 0 given up"  # not due yet: left alone
    time.sleep(max(0.0, (due - utcnow()).total_seconds()) + 1.2)
    with app.app_context():
        assert sweep().requeued == 1
    start_worker(worker_env)
    smtp_server.wait_for_messages(1, timeout=30)
    wait_for(lambda: mailers_queue(app).count == 0, message="the queue to drain")
    time.sleep(1.2)  # the requeue claimed the row for one grace period
    with app.app_context():
        assert sweep().sent == 1 and db.session.scalar(db.select(db.func.count()).select_from(OutboxMail)) == 0
    time.sleep(1)
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize(("when", "error"), [
    ({"wait": 5, "wait_until": datetime.now(timezone.utc)}, "not both"),
    ({"wait_until": datetime(2030, 1, 1)}, "timezone-aware"),
])
def test_a_bad_delay_is_refused_before_anything_is_staged(app, when, error):
    with app.test_request_context(), pytest.raises(ValueError, match=error):
        deliver_later(**sample_confirmation("ada@example.com"), **when)
