"""A threaded RQ worker: up to N jobs at once in one process, in N long-lived threads, RQ's job life cycle in each.

    rq worker -w rq_threads.ThreadPoolWorker --with-scheduler QUEUE

It imports nothing but RQ, redis-py and the standard library. RQ's own test suite, at the
pinned version, is its contract (rq_suite/, `python3 dev.py test-rq`).
"""

from rq_threads.running import JobStopped
from rq_threads.worker import ThreadPoolWorker

__all__ = ["JobStopped", "ThreadPoolWorker"]
