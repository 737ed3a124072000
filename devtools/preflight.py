"""What `python3 dev.py` needs to know before it starts anything, read the way the app reads it.

dev.py runs this with the virtualenv's Python and gets one JSON object back:
- "env": the real environment plus the settings dev.py itself needs (ports, folders,
  FLASK_CONFIG), read through config.py's own environs reader (a real variable always wins
  over `.env`). dev.py hands this to every process, and no second parser ever reads `.env`.
- "redis": the jobs Redis (RQ_REDIS_URL): does it answer, is it fit to keep a queue (AOF on,
  maxmemory-policy noeviction), and was its URL set by the learner or is it the default.

With --resume-workers (once the jobs Redis runs, before the worker starts) it lifts `rq suspend`,
which `rq worker` refuses to start under, and says whether it was set and how many jobs wait.

    python -m devtools.preflight
    python -m devtools.preflight --resume-workers
"""

import json
import os
import sys

REDIS_URL_SETTINGS = ("REDIS_URL", "RQ_REDIS_URL")
# What dev.py and Procfile.dev's ${...} use, besides the Redis URL.
DEV_SETTINGS = ("PORT", "MAIL_PORT", "MAILDIR", "REDIS_DIR", "FLASK_CONFIG")


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


def resume_workers(url, queues):
    """Lift `rq suspend` on the jobs Redis; report whether it was set and the jobs waiting on `queues`."""
    import redis
    from rq import Queue
    from rq.suspension import is_suspended, resume

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        suspended = bool(is_suspended(client))
        if suspended:
            resume(client)
        waiting = sum(Queue(name, connection=client).count for name in queues)
    except redis.exceptions.RedisError as exc:
        return {"error": str(exc)}
    finally:
        client.close()
    return {"was_suspended": suspended, "waiting": waiting}


def main():
    """Print the merged environment and the jobs Redis's state as JSON."""
    import config

    if sys.argv[1:] == ["--resume-workers"]:
        json.dump(resume_workers(config.Config.RQ_REDIS_URL, config.Config.RQ_QUEUES), sys.stdout)
        return
  # its environs Env has read .env (under the real environment)

    read = {name: config.env.str(name, None) for name in (*DEV_SETTINGS, *REDIS_URL_SETTINGS)}
    env = {**os.environ, **{name: value for name, value in read.items() if value is not None}}
    url = config.Config.RQ_REDIS_URL
    explicit = any(read[name] is not None for name in REDIS_URL_SETTINGS)
    report = {"url": url, "set_by_learner": explicit, **redis_report(url)}
    json.dump({"env": env, "redis": report}, sys.stdout)


if __name__ == "__main__":
    main()
