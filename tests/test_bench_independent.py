"""The benchmarks stand on their own: nothing in bench/ imports the test suite."""

import ast

from tests.support import ROOT


def test_bench_never_imports_tests():
    offenders = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {name}" for name in names if name == "tests" or name.startswith("tests.")]
    assert offenders == []


def test_the_goals_table_says_met_only_where_the_figure_meets_the_goal():
    """bench/goals.py, a pure unit: a ratio under 1.0 is not met, a benchmark not run says so."""
    from bench.goals import goal_rows

    relay = {"ratio_vs_celery_threads": 0.98, "ratio_vs_celery_threads_each_round": [0.98],
             "ratio_vs_sidekiq": 1.2, "ratio_vs_sidekiq_each_round": [1.2],
             "rq": {"pss_mb": 90.0}, "sidekiq_25": {"pss_mb": 93.3}}
    relay["measured_at"], relay["rq_form"] = "2026-12-02 17:00 UTC", "2 x rq worker"
    table = goal_rows({"relay": relay, "latency": {"p50_ms": 4.0, "p95_ms": 6.0}})
    rows = {goal: met for goal, _, met, _ in table}
    assert table[0][3] == "2026-12-02 17:00 UTC, 2 x rq worker"  # rows of a merged --only run say which run
    assert [met for goal, met in rows.items() if goal.startswith("100 ms relay")] == ["no", "-"]
    assert rows["worker PSS, all processes summed, <= Sidekiq's"] == "yes"
    assert rows["enqueue -> delivered p50 <= 10 ms"] == "yes"
    assert rows["no relay latency: >= 1.0x Celery prefork, same processes"] == "not run"
