"""Rate-limit counters live on the evictable sessions server: a flood of logins cannot fill the queue's Redis."""

import redis

from app import create_app
from tests.support import RedisServer, csrf_token, mailers_queue, redis_overrides, signup


class LimitedRedis(RedisServer):
    """A sessions-and-cache server as docs/deploying.md shows it: no persistence, volatile-lru."""

    def command(self):
        """The usual command line, evicting keys that have a time to live."""
        return [*super().command(), "--appendonly", "no", "--maxmemory-policy", "volatile-lru"]


def test_a_login_flood_evicts_counters_on_the_sessions_server_and_mail_still_queues(tmp_path, make_app):
    for name in ("queue", "sessions"):
        (tmp_path / name).mkdir()
    queue = RedisServer(tmp_path / "queue").start()
    sessions = LimitedRedis(tmp_path / "sessions").start()
    try:
        # RATELIMIT_STORAGE_URI unset, as in docs/deploying.md: the counters follow the sessions server.
        app = make_app(queue.url, SESSION_REDIS_URL=sessions.url, CACHE_REDIS_URL=sessions.url, RATELIMIT_STORAGE_URI=None)
        on_queue, on_sessions = redis.Redis.from_url(queue.url), redis.Redis.from_url(sessions.url)

        client = app.test_client()
        token = csrf_token(client.get("/auth/login").get_data(as_text=True))
        statuses = set()
        for n in range(3000):  # each attempt names a new address: a new per-address counter
            fields = {"csrf_token": token, "email": f"guess{n}@example.com", "password": "wrong password"}
            statuses.add(client.post("/auth/login", data=fields).status_code)
            if n == 10:  # the limiter has loaded its scripts: a little room above what is used now
                on_sessions.config_set("maxmemory", on_sessions.info("memory")["used_memory"] + 256 * 1024)

        assert statuses <= {400, 429}  # wrong password or too many tries: never the 503 page
        assert on_sessions.info("stats")["evicted_keys"] > 0  # full, it evicted old counters
        assert not list(on_queue.scan_iter(match="LIMITS*"))  # none on the queue's server
        counters = list(on_sessions.scan_iter(match="LIMITS*", count=1000))
        assert counters and [key for key in counters if on_sessions.ttl(key) == -1] == []  # each can be evicted
        assert signup(app.test_client(), "ada@example.com").status_code == 302
        assert mailers_queue(app).count == 1  # the queue still takes mail jobs
    finally:
        sessions.stop()
        queue.stop()


def production_app(monkeypatch, **urls):
    """A production app on these Redis URLs (the jobs URL for anything not given)."""
    monkeypatch.setattr("config.ProductionConfig.SECRET_KEY", "x" * 40)
    monkeypatch.setattr("config.ProductionConfig.SITE_URL", "https://mailer.example.com")
    return create_app("production", {**redis_overrides(urls["jobs"]), **urls.get("others", {}), "SQLALCHEMY_DATABASE_URI": "sqlite://"})


def test_doctor_fails_rate_limits_on_the_queue_server_and_servers_without_maxmemory(tmp_path, monkeypatch):
    for name in ("queue", "sessions"):
        (tmp_path / name).mkdir()
    queue = RedisServer(tmp_path / "queue").start()
    sessions = LimitedRedis(tmp_path / "sessions").start()
    try:
        others = {"SESSION_REDIS_URL": sessions.url, "CACHE_REDIS_URL": sessions.url}
        # The old documented layout: counters on the queue's server, no maxmemory anywhere.
        app = production_app(monkeypatch, jobs=queue.url, others={**others, "RATELIMIT_STORAGE_URI": queue.url})
        output = app.test_cli_runner().invoke(args=["doctor"]).output
        assert "[FAIL] limits   rate-limit counters share the queue's server" in output
        assert f"[FAIL] memory   jobs on 127.0.0.1:{queue.port}/0: maxmemory is 0" in output
        assert f"[FAIL] memory   cache, sessions on 127.0.0.1:{sessions.port}/0: maxmemory is 0" in output

        # docs/deploying.md's layout: counters on the sessions server, each server with a maxmemory.
        for server in (queue, sessions):
            redis.Redis(port=server.port).config_set("maxmemory", "256mb")
        app = production_app(monkeypatch, jobs=queue.url, others={**others, "RATELIMIT_STORAGE_URI": None})
        output = app.test_cli_runner().invoke(args=["doctor"]).output
        assert f"[ok  ] limits   rate-limit counters on 127.0.0.1:{sessions.port}/0, maxmemory-policy volatile-lru" in output
        assert "limits   rate-limit counters share" not in output and "memory " not in output
    finally:
        sessions.stop()
        queue.stop()


def test_production_warns_at_start_up_when_the_counters_are_on_the_queue_server(redis_url, monkeypatch, caplog):
    production_app(monkeypatch, jobs=redis_url)  # every role, the counters too, on one server
    assert "rate-limit counters are on the queue's Redis server" in caplog.text
    caplog.clear()
    production_app(monkeypatch, jobs=redis_url, others={"SESSION_REDIS_URL": "redis://cache.internal:6381/0", "RATELIMIT_STORAGE_URI": None})
    assert "rate-limit counters" not in caplog.text
