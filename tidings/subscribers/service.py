"""Opt-in, confirmation and leaving: every change of a subscriber's status happens here.

Each function works inside the caller's transaction (one unit of work) and takes `now` from
the caller's clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tidings.campaigns.sequencing import enroll_on_confirm, exit_enrollments, message_id
from tidings.errors import Conflict, InvalidInput, NotFound
from tidings.models import (
    ConsentEvent,
    Delivery,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from tidings.subscribers.tokens import new_subscriber_key
from tidings.subscribers.validation import (
    check_timezone,
    clean_name,
    email_sha256,
    normalize_email,
)


@dataclass(frozen=True)
class Consent:
    """Where an opt-in or its evidence came from."""

    source: str  # contact-form | api | import | cli | demo
    evidence: str | None = None  # free text, e.g. "paper form, 2026 open day"
    consent_text: str | None = None  # the exact text shown; only its hash is stored
    ip: str | None = None
    user_agent: str | None = None


def record_consent(
    session: Session, subscriber: Subscriber, kind: str, consent: Consent, now: datetime
) -> ConsentEvent:
    event = ConsentEvent(
        subscriber_id=subscriber.id,
        kind=kind,
        source=consent.source,
        evidence=consent.evidence,
        consent_text_sha256=(
            hashlib.sha256(consent.consent_text.encode()).hexdigest()
            if consent.consent_text
            else None
        ),
        ip=consent.ip,
        user_agent=(consent.user_agent or "")[:300] or None,
        created_at=now,
    )
    session.add(event)
    return event


def is_suppressed(session: Session, email: str) -> bool:
    return (
        session.scalar(
            select(Suppression.id).where(Suppression.email_sha256 == email_sha256(email))
        )
        is not None
    )


def suppression_reason(session: Session, email: str) -> str | None:
    return session.scalar(
        select(Suppression.reason).where(Suppression.email_sha256 == email_sha256(email))
    )


def suppress(session: Session, email: str, reason: str, detail: str | None, now: datetime) -> None:
    digest = email_sha256(email)
    if session.scalar(select(Suppression.id).where(Suppression.email_sha256 == digest)) is None:
        session.add(Suppression(email_sha256=digest, reason=reason, detail=detail, created_at=now))


def find_subscriber(session: Session, email: str) -> Subscriber:
    normalized = normalize_email(email)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == normalized))
    if subscriber is None:
        raise NotFound(f"no subscriber {normalized}")
    return subscriber


def add_subscriber(
    session: Session,
    now: datetime,
    email: str,
    consent: Consent,
    name: str | None = None,
    timezone: str | None = None,
    confirmed: bool = False,
    message_domain: str = "localhost",
) -> Subscriber:
    """Create a subscriber.

    confirmed=False (double opt-in): status pending, a 'requested' consent event and a queued
    confirmation email. confirmed=True: consent given elsewhere; `consent.evidence` says how.
    """
    normalized = normalize_email(email)
    clean = clean_name(name)
    tz = check_timezone(timezone)
    if confirmed and not (consent.evidence and consent.evidence.strip()):
        raise InvalidInput(
            "evidence", "a confirmed subscriber needs consent evidence (where and when they agreed)"
        )
    if is_suppressed(session, normalized):
        raise Conflict(
            f"{normalized} is on the suppression list (unsubscribed, bounced or "
            "removed) and will not be subscribed again"
        )
    existing = session.scalar(select(Subscriber).where(Subscriber.email == normalized))
    if existing is not None:
        raise Conflict(f"{normalized} is already a subscriber (status: {existing.status})")
    subscriber = Subscriber(
        email=normalized,
        name=clean,
        timezone=tz,
        status=SubscriberStatus.PENDING,
        key=new_subscriber_key(),
        attributes={},
        created_at=now,
        updated_at=now,
    )
    session.add(subscriber)
    session.flush()
    if confirmed:
        record_consent(session, subscriber, "imported", consent, now)
        activate(session, subscriber, consent, now)
    else:
        record_consent(session, subscriber, "requested", consent, now)
        queue_confirmation(session, subscriber, now, message_domain)
    return subscriber


def queue_confirmation(
    session: Session, subscriber: Subscriber, now: datetime, message_domain: str
) -> Delivery:
    """Queue a confirmation email carrying a fresh confirm link."""
    delivery = Delivery(
        kind="confirmation",
        subscriber_id=subscriber.id,
        status=DeliveryStatus.QUEUED,
        next_attempt_at=now,
        message_id=message_id(message_domain),
        created_at=now,
        updated_at=now,
    )
    session.add(delivery)
    session.flush()
    return delivery


def activate(
    session: Session, subscriber: Subscriber, consent: Consent, now: datetime
) -> list[str]:
    """Mark a subscriber confirmed and enroll them. Idempotent. Returns campaigns joined."""
    if subscriber.status == SubscriberStatus.ACTIVE:
        return []
    if subscriber.status != SubscriberStatus.PENDING:
        raise Conflict(
            f"{subscriber.email} has status {subscriber.status}; only a pending "
            "subscriber can be confirmed"
        )
    reason = suppression_reason(session, subscriber.email)
    if reason == "unsubscribe":
        # They had left and asked to come back (resubscribe): confirming is new consent.
        session.execute(
            delete(Suppression).where(Suppression.email_sha256 == email_sha256(subscriber.email))
        )
    elif reason is not None:
        raise Conflict(f"{subscriber.email} is on the suppression list ({reason})")
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = now
    subscriber.updated_at = now
    record_consent(session, subscriber, "confirmed", consent, now)
    session.flush()
    return enroll_on_confirm(session, subscriber, now)


def resubscribe(
    session: Session,
    subscriber: Subscriber,
    consent: Consent,
    now: datetime,
    message_domain: str,
    confirmed: bool = False,
) -> list[str]:
    """Someone who unsubscribed asks to come back, giving consent again.

    confirmed=False: status pending and a confirmation email; the suppression stays until they
    click, so nothing else reaches them meanwhile. confirmed=True (an operator with evidence):
    active at once. Their series resumes where they left it. Bounced and complained addresses
    cannot come back this way. Returns the campaigns they are (back) in.
    """
    if subscriber.status != SubscriberStatus.UNSUBSCRIBED:
        raise Conflict(f"{subscriber.email} is {subscriber.status}, not unsubscribed")
    reason = suppression_reason(session, subscriber.email)
    if reason not in (None, "unsubscribe"):
        raise Conflict(f"{subscriber.email} is suppressed ({reason}) and cannot come back")
    if confirmed and not (consent.evidence and consent.evidence.strip()):
        raise InvalidInput("evidence", "resubscribing needs new consent evidence")
    subscriber.status = SubscriberStatus.PENDING
    subscriber.unsubscribed_at = None
    subscriber.updated_at = now
    record_consent(session, subscriber, "requested", consent, now)
    if confirmed:
        return activate(session, subscriber, consent, now)
    queue_confirmation(session, subscriber, now, message_domain)
    return []


def unsubscribe(
    session: Session,
    subscriber: Subscriber,
    source: str,
    now: datetime,
    reason: str = "unsubscribe",
) -> bool:
    """Stop everything for this subscriber now. Returns False if they had already left
    (unsubscribed, or stopped by a bounce or a complaint, which keep their own status)."""
    if subscriber.status in (
        SubscriberStatus.UNSUBSCRIBED,
        SubscriberStatus.BOUNCED,
        SubscriberStatus.COMPLAINED,
    ):
        return False
    subscriber.status = SubscriberStatus.UNSUBSCRIBED
    subscriber.unsubscribed_at = now
    subscriber.updated_at = now
    record_consent(session, subscriber, "unsubscribed", Consent(source=source), now)
    suppress(session, subscriber.email, reason, f"unsubscribed via {source}", now)
    exit_enrollments(session, subscriber.id, now)
    skip_waiting_deliveries(session, subscriber.id, "skipped: unsubscribed", now)
    return True


def skip_waiting_deliveries(session: Session, subscriber_id: int, why: str, now: datetime) -> int:
    result = session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber_id, Delivery.status.in_(DeliveryStatus.WAITING))
        .values(status=DeliveryStatus.SKIPPED, outcome=why, updated_at=now)
    )
    return result.rowcount or 0
