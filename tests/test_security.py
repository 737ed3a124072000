"""Security by default: no pickle on any Redis read path, session fixation, header injection, rate limits."""

import pickle
import zlib

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from app import create_app
from app.main.routes import HOME_CACHE_KEY
from tests.support import csrf_token, login, mailers_queue, redis_overrides, signup


class Boom:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path):
        """Remember which file unpickling would create."""
        self.path = path

    def __reduce__(self):
        """What pickle.loads would call."""
        return (open, (str(self.path), "w"))


@pytest.fixture()
def planted(tmp_path):
    """A pickle payload and the file it would create if anything unpickled it."""
    marker = tmp_path / "pwned"
    return pickle.dumps(Boom(marker)), marker


def test_pickle_in_a_session_key_runs_no_code(app, client, planted):
    payload, marker = planted
    store = redis.Redis.from_url(app.config["SESSION_REDIS_URL"])
    store.set("session:planted-session-id", payload)
    client.set_cookie("session", "planted-session-id")
    assert client.get("/auth/login").status_code == 200
    assert not marker.exists()
    assert client.get_cookie("session").value != "planted-session-id"  # treated as no session


def test_pickle_in_the_cache_runs_no_code(app, client, planted):
    payload, marker = planted
    store = redis.Redis.from_url(app.config["CACHE_REDIS_URL"])
    store.set("cache:" + HOME_CACHE_KEY, payload)
    response = client.get("/")
    assert response.status_code == 200 and "users" in response.get_data(as_text=True)
    assert not marker.exists()


def test_pickle_in_a_job_runs_no_code_in_the_worker_or_the_tools(app, client, runner, run_worker, planted):
    payload, marker = planted
    signup(client, "ada@example.com")
    connection = redis.Redis.from_url(app.config["RQ_REDIS_URL"])
    queue = Queue("mailers", connection=connection, serializer=JSONSerializer)
    job_id = queue.job_ids[0]
    connection.hset(f"rq:job:{job_id}", "data", zlib.compress(payload))

    result = run_worker()
    assert not marker.exists()
    assert "DeserializationError" in result.stderr
    # Not run; failed, or waiting for a retry that will fail the same way.
    assert connection.hget(f"rq:job:{job_id}", "status") in (b"failed", b"scheduled")

    result = runner.invoke(args=["redis-peek", "--role", "jobs"])
    assert result.exit_code == 0, result.output
    assert not marker.exists()

    dev = create_app("development", {**redis_overrides(app.config["REDIS_URL"]), "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    dashboard = dev.test_client()
    assert dashboard.get(f"/rq/0/data/job/{job_id}.json").status_code in (200, 404)
    assert not marker.exists()


def test_session_id_from_before_login_is_not_kept(app, client):
    signup(client, "ada@example.com")
    client.get("/auth/login")
    before = client.get_cookie("session").value
    store = redis.Redis.from_url(app.config["SESSION_REDIS_URL"])
    assert store.exists(f"session:{before}")  # an anonymous session with the CSRF token

    assert login(client, "ada@example.com").status_code == 302
    after = client.get_cookie("session").value
    assert after != before
    assert not store.exists(f"session:{before}")
    assert store.exists(f"session:{after}")


def test_logout_removes_the_server_side_session(app, client):
    signup(client, "ada@example.com")
    login(client, "ada@example.com")
    sid = client.get_cookie("session").value
    page = client.get("/auth/unconfirmed").get_data(as_text=True)
    assert client.post("/auth/logout", data={"csrf_token": csrf_token(page)}).status_code == 302
    store = redis.Redis.from_url(app.config["SESSION_REDIS_URL"])
    assert b'"_user_id"' not in (store.get(f"session:{sid}") or b"")


def test_logout_needs_a_csrf_token(app, client):
    signup(client, "ada@example.com")
    login(client, "ada@example.com")
    assert client.post("/auth/logout").status_code == 400
    assert client.get("/auth/logout").status_code == 405


@pytest.mark.parametrize("field", ["to", "subject"])
def test_header_injection_is_refused_before_anything_is_enqueued(app, field):
    from app.mail.delivery import deliver_later

    values = {"to": "ada@example.com", "subject": "Hello"}
    values[field] += "\r\nBcc: victim@example.com"
    with app.test_request_context(), pytest.raises(ValueError, match="line breaks"):
        deliver_later("email/confirm", context={"email": "x", "confirm_url": "y"}, **values)
    queue = mailers_queue(app)
    assert queue.count == 0


def test_signup_is_rate_limited_per_client_address(make_app, redis_url):
    app = make_app(redis_url, SIGNUP_RATE_LIMIT="3 per minute")
    client = app.test_client()
    statuses = [signup(client, f"user{n}@example.com").status_code for n in range(3)]
    assert statuses == [302, 302, 302]
    blocked = signup(client, "user4@example.com")
    assert blocked.status_code == 429
    assert "Too many requests" in blocked.get_data(as_text=True)
    other = app.test_client()
    token = csrf_token(other.get("/auth/signup", environ_base={"REMOTE_ADDR": "10.9.9.9"}).get_data(as_text=True))
    response = other.post(
        "/auth/signup",
        data={"csrf_token": token, "email": "else@example.com", "password": "long enough pw", "password2": "long enough pw"},
        environ_base={"REMOTE_ADDR": "10.9.9.9"},
    )
    assert response.status_code == 302  # another client address has its own budget


def test_requeue_all_on_get_is_refused_in_the_dashboard(redis_url):
    app = create_app("development", {**redis_overrides(redis_url), "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    client = app.test_client()
    assert client.get("/rq/requeue/mailers").status_code == 405
    assert client.post("/rq/requeue/mailers").status_code == 400  # no CSRF token
    page = client.get("/rq/0/view/queues", follow_redirects=True).get_data(as_text=True)
    token = page.split("'X-CSRFToken': '")[1].split("'")[0]
    assert client.post("/rq/requeue/mailers", headers={"X-CSRFToken": token}).status_code == 200


def test_passwords_are_stored_salted_and_hashed(app, client):
    from app.models import User
    from app.web_extensions import db

    signup(client, "ada@example.com", "correct horse battery")
    signup(app.test_client(), "bob@example.com", "correct horse battery")
    with app.app_context():
        hashes = [user.password_hash for user in db.session.scalars(db.select(User))]
    assert all("correct horse battery" not in value for value in hashes)
    assert hashes[0] != hashes[1]  # salted
    from config import Config

    assert Config.PASSWORD_HASH_METHOD == "scrypt"  # outside the tests


def test_the_dev_dashboard_never_unpickles_a_jobs_meta(app, client, planted):
    payload, marker = planted
    signup(client, "ada@example.com")
    connection = redis.Redis.from_url(app.config["RQ_REDIS_URL"])
    queue = Queue("mailers", connection=connection, serializer=JSONSerializer)
    job = queue.jobs[0]
    queue.failed_job_registry.add(job, exc_string="failed, so the dashboard offers requeue")
    job_id = job.id
    connection.hset(f"rq:job:{job_id}", "meta", payload)  # what rq's default serializer would unpickle

    dev = create_app("development", {**redis_overrides(app.config["REDIS_URL"]), "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    dashboard = dev.test_client()
    page = dashboard.get("/rq/0/view/queues", follow_redirects=True).get_data(as_text=True)
    token = {"X-CSRFToken": page.split("'X-CSRFToken': '")[1].split("'")[0]}
    assert dashboard.get(f"/rq/0/view/job/{job_id}").status_code == 200
    assert dashboard.get(f"/rq/0/data/job/{job_id}.json").status_code == 200
    assert dashboard.post(f"/rq/job/{job_id}/requeue", headers=token).status_code == 200
    assert dashboard.post(f"/rq/job/{job_id}/delete", headers=token).status_code == 200
    assert not marker.exists()
