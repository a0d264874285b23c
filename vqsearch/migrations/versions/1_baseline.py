"""Schema 1: meta, videos, tracks, observations.

The baseline: every index has these tables (a new one gets all of today's at once), so indexes
from before the migrations are stamped here or later, from their `schema` meta; none is built here.
"""

revision = "1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
