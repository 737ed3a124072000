"""The application factory: create_app() builds a configured Flask app."""

import os

from flask import Flask, render_template

from config import config_by_name


# --8<-- [start:create_app]
def create_app(config_name=None, overrides=None):
    """Create and configure the app; config_name defaults to $FLASK_CONFIG or 'development'."""
    # 1. Configuration: a class chosen by name, then any overrides (the tests pass some).
    config_name = config_name or os.environ.get("FLASK_CONFIG", "development")
    config_class = config_by_name[config_name]
    config_class.check()
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(config_class)
    app.config["CONFIG_NAME"] = config_name
    app.config.update(overrides or {})
    os.makedirs(app.instance_path, exist_ok=True)

    # 2. Redis clients per role, then the extensions that use them.
    register_extensions(app)
    # 3. Views and error pages, and the page cache in front of them.
    register_blueprints(app)
    register_error_handlers(app)
    register_page_cache(app)
    # 4. `flask` commands.
    register_commands(app)
    # 5. Development-only tools (rq-dashboard, mail inbox, previews): never outside development.
    if app.config["DEV_TOOLS"]:
        from app.dev import register_dev_tools

        register_dev_tools(app)
    return app

# --8<-- [end:create_app]

# --8<-- [start:register_extensions]
def register_extensions(app):
    """Bind every extension object from app.extensions to this app."""
    from app import models, outbox  # noqa: F401  (registers the models with SQLAlchemy)
    from app.extensions import cache, csrf, db, limiter, login_manager, mail, migrate, server_session
    from app.connections import init_redis
    from app.serializers import JSONCacheSerializer, JSONOnlySessionSerializer
    from app.sqlite import init_sqlite

    init_redis(app)
    db.init_app(app)
    init_sqlite(app, db)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(app.root_path), "migrations"))
    mail.init_app(app)
    app.config["CACHE_SERIALIZER"] = JSONCacheSerializer()  # never pickle what Redis hands back
    cache.init_app(app)
    server_session.init_app(app)
    app.session_interface.serializer = JSONOnlySessionSerializer()
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
    from app.extensions import cache
    from app.main.routes import CACHED_PAGES
    from app.page_cache import AnonymousPageCache

    app.wsgi_app = AnonymousPageCache(app, cache, CACHED_PAGES)


def register_error_handlers(app):
    """Render readable pages for the errors a user can run into."""
    from flask_wtf.csrf import CSRFError
    from redis.exceptions import RedisError

    def error_page(status, title, message):
        return render_template("errors/error.html", status=status, title=title, message=message), status

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return error_page(400, "Form expired", "The form was missing its security token or it expired. Go back, reload the page and try again.")

    @app.errorhandler(404)
    def not_found(error):
        return error_page(404, "Not found", "There is no page at this address.")

    @app.errorhandler(429)
    def too_many_requests(error):
        return error_page(429, "Too many requests", "You tried this too often. Wait a minute and try again.")

    @app.errorhandler(RedisError)
    def redis_unavailable(error):
        app.logger.error("Redis unavailable: %s", error)
        return error_page(503, "Try again shortly", "A service this page needs is unavailable. Nothing was saved; please try again in a minute.")


def register_commands(app):
    """Add the project's `flask` commands (doctor, redis-peek, ...)."""
    from app.cli import register_cli

    register_cli(app)
