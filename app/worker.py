"""The RQ worker's side: its settings module (`rq worker -c app.worker`) and FlaskWorker.

Procfile:  rq worker -c app.worker -w app.worker.FlaskWorker -S json --with-scheduler ... mailers default
"""

import time

from rq.utils import now
from rq.worker import SimpleWorker

from config import Config

# Read by `rq worker -c app.worker`: the jobs Redis and the queues, in priority order.
# (rq reads a redis+sentinel:// URL through --connection-class app.connections.FailoverRedis.)
REDIS_URL = Config.RQ_REDIS_URL
QUEUES = Config.RQ_QUEUES


class FlaskWorker(SimpleWorker):
    """An RQ worker that builds the Flask app once and runs each job in its own app context.

    It runs jobs in its own process instead of forking a work horse per job: a mail job is
    short, and a fork per job (plus re-importing Flask in every horse) was 90% of its cost.
    The job timeout still holds (RQ's SIGALRM death penalty), and a worker that dies
    mid-job leaves the job to be requeued like any abandoned job. Run one worker process per
    core for concurrency (`honcho start -c worker=2`, `heroku ps:scale worker=2`, ...).
    No app context is pushed globally: each job gets a fresh one and leaves it behind.
    """

    #: Seconds past its timeout after which a running job counts as abandoned. RQ adds 60;
    #: a SimpleWorker cannot heartbeat mid-job anyway, and the death penalty ends the job at
    #: its timeout, so a shorter grace gets a crashed worker's mail out sooner.
    ABANDONED_GRACE = 15

    #: Seconds within which bookkeeping RQ repeats around every job is skipped: its heartbeat
    #: (up to five per job, three round trips each; it only has to land well inside the
    #: worker's TTL, --worker-ttl + 60 s) and its check for `rq suspend` (one round trip).
    BOOKKEEPING_INTERVAL = 1.0

    _suspension_checked_at = None

    def __init__(self, *args, **kwargs):
        """Create the Flask app (config chosen by FLASK_CONFIG) and an SMTP connection to keep."""
        from app import create_app
        from app.smtp import KeptConnection

        self.flask_app = create_app()
        self.flask_app.extensions["smtp_connection"] = KeptConnection()
        super().__init__(*args, **kwargs)
        # Jobs write their sent-markers on the worker's own connection, which waits a failover out.
        self.flask_app.extensions["redis"]["jobs"] = self.connection

    def perform_job(self, job, queue, execution):
        """Run one job inside a fresh app context."""
        with self.flask_app.app_context():
            return super().perform_job(job, queue, execution)

    def heartbeat(self, timeout=None, pipeline=None):
        """Extend the worker's TTL: at most once a second, and in one round trip.

        A beat with an explicit timeout (RQ's start of a job) always goes through.
        """
        if timeout is None and self.last_heartbeat is not None:
            if (now() - self.last_heartbeat).total_seconds() < self.BOOKKEEPING_INTERVAL:
                return
        if pipeline is not None:
            return super().heartbeat(timeout, pipeline)
        with self.connection.pipeline(transaction=False) as beat:
            super().heartbeat(timeout, beat)
            beat.execute()

    def check_for_suspension(self, burst):
        """Look for `rq suspend` at most once a second: a suspension takes effect within a second."""
        checked_at = self._suspension_checked_at
        if checked_at is not None and time.monotonic() - checked_at < self.BOOKKEEPING_INTERVAL:
            return
        super().check_for_suspension(burst)
        self._suspension_checked_at = time.monotonic()

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """Wait for a job in one-second slices, looking for `rq suspend` between them.

        RQ's own wait never returns while the worker is idle, so an idle worker took the next
        job even after `rq suspend`. Burst mode (no timeout) is left to RQ.
        """
        if timeout is None:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        idle_since = time.monotonic()
        while True:
            result = super().dequeue_job_and_maintain_ttl(1, max_idle_time=1)
            if result is not None or self._stop_requested:
                return result
            if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                return None
            self.check_for_suspension(False)

    def handle_execution_ended(self, job, queue, heartbeat_ttl):
        """Note the job's end time, without a round trip of its own.

        RQ also writes the job's last_heartbeat to Redis here; the pipeline that records the
        result saves the whole job (last_heartbeat included) a moment later anyway.
        """
        job.ended_at = job.last_heartbeat = now()

    def set_state(self, state, pipeline=None):
        """Write the worker's state, unless Redis already has it (RQ sets IDLE twice per job)."""
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline)

    def get_heartbeat_ttl(self, job, working_time=0.0):
        """How long the started-job entry lives: the job's timeout plus a short grace."""
        if job.timeout and job.timeout > 0:
            return int(job.timeout) + self.ABANDONED_GRACE
        return super().get_heartbeat_ttl(job, working_time)

    def teardown(self):
        """Say goodbye to the SMTP server before the worker exits."""
        with self.flask_app.app_context():
            self.flask_app.extensions["smtp_connection"].drop()
        super().teardown()
