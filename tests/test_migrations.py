"""The migrations build the schema on SQLite (every app fixture) and on PostgreSQL."""

import os
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from app import create_app
from tests.support import redis_overrides

# Opt-in: the test creates and drops a database, so it never touches a PostgreSQL it was not
# pointed at, e.g. TEST_POSTGRES_ADMIN_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres
ADMIN_URL = os.environ.get("TEST_POSTGRES_ADMIN_URL")


@pytest.fixture()
def postgres_url():
    """A fresh, empty PostgreSQL database, dropped afterwards; skipped where no server answers."""
    if not ADMIN_URL:
        pytest.skip("PostgreSQL test is opt-in: set TEST_POSTGRES_ADMIN_URL to an admin URL")
    try:
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server here"
        pytest.skip(f"no PostgreSQL at {ADMIN_URL} ({type(exc).__name__}); set TEST_POSTGRES_ADMIN_URL")
    name = f"flask_mailer_test_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'create database "{name}"'))
    yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as connection:
        connection.execute(text(f'drop database "{name}" with (force)'))
    admin.dispose()


def test_migrations_run_on_postgresql(postgres_url, redis_url):
    from flask_migrate import downgrade, upgrade

    from app.web_extensions import db

    app = create_app("testing", {**redis_overrides(redis_url), "SQLALCHEMY_DATABASE_URI": postgres_url})
    with app.app_context():
        upgrade()
        inspector = inspect(db.engine)
        assert "users" in inspector.get_table_names()
        columns = {column["name"] for column in inspector.get_columns("users")}
        assert {"id", "email", "password_hash", "created_at", "confirmed_at"} <= columns
        assert any(index["unique"] for index in inspector.get_indexes("users"))
        downgrade(revision="base")
        assert "users" not in inspect(db.engine).get_table_names()
        db.engine.dispose()
