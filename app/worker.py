"""The RQ worker: its settings module (`rq worker -c app.worker`), its Job, and the app's part of its Worker class.

The threaded worker itself is rq_threads.ThreadPoolWorker, which imports nothing of the app.

Procfile:  rq worker -c app.worker -w app.worker.MailWorker -S json ... mailers
"""

import logging

from rq import Queue
from rq.job import Job
from rq.results import Result

from app import create_worker_app
from app.entry import build_or_exit
from app.worker_memory import freeze_for_forked_children, limit_malloc_arenas
from rq_threads import ThreadPoolWorker

# The app, built once per worker process from the same config as the web (FLASK_CONFIG), with
# only what the jobs use (no views, sessions, rate limits, migrations: app.create_worker_app).
flask_app = build_or_exit(create_worker_app)  # a bad setting: one line, not a traceback
# This module is what a worker process (or `rq worker-pool`'s parent, before it forks) imports
# first, so the process's memory settings are made here, before any job thread starts.
limit_malloc_arenas(2)
freeze_for_forked_children()

# Read by `rq worker -c app.worker` (and `rq info -c app.worker`): the app's own settings.
REDIS_URL = flask_app.config["RQ_REDIS_URL"]
QUEUES = flask_app.config["RQ_QUEUES"]


# --8<-- [start:job]
class AppContextJob(Job):
    """An RQ job that runs inside an app context of its own, as pallets-eco/flask-rq's FlaskJob does."""

    def perform(self):
        """Run the job's function with current_app, the db session and the extensions at hand."""
        with flask_app.app_context():
            return super().perform()
# --8<-- [end:job]


# --8<-- [start:worker]
class MailWorker(ThreadPoolWorker):
    """rq_threads' threaded worker with the app around it: WORKER_CONCURRENCY mails at once, each in a thread.

    Mail is waiting on the SMTP server, so threads are enough (Sidekiq's `concurrency: 25`).
    What is the app's here: an app context per job, the scheduler always on (mail retries need
    it), the SMTP connections closed at exit, and a job hash that cannot be read turned into a
    readable failed job.
    """

    # Two INFO lines per mail, as Celery writes: the job taken, and `Job OK` (or its failure).
    # RQ's "result is kept for N seconds" line (this switch) and its "Successfully completed"
    # line (app.worker.RepeatedLines) say nothing those two do not, and cost CPU on every mail.
    log_result_lifespan = False
    # A mail at a relay takes about 100 ms: its start is recorded only if it still runs after 1 s
    # (rq_threads.ThreadPoolWorker.record_start_after): a round trip and 14 of 29 Redis commands
    # less per mail (docs/going-faster.md).
    record_start_after = 1.0

    def __init__(self, queues, *args, **kwargs):
        """rq's arguments; the app's job class and concurrency, and its Redis if neither rq nor the queues give one."""
        if kwargs.get("job_class") in (None, Job, "rq.job.Job"):  # `rq worker` passes rq's default
            kwargs["job_class"] = AppContextJob
        if kwargs.get("connection") is None and not any(isinstance(q, Queue) for q in ensure_list(queues)):
            kwargs["connection"] = flask_app.extensions["redis"]["jobs"]
        kwargs.setdefault("concurrency", flask_app.config["WORKER_CONCURRENCY"])
        super().__init__(queues, *args, **kwargs)
        # Jobs write their sent-markers on the worker's connection, which waits a failover out.
        flask_app.extensions["redis"]["jobs"] = self.connection

    def work(self, *args, **kwargs):
        """rq's work loop, always with RQ's scheduler (in a thread: it moves due retries back onto the queue)."""
        kwargs["with_scheduler"] = True
        return super().work(*args, **kwargs)

    def teardown(self):
        """Let the running mails finish (rq_threads), then close the SMTP connections."""
        try:
            super().teardown()
        finally:
            with flask_app.app_context():
                from app.mail.transport import relay_connections

                relay_connections().close_all()
    # --8<-- [end:worker]

    def handle_unreadable_job(self, job_id, queue, exc, registry=None):
        """Replace an undecodable job hash by a readable failed job that says why (the raw hash is kept).

        RQ internals used here: the job hash's key (Job.key_for), renamed out of RQ's way, and
        Result.create_failure, the result rq-dashboard shows for a failed job.
        """
        reason = f"unreadable job {job_id}: {type(exc).__name__}: {exc}"
        self.log.error("Worker %s: %s (raw hash kept under mail:unreadable:%s)", self.name, reason, job_id)
        job_key, ttl = self.job_class.key_for(job_id), flask_app.config["MAIL_FAILURE_TTL"]
        with self.connection.pipeline() as pipe:
            pipe.rename(job_key, f"mail:unreadable:{job_id}")
            pipe.expire(f"mail:unreadable:{job_id}", ttl)  # kept as long as the failed job, not for ever
            self.forget_unreadable(job_id, queue, registry, pipeline=pipe)
            pipe.execute()
        placeholder = self.job_class.create(unreadable_job, id=job_id, connection=self.connection,
                                            serializer=self.serializer, origin=queue.name, description=reason)
        with self.connection.pipeline() as pipe:
            queue.failed_job_registry.add(placeholder, ttl=ttl, exc_string=reason, pipeline=pipe)
            Result.create_failure(placeholder, ttl, reason, worker_name=self.name, pipeline=pipe)  # what rq-dashboard shows
            pipe.execute()


class RepeatedLines(logging.Filter):
    """Drops RQ's "Successfully completed <job> in <time>" line: the `Job OK` line after it says the same."""

    def filter(self, record):
        """False for that one line; every other line of RQ's worker passes."""
        return not (isinstance(record.msg, str) and record.msg.startswith("Successfully completed"))


logging.getLogger("rq.worker").addFilter(RepeatedLines())


def ensure_list(queues):
    """rq's `queues` argument (one name or Queue, or several) as a list."""
    return [queues] if isinstance(queues, str | Queue) else list(queues)


def unreadable_job():
    """Stands in for a job whose stored hash could not be decoded (see MailWorker.handle_unreadable_job)."""
    raise RuntimeError("this job's stored data could not be decoded; see mail:unreadable:<job id>")
