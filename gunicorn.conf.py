"""gunicorn settings for the Procfile's `web:` process: threads a slow client cannot starve, bound where PROXY_COUNT says."""

import os

from environs import Env

env = Env()
env.read_env(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".env"), recurse=False)

# --8<-- [start:workers]
# gthread: the main thread waits for each connection's first bytes, then a thread reads the request.
# A client that sends its headers a line every few seconds holds one thread, not a whole worker
# (a `sync` worker is held by one such client: two of them stopped the site). Past
# workers x threads slow clients the site stalls again: on a public address put a buffering
# proxy (nginx) in front, which reads each request in full before passing it on.
worker_class = "gthread"
workers = env.int("WEB_CONCURRENCY", 2)
threads = env.int("WEB_THREADS", 16)
timeout = 30  # a worker whose main loop stops answering for this long is restarted
keepalive = 5  # an idle kept-alive connection waits in the main loop, not in a thread
graceful_timeout = 90  # requests in flight finish on SIGTERM
# --8<-- [end:workers]

# --8<-- [start:bind]
# Behind a proxy (PROXY_COUNT > 0) the app believes the X-Forwarded-For the proxy sets, so only
# the proxy should reach gunicorn: it listens on this machine's loopback unless WEB_HOST says
# otherwise (a load balancer on another machine: WEB_HOST=0.0.0.0 and FORWARDED_ALLOW_IPS set
# to its address). Without a proxy it listens on every interface. `--bind unix:PATH` on the
# command line replaces both.
proxied = env.int("PROXY_COUNT", 0) > 0
bind = [f"{env.str('WEB_HOST', '127.0.0.1' if proxied else '0.0.0.0')}:{env.int('PORT', 5000)}"]
# --8<-- [end:bind]


def on_starting(server):
    """Check the settings once in gunicorn's master: a refusal stops it in one line, before any worker boots.

    Without this each worker fails on its own, and when two fail at once gunicorn's shutdown
    meets the second failure and prints a traceback instead of "App failed to load".
    """
    from app.entry import build_or_exit
    from config import load_settings

    build_or_exit(lambda: load_settings(os.environ.get("FLASK_CONFIG", "development")))
