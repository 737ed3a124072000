"""The Flask extension objects only the web app and the `flask` commands bind (create_app), never the worker.

Flask-Migrate (with Alembic and Mako), Flask-Limiter, Flask-WTF and the Cache object's setup
weigh about 17 MB of imports per process; the worker's jobs need none of them.
"""

from flask_caching import Cache
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFProtect

migrate = Migrate()
cache = Cache()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address)
