"""The WSGI entry point: `gunicorn wsgi:app` (config chosen by FLASK_CONFIG); `flask --app wsgi` loads it too."""

from app import create_app
from app.entry import build_or_exit

app = build_or_exit(create_app)
