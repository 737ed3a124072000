"""Hardening (issue 10): forged hosts, login limits and timing, session growth, big bodies, Redis down or hung."""

import hashlib
import socket
import threading

import pytest
import redis

from app import create_app
from app.models import User
from app.web_extensions import db
from tests.support import (
    RedisServer,
    body_text,
    confirm_link,
    csrf_token,
    login,
    mailers_queue,
    redis_overrides,
    signup,
    wait_for,
)

PASSWORD = "correct horse battery"


def post_form(client, path, fields, **request_options):
    """Load the form page, then post it with its CSRF token and any extra request options."""
    token = csrf_token(client.get(path, **request_options).get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **fields}, **request_options)


def users(app):
    """Every user's stored address."""
    with app.app_context():
        return sorted(db.session.scalars(db.select(User.email)))


# --- 1. Links in mails come from SITE_URL, never from the request ------------------------------

FORGED = {"HTTP_HOST": "evil.example", "HTTP_X_FORWARDED_HOST": "evil.example", "HTTP_X_FORWARDED_PROTO": "http"}


def test_a_forged_host_never_reaches_a_mail(make_app, redis_url, smtp_server, run_worker):
    # Behind one proxy, so ProxyFix honours X-Forwarded-Host: the strongest case for the attacker.
    app = make_app(redis_url, SITE_URL="https://mailer.example.com", PROXY_COUNT=1)
    fields = {"email": "ada@example.com", "password": PASSWORD, "password2": PASSWORD}
    assert post_form(app.test_client(), "/auth/signup", fields, environ_overrides=FORGED).status_code == 302
    # Someone else signs up her address again: she gets a genuine "you already have an account".
    redis.Redis.from_url(redis_url).delete("mail:notice:1")  # the notice window passed
    assert post_form(app.test_client(), "/auth/signup", fields, environ_overrides=FORGED).status_code == 302
    assert run_worker().returncode == 0

    by_subject = {message["Subject"]: message for message in smtp_server.wait_for_messages(2)}
    confirm = next(m for subject, m in by_subject.items() if "Confirm" in subject)
    notice = next(m for subject, m in by_subject.items() if "already have" in subject)
    assert confirm_link(confirm).startswith("https://mailer.example.com/auth/confirm/")
    assert "https://mailer.example.com/auth/login" in body_text(notice)
    for message in (confirm, notice):
        assert "evil.example" not in message.as_string()


def test_production_refuses_to_start_without_site_url(monkeypatch):
    monkeypatch.setattr("config.ProductionConfig.SECRET_KEY", "x" * 40)
    monkeypatch.setattr("config.ProductionConfig.SITE_URL", None)
    with pytest.raises(RuntimeError, match="SITE_URL"):
        create_app("production")


def test_production_answers_only_its_own_host(redis_url, monkeypatch):
    monkeypatch.setattr("config.ProductionConfig.SECRET_KEY", "x" * 40)
    monkeypatch.setattr("config.ProductionConfig.SITE_URL", "https://mailer.example.com")
    app = create_app("production", {**redis_overrides(redis_url), "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    client = app.test_client()
    assert client.get("/auth/login", base_url="https://mailer.example.com").status_code == 200
    forged = client.get("/auth/login", base_url="https://evil.example")
    assert forged.status_code == 400
    assert "Bad request" in forged.get_data(as_text=True)


# --- 2. Login: rate limits, and the same cost for known and unknown addresses ------------------

def test_login_is_rate_limited_per_client(make_app, redis_url):
    app = make_app(redis_url, LOGIN_RATE_LIMIT="3 per minute")
    client = app.test_client()
    for n in range(3):
        assert login(client, f"user{n}@example.com").status_code == 400  # no such account
    blocked = login(client, "user3@example.com")
    assert blocked.status_code == 429
    assert "Too many requests" in blocked.get_data(as_text=True)
    other = app.test_client()
    assert post_form(other, "/auth/login", {"email": "x@example.com", "password": "whatever1"},
                     environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 400  # its own budget


def test_login_is_rate_limited_per_address_across_clients(make_app, redis_url):
    app = make_app(redis_url, LOGIN_ADDRESS_RATE_LIMIT="2 per minute")
    statuses = [
        post_form(app.test_client(), "/auth/login", {"email": variant, "password": "guess number"},
                  environ_base={"REMOTE_ADDR": f"10.0.0.{n}"}).status_code
        for n, variant in enumerate(["ada@example.com", " ADA@example.com", "Ada@Example.com"])
    ]
    assert statuses == [400, 400, 429]  # one address, three clients, three spellings
    other = post_form(app.test_client(), "/auth/login", {"email": "bob@example.com", "password": "guess number"},
                      environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 400


@pytest.fixture()
def key_derivations(monkeypatch):
    """Count password key derivations (PBKDF2 under TestingConfig), whoever calls them."""
    calls = []
    real = hashlib.pbkdf2_hmac

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counting)
    return calls


def test_login_costs_one_hash_check_for_known_and_unknown_addresses(app, client, key_derivations):
    signup(client, "ada@example.com")
    fresh = app.test_client()
    csrf = csrf_token(fresh.get("/auth/login").get_data(as_text=True))
    costs = {}
    for address in ("ada@example.com", "nobody@example.com"):
        key_derivations.clear()
        response = fresh.post("/auth/login", data={"csrf_token": csrf, "email": address, "password": "wrong password"})
        assert response.status_code == 400
        costs[address] = len(key_derivations)
    assert costs == {"ada@example.com": 1, "nobody@example.com": 1}


def test_signup_costs_one_hash_for_new_and_existing_addresses(app, key_derivations):
    costs = []
    for _ in range(2):  # the first creates the account, the second finds it
        client = app.test_client()
        csrf = csrf_token(client.get("/auth/signup").get_data(as_text=True))
        key_derivations.clear()
        response = client.post("/auth/signup", data={"csrf_token": csrf, "email": "ada@example.com", "password": PASSWORD, "password2": PASSWORD})
        assert response.status_code == 302
        costs.append(len(key_derivations))
    assert costs == [1, 1]


# --- 3. Anonymous sessions are short-lived ------------------------------------------------------

def test_anonymous_visits_leave_only_short_lived_sessions(app, client):
    store = redis.Redis.from_url(app.config["SESSION_REDIS_URL"])
    for n in range(30):
        app.test_client().get("/auth/login" if n % 2 else "/auth/signup")
    keys = store.keys("session:*")
    assert len(keys) == 30
    assert all(0 < store.ttl(key) <= 3600 for key in keys)

    signup(client, "ada@example.com")
    login(client, "ada@example.com")
    signed_in = store.ttl("session:" + client.get_cookie("session").value)
    assert signed_in > 3600  # PERMANENT_SESSION_LIFETIME, 14 days
    assert client.get_cookie("session").expires is not None  # a persistent cookie only after login


# --- 4. Request size ----------------------------------------------------------------------------

def test_a_large_body_gets_the_413_page_and_saves_nothing(app, client):
    big = "a" * 100_000 + "@example.com"  # far beyond any form here, under Flask's 500 kB default
    response = post_form(client, "/auth/signup", {"email": big, "password": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 413
    assert "Too much data" in response.get_data(as_text=True)
    assert users(app) == [] and mailers_queue(app).count == 0


# --- 5. One Redis down: the 503 page, not a bare 500 --------------------------------------------

def test_redis_down_gives_the_503_page_and_pages_without_redis_still_work(tmp_path, make_app):
    server = RedisServer(tmp_path).start()
    try:
        app = make_app(server.url, PROPAGATE_EXCEPTIONS=False)  # as in production: errors become pages
        returning = app.test_client()
        assert returning.get("/auth/login").status_code == 200  # has a session cookie now
    finally:
        server.stop()

    for client, path in ((returning, "/"), (returning, "/auth/login"), (app.test_client(), "/auth/signup")):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "Try again shortly" in response.get_data(as_text=True)
    stranger = app.test_client().get("/")  # no session, cache down: rendered from the database
    assert stranger.status_code == 200
    assert "users" in stranger.get_data(as_text=True)


# --- 6. A hung cache Redis ----------------------------------------------------------------------

class HungServer:
    """A TCP server that accepts connections and never answers: a Redis stopped in its tracks."""

    def __init__(self):
        """Listen on a free loopback port."""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        """Accept and hold every connection until closed."""
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self):
        """Close the listener and every held connection (a request still waiting then fails)."""
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.fixture()
def hung_server():
    """A server that accepts and never answers; closed after the test."""
    server = HungServer()
    yield server
    server.close()


def test_a_hung_cache_falls_back_to_the_uncached_page(make_app, redis_url, hung_server):
    app = make_app(redis_url, CACHE_REDIS_URL=f"redis://127.0.0.1:{hung_server.port}/0")
    answers = []

    def visit():
        answers.append(app.test_client().get("/"))  # through app.page_cache, then the view

    thread = threading.Thread(target=visit, daemon=True)
    thread.start()
    wait_for(lambda: answers, timeout=60, message="GET / to answer while the cache hangs")
    assert hung_server.held, "the request never reached the hung cache"
    assert answers[0].status_code == 200
    assert "<strong>0</strong> users" in answers[0].get_data(as_text=True)
    # How long each wait lasted is the client's setting, not something to time here: redis-py's
    # default is 5 s a command, three of them (page cache, view get and set) per visit.
    pool = app.wsgi_app.backend._read_client.connection_pool.connection_kwargs
    assert pool["socket_timeout"] < 1 and pool["socket_connect_timeout"] < 1


# --- 8. Addresses: non-ASCII local parts refused, IDN domains normalised --------------------------

def test_a_non_ascii_local_part_is_refused_at_signup(app, client):
    response = signup(client, "üser@example.com")
    assert response.status_code == 400
    assert "we cannot send mail to addresses like üser@example.com" in response.get_data(as_text=True)
    assert users(app) == [] and mailers_queue(app).count == 0


def test_an_idn_domain_is_one_account_in_either_spelling(app):
    assert signup(app.test_client(), "ada@bücher.com").status_code == 302
    assert signup(app.test_client(), "ada@xn--bcher-kva.com").status_code == 302
    assert users(app) == ["ada@xn--bcher-kva.com"]
    assert mailers_queue(app).jobs[0].kwargs["to"] == "ada@xn--bcher-kva.com"
    assert login(app.test_client(), "ADA@Bücher.com").status_code == 302  # login normalises the same way


# --- 13. Security headers, and a bad cache entry ------------------------------------------------

SECURITY_HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy")


def test_every_page_carries_the_security_headers(app, client):
    for path in ("/", "/auth/login", "/auth/signup", "/no-such-page"):
        response = client.get(path)
        for header in SECURITY_HEADERS:
            assert header in response.headers, (path, header)
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert "Strict-Transport-Security" not in response.headers  # HTTPS only is for production


def test_production_pages_carry_hsts(redis_url, monkeypatch):
    monkeypatch.setattr("config.ProductionConfig.SECRET_KEY", "x" * 40)
    monkeypatch.setattr("config.ProductionConfig.SITE_URL", "https://mailer.example.com")
    app = create_app("production", {**redis_overrides(redis_url), "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    response = app.test_client().get("/auth/login", base_url="https://mailer.example.com")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


@pytest.mark.parametrize("planted", [b"123", b'{"html": "<p>x</p>"}', b"[1, 2]", b"null", b"not json"])
def test_a_cache_entry_of_the_wrong_type_is_a_miss(app, planted):
    redis.Redis.from_url(app.config["CACHE_REDIS_URL"]).set("cache:page:home", planted)
    response = app.test_client().get("/")  # through app.page_cache, then the view
    assert response.status_code == 200
    assert "<strong>0</strong> users" in response.get_data(as_text=True)
