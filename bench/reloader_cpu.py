#!/usr/bin/env python3
"""CPU use of the development web process while nothing changes: Werkzeug's reloader against devtools/devserver.py (never a test).

    python3 bench/reloader_cpu.py              20 s each
    python3 bench/reloader_cpu.py --seconds 60

Each side runs with the development settings on a free port in .venv (which mkdocs gives
watchdog, so Werkzeug's reloader takes its watchdog type): `flask run --debug` (Werkzeug's
reloader watching every folder on sys.path), then `python -m devtools.devserver` (Procfile.dev's
web line). After a 5 s start it reads the CPU time of the process and its children
(bench.job_cost.process_cpu) for `--seconds`, and prints it as a share of one core. docs/dashboard.md quotes it.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port  # noqa: E402
from bench.job_cost import process_cpu  # noqa: E402

SETTLE_SECONDS = 5


def share_of_a_core(command, seconds):
    """Start `command` in its own session, let it settle, return its CPU time over `seconds` as a share of one core."""
    import psutil

    env = {**os.environ, "FLASK_APP": "wsgi", "FLASK_CONFIG": "development", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        time.sleep(SETTLE_SECONDS)
        watched = psutil.Process(process.pid)
        before, started = process_cpu(watched), time.monotonic()
        time.sleep(seconds)
        return (process_cpu(watched) - before) / (time.monotonic() - started)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def main():
    """Both sides, one after the other, each in .venv (python3 dev.py setup builds it); this script in .venv-bench."""
    from bench import run

    run.bootstrap()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        sys.exit("no .venv: run python3 dev.py setup first")
    sides = {
        "flask run --debug (Werkzeug's reloader)": [str(python), "-m", "flask", "run", "--debug", "--port", str(free_port())],
        "python -m devtools.devserver (Procfile.dev)": [str(python), "-m", "devtools.devserver", "--port", str(free_port())],
    }
    for name, command in sides.items():
        print(f"{name}: {100 * share_of_a_core(command, args.seconds):.1f} % of a core", flush=True)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python3 bench/reloader_cpu.py" + ("" if args.seconds == 20 else f" --seconds {args.seconds:g}")
    print(f"{when}, {os.cpu_count()} cores, `{command}`, {args.seconds:g} s each after {SETTLE_SECONDS} s")


if __name__ == "__main__":
    main()
