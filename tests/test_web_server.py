"""The Procfile's `web:` line (gunicorn with gunicorn.conf.py) against slow clients and forged X-Forwarded-For."""

import socket
import threading
import time
import urllib.request

import pytest

from app import create_app
from tests.conftest import process_env
from tests.support import Browser, WebProcess, redis_overrides


def this_machines_address():
    """An address of this machine that is not loopback (the one its default route leaves from), or None."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # UDP: no packet is sent, the kernel only picks a route
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def web_env(app, **settings):
    """The development config (its rate limits follow the environment) on the test's Redis and database."""
    env = process_env(app)
    env.update(FLASK_CONFIG="development", DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"], MAILDIR=app.config["MAILDIR"])
    env.update({key: str(value) for key, value in settings.items()})
    return env


@pytest.fixture()
def start_web(tmp_path):
    """Start gunicorn processes with the Procfile's web line; all are stopped after the test."""
    started = []

    def start(env):
        web = WebProcess(env, tmp_path / f"web{len(started)}.log")
        started.append(web)
        return web.start()

    yield start
    for web in started:
        web.stop()


def trickle(port, stop):
    """Slowloris: open a request and send one more header line every second, never the end of the headers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        while not stop.wait(1):
            sock.sendall(b"X-Slow: 1\r\n")


def test_slow_clients_do_not_keep_others_from_being_served(app, start_web):
    web = start_web(web_env(app))  # WebProcess runs it with one worker process
    stop = threading.Event()
    slow = [threading.Thread(target=trickle, args=(web.port, stop), daemon=True) for _ in range(8)]
    for thread in slow:
        thread.start()
    try:
        time.sleep(2)  # every slow client has sent its first lines
        # A sync worker is held by the first slow client for as long as it trickles: this times out.
        with urllib.request.urlopen(web.base_url + "/auth/login", timeout=10) as response:
            assert response.status == 200
    finally:
        stop.set()
        for thread in slow:
            thread.join(5)


def signup_statuses(base_url, count, forwarded_for):
    """Sign up `count` new addresses through base_url, each request with X-Forwarded-For forwarded_for(n)."""
    statuses = []
    for n in range(count):
        browser = Browser(base_url)
        browser.opener.addheaders = [("X-Forwarded-For", forwarded_for(n))]
        fields = {"email": f"user{n}-{base_url[-5:]}@example.com", "password": "long enough pw", "password2": "long enough pw"}
        statuses.append(browser.submit("/auth/signup", fields)[0])
    return statuses


def test_x_forwarded_for_is_believed_only_from_the_proxys_address(app, start_web):
    address = this_machines_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    # The attack: PROXY_COUNT=1, gunicorn also reachable on a public address (WEB_HOST), a new XFF each time.
    web = start_web(web_env(app, PROXY_COUNT=1, WEB_HOST="0.0.0.0", SIGNUP_RATE_LIMIT="3 per minute"))
    direct = signup_statuses(f"http://{address}:{web.port}", 5, lambda n: f"198.51.100.{n}")
    assert direct == [302, 302, 302, 429, 429]  # counted by the real peer address, XFF or not
    # From 127.0.0.1, the proxy's address (FORWARDED_ALLOW_IPS): each client is counted on its own.
    proxied = signup_statuses(f"http://127.0.0.1:{web.port}", 5, lambda n: f"203.0.113.{n}")
    assert proxied == [302] * 5


def test_behind_a_proxy_gunicorn_listens_on_loopback_only(app, start_web):
    address = this_machines_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    web = start_web(web_env(app, PROXY_COUNT=1))
    with urllib.request.urlopen(web.base_url + "/auth/login", timeout=10) as response:
        assert response.status == 200  # the proxy, on this machine, reaches it
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, web.port), timeout=5).close()


def production(monkeypatch, redis_url, **settings):
    """Create a production app with these settings (the start-up warnings are logged meanwhile)."""
    monkeypatch.setattr("config.ProductionConfig.SECRET_KEY", "x" * 40)
    monkeypatch.setattr("config.ProductionConfig.SITE_URL", "https://mailer.example.com")
    return create_app("production", {**redis_overrides(redis_url), "SQLALCHEMY_DATABASE_URI": "sqlite://", **settings})


def test_production_warns_at_start_up_without_a_proxy_or_trusting_every_peer(redis_url, monkeypatch, caplog):
    production(monkeypatch, redis_url, PROXY_COUNT=0)
    assert "PROXY_COUNT is 0: gunicorn faces clients itself" in caplog.text
    caplog.clear()
    production(monkeypatch, redis_url, PROXY_COUNT=1, FORWARDED_ALLOW_IPS=["*"])
    assert "FORWARDED_ALLOW_IPS is *" in caplog.text
    caplog.clear()
    production(monkeypatch, redis_url, PROXY_COUNT=1)
    assert "PROXY_COUNT" not in caplog.text and "FORWARDED_ALLOW_IPS" not in caplog.text
