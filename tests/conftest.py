"""Fixtures on real parts: a redis-server of our own, an aiosmtpd server, rq worker processes."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
import redis

from app import create_app
from app.web_extensions import db
from tests.support import (
    RecordingSMTP,
    RedisServer,
    WorkerProcess,
    free_port,
    redis_overrides,
    worker_command,
)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SESSION_STARTED = time.time()


# --8<-- [start:servers]
@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free port, AOF on and noeviction, in its own temp dir."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server):
    """The URL of the session's Redis, emptied before each test (it is ours, never the shared one)."""
    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


@pytest.fixture()
def smtp_server(tmp_path):
    """A real SMTP server (aiosmtpd) on a free port that records every message it accepts."""
    server = RecordingSMTP(tmp_path / "maildir", port=free_port())
    server.start()
    yield server
    server.stop()
# --8<-- [end:servers]


@pytest.fixture()
def db_url(tmp_path):
    """A SQLite database file for this test (the PostgreSQL test brings its own)."""
    return f"sqlite:///{tmp_path / 'test.sqlite'}"


@pytest.fixture()
def make_app(smtp_server, db_url):
    """Build testing apps on a given Redis URL, sharing this test's SMTP server and database."""
    from flask_migrate import upgrade

    made = []

    def make(redis_url, **overrides):
        app = create_app(
            "testing",
            {
                **redis_overrides(redis_url),
                "SQLALCHEMY_DATABASE_URI": db_url,
                "MAIL_PORT": smtp_server.port,
                "MAILDIR": str(smtp_server.maildir_path),
                "MAIL_RETRY_INTERVALS": [1, 1, 1],
                **overrides,
            },
        )
        with app.app_context():
            upgrade()
        made.append(app)
        return app

    yield make
    for app in made:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture()
def app(make_app, redis_url):
    """A testing app on the test Redis, SMTP server and database, schema made by the migrations."""
    return make_app(redis_url)


@pytest.fixture()
def dev_app(app):
    """A development app sharing the test app's Redis, database and SMTP catcher."""
    return create_app("development", {key: app.config[key] for key in (
        "REDIS_URL", "RQ_REDIS_URL", "CACHE_REDIS_URL", "SESSION_REDIS_URL", "RATELIMIT_STORAGE_URI",
        "SQLALCHEMY_DATABASE_URI", "MAIL_PORT", "MAILDIR",
    )})


@pytest.fixture()
def client(app):
    """A test client for the app (keeps cookies between requests, like a browser)."""
    return app.test_client()


@pytest.fixture()
def runner(app):
    """A runner for the app's `flask` commands."""
    return app.test_cli_runner()


class AuthActions:
    """flaskr's `auth` fixture: sign up, log in and confirm through the real forms, as a browser does."""

    def __init__(self, client):
        """Act through this test client (its cookies are the browser's)."""
        self.client = client

    def signup(self, email="ada@example.com", password="correct horse battery"):
        """Post the signup form; return the response."""
        from tests.support import signup

        return signup(self.client, email, password)

    def login(self, email="ada@example.com", password="correct horse battery"):
        """Post the login form; return the response."""
        from tests.support import login

        return login(self.client, email, password)

    def confirm(self, message):
        """Follow the confirmation link of a received mail; return the response."""
        from tests.support import confirm_link

        return self.client.get(confirm_link(message).split("localhost", 1)[1])


@pytest.fixture()
def auth(client):
    """Sign up, log in and confirm as the `client` browser (flaskr's conftest has the same fixture)."""
    return AuthActions(client)


def process_env(app):
    """The environment a worker or web subprocess needs to reach the same Redis, SMTP and database."""
    config = app.config
    return {
        **os.environ,
        "FLASK_CONFIG": "testing",
        "REDIS_URL": config["REDIS_URL"],
        "RQ_REDIS_URL": config["RQ_REDIS_URL"],
        "CACHE_REDIS_URL": config["CACHE_REDIS_URL"],
        "SESSION_REDIS_URL": config["SESSION_REDIS_URL"],
        "RATELIMIT_STORAGE_URI": config["RATELIMIT_STORAGE_URI"],
        "TEST_DATABASE_URL": config["SQLALCHEMY_DATABASE_URI"],
        "MAIL_PORT": str(config["MAIL_PORT"]),
        "MAIL_RETRY_INTERVALS": ",".join(str(i) for i in config["MAIL_RETRY_INTERVALS"]),
        "PYTHONPATH": os.getcwd(),
    }


@pytest.fixture()
def worker_env(app):
    """The environment for `rq worker` subprocesses of the `app` fixture."""
    return process_env(app)


@pytest.fixture()
def start_worker(tmp_path):
    """Start long-running `rq worker` processes (the Procfile line); all are stopped after the test."""
    started = []

    def start(env):
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=15)


@pytest.fixture(scope="session")
def fault_report():
    """Rows of the fault table (fault, sent, delivered, lost, duplicates, recovery), written at the end."""
    rows = []
    yield rows
    if rows:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "faults.json").write_text(json.dumps(rows, indent=2))


@pytest.fixture()
def run_worker(worker_env):
    """Run `rq worker --burst` with the Procfile's arguments until the queues are empty."""
    import subprocess

    def run(extra_args=(), timeout=60, env=None):
        command = worker_command(burst=True) + list(extra_args)
        return subprocess.run(
            command, env=env or worker_env, capture_output=True, text=True, timeout=timeout, check=False
        )

    return run


def pytest_report_header(config):
    """Show which Python the suite runs on."""
    return f"python: {sys.executable}"


def pytest_terminal_summary(terminalreporter):
    """Print the figures this run's fault and multi-host tests wrote, so CI's log shows them."""
    for name in ("multihost.json", "faults.json"):
        path = ARTIFACTS / name
        if path.exists() and path.stat().st_mtime >= SESSION_STARTED:
            terminalreporter.write_sep("-", f"figures: test-artifacts/{name}")
            terminalreporter.write_line(path.read_text())
