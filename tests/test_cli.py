"""`flask doctor`, `flask redis-peek` and `flask send-test-mail` against real servers."""

import json

from tests.support import RedisServer, confirm_link, login, signup


def test_doctor_passes_with_aof_redis_a_worker_and_smtp(app, runner, worker_env, start_worker):
    start_worker(worker_env)
    result = runner.invoke(args=["doctor"])
    assert result.exit_code == 0, result.output
    assert "All good." in result.output
    assert "worker(s) on 'mailers'" in result.output


def test_doctor_fails_without_a_worker(app, runner):
    result = runner.invoke(args=["doctor"])
    assert result.exit_code == 1
    assert "no rq worker listens on 'mailers'" in result.output


def test_doctor_fails_at_once_when_the_worker_was_killed(app, runner, worker_env, start_worker):
    worker = start_worker(worker_env)
    worker.kill_all()  # SIGKILL: it cannot unregister; its key would linger for about 80 s
    result = runner.invoke(args=["doctor"])
    assert result.exit_code == 1
    assert "no rq worker listens on 'mailers' (1 registered worker(s) no longer run here)" in result.output


def test_doctor_flags_redis_without_persistence(tmp_path, make_app, smtp_server):
    server = RedisServer(tmp_path, persistence=False).start()
    try:
        app = make_app(server.url)
        result = app.test_cli_runner().invoke(args=["doctor"])
    finally:
        server.stop()
    assert result.exit_code == 1
    assert "AOF persistence is off" in result.output


def test_doctor_reports_an_unreachable_smtp_server(app, runner, smtp_server):
    smtp_server.stop()
    result = runner.invoke(args=["doctor"])
    assert result.exit_code == 1
    assert "[FAIL] smtp" in result.output


def test_redis_peek_shows_the_signed_in_session_as_json(app, client, runner):
    signup(client, "ada@example.com")
    login(client, "ada@example.com")
    sid = client.get_cookie("session").value
    result = runner.invoke(args=["redis-peek", "--role", "sessions"])
    assert result.exit_code == 0, result.output
    line_index = result.output.splitlines().index(next(line for line in result.output.splitlines() if line.startswith(f"session:{sid}")))
    value = json.loads(result.output.splitlines()[line_index + 1])
    assert value["_user_id"] == "1"
    assert "ttl" in result.output.splitlines()[line_index]


def test_redis_peek_lists_each_role(app, client, runner):
    signup(client, "ada@example.com")  # a signup forgets the cached home page ...
    app.test_client().get("/")  # ... and a stranger's visit stores it again
    result = runner.invoke(args=["redis-peek"])
    assert result.exit_code == 0, result.output
    for heading in ("== jobs", "== cache", "== sessions"):
        assert heading in result.output
    assert "cache:page:home" in result.output
    assert "rq:queue:mailers" in result.output
    assert '"to": "ada@example.com"' in result.output  # the job's arguments, decoded from JSON


def test_send_test_mail_links_to_the_site_url(make_app, redis_url, smtp_server, run_worker):
    app = make_app(redis_url, SITE_URL="http://localhost:5077")
    result = app.test_cli_runner().invoke(args=["send-test-mail", "ada@example.com"])
    assert result.exit_code == 0, result.output
    assert "queued job mail-" in result.output

    assert run_worker().returncode == 0
    (message,) = smtp_server.wait_for_messages(1)
    assert confirm_link(message) == "http://localhost:5077/auth/confirm/this-is-a-test"
