"""The docs as a learner follows them: every checkpoint, page after page, on a fresh clone.

A checkpoint is a ```console block right after `<!-- checkpoint -->`: `$ ` lines are commands,
the lines under each are a part of its output, in order (`...` matches anything). After
`<!-- checkpoint: terminal 1 -->` the block is what the learner does in terminal 1: `^C` is
Ctrl-C (python3 dev.py stops; the lines under it are what it prints until it exits), and
`$ python3 dev.py` starts it again (the lines under it are what it prints until "all running").

The contract: terminal 1 runs `python3 dev.py` in a fresh copy of the project (the README's
first command), the README's browser signup is done over HTTP, and terminal 2 is one bash
shell that has only what the pages told the learner: it starts in the project's folder with
no app setting in its environment, and the pages' own commands (`source .venv/bin/activate`,
`rq suspend`, ...) are all it gets. The pages run in the nav's order, in one continuous state.
Both terminals live in a network namespace of their own: a laptop where nothing listens on
6379, 5000 or 1025 (this machine's shared Redis is on 6379). It runs twice: without a `.env`,
and with `.env` copied from `.env.example` with other ports.
"""

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import ROOT, wait_for

DOCS = ROOT / "docs"
CHECKPOINT = re.compile(r"<!-- checkpoint(: terminal 1)? -->\s*```console\n(.*?)```", re.S)
CTRL_C = "^C"
NAV_ENTRY = re.compile(r"^\s*-\s[^:]+:\s*(\S+\.md)\s*$")
DONE = "__checkpoint_command_done__"
TRANSCRIPTS = ROOT / "test-artifacts" / "docs-transcripts"  # what terminal 2 printed, per run


def nav_pages():
    """The docs pages in the order of mkdocs.yml's nav."""
    return [
        match.group(1)[:-3]
        for line in (ROOT / "mkdocs.yml").read_text().splitlines()
        if (match := NAV_ENTRY.match(line))
    ]


def checkpoint_steps(page):
    """[(terminal, command, [expected lines])] of a page's checkpoint blocks; terminal is 1 or 2."""
    steps = []
    for in_terminal_1, block in CHECKPOINT.findall((DOCS / f"{page}.md").read_text()):
        terminal = 1 if in_terminal_1 else 2
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((terminal, line[2:], []))
            elif terminal == 1 and line.strip() == CTRL_C:
                steps.append((terminal, CTRL_C, []))
            elif line.strip():
                steps[-1][2].append(line.strip())
    return steps


def matches(expected, output, position):
    """Find `expected` (with `...` as a wildcard) in output from position; return the end or -1."""
    pattern = ".*?".join(re.escape(part) for part in expected.split("..."))
    found = re.compile(pattern).search(output, position)
    return found.end() if found else -1


def test_every_page_has_a_checkpoint_and_a_place_in_the_nav():
    # English pages only: page.ja.md is the Japanese edition of page.md (tests/test_docs_i18n.py).
    pages = {path.stem for path in DOCS.glob("*.md") if not path.name.endswith(".ja.md")}
    assert pages == set(nav_pages()), pages ^ set(nav_pages())
    assert not [page for page in pages if not checkpoint_steps(page)]


def test_matches_reads_dots_as_a_wildcard_and_keeps_the_order():
    assert matches("queued job mail-... on 'mailers'", "queued job mail-12ab on 'mailers' (1 waiting)", 0) > 0
    assert matches("Job OK", "Listening\nJob OK", 0) > 0
    assert matches("first", "first second", matches("second", "first second", 0)) == -1


def test_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()


# --- the learner's laptop -------------------------------------------------------------------

def learner_base_env():
    """What a new terminal has: the system's PATH (no virtualenv), HOME, locale; no app setting."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(part for part in os.environ.get("PATH", "").split(os.pathsep) if part != venv_bin)
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "TERM": "dumb", "LANG": "C.UTF-8"}
    for name in ("USER", "LOGNAME", "SHELL", "TMPDIR"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class Laptop:
    """A network namespace with only a loopback: nothing listens there until we start it."""

    def __init__(self, name):
        """Create the namespace and bring its loopback up, or skip the test saying why."""
        self.name = name
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot create a network namespace (needs root and iproute2): {made.stderr.strip()}")
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)

    def command(self, *args):
        """A command line that runs `args` inside the namespace."""
        return ["ip", "netns", "exec", self.name, *map(str, args)]

    def remove(self):
        """Kill whatever still runs in the namespace (only what this test started), then delete it."""
        listed = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        for pid in listed.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


class Terminal:
    """Terminal 2: one long-lived bash in the project's folder; state (cd, source, export) carries over."""

    def __init__(self, laptop, folder, env):
        """Start bash inside the laptop."""
        self.process = subprocess.Popen(
            laptop.command("bash", "--noprofile", "--norc"), cwd=folder, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        """Move bash's output, line by line, into the queue."""
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, command, timeout=240):
        """Type one command; return (its output with stderr, exit status)."""
        # Braces: the redirections cover a whole pipeline, and the command still runs in this shell.
        self.process.stdin.write(f"{{ {command}\n}} < /dev/null 2>&1\nprintf '\\n{DONE} %s\\n' \"$?\"\n")
        self.process.stdin.flush()
        output, deadline = [], time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                return "".join(output) + f"\n[no prompt after {timeout} s]", None
            if line is None:
                return "".join(output) + "\n[the shell exited]", None
            if line.startswith(DONE):
                return "".join(output), int(line.split()[1])
            output.append(line)

    def close(self):
        """End the shell (by its pid)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process.stdin.close()
        self.process.stdout.close()


def fresh_clone(destination):
    """The project's tracked (and new, not ignored) files, as a `git clone` would give them, sharing this venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    # pip would need the network: the clone uses the venv this test runs in, whose
    # requirements stamp matches, so `python3 dev.py` finds it set up.
    (destination / ".venv").symlink_to(Path(sys.prefix))
    return destination


SIGNUP = """
import re, sys, time
sys.path.insert(0, sys.argv[2])
from tests.support import Browser
browser = Browser(sys.argv[1])
status, _ = browser.submit("/auth/signup", {"email": "learner@example.com", "password": "long enough pw", "password2": "long enough pw"})
assert status == 302, status
for _ in range(300):
    _, inbox = browser.request("/dev/mail/")
    if "Confirm your account" in inbox:
        break
    time.sleep(0.1)
else:
    sys.exit("the confirmation mail never reached the inbox")
key = inbox.split('href="/dev/mail/')[1].split('"')[0]
_, mail = browser.request("/dev/mail/" + key)
link = re.search(r'href="https?://[^/"]+(/auth/confirm/[^"]+)"', mail).group(1)
status, _ = browser.request(link)
assert status in (200, 302), status
status, _ = browser.submit("/auth/login", {"email": "learner@example.com", "password": "long enough pw"})
assert status == 302, status
print("signed up, confirmed and logged in")
"""


def with_ports(example, ports):
    """.env.example with the given settings uncommented and set."""
    text = example
    for name, value in ports.items():
        text, count = re.subn(rf"^#?\s*{name}=.*$", f"{name}={value}", text, count=1, flags=re.M)
        assert count == 1, f".env.example does not mention {name}"
    return text


RUNS = {
    "no-dotenv": None,
    "dotenv-other-ports": {"PORT": "5001", "MAIL_PORT": "1026", "REDIS_URL": "redis://localhost:6380/0"},
}


class DevPy:
    """Terminal 1: `python3 dev.py` in the laptop, all it prints in one log; Ctrl-C, and starting it again."""

    def __init__(self, laptop, folder, env, log_path):
        """Nothing runs yet."""
        self.laptop, self.folder, self.env, self.log_path = laptop, folder, env, log_path
        self.process = None

    def printed_since(self, position):
        """What terminal 1 shows from byte `position` of its log on."""
        return self.log_path.read_bytes()[position:].decode(errors="replace") if self.log_path.exists() else ""

    def log_size(self):
        """Where terminal 1's output ends now."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def start(self, timeout=180):
        """Type `python3 dev.py`; return (what it printed until "all running" or its exit, its exit status or None)."""
        start = self.log_size()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.laptop.command("python3", "dev.py"), cwd=self.folder, env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_for(lambda: "==> all running" in self.printed_since(start) or self.process.poll() is not None,
                 timeout=timeout, interval=0.2, message="python3 dev.py to start")
        return self.printed_since(start), self.process.poll()

    def ctrl_c(self, timeout=90):
        """Press Ctrl-C (SIGINT to dev.py's process group); return (what it printed until it exited, its exit status)."""
        start = self.log_size()
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=timeout)
        return self.printed_since(start), self.process.returncode

    def run(self, command):
        """Do one step of a terminal-1 checkpoint."""
        if command == CTRL_C:
            return self.ctrl_c()
        if command == "python3 dev.py":
            return self.start()
        raise AssertionError(f"a terminal-1 checkpoint has `^C` and `$ python3 dev.py` only, not {command!r}")

    def kill(self):
        """End whatever still runs (SIGKILL to its process group, by pid)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_learner_follows_every_page(run, tmp_path):
    if not hasattr(sys, "real_prefix") and sys.prefix == sys.base_prefix:
        pytest.skip("run the tests from the project's virtualenv (python3 dev.py test)")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2): cannot build the learner's laptop")
    laptop = Laptop(f"docs-{os.getpid()}-{run}")
    clone = fresh_clone(tmp_path / "flask-mailer")
    port = "5000"
    if RUNS[run]:
        (clone / ".env").write_text(with_ports((clone / ".env.example").read_text(), RUNS[run]))
        port = RUNS[run]["PORT"]
    env = learner_base_env()
    dev_log = tmp_path / "terminal-1.log"
    terminal_1 = DevPy(laptop, clone, env, dev_log)
    terminal_2 = transcript = None
    try:
        _, status = terminal_1.start()
        assert status is None, f"python3 dev.py exited:\n{dev_log.read_text()[-4000:]}"

        signup = subprocess.run(laptop.command(sys.executable, "-c", SIGNUP, f"http://127.0.0.1:{port}", ROOT),
                                capture_output=True, text=True, timeout=120)
        assert signup.returncode == 0, f"the README's browser signup failed:\n{signup.stdout}{signup.stderr}"

        terminal_2 = Terminal(laptop, clone, env)
        terminals = {1: terminal_1, 2: terminal_2}
        TRANSCRIPTS.mkdir(parents=True, exist_ok=True)
        transcript = open(TRANSCRIPTS / f"{run}.log", "w")
        for page in nav_pages():
            for terminal, command, expected_lines in checkpoint_steps(page):
                output, status = terminals[terminal].run(command)
                transcript.write(f"## docs/{page}.md, terminal {terminal}\n$ {command}\n{output}[exit {status}]\n")
                transcript.flush()
                position = 0
                for expected in expected_lines:
                    end = matches(expected, output, position)
                    if end < 0:
                        pytest.fail(
                            f"\n[{run}] docs/{page}.md, checkpoint command in terminal {terminal}:\n    $ {command}\n"
                            f"expected (in order, `...` = anything):\n    {expected}\n"
                            f"exit status: {status}\n--- actual output ---\n{output[-3000:]}\n"
                            f"--- terminal 1 (python3 dev.py), last lines ---\n{dev_log.read_text()[-2500:]}",
                            pytrace=False,
                        )
                    position = end
            assert terminal_1.process.poll() is None, f"docs/{page}.md leaves python3 dev.py stopped"

        after_ctrl_c, status = terminal_1.ctrl_c()
        assert "Traceback" not in after_ctrl_c and "==> stopped" in after_ctrl_c, after_ctrl_c[-4000:]
        assert status == 0, after_ctrl_c[-4000:]
    finally:
        if transcript:
            transcript.close()
        if terminal_2:
            terminal_2.close()
        terminal_1.kill()
        laptop.remove()
