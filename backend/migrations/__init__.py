"""Alembic migrations of the consolidation schema (packaged as omoi_os.alembic)."""
