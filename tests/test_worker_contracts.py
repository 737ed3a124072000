"""What RQ promises of a worker, held by the Procfile's threaded worker: burst, shutdown, stop commands, timeouts.

Each test runs real `rq worker` processes (the Procfile line) on a real redis-server and SMTP server.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from rq.command import send_kill_horse_command, send_stop_execution_command, send_stop_job_command
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import Worker

from tests.support import mailers_queue, signup, wait_for

pytestmark = pytest.mark.slow

POISON = {"data": b"\xff\xfe not json", "description": b"\xff\xfe", "status": "queued", "origin": "mailers"}


def only_job(queue):
    """The one mail job the test enqueued (its id, from the queue, a registry, or the list of jobs taken and not yet marked started)."""
    ids = (
        queue.get_job_ids()
        or ScheduledJobRegistry(queue=queue).get_job_ids()
        or StartedJobRegistry(queue=queue).get_job_ids()
        or queue.intermediate_queue.get_job_ids()
    )
    return Job.fetch(ids[0], connection=queue.connection, serializer=JSONSerializer)


def test_burst_finishes_the_retry_a_running_job_makes_ready(app, client, smtp_server, run_worker):
    """--burst quits only when nothing runs and nothing is queued: an immediate retry made while it ran is run too."""
    app.config.update(MAIL_RETRY_INTERVALS=[0])  # retried at once: back on the queue, not in the scheduled registry
    smtp_server.handler.refusals = ["451 4.3.0 Try again later"]
    smtp_server.handler.delay = 1  # the first attempt still runs when the worker finds the queue empty
    signup(client, "ada@example.com")
    assert run_worker().returncode == 0
    assert [m["To"] for m in smtp_server.messages] == ["ada@example.com"]
    assert mailers_queue(app).count == 0 and smtp_server.handler.attempts == 2


def test_a_second_sigterm_stops_the_mail_in_flight_and_leaves_no_ghost_worker(app, client, smtp_server, worker_env, start_worker):
    """Cold shutdown: exit 0 within seconds, unregistered; the cut mail is retried (not left STARTED) and sent once."""
    app.config.update(MAIL_RETRY_INTERVALS=[1])
    smtp_server.handler.delay = 3  # the send hangs at RCPT
    worker = start_worker(worker_env)
    signup(client, "ada@example.com")
    wait_for(lambda: smtp_server.handler.rcpts_seen >= 1, timeout=30, message="the send to start")
    worker.sigterm()
    time.sleep(1.5)  # RQ ignores a second signal within a second of the first
    worker.sigterm()
    assert worker.process.wait(timeout=20) == 0
    queue = mailers_queue(app)
    assert Worker.all(connection=queue.connection) == []  # no ghost in rq:workers
    job = only_job(queue)
    assert job.get_status() in (JobStatus.SCHEDULED, JobStatus.QUEUED)  # retried, not left STARTED
    assert smtp_server.messages == []  # stopped before DATA

    smtp_server.handler.delay = 0
    start_worker(worker_env)
    smtp_server.wait_for_messages(1, timeout=30)
    time.sleep(2)  # a duplicate would show here
    assert [m["To"] for m in smtp_server.messages] == ["ada@example.com"]


@pytest.mark.parametrize("command", ["stop-job", "stop-execution"])
def test_a_stop_command_stops_the_mail_before_data(app, client, smtp_server, worker_env, start_worker, command):
    """stop-job / stop-execution: STOPPED at once, in the failed registry, and the mail held at RCPT is never sent."""
    smtp_server.handler.delay = 4
    start_worker(worker_env)
    signup(client, "ada@example.com")
    wait_for(lambda: smtp_server.handler.rcpts_seen >= 1, timeout=30, message="the send to start")
    queue = mailers_queue(app)
    job = only_job(queue)
    # A stop command needs the job's start in Redis, recorded once it has run for 1 s (record_start_after).
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.STARTED, timeout=5, message="the job's start recorded")
    if command == "stop-job":
        send_stop_job_command(queue.connection, job.id, serializer=JSONSerializer)
    else:
        (execution,) = job.get_executions()
        send_stop_execution_command(queue.connection, job.id, execution.id)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.STOPPED, timeout=2, message="the job STOPPED")
    assert job.id in FailedJobRegistry(queue=queue)
    time.sleep(6)  # past the RCPT delay: the thread went on to its next instruction and stopped there
    assert smtp_server.messages == [] and smtp_server.handler.attempts == 0
    assert job.get_status(refresh=True) == JobStatus.STOPPED  # not retried


def test_kill_horse_fails_the_mail_in_flight_and_it_is_retried(app, client, smtp_server, worker_env, start_worker):
    """kill-horse: what RQ does when it kills a work horse, the job fails and is retried; the mail goes out once."""
    smtp_server.handler.delay = 3
    start_worker(worker_env)
    signup(client, "ada@example.com")
    wait_for(lambda: smtp_server.handler.rcpts_seen >= 1, timeout=30, message="the send to start")
    queue = mailers_queue(app)
    (registered,) = Worker.all(connection=queue.connection)
    send_kill_horse_command(queue.connection, registered.name)
    wait_for(lambda: smtp_server.handler.rcpts_seen >= 2, timeout=30, message="the retry")
    smtp_server.handler.delay = 0
    smtp_server.wait_for_messages(1, timeout=30)
    time.sleep(2)
    assert [m["To"] for m in smtp_server.messages] == ["ada@example.com"]


def test_the_job_timeout_is_recorded_while_the_smtp_call_still_blocks(app, client, smtp_server, worker_env, start_worker):
    """job_timeout=1 on a send stuck 8 s at RCPT: the job fails at its deadline, not when the call returns."""
    app.config.update(MAIL_JOB_TIMEOUT=1, MAIL_RETRY_INTERVALS=[])  # not retried: failed, with its reason
    smtp_server.handler.delay = 8
    start_worker(worker_env)
    signup(client, "ada@example.com")
    wait_for(lambda: smtp_server.handler.rcpts_seen >= 1, timeout=30, message="the send to start")
    queue = mailers_queue(app)
    job = only_job(queue)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.FAILED, timeout=4, message="the timeout, recorded")
    assert "JobTimeoutException" in job.latest_result().exc_string
    assert smtp_server.handler.rcpts_answered == 0  # the SMTP call has not returned yet


def run_python(worker_env, script, *args):
    """Run `script` in a fresh Python with the worker's environment; return what it printed last."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args], env=worker_env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout[-1000:] + result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_mailworker_given_one_queue_name_listens_on_that_queue(worker_env):
    script = "from app.worker import MailWorker; print(MailWorker('mailers').queue_names())"
    assert run_python(worker_env, script) == "['mailers']"


def test_mailworker_given_queues_takes_their_connection(app, worker_env):
    script = """
import sys
from redis import Redis
from rq import Queue
from app.worker import MailWorker

other = Redis.from_url(sys.argv[1].rsplit("/", 1)[0] + "/1")  # another database of the test's server
print(MailWorker([Queue("mailers", connection=other)]).connection is other)
"""
    assert run_python(worker_env, script, app.config["RQ_REDIS_URL"]) == "True"


def test_a_second_work_on_the_same_worker_runs_its_scheduler_again(app, worker_env):
    script = """
import sys
from datetime import timedelta
from redis import Redis
from rq import Queue
from app.worker import MailWorker

queue = Queue("mailers", connection=Redis.from_url(sys.argv[1]))
worker = MailWorker([queue], connection=queue.connection)
for _ in range(2):  # a job due in 1 s runs only if this work() has a scheduler
    queue.enqueue_in(timedelta(seconds=1), "os.getpid")
    worker.work(max_jobs=1, logging_level="WARNING")
print("both ran")
"""
    assert run_python(worker_env, script, app.config["RQ_REDIS_URL"]) == "both ran"


def test_an_unreadable_job_in_the_scheduled_registry_does_not_stop_the_retries(app, client, smtp_server, worker_env, start_worker):
    """A corrupt hash among due retries: the scheduler fails it readably and moves the others (the 451'd mail goes out)."""
    queue = mailers_queue(app)
    queue.connection.hset("rq:job:poison", mapping=POISON)
    queue.connection.zadd(ScheduledJobRegistry(queue=queue).key, {"poison": 1})  # due since 1970
    smtp_server.handler.refusals = ["451 4.3.0 Try again later"]
    worker = start_worker(worker_env)
    signup(client, "ada@example.com")
    smtp_server.wait_for_messages(1, timeout=30)  # its retry went through the scheduled registry
    assert worker.process.poll() is None
    registry = FailedJobRegistry(queue=queue)
    assert registry.get_job_ids() == ["poison"]
    failed = Job.fetch("poison", connection=queue.connection, serializer=JSONSerializer)
    assert "unreadable job poison" in failed.latest_result().exc_string
    assert queue.connection.exists("mail:unreadable:poison")


def test_an_unreadable_job_in_the_started_registry_does_not_stop_the_worker(app, client, smtp_server, worker_env, start_worker):
    """A corrupt hash left STARTED by a dead worker: registry cleanup fails it readably, the worker lives and sends."""
    queue = mailers_queue(app)
    queue.connection.hset("rq:job:poison", mapping={**POISON, "status": "started"})
    queue.connection.zadd(StartedJobRegistry(queue=queue).key, {"poison:dead-execution": 1})  # its heartbeat expired
    worker = start_worker(worker_env)
    signup(client, "ada@example.com")
    smtp_server.wait_for_messages(1, timeout=30)
    assert worker.process.poll() is None, worker.output()[-2000:]
    assert "unhandled exception" not in worker.output()
    assert FailedJobRegistry(queue=queue).get_job_ids() == ["poison"]
    assert StartedJobRegistry(queue=queue).get_job_ids(cleanup=False) == []
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=30) == 0


def sleep_then_mark(seconds, key):
    """A job that waits in a blocking call, then writes `key`: what it does after the call shows whether it ran on."""
    from rq import get_current_job

    time.sleep(seconds)
    get_current_job().connection.set(key, "ran on")


def note_stopped(job, connection):
    """An on_stopped callback: leaves a mark for the test."""
    connection.set(f"stopped:{job.id}", "yes")


def test_stop_job_runs_on_stopped_at_once_and_the_job_never_takes_its_next_step(redis_url):
    """rq_threads in-process: STOPPED and on_stopped while the job still sleeps; after the sleep it stops, not writes."""
    import threading

    from redis import Redis
    from rq import Callback, Queue

    from rq_threads import ThreadPoolWorker

    connection = Redis.from_url(redis_url)
    queue = Queue("stoppable", connection=connection)
    job = queue.enqueue(sleep_then_mark, 2, "after-sleep", on_stopped=Callback(note_stopped))
    seen = {}

    def stop_it():
        wait_for(lambda: job.get_status(refresh=True) == JobStatus.STARTED, timeout=10, message="the job to start")
        send_stop_job_command(connection, job.id)
        wait_for(lambda: connection.exists(f"stopped:{job.id}"), timeout=1, message="on_stopped")
        seen["status while its thread sleeps"] = job.get_status(refresh=True)

    helper = threading.Thread(target=stop_it)
    helper.start()
    ThreadPoolWorker([queue], connection=connection).work(burst=True, logging_level="WARNING")
    helper.join(timeout=10)
    assert seen == {"status while its thread sleeps": JobStatus.STOPPED}
    assert not connection.exists("after-sleep")  # the job stopped at its next instruction after the sleep
    assert job.id in FailedJobRegistry(queue=queue)


def finish_quickly():
    """A job that succeeds at once."""
    return "done"


def fail_quickly():
    """A job that raises at once."""
    raise ValueError("this job fails")


def run_on_for_five_seconds(job, connection, *outcome):
    """A callback that runs past a 1 s timeout (in short sleeps, so a raised timeout can land), then leaves a mark."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.05)
    connection.set(f"callback-ended:{job.id}", "yes")


@pytest.mark.parametrize("callback", ["on_success", "on_failure"])
def test_a_callback_is_stopped_at_its_timeout_as_rq_stops_it(redis_url, callback):
    """rq_threads in-process: a callback that outlives its timeout is cut there, and the job fails (RQ's SimpleWorker does the same)."""
    from redis import Redis
    from rq import Callback, Queue

    from rq_threads import ThreadPoolWorker

    connection = Redis.from_url(redis_url)
    queue = Queue("callbacks", connection=connection)
    function = finish_quickly if callback == "on_success" else fail_quickly
    job = queue.enqueue(function, **{callback: Callback(run_on_for_five_seconds, timeout=1)})
    ThreadPoolWorker([queue], connection=connection).work(burst=True, logging_level="CRITICAL")
    assert not connection.exists(f"callback-ended:{job.id}")  # cut at 1 s, not run to its end
    assert job.get_status(refresh=True) == JobStatus.FAILED
    if callback == "on_success":  # the callback's timeout is what failed a job whose function succeeded
        assert "JobTimeoutException" in job.latest_result().exc_string


def test_a_sigterm_while_a_job_is_handed_over_lets_that_job_run_and_then_stops(redis_url):
    """rq_threads in-process: SIGTERM lands while a taken job is handed over, when a job thread that just ended set the worker idle.

    RQ's warm-shutdown handler raises StopRequested in the work loop if the worker is not
    busy; a job taken off the queue must still run (and the worker then stop), not be left
    half started.
    """
    from redis import Redis
    from rq import Queue
    from rq.worker import WorkerStatus

    from rq_threads import ThreadPoolWorker

    class SignalledWorker(ThreadPoolWorker):
        def running_job(self, job, queue):
            """rq_threads', then what a job thread ending at that moment does (state idle), then SIGTERM."""
            running = super().running_job(job, queue)
            self.set_state(WorkerStatus.IDLE)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs in this thread at the next instruction
            return running

    connection = Redis.from_url(redis_url)
    queue = Queue("handover", connection=connection)
    job = queue.enqueue(finish_quickly)
    queue.enqueue(finish_quickly)  # not taken: the worker stops after the first
    SignalledWorker([queue], connection=connection).work(burst=True, logging_level="CRITICAL")
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert len(queue) == 1


def test_jobs_start_in_the_order_the_work_loop_took_them_whatever_order_their_threads_run(app, worker_env):
    """started_at is when the work loop handed the job over (its Execution's created_at), as RQ's round-robin test reads it."""
    script = """
import sys, time
from redis import Redis
from rq import Queue
from rq.job import Job
from rq_threads import ThreadPoolWorker
from rq_threads.running import RunningJob

class LateThread(RunningJob):
    def run(self, perform_job):
        if self.job.id == "first":
            time.sleep(0.3)  # this job's thread gets going after the second job's thread
        return super().run(perform_job)

class Worker(ThreadPoolWorker):
    def running_job(self, job, queue):
        running = LateThread(self, job, queue)
        running.wrap_perform()
        return running

queue = Queue("mailers", connection=Redis.from_url(sys.argv[1]))
for job_id in ("first", "second"):
    queue.enqueue("os.getpid", job_id=job_id)
Worker([queue], connection=queue.connection).work(burst=True, logging_level="WARNING")
first, second = (Job.fetch(job_id, connection=queue.connection) for job_id in ("first", "second"))
print(first.started_at < second.started_at, first.ended_at > second.ended_at)
"""
    assert run_python(worker_env, script, app.config["RQ_REDIS_URL"]) == "True True"


def delete_own_hash_then_return():
    """A job whose hash is deleted while it runs (what `job.delete()` from elsewhere does to a running job)."""
    from rq import get_current_job

    job = get_current_job()
    job.connection.delete(job.key)
    return "done"


def change_own_description_then_return():
    """A job whose hash gets a field written by another client while it runs."""
    from rq import get_current_job

    job = get_current_job()
    job.connection.hset(job.key, "description", "changed while it ran")
    return "done"


def test_a_success_writes_the_jobs_changed_fields_and_a_deleted_hash_gets_rqs_whole_save(redis_url):
    """rq_threads in-process: the success updates four fields of the job's hash; a hash gone meanwhile is saved whole, as RQ does."""
    from redis import Redis
    from rq import Queue

    from rq_threads import ThreadPoolWorker

    connection = Redis.from_url(redis_url)
    queue = Queue("success-writes", connection=connection)
    kept = queue.enqueue(change_own_description_then_return)
    deleted = queue.enqueue(delete_own_hash_then_return)
    ThreadPoolWorker([queue], connection=connection).work(burst=True, logging_level="WARNING")

    kept.refresh()
    assert kept.get_status() == JobStatus.FINISHED and kept.latest_result().return_value == "done"
    assert kept.description == "changed while it ran"  # RQ's whole save would write the old description back
    assert kept.started_at <= kept.ended_at and kept.last_heartbeat >= kept.started_at
    # Without the check that the hash is still there, the four fields alone would make a job
    # hash without its function and arguments, which no one could read again.
    again = Job.fetch(deleted.id, connection=connection)
    assert again.get_status() == JobStatus.FINISHED and again.func_name.endswith("delete_own_hash_then_return")


def test_the_workers_counts_are_all_in_redis_when_a_burst_ends(redis_url):
    """rq_threads in-process: the job threads' success counts, sent once a second, are all sent at teardown, each once.

    The job with a dependent job goes through RQ's own success transaction, which counts it
    there; the five others and the dependent job are counted by the worker.
    """
    from redis import Redis
    from rq import Queue
    from rq.worker import Worker

    from rq_threads import ThreadPoolWorker

    connection = Redis.from_url(redis_url)
    queue = Queue("counted", connection=connection)
    for _ in range(5):
        queue.enqueue(finish_quickly)
    parent = queue.enqueue(finish_quickly)
    child = queue.enqueue(finish_quickly, depends_on=parent)
    worker = ThreadPoolWorker([queue], connection=connection)
    worker.work(burst=True, logging_level="WARNING")
    assert child.get_status(refresh=True) == JobStatus.FINISHED
    seen = Worker.find_by_key(worker.key, connection=connection)  # as `rq info` reads it, while its hash lives
    assert seen.successful_job_count == 7 and seen.total_working_time > 0
