#!/usr/bin/env python3
"""What one mail job costs: worker CPU per mail, Redis commands and round trips per job (never part of the test suite).

    python3 bench/job_cost.py                       the Procfile's worker line and Celery threads(25), 1 process each
    python3 bench/job_cost.py --delay 0.1 --profile  also py-spy profiles of the project's worker (GIL and all threads)
    python3 bench/job_cost.py --root ../other-tree   the worker of another checkout (its Procfile and app/)

For each system: a private redis-server and the bench sink (bench.harness.Stack), `--mails`
confirmation mails enqueued ahead and hidden (the queue's list renamed away), one worker
process started and left to go idle, then the list renamed back. Between that moment and
the worker idle again after the last mail, it reads:

- worker CPU: user + system time of the worker process and its children (psutil), less its
  idle rate measured just before, divided by the mails;
- Redis commands per job: the server's INFO commandstats delta, by command (only the worker
  talks to this Redis in that window; INFO and RENAME are left out);
- round trips per job: a second run with the worker's Redis URL pointed at a counting proxy
  (bench.redis_counter): a round trip is one flight of requests before Redis's next reply;
- for the project's worker, also a third run with bench.probed_worker (its main thread timed,
  the running jobs counted, and how late a thread wakes from a 1 ms sleep: the GIL wait).

The proxy and the probes slow the worker a little, so CPU per mail is taken from the plain run.
Results go to bench/results/job_cost-<delay>.json.

    python3 bench/job_cost.py --delay 0.1 --compare 'PROBE_THROTTLE_HEARTBEAT=1 PROBE_THROTTLE_SUSPENSION=1'

tries trims before they are made in the worker: bench.probed_worker's what-if settings
(PROBE_THROTTLE_HEARTBEAT, PROBE_THROTTLE_SUSPENSION, PROBE_SKIP_IDLE_STATE,
PROBE_SWITCH_INTERVAL) against the worker as it is, in alternating
order, and prints the median ratio of mails/s, CPU per mail and commands per job.
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORED_COMMANDS = {"info", "rename", "config"}  # this script's own


def bootstrap():
    """Run inside .venv-bench (bench.run builds it), with the production settings bench.run uses."""
    sys.path.insert(0, str(ROOT))
    from bench import run

    run.bootstrap()
    os.chdir(ROOT)
    os.environ.update(SECRET_KEY=run.BENCH_SECRET_KEY, SITE_URL=run.BENCH_SITE_URL, TRUSTED_HOSTS="127.0.0.1,localhost")


def process_cpu(process, kind=("user", "system")):
    """User + system CPU seconds of a process and its live children (psutil); `kind=("system",)`: system only."""
    import psutil

    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        try:
            times = each.cpu_times()
            total += sum(getattr(times, name) for name in kind)
        except psutil.NoSuchProcess:
            continue
    return total


def wait_idle(process, settle=0.5, threshold=0.01, at_least=2.0, timeout=120):
    """Wait until the process uses less than `threshold` CPU seconds per `settle` s, twice in a row."""
    deadline, calm, start = time.monotonic() + timeout, 0, time.monotonic()
    last = process_cpu(process)
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = process_cpu(process)
        calm = calm + 1 if now - last < threshold else 0
        last = now
        if calm >= 2 and time.monotonic() - start >= at_least:
            return
    raise RuntimeError("the worker never went idle")


def commandstats(client):
    """Calls by command name, from INFO commandstats."""
    stats = client.info("commandstats")
    return Counter({key.removeprefix("cmdstat_"): value["calls"] for key, value in stats.items()})


def worker_command(system, root, redis_url, probe_out=None):
    """The command line and environment changes of one worker process of `system`."""
    if system == "rq":
        args = shlex.split(next(line for line in (root / "Procfile").read_text().splitlines()
                                if line.startswith("worker:")).partition(":")[2])
        if probe_out:
            args[args.index("-w") + 1] = "bench.probed_worker.ProbedMailWorker"
        env = {"REDIS_URL": redis_url, "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(root), str(ROOT)]))}
        if probe_out:
            env["PROBE_OUT"] = str(probe_out)
        return [str(Path(sys.executable).parent / "rq"), *args[1:]], env
    broker = redis_url.rsplit("/", 1)[0] + "/1"
    from bench.harness import celery_command

    return celery_command("threads", 25), {"REDIS_URL": redis_url, "CELERY_BROKER_URL": broker, "PYTHONPATH": str(ROOT)}


def py_spy(pid, out, *flags):
    """Start `py-spy record` on a pid (raw collapsed stacks, per thread, without pausing it)."""
    binary = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(binary), "record", "--pid", str(pid), "--threads", "--nonblocking", "--rate", "200",
                             "--format", "raw", "--output", str(out), *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(system, mails, delay, root, workdir, mode, profile_dir=None, label=""):
    """One run: `mode` is "plain" (CPU, commandstats), "proxy" (round trips) or "probe" (main-thread timings)."""
    import psutil
    import redis

    from bench.harness import Stack, free_port
    from bench.redis_counter import CountingProxy
    from bench.run import CelerySide, enqueue_rq, make_app

    stack = Stack(Path(workdir) / f"{system}-{mode}-{delay}{label}", smtp_delay=delay)
    profilers = []
    try:
        app = make_app(stack)
        proxy = CountingProxy(stack.redis_port, free_port()).start() if mode == "proxy" else None
        worker_url = f"redis://127.0.0.1:{proxy.port}/0" if proxy else stack.redis_url
        if system == "rq":
            enqueue_rq(app, "cost", mails)
            db, queue_key = 0, "rq:queue:mailers"
        else:
            CelerySide(stack).enqueue("cost", mails)
            db, queue_key = 1, "celery"
        queue_db = redis.Redis(port=stack.redis_port, db=db)
        server = redis.Redis(port=stack.redis_port)
        queue_db.rename(queue_key, queue_key + ":hidden")
        probe_out = Path(stack.workdir) / "probe.json" if mode == "probe" else None
        command, env = worker_command(system, root, worker_url, probe_out)
        log = open(Path(stack.workdir) / f"{system}-worker.log", "ab")
        worker = subprocess.Popen(command, cwd=root, env={**stack.env, **env}, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        stack.processes.append(worker)
        process = psutil.Process(worker.pid)
        wait_idle(process)
        redis_process = psutil.Process(stack.processes[0].pid)  # bench.harness.Stack starts Redis first
        idle_cpu, idle_stats, idle_at = process_cpu(process), commandstats(server), time.monotonic()
        idle_proxy = proxy.snapshot() if proxy else None
        time.sleep(3)
        cpu0, stats0, t0 = process_cpu(process), commandstats(server), time.monotonic()
        system_cpu0 = process_cpu(process, ("system",))
        redis_cpu0 = process_cpu(redis_process)
        proxy0 = proxy.snapshot() if proxy else None
        idle_seconds = t0 - idle_at
        idle_cpu_rate = (cpu0 - idle_cpu) / idle_seconds
        idle_commands = stats0 - idle_stats
        if profile_dir:
            profile_dir.mkdir(parents=True, exist_ok=True)
            profilers = [py_spy(worker.pid, profile_dir / f"{system}-{delay}-gil.txt", "--gil"),
                         py_spy(worker.pid, profile_dir / f"{system}-{delay}-all.txt", "--idle")]
            time.sleep(1)
        before = stack.delivered()
        queue_db.rename(queue_key + ":hidden", queue_key)
        stack.wait_delivered(before + mails)
        wait_idle(process, at_least=0)
        cpu1, stats1, t1 = process_cpu(process), commandstats(server), time.monotonic()
        system_cpu1 = process_cpu(process, ("system",))
        redis_cpu1 = process_cpu(redis_process)
        proxy1 = proxy.snapshot() if proxy else None
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
        for profiler in profilers:
            profiler.wait(timeout=60)
        window = t1 - t0
        times = stack.accept_times()[before:before + mails]
        result = {
            "system": system, "mode": mode, "mails": mails, "delay_s": delay,
            "steady_mails_per_s": round((mails - 1) / (times[-1] - times[0]), 1),
            "worker_cpu_ms_per_mail": round(1000 * (cpu1 - cpu0 - idle_cpu_rate * window) / mails, 2),
            # Of which in the kernel (thread starts, futex waits for the GIL, socket calls), idle not taken off.
            "worker_system_cpu_ms_per_mail": round(1000 * (system_cpu1 - system_cpu0) / mails, 2),
            "worker_cpu_share_of_one_core_while_busy": round((cpu1 - cpu0) / (times[-1] - times[0]), 2),
            "idle_cpu_ms_per_s": round(1000 * idle_cpu_rate, 2),
            # The same cores also run Redis: its CPU for the window (with AOF everysec), per job.
            "redis_server_cpu_ms_per_job": round(1000 * (redis_cpu1 - redis_cpu0) / mails, 3),
        }
        delta = stats1 - stats0
        per_job = {name: round((calls - idle_commands.get(name, 0) * window / idle_seconds) / mails, 2)
                   for name, calls in delta.items() if name not in IGNORED_COMMANDS}
        per_job = {name: value for name, value in sorted(per_job.items(), key=lambda item: -item[1]) if value > 0.005}
        result["redis_commands_per_job"] = round(sum(per_job.values()), 1)
        result["redis_commands_per_job_by_name"] = per_job
        if proxy:
            idle_trips_rate = (proxy0["round_trips"] - idle_proxy["round_trips"]) / idle_seconds
            result["round_trips_per_job"] = round((proxy1["round_trips"] - proxy0["round_trips"] - idle_trips_rate * window) / mails, 1)
            proxied = proxy1["commands"] - proxy0["commands"]
            result["proxy_commands_per_job"] = round(sum(proxied.values()) / mails, 1)
            result["redis_connections_opened"] = proxy1["connections"]
        if probe_out:
            time.sleep(1.5)  # the probe writes every second
            result["probe"] = json.loads(probe_out.read_text())
        stack.stop([worker])
        return result
    finally:
        for profiler in profilers:
            if profiler.poll() is None:
                profiler.kill()
        stack.stop()


# Where a sample's time is spent: the first of these (in this order) among its frames names its phase.
PHASES = (
    ("BaseWorker.check_for_suspension", "main: suspension check (+ its heartbeat)"),
    ("BaseWorker.heartbeat", "main: worker heartbeat"),
    ("Queue.dequeue_any", "main: BLMOVE + fetch the job hash"),
    ("ThreadPoolWorker.take_waiting_job", "main: take a waiting job and read its hash (one script call)"),
    ("BaseWorker.set_state", "main: worker state"),
    ("prepare_execution", "main: execution record"),
    ("BaseWorker.prepare_job_execution", "job: prepare (registries, job hash)"),
    ("ThreadPoolWorker.prepare_job_execution", "job: execution record + prepare, one transaction (rq_threads)"),
    ("send_mail_job", "job: the mail itself (render, MIME, SMTP, sent-marker)"),
    ("BaseWorker.handle_execution_ended", "job: job heartbeat after it ran"),
    ("ThreadPoolWorker.handle_job_success", "job: success (rq_threads: one script, or RQ's transaction)"),
    ("BaseWorker.handle_job_success", "job: success transaction (result, registries, counters)"),
    ("BaseWorker.maintain_heartbeats", "heartbeat thread"),
    ("RQScheduler", "scheduler thread"),
    ("Timer.run", "job timeout timer threads (RQ's TimerDeathPenalty)"),
    ("Watchdog.run", "job timeout watchdog thread (rq_threads)"),
    ("BaseWorker.perform_job", "job: rest of RQ's perform_job (timer, logging, callbacks)"),
    ("MailWorker.execute_job", "main: hand the job to a job thread"),
    ("ThreadPoolWorker.execute_job", "main: hand the job to a job thread"),
    ("BaseWorker.work", "main: rest of RQ's work loop (logging, procline)"),
)
# The library a sample's innermost frame belongs to.
LIBRARIES = (("redis/", "redis-py"), ("hiredis", "redis-py"), ("logging/", "logging"), ("rq/", "rq"),
             ("smtplib", "mail (smtplib, email, Flask-Mail, Jinja)"), ("email/", "mail (smtplib, email, Flask-Mail, Jinja)"),
             ("flask_mail", "mail (smtplib, email, Flask-Mail, Jinja)"), ("jinja2", "mail (smtplib, email, Flask-Mail, Jinja)"),
             ("app/", "app"), ("threading", "threading"), ("socket", "socket"))


def summarise_profile(path, top=15):
    """Shares of samples from a py-spy raw file: by thread, by RQ phase, by library (innermost frame), by function."""
    by_thread, phase, library, leaf, total = Counter(), Counter(), Counter(), Counter(), 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():  # py-spy now and then writes a frame name with a line break in it
            continue
        count, frames = int(count), stack.split(";")
        thread = frames[0]
        by_thread["job threads" if "rq-job-" in thread else "main (dequeue)" if "MainThread" in thread
                  else thread.split(": ", 1)[-1]] += count
        names = [frame.split(" (")[0] for frame in frames[1:]]
        if not names:
            kind = "no Python frame (C code, a thread starting or ending)"
        elif names[0] == "Thread._bootstrap" and not any(name.endswith(".run") for name in names):
            kind = "thread start/exit"
        else:
            kind = next((label for key, label in PHASES if any(name.startswith(key) for name in names)), "other")
        phase[kind] += count
        innermost = frames[-1]
        library[next((label for key, label in LIBRARIES if key in innermost), "other")] += count
        leaf[innermost.split(":")[0] + ")"] += count
        total += count

    def shares(counter):
        """The top entries as percentages of all samples."""
        return {name: round(100 * value / max(total, 1), 1) for name, value in counter.most_common(top)}

    return {"samples": total, "by_thread_pct": shares(by_thread), "by_phase_pct": shares(phase),
            "by_library_pct": shares(library), "self_pct": shares(leaf)}


def compare(variant, pairs, mails, delay, root, workdir, against=""):
    """The probed worker with the settings in `against` (default: as it is) vs with `variant`, alternating; median ratios."""
    import statistics

    settings = dict(item.split("=", 1) for item in variant.split())
    baseline = dict(item.split("=", 1) for item in against.split())
    figures = ("steady_mails_per_s", "worker_cpu_ms_per_mail", "redis_commands_per_job")
    rows = []
    for number in range(pairs):
        runs = {}
        for side in (("as_is", "what_if") if number % 2 == 0 else ("what_if", "as_is")):
            saved = dict(os.environ)
            os.environ.update(settings if side == "what_if" else baseline)
            try:
                run = measure("rq", mails, delay, root, workdir, "probe", label=f"-{side}{number}")
            finally:
                os.environ.clear()
                os.environ.update(saved)
            runs[side] = {key: run[key] for key in figures} | {"occupancy_mean": run["probe"]["occupancy_mean"],
                                                              "load_average": round(os.getloadavg()[0], 2)}
        rows.append(runs)
        print(json.dumps(runs), flush=True)
    ratios = {key: round(statistics.median(row["what_if"][key] / row["as_is"][key] for row in rows), 2) for key in figures}
    return {"variant": settings, "against": baseline, "delay_s": delay, "mails": mails, "pairs": rows, "median_ratio_what_if_to_as_is": ratios}


def main():
    """Run the chosen systems (or one --compare) and print JSON documents."""
    bootstrap()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.0, help="the sink's wait per DATA, s")
    parser.add_argument("--systems", default="rq,celery")
    parser.add_argument("--modes", default="plain,proxy,probe", help="plain (CPU, commands), proxy (round trips), probe")
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of the project's worker (plain run)")
    parser.add_argument("--root", default=str(ROOT), help="the checkout whose Procfile and app/ the rq worker runs")
    parser.add_argument("--compare", metavar="'PROBE_X=1 ...'", help="what-if settings of bench.probed_worker to try")
    parser.add_argument("--against", default="", help="what-if settings of the side --compare is measured against")
    parser.add_argument("--pairs", type=int, default=3, help="alternating as-is/what-if pairs for --compare")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    if args.compare:
        with tempfile.TemporaryDirectory(prefix="job-cost-") as workdir:
            result = compare(args.compare, args.pairs, args.mails, args.delay, root, workdir, args.against)
        print(json.dumps(result["median_ratio_what_if_to_as_is"]))
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / f"job_cost-compare-{args.delay}.json").write_text(json.dumps(result, indent=2))
        return
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="job-cost-") as workdir:
        for system in args.systems.split(","):
            for mode in args.modes.split(","):
                if mode == "probe" and system != "rq":
                    continue
                profile_dir = ROOT / "bench" / "results" / "profiles" if args.profile and mode == "plain" and system == "rq" else None
                result = measure(system, args.mails, args.delay, root, workdir, mode, profile_dir)
                if profile_dir:
                    result["profile"] = {kind: summarise_profile(profile_dir / f"{system}-{args.delay}-{kind}.txt")
                                         for kind in ("gil", "all")}
                print(json.dumps(result, indent=2), flush=True)
                results.append(result)
    report = {"root": str(root), "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "runs": results}
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"job_cost-{args.delay}.json").write_text(json.dumps(report, indent=2))
    print(f"==> bench/results/job_cost-{args.delay}.json; load average {report['load_average_after']}")


if __name__ == "__main__":
    main()
