"""The revisions, one per schema version (alembic loads them by path)."""
