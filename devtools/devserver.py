"""The web process of Procfile.dev: Flask's debug server, restarted when the project's own code changes.

Werkzeug's reloader watches every folder on sys.path; with watchdog installed (mkdocs needs it)
that means the whole Python installation, and a large site-packages overflows inotify: it then
prints "Inotify queue overflowed" several times a second and keeps a core busy. This one looks
only at the project's Python files (app/, config.py, wsgi.py) and .env, once a second, and
restarts `flask run --debug --no-reload` when one of them changes. Templates need no restart:
Flask reloads them by itself in debug mode.

    python -m devtools.devserver --port 5000
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATCHED_FILES = ("config.py", "wsgi.py", ".env")
WATCHED_TREES = ("app",)
POLL_SECONDS = 1.0


def watched_paths(root=ROOT):
    """Every file whose change should restart the server: the project's .py files and .env."""
    paths = [root / name for name in WATCHED_FILES]
    for tree in WATCHED_TREES:
        for folder, dirs, files in os.walk(root / tree):
            dirs[:] = [name for name in dirs if name != "__pycache__"]
            paths.extend(Path(folder, name) for name in files if name.endswith(".py"))
    return paths


def snapshot(root=ROOT):
    """Map each watched file to its modification time (missing files are simply absent)."""
    times = {}
    for path in watched_paths(root):
        try:
            times[path] = path.stat().st_mtime_ns
        except OSError:
            continue
    return times


def changed_file(before, after):
    """The first file added, removed or modified between two snapshots, or None."""
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            return path
    return None


def start_server(port):
    """Start Flask's debug server (debugger on, its own reloader off) as a child process."""
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "run", "--debug", "--no-reload", "--port", str(port)]
    return subprocess.Popen(command, cwd=ROOT)


def stop_server(server):
    """Stop the child server and wait for it."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main():
    """Run the server until SIGINT or SIGTERM; restart it whenever a watched file changes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 5000)))
    args = parser.parse_args()

    stopping = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.append(True))

    files = snapshot()
    server = start_server(args.port)
    reported_exit = False
    while not stopping:
        time.sleep(POLL_SECONDS)
        if stopping:
            break
        current = snapshot()
        changed = changed_file(files, current)
        files = current
        if changed:
            print(f" * {changed.relative_to(ROOT)} changed, restarting the web server", flush=True)
            stop_server(server)
            server = start_server(args.port)
            reported_exit = False
        elif server.poll() is not None and not reported_exit:
            # An import error, say: wait for the fix instead of exiting and stopping everything.
            print(" * the web server stopped; save a fix and it starts again", flush=True)
            reported_exit = True
    stop_server(server)


if __name__ == "__main__":
    main()
