"""Throw-away PostgreSQL databases, for our tests and benchmarks and a host's own.

    with scratch_database() as url:      # created, migrated, dropped afterwards
        ...

The server is `OMOI_TEST_POSTGRES_URL` (default: postgres@127.0.0.1:5432, trust
auth); each database gets a unique name, so parallel runs never meet.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.engine import make_url

from omoi_os import migrations

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """The URL of a database on the test server that we may connect to as an admin."""
    return os.environ.get("OMOI_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def libpq_url(url: str) -> str:
    """`url` as psycopg (libpq) wants it: no SQLAlchemy driver name."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def admin_execute(sql: str) -> None:
    with psycopg.connect(libpq_url(admin_url()), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def create_database(prefix: str = "omoi_test") -> str:
    """Create an empty database with a unique name; returns its SQLAlchemy URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin_execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url()).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    admin_execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@contextmanager
def scratch_database(prefix: str = "omoi_test", *, migrate: bool = True) -> Iterator[str]:
    """A new database (migrated unless `migrate` is False), dropped afterwards."""
    url = create_database(prefix)
    try:
        if migrate:
            migrations.upgrade(url)
        yield url
    finally:
        drop_database(url)
