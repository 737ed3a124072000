"""rq_threads' record_start_after: a short job is never marked started; a long one is, later; every end cleans up.

In-process ThreadPoolWorkers in burst mode on the session's own redis-server.
"""

import time

import pytest
from redis import Redis
from rq import Queue, get_current_job
from rq.intermediate_queue import IntermediateQueue
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from rq_threads import ThreadPoolWorker


def status_seen_by_the_job(wait=0.0):
    """The job's own status and started-registry entry as Redis has them, read after `wait` seconds; RQ's maintenance marks it seen."""
    time.sleep(wait)
    job = get_current_job()
    queue = Queue(job.origin, connection=job.connection)
    seen = [job.get_status(refresh=True), job.id in StartedJobRegistry(queue=queue)]
    if not seen[1]:  # what RQ's maintenance writes for an in-progress id without a started entry
        IntermediateQueue(queue.key, connection=job.connection).set_first_seen(job.id)
    return seen


def fail():
    """A job that raises."""
    raise ValueError("this job fails")


def burst(connection, queue, record_start_after):
    """Run the queue's jobs with a ThreadPoolWorker that holds starts back for `record_start_after` seconds (None: RQ's way)."""
    worker = ThreadPoolWorker([queue], connection=connection)
    worker.record_start_after = record_start_after
    worker.work(burst=True, logging_level="WARNING")
    return worker


def left_behind(connection, queue):
    """What a job's start leaves in Redis once it ended: in-progress ids, started entries, execution and first-seen keys."""
    return {
        "in progress": connection.lrange(queue.intermediate_queue_key, 0, -1),
        "started": StartedJobRegistry(queue=queue).get_job_ids(),
        "keys": sorted(connection.scan_iter("rq:execution*")) + sorted(connection.scan_iter("*first_seen*")),
    }


@pytest.mark.parametrize(("record_start_after", "seen"), [(None, [JobStatus.STARTED, True]), (30, [JobStatus.QUEUED, False])])
def test_a_job_that_ends_before_its_start_is_due_is_never_marked_started(redis_url, record_start_after, seen):
    connection = Redis.from_url(redis_url)
    queue = Queue("held", connection=connection)
    job = queue.enqueue(status_seen_by_the_job)
    worker = burst(connection, queue, record_start_after)
    job.refresh()
    assert job.return_value() == seen
    assert job.get_status() == JobStatus.FINISHED and job.worker_name == worker.name and job.started_at <= job.ended_at
    assert left_behind(connection, queue) == {"in progress": [], "started": [], "keys": []}


def test_a_job_still_running_when_its_start_is_due_is_marked_started_then(redis_url):
    connection = Redis.from_url(redis_url)
    queue = Queue("held", connection=connection)
    job = queue.enqueue(status_seen_by_the_job, 1.5)
    burst(connection, queue, record_start_after=0.2)
    assert job.return_value() == [JobStatus.STARTED, True]  # sent by the heartbeat thread while the job slept
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert left_behind(connection, queue) == {"in progress": [], "started": [], "keys": []}


def test_a_job_that_fails_before_its_start_is_due_fails_as_rq_fails_it(redis_url):
    """Its failure path sends the held start first: RQ's failure handling then takes it out of every list."""
    connection = Redis.from_url(redis_url)
    queue = Queue("held", connection=connection)
    job = queue.enqueue(fail)
    burst(connection, queue, record_start_after=30)
    assert job.get_status(refresh=True) == JobStatus.FAILED and job.id in FailedJobRegistry(queue=queue)
    assert "this job fails" in job.latest_result().exc_string
    assert left_behind(connection, queue) == {"in progress": [], "started": [], "keys": []}
