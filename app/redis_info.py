"""What each Redis role looks like right now: reachability, persistence, eviction, keys."""

from redis.exceptions import RedisError

from app.connections import ROLE_KEY_PREFIXES, describe_server, redis_client

# The role whose data must never be evicted or lost on a restart: the queue of mail jobs.
DURABLE_ROLES = ("jobs",)
# Roles whose keys all expire and may be evicted: they belong on a server of their own, not
# the queue's `noeviction` one, where their growth would make it refuse new mail jobs.
EVICTABLE_ROLES = ("sessions", "cache")
# Below this, a queue server fills up after a few thousand waiting mails (0 means no limit).
MIN_QUEUE_MAXMEMORY = 64 * 1024 * 1024


def scan_keys(client, prefixes, limit=10_000):
    """Return up to `limit` keys under the prefixes, found with SCAN (never KEYS)."""
    keys = []
    for prefix in prefixes:
        for key in client.scan_iter(match=prefix + "*", count=500):
            keys.append(key)
            if len(keys) >= limit:
                return keys
    return keys


def config_value(client, name):
    """One CONFIG GET value, or None where the service disables CONFIG (many managed ones do)."""
    try:
        return client.config_get(name).get(name)
    except RedisError:
        return None


def role_status(role):
    """Return a dict describing one role's Redis server, or its error if unreachable."""
    client = redis_client(role)
    where = describe_server(client)
    try:
        info = client.info()  # INFO, not CONFIG GET: managed Redis services often disable CONFIG
    except RedisError as exc:
        return {"role": role, "where": where, "ok": False, "error": str(exc)}
    return {
        "role": role,
        "where": where,
        "ok": True,
        "server_id": info.get("run_id"),  # the same on every role that shares one server
        "version": info.get("redis_version") or info.get("valkey_version", "?"),
        "aof": bool(info.get("aof_enabled")),
        "appendfsync": config_value(client, "appendfsync"),
        "maxmemory": int(info.get("maxmemory", 0)),
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
            problems.append("AOF persistence is off: queued mail is lost if Redis is killed (appendonly yes)")
        if status["maxmemory_policy"] != "noeviction":
            problems.append(f"maxmemory-policy is {status['maxmemory_policy']}: Redis may evict jobs (set noeviction)")
        if status["appendfsync"] == "no":
            problems.append("appendfsync is no: the last ~30 s of queued mail can be lost on a crash (appendfsync everysec)")
        if 0 < status["maxmemory"] < MIN_QUEUE_MAXMEMORY:
            problems.append(
                f"maxmemory is {status['maxmemory'] // 1024} KB: the queue refuses new mail once it is full "
                f"(give it at least {MIN_QUEUE_MAXMEMORY // 2**20} MB, or 0 for no limit)"
            )
    return problems


def topology_problems(statuses):
    """At most one problem: the evictable roles (sessions, cache) that share the queue's server."""
    jobs = statuses.get("jobs", {})
    if not jobs.get("ok"):
        return []
    sharing = [role for role in EVICTABLE_ROLES
               if statuses.get(role, {}).get("server_id") == jobs["server_id"] and jobs["maxmemory_policy"] == "noeviction"]
    if not sharing:
        return []
    many = len(sharing) > 1
    return [
        f"{' and '.join(sharing)} {'share' if many else 'shares'} the queue's server ({jobs['where']}, maxmemory-policy "
        f"{jobs['maxmemory_policy']}): {'their' if many else 'its'} growth can fill it and make it refuse mail jobs; give "
        f"{'them' if many else 'it'} a server whose keys may be evicted (maxmemory-policy volatile-lru or allkeys-lru)"
    ]
