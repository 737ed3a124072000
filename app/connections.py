"""Redis clients: one per role (jobs, cache, sessions), made by connect(), and the queue of mail jobs.

Each role's URL is either a plain `redis://` URL or a Sentinel one,
`redis+sentinel://host:26379,host2:26379/mymaster/0` (parsed by config.parse_sentinel_url):
the client then asks the Sentinels where the primary is, and asks again after a failover.
"""

import logging
import math

import redis
from flask import current_app
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection
from rq import Queue
from rq.serializers import JSONSerializer

from config import Config, parse_sentinel_url

log = logging.getLogger(__name__)

# role -> the config key of its URL. Each URL defaults to REDIS_URL (see config.py).
ROLE_URL_SETTINGS = {
    "jobs": "RQ_REDIS_URL",
    "cache": "CACHE_REDIS_URL",
    "sessions": "SESSION_REDIS_URL",
}
# role -> the key prefixes its data lives under, for tools that list keys by role.
# The jobs role holds RQ's own keys and our mail markers (sent, notice).
ROLE_KEY_PREFIXES = {"jobs": ("rq:", "mail:"), "cache": ("cache:",), "sessions": ("session:",)}
RETRY_INTERVAL = 0.25  # seconds between two attempts to reconnect


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


def init_redis(app, roles=ROLE_URL_SETTINGS):
    """Create the client of each role once (REDIS_ROLE_OPTIONS) and keep them in app.extensions['redis'].

    The worker's app asks for the jobs role alone: its jobs use no other.
    """
    options = app.config["REDIS_ROLE_OPTIONS"]
    app.extensions["redis"] = {role: connect(app.config[ROLE_URL_SETTINGS[role]], **options[role]) for role in roles}


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
    goes through connect(), with the worker's options (REDIS_WORKER_OPTIONS: it waits a failover out).
    """

    @classmethod
    def from_url(cls, url, **kwargs):
        """A redis.Redis for a plain or a Sentinel URL (rq passes no other arguments)."""
        return connect(url, **{**Config.REDIS_WORKER_OPTIONS, **kwargs})
