"""`flask doctor` on the queue server's durability and on the production Redis topology (issue 10)."""

import pytest

from app import create_app
from tests.support import RedisServer, redis_overrides


class TunedRedis(RedisServer):
    """The test RedisServer with extra redis-server options."""

    def __init__(self, directory, *options):
        """Remember the extra options."""
        super().__init__(directory)
        self.options = list(options)

    def command(self):
        """The usual command line plus the extra options (later ones win)."""
        return [*super().command(), *self.options]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (("--appendfsync", "no"), "appendfsync is no"),
        (("--maxmemory", "1mb"), "maxmemory is 1024 KB"),
    ],
)
def test_doctor_fails_a_queue_server_that_can_lose_or_refuse_mail(tmp_path, make_app, smtp_server, options, problem):
    server = TunedRedis(tmp_path, *options).start()
    try:
        result = make_app(server.url).test_cli_runner().invoke(args=["doctor"])
    finally:
        server.stop()
    assert result.exit_code == 1
    assert "[FAIL] jobs" in result.output
    assert problem in result.output


def test_doctor_notes_sessions_on_the_queue_server_in_development(app, runner):
    result = runner.invoke(args=["doctor"])
    assert "[note] topology sessions and cache share the queue's server" in result.output
    assert result.output.count("topology") == 1


def test_doctor_fails_sessions_on_the_queue_server_in_production(tmp_path, redis_url, monkeypatch):
    monkeypatch.setattr("config.ProductionConfig.SECRET_KEY", "x" * 40)
    monkeypatch.setattr("config.ProductionConfig.SITE_URL", "https://mailer.example.com")
    cache = TunedRedis(tmp_path, "--maxmemory-policy", "allkeys-lru").start()
    try:
        overrides = {**redis_overrides(redis_url), "CACHE_REDIS_URL": cache.url, "SQLALCHEMY_DATABASE_URI": "sqlite://"}
        result = create_app("production", overrides).test_cli_runner().invoke(args=["doctor"])
    finally:
        cache.stop()
    assert result.exit_code == 1
    assert "[FAIL] topology sessions shares the queue's server" in result.output
    assert "topology cache" not in result.output  # the cache has a server of its own
