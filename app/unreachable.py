"""For `flask doctor`: which servers refuse connections (found in a second, without the clients' retries), and what to start."""

import os
import socket
from urllib.parse import urlsplit

from dotenv import dotenv_values
from flask import current_app

from app.connections import ROLE_URL_SETTINGS
from config import BASE_DIR, parse_sentinel_url

PROBE_TIMEOUT = 1.0  # seconds: a local server answers in microseconds, a remote one well within this
# What `flask doctor` asks about: each role's Redis, and the one the rate-limit counters are on,
# as {role: (the setting a user writes, the config key that holds the URL)}. The two differ for
# the counters only: RATELIMIT_STORAGE_URI is the limits library's name, the app reads RATELIMIT_REDIS_URL.
PROBED = {**{role: (setting, setting) for role, setting in ROLE_URL_SETTINGS.items()},
          "limits": ("RATELIMIT_STORAGE_URI", "RATELIMIT_REDIS_URL")}


def refuses(host, port):
    """True if nothing listens at host:port (the connection is refused or times out)."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return False
    except OSError:
        return True


def refused_roles():
    """{role: "host:port"} for each role (and "limits") whose plain Redis URL refuses a TCP connection.

    The role clients retry a lost connection for several seconds (to wait out a failover), so
    asking them about a server that is not there takes that long per role. Sentinel URLs are
    left to the clients: their primary is only known by asking the Sentinels.
    """
    refused = {}
    for role, (_, config_key) in PROBED.items():
        url = current_app.config.get(config_key) or ""
        parts = urlsplit(url)
        if parse_sentinel_url(url) is not None or parts.scheme not in ("redis", "rediss"):
            continue
        host, port = parts.hostname or "localhost", parts.port or 6379
        if refuses(host, port):
            refused[role] = f"{host}:{port}"
    return refused


def refused_status(role, where):
    """The status (as app.redis_info.server_status gives it) of a server that refused the probe."""
    return {"role": role, "where": where, "ok": False, "error": f"nothing answers at {where} (connection refused)"}


def setting_source(*names):
    """Which setting gave the value, and from where: `REDIS_URL, set in .env`, `..., the default`."""
    dotenv = dotenv_values(BASE_DIR / ".env")  # the file config.py reads under the real environment
    for name in names:
        if name in os.environ:
            where = ".env" if dotenv.get(name) == os.environ[name] else "the environment"
            return f"{name}, set in {where}"
    return f"{names[-1]}, the default"


def what_to_start(refused, smtp_refused):
    """One or two lines: what does not answer, where its address came from, and what to run."""
    first_role = {}  # address -> the first role on it: roles that share a server are named once
    for role, where in refused.items():
        first_role.setdefault(where, role)
    missing = [f"{where} ({setting_source(PROBED[role][0], 'REDIS_URL')})" for where, role in first_role.items()]
    if smtp_refused:
        config = current_app.config
        missing.append(f"{config['MAIL_SERVER']}:{config['MAIL_PORT']} ({setting_source('MAIL_PORT')})")
    if not missing:
        return []
    lines = [f"Nothing answers at {', '.join(missing)}."]
    if current_app.config["CONFIG_NAME"] == "production":
        lines.append("Start those servers, or point the settings at the ones that run.")
    else:
        lines.append("Start `python3 dev.py` in another terminal (it runs Redis, the worker and the mail catcher), "
                     "then run `flask doctor` again.")
    return lines
