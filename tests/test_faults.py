"""Fault injection on real processes: mail jobs survive kills, restarts and SMTP failures.

Each test is bounded in time and stops, by pid, everything it started. Each adds a row to
test-artifacts/faults.json: fault, mails sent, delivered, lost, duplicates, time to recover.
"""

import time

import pytest
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from app.models import User
from app.web_extensions import db
from tests.conftest import process_env
from tests.support import (
    Browser,
    RedisServer,
    WebProcess,
    free_port,
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


def test_a_relay_refusing_our_login_is_retried_not_failed(app, client, worker_env, start_worker, tmp_path):
    """A 535 at AUTH is about the relay or MAIL_PASSWORD, not this mail: retried, so it goes out once that is fixed."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from devtools.mailcatcher import MaildirHandler

    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append(mechanism)
        return AuthResult(success=len(logins) > 2, handled=False)  # smtplib tries PLAIN, then LOGIN: the first connection fails

    handler, port = MaildirHandler(str(tmp_path / "maildir")), free_port()
    relay = Controller(handler, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False)
    relay.start()
    try:
        start_worker({**worker_env, "MAIL_PORT": str(port), "MAIL_USERNAME": "mailer", "MAIL_PASSWORD": "secret"})
        signup(client, "ada@example.com")
        wait_for(lambda: len(handler.maildir) == 1, timeout=30, message="the mail, sent by the retry")
    finally:
        relay.stop()
    assert len(logins) == 3
    assert FailedJobRegistry(queue=mailers_queue(app)).count == 0


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


def same_mail_again(app, job):
    """Enqueue again, with the very arguments of an enqueued mail job (what the sweeper does); return the RQ job."""
    from app.mail.delivery import enqueue

    with app.test_request_context():
        return enqueue(**{key: job.kwargs[key] for key in ("template", "to", "subject", "context", "message_id")})


def test_the_same_mail_enqueued_twice_is_one_job_on_the_queue(app, client):
    signup(client, "ada@example.com")
    queue = mailers_queue(app)
    job = queue.jobs[0]
    again = same_mail_again(app, job)
    assert again.id == job.id
    assert queue.connection.llen(queue.key) == 1  # rq 3.0 would push the same id twice otherwise


def test_rerunning_an_accepted_mail_sends_nothing(app, client, smtp_server, run_worker, fault_report):
    signup(client, "ada@example.com")
    queue = mailers_queue(app)
    job = queue.jobs[0]
    run_worker()
    smtp_server.wait_for_messages(1)

    queue.connection.delete(job.key)  # RQ forgot the job (its result expired): only the sent-marker is left
    again = same_mail_again(app, job)
    assert again.id == job.id  # the same mail is the same job id
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


# --- N mails in flight (the Procfile's worker runs WORKER_CONCURRENCY = 25 jobs at once) ---

IN_FLIGHT = 25  # WORKER_CONCURRENCY: every slot of the worker busy at once


def sign_up_many(app, count=IN_FLIGHT):
    """`count` signups, each from its own browser."""
    for n in range(count):
        assert signup(app.test_client(), f"user{n}@example.com").status_code == 302


def test_worker_sigkilled_with_many_mails_in_flight_recovers_each_once(app, smtp_server, worker_env, start_worker, fault_report):
    smtp_server.handler.delay = 60  # every send hangs at RCPT: all of them in flight at once
    worker = start_worker(worker_env)
    sign_up_many(app)
    wait_for(lambda: smtp_server.handler.rcpts_seen >= IN_FLIGHT, timeout=30, message="all sends to start")
    worker.kill_all()
    killed_at = time.monotonic()
    smtp_server.handler.delay = 0

    start_worker(worker_env)
    smtp_server.wait_for_messages(IN_FLIGHT, timeout=150)
    recovered_in = time.monotonic() - killed_at
    time.sleep(3)  # a duplicate would show up here
    row = report(fault_report, f"worker SIGKILL with {IN_FLIGHT} mails in flight", IN_FLIGHT, smtp_server.messages, recovered_in)
    assert row["lost"] == 0 and row["duplicates"] == 0


def test_sigterm_with_many_mails_in_flight_finishes_them_all_then_exits(app, smtp_server, worker_env, start_worker, fault_report):
    from rq.registry import StartedJobRegistry
    from rq.worker import Worker

    smtp_server.handler.delay = 3
    worker = start_worker(worker_env)
    sign_up_many(app)
    wait_for(lambda: smtp_server.handler.rcpts_seen >= IN_FLIGHT, timeout=30, message="all sends to start")
    queue = mailers_queue(app)
    # What `rq info` and rq-dashboard read: one worker, running all of them, each marked started
    # once it has run for the worker's record_start_after (1 s).
    (registered,) = Worker.all(connection=queue.connection)
    assert registered.get_state() == "busy"
    wait_for(lambda: StartedJobRegistry(queue=queue).count == IN_FLIGHT, timeout=5, message="the 25 starts recorded")
    assert len(registered.get_current_executions()) == IN_FLIGHT
    worker.sigterm()
    assert worker.process.wait(timeout=60) == 0
    assert "warm shut down" in worker.output().lower()
    row = report(fault_report, f"worker SIGTERM with {IN_FLIGHT} mails in flight", IN_FLIGHT, smtp_server.messages, 0)
    assert row["delivered"] == IN_FLIGHT and row["duplicates"] == 0


def test_many_in_flight_4xx_are_retried_and_5xx_failed_each_with_its_reason(app, smtp_server, worker_env, start_worker):
    """25 at once: the first answer to each is 451 (retried, then sent once) or 550 for half the addresses (failed, named)."""
    refused = {f"user{n}@example.com" for n in range(0, IN_FLIGHT, 2)}
    smtp_server.handler.unknown_addresses = refused
    smtp_server.handler.refusals = ["451 4.3.0 Try again later"] * (IN_FLIGHT - len(refused))
    smtp_server.handler.delay = 0.5  # all of them in flight together
    start_worker(worker_env)
    sign_up_many(app)
    registry = FailedJobRegistry(queue=mailers_queue(app))
    wait_for(lambda: registry.count == len(refused), timeout=60, message="the 550s in the failed registry")
    smtp_server.wait_for_messages(IN_FLIGHT - len(refused), timeout=60)
    time.sleep(3)  # a duplicate or a late retry would show here
    assert sorted(m["To"] for m in smtp_server.messages) == sorted({f"user{n}@example.com" for n in range(IN_FLIGHT)} - refused)
    for job_id in registry.get_job_ids():
        reason = Job.fetch(job_id, connection=registry.connection, serializer=JSONSerializer).latest_result().exc_string
        assert "PermanentMailError" in reason and "550" in reason and any(address in reason for address in refused)


def test_a_job_over_its_timeout_fails_and_the_worker_goes_on(app, client, smtp_server, worker_env, start_worker):
    smtp_server.handler.delay = 4
    app.config.update(MAIL_JOB_TIMEOUT=2, MAIL_RETRY_INTERVALS=[1])  # set on the job at enqueue
    start_worker(worker_env)
    signup(client, "slow@example.com")
    registry = FailedJobRegistry(queue=mailers_queue(app))
    wait_for(lambda: registry.count == 1, timeout=60, message="the slow job to fail")
    job = Job.fetch(registry.get_job_ids()[0], connection=registry.connection, serializer=JSONSerializer)
    assert "JobTimeoutException" in job.latest_result().exc_string
    smtp_server.handler.delay = 0
    signup(app.test_client(), "fast@example.com")
    wait_for(lambda: any(m["To"] == "fast@example.com" for m in smtp_server.messages), timeout=30, message="the next mail")


def test_slow_data_reply_within_rfc_timeout_is_one_mail(app, client, smtp_server, worker_env, start_worker, fault_report):
    smtp_server.handler.data_reply_delay = 3  # stored at once, answered after 3 s
    start_worker({**worker_env, "MAIL_TIMEOUT": "1"})  # every other step may take 1 s at most
    signup(client, "ada@example.com")
    smtp_server.wait_for_messages(1, timeout=30)
    time.sleep(6)  # a retry after a timed-out DATA reply would store a second copy here
    row = report(fault_report, "DATA reply slower than MAIL_TIMEOUT", 1, smtp_server.messages, 0)
    assert row["duplicates"] == 0 and smtp_server.handler.attempts == 1


def test_an_address_that_cannot_be_encoded_fails_at_once(app, smtp_server, worker_env, start_worker):
    from app.mail.delivery import deliver_later
    from app.web_extensions import db

    with app.test_request_context():
        deliver_later("email/confirm", "üser@example.com", "Hi", {"email": "x", "confirm_url": "y"})
        db.session.commit()
    start_worker({**worker_env, "MAIL_RETRY_INTERVALS": "60"})  # a retry would wait a minute
    registry = FailedJobRegistry(queue=mailers_queue(app))
    wait_for(lambda: registry.count == 1, timeout=30, message="the job in the failed registry, not retried")
    job = Job.fetch(registry.get_job_ids()[0], connection=registry.connection, serializer=JSONSerializer)
    assert "PermanentMailError" in job.latest_result().exc_string and "UnicodeEncodeError" in job.latest_result().exc_string


def test_an_unreadable_job_is_failed_and_the_worker_goes_on(app, client, smtp_server, worker_env, start_worker):
    queue = mailers_queue(app)
    queue.connection.hset("rq:job:poison", mapping={"data": b"\xff\xfe not json", "description": b"\xff\xfe",
                                                     "status": "queued", "origin": "mailers"})
    queue.connection.rpush(queue.key, "poison")
    signup(client, "ada@example.com")
    worker = start_worker(worker_env)
    smtp_server.wait_for_messages(1, timeout=30)
    assert worker.process.poll() is None
    registry = FailedJobRegistry(queue=queue)
    assert registry.get_job_ids() == ["poison"]
    job = Job.fetch("poison", connection=queue.connection, serializer=JSONSerializer)
    assert "unreadable job poison" in job.latest_result().exc_string
    assert queue.connection.exists("mail:unreadable:poison")
    assert 0 < queue.connection.ttl("mail:unreadable:poison") <= app.config["MAIL_FAILURE_TTL"]  # not kept for ever


def test_a_killed_workers_scheduler_does_not_outlive_it(app, worker_env, start_worker):
    from tests.support import child_pids

    worker = start_worker(worker_env)
    connection = mailers_queue(app).connection
    lock = "rq:scheduler-lock:mailers"
    wait_for(lambda: connection.exists(lock), timeout=30, message="the scheduler lock")
    # The scheduler runs inside the worker process: no child that could outlive it ...
    assert child_pids(worker.process.pid) == []
    # ... and the lock it holds lapses on its own about a minute after a SIGKILL.
    assert 0 < connection.ttl(lock) <= 61
    worker.process.kill()
    worker.process.wait(timeout=10)
    assert child_pids(worker.process.pid) == []
