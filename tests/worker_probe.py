"""A job a test enqueues to look inside a running `rq worker` process: which modules it has imported."""

import sys


def imported_packages():
    """The top-level names of every module this process has imported, sorted."""
    return sorted({name.partition(".")[0] for name in sys.modules})
