"""What each Redis role looks like right now: reachability, persistence, eviction, keys."""

from redis.exceptions import RedisError

from app.connections import ROLE_KEY_PREFIXES, redis_client

# Roles whose data must never be evicted or lost on a restart.
DURABLE_ROLES = ("jobs", "sessions")


def scan_keys(client, prefixes, limit=10_000):
    """Return up to `limit` keys under the prefixes, found with SCAN (never KEYS)."""
    keys = []
    for prefix in prefixes:
        for key in client.scan_iter(match=prefix + "*", count=500):
            keys.append(key)
            if len(keys) >= limit:
                return keys
    return keys


def role_status(role):
    """Return a dict describing one role's Redis server, or its error if unreachable."""
    client = redis_client(role)
    kwargs = client.connection_pool.connection_kwargs
    where = f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}/{kwargs.get('db', 0)}"
    try:
        info = client.info()  # INFO, not CONFIG GET: managed Redis services often disable CONFIG
    except RedisError as exc:
        return {"role": role, "where": where, "ok": False, "error": str(exc)}
    return {
        "role": role,
        "where": where,
        "ok": True,
        "version": info.get("redis_version") or info.get("valkey_version", "?"),
        "aof": bool(info.get("aof_enabled")),
        "maxmemory_policy": info.get("maxmemory_policy", "?"),
        "used_memory": info.get("used_memory_human", "?"),
        "key_count": len(scan_keys(client, ROLE_KEY_PREFIXES[role])),
        "prefix": " ".join(prefix + "*" for prefix in ROLE_KEY_PREFIXES[role]),
    }


def role_problems(status):
    """List what is wrong with a role for production use (empty if nothing)."""
    if not status["ok"]:
        return [f"unreachable: {status['error']}"]
    problems = []
    if status["role"] in DURABLE_ROLES:
        if not status["aof"]:
            problems.append("AOF persistence is off: queued mail and sessions are lost if Redis is killed (appendonly yes)")
        if status["maxmemory_policy"] != "noeviction":
            problems.append(f"maxmemory-policy is {status['maxmemory_policy']}: Redis may evict jobs (set noeviction)")
    return problems
