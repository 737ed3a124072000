"""The README's first command, `python3 dev.py`: the whole system comes up, works, and stops on Ctrl-C."""

import mailbox
import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.support import ROOT, Browser, free_port, learner_env, wait_for

pytestmark = pytest.mark.slow


def port_open(port):
    """True if something listens on the loopback port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_dev_py_runs_web_worker_mail_and_its_own_redis(tmp_path):
    ports = {"PORT": free_port(), "MAIL_PORT": free_port(), "REDIS": free_port()}
    env = learner_env(
        PORT=ports["PORT"],
        MAIL_PORT=ports["MAIL_PORT"],
        MAILDIR=tmp_path / "maildir",
        REDIS_URL=f"redis://127.0.0.1:{ports['REDIS']}/0",  # nothing answers there: dev.py starts Redis
        REDIS_DIR=tmp_path / "redis",
        DATABASE_URL=f"sqlite:///{tmp_path / 'dev.sqlite'}",
    )
    log_path = tmp_path / "dev.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "dev.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: port_open(ports["PORT"]) and b"Listening on mailers" in log_path.read_bytes(), timeout=90, message="dev.py to start everything")
        output = log_path.read_text()
        assert f"nothing answers at redis://127.0.0.1:{ports['REDIS']}/0" in output
        assert "with AOF under" in output and "on 127.0.0.1:%d, AOF in" % ports["REDIS"] in output
        assert f"http://localhost:{ports['PORT']}/dev/mail/" in output

        browser = Browser(f"http://127.0.0.1:{ports['PORT']}")
        status, _ = browser.submit("/auth/signup", {"email": "ada@example.com", "password": "long enough pw", "password2": "long enough pw"})
        assert status == 302
        wait_for(lambda: (tmp_path / "maildir").exists() and len(mailbox.Maildir(tmp_path / "maildir")) == 1, timeout=30, message="the mail in the catcher")
        status, inbox = browser.request("/dev/mail/")
        assert status == 200 and "Confirm your account" in inbox
        assert list((tmp_path / "redis").glob("appendonly*")), "the local Redis keeps an AOF"
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    wait_for(lambda: not any(port_open(port) for port in ports.values()), timeout=15, message="every process to stop")
