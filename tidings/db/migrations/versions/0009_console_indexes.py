"""indexes for the staff console's live counts (issue 13 point 12, bench/console.py)

Revision ID: 0009
Revises: 0008

Every number the dashboard and a campaign's page show is counted when the page is asked
for. These indexes let each count read only the range of an index it needs, without the
table (bench/RESULTS.md, figure 9):

- deliveries (status, sent_at, campaign_id): emails sent per day and in the last minute,
  hour and day, for everything or for one campaign;
- deliveries (status, updated_at): bounced and failed in the last day, the bounce rate over
  seven days;
- deliveries (campaign_id, step_id, status): a campaign's funnel, step by step;
- deliveries (subscriber_id, campaign_id, status, sent_at, id, step_id) of sent emails: the
  last email of a campaign someone got before they unsubscribed (the newest by sent_at, then
  id) and its step, read for each person off the index alone (without it SQLite's planner
  chose to read the campaign's whole ledger once per person, PostgreSQL the whole table);
- consent_events (kind, created_at, subscriber_id): sign-ups and confirmations per day, and
  who left;
- enrollments (campaign_id, status) and (next_due_at, status): a campaign's readers by state,
  and what is due within a day; they replace the indexes on campaign_id and next_due_at
  alone, whose uses they serve.

The index of each person's sent emails is partial (WHERE status = 'sent'): an email enters
it once, when it is sent, and claiming it costs nothing more; it holds status all the same, so
that SQLite's planner (which has no statistics) sees the equality on status it would otherwise
take another index for. The index of sends by day cannot be partial: PostgreSQL drops the
condition on status that the index implies, and with it the bound on sent_at behind status,
so a count of the last minute read every sent email. Every index on the ledger is paid for
on each write (bench/RESULTS.md, figure 9, says what these cost the sending). The index on
deliveries.campaign_id stays: the bounce check reads a campaign's newest sends by id through
it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

SENT = "status = 'sent'"
NEW = (
    ("ix_deliveries_sent", "deliveries", ["status", "sent_at", "campaign_id"], None),
    ("ix_deliveries_settled", "deliveries", ["status", "updated_at"], None),
    ("ix_deliveries_funnel", "deliveries", ["campaign_id", "step_id", "status"], None),
    (
        "ix_deliveries_reader",
        "deliveries",
        ["subscriber_id", "campaign_id", "status", "sent_at", "id", "step_id"],
        SENT,
    ),
    ("ix_consent_events_kind", "consent_events", ["kind", "created_at", "subscriber_id"], None),
    ("ix_enrollments_campaign", "enrollments", ["campaign_id", "status"], None),
    ("ix_enrollments_due", "enrollments", ["next_due_at", "status"], None),
)
REPLACED = (
    ("ix_enrollments_campaign_id", "enrollments", ["campaign_id"]),
    ("ix_enrollments_next_due_at", "enrollments", ["next_due_at"]),
)


def upgrade() -> None:
    for name, table, columns, where in NEW:
        partial = (
            {}
            if where is None
            else {
                "sqlite_where": sa.text(where),
                "postgresql_where": sa.text(where),
            }
        )
        op.create_index(name, table, columns, **partial)
    for name, table, _ in REPLACED:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for name, table, columns in REPLACED:
        op.create_index(name, table, columns)
    for name, table, _, _ in NEW:
        op.drop_index(name, table_name=table)
