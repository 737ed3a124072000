"""The README's first command, `python3 dev.py`: the whole system comes up, works, and stops on Ctrl-C.

Also what it says before it starts anything: a busy port, and a Redis that would lose the queue.
"""

import email
import email.policy
import mailbox
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, Browser, RedisServer, free_port, learner_env, wait_for

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
        wait_for(lambda: b"==> all running" in log_path.read_bytes() and b"Listening on mailers" in log_path.read_bytes(), timeout=90, message="dev.py to start everything")
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
        stop_from = len(log_path.read_bytes())
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    wait_for(lambda: not any(port_open(port) for port in ports.values()), timeout=15, message="every process to stop")
    stopping = log_path.read_text()[stop_from:]
    assert "Traceback" not in stopping and process.returncode == 0, stopping
    # Web and worker first, Redis last: the worker never meets a vanished Redis.
    assert stopping.index("warm shut down") < stopping.index("Received SIGTERM"), stopping


def run_dev_py_until_it_exits(env, timeout=90):
    """Run `python3 dev.py` to its end; return (exit code, output)."""
    result = subprocess.run([sys.executable, "dev.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("setting", ["PORT", "MAIL_PORT"])
def test_a_busy_port_is_named_with_the_setting_that_changes_it(setting, tmp_path):
    redis_server = RedisServer(tmp_path).start()  # a fit Redis answers, so dev.py gets to the ports
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    ports = {"PORT": free_port(), "MAIL_PORT": free_port(), setting: busy}
    env = learner_env(**{name: str(port) for name, port in ports.items()}, REDIS_URL=redis_server.url,
                      DATABASE_URL=f"sqlite:///{tmp_path / 'dev.sqlite'}", MAILDIR=tmp_path / "maildir")
    try:
        code, output = run_dev_py_until_it_exits(env)
    finally:
        holder.close()
        redis_server.stop()
    assert code == 1, output
    assert f"Port {busy} is already in use ({setting}:" in output
    assert f"{setting}={busy + 1} python3 dev.py" in output and "Nothing was started." in output
    assert "Traceback" not in output


def test_unfit_redis_is_replaced_by_the_projects_own_and_the_environment_beats_dotenv(tmp_path):
    from tests.test_docs import Laptop, fresh_clone, learner_base_env

    laptop = Laptop(f"dev-{os.getpid()}")
    clone = fresh_clone(tmp_path / "clone")
    # What a default install gives: a Redis on 6379 with persistence off.
    (tmp_path / "unfit").mkdir()
    unfit = subprocess.Popen(laptop.command(*RedisServer(tmp_path / "unfit", port=6379, persistence=False).command()))
    (clone / ".env").write_text("PORT=5002\nMAIL_DEFAULT_SENDER=Flask Mailer <noreply@example.com>\n")
    env = {**learner_base_env(), "PORT": "5003"}  # the real environment wins over .env
    log_path = tmp_path / "dev.log"
    process = None
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(laptop.command("python3", "dev.py"), cwd=clone, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: b"==> all running" in log_path.read_bytes() or process.poll() is not None,
                 timeout=120, interval=0.2, message="dev.py to start")
        output = log_path.read_text()
        assert "the Redis at redis://localhost:6379/0 is not fit for the queue: AOF persistence is off" in output, output
        assert "starting the project's own Redis on port 6380" in output
        assert "REDIS_URL=redis://localhost:6380/0" in (clone / ".env").read_text()
        assert "Running on http://127.0.0.1:5003" in output

        # The second terminal reads the same .env: its mail goes through the project's Redis.
        flask = Path(sys.prefix) / "bin" / "flask"
        sent = subprocess.run(laptop.command(flask, "send-test-mail", "ada@example.com"), cwd=clone,
                              env=learner_base_env(), capture_output=True, text=True, timeout=60)
        assert "queued job" in sent.stdout, sent.stdout + sent.stderr
        maildir = clone / "instance" / "maildir"
        wait_for(lambda: maildir.exists() and len(mailbox.Maildir(maildir)) == 1, timeout=30, message="the mail")
        (raw,) = [mailbox.Maildir(maildir).get_bytes(key) for key in mailbox.Maildir(maildir).keys()]
        sender = email.message_from_bytes(raw, policy=email.policy.default)["From"]
        assert str(sender) == "Flask Mailer <noreply@example.com>"  # spaces kept: one parser, environs
        keys_on_unfit = subprocess.run(laptop.command(sys.executable, "-c", "import redis; print(redis.Redis(port=6379).dbsize())"),
                                       capture_output=True, text=True, timeout=30)
        assert keys_on_unfit.stdout.strip() == "0"
    finally:
        if process and process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=60)
        laptop.remove()
        unfit.wait(timeout=10)


def test_a_port_setting_that_is_not_a_number_is_refused_clearly(tmp_path):
    redis_server = RedisServer(tmp_path).start()
    env = learner_env(PORT="five thousand", MAIL_PORT=free_port(), REDIS_URL=redis_server.url,
                      DATABASE_URL=f"sqlite:///{tmp_path / 'dev.sqlite'}", MAILDIR=tmp_path / "maildir")
    try:
        code, output = run_dev_py_until_it_exits(env)
    finally:
        redis_server.stop()
    assert code == 1 and "PORT must be a port number (1-65535), not 'five thousand'" in output
    assert "Traceback" not in output
