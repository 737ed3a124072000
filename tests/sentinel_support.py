"""Redis high availability for the tests: replicas, Sentinels and a slow replication link, all ours."""

import socket
import subprocess
import threading
import time
from pathlib import Path

import redis

from tests.support import RedisServer, free_port, redis_server_binary, wait_for

SERVICE = "mymaster"


class ReplicaServer(RedisServer):
    """A redis-server (AOF, noeviction) that replicates from host:port."""

    def __init__(self, directory, primary_host, primary_port, port=None):
        """Remember where the primary is; nothing starts yet."""
        super().__init__(directory, port)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.primary = (primary_host, primary_port)

    def command(self):
        """RedisServer's command line plus --replicaof."""
        return [*super().command(), "--replicaof", self.primary[0], str(self.primary[1])]


class SentinelServer:
    """A `redis-server --sentinel` watching SERVICE, on loopback, stopped by its pid."""

    def __init__(self, directory, primary_port, down_after_ms=1000, quorum=2, port=None):
        """Write its config file (Sentinel rewrites it as it learns); nothing starts yet."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = self.directory / "sentinel.conf"
        self.config.write_text(sentinel_config(self.port, "127.0.0.1", primary_port, down_after_ms, quorum, self.directory))
        self.process = None

    def start(self):
        """Start the Sentinel and wait until it answers PING."""
        self.process = subprocess.Popen([redis_server_binary(), str(self.config), "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_for(lambda: RedisServer._pings(client), timeout=10, message=f"sentinel on {self.port}")
        return self

    def client(self):
        """A plain client on this Sentinel (for SENTINEL commands)."""
        return redis.Redis(port=self.port, socket_timeout=2)

    def stop(self):
        """Stop the Sentinel if it still runs (by pid)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def sentinel_config(port, bind, primary_port, down_after_ms, quorum, directory, primary_host="127.0.0.1"):
    """The text of a sentinel.conf that watches SERVICE at primary_host:primary_port."""
    return "\n".join([
        f"port {port}",
        f"bind {bind}",
        f"dir {directory}",
        f"logfile {directory / 'sentinel.log'}",
        f"sentinel monitor {SERVICE} {primary_host} {primary_port} {quorum}",
        f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
        f"sentinel failover-timeout {SERVICE} 10000",
        f"sentinel parallel-syncs {SERVICE} 1",
        "",
    ])


def sentinel_url(sentinels, db=0):
    """The app's redis+sentinel:// URL for these (host, port) Sentinels."""
    return "redis+sentinel://" + ",".join(f"{host}:{port}" for host, port in sentinels) + f"/{SERVICE}/{db}"


def primary_address(sentinel_client):
    """(host, port) of the primary that one Sentinel names, or None."""
    try:
        host, port = sentinel_client.sentinel_get_master_addr_by_name(SERVICE)
    except (redis.exceptions.RedisError, TypeError):
        return None
    return (host.decode() if isinstance(host, bytes) else host, int(port))


def ready(sentinel_clients, replicas=1):
    """True when every Sentinel knows the others and sees `replicas` replica(s) online."""
    try:
        for client in sentinel_clients:
            state = client.sentinel_master(SERVICE)
            if state["num-other-sentinels"] < len(sentinel_clients) - 1 or state["num-slaves"] < replicas:
                return False
            online = [r for r in client.sentinel_slaves(SERVICE) if not (r["is_sdown"] or r["is_odown"])]
            if len(online) < replicas or any(r["master-link-status"] != "ok" for r in online):
                return False
    except redis.exceptions.RedisError:
        return False
    return True


class DelayedLink:
    """A TCP proxy on loopback that hands bytes from `upstream` to the client `delay` seconds late.

    Put between a replica and its primary, it makes replication lag measurable and certain:
    for `delay` seconds after a write, the replica does not have it.
    """

    def __init__(self, upstream_port, delay):
        """Listen on a free port; forward each connection to 127.0.0.1:upstream_port."""
        self.upstream_port = upstream_port
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets = []
        self.stopped = False

    def start(self):
        """Accept connections in a background thread."""
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while not self.stopped:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [downstream, upstream]
            threading.Thread(target=self._pump, args=(downstream, upstream, 0), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, self.delay), daemon=True).start()

    def _pump(self, source, target, delay):
        """Copy source to target; each chunk leaves `delay` seconds after it arrived, in order."""
        while True:
            try:
                chunk = source.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            due = time.monotonic() + delay
            if delay:
                time.sleep(max(0.0, due - time.monotonic()))
            try:
                target.sendall(chunk)
            except OSError:
                break
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        """Close the listener and every forwarded connection."""
        self.stopped = True
        self.listener.close()
        for sock in self.sockets:
            sock.close()
