"""Every transactional mail rides out a queue Redis that is down or full: the same answers, and each mail once it is back.

Production runs two Redis servers: one for the queue, one for the cache, sessions and rate
limits. Here the session's Redis plays the second one and a redis-server of the test's own
plays the queue's, so it can be stopped, started again, or filled up. Only HTTP, the `flask`
commands, the real worker (`rq worker`, the Procfile line) and a real SMTP server are used.
"""

from datetime import timedelta

import pytest
import redis

from app.models import User, utcnow
from app.web_extensions import db
from tests.conftest import process_env
from tests.support import RedisServer, csrf_token, login, mailers_queue, signup

PASSWORD = "correct horse battery"


@pytest.fixture()
def queue_redis(tmp_path):
    """The queue's own redis-server (AOF on, noeviction), stopped after the test by its pid."""
    server = RedisServer(tmp_path / "queue-redis")
    server.directory.mkdir()
    server.start()
    yield server
    server.stop()


def add_user(app, email, confirmed=True):
    """An account that exists already (made directly, so no notice window is claimed for it)."""
    with app.app_context():
        user = User(email=email, confirmed_at=utcnow() if confirmed else None)
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()


def make_all_due(app):
    """Move every outbox row past its grace period, as if it was committed long ago (plain SQL)."""
    with app.app_context():
        db.session.execute(db.text("UPDATE outbox_mails SET check_after = :past"), {"past": utcnow() - timedelta(seconds=1)})
        db.session.commit()


def outbox_count(app):
    """How many outbox rows wait."""
    with app.app_context():
        return db.session.scalar(db.text("SELECT count(*) FROM outbox_mails"))


def answer(response):
    """What a visitor can tell from a response: its status and where it sends them."""
    return response.status_code, response.headers.get("Location")


def resend(client):
    """Press the "send the mail again" button as the signed-in user."""
    token = csrf_token(client.get("/auth/unconfirmed").get_data(as_text=True))
    return client.post("/auth/resend", data={"csrf_token": token})


def fill_up(server):
    """Fill a private redis-server past a small maxmemory, with noeviction: every write is refused (OOM)."""
    client = redis.Redis(port=server.port)
    client.set("ballast", b"x" * 4_000_000)
    client.config_set("maxmemory", "1mb")  # our own server, never the shared one
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", 1)


def test_with_the_queue_redis_stopped_each_mail_answers_as_when_up_and_arrives_once_it_is_back(
    make_app, redis_url, queue_redis, smtp_server, run_worker
):
    app = make_app(redis_url, RQ_REDIS_URL=queue_redis.url)
    runner, env = app.test_cli_runner(), process_env(app)
    add_user(app, "bob@example.com")
    add_user(app, "carol@example.com", confirmed=False)
    carol = app.test_client()
    assert login(carol, "carol@example.com").status_code == 302

    # The answers while the queue's Redis is up.
    up = {"new": answer(signup(app.test_client(), "erin@example.com")), "resend": answer(resend(carol))}
    add_user(app, "fred@example.com")
    up["existing"] = answer(signup(app.test_client(), "fred@example.com"))
    assert up["new"] == up["existing"] and up["new"][1].endswith("/auth/check-inbox")
    assert run_worker(env=env).returncode == 0
    assert len(smtp_server.wait_for_messages(3)) == 3  # erin's confirmation, carol's, fred's notice
    sent_before = len(smtp_server.messages)

    queue_redis.stop()
    down = {
        "new": answer(signup(app.test_client(), "ada@example.com")),
        "existing": answer(signup(app.test_client(), "bob@example.com")),
        "resend": answer(resend(carol)),
    }
    test_mail = runner.invoke(args=["send-test-mail", "dave@example.com"])
    assert down == up
    assert test_mail.exit_code == 0 and "the outbox sweeper queues it" in test_mail.output, test_mail.output
    assert outbox_count(app) >= 4  # ada's confirmation, bob's notice, carol's resend, dave's test mail

    queue_redis.start()  # back, on the same port
    make_all_due(app)
    swept = runner.invoke(args=["outbox", "sweep"])
    assert swept.exit_code == 0 and "4 requeued" in swept.output, swept.output
    assert run_worker(env=env).returncode == 0
    arrived = smtp_server.wait_for_messages(sent_before + 4)[sent_before:]
    by_address = sorted((message["To"], message["Subject"].removeprefix(app.config["MAIL_SUBJECT_PREFIX"])) for message in arrived)
    assert by_address == [
        ("ada@example.com", "Confirm your account"),
        ("bob@example.com", "You already have an account"),
        ("carol@example.com", "Confirm your account"),
        ("dave@example.com", "Confirm your account"),
    ]
    # Exactly once: the next sweep clears the rows of the sent mails, and nothing else goes out.
    make_all_due(app)
    swept = runner.invoke(args=["outbox", "sweep"])
    assert "0 requeued" in swept.output and outbox_count(app) == 0, swept.output
    assert run_worker(env=env).returncode == 0 and mailers_queue(app).count == 0
    assert len(smtp_server.messages) == sent_before + 4


@pytest.mark.parametrize("outage", ["stopped", "full"])
def test_a_new_and_an_existing_address_get_the_same_answer_while_the_queue_redis_is(
    outage, make_app, redis_url, queue_redis, smtp_server
):
    app = make_app(redis_url, RQ_REDIS_URL=queue_redis.url)
    add_user(app, "bob@example.com")
    if outage == "stopped":
        queue_redis.stop()
    else:
        fill_up(queue_redis)
    new = signup(app.test_client(), "ada@example.com")
    existing = signup(app.test_client(), "bob@example.com")
    assert answer(new) == answer(existing) == (302, "/auth/check-inbox")
    assert new.get_data() == existing.get_data()
    assert outbox_count(app) == 2  # both mails wait in the outbox for the sweeper
    if outage == "full":
        assert redis.Redis(port=queue_redis.port).llen("rq:queue:mailers") == 0  # nothing got in


def test_an_announcement_made_while_the_queue_redis_is_stopped_reaches_everyone_once_it_is_back(
    make_app, redis_url, queue_redis, smtp_server, run_worker
):
    app = make_app(redis_url, RQ_REDIS_URL=queue_redis.url, ANNOUNCE_BATCH_SIZE=2)
    runner, env = app.test_cli_runner(), process_env(app)
    for n in range(5):
        add_user(app, f"user{n}@example.com")
    queue_redis.stop()
    made = runner.invoke(args=["announce", "--subject", "News", "--body", "Hello"])
    assert made.exit_code == 0 and "5 recipient(s) in 3 batch job(s)" in made.output, made.output
    assert outbox_count(app) == 3  # one row per batch

    queue_redis.start()
    make_all_due(app)
    swept = runner.invoke(args=["outbox", "sweep"])
    assert "3 requeued" in swept.output, swept.output
    assert run_worker(env=env).returncode == 0
    received = smtp_server.wait_for_messages(5)
    assert sorted(message["To"] for message in received) == [f"user{n}@example.com" for n in range(5)]
    make_all_due(app)
    swept = runner.invoke(args=["outbox", "sweep"])
    assert "3 sent, 0 pending, 0 requeued" in swept.output and outbox_count(app) == 0, swept.output
    assert run_worker(env=env).returncode == 0 and len(smtp_server.messages) == 5
