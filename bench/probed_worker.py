"""The project's worker with probes, for bench/job_cost.py: where the main (dequeuing) thread's time goes.

    rq worker -c app.worker -w bench.probed_worker.ProbedMailWorker ...   (PROBE_OUT=/path/stats.json)

It changes nothing in what the worker does. It times, in the main thread, each dequeue and
each hand-over to a job thread (wall time and that thread's own CPU time: the gap is waiting,
for Redis or for the GIL), samples how many jobs are running (`running`, if the worker class
keeps that dict), and runs a probe thread that sleeps 1 ms at a time and records how late it
wakes: the wait for the GIL that any thread sees after a blocking call returns. Every second
it writes the totals to PROBE_OUT.
"""

import json
import os
import sys
import threading
import time
from collections import Counter

import redis.client

from app.worker import MailWorker

# Who sends what (PROBE_TRACE=1): round trips and commands by thread kind and by the nearest
# caller outside redis-py (a function of rq, app or Flask-Mail).
TRACE = Counter()
TRACE_LOCK = threading.Lock()


def caller():
    """`thread kind: function (file)` of the nearest frame outside redis-py and this module."""
    thread = threading.current_thread()
    kind = "main" if thread is threading.main_thread() else "job" if thread.name.startswith("rq-job-") else thread.name
    frame = sys._getframe(2)
    while frame and ("/redis/" in frame.f_code.co_filename or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    where = f"{frame.f_code.co_qualname} ({frame.f_code.co_filename.rsplit('/', 2)[-2]})" if frame else "?"
    return f"{kind}: {where}"


def traced(function, commands_of):
    """Wrap a redis-py method that makes one round trip, counting it and its commands for the caller."""

    def wrapper(self, *args, **kwargs):
        """Count, then make the call."""
        commands = commands_of(self, args)
        if commands:  # an empty pipeline sends nothing
            key = caller()
            with TRACE_LOCK:
                TRACE[key + " | round trips"] += 1
                TRACE[key + " | commands"] += commands
        return function(self, *args, **kwargs)

    return wrapper


if os.environ.get("PROBE_TRACE"):
    # A pipeline's execute() sends its whole stack in one go; a watched pipeline sends each command at once.
    redis.client.Redis.execute_command = traced(redis.client.Redis.execute_command, lambda self, args: 1)
    redis.client.Pipeline.execute = traced(
        redis.client.Pipeline.execute,
        lambda self, args: len(self.command_stack) + (2 if self.transaction and self.command_stack else 0),
    )
    redis.client.Pipeline.immediate_execute_command = traced(
        redis.client.Pipeline.immediate_execute_command, lambda self, args: 1
    )


class Totals:
    """Wall and thread-CPU seconds of one kind of call, and how many calls."""

    def __init__(self):
        """All zero."""
        self.calls, self.wall, self.cpu = 0, 0.0, 0.0

    def add(self, wall, cpu):
        """Count one call."""
        self.calls += 1
        self.wall += wall
        self.cpu += cpu

    def as_dict(self):
        """Totals and per-call means in ms."""
        calls = max(self.calls, 1)
        return {"calls": self.calls, "wall_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3),
                "wall_ms_per_call": round(1000 * self.wall / calls, 3), "cpu_ms_per_call": round(1000 * self.cpu / calls, 3)}


def timed(totals, function, *args, **kwargs):
    """Call `function`, adding its wall time and this thread's CPU time to `totals`."""
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        return function(*args, **kwargs)
    finally:
        totals.add(time.perf_counter() - wall, time.thread_time() - cpu)


class ProbedMailWorker(MailWorker):
    """MailWorker, its main thread timed and its occupancy sampled."""

    def __init__(self, *args, **kwargs):
        """Start the probe thread and the writer of PROBE_OUT (PROBE_SWITCH_INTERVAL: a what-if for the GIL)."""
        super().__init__(*args, **kwargs)
        if os.environ.get("PROBE_SWITCH_INTERVAL"):
            sys.setswitchinterval(float(os.environ["PROBE_SWITCH_INTERVAL"]))
        self.probe = {"dequeue": Totals(), "execute_job": Totals()}
        self.dequeue_walls = []  # seconds, each dequeue that returned a job
        self.occupancy = []  # (running jobs) sampled every 10 ms while the worker is busy
        self.wake_lateness = []  # seconds late, 1 ms sleeps
        self.probe_started = time.time()
        threading.Thread(target=self.sample, name="probe-sampler", daemon=True).start()
        threading.Thread(target=self.write_stats, name="probe-writer", daemon=True).start()

    def heartbeat(self, timeout=None, pipeline=None):
        """RQ's heartbeat; a what-if: at most once a second, PROBE_THROTTLE_HEARTBEAT=1 for the main thread's lone
        ones, =2 also for those RQ adds to a job's prepare pipeline and to the suspension check's pipeline."""
        mode = os.environ.get("PROBE_THROTTLE_HEARTBEAT")
        caller_name = sys._getframe(1).f_code.co_name
        throttled = (mode and pipeline is None and timeout is None and threading.current_thread() is threading.main_thread()
                     ) or (mode == "2" and caller_name in ("prepare_job_execution", "is_suspended"))
        if throttled and time.monotonic() - getattr(self, "probe_last_heartbeat", 0.0) < 1.0:
            return
        self.probe_last_heartbeat = time.monotonic()
        return super().heartbeat(timeout, pipeline)

    def check_for_suspension(self, burst):
        """RQ's check; a what-if (PROBE_THROTTLE_SUSPENSION=1): at most once a second outside burst mode."""
        if os.environ.get("PROBE_THROTTLE_SUSPENSION") and not burst:
            if time.monotonic() - getattr(self, "probe_last_suspension_check", 0.0) < 1.0:
                return
            self.probe_last_suspension_check = time.monotonic()
        return super().check_for_suspension(burst)

    def set_state(self, state, pipeline=None):
        """RQ's state write; a what-if (PROBE_SKIP_IDLE_STATE=1): no lone `idle` write while jobs are running."""
        if (os.environ.get("PROBE_SKIP_IDLE_STATE") and pipeline is None and state == "idle"
                and getattr(self, "running", None)):
            return
        return super().set_state(state, pipeline)

    def execute_job(self, job, queue):
        """The hand-over to a job thread, timed."""
        return timed(self.probe["execute_job"], super().execute_job, job, queue)

    def dequeue_job_and_maintain_ttl(self, *args, **kwargs):
        """RQ's dequeue, timed when it returns a job within 0.5 s (a wait for work is not a cost)."""
        wall, cpu = time.perf_counter(), time.thread_time()
        result = super().dequeue_job_and_maintain_ttl(*args, **kwargs)
        if result is not None and time.perf_counter() - wall < 0.5:  # longer: it waited for work
            self.probe["dequeue"].add(time.perf_counter() - wall, time.thread_time() - cpu)
            self.dequeue_walls.append(time.perf_counter() - wall)
        return result

    def sample(self):
        """While jobs run: every 1 ms sleep, how late it woke; every 10 ms, how many jobs run."""
        next_occupancy = 0.0
        while True:
            started = time.perf_counter()
            time.sleep(0.001)
            running = len(getattr(self, "running", ()))
            if not running:
                time.sleep(0.05)  # idle: no need to probe at 1 kHz
            else:
                self.wake_lateness.append(time.perf_counter() - started - 0.001)
                if started >= next_occupancy:
                    self.occupancy.append(running)
                    next_occupancy = started + 0.01

    def stats(self):
        """What the probes saw so far."""
        lateness = sorted(self.wake_lateness[-20000:])
        occupancy = list(self.occupancy)

        def pct(values, p):
            """The p-th percentile of sorted values (None if empty)."""
            return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else None

        return {
            **{name: totals.as_dict() for name, totals in self.probe.items()},
            "dequeue_wall_ms_p50": round(1000 * pct(sorted(self.dequeue_walls), 50), 3) if self.dequeue_walls else None,
            "dequeue_wall_ms_p90": round(1000 * pct(sorted(self.dequeue_walls), 90), 3) if self.dequeue_walls else None,
            "dequeue_wall_ms_max": round(1000 * max(self.dequeue_walls), 1) if self.dequeue_walls else None,
            "occupancy_samples": len(occupancy),
            "occupancy_mean": round(sum(occupancy) / len(occupancy), 2) if occupancy else None,
            "occupancy_p10": pct(sorted(occupancy), 10),
            "wake_late_ms_p50": round(1000 * pct(lateness, 50), 3) if lateness else None,
            "wake_late_ms_p90": round(1000 * pct(lateness, 90), 3) if lateness else None,
            "wake_late_ms_p99": round(1000 * pct(lateness, 99), 3) if lateness else None,
            "switch_interval_s": sys.getswitchinterval(),
            "trace": dict(TRACE.most_common()),
        }

    def write_stats(self):
        """Write stats() to PROBE_OUT every second."""
        path = os.environ.get("PROBE_OUT")
        while path:
            time.sleep(1)
            with open(path + ".tmp", "w") as out:
                json.dump(self.stats(), out)
            os.replace(path + ".tmp", path)
