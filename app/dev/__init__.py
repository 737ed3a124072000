"""Development-only tools: rq-dashboard at /rq, the mail inbox, mail previews, the hub page, `flask redis`.

create_app() imports this package only when the development config is active, so none of
it exists, not even as a 404 handler, under testing or production.
"""

import ipaddress
from urllib.parse import urlsplit

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


# Names a browser on this machine uses for it: any other Host means DNS rebinding or a tunnel.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# Headers a proxy or tunnel adds (ngrok, nginx, a load balancer): the request came from elsewhere.
FORWARDING_HEADERS = ("X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Real-IP", "Via")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def refuse_other_machines():
    """Answer the dev tools' requests from this machine only: a development app put online by mistake shows a 404.

    "This machine" means a loopback peer, a loopback Host (not a rebound DNS name, not a
    tunnel's name) and no proxy's forwarding header; a POST from another site's page (its
    Origin) gets a 403. DEV_TOOLS_ALLOW_REMOTE opens them to other machines (a VM's or a
    container's host); the Origin rule still applies.
    """
    if request.blueprint not in DEV_BLUEPRINTS:
        return
    if not current_app.config["DEV_TOOLS_ALLOW_REMOTE"] and not from_this_machine():
        abort(404)
    if request.method not in SAFE_METHODS and not same_origin():
        abort(403)


def from_this_machine():
    """True for a request a browser on this machine sent straight to the dev server."""
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
        local = (getattr(address, "ipv4_mapped", None) or address).is_loopback  # ::ffff:127.0.0.1 too
    except ValueError:  # no address, or a Unix socket's
        return False
    host = urlsplit("//" + request.host).hostname  # request.host is "name:port" or "[::1]:port"
    forwarded = any(name in request.headers for name in FORWARDING_HEADERS)
    return local and host in LOOPBACK_HOSTS and not forwarded


def same_origin():
    """True unless the request names another origin: browsers send Origin on every cross-site POST."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"
