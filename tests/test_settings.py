"""Settings in one place: config.load_settings() derives every value, checks the result, and the app runs with it."""

import pytest

from app import create_app, create_worker_app
from config import load_settings
from tests.support import redis_overrides


def production_ready(monkeypatch):
    """Give ProductionConfig a real-looking key and address, as a deployment's environment would."""
    monkeypatch.setattr("config.ProductionConfig.SECRET_KEY", "x" * 40)
    monkeypatch.setattr("config.ProductionConfig.SITE_URL", "https://mailer.example.com")


def test_the_app_runs_with_exactly_the_settings_config_derives(redis_url, monkeypatch):
    production_ready(monkeypatch)
    overrides = {**redis_overrides(redis_url), "SQLALCHEMY_DATABASE_URI": "sqlite://", "RATELIMIT_STORAGE_URI": None}
    settings = load_settings("production", overrides)
    assert settings["SERVER_NAME"] == "mailer.example.com" and settings["TRUSTED_HOSTS"] == ["mailer.example.com"]
    assert settings["RATELIMIT_REDIS_URL"] == redis_url  # unset: the sessions server
    app = create_app("production", overrides)
    # No extension or module rewrote a setting on the way (SESSION_REDIS, CACHE_SERIALIZER, ... are gone).
    assert {name: app.config[name] for name in settings} == settings
    assert "SESSION_REDIS" not in app.config and "CACHE_SERIALIZER" not in app.config


def test_production_checks_the_final_settings_overrides_included(redis_url, monkeypatch):
    production_ready(monkeypatch)
    with pytest.raises(RuntimeError, match="SITE_URL"):
        create_app("production", {**redis_overrides(redis_url), "SITE_URL": "http://mailer.example.com"})
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app("production", {**redis_overrides(redis_url), "SECRET_KEY": "short"})


def test_the_workers_app_has_only_what_its_jobs_use(redis_url):
    app = create_worker_app("testing", {**redis_overrides(redis_url), "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    assert set(app.extensions["redis"]) == {"jobs"}
    web_only = [name for name in app.config if name.startswith(("SESSION_TYPE", "SESSION_REDIS", "CACHE_TYPE", "RATELIMIT_", "LOGIN_RATE"))]
    assert web_only == []
    assert app.config["SERVER_NAME"] == "localhost" and app.config["RQ_REDIS_URL"] == redis_url  # what jobs need
