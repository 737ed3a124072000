"""The parts every benchmark starts: its own Redis, the SMTP sink, workers; all stopped by pid."""

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port():
    """Ask the kernel for a free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, what, timeout=30):
    """Poll `predicate` until it is true, or stop the benchmark after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def port_open(port):
    """True if something listens on the loopback port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def redis_command(port, directory, *extra):
    """A redis-server command line of our own: loopback, AOF everysec, no RDB, noeviction, data in `directory`."""
    return [
        shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--dir", str(directory), "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
        "--maxmemory-policy", "noeviction", *extra,
    ]


def csrf_token(html):
    """The CSRF token of the form in a page (Flask-WTF's hidden field)."""
    return html.split('name="csrf_token" type="hidden" value="', 1)[1].split('"', 1)[0]


def celery_command(pool, concurrency):
    """A Celery worker running the same send_mail_job; at INFO, like the Procfile's worker (two lines a job)."""
    return [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "-P", pool, "-c", str(concurrency),
            "--loglevel", "INFO"]


def procfile_command(name):
    """The command line of one Procfile process, as a list."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return shlex.split(line.partition(":")[2])
    raise KeyError(name)


def child_pids(pid):
    """The direct children of a process (Linux /proc)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children.extend(int(child) for child in (task / "children").read_text().split())
    return children


def tree_pss_mb(pids):
    """The summed PSS (MB) of these processes and all their descendants (Linux /proc)."""
    seen, todo, total_kb = set(), list(pids), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
            todo.extend(child_pids(pid))
        except OSError:
            continue
    return round(total_kb / 1024, 1)


# `rq worker` options that `rq worker-pool` (RQ 3.0) does not take, each with its value.
POOL_LACKS = ("--maintenance-interval", "--worker-ttl", "--job-monitoring-interval")


def pool_options(args):
    """The worker line's arguments without the options worker-pool lacks (POOL_LACKS)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in POOL_LACKS:
            skip = True
        else:
            kept.append(arg)
    return kept


class Stack:
    """A Redis (AOF everysec, noeviction) and an SMTP sink in a temp dir, plus processes to stop."""

    rq_form = "procfile"  # how rq_side() runs the project's workers: "procfile" (k x `rq worker`) or "pool"

    def __init__(self, workdir, smtp_delay=0.0):
        """Start Redis and the sink; set the environment the app's processes will read."""
        self.workdir = Path(workdir)
        self.smtp_delay = smtp_delay
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.processes = []
        self.redis_port, self.smtp_port = free_port(), free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.sink_log = self.workdir / "sink.log"
        self.sink_log.write_text("")
        self.sink_log_read = self.sink_log_lines = 0  # how far delivered() has read the log, and its lines so far
        redis_dir = self.workdir / "redis"
        redis_dir.mkdir(exist_ok=True)
        self.spawn("redis", redis_command(self.redis_port, redis_dir))
        self.spawn("sink", [sys.executable, str(ROOT / "bench" / "smtp_sink.py"), "--port", str(self.smtp_port),
                            "--log", str(self.sink_log), "--delay", str(smtp_delay)])
        self.env = {
            **os.environ,
            "FLASK_CONFIG": "production",
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": f"sqlite:///{self.workdir / 'bench.sqlite'}",
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(self.smtp_port),
            "SIGNUP_RATE_LIMIT": "1000000 per minute",
            "PYTHONPATH": str(ROOT),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.wait_port(self.redis_port)
        self.wait_port(self.smtp_port)

    def spawn(self, name, command, env=None, cwd=ROOT):
        """Start a process in its own session (in `cwd`, this checkout by default), its output in the work dir."""
        log = open(self.workdir / f"{name}-{len(self.processes)}.log", "ab")
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    @staticmethod
    def wait_port(port, timeout=30):
        """Wait until something listens on the port."""
        wait_until(lambda: port_open(port), f"something to listen on {port}", timeout)

    def delivered(self):
        """How many mails the sink accepted so far: the log's new complete lines, added to those counted before.

        wait_delivered() asks every 10 ms; reading the whole log each time would cost this process
        CPU time that grows with every mail of the run, taken from the workers it measures.
        """
        with open(self.sink_log, "rb") as log:
            log.seek(self.sink_log_read)
            new = log.read()
        complete = new.rfind(b"\n") + 1  # a line the sink is still writing is counted next time
        self.sink_log_read += complete
        self.sink_log_lines += new.count(b"\n", 0, complete)
        return self.sink_log_lines

    def accept_times(self):
        """The time each accepted mail was accepted, in order."""
        return [float(line) for line in self.sink_log.read_text().split()]

    def wait_delivered(self, count, timeout=600, poll=0.01):
        """Wait until the sink accepted `count` mails; return the time that happened."""
        deadline = time.monotonic() + timeout
        while self.delivered() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.delivered()} of {count} mails arrived")
            time.sleep(poll)
        return time.time()

    def rq_workers(self, count, burst=False):
        """Start `count` processes of the Procfile's worker line."""
        args = procfile_command("worker")
        command = [str(BIN / "rq"), args[1], *(["--burst"] if burst else []), *args[2:]]
        return [self.spawn("rq-worker", command, self.env) for _ in range(count)]

    def rq_side(self, count):
        """Start the project's workers on `count` processes in the form chosen (Stack.rq_form)."""
        return self.rq_pool(count) if self.rq_form == "pool" else self.rq_workers(count)

    def rq_label(self, count):
        """What rq_side(count) starts, for the printed results."""
        if self.rq_form == "pool":
            return f"rq worker-pool -n {count} (the Procfile line's options that worker-pool takes)"
        return f"the Procfile's worker line x{count} ({count} rq worker processes)"

    def rq_pool(self, count):
        """Start one `rq worker-pool -n count` with the Procfile worker line's options that worker-pool takes."""
        command = [str(BIN / "rq"), "worker-pool", "-n", str(count), *pool_options(procfile_command("worker")[2:])]
        return [self.spawn("rq-pool", command, self.env)]

    def stop(self, processes=None):
        """Stop processes (default: all) with SIGTERM, then SIGKILL, by process group."""
        for process in reversed(processes or self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(processes or self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if processes:
            for process in processes:
                self.processes.remove(process)
