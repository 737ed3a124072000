"""Every Flask extension object, created once here and bound to the app in create_app()."""

from flask_caching import Cache
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_mail import Mail
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

# A session lives for one request; re-reading every object after each commit would only cost
# a SELECT (e.g. the new user's id for the confirmation link right after signup commits).
db = SQLAlchemy(session_options={"expire_on_commit": False})
migrate = Migrate()
mail = Mail()
cache = Cache()
csrf = CSRFProtect()
login_manager = LoginManager()
limiter = Limiter(key_func=get_remote_address)
