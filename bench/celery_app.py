"""Celery, for comparison only: the same mail job as RQ's, in a prefork or a threads pool.

    celery -A bench.celery_app worker -P prefork -c 2
    celery -A bench.celery_app worker -P threads -c 25
"""

import os
import threading

from celery import Celery

# JSON only, as RQ's side (-S json); no results kept: the benchmark never reads them.
SETTINGS = {"task_serializer": "json", "accept_content": ["json"], "task_ignore_result": True}

celery = Celery("bench", broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/1"))
celery.conf.update(SETTINGS)


def publisher(broker_url):
    """A Celery app of its own that only sends tasks to `broker_url`.

    Each benchmark has its own Redis; a fresh app per benchmark keeps the previous one's
    pooled connections (to a Redis already stopped) out of the way.
    """
    app = Celery("bench-publisher", broker=broker_url, set_as_current=False)
    app.conf.update(SETTINGS)
    return app


_flask_app = None
_lock = threading.Lock()


def flask_app():
    """The jobs' Flask app (as app.worker builds it), once per pool process (prefork) or once for all threads."""
    global _flask_app
    with _lock:
        if _flask_app is None:
            from app import create_worker_app

            _flask_app = create_worker_app()  # the app RQ's worker builds, for a fair comparison
        return _flask_app


@celery.task(name="send_mail")
def send_mail(**kwargs):
    """The very function RQ runs (app.mail.job.send_mail_job), inside an app context."""
    from app.mail.job import send_mail_job

    with flask_app().app_context():
        return send_mail_job(**kwargs)
