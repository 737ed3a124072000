"""The application factory: create_app() builds a configured Flask app."""

import os

from flask import render_template

from app.site_url import SiteURLFlask
from config import config_by_name, load_settings


# --8<-- [start:create_app]
def create_app(config_name=None, overrides=None):
    """Create and configure the app; config_name defaults to $FLASK_CONFIG or 'development'."""
    # 1. Configuration: a class chosen by name, any overrides (the tests pass some), then what
    #    config.py derives from them, checked once complete (config.load_settings).
    app = configured_app(config_name, overrides)
    # 2. Redis clients per role, then the extensions that use them.
    register_extensions(app)
    # 3. Views and error pages; in front of them the page cache and, behind a proxy, ProxyFix.
    register_blueprints(app)
    register_error_handlers(app)
    register_page_cache(app)
    trust_proxies(app)
    # 4. `flask` commands.
    register_commands(app)
    # 5. Development-only tools (rq-dashboard, mail inbox, previews): never outside development.
    if app.config["DEV_TOOLS"]:
        from app.dev import register_dev_tools

        register_dev_tools(app)
    return app

# --8<-- [end:create_app]


def create_worker_app(config_name=None, overrides=None):
    """Create the app a worker process runs its jobs in: the same config, its Redis client and Flask-Mail.

    No database, views, page cache, sessions, CSRF, rate limits, migrations or `flask` commands:
    the jobs use none of them (each job's arguments carry its recipients), and leaving their
    imports out keeps each worker process ~34 MB smaller.
    """
    app = configured_app(config_name, overrides, web=False)
    register_job_extensions(app, roles=("jobs",))
    return app


def configured_app(config_name=None, overrides=None, web=True):
    """A bare app with its final, checked settings (config.load_settings); web=False for the worker's."""
    config_name = config_name or os.environ.get("FLASK_CONFIG", "development")
    settings = load_settings(config_name, overrides, web=web)
    app = SiteURLFlask(__name__, instance_relative_config=True)  # links in mails name SITE_URL
    app.config.update(settings)
    if web:
        for warning in config_by_name[config_name].deployment_warnings(app.config):
            app.logger.warning("deployment: %s", warning)
    os.makedirs(app.instance_path, exist_ok=True)
    return app


def register_job_extensions(app, roles=None):
    """Bind what the jobs need, in the web app and the worker alike: Redis clients and Flask-Mail."""
    from app.connections import ROLE_URL_SETTINGS, init_redis
    from app.extensions import mail

    init_redis(app, roles or ROLE_URL_SETTINGS)  # one client per role (app.connections)
    mail.init_app(app)


# --8<-- [start:register_extensions]
def register_extensions(app):
    """Bind the jobs' extensions (register_job_extensions), then the web app's own (app.web_extensions)."""
    from app import models  # noqa: F401  (registers the models with SQLAlchemy)
    from app.headers import init_security_headers
    from app.mail import delivery  # noqa: F401  (the outbox model, and the enqueue after each commit)
    from app.sessions import init_sessions
    from app.sqlite import init_sqlite
    from app.web_extensions import cache, csrf, db, limiter, login_manager, migrate

    register_job_extensions(app)
    db.init_app(app)
    init_sqlite(app, db)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(app.root_path), "migrations"))
    cache.init_app(app)  # JSON in Redis, never pickle (app.cache_backend)
    init_sessions(app)  # JSON, short-lived until sign-in, 503 when Redis is down (app.sessions)
    init_security_headers(app)
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
# --8<-- [end:register_extensions]


def register_blueprints(app):
    """Attach the `auth` and `main` blueprints."""
    from app.auth import bp as auth_bp
    from app.main import bp as main_bp

    app.register_blueprint(main_bp)
    app.register_blueprint(auth_bp, url_prefix="/auth")


def register_page_cache(app):
    """Serve cached pages to signed-out visitors before Flask opens a session (app.page_cache)."""
    from app.headers import security_headers
    from app.main.routes import CACHED_PAGES
    from app.page_cache import AnonymousPageCache
    from app.web_extensions import cache

    app.wsgi_app = AnonymousPageCache(app, cache, CACHED_PAGES, security_headers(app.config))


def trust_proxies(app):
    """Behind PROXY_COUNT proxies, take the client address and scheme from their X-Forwarded-* headers.

    The rate limits then count real clients, not the proxy. Only a request whose peer is in
    FORWARDED_ALLOW_IPS (the proxies' addresses) is believed: a client that reaches gunicorn
    directly is counted by its own address. X-Forwarded-Host may change request.host, never
    a link in a mail (app.site_url), and TRUSTED_HOSTS still applies.
    """
    from app.proxies import TrustedProxyFix

    count = app.config["PROXY_COUNT"]
    if count:
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, count, app.config["FORWARDED_ALLOW_IPS"])


def register_error_handlers(app):
    """Render readable pages for the errors a user can run into."""
    from flask_wtf.csrf import CSRFError
    from redis.exceptions import RedisError
    from werkzeug.exceptions import InternalServerError, SecurityError

    def error_page(status, title, message):
        return render_template("errors/error.html", status=status, title=title, message=message), status

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return error_page(400, "Form expired", "The form was missing its security token or it expired. Go back, reload the page and try again.")

    @app.errorhandler(400)
    def bad_request(error):
        return error_page(400, "Bad request", "The server could not understand this request.")

    @app.errorhandler(SecurityError)
    def unknown_host(error):
        # A Host outside TRUSTED_HOSTS: Flask built no URL adapter, so no template with links.
        return "Bad request: this site does not answer to that host name.", 400, {"Content-Type": "text/plain; charset=utf-8"}

    @app.errorhandler(404)
    def not_found(error):
        return error_page(404, "Not found", "There is no page at this address.")

    @app.errorhandler(413)
    def too_large(error):
        return error_page(413, "Too much data", "What you sent is far larger than any form here needs. Go back and shorten it.")

    @app.errorhandler(429)
    def too_many_requests(error):
        return error_page(429, "Too many requests", "You tried this too often. Wait a minute and try again.")

    @app.errorhandler(RedisError)
    def redis_unavailable(error):
        app.logger.error("Redis unavailable: %s", error)
        return error_page(503, "Try again shortly", "A service this page needs is unavailable. Nothing was saved; please try again in a minute.")

    @app.errorhandler(InternalServerError)
    def server_error(error):
        # A RedisError raised after the view (saving the session) reaches Flask as a 500.
        if isinstance(error.original_exception, RedisError):
            return redis_unavailable(error.original_exception)
        return error_page(500, "Something went wrong", "The error was logged. Please try again later.")


def register_commands(app):
    """Add the project's `flask` commands (doctor, redis-peek, ...)."""
    from app.cli import register_cli

    register_cli(app)
