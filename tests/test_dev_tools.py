"""Development tools: rq-dashboard on JSON jobs, the mail inbox, previews, the hub."""

import http.client
import threading

import pytest
from werkzeug.serving import make_server

from tests.support import ROOT, confirm_link, free_port, mailers_queue, signup, wait_for


def test_dashboard_tabs_answer_while_a_worker_runs_a_json_job(app, client, dev_app, smtp_server, worker_env, start_worker):
    smtp_server.handler.delay = 4  # keep the job running while we look
    start_worker(worker_env)
    signup(client, "ada@example.com")
    wait_for(lambda: smtp_server.handler.rcpts_seen >= 1, timeout=30, message="the job to start")
    # Recorded as started once it has run for 1 s (MailWorker.record_start_after).
    started = mailers_queue(app).started_job_registry
    wait_for(lambda: started.get_job_ids(), timeout=5, message="the job's start to be recorded")
    job_id = started.get_job_ids()[0]

    dashboard = dev_app.test_client()
    workers = dashboard.get("/rq/0/data/workers.json")
    assert workers.status_code == 200
    busy = [w for w in workers.get_json()["workers"] if w["current_job"] != "idle"]
    assert busy and busy[0]["current_job"]["job_id"] == job_id
    for path in ("/rq/0/view/workers", "/rq/0/view/queues", f"/rq/0/view/job/{job_id}", "/rq/0/data/queues.json",
                 f"/rq/0/data/job/{job_id}.json", "/rq/0/data/jobs/mailers/started/8/asc/1.json"):
        assert dashboard.get(path, follow_redirects=True).status_code == 200, path
    smtp_server.wait_for_messages(1)


def test_inbox_lists_caught_mail_and_shows_text_html_and_headers(client, dev_app, smtp_server, run_worker):
    signup(client, "ada@example.com")
    run_worker()
    (message,) = smtp_server.wait_for_messages(1)
    browser = dev_app.test_client()
    inbox = browser.get("/dev/mail/").get_data(as_text=True)
    assert "ada@example.com" in inbox and "Confirm your account" in inbox
    key = inbox.split('href="/dev/mail/')[1].split('"')[0]
    page = browser.get(f"/dev/mail/{key}").get_data(as_text=True)
    link = confirm_link(message)
    assert f'<a href="{link}"' in page  # the text part's link is clickable
    assert "srcdoc=" in page and "Message-Id" in page.replace("Message-ID", "Message-Id")
    assert browser.get("/dev/mail/no-such-key").status_code == 404


def test_previews_render_every_template_and_send_nothing(app, dev_app, smtp_server):
    page = dev_app.test_client().get("/dev/previews/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    from app.dev.previews import PREVIEWS

    folder = ROOT / "app" / "templates" / "email"
    names = sorted({"email/" + path.stem for path in folder.iterdir()})

    assert names == sorted(PREVIEWS)  # every template on disk has sample data
    assert "email/confirm" in names
    for name in names:
        assert f'id="preview-{name.replace("/", "-")}"' in html
    assert smtp_server.messages == []
    assert mailers_queue(app).count == 0


def test_hub_links_the_tools_and_summarises_each_redis_role(dev_app):
    html = dev_app.test_client().get("/dev/").get_data(as_text=True)
    for link in ('href="/rq/"', 'href="/dev/mail/"', 'href="/dev/previews/"'):
        assert link in html
    for role in ("jobs", "cache", "sessions"):
        assert f"<td>{role} " in html
    assert "noeviction" in html and ">on<" in html
    import re

    counts = re.findall(r'<td class="key-count">([^<]*)</td>', html)
    assert len(counts) == 3 and all(count.isdigit() for count in counts)


def test_dashboard_lists_failed_json_jobs(app, client, dev_app, smtp_server, run_worker):
    smtp_server.handler.always_refuse = "550 5.1.1 No such mailbox"
    signup(client, "ada@example.com")
    run_worker()
    job_id = mailers_queue(app).failed_job_registry.get_job_ids()[0]
    dashboard = dev_app.test_client()
    assert dashboard.get("/rq/0/view/jobs/mailers/failed/8/asc/1").status_code == 200
    listed = dashboard.get("/rq/0/data/jobs/mailers/failed/8/asc/1.json")
    assert listed.status_code == 200
    assert job_id in listed.get_data(as_text=True)
    assert dashboard.get(f"/rq/0/data/job/{job_id}.json").status_code == 200
    assert dashboard.get("/rq/0/view/jobs", follow_redirects=True).status_code == 200


def test_rq_suspend_pauses_an_idle_worker_and_rq_resume_lets_it_go_on(app, client, smtp_server, worker_env, start_worker):
    import redis
    from rq import Worker
    from rq.suspension import resume, suspend

    start_worker(worker_env)  # idle: waiting for a job, as the one python3 dev.py runs usually is
    connection = redis.Redis.from_url(app.config["RQ_REDIS_URL"])
    suspend(connection)
    wait_for(lambda: [w.get_state() for w in Worker.all(connection=connection)] == ["suspended"],
             timeout=30, message="the idle worker to see `rq suspend`")
    signup(client, "ada@example.com")
    queue = mailers_queue(app)
    assert queue.count == 1 and smtp_server.messages == []  # a suspended worker takes no job
    resume(connection)
    smtp_server.wait_for_messages(1)
    wait_for(lambda: queue.count == 0, timeout=10, message="the queue to empty")


def test_dashboard_pages_link_the_stylesheet_that_fits_their_tables(dev_app):
    html = dev_app.test_client().get("/rq/", follow_redirects=True).get_data(as_text=True)
    assert 'href="/dev/static/dashboard.css"' in html
    with dev_app.test_client().get("/dev/static/dashboard.css") as css:
        assert css.status_code == 200 and b"table#queues" in css.data


def test_flask_redis_talks_to_the_apps_redis(dev_app):
    runner = dev_app.test_cli_runner()
    assert runner.invoke(args=["redis", "ping"]).output == "PONG\n"
    assert runner.invoke(args=["redis", "config", "get", "appendonly"]).output == "appendonly\nyes\n"
    assert runner.invoke(args=["redis", "llen", "rq:queue:mailers"]).output == "0\n"
    failed = runner.invoke(args=["redis", "no-such-command"])
    assert failed.exit_code == 1 and "Error: ResponseError" in failed.output


def test_dev_web_server_watches_only_the_projects_own_files():
    from devtools.devserver import changed_file, watched_paths

    watched = watched_paths()
    assert ROOT / "app" / "__init__.py" in watched and ROOT / "config.py" in watched
    assert all(ROOT in path.parents for path in watched)
    assert not [path for path in watched if ".venv" in path.parts or "site-packages" in path.parts]
    assert len(watched) < 500  # the project's files, not a Python installation's
    assert changed_file({ROOT / "a.py": 1}, {ROOT / "a.py": 2}) == ROOT / "a.py"
    assert changed_file({ROOT / "a.py": 1}, {ROOT / "a.py": 1}) is None


def test_dev_tools_answer_this_machine_only(dev_app):
    """A development app reached from another machine (deployed by mistake, FLASK_CONFIG unset) shows no dev tool."""
    paths = ("/rq/", "/dev/", "/dev/mail/", "/dev/announce")
    here = dev_app.test_client()  # REMOTE_ADDR 127.0.0.1
    elsewhere = dev_app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    assert [here.get(path).status_code for path in paths] == [200] * len(paths)
    assert [elsewhere.get(path).status_code for path in paths] == [404] * len(paths)
    assert elsewhere.get("/").status_code == 200  # the app itself still answers
    dev_app.config["DEV_TOOLS_ALLOW_REMOTE"] = True  # a VM's or a container's host, on a trusted network
    assert [elsewhere.get(path).status_code for path in paths] == [200] * len(paths)


@pytest.fixture()
def dev_server(dev_app):
    """The development app served over real HTTP on a free loopback port (Werkzeug's server, in a thread)."""
    server = make_server("127.0.0.1", free_port(), dev_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    thread.join(5)


def status_of(port, path, headers, method="GET"):
    """Send one request to 127.0.0.1:port with exactly these headers (Host included); return the status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest(method, path, skip_host=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


def test_dev_tools_refuse_a_host_name_other_than_loopback(dev_server):
    """DNS rebinding: a page on evil.example, its name now pointing at 127.0.0.1, must not read /dev/mail/ or /rq/."""
    port = dev_server
    paths = ("/rq/", "/dev/", "/dev/mail/")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        assert [status_of(port, path, {"Host": host}) for path in paths] == [200] * len(paths), host
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}"):
        assert [status_of(port, path, {"Host": host}) for path in paths] == [404] * len(paths), host
    assert status_of(port, "/", {"Host": f"evil.example:{port}"}) == 200  # the app itself still answers


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": "203.0.113.9"},  # ngrok, nginx, most load balancers
        {"Forwarded": "for=203.0.113.9"},
        {"X-Real-IP": "203.0.113.9"},
        {"X-Forwarded-Host": "tunnel.example"},
    ],
)
def test_dev_tools_refuse_a_request_that_came_through_a_proxy_or_tunnel(dev_server, header):
    """A same-host tunnel or proxy makes every visitor's peer 127.0.0.1; its forwarding header gives it away."""
    port = dev_server
    assert status_of(port, "/dev/mail/", {"Host": f"localhost:{port}", **header}) == 404
    assert status_of(port, "/rq/", {"Host": f"localhost:{port}", **header}) == 404


def test_a_dev_tools_post_from_another_origin_is_refused(dev_app):
    """Another site's page may post to http://localhost:5000/rq/... (the dashboard's token leaked or not): 403."""
    client = dev_app.test_client()
    page = client.get("/rq/0/view/queues", follow_redirects=True).get_data(as_text=True)
    token = {"X-CSRFToken": page.split("'X-CSRFToken': '")[1].split("'")[0]}
    own = dev_app.config["SITE_URL"]  # the test client's Host (SERVER_NAME), http://localhost:5000
    for origin in ("http://evil.example", "null", "http://localhost:5001"):
        assert client.post("/rq/requeue/mailers", headers={**token, "Origin": origin}).status_code == 403, origin
    assert client.post("/rq/requeue/mailers", headers={**token, "Origin": own}).status_code == 200
    dev_app.config["DEV_TOOLS_ALLOW_REMOTE"] = True  # open to other machines, still not to other sites
    assert client.post("/rq/requeue/mailers", headers={**token, "Origin": "http://evil.example"}).status_code == 403
