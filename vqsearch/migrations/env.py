"""Alembic's entry point: runs the revisions on the connection `vqsearch.migrations.config` carries,
inside its transaction (there is no offline mode)."""

from alembic import context

from vqsearch.schema import Base

context.configure(connection=context.config.attributes["connection"], target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
