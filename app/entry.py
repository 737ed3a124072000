"""How the entry points (wsgi.py, the worker's settings module) build the app: a setting that cannot work stops them in a line."""

import sys

from config import ConfigError

# gunicorn's "App failed to load": it then stops, instead of starting the worker again and again.
APP_LOAD_ERROR = 4


def build_or_exit(factory):
    """Return factory(); on a ConfigError print it as one line on stderr and exit, without a traceback."""
    try:
        return factory()
    except ConfigError as exc:
        sys.stderr.write(f"Cannot start: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(APP_LOAD_ERROR) from None
