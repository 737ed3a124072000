"""rq_threads stands alone (no import of the app), and the RQ-suite runner's expected-failure list says why for each."""

import ast

from rq_suite.run import MODULES, pytest_env
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
    for line in (ROOT / "rq_suite" / "expected_failures.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        node, _, reason = line.partition("  # ")
        module, _, test = node.partition("::")
        assert module.removeprefix("tests/") in MODULES and "::" in test, line
        assert len(reason.split()) >= 5, f"say why in a line: {line}"


def test_only_a_run_of_every_module_checks_that_each_expected_failure_matched_a_test():
    every_module = pytest_env({}, [f"tests/{module}" for module in MODULES])
    rerun = pytest_env(every_module, ["tests/test_worker.py::TestWorker::test_dequeue_round_robin"])
    assert every_module["RQ_SUITE_ALL_MODULES"] == "1"
    assert "RQ_SUITE_ALL_MODULES" not in rerun  # else the rerun of one flaky test stops with a usage error
