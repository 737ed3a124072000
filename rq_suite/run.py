"""Run RQ's own test suite, at the version requirements.txt pins, against our worker class.

    python3 dev.py test-rq                  the worker-facing modules (what .ci/run runs)
    python3 dev.py test-rq test_commands.py -x   some modules, with pytest options

Fetches RQ's sdist (`pip download --no-binary`) into .cache/rq-suite/, unpacks a fresh copy of
its tests, starts a redis-server of its own on a free port, and runs pytest there twice
(PASSES) with rq_suite/conftest.py: RQ's Worker and SimpleWorker become our class, as it is
and then with each job's start held back as the Procfile's worker holds it; every test listed
in rq_suite/expected_failures.txt (and, in the second run, expected_failures_held_start.txt)
is a strict expected failure.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = ROOT / ".cache" / "rq-suite"
WORKER_CLASS = "rq_threads.ThreadPoolWorker"
# The suite runs twice: on the class as it is (RQ's way of recording a job's start), then with
# the start records held back as long as the Procfile's worker holds them
# (app.worker.MailWorker.record_start_after), with the tests that this changes listed apart.
PASSES = [
    (None, ["expected_failures.txt"]),
    (1.0, ["expected_failures.txt", "expected_failures_held_start.txt"]),
]
MAX_RERUNS = 3  # more failures than this are not timing: no second run
RUN_TIMEOUT = 20 * 60  # seconds; the whole suite takes 2 to 4 minutes on 2 cores

# The worker-facing modules: worker, callbacks, dependencies, registries, retries, commands,
# timeouts, scheduler, worker pool, CLI, and how a worker records what it runs.
MODULES = [
    "test_worker.py",
    "test_callbacks.py",
    "test_dependencies.py",
    "test_job_dependency.py",
    "test_registry.py",
    "test_retry.py",
    "test_commands.py",
    "test_timeouts.py",
    "test_scheduler.py",
    "test_worker_pool.py",
    "test_cli.py",
    "test_intermediate_queue.py",
    "test_executions.py",
    "test_worker_registration.py",
]


def pinned_rq_version():
    """The `rq==X` pin of requirements.txt."""
    match = re.search(r"^rq==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    if not match:
        sys.exit("requirements.txt pins no rq==<version>")
    return match.group(1)


def fetch_sdist(version):
    """RQ's source distribution (it has tests/, the wheel does not), downloaded once."""
    sdist = CACHE / f"rq-{version}.tar.gz"
    if not sdist.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"rq=={version}",
                "--dest",
                str(CACHE),
            ],
            check=True,
        )
    return sdist


def unpack_tests(sdist, into):
    """A fresh copy of the sdist's tests/ folder, with the Redis port RQ hard-codes left to the conftest."""
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if "/tests/" in m.name or m.name.endswith("/pyproject.toml")]
        archive.extractall(into, members=members, filter="data")
    (top,) = Path(into).iterdir()
    shutil.copy(HERE / "conftest.py", top / "tests" / "conftest.py")
    return top


def free_port():
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def point_tests_at(top, port):
    """RQ's tests write `127.0.0.1:6379`, `Redis(db=5)` and a bare `Redis(db=n)` in places: make them name our port.

    The bare one is find_empty_redis_database(), which a job calls in a `rqworker` subprocess
    (test_run_scheduled_access_self), where conftest.py's guard does not reach: it would
    enqueue into an empty database of the shared Redis on 6379.
    """
    for path in (top / "tests").glob("*.py"):
        text = path.read_text()
        patched = text.replace(":6379", f":{port}").replace("Redis(db=5)", f"Redis(port={port}, db=5)")
        patched = patched.replace(
            "connection_kwargs = {'db': dbnum}", f"connection_kwargs = {{'db': dbnum, 'port': {port}}}"
        )
        if patched != text:
            path.write_text(patched)


def start_redis(directory, port):
    """A redis-server of our own with 32 databases (RQ's tests look for an empty one from db 4)."""
    sys.path.insert(0, str(ROOT))
    from tests.support import redis_server_binary

    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--databases",
            "32",
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(Path(directory) / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit(f"redis-server did not start on port {port}")


def pytest_env(env, targets):
    """`env` for a pytest run on `targets`: only a run of every module checks that each expected failure matched a test."""
    env = {name: value for name, value in env.items() if name != "RQ_SUITE_ALL_MODULES"}
    if sorted(targets) == sorted(f"tests/{module}" for module in MODULES):
        env["RQ_SUITE_ALL_MODULES"] = "1"
    return env


def run_pytest(top, env, targets, report, options=()):
    """Run pytest on `targets` in RQ's unpacked tree; its exit code (1 after a hang, which is stopped)."""
    pytest = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *([] if "-v" in options else ["-q"]), "-rfEX",
         "--timeout", "90", f"--junitxml={report}", *options, *targets],
        cwd=top,
        env=pytest_env(env, targets),
        start_new_session=True,  # a test that signals its process group reaches pytest, not this runner
    )
    try:
        return pytest.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:  # a hang (at exit, say) must not hold CI: stop pytest and its children
        print(f"==> RQ's suite still running after {RUN_TIMEOUT} s: stopped", flush=True)
        os.killpg(pytest.pid, signal.SIGKILL)
        pytest.wait()
        return 1


def failed_tests(report):
    """The node ids of the tests that failed or errored, from pytest's JUnit XML report."""
    import xml.etree.ElementTree as ElementTree

    failed = []
    for case in ElementTree.parse(report).iter("testcase"):
        if case.find("failure") is None and case.find("error") is None:
            continue
        parts = case.get("classname", "").split(".")
        module = next((n for n, part in enumerate(parts) if part.startswith("test_")), len(parts) - 1)
        path = "/".join(parts[: module + 1]) + ".py"
        failed.append("::".join([path, *parts[module + 1 :], case.get("name")]))
    return failed


def main(argv):
    """Fetch, unpack, start Redis, run pytest on the chosen modules; exit with pytest's code."""
    modules = [arg for arg in argv if arg.endswith(".py") or "::" in arg]
    options = [arg for arg in argv if arg not in modules]
    version = pinned_rq_version()
    sdist = fetch_sdist(version)
    with tempfile.TemporaryDirectory(prefix="rq-suite-") as workdir:
        top = unpack_tests(sdist, Path(workdir) / "src")
        port = free_port()
        point_tests_at(top, port)
        redis_dir = Path(workdir) / "redis"
        redis_dir.mkdir()
        server = start_redis(redis_dir, port)
        env = {
            **os.environ,
            "RQ_SUITE_REDIS_PORT": str(port),
            "RQ_SUITE_PROJECT": str(ROOT),
            "RQ_SUITE_WORKER_CLASS": os.environ.get("RQ_SUITE_WORKER_CLASS", WORKER_CLASS),
            "PYTHONPATH": str(top),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # RQ's tests run `rqworker`
            "RUN_SLOW_TESTS_TOO": "1",  # RQ's slow tests are the shutdown and timeout ones: the worker's contract
        }
        returncodes = []
        try:
            for record_start_after, lists in PASSES:
                held = "" if record_start_after is None else f", starts held back {record_start_after} s"
                print(
                    f"==> RQ {version}'s tests ({len(modules or MODULES)} modules) against "
                    f"{env['RQ_SUITE_WORKER_CLASS']}{held}, Redis on {port}",
                    flush=True,
                )
                pass_env = {
                    **env,
                    "RQ_SUITE_RECORD_START_AFTER": "" if record_start_after is None else str(record_start_after),
                    "RQ_SUITE_EXPECTED_FAILURES": os.pathsep.join(str(HERE / name) for name in lists),
                }
                returncodes.append(run_pass(top, pass_env, modules, options, Path(workdir) / "report.xml"))
        finally:
            server.terminate()
            server.wait(timeout=10)
    if any(code < 0 for code in returncodes):
        print(f"==> pytest was killed by signal {-min(returncodes)}", flush=True)
        return 1
    return max(returncodes)


def run_pass(top, env, modules, options, report):
    """One run of the chosen modules, each failure run once more alone; pytest's exit code."""
    returncode = run_pytest(top, env, [f"tests/{m}" for m in modules or MODULES], report, options)
    flaky = failed_tests(report) if returncode == 1 else []
    if 0 < len(flaky) <= MAX_RERUNS:
        # RQ's own timing tests (a command sent after a fixed 0.25 s, say) can fail on a
        # loaded machine: each failure is run once more, alone, and named either way.
        print(f"==> {len(flaky)} failed; running them once more, alone: {' '.join(flaky)}", flush=True)
        returncode = run_pytest(top, env, flaky, report)
        if returncode == 0:
            print(f"==> passed when run again alone (timing under load): {' '.join(flaky)}", flush=True)
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
