"""Alembic revisions of the consolidation schema."""
