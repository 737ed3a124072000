"""Configuration classes, chosen by name (FLASK_CONFIG), with values from the environment; load_settings() completes them.

Every setting the app runs with is read or derived here (SERVER_NAME from SITE_URL, the rate
limiter's storage from the sessions URL, ...) and checked once complete; the other modules
only read app.config.
"""

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

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

    # --8<-- [start:role_options]
    # role -> the options of its client, all in one place. `retry_seconds` is how long a command
    # keeps reconnecting after it lost its connection: jobs and sessions wait out a Sentinel
    # failover (~2-3 s with down-after-milliseconds 1000-2000), so a request that meets one is only
    # slower; past that it answers the 503 page. The cache is optional (a miss renders the page from
    # the database): it gives up fast, and a hung cache server costs a request well under a second.
    # The rate limiter's client takes the sessions role's options.
    REDIS_ROLE_OPTIONS = {
        "jobs": {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 30, "retry_seconds": 5},
        "cache": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25, "health_check_interval": 30, "retry_seconds": 0.5},
        "sessions": {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 30, "retry_seconds": 5},
    }
    # `rq worker`'s own connection (and the sent-markers it writes) waits longer: a worker has no
    # user waiting, and a marker it failed to write would let a retry of the job send twice.
    REDIS_WORKER_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 10, "health_check_interval": 30, "retry_seconds": 30}
    # --8<-- [end:role_options]

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
    # RedisCache on the app's own `cache` client (plain or Sentinel), storing JSON: the default
    # serializer pickles, and unpickles what Redis hands back (app/cache_backend.py).
    CACHE_TYPE = "app.cache_backend.RoleRedisCache"
    CACHE_KEY_PREFIX = "cache:"
    CACHE_DEFAULT_TIMEOUT = env.int("CACHE_DEFAULT_TIMEOUT", 90 * 60)
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
    # The outbox sweeper (app/mail/delivery.py) enqueues again a committed mail whose job is not in
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
    def check(cls, settings):
        """Refuse final settings that are unsafe for this environment (nothing to check by default)."""

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
    def check(cls, settings):
        """Refuse to start without a real SECRET_KEY and the site's https:// address."""
        secret_key, site_url = settings["SECRET_KEY"], settings["SITE_URL"]
        if not secret_key or secret_key == DEV_SECRET_KEY or len(secret_key) < 32:
            raise ConfigError(
                "ProductionConfig needs SECRET_KEY: set it to a random string of at least 32 "
                'characters, e.g. python -c "import secrets; print(secrets.token_hex(32))"'
            )
        if not site_url or not site_url.startswith("https://"):
            raise ConfigError(
                "ProductionConfig needs SITE_URL, the site's public https:// address "
                "(e.g. SITE_URL=https://mailer.example.com): the links in mails are built from it"
            )

    @classmethod
    def deployment_warnings(cls, settings):
        """The deployment rules these final settings visibly break, one line each (logged at start-up)."""
        warnings = []
        if same_redis_server(settings["RATELIMIT_REDIS_URL"], settings["RQ_REDIS_URL"]):
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


SENTINEL_SCHEME = "redis+sentinel"


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

# Settings only the web app and the `flask` commands read (by prefix): the worker's app, which
# runs jobs and answers no request, goes without them.
WEB_ONLY_SETTINGS = (
    "CACHE_", "SESSION_", "ANONYMOUS_SESSION_", "PERMANENT_SESSION_", "REMEMBER_COOKIE_", "RATELIMIT_",
    "SIGNUP_RATE_", "LOGIN_", "TRUSTED_HOSTS", "TRUST_ONLY_SITE_HOST", "PROXY_COUNT", "FORWARDED_ALLOW_IPS",
    "MAX_CONTENT_LENGTH", "MAX_FORM_MEMORY_SIZE", "HSTS_MAX_AGE", "DEV_TOOLS",
)


# --8<-- [start:load_settings]
def load_settings(config_name, overrides=None, web=True):
    """The final settings of an app: its class's, then the overrides, then every derived value, checked.

    web=False (the worker's app) leaves out what only the web app reads (WEB_ONLY_SETTINGS).
    """
    config_class = config_by_name[config_name]
    settings = {name: getattr(config_class, name) for name in dir(config_class) if name.isupper()}
    settings["CONFIG_NAME"] = config_name
    settings.update(overrides or {})
    check_redis_urls(settings)
    derive_site_settings(settings)
    if web:
        derive_rate_limit_storage(settings)
        if settings["DEV_TOOLS"]:
            settings["RQ_DASHBOARD_REDIS_URL"] = settings["RQ_REDIS_URL"]  # rq-dashboard reads the queue's
    else:
        settings = {name: value for name, value in settings.items() if not name.startswith(WEB_ONLY_SETTINGS)}
    config_class.check(settings)
    return settings
# --8<-- [end:load_settings]


def check_redis_urls(settings):
    """Refuse a malformed role URL in one line that names its setting (parse_sentinel_url says what is wrong)."""
    for setting in ("RQ_REDIS_URL", "CACHE_REDIS_URL", "SESSION_REDIS_URL"):
        try:
            parse_sentinel_url(settings[setting])
        except ValueError as exc:
            fallback = ", which falls back to REDIS_URL" if settings[setting] == settings["REDIS_URL"] else ""
            raise ConfigError(f"{setting}{fallback}: {exc}") from exc


def derive_site_settings(settings):
    """SERVER_NAME, PREFERRED_URL_SCHEME and APPLICATION_ROOT (and TRUSTED_HOSTS) from SITE_URL.

    Flask then builds absolute URLs outside a request (the CLI, a job) from the same address;
    app.site_url builds them from it inside a request too, whatever Host the request claims.
    """
    if not settings["SITE_URL"]:
        return  # check() refuses it where it is required
    site = urlsplit(settings["SITE_URL"])
    settings.update(SERVER_NAME=site.netloc, PREFERRED_URL_SCHEME=site.scheme, APPLICATION_ROOT=site.path or "/")
    if settings.get("TRUST_ONLY_SITE_HOST") and not settings.get("TRUSTED_HOSTS"):
        settings["TRUSTED_HOSTS"] = [site.hostname]


def derive_rate_limit_storage(settings):
    """Flask-Limiter's storage: RATELIMIT_STORAGE_URI (unset: the sessions server) in its own spelling.

    RATELIMIT_REDIS_URL keeps the place in the app's spelling (None for memory:// and other
    storages), for `flask doctor` and the start-up warnings. The `limits` library reads
    `redis+sentinel://hosts/service` (no DB in the path) and takes the DB and the sessions
    role's timeouts as RATELIMIT_STORAGE_OPTIONS; its retry comes with the limiter
    (app.web_extensions), as an object is no setting.
    """
    url = settings["RATELIMIT_STORAGE_URI"] or settings["SESSION_REDIS_URL"]
    where = parse_sentinel_url(url)
    if where is None and not url.startswith(("redis://", "rediss://")):
        settings.update(RATELIMIT_STORAGE_URI=url, RATELIMIT_REDIS_URL=None)  # memory:// and friends
        return
    options = {key: value for key, value in settings["REDIS_ROLE_OPTIONS"]["sessions"].items() if key != "retry_seconds"}
    db = where.db if where is not None else int(urlsplit(url).path.strip("/") or 0)
    settings.update(
        RATELIMIT_REDIS_URL=url,
        RATELIMIT_STORAGE_URI=where.for_limits() if where is not None else url,
        RATELIMIT_STORAGE_OPTIONS={"db": db, **options},
    )
