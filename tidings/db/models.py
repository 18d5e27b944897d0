"""The schema, as SQLAlchemy 2.0 typed models, created by the Alembic migrations in db/migrations.

Every datetime is stored as naive UTC and read back as aware UTC (see UTCDateTime), so SQLite
and PostgreSQL behave the same.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false, true

from tidings.states import (
    BroadcastState,
    CampaignKind,
    CampaignStatus,
    DeliveryKind,
    DeliveryStatus,
    EnrollmentStatus,
    InboundKind,
    SubscriberStatus,
)


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # the usual case, and this runs for every row written
            return value.replace(tzinfo=None)
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: times in tidings are aware (UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


def one_of(column: str, values: type[StrEnum]) -> CheckConstraint:
    """CHECK (column IN (...)): the database refuses a state the code does not know."""
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=column)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
    }


class Subscriber(Base):
    __tablename__ = "subscribers"
    __table_args__ = (one_of("status", SubscriberStatus),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # normalized, lower case
    name: Mapped[str] = mapped_column(String(200), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    status: Mapped[str] = mapped_column(String(16), index=True)  # SubscriberStatus
    # Random, unguessable; signed link tokens carry it instead of the address.
    key: Mapped[str] = mapped_column(String(32), unique=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]
    # Set from the preferences page: nothing is planned for them before this instant.
    paused_until: Mapped[datetime | None]
    # Temporary delivery failures reported later by the receiving server (soft bounces).
    soft_bounces: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ConsentEvent(Base):
    """Append-only evidence of consent and its withdrawal."""

    __tablename__ = "consent_events"
    # Sign-ups per day, and who left (migration 0009).
    __table_args__ = (Index("ix_consent_events_kind", "kind", "created_at", "subscriber_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(24))  # requested|confirmed|imported|unsubscribed
    source: Mapped[str] = mapped_column(String(24))  # contact-form|api|import|cli|demo|email
    evidence: Mapped[str | None] = mapped_column(Text)
    consent_text_sha256: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    # A click on a link in an email: how long after the email was sent (a link scanner opens
    # links within seconds of delivery; a person rarely does). Evidence, not a rule.
    seconds_after_email: Mapped[int | None]
    created_at: Mapped[datetime]


class Suppression(Base):
    """Addresses never to be mailed, by a keyed hash so that it survives erasure of the
    person, and so that a copy of the database cannot be used to test whether a known address
    was ever on the list (the key is the installation's own, in app_secrets)."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    # HMAC-SHA256 of the address under the suppression key; plain SHA-256 where `keyed` is
    # false (entries made before keys, for addresses no subscriber has any more).
    email_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    keyed: Mapped[bool] = mapped_column(default=True, server_default=false())
    reason: Mapped[str] = mapped_column(String(24))  # unsubscribe|hard-bounce|complaint|manual
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (one_of("status", CampaignStatus), one_of("kind", CampaignKind))

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # CampaignKind
    trigger: Mapped[str] = mapped_column(String(16))  # CampaignTrigger
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.ACTIVE)
    status_reason: Mapped[str | None] = mapped_column(Text)
    # The bounce-rate check looks only at deliveries after this id: set when an operator
    # resumes the campaign, so bounces they have already looked at do not pause it again.
    bounce_check_after_id: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What the loader read besides steps: schedule, sender overrides, footer sources.
    definition: Mapped[dict[str, Any]] = mapped_column(default=dict)
    content_sha256: Mapped[str] = mapped_column(String(64))
    source_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    loaded_at: Mapped[datetime]


class Step(Base):
    """One email of a campaign. `position` is None once a reload removed it (kept for the
    ledger)."""

    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("campaign_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    position: Mapped[int | None]
    delay_seconds: Mapped[int] = mapped_column(Integer, default=0)
    # False: sent as soon as it is due (the welcome, right after confirming), at any hour and
    # on any day, not held to the campaign's send window or its holidays.
    send_window: Mapped[bool] = mapped_column(default=True, server_default=true())
    subject: Mapped[str] = mapped_column(String(300))
    preheader: Mapped[str] = mapped_column(String(300), default="")
    source: Mapped[str] = mapped_column(Text)  # the Markdown file as written
    source_file: Mapped[str] = mapped_column(String(200))
    # Output of rendering.compile_step: html/text with personal-value placeholders, inlined.
    compiled: Mapped[dict[str, Any]] = mapped_column(default=dict)
    content_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Enrollment(Base):
    """A subscriber's place in a sequence.

    `next_position` is the position of the next step to plan. `next_due_at` is when to plan it;
    it is None while the previous step's delivery is still in flight (so steps go out in order,
    and the delay counts from the real send) and once the enrollment has ended.
    """

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "campaign_id"),
        # A campaign's readers by state; what is due (the planner) and within a day
        # (the dashboard), read without the table (migration 0009).
        Index("ix_enrollments_campaign", "campaign_id", "status"),
        Index("ix_enrollments_due", "next_due_at", "status"),
        one_of("status", EnrollmentStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    status: Mapped[str] = mapped_column(String(16))
    next_position: Mapped[int] = mapped_column(Integer, default=1)
    next_due_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


def _only_sent() -> dict[str, Any]:
    """A partial index's condition: the rows of sent emails (both databases)."""
    where = text(f"status = '{DeliveryStatus.SENT.value}'")
    return {"sqlite_where": where, "postgresql_where": where}


class Delivery(Base):
    """The ledger: one row per (subscriber, step), written before the message is sent.

    Confirmation emails are deliveries of kind "confirmation" with no step; a subscriber may
    get several (a new link on request), so they are outside the UNIQUE constraint.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "step_id"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        # The staff console's live counts, each a range of one of these (migration 0009):
        # sends per day and in the last minute/hour/day; bounces and failures by when they
        # settled; a campaign's funnel; the last email someone got before leaving (partial:
        # a row enters it once, when it is sent).
        Index("ix_deliveries_sent", "status", "sent_at", "campaign_id"),
        Index("ix_deliveries_settled", "status", "updated_at"),
        Index("ix_deliveries_funnel", "campaign_id", "step_id", "status"),
        Index(
            "ix_deliveries_reader",
            *("subscriber_id", "campaign_id", "status", "sent_at", "id", "step_id"),
            **_only_sent(),
        ),
        one_of("status", DeliveryStatus),
        one_of("kind", DeliveryKind),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default=DeliveryKind.STEP)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    # Indexed alone too: the bounce check reads a campaign's newest sends by id.
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"), index=True)
    step_id: Mapped[int | None] = mapped_column(ForeignKey("steps.id"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    # The worker holding (or, once done, that last held) the claim: host:pid:thread.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    message_id: Mapped[str] = mapped_column(String(200))
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    server: Mapped[str | None] = mapped_column(String(100))  # which SMTP server took it
    # The server's reply ("250 2.0.0 Ok: queued as ..."), or why it was not sent.
    outcome: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class BounceEvent(Base):
    """A bounce or complaint report read by `tidings bounces ingest` (RFC 3464 / RFC 5965).

    `report_sha256` identifies the report itself, so ingesting the same mailbox twice counts
    nothing twice.
    """

    __tablename__ = "bounce_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    report_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # hard | soft | complaint
    status: Mapped[str | None] = mapped_column(String(16))  # e.g. 5.1.1
    diagnostic: Mapped[str | None] = mapped_column(Text)
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), index=True
    )
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    created_at: Mapped[datetime]


class SmtpServerState(Base):
    """One row per configured SMTP server: the lock that serializes rate-limit reservations
    across workers, and what `tidings status` shows about it."""

    __tablename__ = "smtp_servers"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    down_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class SendCounter(Base):
    """Messages handed to an SMTP server per time bucket (second, minute or hour), summed
    over a sliding window to enforce per-server caps shared by all workers."""

    __tablename__ = "send_counters"

    server: Mapped[str] = mapped_column(String(100), primary_key=True)
    granularity: Mapped[int] = mapped_column(Integer, primary_key=True)  # bucket seconds
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class ApiKey(Base):
    """A key for POST /api/subscribers. Only its hash is stored; it is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))  # shown in `apikeys list` to tell keys apart
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Erasure(Base):
    """That an erasure happened, and when; never whose (the address is gone by design)."""

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(primary_key=True)
    erased_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(24))  # cli | web | api
    note: Mapped[str | None] = mapped_column(Text)  # e.g. a ticket number; never the address


class AppSecret(Base):
    """Secrets tidings generates for itself (the link-signing key when none is configured)."""

    __tablename__ = "app_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class SignUpRequest(Base):
    """A sign-up as received by the form or the API, before anything is decided about it.

    The web request only checks the input and stores this row, the same work whatever the
    address's state, so that neither the answer nor its timing tells who is subscribed; the
    worker then decides (new, pending, active, left...), applies the caps and queues any email.
    A row is deleted once handled."""

    __tablename__ = "signup_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))  # normalized
    name: Mapped[str] = mapped_column(String(200), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    source: Mapped[str] = mapped_column(String(24))
    evidence: Mapped[str | None] = mapped_column(Text)
    consent_text_sha256: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    received_at: Mapped[datetime]


class RateCounter(Base):
    """How many of something happened in an hour, under a name: confirmation emails per
    mailbox (by keyed hash), per recipient domain, and in all. Summed over a window to cap
    them whatever the sender's address."""

    __tablename__ = "rate_counters"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class InboundMessage(Base):
    """A message that came back to us (a bounce, a complaint, an unsubscribe request, a
    reply, an automatic answer), as classified when it was read. The message itself is not
    kept here; `digest` makes reading the same one twice count once."""

    __tablename__ = "inbound_messages"
    __table_args__ = (one_of("kind", InboundKind),)

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the raw bytes
    source: Mapped[str] = mapped_column(String(16))  # imap | maildir | mbox | file | smtp
    kind: Mapped[str] = mapped_column(String(16))  # InboundKind
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL")
    )
    received_at: Mapped[datetime]


class BroadcastSchedule(Base):
    """When and to whom a broadcast (newsletter) goes, and how far its planning has got.

    Planning walks the audience in subscriber-id order, one batch per transaction, and
    stores the last id done (`after_subscriber_id`) with each batch, so a crash resumes
    where it stopped; the ledger's UNIQUE (subscriber, step) makes a repeated batch harmless.
    In local-time mode each timezone is a wave at its own instant: waves up to
    `planned_through` are done.
    """

    __tablename__ = "broadcast_schedules"
    __table_args__ = (one_of("state", BroadcastState),)

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    # One instant for everybody (send_at), or a wall-clock time in each reader's timezone.
    send_at: Mapped[datetime | None]
    local_time: Mapped[str | None] = mapped_column(String(19))  # "2026-12-03T10:00:00"
    tz: Mapped[str | None] = mapped_column(String(64))  # the zone --at was given in
    audience: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # When the planner next has something to do (indexed: a tick reads only due rows).
    next_at: Mapped[datetime | None] = mapped_column(index=True)
    planned_through: Mapped[datetime | None]
    after_subscriber_id: Mapped[int] = mapped_column(Integer, default=0)  # the cursor
    planned: Mapped[int] = mapped_column(Integer, default=0)
    held: Mapped[int] = mapped_column(Integer, default=0)  # waited for the drip gap
    scheduled_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


def message_id(domain: str) -> str:
    """A new Message-ID (without angle brackets): random, so it says nothing about the reader."""
    return f"{uuid.uuid4().hex}@{domain}"


def queued_delivery(
    subscriber_id: int,
    now: datetime,
    domain: str,
    kind: DeliveryKind = DeliveryKind.STEP,
    campaign_id: int | None = None,
    step_id: int | None = None,
    content_sha256: str | None = None,
    not_before: datetime | None = None,
) -> dict[str, Any]:
    """The values of a new queued delivery: the one way a ledger row is born, whether the
    planner, a newsletter, a confirmation or an import writes it."""
    return {
        "kind": kind,
        "subscriber_id": subscriber_id,
        "campaign_id": campaign_id,
        "step_id": step_id,
        "status": DeliveryStatus.QUEUED,
        "attempts": 0,
        "next_attempt_at": not_before or now,
        "message_id": message_id(domain),
        "content_sha256": content_sha256,
        "created_at": now,
        "updated_at": now,
    }


# The staff console's tables share this metadata (migrations, the tests' list of tables).
from tidings.db import staff as _staff  # noqa: E402,F401
