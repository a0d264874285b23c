"""Schema 2: the shot cuts of each video (answers never cross one); older videos have none."""

import sqlalchemy as sa
from alembic import op

from vqsearch.migrations import lacks, set_schema

revision = "2"
down_revision = "1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if lacks(bind, "shot_cuts"):
        op.create_table(
            "shot_cuts",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("video_id", sa.Integer, sa.ForeignKey("videos.id", ondelete="CASCADE"), nullable=False),
            sa.Column("before", sa.Integer, nullable=False),
            sa.Column("after", sa.Integer, nullable=False))
        op.create_index("ix_shot_cuts_video_id", "shot_cuts", ["video_id"])
    set_schema(bind, "2")


def downgrade() -> None:
    op.drop_table("shot_cuts")
    set_schema(op.get_bind(), "1")
