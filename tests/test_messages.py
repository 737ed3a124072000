"""What a learner sees when a server is not running or a setting cannot work: a line or two that says what to do."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, learner_env

BIN = Path(sys.executable).parent


def test_doctor_with_nothing_running_names_the_address_its_setting_and_what_to_start(make_app, monkeypatch):
    port = free_port()  # nothing listens there: python3 dev.py is stopped
    url = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setenv("REDIS_URL", url)
    result = make_app(url).test_cli_runner().invoke(args=["doctor"])
    assert result.exit_code == 1
    assert f"nothing answers at 127.0.0.1:{port} (connection refused)" in result.output
    assert "[FAIL] worker   not checked: the jobs Redis does not answer" in result.output
    assert f"Nothing answers at 127.0.0.1:{port} (REDIS_URL, set in the environment)." in result.output
    assert "Start `python3 dev.py` in another terminal" in result.output
    assert "Error 111" not in result.output  # the clients' retried connection errors are never reached


def run(command, **settings):
    """Run a command line of the project with only `settings` as its app settings; return (code, stdout + stderr)."""
    env = learner_env(**settings)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


PRODUCTION_WITHOUT_SECRET = {"FLASK_CONFIG": "production", "SECRET_KEY": ""}
BAD_SENTINEL_URL = {"FLASK_CONFIG": "development", "REDIS_URL": "redis+sentinel://10.0.0.5/mymaster"}


@pytest.mark.parametrize("command", [
    [BIN / "flask", "--app", "wsgi", "routes"],
    [BIN / "rq", "info", "-c", "app.worker"],
    [sys.executable, "-c", "import wsgi"],
], ids=["flask", "rq", "import-wsgi"])
@pytest.mark.parametrize("settings, said", [
    (PRODUCTION_WITHOUT_SECRET, "Cannot start: ProductionConfig needs SECRET_KEY: set it to a random string"),
    (BAD_SENTINEL_URL, "Cannot start: RQ_REDIS_URL, which falls back to REDIS_URL: Sentinel address '10.0.0.5' is not host:port"),
], ids=["production-check", "sentinel-url"])
def test_a_setting_that_cannot_work_stops_each_entry_point_in_one_line(command, settings, said):
    code, output = run(command, **settings)
    assert code == 4, output
    assert output.strip().splitlines() == [output.strip()] and output.startswith(said), output


def test_gunicorn_stops_at_once_on_a_setting_that_cannot_work_instead_of_restarting_its_workers():
    code, output = run([BIN / "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{free_port()}", "--workers", "2",
                        "--no-control-socket"], **PRODUCTION_WITHOUT_SECRET)
    assert code == 4 and "Booting worker" not in output, output  # refused in the master (gunicorn.conf.py)
    assert "Traceback" not in output and "Cannot start: ProductionConfig needs SECRET_KEY" in output
