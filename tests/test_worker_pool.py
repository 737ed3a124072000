"""`rq worker-pool` (RQ's own forking pool) with the project's worker: warm shutdown, and no connection shared across the fork.

docs/scaling.md measures it as the lighter way to run several worker processes. Real parts only:
a real redis-server, real `rq worker-pool` processes, the aiosmtpd server of tests/support.py.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rq.worker import Worker

from bench.harness import pool_options
from tests.support import child_pids, mailers_queue, procfile_command, signup, wait_for

pytestmark = pytest.mark.slow

def pool_command(processes):
    """`rq worker-pool -n processes` with the Procfile worker line's options that worker-pool takes (bench.harness)."""
    rq = os.path.join(os.path.dirname(sys.executable), "rq")
    return [rq, "worker-pool", "-n", str(processes), *pool_options(procfile_command("worker")[2:])]


@pytest.fixture()
def start_pool(tmp_path):
    """Start `rq worker-pool -n 2` in its own session; wait until both children listen; stopped by pid after the test."""
    started = []

    def start(env):
        log_path = tmp_path / f"pool-{len(started)}.log"
        log = open(log_path, "ab")
        process = subprocess.Popen(pool_command(2), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append((process, log))
        wait_for(lambda: log_path.read_bytes().count(b"Listening on") >= 2, timeout=30, message="both pool children")
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def sign_up_many(app, count):
    """Sign `count` users up, each from a browser of its own; return their addresses."""
    addresses = [f"user{n}@example.com" for n in range(count)]
    for address in addresses:
        signup(app.test_client(), address)
    return addresses


def sockets_of(pid):
    """The socket inodes a process holds open (Linux /proc)."""
    links = (os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
    return {link for link in links if link.startswith("socket:")}


def test_sigterm_to_the_pool_parent_lets_the_mails_in_flight_finish(app, smtp_server, worker_env, start_pool):
    """One SIGTERM to the parent alone: each child finishes the mails it holds at RCPT, then all exit 0, unregistered."""
    smtp_server.handler.delay = 2  # every send waits at RCPT
    pool = start_pool(worker_env)
    addresses = sign_up_many(app, 4)
    wait_for(lambda: smtp_server.handler.rcpts_seen >= 4, timeout=30, message="the four sends to start")
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(timeout=30) == 0
    assert sorted(m["To"] for m in smtp_server.messages) == addresses  # none cut, none lost
    assert Worker.all(connection=mailers_queue(app).connection) == []


def test_the_pool_parent_holds_no_connection_its_children_could_share(app, smtp_server, worker_env, start_pool, db_url):
    """The parent has no socket and no database file open to hand down; no two children share a socket."""
    pool = start_pool(worker_env)
    addresses = sign_up_many(app, 6)
    smtp_server.wait_for_messages(len(addresses))
    children = child_pids(pool.pid)
    assert len(children) == 2
    database = os.path.realpath(db_url.removeprefix("sqlite:///"))
    parent_files = {os.path.realpath(fd) for fd in Path(f"/proc/{pool.pid}/fd").iterdir()}
    assert database not in parent_files
    parent_sockets, (first, second) = sockets_of(pool.pid), [sockets_of(child) for child in children]
    assert first and second  # each child holds its own Redis connection at least
    assert not first & second and not parent_sockets & (first | second)


def test_the_worker_app_is_frozen_before_a_pool_forks(worker_env):
    """Importing app.worker (what the pool's parent does before it forks) leaves the objects built so far frozen (gc.freeze)."""
    script = "import gc, app.worker, flask, sqlalchemy; print(gc.get_freeze_count() > 1000)"
    result = subprocess.run([sys.executable, "-c", script], env=worker_env, capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.strip().splitlines()[-1:] == ["True"], result.stderr[-2000:]
