"""Memory probe: pre-enqueue N mails, run k Procfile workers, report mails/s and each worker's PSS at the end.

Usage: PYTHONPATH=. [MEMPROBE_FORM=pool] python bench/memprobe.py N DELAY K [ENV=VALUE ...]
It prints the PSS of the whole tree, of each started process with its children, and of each
process of the first one's tree alone (per_process: a pool's parent, then its children).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)
os.environ.update(SECRET_KEY="benchmark-secret-key-not-for-production-use-0123456789",
                  SITE_URL="https://bench.example.com", TRUSTED_HOSTS="127.0.0.1,localhost")

from bench.harness import Stack, child_pids, tree_pss_mb  # noqa: E402
from bench.run import enqueue_rq, make_app  # noqa: E402


def rollup(pid):
    """The smaps_rollup fields of one process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":")
        out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def main():
    """Run once and print one result line."""
    n, delay, workers = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    extra_env = dict(arg.split("=", 1) for arg in sys.argv[4:])
    workdir = tempfile.mkdtemp(prefix="mem-")
    stack = Stack(Path(workdir), smtp_delay=delay)
    try:
        assert Path(stack.env["PYTHONPATH"]) == ROOT, stack.env["PYTHONPATH"]
        stack.env.update(extra_env)
        enqueue_rq(make_app(stack), "p", n)
        before, started = stack.delivered(), time.time()
        stack.rq_form = form = os.environ.get("MEMPROBE_FORM", "procfile")  # or "pool": one `rq worker-pool -n K`
        procs = stack.rq_side(workers)
        stack.wait_delivered(before + n)
        wall = time.time() - started
        times = stack.accept_times()[before:]
        pids = [p.pid for p in procs]
        total = tree_pss_mb(pids)
        each = [tree_pss_mb([pid]) for pid in pids]
        each_process = {child: round(tree_pss_mb([child]) - tree_pss_mb(child_pids(child)), 1) for child in [pids[0], *child_pids(pids[0])]}
        detail = rollup(pids[0])
        threads = len(os.listdir(f"/proc/{pids[0]}/task"))
        print(f"form={form} env={extra_env} mails={n} delay={delay} k={workers} steady={(n - 1) / (times[-1] - times[0]):.1f}/s "
              f"wall={wall:.1f}s pss_sum={total} pss_each={each} per_process={each_process} threads0={threads}")
        print("  worker0:", {k: detail[k] for k in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean",
                                                     "Private_Clean", "Private_Dirty", "Anonymous") if k in detail})
        if os.environ.get("MEMPROBE_SMAPS"):
            for number, pid in enumerate(each_process):
                Path(f"{os.environ['MEMPROBE_SMAPS']}.{number}").write_text(Path(f"/proc/{pid}/smaps").read_text())
        stack.stop(procs)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
