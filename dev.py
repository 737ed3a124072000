#!/usr/bin/env python3
"""Set up and run the whole system, or run the tests, on a machine that only has Python 3.11+.

    python3 dev.py          set up, then run web + worker + mail catcher (+ Redis if none answers)
    python3 dev.py test     set up, then run the whole test suite (extra args go to pytest)
    python3 dev.py setup    only set up: .venv, pinned requirements, database schema

Uses the standard library only, because it runs before the virtualenv exists.
"""

import hashlib
import os
import socket
import subprocess
import sys
import venv
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
REQUIREMENTS = (ROOT / "requirements.txt", ROOT / "requirements-dev.txt")  # app, then dev/test/docs tools
STAMP = VENV / ".requirements.sha256"


def say(message):
    """Print a progress line that stands out from the tools' own output."""
    print(f"==> {message}", flush=True)


def run(*command, **kwargs):
    """Run a command from the project folder; stop with its exit code if it fails."""
    result = subprocess.run([str(part) for part in command], cwd=ROOT, **kwargs)
    if result.returncode != 0:
        sys.exit(result.returncode)


def ensure_venv(venv_dir=VENV, requirement_files=REQUIREMENTS):
    """Create a virtualenv and install the pinned requirements, again only when they change."""
    if sys.version_info < (3, 11):
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}.")
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
    """The environment for the app's processes: .env's values win over these defaults."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("FLASK_CONFIG", "development")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def redis_answers(url):
    """True if something at the Redis URL answers PING."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "localhost", parts.port or 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")


def setup(env):
    """Virtualenv, requirements, then the database schema through the migrations."""
    ensure_venv()
    (ROOT / "instance").mkdir(exist_ok=True)
    say("creating/upgrading the database schema (flask db upgrade)")
    run(BIN / "flask", "--app", "wsgi", "db", "upgrade", env=env)


def up():
    """Set up, then run every process of Procfile.dev under honcho until Ctrl-C."""
    env = project_env()
    setup(env)
    redis_url = read_setting(env, "REDIS_URL", "redis://localhost:6379/0")
    processes = ["web", "worker", "mail"]
    if redis_answers(redis_url):
        say(f"using the Redis that answers at {redis_url}")
    else:
        say(f"nothing answers at {redis_url}: starting a local Redis with AOF under instance/redis")
        env["REDIS_PORT"] = str(urlsplit(redis_url).port or 6379)
        processes.append("redis")
    say("starting: " + ", ".join(processes) + "  (Ctrl-C stops them all)")
    web = f"http://localhost:{env.setdefault('PORT', '5000')}"
    print(
        f"\n    web         {web}\n"
        f"    dev tools   {web}/dev/\n"
        f"    mail inbox  {web}/dev/mail/\n"
        f"    dashboard   {web}/rq/\n",
        flush=True,
    )
    os.chdir(ROOT)
    os.execve(str(BIN / "honcho"), ["honcho", "-f", "Procfile.dev", "start", *processes], env)


def read_setting(env, name, default):
    """A setting from the environment, else from .env, else the default."""
    if env.get(name):
        return env[name]
    dotenv = ROOT / ".env"
    if dotenv.exists():
        for line in dotenv.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == name and value.strip():
                return value.strip().strip("'\"")
    return default


def test(pytest_args):
    """Set up the virtualenv, then run pytest with any extra arguments."""
    ensure_venv()
    env = project_env()
    env["FLASK_CONFIG"] = "testing"
    say("running the test suite")
    os.chdir(ROOT)
    os.execve(str(PYTHON), [str(PYTHON), "-m", "pytest", *pytest_args], env)


def main(argv):
    """Dispatch on the first argument."""
    command = argv[0] if argv else "up"
    if command == "up":
        up()
    elif command == "test":
        test(argv[1:])
    elif command == "setup":
        setup(project_env())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
