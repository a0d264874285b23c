"""Schema 4: each generation names its FAISS files (`kinds`), and track ids are never reused
(`last_track_id`), so an id in a FAISS file of any generation from `unique_ids_from` on is the same
track as now: `repair` relies on both. A vqsearch that knows only 1-3 refuses it.

The ids an index of 3 gave are known to be unique only from its current generation on.
"""

from alembic import op
from sqlalchemy import text

from vqsearch.migrations import pin_kinds, read_meta, set_schema, write_meta

revision = "4"
down_revision = "3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    pin_kinds(bind)
    last = bind.scalar(text("SELECT max(id) FROM tracks")) or 0
    write_meta(bind, last_track_id=str(last), unique_ids_from=read_meta(bind).get("generation", "0"))
    set_schema(bind, "4")


def downgrade() -> None:
    op.execute("DELETE FROM meta WHERE key IN ('kinds', 'last_track_id', 'unique_ids_from')")
    set_schema(op.get_bind(), "3")
