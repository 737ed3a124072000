"""The WSGI entry point: `gunicorn wsgi:app` (config chosen by FLASK_CONFIG)."""

from app import create_app

app = create_app()
