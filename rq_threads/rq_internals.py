"""Every RQ internal that rq_threads touches, in one place, each with why (checked against the pinned rq).

RQ documents a custom Worker class and its `execute_job` as the place to extend the worker.
A worker that runs jobs in threads also needs what is listed here; RQ's own test suite, at the
pinned version (rq_suite/, `python3 dev.py test-rq`), checks that it still holds.

Overridden, private:
- `BaseWorker._finalize_failure(job, queue, execution, exc_info)`: RQ's perform_job sends every
  job that raised there; a job stopped on request must instead end STOPPED with on_stopped,
  and one whose stop or timeout the worker recorded already must not be recorded twice.
- `_handle_stopped_job(job, queue, execution)`: not BaseWorker's but RQ's forking Worker's
  name for "record a stopped job"; ours does the same, and RQ's suite calls it by that name.

Overridden, public but undocumented (BaseWorker methods the forking Worker also replaces):
`kill_horse`, `wait_for_horse`, `request_stop_execution`, `request_force_stop` (cold shutdown),
`handle_payload` (RQ's stop-job handler compares the job id with one current job only),
`dequeue_job_and_maintain_ttl` (burst mode, slices), `clean_registries`, `set_state`, `teardown`,
`handle_job_failure` (serialised: it reads one "stopped job" attribute for all threads).

Overridden to send fewer Redis round trips per job, public but undocumented: `heartbeat` (the
work loop's lone calls, at most once a second), `check_for_suspension` (at most once a second
outside burst mode), `set_state` (a lone write of the state the worker has already is skipped),
`prepare_job_execution` (in a job's thread: with the job's execution record, without its worker
heartbeat), `dequeue_job_and_maintain_ttl` (a waiting job taken by one script first),
`handle_execution_ended` with `increment_failed_job_count` (the job's last heartbeat written in
RQ's final transaction, in a job's thread), `handle_job_success` (in a job's thread: one script
instead of WATCH, SMEMBERS and MULTI ... EXEC; the worker's two counters that RQ increments
there, `successful_job_count` and `total_working_time`, are added up and sent with the next
heartbeat).

Overridden in running.ThreadDeathPenalty (a subclass of rq.timeouts.TimerDeathPenalty, which
RQ documents as the death penalty for platforms without SIGALRM): `setup_death_penalty` and
`cancel_death_penalty` (the Timer thread per job replaced by one watchdog thread), and
`handle_death_penalty`; read, private: its `_timeout` and `_exception` (the job's timeout, and
the exception RQ prepared to carry its message).

Written again here, in one transaction (the worker's prepare_job_execution): what RQ's
`rq.executions.prepare_execution` sends (`Execution.create`'s records and the worker's busy
state: new_execution and write_execution below, which also set the private `Execution._job`)
and the body of `BaseWorker.prepare_job_execution` (`prepare_for_execution`, which writes the
job's heartbeat too, PERSIST, and its removal from the intermediate list). RQ's forking worker
sends the first before the fork and the second in the horse; a job thread sends both at once
(`prepare_for_execution` runs on the job in its thread, with a stand-in for its pipeline that
keeps the fields it writes: started_fields below), or, with `record_start_after`, holds that
transaction back and sends it only for a job that
still runs then. A job that succeeded before gets, in its success script, the LREM from the
intermediate list that the transaction held, and the DEL of the key that RQ's
`IntermediateQueue.cleanup` sets for an id it finds there without a started entry
(`IntermediateQueue.get_first_seen_key`, through the public `Queue.intermediate_queue`).
And, in a job's thread, the body of `BaseWorker.handle_job_success` between its MULTI and its
EXEC (`Job.cleanup`, the private `Job._status`, `cleanup_execution`, and what the
private `Job._handle_success` writes: the job's status, `Result.create` with the private
`Job._result`, the finished registry's entry), sent by one script that first checks the job's
dependents set and its hash (rq_threads.transaction); the job's hash gets only its four
changed fields, where `_handle_success` saves all of them again, and `Job.cleanup` expires
only the hash for a job without the private `Job._dependency_ids`. A job with dependents, one
whose hash is gone, or one that repeats, gets RQ's own.

Read, redis-py's, undocumented: `Pipeline.command_stack` (the commands queued in a pipeline,
which rq_threads.transaction sends as a script's arguments).

Set again after RQ: the `started_at` that RQ's perform_job sets to now() in the job's thread
becomes the Execution's `created_at` (running.RunningJob.wrap_perform), so the jobs start in
the order the work loop took them; RQ's success or failure transaction writes it.

Called, public but undocumented: `perform_job` (each job's life cycle, from its thread); what
RQ's dequeue does around its LMOVE, for the one-round-trip dequeue (rq_threads.dequeue):
`Job.restore` (the hash the script read, as Job.refresh restores it),
`Job.redis_job_namespace_prefix`, `Queue.intermediate_queue_key`, `rq.utils.get_version`,
`reorder_queues`, `get_redis_server_version`, `should_run_maintenance_tasks` and
`run_maintenance_tasks`; `maintain_heartbeats`, `handle_execution_ended`, `rq.command.parse_payload`,
`rq.exceptions.StopRequested`, `StartedJobRegistry.get_expired_job_ids` and `parse_job_id`,
`ScheduledJobRegistry.get_jobs_to_schedule`, and RQScheduler's `acquire_locks`,
`should_reacquire_locks`, `acquired_locks`, `heartbeat`, `enqueue_scheduled_jobs`, `stop`,
`register_birth` (the loop of RQScheduler.work(), which installs signal handlers a thread cannot
install); RQScheduler.start() is overridden to do nothing, as RQ's worker calls it to fork one.

Read or written, private: the helpers below.
"""

from uuid import uuid4

from rq.callbacks import execute_stopped_callback as _execute_stopped_callback
from rq.executions import Execution, ExecutionRegistry
from rq.utils import now
from rq.worker import BaseWorker, WorkerStatus


def execute_stopped_callback(job, death_penalty_class):
    """rq.callbacks.execute_stopped_callback: run a job's on_stopped with its timeout, as RQ's forking worker does."""
    return _execute_stopped_callback(job, death_penalty_class)


def finalize_failure(worker, job, queue, execution, exc_info):
    """BaseWorker._finalize_failure: RQ's own handling of a job that raised (on_failure, handlers, retry or failed)."""
    return BaseWorker._finalize_failure(worker, job, queue, execution, exc_info)


def mark_stopped(worker, job_id):
    """BaseWorker._stopped_job_id: what RQ's handle_job_failure reads to mark a job STOPPED (not FAILED, not retried)."""
    worker._stopped_job_id = job_id


def stop_requested(worker):
    """BaseWorker._stop_requested: set by RQ's warm shutdown while the worker is busy; the dequeue slices look at it."""
    return worker._stop_requested


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


def dependency_ids(job):
    """Job._dependency_ids: the ids of the jobs this one waits for (its `depends_on`), read from its hash."""
    return job._dependency_ids


def return_value(job):
    """Job._result: what the job's function returned, set by RQ's _finalize_success (Result.create stores it)."""
    return job._result


class _JobFields:
    """Stands in for the pipeline of Job.prepare_for_execution, which makes one call on it: HSET of the job's fields."""

    def hset(self, name, mapping):
        """Keep the fields instead of queuing the write."""
        self.mapping = mapping


def started_fields(job, worker_name):
    """Job.prepare_for_execution (the job's status, worker name, start and heartbeat set on it): the fields it writes."""
    fields = _JobFields()
    job.prepare_for_execution(worker_name, pipeline=fields)
    return fields.mapping


def first_seen_key(queue, job_id):
    """IntermediateQueue.get_first_seen_key: what RQ's maintenance sets for an id in the in-progress list without a started entry."""
    return queue.intermediate_queue.get_first_seen_key(job_id)


def new_execution(worker, job):
    """An Execution of the job as rq.executions.Execution.create makes it (its id, the job attached), not written yet."""
    execution = Execution(id=uuid4().hex, job_id=job.id, connection=job.connection, worker_name=worker.name)
    execution._job = job  # as Execution.create: execution.job needs no fetch
    return execution


def write_execution(worker, execution, job, ttl, pipeline):
    """What rq.executions.prepare_execution sends for that Execution (Execution.create's records, the worker busy), in `pipeline`."""
    execution.save(ttl=ttl, pipeline=pipeline)
    ExecutionRegistry(job_id=job.id, connection=pipeline).add(execution=execution, ttl=ttl, pipeline=pipeline)
    job.started_job_registry.add_execution(execution, pipeline=pipeline, ttl=ttl, xx=False)
    pipeline.sadd(execution.worker_executions_key, execution.composite_key)
    pipeline.expire(execution.worker_executions_key, ttl + 60)
    worker.executions[execution.id] = execution
    if BaseWorker.get_state(worker) != WorkerStatus.BUSY:  # busy already: no job runs here without it (set_state)
        worker.set_state(WorkerStatus.BUSY, pipeline=pipeline)
