"""What each Redis role looks like right now: reachability, persistence, eviction, keys."""

from redis.exceptions import RedisError

from app.connections import ROLE_KEY_PREFIXES, connect, describe_server, redis_client

# The role whose data must never be evicted or lost on a restart: the queue of mail jobs.
DURABLE_ROLES = ("jobs",)
# Roles whose keys all expire and may be evicted: they belong on a server of their own, not
# the queue's `noeviction` one, where their growth would make it refuse new mail jobs.
EVICTABLE_ROLES = ("sessions", "cache")
# Flask-Limiter's counters: one per limit and client, and one per address a login tries.
LIMITS_PREFIX = "LIMITS:"
# Policies under which a full server makes room instead of refusing writes.
EVICTING_POLICIES = ("volatile-lru", "volatile-lfu", "volatile-ttl", "volatile-random", "allkeys-lru", "allkeys-lfu", "allkeys-random")
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
    return server_status(role, redis_client(role), ROLE_KEY_PREFIXES[role])


def limits_status(config):
    """server_status() of the Redis that Flask-Limiter keeps its counters on, or None for another storage."""
    url = config["RATELIMIT_REDIS_URL"]  # in the app's spelling (config.derive_rate_limit_storage)
    if url is None:
        return None  # memory:// and friends: counters in each process
    client = connect(url, **config["REDIS_ROLE_OPTIONS"]["sessions"])
    try:
        return server_status("limits", client, (LIMITS_PREFIX,))
    finally:
        client.close()


def server_status(role, client, prefixes):
    """Return a dict describing the Redis server a client talks to, or its error if unreachable."""
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
        "key_count": len(scan_keys(client, prefixes)),
        "prefix": " ".join(prefix + "*" for prefix in prefixes),
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


def limits_problems(status, jobs):
    """List what is wrong with where the rate-limit counters go (empty if nothing, or no Redis storage)."""
    if status is None:
        return []
    if not status["ok"]:
        return [f"unreachable: {status['error']}"]
    if jobs.get("ok") and status["server_id"] == jobs["server_id"]:
        return [
            f"rate-limit counters share the queue's server ({jobs['where']}): a flood of logins with new addresses "
            "fills it until it refuses mail jobs; leave RATELIMIT_STORAGE_URI unset (the sessions server) or point it "
            "at a server with maxmemory and maxmemory-policy volatile-lru"
        ]
    problems = []
    if status["maxmemory_policy"] not in EVICTING_POLICIES:
        problems.append(
            f"maxmemory-policy is {status['maxmemory_policy']}: once full, every signup and login fails; use "
            "volatile-lru (every counter has a time to live)"
        )
    if not status["maxmemory"]:
        problems.append("maxmemory is 0: nothing bounds the counters (one per address a login tries); set maxmemory")
    return problems


def memory_problems(statuses):
    """One problem per reachable server without a maxmemory: nothing stops it before the machine runs out."""
    problems, seen = [], set()
    for status in statuses.values():
        if not status.get("ok") or status["maxmemory"] or status["server_id"] in seen:
            continue
        seen.add(status["server_id"])
        roles = ", ".join(other for other, s in statuses.items() if s.get("server_id") == status["server_id"])
        if status["maxmemory_policy"] == "noeviction":
            why = "it grows until the machine runs out of memory; set maxmemory so that it refuses writes first"
        else:
            why = f"{status['maxmemory_policy']} evicts nothing without a limit; set maxmemory (e.g. 256mb)"
        problems.append(f"{roles} on {status['where']}: maxmemory is 0: {why}")
    return problems
