"""rq_threads stands alone (no import of the app), and the RQ-suite runner's expected-failure list says why for each."""

import ast

import pytest
import redis

from rq_suite.run import MODULES, PASSES, pytest_env
from tests.support import ROOT


def imported_modules(path):
    """Every module a Python file imports, by its top-level name."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_rq_threads_imports_only_rq_redis_and_the_standard_library():
    allowed = {"rq", "redis", "rq_threads", "contextvars", "ctypes", "heapq", "itertools", "logging", "os", "queue", "threading", "time", "uuid"}
    for path in sorted((ROOT / "rq_threads").glob("*.py")):
        assert imported_modules(path) <= allowed, (path.name, imported_modules(path) - allowed)


def test_each_expected_failure_is_one_test_of_a_module_the_runner_runs_with_its_reason():
    lists = {name for _, names in PASSES for name in names}
    assert lists == {path.name for path in (ROOT / "rq_suite").glob("expected_failures*.txt")}
    for name in sorted(lists):
        for line in (ROOT / "rq_suite" / name).read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            node, _, reason = line.partition("  # ")
            module, _, test = node.partition("::")
            assert module.removeprefix("tests/") in MODULES and "::" in test, line
            assert len(reason.split()) >= 5, f"say why in a line: {line}"


def test_the_suites_second_pass_holds_starts_back_as_long_as_the_procfiles_worker():
    """rq_suite/run.py's held-start pass uses app.worker.MailWorker's record_start_after (read from its source: no app built)."""
    tree = ast.parse((ROOT / "app" / "worker.py").read_text())
    (worker,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "MailWorker"]
    (setting,) = [
        node.value.value
        for node in worker.body
        if isinstance(node, ast.Assign) and [target.id for target in node.targets] == ["record_start_after"]
    ]
    assert [after for after, _ in PASSES] == [None, setting]


def test_only_a_run_of_every_module_checks_that_each_expected_failure_matched_a_test():
    every_module = pytest_env({}, [f"tests/{module}" for module in MODULES])
    rerun = pytest_env(every_module, ["tests/test_worker.py::TestWorker::test_dequeue_round_robin"])
    assert every_module["RQ_SUITE_ALL_MODULES"] == "1"
    assert "RQ_SUITE_ALL_MODULES" not in rerun  # else the rerun of one flaky test stops with a usage error


def test_a_guarded_transaction_writes_everything_unless_its_guard_key_exists_and_then_nothing(redis_url):
    """rq_threads.transaction: the commands of a pipeline, run by one script only while the guard key is absent."""
    from rq_threads.transaction import GuardedTransaction

    connection = redis.Redis.from_url(redis_url)
    transaction = GuardedTransaction(connection)

    def queued():
        pipeline = transaction.pipeline()
        pipeline.hset("job", mapping={"status": "finished", "ended_at": 1.5})
        pipeline.xadd("results", {"type": "1"}, maxlen=10)
        pipeline.expire("job", 500)
        return pipeline

    transaction.run(queued(), guard_key="dependents")
    assert connection.hgetall("job") == {b"status": b"finished", b"ended_at": b"1.5"}
    assert connection.xlen("results") == 1 and 0 < connection.ttl("job") <= 500

    connection.delete("job", "results")
    connection.sadd("dependents", "a-dependent-job")
    with pytest.raises(redis.exceptions.WatchError):
        transaction.run(queued(), guard_key="dependents")
    assert connection.exists("job", "results") == 0

    connection.delete("dependents")
    with pytest.raises(redis.exceptions.WatchError):  # a needed key that is gone: nothing written either
        transaction.run(queued(), guard_key="dependents", needed_key="job")
    assert connection.exists("job", "results") == 0
