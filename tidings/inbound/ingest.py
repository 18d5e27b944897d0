"""Acting on what comes back by email: one message at a time, whatever its path (IMAP,
Maildir, mbox, .eml, the SMTP listener), after `classify` said what it is.

- A bounce or a complaint acts only on the delivery it names: the VERP address it was sent
  back to (bounces+<id>-<mac>@domain, see TIDINGS_BOUNCE_ADDRESS), else the Message-ID of the
  original message it quotes. A hard bounce or a complaint stops the subscriber
  (`subscribers.lifecycle.stop`); a soft bounce is counted.
- An unsubscribe request (List-Unsubscribe's mailto:) unsubscribes the subscriber whose
  random key its subject carries, through `lifecycle.unsubscribe`, source "email".
- Automatic mail changes nothing; a person's message ("other") changes nothing either, and is
  left where a person reads it (issue 16 builds on it).

Every message read is recorded in inbound_messages by the SHA-256 of its bytes, its kind, and
the subscriber and delivery it names when known; never its text. Reading it again finds the
digest and acts on nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tidings.config import Settings
from tidings.db.models import BounceEvent, Delivery, InboundMessage, Subscriber
from tidings.inbound.classify import Inbound, classify
from tidings.inbound.mailboxes import read_messages
from tidings.inbound.reports import Report
from tidings.sending.ledger import pause_if_bouncing
from tidings.states import BounceKind, DeliveryStatus, InboundKind, StopReason
from tidings.subscribers.lifecycle import stop, unsubscribe
from tidings.subscribers.tokens import read_verp_address
from tidings.subscribers.validation import mask_addresses, mask_email

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handled:
    """What became of one message."""

    inbound: Inbound
    seen_before: bool  # its digest was recorded already: nothing was done again
    matched: bool  # it names a delivery or a subscriber of ours
    for_a_person: bool  # leave it where a person reads it (a reply; a request we cannot act on)
    note: str  # one line for the operator: what was done, or why nothing was
    paused: str | None = None  # a campaign this hard bounce paused (too many bounces)


@dataclass
class IngestReport:
    """The tally of a run over a mailbox (`tidings inbox ingest` / `fetch`)."""

    read: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    unsubscribed: int = 0  # unsubscribe requests acted on
    automatic: int = 0
    already_seen: int = 0
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    unrecognised: list[tuple[str, str]] = field(default_factory=list)  # for a person
    paused: list[str] = field(default_factory=list)  # campaigns paused by the bounce rate

    def add(self, where: str, handled: Handled) -> None:
        self.read += 1
        kind = handled.inbound.kind
        if handled.paused:
            self.paused.append(handled.paused)
        if handled.seen_before:
            self.already_seen += 1
        elif kind == InboundKind.OTHER:
            self.unrecognised.append((where, handled.note))
        elif kind == InboundKind.AUTOMATIC:
            self.automatic += 1
        elif not handled.matched:
            self.unmatched.append((where, handled.note))
        elif kind == InboundKind.UNSUBSCRIBE:
            self.unsubscribed += 1
        elif kind == InboundKind.COMPLAINT:
            self.complaints += 1
        elif handled.inbound.report is not None and handled.inbound.report.kind == BounceKind.SOFT:
            self.soft += 1
        else:
            self.hard += 1


def ingest(
    session: Session, path: Path, settings: Settings, secret: str, now: datetime
) -> IngestReport:
    """Read every message under `path` (Maildir, mbox, .eml or a folder of them) and act on
    each, in the caller's transaction. Deletes, moves and marks nothing."""
    result = IngestReport()
    for found in read_messages(path):
        handled = handle_message(session, found.raw, found.source, settings, secret, now)
        result.add(found.where, handled)
    return result


def handle_message(
    session: Session,
    raw: bytes,
    source: str,
    settings: Settings,
    secret: str,
    now: datetime,
    envelope_sender: str | None = None,
    envelope_recipients: tuple[str, ...] = (),
) -> Handled:
    """Classify one message, record it, and act on it, in the caller's transaction."""
    digest = hashlib.sha256(raw).hexdigest()
    inbound = classify(raw, envelope_sender, envelope_recipients)
    delivery, subscriber = match(session, inbound, settings, secret)
    # A report must name one of our deliveries; anything else, one of our subscribers.
    is_report = inbound.kind in (InboundKind.BOUNCE, InboundKind.COMPLAINT)
    matched = (delivery if is_report else subscriber) is not None
    # A reply, and a report or request tidings could not act on, may need a person.
    for_a_person = inbound.kind == InboundKind.OTHER or (
        inbound.kind != InboundKind.AUTOMATIC and not matched
    )
    row = InboundMessage(
        digest=digest,
        source=source,
        kind=inbound.kind,
        subscriber_id=subscriber.id if subscriber is not None else None,
        delivery_id=delivery.id if delivery is not None else None,
        received_at=now,
    )
    if not _record_once(session, row):
        return Handled(inbound, True, matched, for_a_person, "read before: nothing done again")
    note, paused = _act(session, inbound, digest, delivery, subscriber, settings, now)
    return Handled(inbound, False, matched, for_a_person, note, paused)


def _record_once(session: Session, row: InboundMessage) -> bool:
    """Store the row; False if a message with its digest was recorded already (here or by a
    process reading the same message at the same moment)."""
    if session.scalar(select(InboundMessage.id).where(InboundMessage.digest == row.digest)):
        return False
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


def match(
    session: Session, inbound: Inbound, settings: Settings, secret: str
) -> tuple[Delivery | None, Subscriber | None]:
    """The delivery and the subscriber a message names. A report names a delivery only by its
    VERP address or the Message-ID it quotes; an unsubscribe request a subscriber only by the
    key in its subject; other mail by the email it answers, else by its sender's address."""
    if inbound.report is not None:
        delivery = find_delivery(session, inbound.report, settings, secret)
        return delivery, _subscriber_of(session, delivery)
    if inbound.kind == InboundKind.UNSUBSCRIBE:
        return None, session.scalar(
            select(Subscriber).where(Subscriber.key == inbound.unsubscribe_key)
        )
    for message_id in inbound.replying_to:
        delivery = session.scalar(select(Delivery).where(Delivery.message_id == message_id))
        if delivery is not None:
            return delivery, _subscriber_of(session, delivery)
    if inbound.sender:
        return None, session.scalar(select(Subscriber).where(Subscriber.email == inbound.sender))
    return None, None


def _subscriber_of(session: Session, delivery: Delivery | None) -> Subscriber | None:
    return session.get(Subscriber, delivery.subscriber_id) if delivery is not None else None


def find_delivery(
    session: Session, report: Report, settings: Settings, secret: str
) -> Delivery | None:
    if settings.bounce_address:
        for address in report.returned_to:
            delivery_id = read_verp_address(settings.bounce_address, secret, address)
            if delivery_id is not None:
                delivery = session.get(Delivery, delivery_id)
                if delivery is not None:
                    return delivery
    if report.original_message_id:
        return session.scalar(
            select(Delivery).where(Delivery.message_id == report.original_message_id)
        )
    return None


def _act(
    session: Session,
    inbound: Inbound,
    digest: str,
    delivery: Delivery | None,
    subscriber: Subscriber | None,
    settings: Settings,
    now: datetime,
) -> tuple[str, str | None]:
    """Do what the message asks. Returns the operator's note and a campaign paused, if any."""
    report = inbound.report
    if report is not None and delivery is None:
        return (
            f"{report.kind} report matches no delivery (Message-ID "
            f"{report.original_message_id or 'not quoted'}; no VERP address of ours)",
            None,
        )
    if report is not None and delivery is not None:
        if not apply_report(session, report, digest, delivery, now):
            return "this report was applied before", None
        paused = None
        if report.kind == BounceKind.HARD and delivery.campaign_id is not None:
            session.flush()
            paused = pause_if_bouncing(session, delivery.campaign_id, settings, now)
        what = "complaint" if report.kind == BounceKind.COMPLAINT else f"{report.kind} bounce"
        return f"{what} of delivery {delivery.id}", paused
    if inbound.kind == InboundKind.UNSUBSCRIBE:
        if subscriber is None:
            return "unsubscribe request with a key that is nobody's: a person should answer", None
        changed = unsubscribe(session, subscriber, "email", now)
        who = mask_email(subscriber.email)
        if changed:
            log.info("unsubscribed %s by email", who)
        return f"{who} unsubscribed" if changed else f"{who} had already left", None
    who = mask_email(inbound.sender) if inbound.sender else "an unknown sender"
    return f"{inbound.why}, from {who}", None


def apply_report(
    session: Session, report: Report, digest: str, delivery: Delivery, now: datetime
) -> bool:
    """Act on one matched report. Returns False if this very report was applied before (its
    bounce event is there, e.g. read before inbound_messages existed)."""
    if session.scalar(select(BounceEvent.id).where(BounceEvent.report_sha256 == digest)):
        return False
    session.add(
        BounceEvent(
            report_sha256=digest,
            kind=report.kind,
            status=report.status,
            diagnostic=mask_addresses(report.diagnostic),
            delivery_id=delivery.id,
            campaign_id=delivery.campaign_id,
            created_at=now,
        )
    )
    subscriber = session.get(Subscriber, delivery.subscriber_id)
    if subscriber is None:
        return True
    if report.kind == BounceKind.SOFT:
        subscriber.soft_bounces = (subscriber.soft_bounces or 0) + 1
        return True
    reason = StopReason.HARD_BOUNCE if report.kind == BounceKind.HARD else StopReason.COMPLAINT
    masked = mask_addresses(report.diagnostic)
    log.warning("%s for %s: %s", reason, mask_email(subscriber.email), masked)
    if report.kind == BounceKind.HARD and delivery.status == DeliveryStatus.SENT:
        delivery.status = DeliveryStatus.BOUNCED
        delivery.outcome = f"bounced later: {report.diagnostic}"[:1000]
        delivery.updated_at = now
    stop(session, subscriber, reason, "email", masked[:500], now, evidence=masked)
    return True
