"""The RQ worker's side: its settings module (`rq worker -c app.worker`) and FlaskWorker.

Procfile:  rq worker -c app.worker -w app.worker.FlaskWorker -S json --with-scheduler mailers default
"""

from rq.worker import Worker

from config import Config

# Read by `rq worker -c app.worker`: the jobs Redis and the queues, in priority order.
REDIS_URL = Config.RQ_REDIS_URL
QUEUES = Config.RQ_QUEUES


class FlaskWorker(Worker):
    """RQ's forking worker that builds the Flask app once and runs each job in an app context.

    The app is created in the parent, before any fork, so a work horse inherits Flask, the
    extensions and the templates already loaded instead of importing them for every job.
    No app context is pushed globally: each job gets its own and leaves it behind.
    """

    def __init__(self, *args, **kwargs):
        """Create the Flask app (config chosen by FLASK_CONFIG), then set up the RQ worker."""
        from app import create_app

        self.flask_app = create_app()
        super().__init__(*args, **kwargs)

    def perform_job(self, job, queue, execution):
        """Run one job inside a fresh app context (in the work horse)."""
        with self.flask_app.app_context():
            return super().perform_job(job, queue, execution)
