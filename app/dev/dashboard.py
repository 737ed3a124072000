"""rq-dashboard at /rq, made to work with JSON jobs and guarded for development only."""

import rq_dashboard
import rq_dashboard.web
from flask import abort, current_app, request
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup
from rq.serializers import JSONSerializer
from rq.worker import Worker

DASHBOARD_PREFIX = "/rq"


class JSONWorker(Worker):
    """Worker.all() that reads workers' current jobs with the JSON serializer.

    rq-dashboard 0.9.0 lists workers with a bare Worker.all(), which reads a busy worker's
    current job with pickle: every JSON job then turns the Workers tab into a 500.
    """

    @classmethod
    def all(cls, connection=None, job_class=None, queue_class=None, queue=None, serializer=None):
        """List workers, reading their jobs as JSON unless told otherwise."""
        return super().all(connection, job_class, queue_class, queue, serializer or JSONSerializer)


def use_json_everywhere():
    """Point rq-dashboard at JSON jobs; its only switches are these module globals."""
    rq_dashboard.web.config.serializer = JSONSerializer
    rq_dashboard.web.Worker = JSONWorker


CSRF_SCRIPT = (
    "<script>if (window.jQuery) {{ jQuery.ajaxSetup({{headers: {{'X-CSRFToken': '{token}'}}}}); }}</script>"
)


def guard_dashboard():
    """Host-level hook (the dashboard's own blueprint cannot take hooks twice): dev only, no GET actions."""
    if request.blueprint != "rq_dashboard":
        return None
    if not current_app.config.get("DEV_TOOLS"):
        abort(404)
    # Stock rq-dashboard requeues every failed job on a plain GET; state changes must be POSTs,
    # which the app-wide CSRFProtect then checks.
    if request.endpoint == "rq_dashboard.requeue_all" and request.method != "POST":
        abort(405)
    return None


def add_csrf_header(response):
    """Give the dashboard's jQuery POSTs (requeue, delete, empty) the CSRF token they lack."""
    if request.blueprint == "rq_dashboard" and response.mimetype == "text/html" and not response.direct_passthrough:
        body = response.get_data(as_text=True)
        if "</body>" in body:
            script = Markup(CSRF_SCRIPT.format(token=generate_csrf()))
            response.set_data(body.replace("</body>", f"{script}</body>", 1))
    return response


# --8<-- [start:mount]
def mount_dashboard(app):
    """Register rq-dashboard under /rq on the jobs Redis."""
    use_json_everywhere()
    app.config["RQ_DASHBOARD_REDIS_URL"] = app.config["RQ_REDIS_URL"]
    rq_dashboard.web.setup_rq_connection(app)
    app.before_request(guard_dashboard)
    app.after_request(add_csrf_header)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=DASHBOARD_PREFIX)
# --8<-- [end:mount]
