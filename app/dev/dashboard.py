"""rq-dashboard at /rq, made to work with JSON jobs and guarded for development only."""

import rq_dashboard
import rq_dashboard.web
from flask import abort, current_app, request
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup
from rq.job import Job
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


class JSONJob(Job):
    """Job.fetch() that reads with the JSON serializer unless told otherwise.

    rq-dashboard 0.9.0's job page, delete and requeue fetch jobs with a bare Job.fetch(), which
    unpickles the job's `meta` and result: a planted pickle would run code in development.
    """

    @classmethod
    def fetch(cls, id, connection=None, serializer=None):
        """Fetch a job, reading its data, meta and results as JSON."""
        return super().fetch(id, connection=connection, serializer=serializer or JSONSerializer)

    def get_meta(self, refresh=True):
        """The job's meta, or a note that it is not JSON (the job page shows it instead of failing)."""
        try:
            return super().get_meta(refresh)
        except ValueError:  # not JSON, e.g. a pickle someone planted: never unpickled
            return {"unreadable": "meta is not JSON"}


def requeue_json_job(job_id, connection, serializer=None):
    """rq.job.requeue_job(), reading the job as JSON (rq-dashboard passes no serializer)."""
    return JSONJob.fetch(job_id, connection=connection, serializer=serializer).requeue()


def use_json_everywhere():
    """Point rq-dashboard at JSON jobs; its only switches are these module globals."""
    rq_dashboard.web.config.serializer = JSONSerializer
    rq_dashboard.web.Worker = JSONWorker
    rq_dashboard.web.Job = JSONJob
    rq_dashboard.web.requeue_job = requeue_json_job


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


# rq-dashboard's pages run inline scripts and underscore.js templates (`new Function`); the app's
# CSP (app.headers) forbids both, so its pages get this one, in development only.
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)


def dashboard_csp(response):
    """Give rq-dashboard's responses the CSP its inline scripts need."""
    if request.blueprint == "rq_dashboard":
        response.headers["Content-Security-Policy"] = DASHBOARD_CSP
    return response


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
    """Register rq-dashboard under /rq on the jobs Redis (RQ_DASHBOARD_REDIS_URL, from config.load_settings)."""
    use_json_everywhere()
    rq_dashboard.web.setup_rq_connection(app)
    app.before_request(guard_dashboard)
    app.after_request(add_csrf_header)
    app.after_request(dashboard_csp)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=DASHBOARD_PREFIX)
# --8<-- [end:mount]
