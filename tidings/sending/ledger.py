"""The store seam of sending: every query the dispatcher runs, and nothing else.

    claim -> load the claimed -> hold back (skip for good, or defer) -> record outcomes
          -> release what was not sent; reap the claims of workers that died

Plain rows and executemany statements rather than ORM objects: this runs for every message.
A claim is a lease: `sending` rows with an owner and an expiry, so a crashed worker's emails
come back to the queue (`reap`) and nobody else touches them meanwhile.
"""

# Not here: rate counters (routing.RateLimiter; test sends share them), db.signing_key (web too).

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from tidings.campaigns.sequencing import (
    NextSteps,
    advance_after_deliveries,
    exit_enrollments,
    next_steps,
)
from tidings.config import Settings
from tidings.db.bulk import affected, update_by_id
from tidings.db.models import Campaign, Delivery, Enrollment, Step, Subscriber
from tidings.sending.bounces import pause_reason
from tidings.sending.policy import Decision
from tidings.states import (
    WAITING,
    CampaignStatus,
    DeliveryStatus,
    EnrollmentStatus,
    StopReason,
)
from tidings.subscribers.lifecycle import stop
from tidings.subscribers.suppressions import suppressed_addresses
from tidings.subscribers.validation import mask_addresses, mask_email

log = logging.getLogger(__name__)


def claim(
    sessions: sessionmaker[Session],
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    only_ids: Sequence[int] | None = None,
) -> list[int]:
    """Lease up to `limit` due deliveries to `owner`, oldest due first. On PostgreSQL other
    workers skip the locked rows (SKIP LOCKED); SQLite has one dispatcher per file."""
    with sessions.begin() as session:
        query = (
            select(Delivery.id)
            .outerjoin(Campaign, Campaign.id == Delivery.campaign_id)
            .where(
                Delivery.status.in_(WAITING),
                Delivery.next_attempt_at <= now,
                or_(Delivery.campaign_id.is_(None), Campaign.status == CampaignStatus.ACTIVE),
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
            .with_for_update(of=Delivery, skip_locked=True)
        )
        if only_ids is not None:
            query = query.where(Delivery.id.in_(only_ids))
        ids = list(session.scalars(query))
        if ids:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids))
                .values(
                    status=DeliveryStatus.SENDING,
                    lease_owner=owner,
                    lease_expires_at=lease_until,
                    attempts=Delivery.attempts + 1,
                    updated_at=now,
                )
            )
    return ids


@dataclass
class Claimed:
    """The claimed deliveries with what the re-check needs, read in one go."""

    rows: list[Any] = field(default_factory=list)  # delivery + reader columns, by delivery id
    campaigns: dict[int, Campaign] = field(default_factory=dict)
    suppressed: dict[str, str] = field(default_factory=dict)  # address -> reason
    ended: set[tuple[int, int]] = field(default_factory=set)  # (subscriber, campaign) left
    next_steps: dict[int, NextSteps] = field(default_factory=dict)  # for recording, by campaign


def load_claimed(session: Session, ids: Sequence[int], owner: str) -> Claimed:
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.kind,
            Delivery.message_id,
            Delivery.created_at,
            Delivery.attempts,
            Delivery.campaign_id,
            Delivery.step_id,
            Step.content_sha256.label("step_version"),
            Step.send_window.label("step_send_window"),
            Subscriber.id.label("sid"),
            Subscriber.email,
            Subscriber.name,
            Subscriber.timezone,
            Subscriber.status,
            Subscriber.key,
            Subscriber.paused_until,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .outerjoin(Step, Step.id == Delivery.step_id)
        .where(
            Delivery.id.in_(ids),
            Delivery.lease_owner == owner,
            Delivery.status == DeliveryStatus.SENDING,
        )
        .order_by(Delivery.id)
    ).all()
    if not rows:
        return Claimed()
    campaign_ids = {r.campaign_id for r in rows if r.campaign_id is not None}
    campaigns = {
        c.id: c for c in session.scalars(select(Campaign).where(Campaign.id.in_(campaign_ids)))
    }
    ended = {
        (subscriber_id, campaign_id)
        for subscriber_id, campaign_id in session.execute(
            select(Enrollment.subscriber_id, Enrollment.campaign_id).where(
                Enrollment.subscriber_id.in_([r.sid for r in rows]),
                Enrollment.status != EnrollmentStatus.ACTIVE,
            )
        )
    }
    suppressed = suppressed_addresses(session, [r.email for r in rows])
    return Claimed(
        list(rows), campaigns, suppressed, ended, next_steps(session, campaigns.values())
    )


def compiled_step(session: Session, step_id: int) -> dict[str, Any]:
    """A step's stored compiled form (rendering.CompiledStep.as_stored)."""
    return session.execute(select(Step.compiled).where(Step.id == step_id)).scalar_one()


def hold_back(
    session: Session,
    skipped: Sequence[tuple[int, str]],
    deferred: Sequence[tuple[int, datetime, int]],
    stopped_readers: Iterable[int],
    now: datetime,
) -> None:
    """Claimed deliveries that do not go now: `skipped` (id, why) for good, `deferred`
    (id, when, attempts before this claim) back to the queue, not counted as an attempt since
    no server saw them. Nothing more may reach `stopped_readers` in any sequence."""
    changes: list[dict[str, object]] = [
        {
            "id": delivery_id,
            "status": DeliveryStatus.SKIPPED,
            "outcome": why,
            "lease_expires_at": None,
            "updated_at": now,
        }
        for delivery_id, why in skipped
    ]
    changes += [
        {
            "id": delivery_id,
            "status": DeliveryStatus.QUEUED,
            "next_attempt_at": at,
            "attempts": attempts,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
        }
        for delivery_id, at, attempts in deferred
    ]
    if changes:
        update_by_id(session, Delivery, changes)
    for subscriber_id in stopped_readers:
        exit_enrollments(session, subscriber_id, now)


@dataclass(frozen=True)
class Outcome:
    """An attempt of one claimed delivery, decided."""

    delivery_id: int
    subscriber_id: int
    campaign_id: int | None
    decision: Decision
    server: str | None  # which server took (or refused) it


def record(
    session: Session,
    outcomes: Sequence[Outcome],
    now: datetime,
    known: Mapping[int, NextSteps] | None = None,
) -> list[int]:
    """Write the outcomes; move each reader's sequence on after a step that ended (`known`:
    the campaigns' NextSteps the caller has already); stop the readers whose address bounced.
    Returns the campaigns that had a bounce (for `pause_if_bouncing`). The lease owner stays on
    each row: it tells which worker handled it last."""
    changes = []
    for o in outcomes:
        change: dict[str, object] = {
            "id": o.delivery_id,
            "status": o.decision.status,
            "outcome": o.decision.outcome,
            "server": o.server,
            "updated_at": now,
        }
        if o.decision.next_attempt_at is not None:
            change["next_attempt_at"] = o.decision.next_attempt_at
        if o.decision.sent_at is not None:
            change["sent_at"] = o.decision.sent_at
        changes.append(change)
    update_by_id(session, Delivery, changes)
    advance_after_deliveries(
        session,
        [
            (o.subscriber_id, o.campaign_id)
            for o in outcomes
            if o.decision.ends_step and o.campaign_id
        ],
        now,
        known,
    )
    bounced = [o for o in outcomes if o.decision.status == DeliveryStatus.BOUNCED]
    for o in bounced:
        subscriber = session.get(Subscriber, o.subscriber_id)
        if subscriber is None:
            continue
        masked = mask_addresses(o.decision.outcome)
        log.warning("bounced %s: %s", mask_email(subscriber.email), masked)
        stop(session, subscriber, StopReason.HARD_BOUNCE, "smtp", masked[:500], now)
    session.flush()
    return sorted({o.campaign_id for o in bounced if o.campaign_id is not None})


def pause_if_bouncing(
    session: Session, campaign_id: int, settings: Settings, now: datetime
) -> str | None:
    """Pause a campaign whose last N sends hold too many hard bounces (`bounces.pause_reason`).
    Returns its slug if this call paused it. Only sends since the last resume count: an
    operator who resumed has seen the earlier ones. Also run for a bounce that comes back by
    email (`inbound.ingest`)."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.status != CampaignStatus.ACTIVE:
        return None
    window = settings.bounce_pause_sends
    recent = (
        select(Delivery.status)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.id > campaign.bounce_check_after_id,
            Delivery.status.in_((DeliveryStatus.SENT, DeliveryStatus.BOUNCED)),
        )
        .order_by(Delivery.id.desc())
        .limit(window)
        .subquery()
    )
    bounced = (
        session.scalar(
            select(func.count())
            .select_from(recent)
            .where(recent.c.status == DeliveryStatus.BOUNCED)
        )
        or 0
    )
    reason = pause_reason(bounced, settings, now)
    if reason is None:
        return None
    campaign.status, campaign.status_reason = CampaignStatus.PAUSED, reason
    log.error(
        "campaign %s paused: %d hard bounces in its last %d sends", campaign.slug, bounced, window
    )
    return campaign.slug


def release(
    session: Session,
    ids: Sequence[int],
    owner: str,
    now: datetime,
    not_before: datetime | None = None,
) -> None:
    """Give claimed, unsent deliveries back to the queue (stopping, or no server capacity).
    Not an attempt: no server saw them."""
    values: dict[str, object] = {
        "status": DeliveryStatus.QUEUED,
        "lease_owner": None,
        "lease_expires_at": None,
        "attempts": Delivery.attempts - 1,
        "updated_at": now,
    }
    if not_before is not None:
        values["next_attempt_at"] = not_before
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(list(ids)), Delivery.lease_owner == owner)
        .values(**values)
    )


def reap(sessions: sessionmaker[Session], now: datetime) -> int:
    """Put deliveries whose worker died (lease expired) back in the queue."""
    with sessions.begin() as session:
        result = session.execute(
            update(Delivery)
            .where(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_expires_at < now)
            .values(
                status=DeliveryStatus.QUEUED,
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=now,
                updated_at=now,
            )
        )
    count = affected(result)
    if count:
        log.warning("reclaimed %d deliveries whose worker stopped before finishing", count)
    return count
