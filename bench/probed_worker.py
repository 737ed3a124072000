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
import threading
import time

from app.worker import MailWorker


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
        """Start the probe thread and the writer of PROBE_OUT."""
        super().__init__(*args, **kwargs)
        self.probe = {"dequeue": Totals(), "execute_job": Totals()}
        self.occupancy = []  # (running jobs) sampled every 10 ms while the worker is busy
        self.wake_lateness = []  # seconds late, 1 ms sleeps
        self.probe_started = time.time()
        threading.Thread(target=self.sample, name="probe-sampler", daemon=True).start()
        threading.Thread(target=self.write_stats, name="probe-writer", daemon=True).start()

    def dequeue_job_and_maintain_ttl(self, *args, **kwargs):
        """RQ's dequeue, timed when it returns a job (an idle wait is not a cost)."""
        wall, cpu = time.perf_counter(), time.thread_time()
        result = super().dequeue_job_and_maintain_ttl(*args, **kwargs)
        if result is not None:
            self.probe["dequeue"].add(time.perf_counter() - wall, time.thread_time() - cpu)
        return result

    def execute_job(self, *args, **kwargs):
        """The hand-over to a job thread (and the wait for a free slot), timed."""
        return timed(self.probe["execute_job"], super().execute_job, *args, **kwargs)

    def sample(self):
        """While jobs run: every 1 ms sleep, how late it woke; every 10 ms, how many jobs run."""
        next_occupancy = 0.0
        while True:
            started = time.perf_counter()
            time.sleep(0.001)
            running = len(getattr(self, "running", ()))
            if running:
                self.wake_lateness.append(time.perf_counter() - started - 0.001)
                if started >= next_occupancy:
                    self.occupancy.append(running)
                    next_occupancy = started + 0.01

    def stats(self):
        """What the probes saw so far."""
        lateness = sorted(self.wake_lateness[-20000:])
        occupancy = list(self.occupancy)

        def pct(values, p):
            return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else None

        return {
            **{name: totals.as_dict() for name, totals in self.probe.items()},
            "occupancy_samples": len(occupancy),
            "occupancy_mean": round(sum(occupancy) / len(occupancy), 2) if occupancy else None,
            "occupancy_p10": pct(sorted(occupancy), 10),
            "wake_late_ms_p50": round(1000 * pct(lateness, 50), 3) if lateness else None,
            "wake_late_ms_p90": round(1000 * pct(lateness, 90), 3) if lateness else None,
            "wake_late_ms_p99": round(1000 * pct(lateness, 99), 3) if lateness else None,
        }

    def write_stats(self):
        """Write stats() to PROBE_OUT every second."""
        path = os.environ.get("PROBE_OUT")
        while path:
            time.sleep(1)
            with open(path + ".tmp", "w") as out:
                json.dump(self.stats(), out)
            os.replace(path + ".tmp", path)
