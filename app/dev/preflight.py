"""What `python3 dev.py` needs to know before it starts anything, read the way the app reads it.

dev.py runs this with the virtualenv's Python and gets one JSON object back:
- "env": the environment as config.py sees it: the real environment, plus what `.env` adds
  (environs/python-dotenv; a real variable always wins over `.env`). dev.py hands exactly this
  to every process, so no second parser ever reads `.env`.
- "redis": the jobs Redis (RQ_REDIS_URL): does it answer, is it fit to keep a queue (AOF on,
  maxmemory-policy noeviction), and was its URL set by the learner or is it the default.

    python -m app.dev.preflight
"""

import json
import os
import sys

REDIS_URL_SETTINGS = ("REDIS_URL", "RQ_REDIS_URL")


def redis_report(url):
    """Ask the Redis at `url` for its persistence and eviction settings (INFO, never CONFIG)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        info = client.info()
    except redis.exceptions.AuthenticationError as exc:
        return {"answers": True, "error": f"authentication failed: {exc}"}
    except redis.exceptions.RedisError as exc:
        return {"answers": False, "error": str(exc)}
    finally:
        client.close()
    return {
        "answers": True,
        "aof": bool(info.get("aof_enabled")),
        "maxmemory_policy": info.get("maxmemory_policy", "?"),
        "version": info.get("redis_version") or info.get("valkey_version", "?"),
    }


def main():
    """Print the merged environment and the jobs Redis's state as JSON."""
    import config  # reads .env into os.environ, without overriding what is already set

    explicit = any(name in os.environ for name in REDIS_URL_SETTINGS)
    url = config.Config.RQ_REDIS_URL
    report = {"url": url, "set_by_learner": explicit, **redis_report(url)}
    json.dump({"env": dict(os.environ), "redis": report}, sys.stdout)


if __name__ == "__main__":
    main()
