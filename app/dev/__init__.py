"""Development-only tools: rq-dashboard at /rq, the mail inbox, mail previews, the hub page, `flask redis`.

create_app() imports this package only when the development config is active, so none of
it exists, not even as a 404 handler, under testing or production.
"""

from flask import Blueprint

bp = Blueprint("dev", __name__, url_prefix="/dev", static_folder="static")


def register_dev_tools(app):
    """Mount rq-dashboard and the dev blueprint on a development app."""
    from app.dev import views  # noqa: F401  (the views attach themselves to bp)
    from app.dev.dashboard import mount_dashboard
    from app.dev.dashboard_style import fit_dashboard_tables
    from app.dev.redis_command import redis_command

    mount_dashboard(app)
    fit_dashboard_tables(app)
    app.register_blueprint(bp)
    app.cli.add_command(redis_command)
