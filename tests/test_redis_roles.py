"""The three Redis roles: sessions as JSON under session:, the cache under cache:, jobs as JSON."""

import json

import pytest
import redis

from app import create_app
from tests.support import login, redis_overrides, signup


def raw_redis(app):
    """A plain redis-py client on the test Redis."""
    return redis.Redis.from_url(app.config["REDIS_URL"])


def test_session_lives_in_redis_as_json_and_cookie_holds_only_an_id(app, client):
    signup(client, "ada@example.com")
    login(client, "ada@example.com")
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert len(cookie.value) < 64 and "." not in cookie.value  # an opaque id, not signed data
    stored = raw_redis(app).get(f"session:{cookie.value}")
    data = json.loads(stored)
    assert data["_user_id"] == "1"
    ttl = raw_redis(app).ttl(f"session:{cookie.value}")
    assert 0 < ttl <= app.config["PERMANENT_SESSION_LIFETIME"]


def test_session_cookie_flags(app, client):
    response = client.get("/auth/signup")
    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Secure" not in header  # testing; production sets it (see test_production_cookies_are_secure)


def test_production_cookies_are_secure(redis_url, monkeypatch):
    monkeypatch.setattr("config.ProductionConfig.SECRET_KEY", "x" * 40)
    monkeypatch.setattr("config.ProductionConfig.SITE_URL", "https://mailer.example.com")
    app = create_app("production", {**redis_overrides(redis_url), "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["REMEMBER_COOKIE_SECURE"] is True


def test_production_refuses_the_dev_secret_key(monkeypatch):
    from config import DEV_SECRET_KEY

    monkeypatch.setattr("config.ProductionConfig.SECRET_KEY", DEV_SECRET_KEY)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app("production")


def test_home_page_is_cached_under_cache_prefix_for_at_most_90_minutes(app, client):
    first = client.get("/").get_data(as_text=True)
    keys = raw_redis(app).keys("cache:*")
    assert keys, "the home page was not cached"
    ttl = raw_redis(app).ttl(keys[0])
    assert 0 < ttl <= 5400
    json.loads(raw_redis(app).get(keys[0]))  # stored as JSON, not pickle

    second = app.test_client().get("/").get_data(as_text=True)
    assert second == first  # the cached page, until it expires or the counts change
    signup(client, "new@example.com")  # a signup forgets the cached page: the learner sees the new count
    third = app.test_client().get("/").get_data(as_text=True)
    assert "<strong>1</strong> user," in third


def test_cache_unreachable_still_renders_the_page(app, redis_url):
    from tests.support import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    broken = create_app("testing", {**app.config, "CACHE_REDIS_URL": dead})
    response = broken.test_client().get("/")
    assert response.status_code == 200
    assert "users" in response.get_data(as_text=True)


@pytest.mark.parametrize("config_name", ["testing", "production"])
def test_dashboard_is_404_outside_development(redis_url, config_name, monkeypatch):
    monkeypatch.setattr("config.ProductionConfig.SECRET_KEY", "x" * 40)
    monkeypatch.setattr("config.ProductionConfig.SITE_URL", "https://mailer.example.com")
    app = create_app(config_name, {**redis_overrides(redis_url), "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    client = app.test_client()
    for path in ("/rq/", "/rq/0/view/workers", "/rq/requeue/mailers", "/dev/", "/dev/mail/"):
        assert client.get(path).status_code == 404, path


def test_dashboard_answers_in_development(redis_url):
    app = create_app("development", {**redis_overrides(redis_url), "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    client = app.test_client()
    for path in ("/rq/", "/rq/0/view/queues", "/rq/0/view/workers", "/rq/0/data/queues.json", "/rq/0/data/workers.json"):
        assert client.get(path, follow_redirects=True).status_code == 200, path
