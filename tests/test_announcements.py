"""Bulk announcements: batched jobs sent side by side, one SMTP connection per batch, resumable without duplicates."""

import time
from collections import Counter

import pytest
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from app.models import User, utcnow
from app.web_extensions import db
from tests.support import csrf_token, mailers_queue, signup, wait_for


@pytest.fixture()
def users(app):
    """25 confirmed users and 3 unconfirmed ones."""
    with app.app_context():
        for n in range(28):
            user = User(email=f"user{n:02d}@example.com", confirmed_at=utcnow() if n < 25 else None)
            user.password_hash = "not-a-login"
            db.session.add(user)
        db.session.commit()
    return [f"user{n:02d}@example.com" for n in range(25)]



def recipients(smtp_server):
    """How many mails each address received."""
    return Counter(message["To"] for message in smtp_server.messages)


def test_flask_announce_batches_and_sends_once_to_each_confirmed_user(app, runner, users, smtp_server, run_worker):
    app.config["ANNOUNCE_BATCH_SIZE"] = 10
    result = runner.invoke(args=["announce", "--subject", "News", "--body", "We shipped it."])
    assert result.exit_code == 0, result.output
    assert "25 recipient(s) in 3 batch job(s)" in result.output
    assert mailers_queue(app).count == 3
    run_worker()
    smtp_server.wait_for_messages(25)
    assert recipients(smtp_server) == Counter({address: 1 for address in users})
    assert len(smtp_server.handler.sessions) == 3  # the three batches at once, one connection each
    assert "We shipped it." in smtp_server.messages[0].get_body(("plain",)).get_content()


def test_batches_run_side_by_side_in_one_worker(app, runner, users, smtp_server, run_worker):
    app.config["ANNOUNCE_BATCH_SIZE"] = 10
    smtp_server.handler.delay = 0.2  # a relay that takes 2 s per batch
    runner.invoke(args=["announce", "--subject", "News", "--body", "Hello"])
    job_ids = mailers_queue(app).job_ids
    assert len(job_ids) == 3
    result = run_worker()
    jobs = [Job.fetch(job_id, connection=mailers_queue(app).connection, serializer=JSONSerializer) for job_id in job_ids]
    assert [job.get_status() for job in jobs] == ["finished"] * 3, (result.stdout + result.stderr)[-3000:]
    assert [len(job.results()) for job in jobs] == [1, 1, 1]  # none failed and was retried
    # Side by side: every batch started before the first one ended.
    assert max(job.started_at for job in jobs) < min(job.ended_at for job in jobs)
    assert recipients(smtp_server) == Counter({address: 1 for address in users})


def test_a_worker_that_sent_a_signup_mail_and_an_announcement_never_imported_the_database(
        app, client, runner, users, smtp_server, worker_env, start_worker):
    """The jobs' arguments carry their recipients, so the worker process needs no SQLAlchemy (~17 MB each)."""
    signup(client, "newcomer@example.com")
    runner.invoke(args=["announce", "--subject", "News", "--body", "Hello"])
    start_worker(worker_env)
    smtp_server.wait_for_messages(26, timeout=60)
    probe = mailers_queue(app).enqueue("tests.worker_probe.imported_packages")
    wait_for(lambda: probe.get_status(refresh=True) == "finished", timeout=30, message="the probe job")
    imported = set(probe.return_value())
    assert {"flask", "flask_mail", "rq", "app"} <= imported  # the probe ran in a worker that sent mail
    assert imported.isdisjoint({"sqlalchemy", "flask_sqlalchemy", "flask_login", "alembic", "flask_migrate"})


def test_interrupted_batch_resumes_without_duplicates(app, runner, users, smtp_server, worker_env, start_worker):
    smtp_server.handler.refusals = [None] * 7 + ["451 4.3.0 Try again later"]  # the 8th mail fails
    runner.invoke(args=["announce", "--subject", "News", "--body", "Hello"])
    start_worker(worker_env)
    smtp_server.wait_for_messages(25, timeout=60)
    time.sleep(2)
    assert recipients(smtp_server) == Counter({address: 1 for address in users})
    assert smtp_server.handler.attempts == 26  # 25 accepted, 1 refused, none sent twice


def test_worker_killed_mid_batch_resumes_without_duplicates(app, runner, users, smtp_server, worker_env, start_worker):
    app.config["ANNOUNCE_JOB_TIMEOUT"] = 10  # abandoned after 10 + 15 s
    smtp_server.handler.delay = 0.3
    runner.invoke(args=["announce", "--subject", "News", "--body", "Hello"])
    worker = start_worker(worker_env)
    wait_for(lambda: len(smtp_server.messages) >= 5, timeout=30, message="five mails out")
    worker.kill_all()
    smtp_server.handler.delay = 0
    start_worker(worker_env)
    smtp_server.wait_for_messages(25, timeout=90)
    time.sleep(2)
    assert recipients(smtp_server) == Counter({address: 1 for address in users})


def test_refused_recipient_fails_the_batch_visibly_and_a_requeue_sends_only_to_them(app, runner, users, smtp_server, run_worker):
    smtp_server.handler.unknown_addresses = {"user03@example.com"}
    runner.invoke(args=["announce", "--subject", "News", "--body", "Hello"])
    run_worker()
    smtp_server.wait_for_messages(24)
    registry = FailedJobRegistry(queue=mailers_queue(app))
    assert registry.count == 1
    job = Job.fetch(registry.get_job_ids()[0], connection=mailers_queue(app).connection, serializer=JSONSerializer)
    reason = job.latest_result().exc_string.strip().splitlines()[-1]
    assert reason.endswith("1 recipient(s) refused: {'user03@example.com': '550 5.1.1 No such user here'}"), reason

    smtp_server.handler.unknown_addresses = set()
    registry.requeue(job.id)
    run_worker()
    smtp_server.wait_for_messages(25)
    time.sleep(0.5)
    assert recipients(smtp_server) == Counter({address: 1 for address in users})


def test_dev_announce_form_needs_csrf_and_enqueues(app, dev_app, users):
    client = dev_app.test_client()
    assert client.post("/dev/announce", data={"subject": "x", "body": "y"}).status_code == 400
    token = csrf_token(client.get("/dev/announce").get_data(as_text=True))
    response = client.post("/dev/announce", data={"csrf_token": token, "subject": "News", "body": "Hello"})
    assert response.status_code == 302
    assert mailers_queue(app).count == 1


def test_announce_refuses_a_subject_that_would_add_headers(app, users):
    from app.mail.announcements import announce

    with app.app_context(), pytest.raises(ValueError, match="line breaks"):
        announce("News\r\nBcc: victim@evil.example", "Hello")
    assert mailers_queue(app).count == 0
