"""One Redis client per role (jobs, cache, sessions), so the three roles sit side by side.

Each role's URL is either a plain `redis://` URL or a Sentinel one,
`redis+sentinel://host:26379,host2:26379/mymaster/0`: the client then asks the Sentinels where
the primary is, and asks again after a failover. Every client is made here, by connect().
"""

import logging
import math
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis
from flask import current_app
from flask_caching.backends.rediscache import RedisCache
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection
from rq import Queue
from rq.serializers import JSONSerializer

from config import ConfigError

log = logging.getLogger(__name__)

SENTINEL_SCHEME = "redis+sentinel"

# role -> the config key of its URL. Each URL defaults to REDIS_URL (see config.py).
ROLE_URL_SETTINGS = {
    "jobs": "RQ_REDIS_URL",
    "cache": "CACHE_REDIS_URL",
    "sessions": "SESSION_REDIS_URL",
}
# role -> the key prefixes its data lives under, for tools that list keys by role.
# The jobs role holds RQ's own keys and our mail markers (sent, notice).
ROLE_KEY_PREFIXES = {"jobs": ("rq:", "mail:"), "cache": ("cache:",), "sessions": ("session:",)}
# --8<-- [start:role_options]
# role -> the options of its client, all in one place. `retry_seconds` is how long a command
# keeps reconnecting after it lost its connection: jobs and sessions wait out a Sentinel
# failover (~2-3 s with down-after-milliseconds 1000-2000), so a request that meets one is only
# slower; past that it answers the 503 page. The cache is optional (a miss renders the page from
# the database): it gives up fast, and a hung cache server costs a request well under a second.
ROLE_OPTIONS = {
    "jobs": {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 30, "retry_seconds": 5},
    "cache": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25, "health_check_interval": 30, "retry_seconds": 0.5},
    "sessions": {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 30, "retry_seconds": 5},
}
# `rq worker`'s own connection (and the sent-markers it writes) waits longer: a worker has no
# user waiting, and a marker it failed to write would let a retry of the job send twice.
WORKER_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 10, "health_check_interval": 30, "retry_seconds": 30}
# --8<-- [end:role_options]
RETRY_INTERVAL = 0.25  # seconds between two attempts to reconnect


@dataclass(frozen=True)
class SentinelURL:
    """A parsed `redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]` URL."""

    sentinels: tuple  # ((host, port), ...)
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def for_limits(self):
        """The same place in the `limits` library's spelling (no DB in the path: it goes in options)."""
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"{SENTINEL_SCHEME}://{auth}{hosts}/{self.service}"


# --8<-- [start:parse_sentinel_url]
def parse_sentinel_url(url):
    """Return a SentinelURL for a `redis+sentinel://` URL, None for any other URL.

    Raises ValueError, naming the part that is wrong, for a malformed Sentinel URL.
    """
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        return None
    hint = f"expected {SENTINEL_SCHEME}://host:26379[,host2:26379...]/service-name[/db], got {url!r}"
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = []
    for address in filter(None, hosts.split(",")):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"Sentinel address {address!r} is not host:port; {hint}")
        sentinels.append((host.strip("[]"), int(port)))
    if not sentinels:
        raise ValueError(f"no Sentinel address; {hint}")
    path = [segment for segment in parts.path.split("/") if segment]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"the path must be /service-name or /service-name/db; {hint}")
    username, password = None, None
    if "@" in parts.netloc:
        credentials = parts.netloc.rpartition("@")[0]
        user, has_password, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else unquote(user)
        if not has_password:
            username = None
    return SentinelURL(tuple(sentinels), path[0], int(path[1]) if len(path) == 2 else 0, username, password)
# --8<-- [end:parse_sentinel_url]


class FailoverConnection(SentinelManagedConnection):
    """A connection to the primary that asks the Sentinels again each time it reconnects.

    redis-py 8.1 reconnects a connection that dropped mid-command (the retry of that command)
    to the address it had, not through Sentinel (redis/redis-py issue 3874): the command in
    flight when the primary died knocked on the dead address until its retries ran out (30 s
    for the worker's dequeue), although Sentinel had named the new primary after 2 s.
    """

    def send_packed_command(self, command, check_health=True):
        """Reconnect through Sentinel (one attempt; the command's Retry repeats it), then send."""
        if not self._sock:
            self._connect_retry()
        return super().send_packed_command(command, check_health)


def failover_retry(seconds):
    """A redis-py Retry that reconnects every RETRY_INTERVAL on a lost connection, for about `seconds`.

    Only ConnectionError is retried: Sentinel's clients turn the old primary's READONLY into
    one, so the next attempt asks the Sentinels for the new primary. A timeout is not retried:
    the command may have run, and a hung server would hold the request for retries x timeout.
    """
    return Retry(ConstantBackoff(RETRY_INTERVAL), retries=max(1, math.ceil(seconds / RETRY_INTERVAL)),
                 supported_errors=(ConnectionError,))


# --8<-- [start:connect]
def connect(url, socket_connect_timeout, socket_timeout, health_check_interval, retry_seconds):
    """Return a redis-py client for a plain or a Sentinel URL, retrying lost connections."""
    options = {
        "socket_connect_timeout": socket_connect_timeout,
        "socket_timeout": socket_timeout,
        "health_check_interval": health_check_interval,
        "retry": failover_retry(retry_seconds),
    }
    where = parse_sentinel_url(url)
    if where is None:
        return redis.Redis.from_url(url, **options)
    # Sentinels answer only "where is the primary?": short timeouts, so a dead one is skipped fast.
    sentinels = Sentinel(where.sentinels, sentinel_kwargs={"socket_connect_timeout": 0.5, "socket_timeout": 0.5})
    return sentinels.master_for(where.service, connection_class=FailoverConnection, db=where.db,
                                username=where.username, password=where.password, **options)
# --8<-- [end:connect]


def sentinel_of(client):
    """The redis.sentinel.Sentinel behind a client made by connect(), or None for a plain client."""
    return getattr(client.connection_pool, "sentinel_manager", None)


def describe_server(client):
    """Where a client's commands go, for humans: host:port/db, or the Sentinel service's name/db."""
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if sentinel_of(client) is not None:
        return f"Sentinel service {pool.service_name}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('path') or kwargs.get('host', 'localhost')}:{kwargs.get('port', '')}/{kwargs.get('db', 0)}"


def init_redis(app):
    """Create the client of each role once and keep them in app.extensions['redis']."""
    clients = {}
    for role, setting in ROLE_URL_SETTINGS.items():
        try:
            clients[role] = connect(app.config[setting], **ROLE_OPTIONS[role])
        except ValueError as exc:  # a malformed URL (parse_sentinel_url says what is wrong)
            fallback = ", which falls back to REDIS_URL" if app.config[setting] == app.config["REDIS_URL"] else ""
            raise ConfigError(f"{setting}{fallback}: {exc}") from exc
    app.extensions["redis"] = clients
    # Flask-Session takes a client object rather than a URL; Flask-Caching gets one through
    # RoleRedisCache (CACHE_TYPE); Flask-Limiter only takes a URI and its options.
    app.config["SESSION_REDIS"] = clients["sessions"]
    configure_limiter_storage(app)


def configure_limiter_storage(app):
    """Give Flask-Limiter the sessions role's client options, and a Sentinel URL in its own spelling.

    Its `limits` library reads `redis+sentinel://hosts/service` (no DB in the path) and takes
    the rest as options. Flask-Limiter merges these options into its one module-level
    limiter, so every app sets the same keys: nothing of a previous app's lingers.
    """
    url = app.config["RATELIMIT_STORAGE_URI"] = app.config["RATELIMIT_STORAGE_URI"] or app.config["SESSION_REDIS_URL"]
    where = parse_sentinel_url(url)
    if where is not None:
        app.config["RATELIMIT_STORAGE_URI"] = where.for_limits()
    elif not url.startswith(("redis://", "rediss://")):
        return  # memory:// and friends take no Redis options
    options = dict(ROLE_OPTIONS["sessions"])
    db = where.db if where is not None else int(urlsplit(url).path.strip("/") or 0)
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"db": db, "retry": failover_retry(options.pop("retry_seconds")), **options}


class RoleRedisCache(RedisCache):
    """Flask-Caching's RedisCache on the app's `cache` client (plain Redis or Sentinel), made by init_redis."""

    @classmethod
    def factory(cls, app, config, args, kwargs):
        """Build the cache on app.extensions['redis']['cache'] instead of a client of its own."""
        kwargs.update(host=app.extensions["redis"]["cache"], key_prefix=config["CACHE_KEY_PREFIX"])
        return cls(*args, **kwargs)


def redis_client(role):
    """Return the current app's Redis client for a role: 'jobs', 'cache' or 'sessions'."""
    return current_app.extensions["redis"][role]


def get_queue(name):
    """Return an RQ queue on the jobs Redis, with the JSON serializer (never pickle)."""
    return Queue(name, connection=redis_client("jobs"), serializer=JSONSerializer)


# --8<-- [start:wait_for_replica]
def wait_for_replica():
    """Block until a replica has every write made so far on the jobs Redis (WAIT), within a timeout.

    Replication is asynchronous: a primary killed right after an enqueue can take the job
    with it. Called right after an enqueue, this makes the answer to the user wait until a
    replica holds the job too. Returns the number of replicas that confirmed. It does not
    raise when they do not (a lost replica must not stop signups; `flask doctor` reports it,
    and the outbox sweeper re-enqueues what a failover then loses): with no replica connected
    it returns 0 at once; with a replica that does not confirm within RQ_WAIT_TIMEOUT_MS, it
    logs a warning and returns what it got. No-op when RQ_WAIT_REPLICAS is 0.
    """
    config = current_app.config
    wanted = config["RQ_WAIT_REPLICAS"]
    if wanted is None:  # default: wait when the jobs Redis is behind Sentinel, which implies a replica
        wanted = 1 if parse_sentinel_url(config["RQ_REDIS_URL"]) else 0
    if not wanted:
        return 0
    client = redis_client("jobs")
    try:
        replicas = client.role()[2]  # the primary's ROLE: its connected replicas
        if not replicas:
            return 0
        # WAIT covers the writes made on its own connection, and the enqueue may have used another
        # one of the pool: write a mark on the same connection first (one pipeline). The
        # replication stream is in order, so once a replica has the mark it has the job too.
        with client.pipeline(transaction=False) as pipe:
            pipe.incr("mail:replication-mark")
            pipe.wait(min(wanted, len(replicas)), config["RQ_WAIT_TIMEOUT_MS"])
            _, confirmed = pipe.execute()
    except RedisError as exc:
        # The job is enqueued already: failing the signup now would leave a job without its user.
        log.warning("could not wait for a replica after the enqueue: %s", exc)
        return 0
    if confirmed < wanted:
        log.warning("%d of %d replica(s) confirmed the enqueue within %d ms", confirmed, wanted, config["RQ_WAIT_TIMEOUT_MS"])
    return confirmed
# --8<-- [end:wait_for_replica]


class FailoverRedis(redis.Redis):
    """The client class for `rq worker --connection-class`: from_url() also reads redis+sentinel:// URLs.

    rq's CLI builds its connection with `connection_class.from_url(RQ_REDIS_URL)`; this one
    goes through connect(), with the worker's options (WORKER_OPTIONS: it waits a failover out).
    """

    @classmethod
    def from_url(cls, url, **kwargs):
        """A redis.Redis for a plain or a Sentinel URL (rq passes no other arguments)."""
        return connect(url, **{**WORKER_OPTIONS, **kwargs})
