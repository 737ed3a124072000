#!/usr/bin/env python3
"""What is left of queued jobs after Redis restarts, by persistence setting and by how it stopped (never a test).

    python3 bench/persistence.py             100 jobs per case
    python3 bench/persistence.py --jobs 20

For each persistence setting (AOF with `appendfsync everysec`; RDB snapshots with redis-server's
default `save` rules; none) and each way to stop (`SHUTDOWN`, `kill -9`): a redis-server of
its own on a free port in a temp dir, `--jobs` jobs enqueued on `mailers` with no worker
running, one second's wait (AOF's `everysec` writes to disk within a second), the stop, a new
redis-server on the same directory, and a count of the jobs that are both on the queue and
readable. It prints a Markdown table, the date and redis-server's version. docs/redis.md
quotes it.
"""

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, port_open, wait_until  # noqa: E402

# redis-server's own default `save` rules (redis.conf of Redis 7: after 3600 s and 1 change,
# 300 s and 100 changes, 60 s and 10,000 changes), given explicitly, as a packaged redis.conf does.
SETTINGS = {
    "AOF, `appendfsync everysec`": ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
    "RDB snapshots only (default config)": ["--appendonly", "no", "--save", "3600 1 300 100 60 10000"],
    "none": ["--appendonly", "no", "--save", ""],
}
STOPS = ("`SHUTDOWN`", "`kill -9`")


def start_redis(port, directory, settings):
    """A redis-server on loopback with these persistence settings and its files in `directory`."""
    binary = shutil.which("redis-server") or sys.exit("redis-server is not on PATH")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), *settings],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: port_open(port), f"redis-server on {port}")
    return process


def jobs_left(settings, stop, count):
    """Enqueue `count` jobs, stop Redis the way `stop` says, start it again: how many jobs are still there."""
    from redis import Redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    with tempfile.TemporaryDirectory(prefix="persistence-") as directory:
        port = free_port()
        process = start_redis(port, directory, settings)
        try:
            queue = Queue("mailers", connection=Redis(port=port), serializer=JSONSerializer)
            ids = [queue.enqueue("app.mail.job.send_mail_job", template="email/confirm", to=f"u{n}@example.com").id
                   for n in range(count)]
            time.sleep(1)
            if stop == "`SHUTDOWN`":
                try:
                    Redis(port=port).shutdown()
                except Exception:  # noqa: BLE001 - redis-py raises as the server closes the connection
                    pass
                process.wait(timeout=30)
            else:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        process = start_redis(port, directory, settings)
        try:
            connection = Redis(port=port)
            wait_until(lambda: connection.info("persistence").get("loading") == 0, "Redis to load its files")
            queued = {job_id.decode() for job_id in connection.lrange("rq:queue:mailers", 0, -1)}
            return sum(1 for job_id in ids if job_id in queued and connection.hexists(f"rq:job:{job_id}", "data"))
        finally:
            process.terminate()
            process.wait(timeout=30)


def main():
    """Every setting and every stop; print the table (inside .venv-bench, which bench.run builds)."""
    from bench import run

    run.bootstrap()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    version = subprocess.run([shutil.which("redis-server") or "redis-server", "--version"], capture_output=True,
                             text=True, check=True).stdout.split()[2].removeprefix("v=")
    print(f"| persistence | after {STOPS[0]} | after {STOPS[1]} |")
    print("| --- | --- | --- |")
    for name, settings in SETTINGS.items():
        cells = [f"{jobs_left(settings, stop, args.jobs)} of {args.jobs}" for stop in STOPS]
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{when}, redis-server {version}, `python3 bench/persistence.py{'' if args.jobs == 100 else f' --jobs {args.jobs}'}`")


if __name__ == "__main__":
    main()
