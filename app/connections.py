"""One Redis client per role (jobs, cache, sessions), so the three roles sit side by side."""

import redis
from flask import current_app
from rq import Queue
from rq.serializers import JSONSerializer

# role -> the config key of its URL. Each URL defaults to REDIS_URL (see config.py).
ROLE_URL_SETTINGS = {
    "jobs": "RQ_REDIS_URL",
    "cache": "CACHE_REDIS_URL",
    "sessions": "SESSION_REDIS_URL",
}
# role -> the key prefixes its data lives under, for tools that list keys by role.
# The jobs role holds RQ's own keys and our mail markers (sent, notice).
ROLE_KEY_PREFIXES = {"jobs": ("rq:", "mail:"), "cache": ("cache:",), "sessions": ("session:",)}
# role -> client options. The cache is optional (a miss renders the page from the database), so
# a hung cache server must cost a request well under a second, not the OS's TCP timeouts.
ROLE_OPTIONS = {
    "jobs": {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 30},
    "cache": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25, "health_check_interval": 30},
    "sessions": {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 30},
}


def init_redis(app):
    """Create the client of each role once and keep them in app.extensions['redis']."""
    clients = {
        role: redis.Redis.from_url(app.config[setting], **ROLE_OPTIONS[role])
        for role, setting in ROLE_URL_SETTINGS.items()
    }
    app.extensions["redis"] = clients
    # Flask-Session takes a client object rather than a URL.
    app.config["SESSION_REDIS"] = clients["sessions"]


def redis_client(role):
    """Return the current app's Redis client for a role: 'jobs', 'cache' or 'sessions'."""
    return current_app.extensions["redis"][role]


def get_queue(name="default"):
    """Return an RQ queue on the jobs Redis, with the JSON serializer (never pickle)."""
    return Queue(name, connection=redis_client("jobs"), serializer=JSONSerializer)
