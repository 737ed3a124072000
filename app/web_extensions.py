"""The Flask extension objects only the web app and the `flask` commands bind (create_app), never the worker.

Flask-SQLAlchemy, Flask-Migrate (with Alembic and Mako), Flask-Login, Flask-Limiter, Flask-WTF
and the Cache object's setup weigh about 34 MB of imports per process; the worker's jobs need
none of them (app.create_worker_app).
"""

from flask_caching import Cache
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from app.connections import failover_retry
from config import Config

# A session lives for one request; re-reading every object after each commit would only cost
# a SELECT (e.g. the new user's id for the confirmation link right after signup commits).
db = SQLAlchemy(session_options={"expire_on_commit": False})
migrate = Migrate()
# The models register their user loader on it (app.models).
login_manager = LoginManager()
cache = Cache()  # its backend: app.cache_backend.RoleRedisCache (CACHE_TYPE)
csrf = CSRFProtect()
# Flask-Limiter takes its Redis as a URI and options (config.derive_rate_limit_storage); the
# client's Retry is an object, so it comes here: lost connections are retried like the sessions
# role's. Flask-Limiter merges RATELIMIT_STORAGE_OPTIONS into these for every app it binds.
limiter = Limiter(
    key_func=get_remote_address,
    storage_options={"retry": failover_retry(Config.REDIS_ROLE_OPTIONS["sessions"]["retry_seconds"])},
)
