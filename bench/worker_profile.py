#!/usr/bin/env python3
"""Where a worker's time goes: Redis round trips and commands per job, and optionally a cProfile.

    python3 bench/worker_profile.py              1,000 confirmation mails through one FlaskWorker
    python3 bench/worker_profile.py --jobs 300 --profile
    python3 bench/worker_profile.py --stock      RQ's own SimpleWorker instead, for comparison

It runs in .venv-bench (see bench/run.py), starts its own Redis and SMTP sink, queues the jobs,
and runs one FlaskWorker in this process (burst mode) with redis-py's calls counted.
"""

import argparse
import collections
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import BENCH_SECRET_KEY, bootstrap, mail_kwargs, make_app  # noqa: E402


class RedisCallCounter:
    """Counts round trips (a command, or a whole pipeline) and commands by name, while installed."""

    def __init__(self):
        """Start with empty counts."""
        self.round_trips = collections.Counter()
        self.commands = collections.Counter()

    def install(self):
        """Wrap redis-py's single-command and pipeline entry points."""
        from redis import Redis
        from redis.client import Pipeline

        counter = self
        single, pipelined, immediate = Redis.execute_command, Pipeline.execute, Pipeline.immediate_execute_command

        def execute_command(client, *args, **options):
            counter.round_trips["command"] += 1
            counter.commands[str(args[0]).upper()] += 1
            return single(client, *args, **options)

        def execute(pipeline, raise_on_error=True):
            counter.round_trips["pipeline"] += 1
            for queued in pipeline.command_stack:
                args = queued[0] if isinstance(queued, tuple) else queued.args
                counter.commands[str(args[0]).upper()] += 1
            return pipelined(pipeline, raise_on_error)

        def immediate_execute_command(pipeline, *args, **options):  # WATCH and reads inside a transaction
            counter.round_trips["command"] += 1
            counter.commands[str(args[0]).upper()] += 1
            return immediate(pipeline, *args, **options)

        Redis.execute_command, Pipeline.execute = execute_command, execute
        Pipeline.immediate_execute_command = immediate_execute_command


def main():
    """Queue the mails, run the worker, print the counts per job."""
    bootstrap()
    os.chdir(ROOT)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="also print the 30 costliest functions")
    parser.add_argument("--stock", action="store_true", help="RQ's SimpleWorker (inside one app context)")
    args = parser.parse_args()
    os.environ["SECRET_KEY"] = BENCH_SECRET_KEY
    from redis import Redis
    from rq import Queue
    from rq.serializers import JSONSerializer
    from rq.worker import SimpleWorker

    from app.mail import deliver_later
    from app.smtp import KeptConnection
    from app.worker import FlaskWorker
    from bench.harness import Stack

    with tempfile.TemporaryDirectory(prefix="bench-profile-") as workdir:
        stack = Stack(workdir)
        try:
            app = make_app(stack)
            with app.test_request_context():
                for n in range(args.jobs):
                    deliver_later(**mail_kwargs(n, "profile"))
            connection = Redis.from_url(stack.redis_url)
            queues = [Queue(name, connection=connection, serializer=JSONSerializer) for name in ("mailers", "default")]
            app.extensions["smtp_connection"] = KeptConnection()
            if args.stock:
                worker = SimpleWorker(queues, connection=connection, serializer=JSONSerializer)
                app.app_context().push()  # what FlaskWorker does per job, once for all
            else:
                worker = FlaskWorker(queues, connection=connection, serializer=JSONSerializer)
                worker.flask_app = app  # the stack's settings, not this shell's environment
            counter = RedisCallCounter()
            counter.install()
            profile = cProfile.Profile() if args.profile else None
            started = time.perf_counter()
            if profile:
                profile.enable()
            worker.work(burst=True, logging_level="WARNING")
            if profile:
                profile.disable()
            elapsed = time.perf_counter() - started
            stack.wait_delivered(args.jobs)
        finally:
            stack.stop()
    jobs = args.jobs
    name = "RQ's SimpleWorker" if args.stock else "FlaskWorker"
    print(f"{jobs} jobs, one {name}, {jobs / elapsed:.0f} jobs/s (counting slows it down)")
    print(f"Redis round trips per job: {sum(counter.round_trips.values()) / jobs:.1f} "
          f"({counter.round_trips['command'] / jobs:.1f} single commands, {counter.round_trips['pipeline'] / jobs:.1f} pipelines)")
    print(f"Redis commands per job: {sum(counter.commands.values()) / jobs:.1f}")
    for name, count in counter.commands.most_common():
        if count >= jobs / 10:
            print(f"  {name:<14} {count / jobs:.1f}")
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
