"""The speed and memory goals, read off bench/run.py's results: each with its figure and whether it is met."""

# (benchmark, goal, what is compared): each check takes the results and returns (figure, met).
GOALS = [
    ("relay", "100 ms relay: the Procfile's worker >= 1.0x Celery threads(25), same processes",
     lambda r: (f"{r['ratio_vs_celery_threads']}x (rounds {r['ratio_vs_celery_threads_each_round']})",
                r["ratio_vs_celery_threads"] >= 1.0)),
    ("relay", "100 ms relay: beside the seed's Sidekiq (concurrency 25), same processes",
     lambda r: (f"{r['ratio_vs_sidekiq']}x (rounds {r['ratio_vs_sidekiq_each_round']})", None)),
    ("relay", "worker PSS, all processes summed, <= Sidekiq's",
     lambda r: (f"{r['rq']['pss_mb']} MB vs {r['sidekiq_25']['pss_mb']} MB",
                r["rq"]["pss_mb"] <= r["sidekiq_25"]["pss_mb"])),
    ("throughput", "no relay latency: >= 1.0x Celery prefork, same processes",
     lambda r: (f"{r['ratio_steady']}x (rounds {r['ratio_steady_each_round']})", r["ratio_steady"] >= 1.0)),
    ("latency", "enqueue -> delivered p50 <= 10 ms",
     lambda r: (f"{r['p50_ms']} ms (p95 {r['p95_ms']} ms)", r["p50_ms"] <= 10)),
    ("bulk_relay", "a 10,000-user announcement at a 100 ms relay >= 450 mails/s",
     lambda r: (f"{r['steady_mails_per_s']} mails/s to {r['users']} users", r["steady_mails_per_s"] >= 450
                and r["users"] >= 10_000)),
]


def goal_rows(results):
    """[(goal, figure, "yes" / "no" / "-" / "not run", run)] for each goal, from run.py's results dict.

    `run` says when the figure was measured and how the project's worker ran (`rq_form`):
    `--only` merges a run's results into the saved ones, so rows can come from different runs.
    """
    rows = []
    for benchmark, goal, check in GOALS:
        if benchmark not in results:
            rows.append((goal, "", "not run", ""))
            continue
        result = results[benchmark]
        figure, met = check(result)
        run = ", ".join(str(result[key]) for key in ("measured_at", "rq_form") if result.get(key))
        rows.append((goal, figure, "-" if met is None else ("yes" if met else "no"), run))
    return rows


def goals_table(results):
    """The goals as a Markdown table, ready to paste into a note or a docs page."""
    lines = ["| goal | measured | met? | run |", "| --- | --- | --- | --- |"]
    lines += [f"| {goal} | {figure} | {met} | {run} |" for goal, figure, met, run in goal_rows(results)]
    return "\n".join(lines)
