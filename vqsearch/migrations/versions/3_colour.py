"""Schema 3: track colours (colour-<gen>.faiss), and the gaps of videos indexed with --allow-partial.

An index of 2 has no colour file: its next write that adds a video gives the tracks it holds
uniform colour histograms (`Store._working_vectors`); until then `kinds` pins the files it names,
as schema 3's rule would expect a colour file. partial_videos came while the schema was still 2,
so an index of 2 may lack it.
"""

import sqlalchemy as sa
from alembic import op

from vqsearch.migrations import lacks, pin_kinds, set_schema

revision = "3"
down_revision = "2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if lacks(bind, "partial_videos"):
        op.create_table(
            "partial_videos",
            sa.Column("video_id", sa.Integer, sa.ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("declared_frames", sa.Integer, nullable=False))
    pin_kinds(bind)
    set_schema(bind, "3")


def downgrade() -> None:
    op.drop_table("partial_videos")
    set_schema(op.get_bind(), "2")
