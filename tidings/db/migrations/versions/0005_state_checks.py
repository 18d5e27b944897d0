"""CHECK constraints on every status column

Revision ID: 0005
Revises: 0004

The states are StrEnums in tidings/states.py; the database now refuses any other value, so a
typo in code (or a hand-made UPDATE) cannot store a state nothing knows how to handle. On
SQLite each table is copied (that is how it alters a table); env.py turns foreign keys off
meanwhile, so copying `subscribers` cannot cascade to the rows that refer to it.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

# The values as they were when this migration was written (never import them from the code:
# a migration must mean the same thing forever).
CHECKS = {
    "subscribers": {"status": ("pending", "active", "unsubscribed", "bounced", "complained")},
    "campaigns": {"status": ("active", "paused"), "kind": ("sequence", "broadcast")},
    "enrollments": {"status": ("active", "completed", "exited")},
    "deliveries": {
        "status": ("queued", "sending", "sent", "retry", "failed", "bounced", "skipped"),
        "kind": ("step", "confirmation"),
    },
    "broadcast_schedules": {"state": ("scheduled", "sending", "done", "cancelled")},
}


def upgrade() -> None:
    for table, columns in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for column, values in columns.items():
                allowed = ", ".join(f"'{v}'" for v in values)
                batch.create_check_constraint(column, f"{column} IN ({allowed})")


def downgrade() -> None:
    for table, columns in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_constraint(op.f(f"ck_{table}_{column}"), type_="check")
