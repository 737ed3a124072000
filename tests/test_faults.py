"""Fault injection on real processes: mail jobs survive kills, restarts and SMTP failures.

Each test is bounded in time and stops, by pid, everything it started. Each adds a row to
test-artifacts/faults.json: fault, mails sent, delivered, lost, duplicates, time to recover.
"""

import time

import pytest
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from app.extensions import db
from app.models import User
from tests.conftest import process_env
from tests.support import (
    Browser,
    RedisServer,
    WebProcess,
    mailers_queue,
    signup,
    wait_for,
)

pytestmark = pytest.mark.slow



def report(rows, fault, sent, messages, recovered_in=None):
    """Add a row to the fault table and return the (lost, duplicates) counts."""
    recipients = [m["To"] for m in messages]
    delivered = len(set(recipients))
    row = {
        "fault": fault,
        "sent": sent,
        "delivered": delivered,
        "lost": sent - delivered,
        "duplicates": len(recipients) - delivered,
        "recovered_in_s": None if recovered_in is None else round(recovered_in, 1),
    }
    rows.append(row)
    return row


def test_web_killed_right_after_signup_mail_still_goes_out(app, smtp_server, run_worker, tmp_path, fault_report):
    web = WebProcess(process_env(app), tmp_path / "web.log").start()
    try:
        status, _ = Browser(web.base_url).submit("/auth/signup", {"email": "ada@example.com", "password": "long enough pw", "password2": "long enough pw"})
        assert status == 302
    finally:
        web.kill()  # kill -9 the arbiter and its workers, with no worker running yet
    started = time.monotonic()
    assert run_worker().returncode == 0
    messages = smtp_server.wait_for_messages(1)
    time.sleep(0.5)
    row = report(fault_report, "web kill -9 after 2xx, worker stopped", 1, smtp_server.messages, time.monotonic() - started)
    assert len(messages) == 1 and row["lost"] == 0 and row["duplicates"] == 0


def test_worker_sigkilled_mid_send_recovers_within_two_minutes(app, client, smtp_server, worker_env, start_worker, fault_report):
    smtp_server.handler.delay = 30  # the send hangs at RCPT: the mail is in flight
    worker = start_worker(worker_env)
    signup(client, "ada@example.com")
    wait_for(lambda: smtp_server.handler.rcpts_seen >= 1, timeout=30, message="the send to start")
    worker.kill_all()  # SIGKILL the worker and its scheduler process: nothing cleans up
    killed_at = time.monotonic()
    smtp_server.handler.delay = 0

    start_worker(worker_env)
    smtp_server.wait_for_messages(1, timeout=150)
    recovered_in = time.monotonic() - killed_at
    time.sleep(3)  # a duplicate would show up here
    row = report(fault_report, "worker SIGKILL (with its children) mid-send", 1, smtp_server.messages, recovered_in)
    assert row["lost"] == 0 and row["duplicates"] == 0
    assert recovered_in < 120


def test_one_sigterm_mid_job_finishes_the_mail_then_exits(app, client, smtp_server, worker_env, start_worker, fault_report):
    smtp_server.handler.delay = 3
    worker = start_worker(worker_env)
    signup(client, "ada@example.com")
    wait_for(lambda: smtp_server.handler.rcpts_seen >= 1, timeout=30, message="the send to start")
    worker.sigterm()
    assert worker.process.wait(timeout=30) == 0
    assert "warm shut down" in worker.output().lower() or "warm shutdown" in worker.output().lower()
    row = report(fault_report, "worker SIGTERM mid-send (warm shutdown)", 1, smtp_server.messages, 0)
    assert row["delivered"] == 1 and row["duplicates"] == 0


@pytest.mark.parametrize(
    ("how", "persistence", "expect_kept"),
    [("shutdown", True, True), ("kill -9", True, True), ("kill -9", False, False)],
)
def test_redis_restart_with_queued_mail(tmp_path, make_app, smtp_server, run_worker, how, persistence, expect_kept, fault_report):
    count = 20
    server = RedisServer(tmp_path / "redis", persistence=persistence)
    server.directory.mkdir()
    server.start()
    try:
        app = make_app(server.url)
        client = app.test_client()
        for n in range(count):
            assert signup(client, f"user{n}@example.com").status_code == 302
        assert mailers_queue(app).count == count
        time.sleep(1.5)  # appendfsync everysec: let the last second reach the disk
        started = time.monotonic()
        server.shutdown() if how == "shutdown" else server.kill()
        server.start()  # same port, same directory
        kept = mailers_queue(app).count
        run_worker(env=process_env(app))
        if kept:
            smtp_server.wait_for_messages(kept)
        label = f"Redis {how} with {count} queued, {'AOF everysec' if persistence else 'no persistence'}"
        row = report(fault_report, label, count, smtp_server.messages, time.monotonic() - started)
    finally:
        server.stop()
    if expect_kept:
        assert kept == count and row["lost"] == 0 and row["duplicates"] == 0
    else:
        assert kept == 0 and row["lost"] == count  # why the queue's Redis needs AOF


def test_smtp_451_twice_then_accepts_one_mail(app, client, smtp_server, worker_env, start_worker, fault_report):
    smtp_server.handler.refusals = ["451 4.3.0 Try again later", "451 4.3.0 Try again later"]
    start_worker(worker_env)
    started = time.monotonic()
    signup(client, "ada@example.com")
    smtp_server.wait_for_messages(1, timeout=60)
    time.sleep(2)
    row = report(fault_report, "SMTP 451 twice, then accepts", 1, smtp_server.messages, time.monotonic() - started)
    assert smtp_server.handler.attempts == 3
    assert row["delivered"] == 1 and row["duplicates"] == 0


def test_smtp_550_is_not_retried_and_lands_in_failed_registry(app, client, smtp_server, worker_env, start_worker, fault_report):
    smtp_server.handler.always_refuse = "550 5.1.1 No such mailbox"
    start_worker(worker_env)
    signup(client, "ada@example.com")
    queue = mailers_queue(app)
    registry = FailedJobRegistry(queue=queue)
    wait_for(lambda: registry.count == 1, timeout=30, message="the job in the failed registry")
    time.sleep(3)  # longer than the retry interval: a retry would show here
    assert smtp_server.handler.attempts == 1
    job = Job.fetch(registry.get_job_ids()[0], connection=queue.connection, serializer=JSONSerializer)
    reason = job.latest_result().exc_string
    assert "PermanentMailError" in reason and "550 5.1.1 No such mailbox" in reason and "ada@example.com" in reason
    fault_report.append({"fault": "SMTP 550 (permanent)", "sent": 1, "delivered": 0, "lost": 0, "duplicates": 0,
                         "recovered_in_s": None, "note": "not retried; visible in the failed registry, requeue after fixing"})


def test_rerunning_an_accepted_mail_sends_nothing(app, client, smtp_server, run_worker, fault_report):
    signup(client, "ada@example.com")
    job = mailers_queue(app).jobs[0]
    run_worker()
    smtp_server.wait_for_messages(1)

    from app.delivery import deliver_later

    with app.test_request_context():
        again = deliver_later(**{key: job.kwargs[key] for key in ("template", "to", "subject", "context", "message_id")})
    assert again.id == job.id  # the same mail is the same job
    run_worker()
    again.refresh()
    assert again.return_value() == {"message_id": job.kwargs["message_id"], "skipped": True}
    row = report(fault_report, "same mail job run twice", 1, smtp_server.messages, 0)
    assert row["duplicates"] == 0 and row["delivered"] == 1


def test_double_submit_one_user_one_mail(app, smtp_server, run_worker, fault_report):
    first, second = app.test_client(), app.test_client()
    assert signup(first, "ada@example.com").status_code == 302
    assert signup(second, "ada@example.com").status_code == 302
    run_worker()
    smtp_server.wait_for_messages(1)
    time.sleep(0.5)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 1
    row = report(fault_report, "double submit of one signup", 1, smtp_server.messages, 0)
    assert row["delivered"] == 1 and row["duplicates"] == 0


def test_queue_redis_down_during_signup_is_a_503_and_leaves_no_user(make_app, redis_url):
    from tests.support import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = make_app(redis_url, RQ_REDIS_URL=dead)
    response = signup(app.test_client(), "ada@example.com")
    assert response.status_code == 503
    assert "Nothing was saved" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 0
