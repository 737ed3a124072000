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
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
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
    result = subprocess.run([str(PYTHON), "-m", "app.dev.preflight"], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        sys.exit("dev.py could not read the settings (config.py and .env): see the error above.")
    return json.loads(result.stdout)


# --8<-- [start:ports]
PORT_ADVICE = {
    "PORT": "the web app; on macOS the AirPlay Receiver takes 5000",
    "MAIL_PORT": "the mail catcher; another catcher (MailHog, Mailpit, an old dev.py) may hold it",
    "REDIS_URL": "the project's own Redis listens on its port",
}


def port_taken(port):
    """True if something listens on the loopback port, or it cannot be bound."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no obstacle
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


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
        sys.exit(
            f"\nPort {port} is already in use ({setting}: {PORT_ADVICE[setting]}).\n"
            f"Stop the program that holds it, or choose another port, e.g.\n"
            f"    {example}\n"
            f"or put that setting in .env (see .env.example). Nothing was started."
        )
# --8<-- [end:ports]


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
    supervisor.run(processes, redis_url=redis_url,
                   ready_message=(
                       f"all running (Ctrl-C stops them all)\n\n"
                       f"    web         {web}\n"
                       f"    dev tools   {web}/dev/\n"
                       f"    mail inbox  {web}/dev/mail/\n"
                       f"    dashboard   {web}/rq/\n\n"
                       f"    In a second terminal:  source .venv/bin/activate\n"
                   ), web_port=int(env["PORT"]))


def procfile(path):
    """Read a Procfile into {name: command line}."""
    entries = {}
    for line in path.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def expand(command, env):
    """Expand ${NAME:-default} and $NAME in a Procfile line, as a shell would, and split it."""
    def value(match):
        name, default = match.group(1) or match.group(3), match.group(2) or ""
        return env.get(name) or default

    expanded = re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", value, command)
    return shlex.split(expanded)


def signal_group(process, kill):
    """SIGTERM (or SIGKILL) a process and its process group; on Windows, only the process."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        elif process.poll() is None:
            process.kill() if kill else process.terminate()
    except ProcessLookupError:
        pass


# --8<-- [start:supervisor]
class Supervisor:
    """Run Procfile.dev's processes: Redis first (once it answers PING), web and worker after it;
    stop them in the reverse order on Ctrl-C, so the worker never sees its Redis vanish.

    Each process gets a session of its own: a Ctrl-C in the terminal reaches only dev.py,
    which then stops the others one by one instead of all at once.
    """

    # The worker's routine maintenance, logged every few seconds: hidden from the terminal.
    QUIET = (re.compile(r"cleaning (group )?registries", re.I),)
    STOP_TIMEOUT = 40  # a warm shutdown finishes its mails (well under a second against the dev catcher)

    def __init__(self, env):
        """No process yet."""
        self.env = env
        self.running = []  # (name, Popen) in start order
        self.stop_requested = False
        self.width = 8
        self.lock = threading.Lock()

    def start(self, name, command):
        """Start one process with its output prefixed by its name."""
        process = subprocess.Popen(
            expand(command, self.env), env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.running.append((name, process))
        threading.Thread(target=self.relay, args=(name, process), daemon=True).start()
        return process

    def relay(self, name, process):
        """Print a process's output line by line, prefixed with the time and its name."""
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if any(pattern.search(line) for pattern in self.QUIET):
                continue
            with self.lock:
                print(f"{time.strftime('%H:%M:%S')} {name:<{self.width}}| {line}", flush=True)

    def request_stop(self, *_):
        """Signal handler: Ctrl-C, SIGTERM or a closed terminal."""
        self.stop_requested = True

    def wait_until(self, predicate, timeout, waiting_for):
        """Wait for `predicate`, giving up (and stopping everything) if a process dies or Ctrl-C comes."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.stop_requested or self.exited() or time.monotonic() > deadline:
                if not self.stop_requested:
                    say(f"gave up waiting for {waiting_for}")
                return False
            time.sleep(0.1)
        return True

    def exited(self):
        """The first process that has exited, as (name, code), or None."""
        for name, process in self.running:
            if process.poll() is not None:
                return name, process.returncode
        return None

    def run(self, processes, redis_url, ready_message, web_port):
        """Start everything in order, wait for Ctrl-C or a process exiting, then stop in reverse order."""
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):  # SIGHUP: the terminal was closed (not on Windows)
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self.request_stop)
        self.width = max(len(name) for name, _ in processes) + 1
        say("starting: " + ", ".join(name for name, _ in processes))
        ok = True
        for name, command in processes:
            self.start(name, command)
            if name == "redis":
                ok = self.wait_until(lambda: redis_answers(redis_url), 30, "Redis to answer PING")
                if not ok:
                    break
        if ok and self.wait_until(lambda: port_taken(web_port), 60, "the web server"):
            say(ready_message)
        while not self.stop_requested and not self.exited():
            time.sleep(0.2)
        code = 0
        if not self.stop_requested and self.exited():
            name, code = self.exited()
            say(f"{name} exited with code {code}; stopping the others")
        self.stop_all()
        sys.exit(1 if code else 0)

    def stop_all(self):
        """Stop web, worker(s) and mail first (SIGTERM, a warm shutdown for the worker), Redis last."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the orderly stop short
        say("stopping web, worker and mail catcher, then Redis")
        others = [(name, p) for name, p in self.running if name != "redis"]
        redis = [(name, p) for name, p in self.running if name == "redis"]
        for group in (others, redis):
            for _, process in group:
                if process.poll() is None:
                    signal_group(process, kill=False)
            for name, process in group:
                try:
                    process.wait(timeout=self.STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    say(f"{name} did not stop in {self.STOP_TIMEOUT} s: killing it")
                    signal_group(process, kill=True)
                    process.wait()
                signal_group(process, kill=True)  # anything it left behind in its group
        say("stopped")
# --8<-- [end:supervisor]


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
