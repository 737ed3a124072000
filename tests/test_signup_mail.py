"""The durable mail path end to end: signup -> job in Redis -> rq worker -> SMTP -> confirm -> login."""

import hashlib
import json
import time

import redis

from app.models import User
from app.web_extensions import db
from tests.support import confirm_link, login, mailers_queue, signup


def test_signup_enqueues_and_worker_delivers_a_working_link(app, client, smtp_server, run_worker):
    response = signup(client, "ada@example.com")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/auth/check-inbox")

    # The request only enqueued: nothing reached SMTP, one JSON job waits on `mailers`.
    assert smtp_server.messages == []
    queue = mailers_queue(app)
    assert queue.count == 1
    job = queue.jobs[0]
    assert job.func_name == "app.mail.job.send_mail_job"
    assert job.kwargs["to"] == "ada@example.com"
    raw = redis.Redis.from_url(app.config["RQ_REDIS_URL"]).hget(f"rq:job:{job.id}", "data")
    json.loads(__import__("zlib").decompress(raw))  # stored as JSON, not pickle

    result = run_worker()
    assert result.returncode == 0, result.stderr

    (message,) = smtp_server.wait_for_messages(1)
    assert message["To"] == "ada@example.com"
    assert "Confirm your account" in message["Subject"]
    assert message["Message-ID"] == job.kwargs["message_id"]
    assert message.get_body(preferencelist=("html",)) is not None
    link = confirm_link(message)

    # Before confirming, login lands on "please confirm".
    login(client, "ada@example.com")
    assert client.get("/").headers["Location"].endswith("/auth/unconfirmed")

    path = link.split("localhost", 1)[1]
    confirmed = client.get(path)
    assert confirmed.status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(User).filter_by(email="ada@example.com")).confirmed

    home = client.get("/")
    assert home.status_code == 200
    assert "signed in as <strong>ada@example.com</strong>" in home.get_data(as_text=True)


def test_login_after_confirmation_in_a_fresh_browser(app, auth, smtp_server, run_worker):
    auth.signup("grace@example.com")
    run_worker()
    (message,) = smtp_server.wait_for_messages(1)
    assert auth.confirm(message).status_code == 302

    fresh = app.test_client()
    assert login(fresh, "grace@example.com", "wrong password!").status_code == 400
    response = login(fresh, "grace@example.com")
    assert response.status_code == 302
    assert "grace@example.com" in fresh.get("/").get_data(as_text=True)


def test_resend_enqueues_a_new_confirmation(app, client, smtp_server, run_worker):
    signup(client, "lin@example.com")
    login(client, "lin@example.com")
    page = client.get("/auth/unconfirmed").get_data(as_text=True)
    from tests.support import csrf_token

    assert client.post("/auth/resend", data={"csrf_token": csrf_token(page)}).status_code == 302
    assert mailers_queue(app).count == 2
    run_worker()
    first, second = smtp_server.wait_for_messages(2)
    assert confirm_link(first) != confirm_link(second) or first["Message-ID"] != second["Message-ID"]


def test_worker_reuses_at_most_max_connections_to_the_relay(app, smtp_server, run_worker, worker_env):
    for n in range(12):
        signup(app.test_client(), f"user{n}@example.com")
    run_worker(env={**worker_env, "MAIL_MAX_CONNECTIONS": "2"})
    assert len(smtp_server.wait_for_messages(12)) == 12
    assert 1 <= len(smtp_server.handler.sessions) <= 2  # 25 senders, two kept connections

    for n in range(3):
        signup(app.test_client(), f"again{n}@example.com")
    run_worker(env={**worker_env, "MAIL_MAX_CONNECTIONS": "1"})
    assert len(smtp_server.wait_for_messages(15)) == 15
    assert len(smtp_server.handler.sessions) <= 3  # one more connection, reused mail after mail


def test_the_worker_takes_jobs_with_blmove_so_a_taken_job_is_never_in_no_list(app, client, smtp_server, worker_env, start_worker):
    """From one queue RQ moves a job into rq:wip:<queue> as it takes it; from several it pops it (BLPOP) into nowhere."""
    jobs_redis = redis.Redis.from_url(app.config["RQ_REDIS_URL"])  # the test's own server, never the shared one
    start_worker(worker_env)
    time.sleep(1)  # the worker is now blocked, waiting for a job
    jobs_redis.config_resetstat()
    signup(client, "ada@example.com")
    smtp_server.wait_for_messages(1)
    used = {name.removeprefix("cmdstat_") for name in jobs_redis.info("commandstats")}
    assert "blmove" in used, sorted(used)
    assert not used & {"blpop", "lpop", "brpop", "rpop"}, sorted(used)


def three_signups_sent_by_a_burst_worker(app, client, smtp_server, run_worker, prefix):
    """Three signups, then Redis's scripts and command counts reset, then a burst worker sends the three mails.

    Returns the jobs' Redis client and the ids of the three jobs.
    """
    jobs_redis = redis.Redis.from_url(app.config["RQ_REDIS_URL"])
    for number in range(3):
        signup(client, f"{prefix}{number}@example.com")
    job_ids = mailers_queue(app).job_ids
    jobs_redis.script_flush()  # only scripts loaded from now on count
    jobs_redis.config_resetstat()
    result = run_worker()
    assert result.returncode == 0, result.stderr
    assert len(smtp_server.wait_for_messages(3)) == 3
    return jobs_redis, job_ids


def test_a_job_already_waiting_is_taken_and_read_by_one_script_that_still_moves_it_into_rq_wip(app, client, smtp_server, run_worker):
    """rq_threads.dequeue: LMOVE into rq:wip:<queue> and the job hash's HGETALL in one Lua script, one round trip per job."""
    from rq_threads.dequeue import TAKE_AND_READ

    jobs_redis, _ = three_signups_sent_by_a_burst_worker(app, client, smtp_server, run_worker, "waiting")
    assert jobs_redis.script_exists(hashlib.sha1(TAKE_AND_READ.encode()).hexdigest()) == [True]
    stats = jobs_redis.info("commandstats")
    assert stats["cmdstat_lmove"]["calls"] >= 3  # inside the script: still moved into rq:wip:mailers
    assert not {name.removeprefix("cmdstat_") for name in stats} & {"blpop", "lpop", "brpop", "rpop"}


def test_a_job_without_dependents_records_its_success_in_one_script_without_watch(app, client, smtp_server, run_worker):
    """rq_threads.transaction: RQ's success writes sent as one script that checks the dependents set, one round trip."""
    from rq.job import Job
    from rq.registry import FinishedJobRegistry
    from rq.serializers import JSONSerializer

    from rq_threads.transaction import RUN_UNLESS_EXISTS

    jobs_redis, job_ids = three_signups_sent_by_a_burst_worker(app, client, smtp_server, run_worker, "finished")
    assert jobs_redis.script_exists(hashlib.sha1(RUN_UNLESS_EXISTS.encode()).hexdigest()) == [True]
    stats = jobs_redis.info("commandstats")
    assert "cmdstat_watch" not in stats  # RQ's own path WATCHes the dependents set before it reads it
    # What RQ's transaction writes, written: finished, in the finished registry, one successful result each.
    assert sorted(FinishedJobRegistry("mailers", connection=jobs_redis).get_job_ids()) == sorted(job_ids)
    for job_id in job_ids:
        job = Job.fetch(job_id, connection=jobs_redis, serializer=JSONSerializer)
        assert job.get_status() == "finished" and job.latest_result().type.name == "SUCCESSFUL"


def test_the_worker_logs_two_lines_per_mail_the_job_taken_and_job_ok(app, client, smtp_server, run_worker):
    """RQ's INFO lines for one mail, less the two that repeat them (its time taken, how long its result is kept)."""
    signup(client, "ada@example.com")
    job_id = mailers_queue(app).jobs[0].id
    result = run_worker()
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if job_id in line]  # rq worker logs to stdout
    assert len(lines) == 2, lines
    assert "mailers: mail email/confirm to ada@example.com" in lines[0]
    assert "Job OK" in lines[1]
