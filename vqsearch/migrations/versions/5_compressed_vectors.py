"""Schema 5: vector files may be compressed (an inverted file of quantised vectors past
`vqsearch.vector_index.COMPRESS_FROM` tracks), which a vqsearch of 1-4 cannot read and refuses;
each video records the block of track ids it holds (`first_track_id`, `last_track_id`: ids are
claimed a video at a time), so "last seen" maps any number of matches to their videos without a
row read per match; and `background_tracks` holds a fixed random sample of the tracks' vectors, the
background a compressed store's queries are measured against.
"""

import sqlalchemy as sa
from alembic import op

from vqsearch.migrations import set_schema

revision = "5"
down_revision = "4"
branch_labels = None
depends_on = None


ROW_ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql")  # as vqsearch.store.RowId: tracks' ids


def upgrade() -> None:
    op.add_column("videos", sa.Column("first_track_id", ROW_ID, nullable=True))
    op.add_column("videos", sa.Column("last_track_id", ROW_ID, nullable=True))
    op.execute("UPDATE videos SET first_track_id = (SELECT min(id) FROM tracks WHERE video_id = videos.id), "
               "last_track_id = (SELECT max(id) FROM tracks WHERE video_id = videos.id)")
    op.create_table(
        "background_tracks",
        sa.Column("track_id", ROW_ID, sa.ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("visual", sa.LargeBinary, nullable=False),
        sa.Column("text", sa.LargeBinary, nullable=True),
        sa.Column("colour", sa.LargeBinary, nullable=True))
    set_schema(op.get_bind(), "5")


def downgrade() -> None:
    op.drop_table("background_tracks")
    for column in ("last_track_id", "first_track_id"):  # SQLite's own DROP COLUMN: no copy of the table
        op.execute(f"ALTER TABLE videos DROP COLUMN {column}")
    set_schema(op.get_bind(), "4")
