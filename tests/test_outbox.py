"""The transactional outbox: every committed account gets its confirmation mail, exactly once.

The last test kills the web process at the worst moment: the user is committed and the enqueue
hangs on a stopped Redis. The others check the pieces: the staged row lives and dies with its
transaction, and the sweeper neither re-sends a mail whose job is still in Redis or already
sent, nor loses one whose job Redis forgot.
"""

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
import redis
from rq.registry import StartedJobRegistry

from app.auth.routes import create_account
from app.mail.delivery import OutboxMail, claim, deliver_later, sweep
from app.mail.job import SENT_MARKER_PREFIX, job_id_for
from app.models import User, utcnow
from app.web_extensions import db
from tests.conftest import process_env
from tests.support import (
    Browser,
    RedisServer,
    WebProcess,
    confirm_link,
    csrf_token,
    free_port,
    mailers_queue,
    procfile_command,
    signup,
    wait_for,
)
from tests.test_migrations import postgres_url  # noqa: F401  (the fixture)


def count(model):
    """How many rows a table holds."""
    return db.session.scalar(db.select(db.func.count()).select_from(model))


def outbox_rows(app):
    """Every outbox row, read in a fresh session."""
    with app.app_context():
        return db.session.scalars(db.select(OutboxMail)).all()


def make_due(app):
    """Move every outbox row past its grace period, as if it was committed long ago."""
    with app.app_context():
        db.session.execute(db.update(OutboxMail).values(check_after=utcnow() - timedelta(seconds=1)))
        db.session.commit()


def run_sweep(app):
    """One sweep, in its own app context."""
    with app.app_context():
        return sweep()


def test_signup_commits_the_user_with_its_outbox_mail_and_enqueues_it(app, client):
    assert signup(client, "ada@example.com").status_code == 302
    (row,) = outbox_rows(app)
    assert row.recipient == "ada@example.com" and row.template == "email/confirm"
    (job,) = mailers_queue(app).jobs
    assert job.id == job_id_for(row.message_id)
    assert job.kwargs["context"] == row.context


def test_a_rolled_back_transaction_leaves_no_mail(app):
    with app.test_request_context():
        user = User(email="ada@example.com", password_hash="x")
        db.session.add(user)
        db.session.flush()
        deliver_later("email/confirm", "ada@example.com", "Confirm your account", {"email": "ada@example.com", "confirm_url": "x"})
        db.session.rollback()
        assert count(User) == 0 and count(OutboxMail) == 0


def test_a_signup_that_loses_the_race_stages_no_second_mail(app, client):
    signup(client, "ada@example.com")
    with app.test_request_context():
        # The unique address fails the INSERT: the mail staged with it goes too.
        existing = create_account("ada@example.com", "another password")
        assert existing.email == "ada@example.com"
        assert count(User) == 1 and count(OutboxMail) == 1
    assert mailers_queue(app).count == 1


def test_staging_refuses_header_injection(app):
    with app.test_request_context(), pytest.raises(ValueError):
        deliver_later("email/confirm", "ada@example.com", "Hi\r\nBcc: eve@example.com", {})


def test_sweeper_leaves_a_row_alone_during_its_grace_period(app, client):
    signup(client, "ada@example.com")
    redis.Redis.from_url(app.config["RQ_REDIS_URL"]).flushdb()  # the job is lost at once...
    result = run_sweep(app)  # ...but the web's own enqueue may still be on its way
    assert (result.requeued, result.pending, result.sent) == (0, 0, 0)
    assert mailers_queue(app).count == 0 and len(outbox_rows(app)) == 1


def test_sweeper_does_not_enqueue_again_a_queued_job_and_clears_the_row_once_sent(app, client, smtp_server, run_worker):
    signup(client, "ada@example.com")
    make_due(app)
    result = run_sweep(app)
    assert (result.pending, result.requeued) == (1, 0)
    assert mailers_queue(app).count == 1  # one list entry: a second enqueue would add another

    run_worker()
    smtp_server.wait_for_messages(1)
    make_due(app)
    assert run_sweep(app).sent == 1
    assert outbox_rows(app) == []
    run_worker()
    assert len(smtp_server.messages) == 1


def test_sweeper_does_not_resend_a_mail_whose_job_expired_but_was_sent(app, client, smtp_server, run_worker):
    signup(client, "ada@example.com")
    run_worker()
    (message,) = smtp_server.wait_for_messages(1)
    jobs = redis.Redis.from_url(app.config["RQ_REDIS_URL"])
    # The finished job's hash expires (result_ttl); the sent-marker outlives it.
    assert jobs.delete(f"rq:job:{job_id_for(message['Message-ID'])}") == 1
    assert jobs.exists(SENT_MARKER_PREFIX + message["Message-ID"])
    make_due(app)
    assert run_sweep(app).sent == 1
    assert mailers_queue(app).count == 0 and outbox_rows(app) == []


def test_sweeper_enqueues_a_lost_job_once_and_it_is_sent_once(app, client, smtp_server, run_worker):
    signup(client, "ada@example.com")
    redis.Redis.from_url(app.config["RQ_REDIS_URL"]).flushdb()  # Redis lost the job (no AOF, failover)
    make_due(app)
    assert run_sweep(app).requeued == 1
    (row,) = outbox_rows(app)
    assert row.requeues == 1
    make_due(app)
    assert run_sweep(app).pending == 1  # the job it enqueued is there now: no second one
    assert mailers_queue(app).count == 1

    run_worker()
    (message,) = smtp_server.wait_for_messages(1)
    assert message["To"] == "ada@example.com" and message["Message-ID"] == row.message_id
    make_due(app)
    assert run_sweep(app).sent == 1 and outbox_rows(app) == []


def test_sweeper_enqueues_again_a_canceled_job_whose_hash_is_still_there(app, client, smtp_server, run_worker):
    signup(client, "ada@example.com")
    (row,) = outbox_rows(app)
    job = mailers_queue(app).fetch_job(job_id_for(row.message_id))
    job.cancel()  # `rq job cancel`, or a stopped job: its hash stays, the queue no longer has it
    make_due(app)
    assert run_sweep(app).requeued == 1
    assert mailers_queue(app).job_ids == [job.id]  # really on the queue again, not just counted
    run_worker()
    (message,) = smtp_server.wait_for_messages(1)
    assert message["Message-ID"] == row.message_id


def test_two_sweepers_cannot_claim_one_row(app, client):
    signup(client, "ada@example.com")
    with app.app_context():
        row = db.session.scalars(db.select(OutboxMail)).one()
        # What a second sweeper read at the same moment, in its own process.
        seen_elsewhere = OutboxMail(id=row.id, sweeps=row.sweeps)
        assert claim(row, utcnow()) is True
        assert claim(seen_elsewhere, utcnow()) is False


@pytest.mark.parametrize("job", ["lost", "failed"])
def test_sweeper_gives_up_on_a_mail_older_than_its_link(job, make_app, redis_url, smtp_server, run_worker):
    app = make_app(redis_url, OUTBOX_GIVE_UP_AFTER=3600)
    signup(app.test_client(), "ada@example.com")
    if job == "lost":
        redis.Redis.from_url(redis_url).flushdb()
    else:  # refused for good: it waits in the failed registry, where the sweeper leaves it
        smtp_server.handler.always_refuse = "550 5.1.1 No such mailbox"
        run_worker()
        make_due(app)
        assert run_sweep(app).pending == 1
    with app.app_context():
        db.session.execute(db.update(OutboxMail).values(created_at=utcnow() - timedelta(hours=2)))
        db.session.commit()
    make_due(app)
    assert run_sweep(app).given_up == 1
    assert outbox_rows(app) == [] and mailers_queue(app).count == 0


def test_queue_redis_down_during_signup_keeps_the_account_and_the_sweeper_sends_it(make_app, redis_url, smtp_server, run_worker):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    down = make_app(redis_url, RQ_REDIS_URL=dead)
    response = signup(down.test_client(), "ada@example.com")
    assert response.status_code == 302 and response.headers["Location"].endswith("/auth/check-inbox")
    with down.app_context():
        assert count(User) == 1 and count(OutboxMail) == 1

    up = make_app(redis_url)  # Redis is back (same database)
    make_due(up)
    assert run_sweep(up).requeued == 1
    run_worker(env=process_env(up))
    (message,) = smtp_server.wait_for_messages(1)
    assert message["To"] == "ada@example.com"


def test_flask_outbox_sweep_command(app, client, runner):
    signup(client, "ada@example.com")
    redis.Redis.from_url(app.config["RQ_REDIS_URL"]).flushdb()
    make_due(app)
    result = runner.invoke(args=["outbox", "sweep"])
    assert result.exit_code == 0, result.output
    assert "0 sent, 0 pending, 1 requeued, 0 given up" in result.output
    assert mailers_queue(app).count == 1


def test_outbox_on_postgresql(postgres_url, make_app, redis_url):  # noqa: F811
    from flask_migrate import downgrade

    app = make_app(redis_url, SQLALCHEMY_DATABASE_URI=postgres_url)
    signup(app.test_client(), "ada@example.com")
    redis.Redis.from_url(redis_url).flushdb()
    make_due(app)
    assert run_sweep(app).requeued == 1
    make_due(app)
    assert run_sweep(app).pending == 1
    (row,) = outbox_rows(app)
    assert row.context["email"] == "ada@example.com" and row.created_at.tzinfo is not None
    with app.app_context():
        downgrade(revision="base")
        assert "outbox_mails" not in db.inspect(db.engine).get_table_names()


class OutboxProcess:
    """The Procfile's `outbox:` line (the sweeper loop), stopped by pid."""

    def __init__(self, env, log_path):
        """Remember the environment and the log file; nothing starts yet."""
        self.env = env
        self.log_path = log_path
        self.process = None

    def start(self):
        """Start the sweeper loop with this venv's `flask`."""
        args = procfile_command("outbox")
        command = [os.path.join(os.path.dirname(sys.executable), args[0]), *args[1:]]
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self):
        """SIGTERM, then wait."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.log.close()


@pytest.mark.slow
@pytest.mark.parametrize("then", ["redis resumes", "redis crashes and restarts"])
def test_web_killed_while_the_enqueue_hangs_the_committed_user_gets_one_mail(
    then, make_app, redis_url, smtp_server, tmp_path, start_worker
):
    jobs_redis = RedisServer(tmp_path / "jobs-redis")
    jobs_redis.directory.mkdir()
    jobs_redis.start()
    outbox = web = None
    try:
        # Sessions, cache and limits on one Redis, the queue on its own: stopping the queue's
        # Redis leaves the signup form working up to the enqueue after the commit.
        app = make_app(redis_url, RQ_REDIS_URL=jobs_redis.url, OUTBOX_GRACE_SECONDS=2)
        env = {**process_env(app), "OUTBOX_GRACE_SECONDS": "2", "OUTBOX_SWEEP_INTERVAL": "1"}
        web = WebProcess(env, tmp_path / "web.log").start()
        browser = Browser(web.base_url)
        _, page = browser.request("/auth/signup")
        form = {"csrf_token": csrf_token(page), "email": "ada@example.com", "password": "long enough pw", "password2": "long enough pw"}

        jobs_redis.process.send_signal(signal.SIGSTOP)  # the enqueue will hang
        answers = []

        def post():
            try:
                answers.append(browser.request("/auth/signup", form))
            except OSError as exc:  # the server died mid-request
                answers.append(exc)

        poster = threading.Thread(target=post)
        poster.start()

        def committed():
            with app.app_context():
                return count(User) == 1

        wait_for(committed, timeout=30, message="the user to be committed")
        web.kill()  # kill -9 between the commit and the enqueue
        poster.join(timeout=30)
        assert len(answers) == 1 and isinstance(answers[0], OSError), f"the kill came too late: {answers}"

        if then == "redis resumes":
            jobs_redis.process.send_signal(signal.SIGCONT)
        else:  # a crash (or a failover) loses whatever the web process wrote after the stop
            jobs_redis.kill()
            jobs_redis.start()

        outbox = OutboxProcess(env, tmp_path / "outbox.log").start()
        start_worker(env)
        (message,) = smtp_server.wait_for_messages(1, timeout=90)
        assert message["To"] == "ada@example.com" and confirm_link(message)
        # The sweeper clears the row only once it sees the mail's sent-marker; nothing else may
        # be waiting or running by then, so one mail is the final count.
        wait_for(lambda: outbox_rows(app) == [], timeout=60, message="the sweeper to clear the sent mail")
        queue = mailers_queue(app)
        assert queue.count == 0 and StartedJobRegistry(queue=queue).count == 0
        assert len(smtp_server.messages) == 1
    finally:
        if outbox:
            outbox.stop()
        if web and web.process.poll() is None:
            web.kill()
        jobs_redis.process.send_signal(signal.SIGCONT)
        jobs_redis.stop()
