"""What waiting for a replica costs a signup: the signup view with RQ_WAIT_REPLICAS 0 and 1.

A primary and a replica on loopback (AOF everysec, our own processes, stopped by pid); the
Flask app in this process, signing up new addresses through its test client (form GET + POST,
the password hashed with the testing config's cheap method). Rounds alternate so both settings
meet the same machine load.

    .venv/bin/python bench/replica_wait.py            # 5 rounds of 200 signups per setting
    .venv/bin/python bench/replica_wait.py --rounds 2 --signups 50
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("FLASK_CONFIG", "testing")

from bench.harness import csrf_token, free_port, redis_command, wait_until  # noqa: E402

ROLE_URLS = ("REDIS_URL", "RQ_REDIS_URL", "CACHE_REDIS_URL", "SESSION_REDIS_URL", "RATELIMIT_STORAGE_URI")


def start_redis(directory, *extra):
    """A redis-server of our own (bench.harness.redis_command) in `directory`; returns (process, port)."""
    import redis

    port = free_port()
    directory.mkdir(parents=True)
    process = subprocess.Popen(redis_command(port, directory, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: pings(redis.Redis(port=port, socket_connect_timeout=0.2)), "redis-server to start")
    return process, port


def pings(client):
    """True if a Redis answers PING."""
    import redis

    try:
        return client.ping()
    except redis.exceptions.ConnectionError:
        return False


def signup(client, address, password="correct horse battery"):
    """The signup form, fetched and posted like a browser (CSRF token included)."""
    token = csrf_token(client.get("/auth/signup").get_data(as_text=True))
    return client.post("/auth/signup", data={"csrf_token": token, "email": address, "password": password, "password2": password})


def make_app(redis_url, database, wait_replicas):
    """A testing app on this Redis and SQLite file, with RQ_WAIT_REPLICAS set."""
    from flask_migrate import upgrade

    from app import create_app

    app = create_app("testing", {
        **{setting: redis_url for setting in ROLE_URLS}, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
        "RQ_WAIT_REPLICAS": wait_replicas, "RQ_WAIT_TIMEOUT_MS": 1000, "SIGNUP_RATE_LIMIT": "100000 per minute",
    })
    with app.app_context():
        upgrade()
    return app


def signup_times(app, count, label):
    """Seconds each of `count` signups took (form GET + POST)."""
    times = []
    for number in range(count):
        client = app.test_client()
        started = time.perf_counter()
        response = signup(client, f"{label}-{number}-{time.monotonic_ns()}@example.com")
        times.append(time.perf_counter() - started)
        assert response.status_code == 302, response.status_code
    return times


def main():
    """Alternate rounds of each setting; print p50 and p95 per setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--signups", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        primary, primary_port = start_redis(Path(workdir, "primary"))
        replica, _ = start_redis(Path(workdir, "replica"), "--replicaof", "127.0.0.1", str(primary_port))
        try:
            wait_until(lambda: primary_has_replica(primary_port), "the replica to sync")
            url = f"redis://127.0.0.1:{primary_port}/0"
            apps = {setting: make_app(url, Path(workdir, f"app-{setting}.sqlite"), setting) for setting in (0, 1)}
            times = {0: [], 1: []}
            for round_number in range(args.rounds):
                for setting in (0, 1) if round_number % 2 == 0 else (1, 0):
                    times[setting] += signup_times(apps[setting], args.signups, f"wait{setting}")
        finally:
            for process in (replica, primary):  # ours, by pid
                process.terminate()
                process.wait(timeout=10)
    for setting, label in ((0, "no WAIT (RQ_WAIT_REPLICAS=0)"), (1, "WAIT 1 (RQ_WAIT_REPLICAS=1)")):
        ordered = sorted(times[setting])
        p95 = ordered[int(len(ordered) * 0.95)]
        print(f"{label:32} signups {len(ordered):5}  p50 {1000 * statistics.median(ordered):6.2f} ms  p95 {1000 * p95:6.2f} ms")


def primary_has_replica(port):
    """True when the primary sees one replica online."""
    import redis

    info = redis.Redis(port=port).info("replication")
    return info.get("connected_slaves") == 1 and info.get("slave0", {}).get("state") == "online"


if __name__ == "__main__":
    main()
