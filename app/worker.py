"""The RQ worker: its settings module (`rq worker -c app.worker`), its Job and its Worker class.

Procfile:  rq worker -c app.worker -w app.worker.MailWorker -S json ... mailers
"""

import threading
import time

from rq.job import Job
from rq.results import Result
from rq.scheduler import RQScheduler
from rq.timeouts import TimerDeathPenalty
from rq.worker import BaseWorker

from app import create_worker_app
from app.entry import build_or_exit

# The app, built once per worker process from the same config as the web (FLASK_CONFIG), with
# only what the jobs use (no views, sessions, rate limits, migrations: app.create_worker_app).
flask_app = build_or_exit(create_worker_app)  # a bad setting: one line, not a traceback

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
class MailWorker(BaseWorker):
    """An RQ worker that runs up to WORKER_CONCURRENCY jobs at once, each in a thread of its own.

    Mail is waiting on the SMTP server, so threads are enough (Sidekiq's `concurrency: 25`).
    RQ's own job life cycle (perform_job) runs in each thread; the job timeout uses RQ's
    timer-based death penalty, as SIGALRM reaches the main thread only. The main thread
    dequeues while a slot is free; one more thread keeps every running job's heartbeat, and
    one runs RQ's scheduler (retries), in this process rather than a forked child.
    """

    death_penalty_class = TimerDeathPenalty
    job_class = AppContextJob

    def __init__(self, queues, *args, **kwargs):
        """Take rq's connection (RQ_REDIS_URL through app.connections.FailoverRedis) and the concurrency setting."""
        kwargs.update(job_class=AppContextJob)
        kwargs.setdefault("connection", flask_app.extensions["redis"]["jobs"])
        names = [queue if isinstance(queue, str) else queue.name for queue in queues]
        super().__init__(names, *args, **kwargs)
        # Jobs write their sent-markers on the worker's connection, which waits a failover out.
        flask_app.extensions["redis"]["jobs"] = self.connection
        self.concurrency = flask_app.config["WORKER_CONCURRENCY"]
        self.free_slots = threading.BoundedSemaphore(self.concurrency)
        self.running = {}  # job id -> (job, execution, thread)
        self.heartbeats = None
        self.stopping = threading.Event()

    def execute_job(self, job, queue):
        """Start the job in a thread, then return as soon as a slot is free for the next one."""
        self.free_slots.acquire()
        execution = self.prepare_execution(job)
        thread = threading.Thread(target=self.run_job, args=(job, queue, execution), name=f"rq-job-{job.id}", daemon=True)
        self.running[job.id] = (job, execution, thread)
        thread.start()
        if self.heartbeats is None:
            self.heartbeats = threading.Thread(target=self.keep_heartbeats, name="rq-heartbeats", daemon=True)
            self.heartbeats.start()
        self.free_slots.acquire()  # wait here while all slots are busy
        self.free_slots.release()

    def run_job(self, job, queue, execution):
        """RQ's life cycle for one job (success, retry, failure, registries), then free the slot."""
        try:
            self.perform_job(job, queue, execution)
        finally:
            self.running.pop(job.id, None)
            self.free_slots.release()

    # --8<-- [end:worker]

    def work(self, *args, **kwargs):
        """RQ's work loop, with RQ's scheduler in a thread beside it (it dies with the process)."""
        scheduler = threading.Thread(target=self.run_scheduler, name="rq-scheduler", daemon=True)
        scheduler.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self.stopping.set()
            scheduler.join(timeout=5)

    def run_scheduler(self):
        """What `--with-scheduler`'s child process does: move due retries back onto their queues."""
        scheduler = RQScheduler(self.queues, connection=self.connection, serializer=self.serializer)
        next_try = 0.0
        while not self.stopping.is_set():
            try:
                # Like RQ's worker: retry for a lock another (maybe dead) scheduler held, every maintenance interval.
                if scheduler.should_reacquire_locks or (not scheduler.acquired_locks and time.monotonic() >= next_try):
                    scheduler.acquire_locks()
                    next_try = time.monotonic() + self.maintenance_interval
                if scheduler.acquired_locks:
                    scheduler.heartbeat()
                    scheduler.enqueue_scheduled_jobs()
            except Exception:  # any error (Redis briefly away...): log it, this thread must go on
                self.log.warning("scheduler round failed", exc_info=True)
            self.stopping.wait(scheduler.interval)
        scheduler.release_locks()

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """RQ's dequeue in one-second slices, looking for `rq suspend` between them.

        RQ's own wait never returns while the worker is idle, so an idle worker would take the
        next job even after `rq suspend`. Burst mode (no timeout) is left to RQ.
        """
        if timeout is None:
            return self.dequeue_readable(timeout, max_idle_time)
        idle_since = time.monotonic()
        while True:
            result = self.dequeue_readable(1, max_idle_time=1)
            if result is not None or self._stop_requested:
                return result
            if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                return None
            self.check_for_suspension(False)

    def dequeue_readable(self, timeout, max_idle_time):
        """RQ's dequeue, except that a job it cannot read goes to the failed registry, and the worker goes on."""
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except Exception as exc:
                if getattr(exc, "job_id", None) is None:  # RQ tags errors of the job it fetched
                    raise
                self.fail_unreadable(exc.job_id, exc.queue, exc)

    def fail_unreadable(self, job_id, queue, exc):
        """Replace an undecodable job hash by a readable failed job that says why (the raw hash is kept)."""
        reason = f"unreadable job {job_id}: {type(exc).__name__}: {exc}"
        self.log.error("Worker %s: %s (raw hash kept under mail:unreadable:%s)", self.name, reason, job_id)
        job_key, ttl = self.job_class.key_for(job_id), flask_app.config["MAIL_FAILURE_TTL"]
        with self.connection.pipeline() as pipe:
            pipe.rename(job_key, f"mail:unreadable:{job_id}")
            pipe.expire(f"mail:unreadable:{job_id}", ttl)  # kept as long as the failed job, not for ever
            pipe.lrem(queue.intermediate_queue_key, 1, job_id)
            pipe.execute()
        placeholder = self.job_class.create(unreadable_job, id=job_id, connection=self.connection,
                                            serializer=self.serializer, origin=queue.name, description=reason)
        with self.connection.pipeline() as pipe:
            queue.failed_job_registry.add(placeholder, ttl=ttl, exc_string=reason, pipeline=pipe)
            Result.create_failure(placeholder, ttl, reason, worker_name=self.name, pipeline=pipe)  # what rq-dashboard shows
            pipe.execute()

    def keep_heartbeats(self):
        """Every job_monitoring_interval, tell Redis that the worker and each running job are alive."""
        while not self.stopping.is_set():
            for job, execution, _ in list(self.running.values()):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception:  # any error (a job that just ended, Redis away): the thread must go on
                    self.log.debug("heartbeat for job %s skipped", job.id, exc_info=True)
            self.stopping.wait(self.job_monitoring_interval)

    def teardown(self):
        """Let the running jobs finish (warm shutdown), then close the SMTP connections."""
        for _, _, thread in list(self.running.values()):
            thread.join()
        with flask_app.app_context():
            from app.mail.transport import relay_connections

            relay_connections().close_all()
        super().teardown()

def unreadable_job():
    """Stands in for a job whose stored hash could not be decoded (see MailWorker.fail_unreadable)."""
    raise RuntimeError("this job's stored data could not be decoded; see mail:unreadable:<job id>")
