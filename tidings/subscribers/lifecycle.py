"""Every change of a subscriber's status happens here, and nowhere else:

    add -> pending --confirm--> active --stop(reason)--> unsubscribed | bounced | complained
                                  ^                         |
                                  +------- resubscribe -----+  (unsubscribed only, new consent)

`stop` is the one way out, whatever asks for it (the unsubscribe link, a bounce, a spam
complaint, an operator's suppression): the status, the suppression entry, the consent record,
the enrollments and the emails still waiting all change together, the same way each time.

Each function works inside the caller's transaction (one unit of work) and takes `now` from
the caller's clock. The CLI's and the console's one-call actions on one subscriber (add,
bring back, resend a confirmation, pause) are `subscribers.operators`, which calls these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tidings.campaigns.sequencing import enroll_on_confirm, exit_enrollments
from tidings.db import audit
from tidings.db.bulk import affected
from tidings.db.models import ConsentEvent, Delivery, Subscriber, queued_delivery
from tidings.errors import Conflict, InvalidInput, NotFound
from tidings.states import (
    LEFT,
    RECEIVING,
    WAITING,
    ConsentKind,
    DeliveryKind,
    DeliveryStatus,
    StopReason,
    SubscriberStatus,
)
from tidings.subscribers import suppressions
from tidings.subscribers.directory import audit_target, find_subscriber
from tidings.subscribers.suppressions import check_detail, check_reason, suppression_reason
from tidings.subscribers.tokens import new_subscriber_key
from tidings.subscribers.validation import (
    check_timezone,
    clean_name,
    mask_addresses,
    mask_email,
    normalize_email,
)


@dataclass(frozen=True)
class Consent:
    """Where an opt-in or its evidence came from."""

    source: str  # contact-form | api | import | cli | demo | email
    evidence: str | None = None  # free text, e.g. "paper form, 2026 open day"
    consent_text: str | None = None  # the exact text shown; only its hash is stored
    ip: str | None = None
    user_agent: str | None = None
    consent_text_sha256: str | None = None  # the hash, when only it was kept (a sign-up request)
    seconds_after_email: int | None = None  # a click on a link: how long after the email

    def text_sha256(self) -> str | None:
        """What is stored of the consent text: its hash."""
        if self.consent_text:
            return hashlib.sha256(self.consent_text.encode()).hexdigest()
        return self.consent_text_sha256


@dataclass(frozen=True)
class Stop:
    """What stopping for one reason does."""

    status: SubscriberStatus
    consent: ConsentKind | None  # the withdrawal recorded, if the reason is one
    skipped: str  # the outcome written on the emails still waiting


STOPS = {
    StopReason.UNSUBSCRIBE: Stop(
        SubscriberStatus.UNSUBSCRIBED, ConsentKind.UNSUBSCRIBED, "skipped: unsubscribed"
    ),
    StopReason.MANUAL: Stop(
        SubscriberStatus.UNSUBSCRIBED, ConsentKind.UNSUBSCRIBED, "skipped: address suppressed"
    ),
    # A bounce says the address does not exist; it is no decision of the person's.
    StopReason.HARD_BOUNCE: Stop(SubscriberStatus.BOUNCED, None, "skipped: address bounced"),
    # Marking an email as spam withdraws consent as surely as unsubscribing does.
    StopReason.COMPLAINT: Stop(
        SubscriberStatus.COMPLAINED, ConsentKind.COMPLAINED, "skipped: spam complaint"
    ),
}


def record_consent(
    session: Session, subscriber: Subscriber, kind: ConsentKind, consent: Consent, now: datetime
) -> ConsentEvent:
    event = ConsentEvent(
        subscriber_id=subscriber.id,
        kind=kind,
        source=consent.source,
        evidence=consent.evidence,
        consent_text_sha256=consent.text_sha256(),
        ip=consent.ip,
        user_agent=(consent.user_agent or "")[:300] or None,
        seconds_after_email=consent.seconds_after_email,
        created_at=now,
    )
    session.add(event)
    return event


# ----------------------------------------------------------------------------- joining


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
    if suppression_reason(session, normalized) is not None:
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
        record_consent(session, subscriber, ConsentKind.IMPORTED, consent, now)
        activate(session, subscriber, consent, now)
    else:
        record_consent(session, subscriber, ConsentKind.REQUESTED, consent, now)
        queue_confirmation(session, subscriber, now, message_domain)
    return subscriber


def queue_confirmation(
    session: Session, subscriber: Subscriber, now: datetime, message_domain: str
) -> Delivery:
    """Queue a confirmation email carrying a fresh confirm link."""
    delivery = Delivery(
        **queued_delivery(subscriber.id, now, message_domain, kind=DeliveryKind.CONFIRMATION)
    )
    session.add(delivery)
    session.flush()
    return delivery


def queue_comeback(
    session: Session, subscriber: Subscriber, now: datetime, message_domain: str
) -> Delivery:
    """Queue the email that lets someone who left come back: its one link is the only way
    back. Nothing else changes: they stay unsubscribed (and suppressed) until they click."""
    delivery = Delivery(
        **queued_delivery(subscriber.id, now, message_domain, kind=DeliveryKind.COMEBACK)
    )
    session.add(delivery)
    session.flush()
    return delivery


def last_comeback_email(session: Session, subscriber: Subscriber) -> Delivery | None:
    """The last email that offered this person to come back (queued, sent or not)."""
    return session.scalar(
        select(Delivery)
        .where(Delivery.subscriber_id == subscriber.id, Delivery.kind == DeliveryKind.COMEBACK)
        .order_by(Delivery.id.desc())
        .limit(1)
    )


def waiting_confirmations(session: Session, subscriber: Subscriber) -> list[int]:
    """The ids of this subscriber's confirmation (or come-back) emails not sent yet, to send
    them now."""
    return list(
        session.scalars(
            select(Delivery.id).where(
                Delivery.subscriber_id == subscriber.id,
                Delivery.kind.in_((DeliveryKind.CONFIRMATION, DeliveryKind.COMEBACK)),
                Delivery.status.in_(WAITING),
            )
        )
    )


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
    entry = suppressions.suppression_of(session, subscriber.email)
    if entry is not None and entry.reason == StopReason.UNSUBSCRIBE:
        # They had left and asked to come back (resubscribe): confirming is new consent.
        suppressions.remove_entry(session, entry)
    elif entry is not None:
        raise Conflict(f"{subscriber.email} is on the suppression list ({entry.reason})")
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = now
    subscriber.updated_at = now
    record_consent(session, subscriber, ConsentKind.CONFIRMED, consent, now)
    session.flush()
    return enroll_on_confirm(session, subscriber, now)


def may_come_back(session: Session, subscriber: Subscriber) -> bool:
    """Only someone who unsubscribed (and is suppressed for that alone) may come back; a
    bounced or complained address, or one an operator suppressed, never by this way."""
    return subscriber.status == SubscriberStatus.UNSUBSCRIBED and suppression_reason(
        session, subscriber.email
    ) in (None, StopReason.UNSUBSCRIBE)


def resubscribe(
    session: Session,
    subscriber: Subscriber,
    consent: Consent,
    now: datetime,
    message_domain: str,
    confirmed: bool = False,
) -> list[str]:
    """Someone who unsubscribed comes back, giving consent again.

    confirmed=True (an operator with evidence of how they asked, or the person clicking the
    come-back link): active at once, their series resuming where they left it. confirmed=False:
    the come-back email is queued and nothing else changes; they are back when they click it.
    Bounced and complained addresses cannot come back this way. Returns the campaigns they are
    (back) in.
    """
    if subscriber.status != SubscriberStatus.UNSUBSCRIBED:
        raise Conflict(f"{subscriber.email} is {subscriber.status}, not unsubscribed")
    if not may_come_back(session, subscriber):
        reason = suppression_reason(session, subscriber.email)
        raise Conflict(f"{subscriber.email} is suppressed ({reason}) and cannot come back")
    if not confirmed:
        queue_comeback(session, subscriber, now, message_domain)
        return []
    if not (consent.evidence and consent.evidence.strip()):
        raise InvalidInput("evidence", "resubscribing needs new consent evidence")
    subscriber.status = SubscriberStatus.PENDING
    subscriber.unsubscribed_at = None
    subscriber.updated_at = now
    record_consent(session, subscriber, ConsentKind.REQUESTED, consent, now)
    return activate(session, subscriber, consent, now)


# ----------------------------------------------------------------------------- leaving


def stop(
    session: Session,
    subscriber: Subscriber,
    reason: StopReason,
    source: str,
    detail: str | None,
    now: datetime,
    evidence: str | None = None,
) -> bool:
    """Stop everything for this subscriber now, for `reason`: the address is suppressed (an
    existing entry keeps its first reason), their status changes, the withdrawal is recorded
    when it is one, every sequence ends and every email still waiting is skipped.

    Returns False if they had already left (unsubscribed, bounced or complained): their status
    stays as it is, though the address is suppressed all the same."""
    suppressions.add_entry(session, subscriber.email, reason, detail, now)
    if subscriber.status not in RECEIVING:
        return False
    effect = STOPS[reason]
    subscriber.status = effect.status
    subscriber.updated_at = now
    if effect.status == SubscriberStatus.UNSUBSCRIBED:
        subscriber.unsubscribed_at = now
    if effect.consent is not None:
        record_consent(session, subscriber, effect.consent, Consent(source, evidence), now)
    exit_enrollments(session, subscriber.id, now)
    skip_waiting_deliveries(session, subscriber.id, effect.skipped, now)
    return True


def unsubscribe(session: Session, subscriber: Subscriber, source: str, now: datetime) -> bool:
    """The person asked to leave (a link, the preferences page, the CLI on their behalf)."""
    if subscriber.status in LEFT:
        return False
    return stop(
        session, subscriber, StopReason.UNSUBSCRIBE, source, f"unsubscribed via {source}", now
    )


def unsubscribe_address(
    session: Session, email: str, source: str, now: datetime
) -> tuple[str, bool]:
    """An operator unsubscribes someone by address (NotFound if nobody has it), recorded in
    the audit log: the normalized address, and whether it changed anything."""
    subscriber = find_subscriber(session, email)
    return subscriber.email, unsubscribe_on_behalf(session, subscriber, source, now)


def unsubscribe_on_behalf(
    session: Session, subscriber: Subscriber, source: str, now: datetime
) -> bool:
    """An operator unsubscribes someone on their behalf: unsubscribe(), and its audit entry."""
    changed = unsubscribe(session, subscriber, source, now)
    if changed:
        audit.record(
            session, now, "subscriber.unsubscribe", audit_target(subscriber), {"source": source}
        )
    return changed


def skip_waiting_deliveries(session: Session, subscriber_id: int, why: str, now: datetime) -> int:
    result = session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber_id, Delivery.status.in_(WAITING))
        .values(status=DeliveryStatus.SKIPPED, outcome=why, updated_at=now)
    )
    return affected(result)


# ----------------------------------------------------------------------------- the list


@dataclass(frozen=True)
class Suppressed:
    email: str
    added: bool
    reason: str  # the reason now stored (an existing entry keeps its own)
    stopped: bool  # a pending or active subscriber was stopped


def suppress_address(
    session: Session,
    email: str,
    reason: str,
    detail: str | None,
    now: datetime,
    source: str = "cli",
) -> Suppressed:
    """An operator suppresses an address: it goes on the list, and a subscriber who still
    receives email is stopped for the reason the list keeps."""
    normalized = normalize_email(email)
    entry, added = suppressions.add_entry(
        session, normalized, check_reason(reason), check_detail(detail), now
    )
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == normalized))
    stopped = subscriber is not None and stop(
        session,
        subscriber,
        StopReason(entry.reason),
        source,
        entry.detail,
        now,
        evidence=f"suppressed by an operator ({entry.reason})",
    )
    if added or stopped:
        audit.record(
            session,
            now,
            "suppression.add",
            _suppression_target(normalized, subscriber),
            {"reason": entry.reason, "added": added, "stopped": stopped, "source": source},
            note=mask_addresses(entry.detail or ""),
        )
    return Suppressed(normalized, added, entry.reason, stopped)


def _suppression_target(email: str, subscriber: Subscriber | None) -> str:
    return audit_target(subscriber) if subscriber is not None else mask_email(email)


def lift_suppression(
    session: Session, email: str, why: str, now: datetime, source: str = "cli"
) -> str:
    """Take an address off the list. Returns the reason it had. The subscriber's status does
    not change: someone who unsubscribed comes back with `resubscribe`."""
    normalized = normalize_email(email)
    why = check_detail(why, "--reason") or ""
    if not why:
        raise InvalidInput("--reason", "say why this address may be mailed again")
    entry = suppressions.suppression_of(session, normalized)
    if entry is None:
        raise NotFound(f"{normalized} is not on the suppression list")
    suppressions.remove_entry(session, entry)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == normalized))
    if subscriber is not None:
        record_consent(
            session,
            subscriber,
            ConsentKind.SUPPRESSION_REMOVED,
            Consent(source=source, evidence=f"was {entry.reason}; removed because: {why}"),
            now,
        )
    audit.record(
        session,
        now,
        "suppression.remove",
        _suppression_target(normalized, subscriber),
        {"was": entry.reason, "source": source},
        note=mask_addresses(why),
    )
    return entry.reason
