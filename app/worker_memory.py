"""A worker process's memory: fewer malloc arenas for its threads, and what it built shared with forked children."""

import ctypes
import gc
import os
import sys


def limit_malloc_arenas(count):
    """Cap glibc's malloc arenas (M_ARENA_MAX, what MALLOC_ARENA_MAX sets) for the threads started from now on.

    glibc gives threads arenas of their own, up to 8 per core, and each keeps the pages it
    touched: with 25 job threads per worker, 2 arenas measured ~4 MB less PSS per process
    (docs/scaling.md). Nothing happens outside glibc, or when the operator set the arenas
    (MALLOC_ARENA_MAX, or glibc.malloc.arena_max in GLIBC_TUNABLES).
    """
    if os.environ.get("MALLOC_ARENA_MAX") or "glibc.malloc.arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).mallopt(-8, count)  # -8: M_ARENA_MAX in glibc's malloc.h
    except (OSError, AttributeError):  # a C library without mallopt
        pass


def freeze_for_forked_children():
    """Move every object built so far out of the collector's sight (gc.freeze), for the process's lifetime.

    A child that `rq worker-pool` forks from this process then leaves those pages shared, where
    the collector's writes would copy them (docs/scaling.md). No gc.collect() first: each child
    fills the holes a collection leaves, which copies the page as well.
    """
    gc.freeze()
