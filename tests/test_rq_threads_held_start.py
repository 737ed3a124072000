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


def seen_by_maintenance():
    """What RQ's maintenance writes for the running job if its id is in the in-progress list without a started entry.

    The job's own status and whether it is in the started registry, as Redis has them.
    """
    job = get_current_job()
    queue = Queue(job.origin, connection=job.connection)
    seen = [job.get_status(refresh=True), job.id in StartedJobRegistry(queue=queue)]
    if not seen[1]:
        IntermediateQueue(queue.key, connection=job.connection).set_first_seen(job.id)
    return seen


def status_seen_by_the_job(wait=0.0):
    """seen_by_maintenance, after `wait` seconds."""
    time.sleep(wait)
    return seen_by_maintenance()


def fail():
    """A job that raises, seen by RQ's maintenance first."""
    seen_by_maintenance()
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
    """Its failure path sends the held start first: RQ's failure handling then takes it out of every list.

    The first-seen key RQ's maintenance set goes too: left, a retry of the job held back a minute
    later would look stuck in the in-progress list, and RQ's maintenance would fail it as it runs.
    """
    connection = Redis.from_url(redis_url)
    queue = Queue("held", connection=connection)
    job = queue.enqueue(fail)
    burst(connection, queue, record_start_after=30)
    assert job.get_status(refresh=True) == JobStatus.FAILED and job.id in FailedJobRegistry(queue=queue)
    assert "this job fails" in job.latest_result().exc_string
    assert left_behind(connection, queue) == {"in progress": [], "started": [], "keys": []}


def test_a_short_job_enqueued_with_a_ttl_and_kept_for_ever_is_kept_for_ever(redis_url):
    """RQ's start ends the TTL a job was enqueued with (PERSIST); a success whose start was held does it too."""
    connection = Redis.from_url(redis_url)
    queue = Queue("held", connection=connection)
    job = queue.enqueue(status_seen_by_the_job, ttl=60, result_ttl=-1)
    burst(connection, queue, record_start_after=30)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert connection.ttl(job.key) == -1  # no expiry: RQ's result_ttl=-1


def test_record_start_after_must_be_above_zero(redis_url):
    """0 would make the heartbeat thread wake without a pause."""
    connection = Redis.from_url(redis_url)
    with pytest.raises(ValueError, match="above 0"):
        burst(connection, Queue("held", connection=connection), record_start_after=0)
