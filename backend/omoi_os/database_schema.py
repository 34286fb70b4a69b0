"""Where our tables live: the `database_schema` setting, and the databases that have
schemas (PostgreSQL does; SQLite does not). Shared by the migrations, which create
the schema, and the database handle, which translates our tables into it."""

from __future__ import annotations


class SchemaUnsupported(ValueError):
    """A schema was asked for on a database that has none (SQLite)."""

    def __init__(self, schema: str) -> None:
        super().__init__(
            f"OMOI_DATABASE_SCHEMA={schema!r}: SQLite has no schemas; give omoi-os a "
            "database file of its own instead (OMOI_DATABASE_URL)"
        )
        self.schema = schema


def check_schema_supported(dialect: str, schema: str | None) -> None:
    """SchemaUnsupported for a schema on SQLite."""
    if schema is not None and dialect == "sqlite":
        raise SchemaUnsupported(schema)
