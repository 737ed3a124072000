"""Many hosts on a simulated network: 2 web, 2 workers, a Redis primary and replica, 3 Sentinels, SMTP.

The scenario: a stream of signups through both web hosts; the Redis primary is killed (-9)
mid-stream and Sentinel promotes the replica; then one worker host is cut off the network
mid-send and plugged back in. Every committed user must get exactly one confirmation mail, a
signed-in user stays signed in on both web hosts throughout, and no request answers a 500.
The figures (signups, mails, duplicates, lost, failover and recovery time) are printed and
written to test-artifacts/multihost.json.
"""

import email
import http.client
import json
import os
import re
import secrets
import signal
import sqlite3
import sys
import threading
import time
from email import policy
from mailbox import Maildir
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import redis

from tests.netns import Network, inside, namespaces_available
from tests.sentinel_support import primary_address, ready, sentinel_config, sentinel_url
from tests.support import ROOT, csrf_token, learner_env, procfile_command, redis_server_binary, wait_for, worker_command

WHY_NOT = namespaces_available()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"multi-host test needs network namespaces: {WHY_NOT}")

ARTIFACTS = ROOT / "test-artifacts"
WEB_PORT, REDIS_PORT, SENTINEL_PORT, SMTP_PORT = 5000, 6379, 26379, 2525
SIGNUPS_PER_SECOND = 8  # under the testing config's 1000 per minute per client address
SMTP_DELAY = 0.1  # seconds the SMTP server takes per recipient: a relay, so a worker is mostly mid-send
CUT_SECONDS = 5  # a worker host off the network for less than MAIL_TIMEOUT (10 s): no send times out
DOWN_AFTER_MS = 1000  # Sentinel's down-after-milliseconds

# Host name -> last byte of its address on 10.77.0.0/24.
HOSTS = {"client": 2, "web1": 11, "web2": 12, "worker1": 21, "worker2": 22, "redis1": 31, "redis2": 32,
         "sentinel1": 41, "sentinel2": 42, "sentinel3": 43, "smtp": 51}


@pytest.fixture()
def network():
    """The hub and every host; torn down (processes killed by pid, namespaces deleted) whatever happens."""
    net = Network()
    try:
        for name, number in HOSTS.items():
            net.add_host(name, number)
        yield net
    finally:
        net.tear_down()


def start_redis(network, tmp_path):
    """The primary (AOF) on redis1, its replica on redis2, three Sentinels; return the processes by host."""
    started = {}
    primary = network.hosts["redis1"]
    for name in ("redis1", "redis2"):
        host, directory = network.hosts[name], tmp_path / name
        directory.mkdir()
        command = [redis_server_binary(), "--port", str(REDIS_PORT), "--bind", host.address, "--protected-mode", "no",
                   "--dir", str(directory), "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                   "--maxmemory-policy", "noeviction", "--logfile", str(directory / "redis.log")]
        if name == "redis2":
            command += ["--replicaof", primary.address, str(REDIS_PORT)]
        started[name] = host.popen(command, log=directory / "stdout.log")
    for name in ("sentinel1", "sentinel2", "sentinel3"):
        host, directory = network.hosts[name], tmp_path / name
        directory.mkdir()
        config = directory / "sentinel.conf"
        config.write_text(sentinel_config(SENTINEL_PORT, host.address, REDIS_PORT, DOWN_AFTER_MS, 2, directory,
                                          primary_host=primary.address) + "protected-mode no\n")
        started[name] = host.popen([redis_server_binary(), str(config), "--sentinel"], log=directory / "stdout.log")
    return started


def app_env(network, tmp_path):
    """The environment of every web and worker host: all Redis roles behind the Sentinels."""
    sentinels = [(network.hosts[name].address, SENTINEL_PORT) for name in ("sentinel1", "sentinel2", "sentinel3")]
    return learner_env(
        FLASK_CONFIG="testing",
        REDIS_URL=sentinel_url(sentinels),
        TEST_DATABASE_URL=f"sqlite:///{tmp_path / 'app.sqlite'}",
        MAIL_SERVER=network.hosts["smtp"].address,
        MAIL_PORT=SMTP_PORT,
        MAIL_RETRY_INTERVALS="1,2,5",
        PORT=WEB_PORT,
        WEB_CONCURRENCY=2,
        PYTHONPATH=ROOT,
    )


def web_command():
    """The Procfile's web line with this venv's gunicorn, on WEB_PORT with 2 workers."""
    args = procfile_command("web")
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    return [gunicorn, *[arg.replace("${PORT:-5000}", str(WEB_PORT)).replace("${WEB_CONCURRENCY:-2}", "2") for arg in args[1:]]]


class Web:
    """HTTP to the web hosts, from inside the client host, with a cookie carried by hand.

    A load balancer would send one browser to any web host; cookies here are not tied to one
    host's address, so the same session cookie goes to web1 and web2.
    """

    def __init__(self, hosts):
        """Round robin over these hosts."""
        self.hosts = hosts
        self.turn = 0

    def next_host(self):
        """The next web host, in turn."""
        self.turn += 1
        return self.hosts[self.turn % len(self.hosts)]

    def request(self, method, path, cookie=None, fields=None):
        """One request to the next host; return (status, headers, body)."""
        connection = http.client.HTTPConnection(self.next_host().address, WEB_PORT, timeout=60)
        headers = {"Cookie": cookie} if cookie else {}
        body = None
        if fields is not None:
            body = urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.headers, response.read().decode(errors="replace")
        except OSError as exc:
            return f"no answer: {exc}", {}, ""
        finally:
            connection.close()

    def submit(self, path, fields, cookie=None):
        """Load a form on one host and post it to the other; return (status, cookie, body)."""
        status, headers, page = self.request("GET", path, cookie)
        if status != 200:
            return status, cookie, page
        cookie = session_cookie(headers) or cookie
        status, headers, body = self.request("POST", path, cookie, {"csrf_token": csrf_token(page), **fields})
        return status, session_cookie(headers) or cookie, body


def session_cookie(headers):
    """The `session=...` pair from a response's Set-Cookie, if any."""
    for value in headers.get_all("Set-Cookie") or []:
        if value.startswith("session="):
            return value.split(";", 1)[0]
    return None


def mails(maildir):
    """Every accepted mail as (To, Message-ID, confirmation path)."""
    found = []
    if not Path(maildir, "new").exists():
        return found
    box = Maildir(maildir, create=False)
    for key in box.keys():
        message = email.message_from_bytes(box.get_bytes(key), policy=policy.default)
        text = message.get_body(preferencelist=("plain",)).get_content()
        link = re.search(r"https?://\S+/auth/confirm/\S+", text)
        found.append((message["To"], message["Message-ID"], urlsplit(link.group(0)).path if link else None))
    return found


def committed_users(database):
    """The addresses of every user row in the shared SQLite database."""
    with sqlite3.connect(database) as connection:
        return {row[0] for row in connection.execute("SELECT email FROM users")}


def drained(jobs):
    """True when no mail job is waiting, running or scheduled for a retry."""
    try:
        return (jobs.llen("rq:queue:mailers") == 0 and jobs.llen("rq:queue:mailers:intermediate") == 0
                and jobs.zcard("rq:wip:mailers") == 0 and jobs.zcard("rq:scheduled:mailers") == 0)
    except redis.exceptions.RedisError:
        return False


def test_signups_survive_a_redis_failover_and_a_worker_cut_off(network, tmp_path):
    hosts = network.hosts
    processes = start_redis(network, tmp_path)
    env = app_env(network, tmp_path)
    maildir = tmp_path / "maildir"
    processes["smtp"] = hosts["smtp"].popen(
        [sys.executable, "-c", f"from tests.netns import serve_smtp; serve_smtp({hosts['smtp'].address!r}, "
                               f"{SMTP_PORT}, {str(maildir)!r}, {SMTP_DELAY})"],
        cwd=ROOT, env=env, log=tmp_path / "smtp.log")

    with inside(hosts["client"].namespace):
        sentinels = [redis.Redis(hosts[name].address, SENTINEL_PORT, socket_timeout=1, socket_connect_timeout=1)
                     for name in ("sentinel1", "sentinel2", "sentinel3")]
        wait_for(lambda: ready(sentinels), timeout=60, message="Sentinels to see each other and the replica")
        migrate = hosts["web1"].popen([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
                                      cwd=ROOT, env=env, log=tmp_path / "migrate.log")
        assert migrate.wait(timeout=120) == 0, (tmp_path / "migrate.log").read_text()
        for name in ("web1", "web2"):
            processes[name] = hosts[name].popen(web_command(), cwd=ROOT, env=env, log=tmp_path / f"{name}.log")
        for name in ("worker1", "worker2"):
            processes[name] = hosts[name].popen(worker_command(), cwd=ROOT, env=env, log=tmp_path / f"{name}.log")
        web = Web([hosts["web1"], hosts["web2"]])
        for name in ("web1", "web2"):
            alone = Web([hosts[name]])
            wait_for(lambda alone=alone: alone.request("GET", "/")[0] == 200, timeout=60, interval=0.2, message=f"gunicorn on {name}")
        for name in ("worker1", "worker2"):
            wait_for(lambda name=name: b"Listening on" in (tmp_path / f"{name}.log").read_bytes(), timeout=60, message=f"{name}")

        # A user who signs in before everything and checks, all along, that they still are.
        status, cookie, _ = web.submit("/auth/signup", {"email": "watcher@example.com", "password": "correct horse battery",
                                                         "password2": "correct horse battery"})
        assert status == 302, status
        wait_for(lambda: mails(maildir), timeout=60, message="the watcher's mail")
        status, cookie, _ = web.submit("/auth/login", {"email": "watcher@example.com", "password": "correct horse battery"})
        assert status == 302, status
        web.request("GET", mails(maildir)[0][2], cookie)  # confirm the account
        watch = Watcher(web, cookie)
        stream = SignupStream(Web([hosts["web1"], hosts["web2"]]))
        watch.start()
        stream.start()
        try:
            figures, users = run_scenario(hosts, processes, sentinels, stream, watch, maildir, tmp_path)
        finally:
            stream.stop()
            watch.stop()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "multihost.json").write_text(json.dumps(figures, indent=2))
    print("\nmulti-host figures:\n" + "\n".join(f"  {key:28} {value}" for key, value in figures.items()))

    assert figures["worker cut mid-send"], "worker1 ran no job after the failover: it did not follow it"
    assert figures["answered otherwise"] == {}, stream.unexpected()
    assert figures["lost"] == 0 and figures["duplicates"] == 0, figures
    assert figures["mails to no committed user"] == 0, figures
    # Every address that answered 302 is a committed user; one that answered 503 left nothing behind.
    assert {e for e, s, *_ in stream.results if s == 302} == users
    assert watch.signed_out() == 0, watch.results
    assert {s for s, _ in watch.results} <= {200}, watch.results


def run_scenario(hosts, processes, sentinels, stream, watch, maildir, tmp_path):
    """Kill the primary, then cut a worker off, while the stream runs; once mail is drained, return (figures, users)."""
    # 1. kill -9 the primary mid-stream; Sentinel promotes the replica.
    wait_for(lambda: stream.count() >= 3 * SIGNUPS_PER_SECOND, timeout=60, message="the stream to get going")
    killed_at = time.monotonic()
    hosts["redis1"].stop(processes["redis1"], signal.SIGKILL)
    wait_for(lambda: all(primary_address(s) == (hosts["redis2"].address, REDIS_PORT) for s in sentinels),
             timeout=60, interval=0.02, message="Sentinel to promote the replica")
    failover_time = time.monotonic() - killed_at
    wait_for(lambda: stream.first_success_after(killed_at), timeout=60, message="a signup to succeed again")
    recovery_time = stream.first_success_after(killed_at) - killed_at

    # 2. Cut worker1 off the network while it is sending, then plug it back in.
    jobs = redis.Redis(hosts["redis2"].address, REDIS_PORT, socket_timeout=5)
    busy = busy_worker_pid(jobs, processes["worker1"].pid)
    cut_mid_send = wait_or_false(busy, timeout=15)
    hosts["worker1"].disconnect()
    time.sleep(CUT_SECONDS)  # the outage itself
    hosts["worker1"].reconnect()
    reconnected_at = time.monotonic()
    wait_for(lambda: stream.count() >= stream.count_at(reconnected_at) + 2 * SIGNUPS_PER_SECOND, timeout=60,
             message="signups after the cut")
    stream.stop()
    watch.stop()

    # 3. Every job done (retries included), then count.
    wait_for(lambda: drained(jobs), timeout=120, interval=0.2, message="the mail queue to drain")
    failed_jobs = jobs.zcard("rq:failed:mailers")
    users = committed_users(tmp_path / "app.sqlite") - {"watcher@example.com"}
    sent = [(to, message_id) for to, message_id, _ in mails(maildir) if to != "watcher@example.com"]
    per_address = {}
    for to, _ in sent:
        per_address[to] = per_address.get(to, 0) + 1

    answered = stream.statuses()
    figures = {
        "signups": len(stream.results),
        "answered 302": answered.get(302, 0),
        "answered 503": answered.get(503, 0),
        "answered otherwise": {str(k): v for k, v in answered.items() if k not in (302, 503)},
        "committed users": len(users),
        "mails": len(sent),
        "duplicates": sum(count - 1 for count in per_address.values() if count > 1),
        "lost": len(users - per_address.keys()),
        "mails to no committed user": len(per_address.keys() - users),
        "failover time s": round(failover_time, 2),
        "recovery time s": round(recovery_time, 2),
        "worker cut mid-send": cut_mid_send,
        "worker cut s": CUT_SECONDS,
        "signup p50/p95 ms, replica up": (stream.percentile_ms(50, until=killed_at), stream.percentile_ms(95, until=killed_at)),
        "signup p50/p95 ms, no replica": (stream.percentile_ms(50, since=killed_at + recovery_time),
                                          stream.percentile_ms(95, since=killed_at + recovery_time)),
        "failed jobs": failed_jobs,
        "watcher checks": len(watch.results),
        "watcher signed out": watch.signed_out(),
    }
    return figures, users


def busy_worker_pid(jobs, pid):
    """A predicate: True while the rq worker with this pid is running a job."""
    def busy():
        try:
            for key in jobs.smembers("rq:workers"):
                fields = jobs.hgetall(key)
                if fields.get(b"pid") == str(pid).encode() and fields.get(b"state") == b"busy":
                    return True
        except redis.exceptions.RedisError:
            return False
        return False
    return busy


def wait_or_false(predicate, timeout):
    """Poll a predicate for up to `timeout` seconds; return whether it came true."""
    try:
        wait_for(predicate, timeout=timeout, interval=0.01)
        return True
    except AssertionError:
        return False


class SignupStream(threading.Thread):
    """Anonymous visitors signing up, one after another, at most SIGNUPS_PER_SECOND."""

    def __init__(self, web):
        """Nothing sent yet."""
        super().__init__(daemon=True)
        self.web = web
        self.results = []  # (email, status, started, finished)
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        """Sign up new addresses until stopped."""
        number = 0
        while not self.stopping.is_set():
            number += 1
            address = f"user{number}-{secrets.token_hex(3)}@example.com"
            started = time.monotonic()
            status, _, body = self.web.submit("/auth/signup", {"email": address, "password": "correct horse battery",
                                                               "password2": "correct horse battery"})
            finished = time.monotonic()
            with self.lock:
                self.results.append((address, status, started, finished, body[:300] if status not in (302, 503) else ""))
            time.sleep(max(0.0, started + 1 / SIGNUPS_PER_SECOND - time.monotonic()))

    def stop(self):
        """Finish the signup in flight and stop."""
        self.stopping.set()
        self.join(timeout=120)

    def count(self):
        """Signups answered so far."""
        return len(self.results)

    def count_at(self, moment):
        """Signups answered by `moment` (time.monotonic())."""
        return sum(1 for *_, finished, _ in self.results if finished <= moment)

    def first_success_after(self, moment):
        """When the first signup started after `moment` answered 302, or None."""
        with self.lock:
            done = [finished for _, status, started, finished, _ in self.results if started >= moment and status == 302]
        return min(done) if done else None

    def statuses(self):
        """Status -> how many signups answered it."""
        counted = {}
        for _, status, *_ in self.results:
            counted[status] = counted.get(status, 0) + 1
        return counted

    def unexpected(self):
        """The signups that answered neither 302 nor 503, with the start of their page."""
        return [(address, status, body) for address, status, _, _, body in self.results if status not in (302, 503)]

    def percentile_ms(self, percent, until=float("inf"), since=0.0):
        """A percentile of the time (GET form + POST) of the successful signups started in [since, until), in ms."""
        times = sorted(finished - started for _, status, started, finished, _ in self.results
                       if status == 302 and since <= started < until)
        if not times:
            return None
        return round(1000 * times[min(len(times) - 1, len(times) * percent // 100)])


class Watcher(threading.Thread):
    """A signed-in user loading the home page on alternate web hosts, noting whether still signed in."""

    def __init__(self, web, cookie):
        """Nothing loaded yet."""
        super().__init__(daemon=True)
        self.web = web
        self.cookie = cookie
        self.results = []  # (status, signed in?)
        self.stopping = threading.Event()

    def run(self):
        """Load / every 0.2 s until stopped."""
        while not self.stopping.wait(0.2):
            status, _, page = self.web.request("GET", "/", self.cookie)
            self.results.append((status, 'id="signed-in-as">watcher@example.com<' in page))

    def stop(self):
        """Stop after the page in flight."""
        self.stopping.set()
        self.join(timeout=120)

    def signed_out(self):
        """How many pages answered but showed the user signed out."""
        return sum(1 for status, signed_in in self.results if status == 200 and not signed_in)
