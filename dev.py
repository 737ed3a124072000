#!/usr/bin/env python3
"""Set up and run the whole system, or run the tests, on a machine that only has Python 3.11.5+.

    python3 dev.py          set up, then run web + worker + mail catcher (+ Redis if none fit answers)
    python3 dev.py --workers 2   the same with two worker processes
    python3 dev.py test     set up, then run the whole test suite (extra args go to pytest)
    python3 dev.py test-rq  set up, then run RQ's own test suite against our worker (rq_suite/run.py)
    python3 dev.py setup    only set up: .venv, pinned requirements, database schema

Uses the standard library only, because it runs before the virtualenv exists.
"""

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from urllib.parse import urlsplit

from devtools.supervisor import Supervisor, describe_holder, port_taken, procfile, say

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
REQUIREMENTS = (ROOT / "requirements.txt", ROOT / "requirements-dev.txt")  # app, then dev/test/docs tools
STAMP = VENV / ".requirements.sha256"


def run(*command, **kwargs):
    """Run a command from the project folder; stop with its exit code if it fails."""
    result = subprocess.run([str(part) for part in command], cwd=ROOT, **kwargs)
    if result.returncode != 0:
        sys.exit(result.returncode)


def ensure_venv(venv_dir=VENV, requirement_files=REQUIREMENTS):
    """Create a virtualenv and install the pinned requirements, again only when they change."""
    if sys.version_info < (3, 11, 5):  # pymdown-extensions 13 (the docs) needs 3.11.5
        sys.exit(f"Python 3.11.5 or newer is needed; this is {sys.version.split()[0]}.")
    python = venv_dir / PYTHON.relative_to(VENV)
    if not python.exists():
        say(f"creating the virtualenv in {venv_dir.name}")
        venv.create(venv_dir, with_pip=True)
    wanted = hashlib.sha256(b"".join(path.read_bytes() for path in requirement_files)).hexdigest()
    stamp = venv_dir / STAMP.name
    if not stamp.exists() or stamp.read_text() != wanted:
        say("installing the pinned requirements")
        options = [arg for path in requirement_files for arg in ("-r", path)]
        run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *options)
        stamp.write_text(wanted)
    return python


def project_env():
    """The environment for the app's processes: this virtualenv first on PATH, development by default."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("FLASK_CONFIG", "development")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def setup(env):
    """Virtualenv, requirements, then the database schema through the migrations."""
    ensure_venv()
    (ROOT / "instance").mkdir(exist_ok=True)
    say("creating/upgrading the database schema (flask db upgrade)")
    run(BIN / "flask", "--app", "wsgi", "db", "upgrade", env=env)


def preflight(env):
    """Settings read once, by config.py's own reader (.env under the real environment), and the jobs Redis's state."""
    result = subprocess.run([str(PYTHON), "-m", "devtools.preflight"], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        sys.exit("dev.py could not read the settings (config.py and .env): see the error above.")
    return json.loads(result.stdout)


def resume_suspended_workers(env):
    """Lift `rq suspend` before the worker starts: `rq worker` exits at once while it is set."""
    command = [str(PYTHON), "-m", "devtools.preflight", "--resume-workers"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    report = json.loads(result.stdout) if result.returncode == 0 else {"error": result.stderr.strip().splitlines()[-1:]}
    if report.get("error"):
        say(f"could not check for `rq suspend` ({report['error']}); if the worker stops at once, "
            "run `rq resume -c app.worker` in a second terminal")
    elif report["was_suspended"]:
        say(f"the workers were suspended (`rq suspend`), and `rq worker` does not start then: resumed them, "
            f"so the {report['waiting']} job(s) waiting on the queue go out now (`rq suspend -c app.worker` pauses them again)")


# --8<-- [start:ports]
PORT_ADVICE = {
    "PORT": "the web app; on macOS the AirPlay Receiver takes 5000",
    "MAIL_PORT": "the mail catcher; another catcher (MailHog, Mailpit, an old dev.py) may hold it",
    "REDIS_URL": "the project's own Redis listens on its port",
}


def port_number(setting, value):
    """A port setting as a number, or a clear stop."""
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        sys.exit(f"{setting} must be a port number (1-65535), not {value!r}: check the environment and .env.")
    return port


def refuse_taken_port(setting, port, example):
    """Stop with a clear message when a port dev.py must listen on is busy."""
    if port_taken(port):
        holder = describe_holder(port)
        sys.exit(
            f"\nPort {port} is already in use ({setting}: {PORT_ADVICE[setting]}).\n"
            + (f"{holder}\n" if holder else "")
            + f"Stop the program that holds it, or choose another port, e.g.\n"
            f"    {example}\n"
            f"or put that setting in .env (see .env.example). Nothing was started."
        )
# --8<-- [end:ports]


def is_local(url):
    """True if the URL points at this machine (where dev.py can start a Redis)."""
    return (urlsplit(url).hostname or "localhost") in ("localhost", "127.0.0.1", "::1")


def next_free_port(start):
    """The first port from `start` on that nothing listens on."""
    port = start
    while port_taken(port):
        port += 1
    return port


def remember_redis_url(url):
    """Write the project's own Redis URL into .env, so that every terminal and process uses it."""
    dotenv = ROOT / ".env"
    text = dotenv.read_text() if dotenv.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    text += (
        "# Written by dev.py: the Redis on 6379 is not fit for a queue (AOF off or evicting),\n"
        "# so the project runs its own. Remove these lines to use that Redis again.\n"
        f"REDIS_URL={url}\n"
    )
    dotenv.write_text(text)


# --8<-- [start:choose_redis]
def choose_redis(report, env):
    """Use the Redis at REDIS_URL if it is fit for a queue; else start one of the project's own.

    Returns the port to start a local Redis on, or None to use the one that answers.
    """
    url = report["url"]
    if report.get("error") and report["answers"]:
        sys.exit(f"The Redis at {url} answers but refuses us: {report['error']}. Check the password in REDIS_URL.")
    if report["answers"]:
        problems = []
        if not report["aof"]:
            problems.append("AOF persistence is off: queued mail is lost if it is killed")
        if report["maxmemory_policy"] != "noeviction":
            problems.append(f"maxmemory-policy is {report['maxmemory_policy']}: it may evict jobs")
        if not problems:
            say(f"using the Redis at {url} (AOF on, noeviction)")
            return None
        say(f"the Redis at {url} is not fit for the queue: " + "; ".join(problems))
        if report["set_by_learner"] or not is_local(url):
            say("REDIS_URL was set by you, so it is used anyway: fix its settings (docs/redis.md) or change REDIS_URL")
            return None
        port = next_free_port((urlsplit(url).port or 6379) + 1)
        own_url = f"redis://localhost:{port}/0"
        remember_redis_url(own_url)
        env["REDIS_URL"] = own_url
        say(f"starting the project's own Redis on port {port} instead; REDIS_URL={own_url} written to .env")
        return port
    if not is_local(url):
        sys.exit(f"Nothing answers at {url} ({report.get('error')}). Start that Redis, or change REDIS_URL.")
    port = urlsplit(url).port or 6379
    refuse_taken_port("REDIS_URL", port, "REDIS_URL=redis://localhost:6380/0 python3 dev.py")
    say(f"nothing answers at {url}: starting a local Redis with AOF under instance/redis")
    return port
# --8<-- [end:choose_redis]


def up(workers=1):
    """Set up, check the settings and ports, then run Procfile.dev's processes until Ctrl-C."""
    setup(project_env())
    found = preflight(project_env())
    env = found["env"]  # the real environment, plus the settings config.py read from .env
    for setting, default in (("PORT", 5000), ("MAIL_PORT", 1025)):
        port = port_number(setting, env.get(setting, default))
        env[setting] = str(port)
        refuse_taken_port(setting, port, f"{setting}={port + 1} python3 dev.py")
    redis_port = choose_redis(found["redis"], env)
    if redis_port is not None:
        env["REDIS_PORT"] = str(redis_port)
        redis_url = f"redis://localhost:{redis_port}/0"
    else:
        redis_url = found["redis"]["url"]
    from_procfile = procfile(ROOT / "Procfile.dev")
    processes = [
        *([("redis", from_procfile["redis"])] if redis_port is not None else []),
        ("mail", from_procfile["mail"]),
        *[(f"worker.{n}" if workers > 1 else "worker", from_procfile["worker"]) for n in range(1, workers + 1)],
        ("web", from_procfile["web"]),
    ]
    web = f"http://localhost:{env['PORT']}"
    os.chdir(ROOT)
    supervisor = Supervisor(env)
    supervisor.run(processes, redis_url=redis_url, before_workers=lambda: resume_suspended_workers(env),
                   ready_message=(
                       f"all running (Ctrl-C stops them all)\n\n"
                       f"    web         {web}\n"
                       f"    dev tools   {web}/dev/\n"
                       f"    mail inbox  {web}/dev/mail/\n"
                       f"    dashboard   {web}/rq/\n\n"
                       f"    In a second terminal:  source .venv/bin/activate\n"
                   ), web_port=int(env["PORT"]))


def test(pytest_args):
    """Set up the virtualenv, then run pytest with any extra arguments."""
    ensure_venv()
    env = project_env()
    env["FLASK_CONFIG"] = "testing"
    say("running the test suite")
    os.chdir(ROOT)
    os.execve(str(PYTHON), [str(PYTHON), "-m", "pytest", *pytest_args], env)


def test_rq(args):
    """Set up the virtualenv, then run RQ's own tests, at the pinned version, against rq_threads (rq_suite/run.py)."""
    ensure_venv()
    os.chdir(ROOT)
    os.execve(str(PYTHON), [str(PYTHON), str(ROOT / "rq_suite" / "run.py"), *args], project_env())


def worker_count(options):
    """`--workers N` (default 1): how many worker processes to run."""
    if not options:
        return 1
    if len(options) == 2 and options[0] == "--workers" and options[1].isdigit() and int(options[1]) > 0:
        return int(options[1])
    sys.exit(__doc__)


def main(argv):
    """Dispatch on the first argument."""
    command = argv[0] if argv and not argv[0].startswith("-") else "up"
    if command == "up":
        options = argv[1:] if argv and argv[0] == "up" else argv
        up(workers=worker_count(options))
    elif command == "test":
        test(argv[1:])
    elif command == "test-rq":
        test_rq(argv[1:])
    elif command == "setup":
        setup(project_env())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
