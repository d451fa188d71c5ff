"""Alembic revisions of pgbridge's schema (installed as ``pgbridge.migrations``)."""
