#!/usr/bin/env python3
"""Measure the learner's path: the lines of app/ (and of rq_threads/) that one signup and its mail job execute, by file.

    python3 bench/learner_path.py

Starts a redis-server and an SMTP sink of its own (bench.harness.Stack), builds the web app and
the worker app (app.worker, as `rq worker -c app.worker` does), then records with coverage.py
every line of app/ that runs during one POST /auth/signup and the worker's run of the mail job
it queued (app.worker.MailWorker in burst mode with the Procfile's serializer, in this process,
its threads traced too).
Building the apps and the GET of the form before the POST are not counted; everything after
is, the worker's own loop included, so nothing on the mail's way can be left out. Python files
only: the two templates of the mail are read as well, but coverage.py cannot count them.
The worker's threads (rq_threads/, a package apart from the app) are counted on a line of their own.
"""

import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def environment(stack, workdir):
    """The settings both apps read: testing config on the stack's Redis, sink and a new database."""
    return {
        "FLASK_CONFIG": "testing",
        **{
            key: stack.redis_url
            for key in ("REDIS_URL", "RQ_REDIS_URL", "CACHE_REDIS_URL", "SESSION_REDIS_URL", "RATELIMIT_STORAGE_URI")
        },
        "TEST_DATABASE_URL": f"sqlite:///{workdir / 'learner.sqlite'}",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(stack.smtp_port),
    }


def measure(stack, workdir):
    """Run one signup and its job under coverage.py; return {file: executed line count} for app/ and rq_threads/."""
    import coverage
    from rq.serializers import JSONSerializer

    os.environ.update(environment(stack, workdir))
    from flask_migrate import upgrade

    from app import create_app

    app = create_app("testing")
    with app.app_context():
        upgrade()
    import app.worker as worker_module  # builds the worker's app, as `rq worker -c app.worker` does

    client = app.test_client()
    token = re.search(
        r'name="csrf_token" type="hidden" value="([^"]+)"', client.get("/auth/signup").get_data(as_text=True)
    )[1]
    form = {
        "csrf_token": token,
        "email": "ada@example.com",
        "password": "correct horse battery",
        "password2": "correct horse battery",
    }
    cov = coverage.Coverage(data_file=None, source=[str(ROOT / "app"), str(ROOT / "rq_threads")], branch=False)
    cov.start()
    response = client.post("/auth/signup", data=form)
    worker_module.MailWorker(["mailers"], serializer=JSONSerializer).work(burst=True)  # the Procfile's -S json
    cov.stop()
    if response.status_code != 302:
        raise RuntimeError(f"signup answered {response.status_code}")
    stack.wait_delivered(1, timeout=30)
    data = cov.get_data()
    counts = Counter()
    for filename in data.measured_files():
        lines = data.lines(filename) or []
        if lines and filename.endswith(".py"):  # Jinja's templates show up too, with made-up line numbers
            counts[str(Path(filename).resolve().relative_to(ROOT))] = len(lines)
    return counts


def main():
    """Print the executed lines per file, then the number of files and the total."""
    from bench.harness import Stack

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        stack = Stack(workdir / "stack")
        try:
            counts = measure(stack, workdir)
        finally:
            stack.stop()
    app_counts = {path: count for path, count in counts.items() if path.startswith("app/")}
    worker_counts = {path: count for path, count in counts.items() if path.startswith("rq_threads/")}
    for path, count in sorted(app_counts.items(), key=lambda item: (-item[1], item[0])):
        print(f"{count:4d}  {path}")
    print(f"{len(app_counts)} files, {sum(app_counts.values())} lines of app/ executed")
    print(f"{len(worker_counts)} files, {sum(worker_counts.values())} lines of rq_threads/ executed (the worker's threads)")


if __name__ == "__main__":
    main()
