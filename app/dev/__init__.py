"""Development-only tools: rq-dashboard at /rq, the mail inbox, mail previews, the hub page, `flask redis`.

create_app() imports this package only when the development config is active, so none of
it exists, not even as a 404 handler, under testing or production.
"""

import ipaddress

from flask import Blueprint, abort, current_app, request

bp = Blueprint("dev", __name__, url_prefix="/dev", static_folder="static")

# The blueprints that read and change the queue, the inbox and every user's mail.
DEV_BLUEPRINTS = ("dev", "rq_dashboard")


def register_dev_tools(app):
    """Mount rq-dashboard and the dev blueprint on a development app."""
    from app.dev import views  # noqa: F401  (the views attach themselves to bp)
    from app.dev.dashboard import mount_dashboard
    from app.dev.dashboard_style import fit_dashboard_tables
    from app.dev.redis_command import redis_command

    app.before_request(refuse_other_machines)
    mount_dashboard(app)
    fit_dashboard_tables(app)
    app.register_blueprint(bp)
    app.cli.add_command(redis_command)


def refuse_other_machines():
    """Answer the dev tools' requests from this machine only: a development app put online by mistake shows a 404.

    DEV_TOOLS_ALLOW_REMOTE opens them to other machines (a VM's or a container's host).
    """
    if request.blueprint not in DEV_BLUEPRINTS or current_app.config["DEV_TOOLS_ALLOW_REMOTE"]:
        return
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
        local = (getattr(address, "ipv4_mapped", None) or address).is_loopback  # ::ffff:127.0.0.1 too
    except ValueError:  # no address, or a Unix socket's
        local = False
    if not local:
        abort(404)
