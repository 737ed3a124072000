"""Configuration classes, chosen by name (FLASK_CONFIG), with values from the environment."""

from pathlib import Path
from urllib.parse import urlsplit

from environs import Env

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = BASE_DIR / "instance"

# Settings come from the environment; a .env file beside this one fills in what it does not set.
# environs parses each value strictly: MAIL_USE_TLS=true, yes or 1 is True, and a value it does
# not understand (MAIL_USE_TLS=maybe) stops the app with a clear error instead of meaning False.
env = Env()
env.read_env(BASE_DIR / ".env", recurse=False)

DEV_SECRET_KEY = "dev-only-secret-key-change-me"


class ConfigError(RuntimeError):
    """A setting that cannot work, said in a line: the entry points (app/entry.py) print it without a traceback."""


class Config:
    """Settings shared by every environment."""

    SECRET_KEY = env.str("SECRET_KEY", DEV_SECRET_KEY)

    SQLALCHEMY_DATABASE_URI = env.str("DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'app.sqlite'}")
    # Arguments for SQLAlchemy's create_engine(), as JSON, e.g. DATABASE_ENGINE_OPTIONS='{"pool_size": 10}'.
    # Unset: SQLAlchemy's defaults (a pool of 5 connections plus 10 overflow per process).
    SQLALCHEMY_ENGINE_OPTIONS = env.json("DATABASE_ENGINE_OPTIONS", {})

    # --8<-- [start:redis_roles]
    # One Redis URL per role; each falls back to REDIS_URL so a single server works too.
    REDIS_URL = env.str("REDIS_URL", "redis://localhost:6379/0")
    CACHE_REDIS_URL = env.str("CACHE_REDIS_URL", REDIS_URL)
    SESSION_REDIS_URL = env.str("SESSION_REDIS_URL", REDIS_URL)
    RQ_REDIS_URL = env.str("RQ_REDIS_URL", REDIS_URL)
    # Rate-limit counters (one per client and per address tried, each with a TTL) unset: on the
    # sessions server, whose keys may be evicted; on the queue's `noeviction` server a flood of
    # logins would fill it until it refuses mail jobs.
    RATELIMIT_STORAGE_URI = env.str("RATELIMIT_STORAGE_URI", None)
    # --8<-- [end:redis_roles]

    # --8<-- [start:sentinel]
    # Redis behind Sentinel: give any URL above as redis+sentinel://host:26379,host2:26379/mymaster/0
    # (Sentinel addresses, the primary's name in Sentinel, the DB). After each enqueue the
    # signup waits until this many replicas have the job (WAIT), at most RQ_WAIT_TIMEOUT_MS;
    # unset: 1 when RQ_REDIS_URL is a Sentinel URL, else 0 (no wait).
    RQ_WAIT_REPLICAS = env.int("RQ_WAIT_REPLICAS", None)
    RQ_WAIT_TIMEOUT_MS = env.int("RQ_WAIT_TIMEOUT_MS", 500)
    # --8<-- [end:sentinel]

    # --8<-- [start:cache]
    # Cache: the Rails tutorial's `expires_in: 90.minutes`, under the `cache:` prefix, stored as JSON.
    # RedisCache on the app's own `cache` client (plain or Sentinel, see app/connections.py).
    CACHE_TYPE = "app.connections.RoleRedisCache"
    CACHE_KEY_PREFIX = "cache:"
    CACHE_DEFAULT_TIMEOUT = env.int("CACHE_DEFAULT_TIMEOUT", 90 * 60)
    # Stored as JSON: create_app() sets CACHE_SERIALIZER (the default pickles, and unpickles).
    # --8<-- [end:cache]

    # --8<-- [start:sessions]
    # Sessions: only an opaque id in the cookie, the data as JSON under `session:`.
    SESSION_TYPE = "redis"
    SESSION_KEY_PREFIX = "session:"
    SESSION_SERIALIZATION_FORMAT = "json"
    # Anonymous sessions (a form's CSRF token) live an hour; signing in makes the session
    # permanent, and only then does it live PERMANENT_SESSION_LIFETIME (app/sessions.py).
    SESSION_PERMANENT = False
    ANONYMOUS_SESSION_LIFETIME = env.int("ANONYMOUS_SESSION_LIFETIME", 3600)
    PERMANENT_SESSION_LIFETIME = env.int("SESSION_LIFETIME", 14 * 24 * 3600)
    SESSION_COOKIE_NAME = "session"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    # --8<-- [end:sessions]

    # --8<-- [start:jobs]
    # Jobs: one queue, `mailers` (the Rails tutorial's sidekiq.yml also names `default`, which nothing
    # here uses). From one queue RQ takes a job with BLMOVE into a list it recovers from; from
    # two or more it uses BLPOP, and a job taken as the worker dies is then in no list at all.
    RQ_QUEUES = ["mailers"]
    # --8<-- [start:concurrency]
    # Mails in flight per worker process (Sidekiq's `concurrency: 25`): sending is waiting on SMTP.
    WORKER_CONCURRENCY = env.int("WORKER_CONCURRENCY", 25)
    # --8<-- [end:concurrency]
    # A mail job may wait for the relay's DATA reply (MAIL_DATA_TIMEOUT) plus the other steps.
    MAIL_JOB_TIMEOUT = env.int("MAIL_JOB_TIMEOUT", 660)
    # Delays (seconds) between retries of a mail that failed for a transient reason.
    MAIL_RETRY_INTERVALS = env.list("MAIL_RETRY_INTERVALS", [10, 30, 60, 300, 900], subcast=int)
    # How long a failed job stays visible in the failed registry (RQ's default is one year).
    MAIL_FAILURE_TTL = env.int("MAIL_FAILURE_TTL", 30 * 24 * 3600)
    MAIL_SENT_MARKER_TTL = env.int("MAIL_SENT_MARKER_TTL", 7 * 24 * 3600)
    # --8<-- [end:jobs]
    # The outbox sweeper (app/outbox.py) enqueues again a committed mail whose job is not in
    # Redis once it is this old: longer than any web request's enqueue can take.
    OUTBOX_GRACE_SECONDS = env.int("OUTBOX_GRACE_SECONDS", 60)
    OUTBOX_SWEEP_INTERVAL = env.int("OUTBOX_SWEEP_INTERVAL", 30)
    # A mail still unsent after this long is dropped (logged): its link would have expired.
    OUTBOX_GIVE_UP_AFTER = env.int("OUTBOX_GIVE_UP_AFTER", 24 * 3600)
    # Announcements go out in batches of this many users, one job (and one SMTP connection) each.
    ANNOUNCE_BATCH_SIZE = env.int("ANNOUNCE_BATCH_SIZE", 100)
    ANNOUNCE_JOB_TIMEOUT = env.int("ANNOUNCE_JOB_TIMEOUT", 300)

    # Mail: the local catcher by default.
    MAIL_SERVER = env.str("MAIL_SERVER", "localhost")
    MAIL_PORT = env.int("MAIL_PORT", 1025)
    MAIL_USE_TLS = env.bool("MAIL_USE_TLS", False)
    MAIL_USE_SSL = env.bool("MAIL_USE_SSL", False)
    MAIL_USERNAME = env.str("MAIL_USERNAME", None)
    MAIL_PASSWORD = env.str("MAIL_PASSWORD", None)
    MAIL_DEFAULT_SENDER = env.str("MAIL_DEFAULT_SENDER", "Flask Mailer <noreply@example.com>")
    # A fixed EHLO name spares a DNS lookup of the local host name on every connection.
    MAIL_LOCAL_HOSTNAME = env.str("MAIL_LOCAL_HOSTNAME", "localhost")
    MAIL_TIMEOUT = env.int("MAIL_TIMEOUT", 10)  # seconds per SMTP step (connect, EHLO, MAIL, RCPT, ...)
    # ... except the reply to the mail's DATA: the relay stores the mail first (RFC 5321: 10 min).
    MAIL_DATA_TIMEOUT = env.int("MAIL_DATA_TIMEOUT", 600)
    # --8<-- [start:smtp_connections]
    # Open SMTP connections to the relay per worker process, at most (relays limit them).
    MAIL_MAX_CONNECTIONS = env.int("MAIL_MAX_CONNECTIONS", 25)
    # --8<-- [end:smtp_connections]
    # TLS (MAIL_USE_TLS / MAIL_USE_SSL) always checks the relay's certificate; a CA file to trust too.
    MAIL_CA_FILE = env.str("MAIL_CA_FILE", None)
    MAIL_SUBJECT_PREFIX = "[Flask Mailer] "

    # Werkzeug's default, scrypt (~135 ms a hash here). Tests use a cheaper method to run fast.
    PASSWORD_HASH_METHOD = env.str("PASSWORD_HASH_METHOD", "scrypt")

    # Confirmation links are valid for one day.
    CONFIRM_TOKEN_MAX_AGE = env.int("CONFIRM_TOKEN_MAX_AGE", 24 * 3600)

    SIGNUP_RATE_LIMIT = env.str("SIGNUP_RATE_LIMIT", "10 per minute")

    # --8<-- [start:hardening]
    # The site's public address: every absolute URL (the links in mails) is built from it,
    # never from the Host or X-Forwarded-Host header a request brings (app/site_url.py).
    # Development's default follows PORT, the port `python3 dev.py` serves the app on.
    SITE_URL = env.str("SITE_URL", f"http://localhost:{env.str('PORT', '5000')}")  # dev.py checks PORT
    # Hosts the app answers to (Flask refuses others with a 400); None accepts any. With
    # TRUST_ONLY_SITE_HOST (production) an unset TRUSTED_HOSTS becomes SITE_URL's host alone.
    TRUSTED_HOSTS = env.list("TRUSTED_HOSTS", None)
    TRUST_ONLY_SITE_HOST = False
    # Proxies in front of the app that set X-Forwarded-For/-Proto/-Host (0: none, trust nothing).
    PROXY_COUNT = env.int("PROXY_COUNT", 0)
    # The addresses those proxies connect from (gunicorn's own setting of the same name): a request
    # from any other peer keeps its own address, whatever X-Forwarded-For it brings. "*": any peer.
    FORWARDED_ALLOW_IPS = env.list("FORWARDED_ALLOW_IPS", ["127.0.0.1", "::1"])
    # Login attempts: per client address, and per account address whoever tries it.
    LOGIN_RATE_LIMIT = env.str("LOGIN_RATE_LIMIT", "10 per minute")
    LOGIN_ADDRESS_RATE_LIMIT = env.str("LOGIN_ADDRESS_RATE_LIMIT", "5 per minute;20 per hour")
    # Request bodies: our forms are a few hundred bytes; anything far bigger gets a 413.
    MAX_CONTENT_LENGTH = env.int("MAX_CONTENT_LENGTH", 64 * 1024)
    MAX_FORM_MEMORY_SIZE = env.int("MAX_FORM_MEMORY_SIZE", 16 * 1024)
    # HSTS: browsers use only HTTPS for this long once they saw the header (production only).
    HSTS_MAX_AGE = 0
    # --8<-- [end:hardening]

    MAILDIR = env.str("MAILDIR", str(INSTANCE_DIR / "maildir"))

    DEV_TOOLS = False

    @classmethod
    def check(cls):
        """Refuse settings that are unsafe for this environment (nothing to check by default)."""

    @classmethod
    def deployment_warnings(cls, settings):
        """What the final settings break of the deployment rules (docs/deploying.md); none outside production."""
        return []


class DevelopmentConfig(Config):
    """Local development: rq-dashboard, the mail inbox and the other dev tools are on."""

    DEBUG = True
    DEV_TOOLS = True
    # The dev tools answer requests from this machine only; true opens them to a VM's or
    # container's host as well (trusted networks only: they show and send every user's mail).
    DEV_TOOLS_ALLOW_REMOTE = env.bool("DEV_TOOLS_ALLOW_REMOTE", False)


class TestingConfig(Config):
    """The test suite: its own database and Redis, set by the fixtures."""

    TESTING = True
    # Flask-Mail would silently skip every send under TESTING; the tests use a real SMTP server.
    MAIL_SUPPRESS_SEND = False
    SQLALCHEMY_DATABASE_URI = env.str("TEST_DATABASE_URL", "sqlite://")
    SIGNUP_RATE_LIMIT = "1000 per minute"
    LOGIN_RATE_LIMIT = "1000 per minute"
    LOGIN_ADDRESS_RATE_LIMIT = "1000 per minute"
    SITE_URL = "http://localhost"  # the test client's own host
    PASSWORD_HASH_METHOD = "pbkdf2:sha256:1000"  # still salted and hashed, just cheaper


# --8<-- [start:production]
class ProductionConfig(Config):
    """Production: secure cookies and a real secret key are required."""

    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True
    SITE_URL = env.str("SITE_URL", None)
    TRUST_ONLY_SITE_HOST = True
    HSTS_MAX_AGE = env.int("HSTS_MAX_AGE", 365 * 24 * 3600)

    @classmethod
    def check(cls):
        """Refuse to start without a real SECRET_KEY and the site's https:// address."""
        if not cls.SECRET_KEY or cls.SECRET_KEY == DEV_SECRET_KEY or len(cls.SECRET_KEY) < 32:
            raise ConfigError(
                "ProductionConfig needs SECRET_KEY: set it to a random string of at least 32 "
                'characters, e.g. python -c "import secrets; print(secrets.token_hex(32))"'
            )
        if not cls.SITE_URL or not cls.SITE_URL.startswith("https://"):
            raise ConfigError(
                "ProductionConfig needs SITE_URL, the site's public https:// address "
                "(e.g. SITE_URL=https://mailer.example.com): the links in mails are built from it"
            )

    @classmethod
    def deployment_warnings(cls, settings):
        """The deployment rules these final settings visibly break, one line each (logged at start-up)."""
        warnings = []
        counters = settings["RATELIMIT_STORAGE_URI"] or settings["SESSION_REDIS_URL"]
        if same_redis_server(counters, settings["RQ_REDIS_URL"]):
            warnings.append(
                "rate-limit counters are on the queue's Redis server (RATELIMIT_STORAGE_URI): a flood of logins "
                "fills it until it refuses mail jobs; leave RATELIMIT_STORAGE_URI unset (the sessions server)"
            )
        if not settings["PROXY_COUNT"]:
            warnings.append(
                "PROXY_COUNT is 0: gunicorn faces clients itself and the rate limits count the address it sees; "
                "put a buffering proxy (nginx) in front and set PROXY_COUNT=1 (docs/deploying.md)"
            )
        elif "*" in settings["FORWARDED_ALLOW_IPS"]:
            warnings.append(
                "FORWARDED_ALLOW_IPS is *: X-Forwarded-For is believed from any peer, so only the proxy may be "
                "able to reach gunicorn (a platform router, or a private network)"
            )
        return warnings
# --8<-- [end:production]


def same_redis_server(url, other):
    """True if two Redis URLs name one server: the same host and port, or the same Sentinels and service."""
    if not url or not other:
        return False
    first, second = urlsplit(url), urlsplit(other)
    if first.scheme.startswith("redis+sentinel"):
        return (first.hostname, first.port, first.path.split("/")[1:2]) == (second.hostname, second.port, second.path.split("/")[1:2])
    return (first.hostname, first.port or 6379) == (second.hostname, second.port or 6379)


config_by_name = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}
