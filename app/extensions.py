"""The Flask extension objects every process binds (web, worker, `flask` commands), created once here.

The ones only the web app and the `flask` commands bind are in app.web_extensions, so that the
worker, which builds its app with create_worker_app(), never imports them.
"""

from flask_login import LoginManager
from flask_mail import Mail
from flask_sqlalchemy import SQLAlchemy

# A session lives for one request; re-reading every object after each commit would only cost
# a SELECT (e.g. the new user's id for the confirmation link right after signup commits).
db = SQLAlchemy(session_options={"expire_on_commit": False})
mail = Mail()
# The models register their user loader on it; only the web app binds it (create_app).
login_manager = LoginManager()
