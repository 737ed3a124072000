"""rq_threads under a trace function (coverage.py, a debugger): jobs still run to their end, a stopped one too."""

import subprocess
import sys
import textwrap
import threading
import time

from rq import get_current_job

from tests.support import ROOT

# Run in a child process: a job thread that stalls would otherwise hang the test run itself.
SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import redis
    from rq import Queue
    from rq.command import send_stop_job_command
    from rq.job import JobStatus
    from rq_threads import ThreadPoolWorker

    def trace(frame, event, arg):
        return trace  # what a coverage tool or debugger installs: a function called for every line

    sys.settrace(trace)
    threading.settrace(trace)
    connection = redis.Redis.from_url(sys.argv[1])
    queue = Queue("traced", connection=connection)
    first = queue.enqueue("tests.test_rq_threads_tracing.count_slowly", 100)
    second = queue.enqueue("tests.test_rq_threads_tracing.count_slowly", 1)
    third = queue.enqueue("tests.test_rq_threads_tracing.count_slowly", 3000)  # runs until it is stopped
    fourth = queue.enqueue("tests.test_rq_threads_tracing.count_slowly", 1)  # the same job thread, after the stop
    worker = ThreadPoolWorker([queue], connection=connection, concurrency=1)

    def stop_third():
        while connection.get("traced:thread:" + third.id) is None:  # its function runs: the stop is raised in it
            time.sleep(0.05)
        send_stop_job_command(connection, third.id)

    threading.Thread(target=stop_third, daemon=True).start()
    worker.work(burst=True)
    print("statuses:", *(job.get_status().value for job in (first, second, third, fourth)))
    threads = {connection.get("traced:thread:" + job.id) for job in (first, second, third, fourth)}
    print("job threads:", len(threads))
    """
)


def count_slowly(steps):
    """A job that says which thread runs it, then runs Python for about steps / 100 seconds (a stop takes effect at its next instruction)."""
    job = get_current_job()
    job.connection.set("traced:thread:" + job.id, threading.get_ident())
    for _ in range(steps):
        time.sleep(0.01)
    return steps


def test_jobs_finish_and_a_stopped_job_ends_under_a_trace_function(redis_url):
    # concurrency=1: one long-lived job thread runs all four, so the stop must not reach the fourth.
    # CPython 3.11: clearing a thread's pending async exception with NULL left its "pending" flag
    # set, and under a trace function that thread's next call never started (rq_threads.running).
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, redis_url], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    *_, statuses, threads = result.stdout.splitlines()
    assert statuses == "statuses: finished finished stopped finished", result.stdout[-3000:]
    assert threads == "job threads: 1", result.stdout[-3000:]

