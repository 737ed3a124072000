"""Every RQ internal that rq_threads touches, in one place, each with why (checked against the pinned rq).

RQ documents its Worker and Job classes, `execute_job` and the exception handlers as the
places to extend it. A worker that runs jobs in threads also needs the few things below; RQ's
own test suite (rq_suite/, `python3 dev.py test-rq`) checks them at the pinned version.

Overridden (methods of RQ's BaseWorker that rq_threads.ThreadPoolWorker replaces):
- `_finalize_failure(job, queue, execution, exc_info)`: RQ's perform_job sends every job that
  raised there; a job stopped by a command must instead be marked STOPPED and run on_stopped,
  as RQ's forking worker does when it kills the horse (worker_classes.Worker._handle_stopped_job).
- `request_force_stop(signum, frame)`: RQ's cold shutdown kills the work horse; here each
  running job is stopped instead, and the worker is still unregistered.
- `handle_payload(message)`: RQ's stop-job handler only compares the job id with *one* current
  job (get_current_job_id); with many in flight, this finds the job among them all.

Used (attributes and helpers below).
"""

from rq.callbacks import execute_stopped_callback as _execute_stopped_callback
from rq.utils import now
from rq.worker import BaseWorker


def execute_stopped_callback(job, death_penalty_class):
    """rq.callbacks.execute_stopped_callback: run a job's on_stopped with its timeout, as RQ's forking worker does."""
    return _execute_stopped_callback(job, death_penalty_class)


def finalize_failure(worker, job, queue, execution, exc_info):
    """BaseWorker._finalize_failure: RQ's own handling of a job that raised (on_failure, handlers, retry or failed)."""
    return BaseWorker._finalize_failure(worker, job, queue, execution, exc_info)


def mark_stopped(worker, job_id):
    """BaseWorker._stopped_job_id: what RQ's handle_job_failure reads to mark a job STOPPED (not FAILED, not retried)."""
    worker._stopped_job_id = job_id


def within_a_second_of_the_first_signal(worker):
    """BaseWorker._shutdown_requested_date: RQ ignores a second signal within 1 s of the first (a pool sends two)."""
    first = worker._shutdown_requested_date
    return first is not None and (now() - first).total_seconds() < 1


def dequeue_error_job_id(exc):
    """`job_id` that Queue._fetch_dequeued_job sets on an error raised while reading a dequeued job (None otherwise)."""
    return getattr(exc, "job_id", None)


def dequeue_error_queue(exc):
    """`queue` that Queue._fetch_dequeued_job sets on the same error: the queue the job was taken from."""
    return exc.queue


def remove_registry_entries(registry, job_id, connection):
    """Take a job id out of a registry; the started registry stores `job_id:execution_id` members, not the job id."""
    members = [m for m in registry.connection.zrange(registry.key, 0, -1) if registry.parse_job_id(m) == job_id]
    if members:
        connection.zrem(registry.key, *members)
