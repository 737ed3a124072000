"""The README's first command, `python3 dev.py`: the whole system comes up, works, and stops on Ctrl-C.

Also what it says before it starts anything: a busy port (and whose, when it is an earlier
dev.py's), and a Redis that would lose the queue; that a closed terminal or a closed output pipe
stops everything as Ctrl-C does; and that workers left suspended by `rq suspend` are resumed.
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


# --- stopping when the terminal goes away, and a port held by an earlier dev.py -----------------

def dev_py_env(tmp_path, ports):
    """A learner's environment for a dev.py on free ports that starts its own Redis in tmp_path."""
    return learner_env(
        PORT=ports["PORT"], MAIL_PORT=ports["MAIL_PORT"], MAILDIR=tmp_path / "maildir",
        REDIS_URL=f"redis://127.0.0.1:{ports['REDIS']}/0", REDIS_DIR=tmp_path / "redis",
        DATABASE_URL=f"sqlite:///{tmp_path / 'dev.sqlite'}",
    )


def descendants(pid):
    """Every process started under `pid`, from Linux's /proc (children's children too)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = [int(child) for child in task.read_text().split()]
            except OSError:
                continue
            found.extend(children)
            todo.extend(children)
    return found


def alive(pid):
    """True if the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Output:
    """Collect what a process writes to one file descriptor (a pipe or a pty), read without a thread."""

    def __init__(self, fd):
        """Read from `fd` (ours to close)."""
        self.fd, self.text = fd, ""

    def pump(self):
        """Take whatever is there to read now."""
        import select

        while self.fd is not None and select.select([self.fd], [], [], 0)[0]:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # a pty whose other side closed: EIO
                chunk = b""
            if not chunk:
                break
            self.text += chunk.decode(errors="replace")
        return self.text

    def close(self):
        """The terminal goes away: nobody reads or holds this end any more."""
        os.close(self.fd)
        self.fd = None


def start_dev_py(env, stdout_fd):
    """Start `python3 dev.py` writing to `stdout_fd`, in a session of its own (as a terminal's shell would)."""
    process = subprocess.Popen([sys.executable, "dev.py"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                               stdout=stdout_fd, stderr=stdout_fd, start_new_session=True)
    os.close(stdout_fd)
    return process


def stop_leftovers(process, children):
    """Kill, by pid, whatever of this dev.py still runs (only when the test failed to stop it)."""
    if process.poll() is None:
        children = {*children, *descendants(process.pid)}
    for pid in [process.pid, *children]:
        if alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=10)


def assert_everything_stops(process, children, ports):
    """dev.py exits, each process it started is gone, and every port is free again."""
    process.wait(timeout=90)
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=30, message="every process dev.py started to stop")
    wait_for(lambda: not any(port_open(port) for port in ports.values()), timeout=15, message="every port to be free")


def test_a_closed_terminal_stops_everything_and_a_second_dev_py_names_the_first(tmp_path):
    import pty

    ports = {"PORT": free_port(), "MAIL_PORT": free_port(), "REDIS": free_port()}
    env = dev_py_env(tmp_path, ports)
    terminal, side = pty.openpty()  # a real terminal: once it closes, writing to it fails with EIO
    output, children = Output(terminal), []
    process = start_dev_py(env, side)
    try:
        wait_for(lambda: "==> all running" in output.pump(), timeout=90, interval=0.2, message="dev.py to start")
        children = descendants(process.pid)

        # A second dev.py, with the first still running: the busy port is named with the first's pid.
        code, second = run_dev_py_until_it_exits(env)
        assert code == 1 and f"Port {ports['PORT']} is already in use" in second, second
        assert f"run by a `python3 dev.py` that still runs (pid {process.pid})" in second, second
        assert f"`kill {process.pid}`" in second

        output.close()  # the terminal window closes: SIGHUP, and the terminal is gone
        os.kill(process.pid, signal.SIGHUP)
        assert_everything_stops(process, children, ports)
    finally:
        stop_leftovers(process, children)
    assert process.returncode == 0


def test_a_closed_output_pipe_and_ctrl_c_stop_everything(tmp_path):
    ports = {"PORT": free_port(), "MAIL_PORT": free_port(), "REDIS": free_port()}
    reader, writer = os.pipe()  # `python3 dev.py | tee log`
    output, children = Output(reader), []
    process = start_dev_py(dev_py_env(tmp_path, ports), writer)
    try:
        wait_for(lambda: "==> all running" in output.pump(), timeout=90, interval=0.2, message="dev.py to start")
        children = descendants(process.pid)
        output.close()  # Ctrl-C stops tee too: nobody reads dev.py's output any more
        os.killpg(process.pid, signal.SIGINT)
        assert_everything_stops(process, children, ports)
    finally:
        stop_leftovers(process, children)
    assert process.returncode == 0


def test_a_suspended_worker_is_resumed_and_the_waiting_mail_goes_out(tmp_path):
    import redis
    from rq.suspension import suspend

    ports = {"PORT": free_port(), "MAIL_PORT": free_port()}
    redis_server = RedisServer(tmp_path).start()  # the queue outlives dev.py here
    env = learner_env(PORT=ports["PORT"], MAIL_PORT=ports["MAIL_PORT"], MAILDIR=tmp_path / "maildir",
                      REDIS_URL=redis_server.url, DATABASE_URL=f"sqlite:///{tmp_path / 'dev.sqlite'}")
    reader, writer = os.pipe()
    output, children, process = Output(reader), [], None
    try:
        # What docs/mail.md has the learner do after a first run: suspend the workers, then queue a mail.
        flask = Path(sys.executable).parent / "flask"
        subprocess.run([flask, "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, check=True, timeout=60)
        suspend(redis.Redis.from_url(redis_server.url))
        sent = subprocess.run([flask, "--app", "wsgi", "send-test-mail", "grace@example.com"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert "(1 waiting)" in sent.stdout, sent.stdout + sent.stderr
        process = start_dev_py(env, writer)
        wait_for(lambda: "==> all running" in output.pump() or process.poll() is not None, timeout=90, interval=0.2,
                 message="dev.py to start")
        children = descendants(process.pid)
        assert process.poll() is None, output.pump()
        assert "the workers were suspended (`rq suspend`)" in output.text and "1 job(s) waiting" in output.text
        wait_for(lambda: (tmp_path / "maildir").exists() and len(mailbox.Maildir(tmp_path / "maildir")) == 1,
                 timeout=30, message="the waiting mail in the catcher")
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=90)
    finally:
        if process is not None:
            stop_leftovers(process, children)
        else:
            os.close(writer)  # start_dev_py() closes it once dev.py holds it
        output.pump()
        output.close()
        redis_server.stop()
    assert "Traceback" not in output.text, output.text


SUPERVISE = """
import sys
from devtools.supervisor import Supervisor
worker = [sys.executable, "-c", "print('RQ is currently suspended'); raise SystemExit(1)"]
web = [sys.executable, "-c", "import time; time.sleep(60)"]  # never listens: what the supervisor waits for
processes = [("worker", " ".join(worker[:2]) + ' "' + worker[2] + '"'), ("web", " ".join(web[:2]) + ' "' + web[2] + '"')]
Supervisor({}).run(processes, redis_url="redis://127.0.0.1:1/0", ready_message="all running", web_port=int(sys.argv[1]))
"""


def test_a_process_that_exits_while_starting_is_named_and_not_the_one_waited_for():
    result = subprocess.run([sys.executable, "-c", SUPERVISE, str(free_port())], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "worker | RQ is currently suspended" in output
    assert "==> worker exited with code 1 (its last lines are above); stopping the others" in output
    assert "gave up waiting" not in output and "all running" not in output, output
