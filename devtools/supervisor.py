"""What `python3 dev.py` runs Procfile.dev's processes with: start in order, relay output, stop in order.

Standard library only: dev.py imports it before the virtualenv exists.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]


class Console:
    """dev.py's terminal: lines go to it while it is there, and are dropped once it is gone.

    A closed terminal answers writes with EIO, the end of a pipe (`python3 dev.py | tee log`,
    then Ctrl-C, which stops tee too) with BrokenPipeError. Either must not cut the ordered
    stop short, nor stop the threads that drain each process's output (a process whose output
    nobody reads blocks on its next line).
    """

    def __init__(self, stream):
        """Write to `stream` (sys.stdout)."""
        self.stream = stream
        self.gone = False
        self.lock = threading.Lock()

    def line(self, text):
        """Write one line, or nothing once the terminal is gone."""
        with self.lock:
            if self.gone:
                return
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                self.gone = True
                self.silence()

    def silence(self):
        """Point stdout and stderr at the null device, so later writes (and the final flush) cannot fail."""
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            pass


CONSOLE = Console(sys.stdout)


def say(message):
    """Print a progress line that stands out from the tools' own output."""
    CONSOLE.line(f"==> {message}")


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


def listening_socket_inodes(port):
    """The inodes of the TCP sockets listening on `port`, from Linux's /proc/net/tcp{,6} (empty elsewhere)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


def port_holder(port):
    """The pid of the process that listens on `port`, or None where the system does not tell us."""
    inodes = listening_socket_inodes(port)
    if inodes:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                    return int(proc.name)
            except OSError:  # gone meanwhile, or another user's
                continue
        return None
    try:  # macOS and the BSDs
        found = subprocess.run(["lsof", "-nP", "-t", f"-iTCP:{port}", "-sTCP:LISTEN"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    pids = found.stdout.split()
    return int(pids[0]) if pids and pids[0].isdigit() else None


def process_info(pid):
    """(parent pid, command line, working folder) of a process, from /proc; None for what is unknown."""
    proc = Path(f"/proc/{pid}")
    try:
        parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        folder = (proc / "cwd").resolve()
    except (OSError, IndexError, ValueError):
        return None, None, None
    return parent, command, folder


# What the processes dev.py starts have in their command lines (Procfile.dev), and dev.py itself.
OWN_COMMANDS = ("dev.py", "devtools.", "rq worker", "-m flask")


def describe_holder(port, root=ROOT):
    """A line naming who holds `port`: this project's own process with its pid (and what to kill), or just the pid."""
    pid = port_holder(port)
    if pid is None:
        return None
    parent, command, folder = process_info(pid)
    if folder != root:
        return f"It is held by pid {pid}{f' ({command})' if command else ''}."
    # Walk up through the processes dev.py starts (Procfile.dev's commands) to dev.py itself, if it still runs.
    top, top_command = pid, command
    while parent and parent > 1 and "dev.py" not in (top_command or ""):
        grand_parent, parent_command, parent_folder = process_info(parent)
        if parent_folder != root or not any(part in (parent_command or "") for part in OWN_COMMANDS):
            break
        top, top_command, parent = parent, parent_command, grand_parent
    if "dev.py" in (top_command or ""):
        return (f"It is this project's own process (pid {pid}), run by a `python3 dev.py` that still runs "
                f"(pid {top}): stop that one with Ctrl-C in its terminal, or `kill {top}`.")
    return (f"It is this project's own process (pid {pid}: {command}), started from this folder but not by a "
            f"`python3 dev.py` that still runs: stop it with `kill {top}`.")


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
    which then stops the others one by one instead of all at once. A closed terminal (SIGHUP)
    and SIGTERM stop them the same way.
    """

    # The worker's routine maintenance, logged every few seconds: hidden from the terminal.
    QUIET = (re.compile(r"cleaning (group )?registries", re.I),)
    STOP_TIMEOUT = 40  # a warm shutdown finishes its mails (well under a second against the dev catcher)

    def __init__(self, env, root=ROOT):
        """No process yet."""
        self.env = env
        self.root = root
        self.running = []  # (name, Popen) in start order
        self.stop_requested = False
        self.width = 8

    def start(self, name, command):
        """Start one process with its output prefixed by its name."""
        process = subprocess.Popen(
            expand(command, self.env), env=self.env, cwd=self.root, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.running.append((name, process))
        threading.Thread(target=self.relay, args=(name, process), daemon=True).start()
        return process

    def relay(self, name, process):
        """Print a process's output line by line, prefixed with the time and its name (read to the end, always)."""
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if not any(pattern.search(line) for pattern in self.QUIET):
                CONSOLE.line(f"{time.strftime('%H:%M:%S')} {name:<{self.width}}| {line}")

    def request_stop(self, *_):
        """Signal handler: Ctrl-C, SIGTERM or a closed terminal."""
        self.stop_requested = True

    def wait_until(self, predicate, timeout, waiting_for):
        """Wait for `predicate`; False if a process exits, Ctrl-C comes, or `timeout` passes (said)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.stop_requested or self.exited():
                return False  # run() names the process that exited
            if time.monotonic() > deadline:
                say(f"gave up waiting for {waiting_for} after {timeout} s")
                return False
            time.sleep(0.1)
        return True

    def exited(self):
        """The first process that has exited, as (name, code), or None."""
        for name, process in self.running:
            if process.poll() is not None:
                return name, process.returncode
        return None

    def run(self, processes, redis_url, ready_message, web_port, before_workers=None):
        """Start everything in order, wait for Ctrl-C or a process exiting, then stop in reverse order.

        `before_workers` runs once Redis answers, before the first worker starts (dev.py lifts `rq suspend` there).
        """
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):  # SIGHUP: the terminal was closed (not on Windows)
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self.request_stop)
        self.width = max(len(name) for name, _ in processes) + 1
        code = 0
        try:
            say("starting: " + ", ".join(name for name, _ in processes))
            ok = self.start_in_order(processes, redis_url, before_workers)
            if ok and self.wait_until(lambda: port_taken(web_port), 60, "the web server"):
                say(ready_message)
            while not self.stop_requested and not self.exited():
                time.sleep(0.2)
            if not self.stop_requested and self.exited():
                name, code = self.exited()
                say(f"{name} exited with code {code} (its last lines are above); stopping the others")
        finally:
            self.stop_all()  # whatever happened above: no process is left without its parent
        sys.exit(1 if code else 0)

    def start_in_order(self, processes, redis_url, before_workers):
        """Start each process; wait for Redis's PING before the next; False if that wait failed."""
        for name, command in processes:
            if self.stop_requested:
                return False
            if name.startswith("worker") and before_workers is not None:
                before_workers()
                before_workers = None
            self.start(name, command)
            if name == "redis" and not self.wait_until(lambda: redis_answers(redis_url), 30, "Redis to answer PING"):
                return False
        return True

    def stop_all(self):
        """Stop web, worker(s) and mail first (SIGTERM, a warm shutdown for the worker), Redis last."""
        for name in ("SIGINT", "SIGHUP"):  # a second Ctrl-C, or the terminal closing now, must not cut it short
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_IGN)
        others = [(name, p) for name, p in self.running if name != "redis"]
        redis = [(name, p) for name, p in self.running if name == "redis"]
        say("stopping web, worker and mail catcher" + (", then Redis" if redis else " (Redis was not started here: it keeps running)"))
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
