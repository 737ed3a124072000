"""The auth blueprint: signup, confirmation, login, logout."""

from flask import Blueprint

bp = Blueprint("auth", __name__)

from app.auth import routes  # noqa: E402,F401  (the routes attach themselves to bp)
