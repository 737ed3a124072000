"""`flask` commands: doctor (is everything wired right?) and redis-peek (what is in Redis?)."""

import json
import os
import smtplib
import socket
import sys
import zlib

import click
from flask import current_app
from flask.cli import with_appcontext
from redis.exceptions import RedisError
from rq import Worker

from app.connections import ROLE_KEY_PREFIXES, ROLE_URL_SETTINGS, describe_server, get_queue, redis_client, sentinel_of
from app.redis_info import (
    limits_problems,
    limits_status,
    memory_problems,
    role_problems,
    role_status,
    scan_keys,
    topology_problems,
)
from app.unreachable import refused_roles, refused_status, refuses, what_to_start


def register_cli(app):
    """Attach the commands to the app's `flask` CLI."""
    app.cli.add_command(doctor)
    app.cli.add_command(redis_peek)
    app.cli.add_command(announce_command)
    app.cli.add_command(send_test_mail)
    app.cli.add_command(outbox_command)


def check_worker():
    """Return (ok, text) for 'some rq worker listens on mailers'."""
    try:
        queue = get_queue("mailers")
        workers = Worker.all(queue=queue)
    except Exception as exc:  # an unreachable jobs Redis is reported by the role check too
        return False, f"cannot list workers: {exc}"
    # A worker killed without a goodbye stays registered until its key expires (~80 s); on this
    # machine its pid tells at once whether it still runs.
    dead = [worker for worker in workers if worker.hostname == socket.gethostname() and not pid_runs(worker.pid)]
    workers = [worker for worker in workers if worker not in dead]
    if not workers:
        gone = f" ({len(dead)} registered worker(s) no longer run here)" if dead else ""
        return False, f"no rq worker listens on 'mailers'{gone}: queued mail waits until one starts (see Procfile)"
    names = ", ".join(worker.name for worker in workers)
    return True, f"{len(workers)} worker(s) on 'mailers': {names}"


def pid_runs(pid):
    """True if a process with this pid exists on this machine."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # someone else's process, or no pid recorded: assume it runs
    return True


def check_smtp():
    """Return (ok, text) for 'the SMTP server answers'."""
    config = current_app.config
    try:
        with smtplib.SMTP(config["MAIL_SERVER"], config["MAIL_PORT"], local_hostname=config["MAIL_LOCAL_HOSTNAME"], timeout=5) as smtp:
            code, banner = smtp.noop()
    except (OSError, smtplib.SMTPException) as exc:
        return False, f"{config['MAIL_SERVER']}:{config['MAIL_PORT']} unreachable: {exc}"
    return code == 250, f"{config['MAIL_SERVER']}:{config['MAIL_PORT']} answers ({code})"


# --8<-- [start:check_sentinels]
def check_sentinels():
    """Return [("sentinel", (ok, text))] for each Sentinel-managed role: its primary, replicas and their lag."""
    checks, seen = [], set()
    for role in ROLE_URL_SETTINGS:
        client = redis_client(role)
        sentinel = sentinel_of(client)
        service = getattr(client.connection_pool, "service_name", None)
        if sentinel is None or (service, client.connection_pool.connection_kwargs.get("db")) in seen:
            continue
        seen.add((service, client.connection_pool.connection_kwargs.get("db")))
        checks.append(("sentinel", describe_replication(role, client, sentinel, service)))
    return checks


def describe_replication(role, client, sentinel, service):
    """(ok, text) for one Sentinel service: where the primary is, and how far behind each replica is."""
    try:
        host, port = sentinel.discover_master(service)
        info = client.info("replication")
    except Exception as exc:  # no Sentinel answers, or the primary it names is down
        return False, f"{service} ({role}): no primary reachable: {exc}"
    replicas = [value for key, value in sorted(info.items()) if key.startswith("slave") and isinstance(value, dict)]
    if not replicas:
        return False, f"{service} ({role}): primary {host}:{port}, no replica connected: a failover has nowhere to go"
    offset = info.get("master_repl_offset", 0)
    described = ", ".join(
        f"{r['ip']}:{r['port']} {r['state']}, lag {r['lag']} s, {offset - r['offset']} bytes behind" for r in replicas
    )
    online = all(r["state"] == "online" for r in replicas)
    return online, f"{service} ({role}): primary {host}:{port}, replica(s) {described}"
# --8<-- [end:check_sentinels]


@click.command("doctor")
@with_appcontext
def doctor():
    """Check each Redis role and their topology, a worker on `mailers` and the SMTP server; exit 1 on a problem."""
    failed = False
    refused = refused_roles()  # asked first, in a second: the role clients would retry each for seconds
    statuses = {
        role: {**refused_status(role, refused[role]), "where": describe_server(redis_client(role))}
        if role in refused else role_status(role)
        for role in ROLE_URL_SETTINGS
    }
    for role, status in statuses.items():
        problems = role_problems(status)
        failed |= bool(problems)
        mark = "FAIL" if problems else "ok"
        detail = (
            f"Redis {status['version']} at {status['where']}, AOF {'on' if status['aof'] else 'off'}, "
            f"maxmemory-policy {status['maxmemory_policy']}"
            if status["ok"]
            else status["where"]
        )
        click.echo(f"[{mark:4}] {role:8} {detail}")
        for problem in problems:
            click.echo(f"         - {problem}")
    # One server for every role is fine in development; in production it lets sessions starve the queue.
    shared = topology_problems(statuses)
    strict = current_app.config["CONFIG_NAME"] == "production"
    failed |= bool(shared) and strict
    for problem in shared:
        click.echo(f"[{'FAIL' if strict else 'note':4}] topology {problem}")
    failed |= check_limits_and_memory(statuses, strict, refused)
    worker = (False, "not checked: the jobs Redis does not answer") if "jobs" in refused else check_worker()
    for name, (ok, text) in (("worker", worker), ("smtp", check_smtp()), *check_sentinels()):
        failed |= not ok
        click.echo(f"[{'ok' if ok else 'FAIL':4}] {name:8} {text}")
    click.echo("Problems found." if failed else "All good.")
    config = current_app.config
    for line in what_to_start(refused, refuses(config["MAIL_SERVER"], config["MAIL_PORT"])):
        click.echo(line)
    sys.exit(1 if failed else 0)


def check_limits_and_memory(statuses, strict, refused):
    """Print where the rate-limit counters go and which servers lack a maxmemory; True if that fails production."""
    limits = refused_status("limits", refused["limits"]) if "limits" in refused else limits_status(current_app.config)
    problems = [("limits", problem) for problem in limits_problems(limits, statuses.get("jobs", {}))]
    problems += [("memory", problem) for problem in memory_problems(statuses)]
    if limits is not None and not any(name == "limits" for name, _ in problems):
        click.echo(f"[ok  ] limits   rate-limit counters on {limits['where']}, maxmemory-policy {limits['maxmemory_policy']}")
    for name, problem in problems:
        click.echo(f"[{'FAIL' if strict else 'note':4}] {name:8} {problem}")
    return bool(problems) and strict


def decode_value(raw):
    """Show a stored value readably: JSON if it is JSON (or zlib-compressed JSON), else a safe repr.

    Never unpickles: a value that is not JSON is shown as bytes, not executed.
    """
    for candidate in (raw, safe_decompress(raw)):
        if candidate is None:
            continue
        try:
            return json.loads(candidate)
        except (ValueError, UnicodeDecodeError):
            continue
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    return text if text.isprintable() else repr(raw[:120])


def safe_decompress(raw):
    """RQ compresses job data with zlib; return the inflated bytes or None."""
    try:
        return zlib.decompress(raw)
    except (zlib.error, TypeError):
        return None


def read_key(client, key):
    """Return (type, value) of one key, decoded for display."""
    kind = client.type(key).decode()
    if kind == "string":
        return kind, decode_value(client.get(key))
    if kind == "hash":
        return kind, {field.decode(): decode_value(value) for field, value in client.hgetall(key).items()}
    if kind == "list":
        return kind, [decode_value(item) for item in client.lrange(key, 0, 9)]
    if kind == "zset":
        return kind, [member.decode() for member in client.zrange(key, 0, 9)]
    if kind == "set":
        return kind, sorted(member.decode() for member in client.sscan_iter(key, count=10))
    return kind, None


@click.command("redis-peek")
@with_appcontext
@click.option("--role", type=click.Choice(list(ROLE_URL_SETTINGS)), multiple=True, help="Only these roles.")
@click.option("--limit", default=20, show_default=True, help="Keys shown per role.")
def redis_peek(role, limit):
    """List keys by role (cache, sessions, jobs) with TTL and decoded value."""
    for name in role or ROLE_URL_SETTINGS:
        client = redis_client(name)
        prefixes = ROLE_KEY_PREFIXES[name]
        click.secho(f"== {name} ({' '.join(p + '*' for p in prefixes)}) on {describe_server(client)}", bold=True)
        keys = sorted(scan_keys(client, prefixes))
        for key in keys[:limit]:
            kind, value = read_key(client, key)
            ttl = client.ttl(key)
            click.echo(f"{key.decode()}  [{kind}, ttl {'none' if ttl == -1 else f'{ttl}s'}]")
            click.echo("    " + json.dumps(value, default=str, ensure_ascii=False)[:2000])
        if len(keys) > limit:
            click.echo(f"... and {len(keys) - limit} more")
        if not keys:
            click.echo("(no keys)")


@click.command("announce")
@click.option("--subject", required=True, help="The mail's subject.")
@click.option("--body", required=True, help="The text of the announcement.")
@with_appcontext
def announce_command(subject, body):
    """Mail an announcement to every confirmed user, in batched jobs on `mailers`."""
    from app.mail.announcements import announce
    from app.mail.messages import has_line_break

    if has_line_break(subject):
        raise click.BadParameter("line breaks are not allowed", param_hint="--subject")
    announcement_id, batches, recipients = announce(subject, body)
    click.echo(f"announcement {announcement_id}: {recipients} recipient(s) in {batches} batch job(s) on 'mailers'")


@click.command("send-test-mail")
@click.argument("address")
@with_appcontext
def send_test_mail(address):
    """Send the confirmation mail, with a dummy link, to ADDRESS: deliver_later() and a commit, as in a view."""
    from app.mail.delivery import deliver_later
    from app.mail.messages import has_line_break, sample_confirmation
    from app.web_extensions import db

    if has_line_break(address) or "@" not in address:
        raise click.BadParameter("an email address, on one line", param_hint="ADDRESS")
    with current_app.test_request_context():
        mail = deliver_later(**sample_confirmation(address))
        db.session.commit()  # the outbox row is committed; the job is enqueued right after
    try:
        click.echo(f"queued job {mail.job_id} on 'mailers' ({get_queue('mailers').count} waiting)")
    except RedisError:
        click.echo(f"job {mail.job_id} not queued yet (the jobs Redis is not answering): the outbox sweeper queues it")


# --8<-- [start:outbox]
@click.group("outbox")
def outbox_command():
    """The mail outbox (app/mail/delivery.py): mails committed with their data, until they are sent."""


@outbox_command.command("sweep")
@click.option("--forever", is_flag=True, help="Sweep every OUTBOX_SWEEP_INTERVAL seconds until stopped (the Procfile's `outbox:` line).")
@with_appcontext
def outbox_sweep(forever):
    """Enqueue again the outbox mails whose job Redis lost; clear those that were sent."""
    from app.mail.delivery import sweep, sweep_forever

    if forever:
        config = current_app.config
        click.echo(f"outbox: sweeping every {config['OUTBOX_SWEEP_INTERVAL']}s, grace {config['OUTBOX_GRACE_SECONDS']}s")
        sweep_forever(config["OUTBOX_SWEEP_INTERVAL"], echo=click.echo)  # until SIGTERM
    else:
        click.echo(f"outbox: {sweep()}")
# --8<-- [end:outbox]
