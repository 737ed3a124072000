"""Take the client's address and scheme from X-Forwarded-* only when the request comes from a trusted proxy."""

import ipaddress

from werkzeug.middleware.proxy_fix import ProxyFix


def parse_networks(entries):
    """FORWARDED_ALLOW_IPS entries (addresses or networks, or "*") as ip_network objects; None means any."""
    if "*" in entries:
        return None
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()]


class TrustedProxyFix:
    """Werkzeug's ProxyFix, applied only to requests whose peer is one of the proxies' addresses.

    ProxyFix alone believes the last X-Forwarded-For entry of any request: with gunicorn also
    reachable directly, a client that sets a new one on each request escapes every rate limit.
    Same rule and setting as gunicorn's own `forwarded_allow_ips` (FORWARDED_ALLOW_IPS).
    """

    def __init__(self, wsgi_app, count, allowed):
        """Wrap wsgi_app; `count` proxies in front, `allowed` their addresses or networks ("*": any)."""
        self.wsgi_app = wsgi_app
        self.fixed = ProxyFix(wsgi_app, x_for=count, x_proto=count, x_host=count)
        self.networks = parse_networks(allowed)

    def trusts(self, peer):
        """True if the peer's address is one the proxies connect from."""
        if self.networks is None:
            return True
        try:
            address = ipaddress.ip_address(peer or "")
        except ValueError:  # a Unix socket: only a process on this machine can connect
            return not peer
        address = getattr(address, "ipv4_mapped", None) or address
        return any(address in network for network in self.networks)

    def __call__(self, environ, start_response):
        """Apply ProxyFix for a trusted peer; pass anyone else's request on as it came."""
        if self.trusts(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        return self.wsgi_app(environ, start_response)
