"""Put into the fetched copy of RQ's tests: our worker class in place of RQ's, our Redis, the expected failures."""

import importlib
import inspect
import os
import signal
import sys
from pathlib import Path

import pytest
import redis
import redis.connection

PORT = int(os.environ["RQ_SUITE_REDIS_PORT"])
SHARED_PORT = 6379  # this machine's shared Redis: RQ's tests must never reach it

sys.path.append(os.environ["RQ_SUITE_PROJECT"])  # the worker class comes from the project (after RQ's tests/)


def point_redis_defaults_at(port):
    """Make `Redis()` and `Connection()` with no port (RQ's tests use both) talk to our server instead of 6379."""
    for function in (redis.Redis.__init__, redis.connection.Connection.__init__):
        init = inspect.unwrap(function)  # redis-py wraps Redis.__init__ in a deprecation decorator
        names = init.__code__.co_varnames[1 : init.__code__.co_argcount]
        defaults = list(init.__defaults__)
        defaults[names[-len(defaults) :].index("port")] = port
        init.__defaults__ = tuple(defaults)


def refuse_the_shared_redis():
    """Fail any connection to port 6379 loudly instead of touching the shared server."""
    connect = redis.connection.AbstractConnection.connect

    def guarded(self, *args, **kwargs):
        if getattr(self, "port", None) == SHARED_PORT:
            raise RuntimeError("RQ's test suite tried to reach the shared Redis on 6379")
        return connect(self, *args, **kwargs)

    redis.connection.AbstractConnection.connect = guarded


def refuse_to_kill_the_test_run():
    """Turn a SIGKILL of the pytest process (the pid a test took for a work horse's) into an error in the sender.

    A threaded worker has no work horse: a job's os.getpid() is pytest's own, and RQ's tests
    that SIGKILL "the horse" would end the whole run. Forked helper processes inherit this.
    """
    runner_pid, kill, killpg = os.getpid(), os.kill, os.killpg

    def guarded_kill(pid, sig):
        if pid <= 0 or (pid == runner_pid and sig == signal.SIGKILL):
            raise RuntimeError(f"refused: signal {sig} to pid {pid} would end the test run (no work horse here)")
        return kill(pid, sig)

    def guarded_killpg(pgid, sig):
        if pgid == os.getpgid(runner_pid):
            raise RuntimeError(f"refused: signal {sig} to the test run's process group {pgid}")
        return killpg(pgid, sig)

    os.kill, os.killpg = guarded_kill, guarded_killpg


def substitute_worker_class(dotted):
    """Resolve rq.Worker and rq.SimpleWorker (every name the tests import them by) to our class."""
    import rq
    import rq.worker

    module, _, name = dotted.rpartition(".")
    worker_class = getattr(importlib.import_module(module), name)
    if os.environ.get("RQ_SUITE_RECORD_START_AFTER"):  # run.py's second pass: the Procfile worker's setting
        worker_class.record_start_after = float(os.environ["RQ_SUITE_RECORD_START_AFTER"])
    for namespace in (rq, rq.worker):
        namespace.Worker = namespace.SimpleWorker = worker_class
    return worker_class


point_redis_defaults_at(PORT)
refuse_the_shared_redis()
refuse_to_kill_the_test_run()
WORKER_CLASS = substitute_worker_class(os.environ["RQ_SUITE_WORKER_CLASS"])


def expected_failures():
    """The checked-in lists of this pass: `test node id  # reason`, one a line."""
    listed = {}
    for path in os.environ["RQ_SUITE_EXPECTED_FAILURES"].split(os.pathsep):
        for line in Path(path).read_text().splitlines():
            node, _, reason = line.partition("#")
            if node.strip():
                listed[node.strip()] = reason.strip()
    return listed


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    """Stop what a test left running (a worker pool whose test failed before stopping it takes the next tests' jobs)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    _, alive = psutil.wait_procs(children, timeout=3)
    for child in alive:
        child.kill()


def pytest_report_header(config):
    """Say which worker class stands in for RQ's."""
    return (
        f"RQ's Worker and SimpleWorker are {WORKER_CLASS.__module__}.{WORKER_CLASS.__qualname__}; Redis on port {PORT}"
    )


def pytest_collection_modifyitems(config, items):
    """Mark each listed test as a strict expected failure: a test that passes must leave the list."""
    listed = expected_failures()
    for item in items:
        reason = listed.pop(item.nodeid, None)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    if listed and os.environ.get("RQ_SUITE_ALL_MODULES"):  # a narrowed run leaves other entries unmatched
        raise pytest.UsageError(f"expected-failure entries that match no test: {sorted(listed)}")
