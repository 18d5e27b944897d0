"""steps.send_window: a step sent as soon as it is due, not held to the send window

Revision ID: 0007
Revises: 0006

A step whose front matter says `send_window = false` (the welcome, right after confirming)
goes at any hour and on any day; every step stored before this is held to its campaign's
window, as it was.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.add_column(
            sa.Column("send_window", sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("send_window")
