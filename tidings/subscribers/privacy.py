"""One person's data rights, and retention: export everything stored about someone (right of
access), erase someone everywhere (right to erasure), prune sign-up requests nobody confirmed.

Each function works inside the caller's transaction and takes `now` from the caller's clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session

from tidings.db.bulk import affected
from tidings.db.models import (
    BounceEvent,
    ConsentEvent,
    Delivery,
    Enrollment,
    Erasure,
    Subscriber,
    Suppression,
)
from tidings.errors import InvalidInput
from tidings.states import StopReason, SubscriberStatus
from tidings.subscribers.directory import (
    consent_events,
    deliveries_of,
    enrollments_of,
    find_subscriber,
    profile_row,
)
from tidings.subscribers.validation import email_sha256, normalize_email

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
STREAM_CHUNK = 1000


# ----------------------------------------------------------------------------- data rights


# Long: one literal document, the whole of what is stored about a person.
def export_data(session: Session, email: str, now: datetime) -> dict[str, Any]:
    """Everything tidings stores about one person, for a right-of-access request."""
    subscriber = find_subscriber(session, email)
    suppression = session.scalar(
        select(Suppression).where(Suppression.email_sha256 == email_sha256(subscriber.email))
    )
    consent = [
        {
            "at": e.created_at,
            "kind": e.kind,
            "source": e.source,
            "evidence": e.evidence,
            "consent_text_sha256": e.consent_text_sha256,
            "ip": e.ip,
            "user_agent": e.user_agent,
        }
        for e in consent_events(session, subscriber.id)
    ]
    enrollments = [
        {
            "campaign": slug,
            "campaign_name": name,
            "status": e.status,
            "next_step": e.next_position,
            "next_due_at": e.next_due_at,
            "enrolled_at": e.created_at,
            "ended_at": e.ended_at,
        }
        for e, slug, name in enrollments_of(session, subscriber.id)
    ]
    deliveries = [
        {
            "kind": d.kind,
            "campaign": slug,
            "step": key,
            "subject": subject,
            "status": d.status,
            "attempts": d.attempts,
            "message_id": d.message_id,
            "queued_at": d.created_at,
            "sent_at": d.sent_at,
            "outcome": d.outcome,
        }
        for d, slug, key, subject in deliveries_of(session, subscriber.id)
    ]
    return {
        "exported_at": now,
        "about": (
            "Everything this newsletter stores about you: your profile, each time you gave or "
            "withdrew consent, the email series you are in, and every email sent or planned "
            "for you. Nothing else is kept: no opens, no clicks, nothing clinical."
        ),
        "profile": {
            **{k: v for k, v in profile_row(subscriber).items() if k != "attributes"},
            "updated_at": subscriber.updated_at,
            "paused_until": subscriber.paused_until,
            "attributes": dict(subscriber.attributes or {}),
        },
        "suppression": (
            None
            if suppression is None
            else {
                "reason": suppression.reason,
                "detail": suppression.detail,
                "since": suppression.created_at,
            }
        ),
        "consent_events": consent,
        "enrollments": enrollments,
        "deliveries": deliveries,
    }


@dataclass(frozen=True)
class ErasureReport:
    email: str
    consent_events: int
    enrollments: int
    deliveries: int
    suppression_reason: str
    suppression_added: bool


def erase(
    session: Session, email: str, now: datetime, source: str = "cli", note: str | None = None
) -> ErasureReport:
    """Delete one person everywhere; keep only a hashed suppression so nothing is ever sent
    to them again (not even by a later import), and record that an erasure happened, without
    the address."""
    normalized = normalize_email(email)
    note = (note or "").strip() or None
    if note is not None:
        if normalized in note.lower():
            raise InvalidInput("--note", "must not contain the address: the point is to forget it")
        if _CONTROL.search(note) or len(note) > 500:
            raise InvalidInput("--note", "must be one line of at most 500 characters")
    subscriber = find_subscriber(session, normalized)
    sid = subscriber.id
    digest = email_sha256(subscriber.email)
    # Bounce reports about their emails quote the address in the server's diagnostic: the
    # report stays (it counts in a campaign's bounce rate) without the text or the link.
    session.execute(
        update(BounceEvent)
        .where(
            BounceEvent.delivery_id.in_(select(Delivery.id).where(Delivery.subscriber_id == sid))
        )
        .values(diagnostic=None, delivery_id=None)
        .execution_options(synchronize_session=False)
    )
    counts = {}
    for model in (Delivery, Enrollment, ConsentEvent):
        result = session.execute(
            delete(model)
            .where(model.subscriber_id == sid)
            .execution_options(synchronize_session=False)
        )
        counts[model] = affected(result)
    session.delete(subscriber)
    # The detail of a bounce is the server's reply, which usually quotes the address: it goes.
    detail = f"erased on {now.date().isoformat()}; the address itself is not stored"
    suppression = session.scalar(select(Suppression).where(Suppression.email_sha256 == digest))
    added = suppression is None
    if suppression is None:
        suppression = Suppression(
            email_sha256=digest, reason=StopReason.MANUAL, detail=detail, created_at=now
        )
        session.add(suppression)
    else:
        suppression.detail = detail
    session.add(Erasure(erased_at=now, source=source, note=note))
    session.flush()
    return ErasureReport(
        email=normalized,
        consent_events=counts[ConsentEvent],
        enrollments=counts[Enrollment],
        deliveries=counts[Delivery],
        suppression_reason=suppression.reason,
        suppression_added=added,
    )


# ----------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class PruneReport:
    cutoff: datetime
    subscribers: int
    consent_events: int
    deliveries: int


def prune_pending(
    session: Session, older_than: timedelta, now: datetime, dry_run: bool = False
) -> PruneReport:
    """Delete pending subscribers who never confirmed and asked nothing since `older_than`
    ago, with their request events and confirmation emails. Someone pending because they
    asked to come back after leaving (confirmed before) keeps their history."""
    cutoff = now - older_than
    recent = exists().where(
        ConsentEvent.subscriber_id == Subscriber.id, ConsentEvent.created_at >= cutoff
    )
    stale = (
        select(Subscriber.id)
        .where(
            Subscriber.status == SubscriberStatus.PENDING,
            Subscriber.confirmed_at.is_(None),
            Subscriber.created_at < cutoff,
            ~recent,
        )
        .order_by(Subscriber.id)
    )
    ids = list(session.scalars(stale))
    totals = {"subscribers": 0, "consent_events": 0, "deliveries": 0}
    for start in range(0, len(ids), STREAM_CHUNK):
        chunk = ids[start : start + STREAM_CHUNK]
        if dry_run:
            totals["consent_events"] += (
                session.scalar(select(func.count()).where(ConsentEvent.subscriber_id.in_(chunk)))
                or 0
            )
            totals["deliveries"] += (
                session.scalar(select(func.count()).where(Delivery.subscriber_id.in_(chunk))) or 0
            )
            totals["subscribers"] += len(chunk)
            continue
        for model, name in ((ConsentEvent, "consent_events"), (Delivery, "deliveries")):
            result = session.execute(
                delete(model)
                .where(model.subscriber_id.in_(chunk))
                .execution_options(synchronize_session=False)
            )
            totals[name] += affected(result)
        session.execute(
            delete(Enrollment)
            .where(Enrollment.subscriber_id.in_(chunk))
            .execution_options(synchronize_session=False)
        )
        result = session.execute(
            delete(Subscriber)
            .where(Subscriber.id.in_(chunk))
            .execution_options(synchronize_session=False)
        )
        totals["subscribers"] += affected(result)
    return PruneReport(cutoff=cutoff, **totals)
