"""Redis behind Sentinel on one host: every role follows a failover, and a signup waits for a replica."""

import threading
import time
from urllib.parse import urlsplit

import pytest
import redis

from app.connections import FailoverRedis, parse_sentinel_url, sentinel_of, wait_for_replica
from tests.conftest import process_env
from tests.sentinel_support import (
    SERVICE,
    DelayedLink,
    ReplicaServer,
    SentinelServer,
    primary_address,
    ready,
    sentinel_url,
)
from tests.support import RedisServer, confirm_link, login, signup, wait_for

# --- the URL, alone -------------------------------------------------------------------------

def test_sentinel_url_is_parsed_into_sentinels_service_and_db():
    where = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,sentinel-2:26380/mymaster/2")
    assert where.sentinels == (("10.0.0.1", 26379), ("sentinel-2", 26380))
    assert (where.service, where.db, where.username, where.password) == ("mymaster", 2, None, "s3cret")
    assert where.for_limits() == "redis+sentinel://:s3cret@10.0.0.1:26379,sentinel-2:26380/mymaster"
    assert parse_sentinel_url("redis://localhost:6379/0") is None


@pytest.mark.parametrize("url, complaint", [
    ("redis+sentinel:///mymaster/0", "no Sentinel address"),
    ("redis+sentinel://host/mymaster", "not host:port"),
    ("redis+sentinel://host:26379", "/service-name"),
    ("redis+sentinel://host:26379/mymaster/zero", "/service-name"),
])
def test_a_malformed_sentinel_url_is_refused_with_what_is_wrong(url, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_sentinel_url(url)


def test_rq_worker_connection_class_reads_sentinel_urls():
    client = FailoverRedis.from_url("redis+sentinel://a:26379,b:26379/mymaster/1")
    assert sentinel_of(client) is not None
    assert client.connection_pool.service_name == "mymaster"
    assert client.connection_pool.connection_kwargs["db"] == 1
    assert client.get_retry().get_retries() > 0
    assert sentinel_of(FailoverRedis.from_url("redis://localhost:6379/0")) is None


def made(directory):
    """Create a directory and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory


# --- a primary, a replica and three Sentinels on loopback -----------------------------------

@pytest.fixture()
def redis_ha(tmp_path):
    """A primary and a replica (AOF), watched by three Sentinels; all stopped after the test."""
    primary = RedisServer(made(tmp_path / "primary")).start()
    replica = ReplicaServer(tmp_path / "replica", "127.0.0.1", primary.port).start()
    sentinels = [SentinelServer(tmp_path / f"sentinel-{n}", primary.port).start() for n in range(3)]
    try:
        clients = [sentinel.client() for sentinel in sentinels]
        wait_for(lambda: ready(clients), timeout=30, message="Sentinels to see each other and the replica")
        yield primary, replica, sentinels
    finally:
        for process in (*sentinels, replica, primary):
            process.stop()


def test_app_and_worker_follow_a_failover_without_a_restart(redis_ha, make_app, smtp_server, start_worker):
    primary, replica, sentinels = redis_ha
    url = sentinel_url([("127.0.0.1", sentinel.port) for sentinel in sentinels])
    app = make_app(url)
    start_worker(process_env(app))
    client = app.test_client()
    assert signup(client, "before@example.com").status_code == 302
    (mail,) = smtp_server.wait_for_messages(1)
    login(client, "before@example.com")
    client.get(urlsplit(confirm_link(mail)).path)
    assert "before@example.com" in client.get("/").get_data(as_text=True)  # signed in

    # Sentinel promotes the replica; the old primary becomes a replica (READONLY to our open connections).
    sentinels[0].client().sentinel_failover(SERVICE)
    wait_for(lambda: all(primary_address(s.client()) == ("127.0.0.1", replica.port) for s in sentinels),
             timeout=30, message="every Sentinel to name the new primary")
    wait_for(lambda: redis.Redis(port=primary.port).info("replication")["role"] == "slave",
             timeout=30, message="the old primary to be demoted")

    # The first request after the failover already works, and the user is still signed in.
    page = client.get("/")
    assert page.status_code == 200
    assert "before@example.com" in page.get_data(as_text=True)
    smtp_server.handler.refusals = ["451 4.3.0 Try again later"]  # the retry needs the worker's scheduler
    assert signup(app.test_client(), "after@example.com").status_code == 302
    messages = smtp_server.wait_for_messages(2, timeout=60)  # the worker and its scheduler follow too
    assert sorted(m["To"] for m in messages) == ["after@example.com", "before@example.com"]
    assert redis.Redis(port=replica.port).llen("rq:queue:mailers") == 0  # taken from the new primary

    def doctor():
        return app.test_cli_runner().invoke(args=["doctor"]).output

    # The old primary, resynced as the new primary's replica.
    report = wait_for(lambda: (lambda out: out if f"127.0.0.1:{primary.port} online" in out else None)(doctor()),
                      timeout=30, message="doctor to show the old primary as an online replica")
    assert f"primary 127.0.0.1:{replica.port}" in report


def test_a_request_rides_out_a_dropped_connection(tmp_path, make_app):
    server = RedisServer(made(tmp_path / "redis")).start()
    try:
        app = make_app(server.url)
        client = app.test_client()
        assert signup(client, "ada@example.com").status_code == 302
        assert login(client, "ada@example.com").status_code == 302
        server.kill()  # every open connection is gone; the session is in the AOF
        answer = {}
        request = threading.Thread(target=lambda: answer.update(page=client.get("/")))
        request.start()
        time.sleep(0.5)  # the request is retrying by now
        server.start()
        request.join(timeout=30)
        assert answer["page"].status_code == 302  # signed in, sent on to confirm the account
        assert answer["page"].location.endswith("/auth/unconfirmed")
    finally:
        server.stop()


def test_a_command_in_flight_when_the_primary_dies_reaches_the_new_primary(redis_ha):
    primary, replica, sentinels = redis_ha
    url = sentinel_url([("127.0.0.1", s.port) for s in sentinels])
    worker_connection = FailoverRedis.from_url(url)  # what `rq worker` dequeues with
    worker_connection.ping()
    outcome = {}

    def dequeue():  # like the worker's BLMOVE, waiting for a job
        try:
            outcome["job"] = worker_connection.blmove("rq:queue:test", "rq:taken:test", 0)
        except redis.exceptions.RedisError as exc:
            outcome["error"] = exc

    waiting = threading.Thread(target=dequeue)
    waiting.start()
    wait_for(lambda: redis.Redis(port=primary.port).info("clients")["blocked_clients"] == 1, message="the dequeue to block")
    primary.kill()
    wait_for(lambda: primary_address(sentinels[0].client()) == ("127.0.0.1", replica.port), timeout=30,
             message="Sentinel to promote the replica")
    redis.Redis(port=replica.port).lpush("rq:queue:test", "job-1")
    waiting.join(timeout=90)
    worker_connection.close()
    sentinel_of(worker_connection).close()
    assert outcome == {"job": b"job-1"}


def test_doctor_reports_primary_replica_and_lag(redis_ha, make_app):
    primary, replica, sentinels = redis_ha
    app = make_app(sentinel_url([("127.0.0.1", s.port) for s in sentinels]))
    result = app.test_cli_runner().invoke(args=["doctor"])
    assert f"{SERVICE} (jobs): primary 127.0.0.1:{primary.port}, replica(s) 127.0.0.1:{replica.port} online, lag " in result.output
    assert "bytes behind" in result.output
    assert f" at Sentinel service {SERVICE}/0, AOF " in result.output  # not the unnamed "?:/0"


def test_doctor_says_when_no_replica_is_connected(redis_ha, make_app):
    primary, replica, sentinels = redis_ha
    app = make_app(sentinel_url([("127.0.0.1", s.port) for s in sentinels]))
    replica.stop()
    wait_for(lambda: redis.Redis(port=primary.port).info("replication")["connected_slaves"] == 0,
             timeout=10, message="the primary to notice its replica left")
    result = app.test_cli_runner().invoke(args=["doctor"])
    assert "no replica connected: a failover has nowhere to go" in result.output
    assert result.exit_code == 1


# --- durability: WAIT for a replica ---------------------------------------------------------

@pytest.fixture()
def lagging_replica(tmp_path):
    """A primary whose replica gets every write a full second late (through DelayedLink)."""
    primary = RedisServer(made(tmp_path / "primary")).start()
    link = DelayedLink(primary.port, delay=1.0).start()
    replica = ReplicaServer(tmp_path / "replica", "127.0.0.1", link.port).start()
    try:
        wait_for(lambda: redis.Redis(port=replica.port).info("replication").get("master_link_status") == "up",
                 timeout=30, message="the replica to sync")
        yield primary, replica
    finally:
        replica.stop()
        link.stop()
        primary.stop()


def test_signup_answers_only_once_a_replica_has_the_mail_job(lagging_replica, make_app):
    primary, replica = lagging_replica
    app = make_app(primary.url, RQ_WAIT_REPLICAS=1, RQ_WAIT_TIMEOUT_MS=30_000)
    assert signup(app.test_client(), "kept@example.com").status_code == 302
    # Were the primary killed now, the replica Sentinel promotes would still have the job.
    assert redis.Redis(port=replica.port).llen("rq:queue:mailers") == 1


def test_an_unconfirmed_wait_does_not_stop_the_signup(lagging_replica, make_app):
    primary, replica = lagging_replica
    app = make_app(primary.url, RQ_WAIT_REPLICAS=1, RQ_WAIT_TIMEOUT_MS=50)
    assert signup(app.test_client(), "late@example.com").status_code == 302
    assert redis.Redis(port=primary.port).llen("rq:queue:mailers") == 1
    with app.app_context():
        assert wait_for_replica() == 0  # a second late: nobody confirmed within 50 ms
