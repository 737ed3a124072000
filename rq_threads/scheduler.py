"""RQ's scheduler (due retries and `enqueue_in` jobs back onto their queues) in a thread of the worker process."""

import logging
import time

from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler
from rq.utils import current_timestamp

log = logging.getLogger("rq_threads.scheduler")


class ThreadScheduler(RQScheduler):
    """RQScheduler driven by a loop in a thread (RQ forks a process for it, which outlives a SIGKILLed worker)."""

    def __init__(self, queues, *, worker, retry_locks_every, **kwargs):
        """`worker` handles a scheduled job whose hash cannot be read; locks held by others are retried that often."""
        super().__init__(queues, **kwargs)
        self.worker = worker
        self.retry_locks_every = retry_locks_every

    def start(self):
        """Nothing to start: the worker's thread runs this scheduler (RQ's start() forks a process for it)."""
        return None

    def run(self, stopping):
        """Until `stopping` is set: take the queues' locks, keep them, move due jobs; then let the locks go."""
        self.register_birth()
        next_try = 0.0
        try:
            while not stopping.is_set():
                try:
                    # Like RQ's worker: retry, every maintenance interval, for a lock another (maybe dead) scheduler held.
                    if self.should_reacquire_locks or (not self.acquired_locks and time.monotonic() >= next_try):
                        self.acquire_locks()
                        next_try = time.monotonic() + self.retry_locks_every
                    if self.acquired_locks:
                        self.heartbeat()
                        self.enqueue_scheduled_jobs()
                except Exception:  # Redis briefly away...: log it, the next round tries again
                    log.warning("scheduler round failed", exc_info=True)
                stopping.wait(self.interval)
        finally:
            self.stop()  # releases the locks and registers the scheduler's death

    def enqueue_scheduled_jobs(self):
        """RQ's round, after handing every due job whose hash cannot be read to the worker (one would stop every round)."""
        for name in sorted(self.acquired_locks):
            registry = ScheduledJobRegistry(name, connection=self.connection, serializer=self.serializer)
            for job_id in registry.get_jobs_to_schedule(current_timestamp()):
                error = unreadable(job_id, self.connection, self.serializer, self.worker.job_class)
                if error is not None:
                    self.worker.handle_unreadable_job(job_id, self.worker.queue_named(name), error, registry)
        super().enqueue_scheduled_jobs()


def unreadable(job_id, connection, serializer, job_class=Job):
    """The error that reading this job's hash raises, or None if it reads (or is gone)."""
    try:
        job_class.fetch(job_id, connection=connection, serializer=serializer)
    except NoSuchJobError:
        return None
    except Exception as exc:  # any decoding error: that is what "cannot be read" means
        return exc
    return None
