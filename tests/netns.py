"""A simulated network for the multi-host test: Linux network namespaces joined by veth links to a bridge.

Each host is a network namespace with one interface, eth0, on 10.77.0.0/24; its other end sits
in a hub namespace's bridge. Nothing is added to the machine's own namespace: the test talks to
the hosts from inside one of them (`inside()`, for this thread only) or runs programs in them
(`Host.popen`). Everything is removed by `Network.tear_down()`, processes first, by pid.
"""

import ctypes
import os
import shutil
import signal
import subprocess
from contextlib import contextmanager

SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000


def namespaces_available():
    """None if this process can make network namespaces and veth links, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    if not shutil.which("ip"):
        return "needs the `ip` command (iproute2)"
    probe = f"fm-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        veth = subprocess.run(["ip", "-n", probe, "link", "add", "a0", "type", "veth", "peer", "name", "b0"],
                              capture_output=True, text=True)
        if veth.returncode != 0:
            return f"cannot create a veth link: {veth.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args, namespace=None):
    """Run one `ip` command (in a namespace if given); raise with its message on failure."""
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")


class Host:
    """One simulated machine: a namespace, an address, and the processes started in it."""

    def __init__(self, network, name, number):
        """Name the namespace and pick the address 10.77.0.<number>; nothing is made yet."""
        self.network = network
        self.name = name
        self.namespace = f"{network.prefix}-{name}"
        self.address = f"{SUBNET}.{number}"
        self.hub_link = f"{network.prefix[-6:]}{number}"  # this host's end in the hub (<= 15 chars)
        self.processes = []

    def popen(self, command, log, **kwargs):
        """Start a program on this host (ip netns exec), its output to the file `log`; tear_down() stops it."""
        with open(log, "ab") as output:
            process = subprocess.Popen(["ip", "netns", "exec", self.namespace, *command], start_new_session=True,
                                       stdout=output, stderr=subprocess.STDOUT, **kwargs)
        self.processes.append(process)
        return process

    def disconnect(self):
        """Pull this host's cable: its link to the hub goes down."""
        ip("link", "set", self.hub_link, "down", namespace=self.network.hub)

    def reconnect(self):
        """Plug the cable back in."""
        ip("link", "set", self.hub_link, "up", namespace=self.network.hub)

    def stop(self, process, sig=signal.SIGTERM, timeout=15):
        """Send `sig` to a process group of ours and wait; SIGKILL if it will not go."""
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass


class Network:
    """A hub with a bridge, and hosts linked to it; made by add_host(), removed by tear_down()."""

    def __init__(self):
        """Pick names unique to this test run; nothing is made yet."""
        self.prefix = f"fm{os.getpid()}"
        self.hub = f"{self.prefix}-hub"
        self.hosts = {}
        ip("netns", "add", self.hub)
        try:
            ip("link", "add", "br0", "type", "bridge", namespace=self.hub)
            ip("link", "set", "br0", "up", namespace=self.hub)
        except RuntimeError:
            self.tear_down()
            raise

    def add_host(self, name, number):
        """A new namespace with eth0 at 10.77.0.<number>/24, linked to the hub's bridge."""
        host = Host(self, name, number)
        ip("netns", "add", host.namespace)
        self.hosts[name] = host  # from here on, tear_down() deletes it
        ip("link", "add", "eth0", "netns", host.namespace, "type", "veth",
           "peer", "name", host.hub_link, "netns", self.hub, namespace=self.hub)
        ip("link", "set", host.hub_link, "master", "br0", namespace=self.hub)
        ip("link", "set", host.hub_link, "up", namespace=self.hub)
        ip("addr", "add", f"{host.address}/24", "dev", "eth0", namespace=host.namespace)
        ip("link", "set", "eth0", "up", namespace=host.namespace)
        ip("link", "set", "lo", "up", namespace=host.namespace)
        return host

    def tear_down(self):
        """Kill every process we started (by pid, SIGKILL), then delete every namespace we made."""
        for host in self.hosts.values():
            for process in host.processes:
                if process.poll() is None:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    process.wait(timeout=10)
        for namespace in [host.namespace for host in self.hosts.values()] + [self.hub]:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def serve_smtp(address, port, maildir, delay):
    """Run on the smtp host (python -c): an aiosmtpd server storing every accepted mail in a Maildir."""
    from aiosmtpd.controller import Controller

    from tests.support import ScriptedMaildirHandler

    handler = ScriptedMaildirHandler(maildir)
    handler.delay = delay
    Controller(handler, hostname=address, port=port).start()
    signal.sigwait({signal.SIGTERM})


@contextmanager
def inside(namespace):
    """Make this thread's new sockets in `namespace` for the block (setns applies per thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace} failed")
        yield
    finally:
        libc.setns(home, CLONE_NEWNET)
        os.close(target)
        os.close(home)

