"""Celery, for comparison only: the same mail job as RQ's, run by a stock prefork pool.

    celery -A bench.celery_app worker -P prefork -c 2
"""

import os

from celery import Celery
from celery.signals import worker_process_init

celery = Celery("bench", broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/1"))
celery.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True)

_flask_app = None


@worker_process_init.connect
def build_flask_app(**_):
    """Each pool process builds the Flask app once and keeps an SMTP connection, like FlaskWorker."""
    global _flask_app
    from app import create_app
    from app.smtp import KeptConnection

    _flask_app = create_app()
    _flask_app.extensions["smtp_connection"] = KeptConnection()


@celery.task(name="send_mail")
def send_mail(**kwargs):
    """The very function RQ runs (app.mail.send_mail_job), inside an app context."""
    from app.mail import send_mail_job

    with _flask_app.app_context():
        return send_mail_job(**kwargs)
