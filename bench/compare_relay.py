#!/usr/bin/env python3
"""Benchmark 6's relay run for checkouts side by side: which of two worker versions sends more (never part of the test suite).

    python3 bench/compare_relay.py --side before=../main-before --side after=. --celery
    python3 bench/compare_relay.py --side as-is=. --side probed=.:bench.probed_worker.ProbedMailWorker

Each side is `name=ROOT` (the checkout whose app/ and rq_threads/ the workers import; its
Procfile's worker line, run as `--processes` processes) or `name=ROOT:WORKER_CLASS`;
`--celery` adds Celery threads(25) on as many processes. One private Redis and the bench
sink (100 ms per DATA, bench.harness.Stack) serve every round; each round runs every side
once, in an order rotated by one per round, each with `--mails` mails enqueued ahead. For
each run it prints the steady mails/s and, between the 50th and the 50th-last mail, the
machine's busy share (/proc/stat), the CPU per mail of the workers and of Redis plus the
sink (psutil), and, for a probed worker, its mean occupancy (running jobs of 25).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine_ticks():
    """(all, idle) CPU ticks of the machine since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values), values[3] + values[4]


def tree_cpu(pids):
    """User + system CPU seconds of these processes and their children (bench.job_cost.process_cpu)."""
    import psutil

    from bench.job_cost import process_cpu

    total = 0.0
    for pid in pids:
        try:
            total += process_cpu(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return total


def start_rq(stack, side, processes, workdir, tag):
    """`processes` copies of the side's Procfile worker line, importing the side's checkout."""
    from bench.harness import BIN, procfile_command

    args = procfile_command("worker")
    if side["worker"]:
        args[args.index("-w") + 1] = side["worker"]
    return [stack.spawn(f"worker-{tag}", [str(BIN / "rq"), *args[1:]], cwd=side["root"],
                        env={**stack.env, "PYTHONPATH": side["root"], "PROBE_OUT": str(workdir / f"probe-{tag}-{number}.json")})
            for number in range(processes)]


def one_run(stack, app, celery, name, side, count, processes, workdir, tag):
    """Enqueue, start the side's workers, time the steady part; the figures of this run."""
    from bench.run import celery_processes, enqueue_rq, rate

    (celery.enqueue if side is None else lambda t, n: enqueue_rq(app, t, n))(f"{tag}-", count)
    others = [process.pid for process in stack.processes]  # Redis and the sink
    before, started = stack.delivered(), time.time()
    workers = (celery_processes(celery, "threads", 25, processes) if side is None
               else start_rq(stack, side, processes, workdir, tag))
    stack.wait_delivered(before + 50, poll=0.002)
    ticks0, idle0 = machine_ticks()
    worker0, other0 = tree_cpu([w.pid for w in workers]), tree_cpu(others)
    stack.wait_delivered(before + count - 50, poll=0.002)
    ticks1, idle1 = machine_ticks()
    worker1, other1 = tree_cpu([w.pid for w in workers]), tree_cpu(others)
    stack.wait_delivered(before + count)
    stack.stop(workers)
    mails = count - 100
    result = {**rate(stack, before, count, started),
              "machine_busy": round(1 - (idle1 - idle0) / (ticks1 - ticks0), 3),
              "worker_cpu_ms_per_mail": round(1000 * (worker1 - worker0) / mails, 2),
              "redis_and_sink_cpu_ms_per_mail": round(1000 * (other1 - other0) / mails, 2)}
    probes = sorted(workdir.glob(f"probe-{tag}-*.json"))
    if probes:
        result["occupancy_mean"] = [json.loads(p.read_text()).get("occupancy_mean") for p in probes]
    return result


def main():
    """Parse the sides, run the rounds, print each run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", action="append", default=[], help="name=ROOT or name=ROOT:WORKER_CLASS")
    parser.add_argument("--celery", action="store_true", help="also Celery threads(25)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mails", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    sides = {}
    for spec in args.side:
        name, _, where = spec.partition("=")
        root, _, worker = where.partition(":")
        sides[name] = {"root": str(Path(root).resolve()), "worker": worker or None}
    if args.celery:
        sides["celery_threads_25"] = None
    sys.path.insert(0, str(ROOT))
    from bench.job_cost import bootstrap

    bootstrap()
    from bench.harness import Stack
    from bench.run import CelerySide, make_app

    workdir = Path(tempfile.mkdtemp(prefix="compare-relay-"))
    stack = Stack(workdir, smtp_delay=0.1)
    runs = {name: [] for name in sides}
    try:
        app, celery = make_app(stack), CelerySide(stack)
        names = list(sides)
        for number in range(args.rounds):
            for name in names[number % len(names):] + names[:number % len(names)]:
                result = one_run(stack, app, celery, name, sides[name], args.mails, args.processes, workdir, f"{name}{number}")
                runs[name].append(result)
                print(f"round {number + 1} {name}: {result}", flush=True)
    finally:
        stack.stop()
    print(f"==> medians of {args.rounds} rounds, {args.processes} processes each, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for name, results in runs.items():
        medians = {key: statistics.median(r[key] for r in results)
                   for key in ("steady_mails_per_s", "machine_busy", "worker_cpu_ms_per_mail", "redis_and_sink_cpu_ms_per_mail")}
        print(f"{name}: {medians}")


if __name__ == "__main__":
    main()
