"""sign-up requests, rate counters, inbound messages; keyed suppressions; click evidence;
the come-back email

Revision ID: 0006
Revises: 0005

Suppression entries become keyed hashes (HMAC-SHA256 under a key of this installation, kept
in app_secrets): a stolen copy of the database can no longer be used to test whether a known
address was ever on the list. Entries of addresses a subscriber still has are rehashed here;
the others (erased people) cannot be, having only their plain hash: they stay as they are,
marked keyed = false, and keep working.
"""

import hashlib
import hmac
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tidings.db.models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

KINDS_BEFORE = ("step", "confirmation")
KINDS_AFTER = ("step", "confirmation", "comeback")
INBOUND_KINDS = ("bounce", "complaint", "unsubscribe", "automatic", "other")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "signup_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=24), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=True),
        sa.Column("consent_text_sha256", sa.String(length=64), nullable=True),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("received_at", tidings.db.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signup_requests")),
    )
    op.create_table(
        "rate_counters",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("bucket_start", tidings.db.models.UTCDateTime(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", "bucket_start", name=op.f("pk_rate_counters")),
    )
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("received_at", tidings.db.models.UTCDateTime(), nullable=False),
        sa.CheckConstraint(_in("kind", INBOUND_KINDS), name=op.f("ck_inbound_messages_kind")),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_inbound_messages_delivery_id_deliveries"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_inbound_messages_subscriber_id_subscribers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
        sa.UniqueConstraint("digest", name=op.f("uq_inbound_messages_digest")),
    )
    op.create_index(
        op.f("ix_inbound_messages_subscriber_id"), "inbound_messages", ["subscriber_id"]
    )
    with op.batch_alter_table("consent_events") as batch:
        batch.add_column(sa.Column("seconds_after_email", sa.Integer(), nullable=True))
    with op.batch_alter_table("suppressions") as batch:
        batch.add_column(
            sa.Column("keyed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint(op.f("ck_deliveries_kind"), type_="check")
        batch.create_check_constraint("kind", _in("kind", KINDS_AFTER))
    _key_the_suppressions()


def _key_the_suppressions() -> None:
    """Make the installation's suppression key, and rehash every entry whose address a
    subscriber still has (the same rule as tidings.subscribers.suppressions.digest)."""
    connection = op.get_bind()
    key = connection.execute(
        sa.text("SELECT value FROM app_secrets WHERE name = 'suppression_key'")
    ).scalar()
    if key is None:
        key = secrets.token_urlsafe(32)
        connection.execute(
            sa.text("INSERT INTO app_secrets (name, value) VALUES ('suppression_key', :k)"),
            {"k": key},
        )
    plain = {
        hashlib.sha256(email.encode()).hexdigest(): email
        for (email,) in connection.execute(sa.text("SELECT email FROM subscribers"))
    }
    for entry_id, digest in connection.execute(
        sa.text("SELECT id, email_sha256 FROM suppressions")
    ).all():
        email = plain.get(digest)
        if email is not None:
            keyed = hmac.new(key.encode(), email.encode(), "sha256").hexdigest()
            connection.execute(
                sa.text("UPDATE suppressions SET email_sha256 = :d, keyed = :t WHERE id = :i"),
                {"d": keyed, "t": True, "i": entry_id},
            )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint(op.f("ck_deliveries_kind"), type_="check")
        batch.create_check_constraint("kind", _in("kind", KINDS_BEFORE))
    with op.batch_alter_table("suppressions") as batch:
        batch.drop_column("keyed")
    with op.batch_alter_table("consent_events") as batch:
        batch.drop_column("seconds_after_email")
    op.drop_index(op.f("ix_inbound_messages_subscriber_id"), table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_table("rate_counters")
    op.drop_table("signup_requests")
