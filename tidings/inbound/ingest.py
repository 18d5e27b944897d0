"""Acting on bounce and complaint reports that come back by email.

A report is matched to the delivery it is about by the VERP address it was sent back to
(bounces+<id>-<mac>@domain, see TIDINGS_BOUNCE_ADDRESS), else by the Message-ID of the
original message quoted in it: a report acts only on the delivery it names. A hard bounce or
a complaint stops the subscriber (`subscribers.lifecycle.stop`); a soft bounce is counted.
Nothing is ever deleted from the mailbox: unrecognised messages are reported and left where
they are, and each report is recorded by its hash so that reading the same mailbox twice
counts nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.config import Settings
from tidings.db.models import BounceEvent, Delivery, Subscriber
from tidings.inbound.mailboxes import read_messages
from tidings.inbound.reports import NotAReport, Report, parse_report
from tidings.sending.bounces import check_bounce_rate
from tidings.states import BounceKind, DeliveryStatus, StopReason
from tidings.subscribers.lifecycle import stop
from tidings.subscribers.tokens import read_verp_address
from tidings.subscribers.validation import mask_addresses, mask_email

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    read: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    already_seen: int = 0
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    unrecognised: list[tuple[str, str]] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)  # campaigns paused by the bounce rate


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


def apply_report(
    session: Session,
    report: Report,
    raw: bytes,
    delivery: Delivery,
    settings: Settings,
    now: datetime,
) -> bool:
    """Act on one matched report. Returns False if this very report was applied before."""
    digest = hashlib.sha256(raw).hexdigest()
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


def ingest(
    session: Session, path: Path, settings: Settings, secret: str, now: datetime
) -> IngestReport:
    """Read every message under `path` and act on the reports. Deletes nothing."""
    result = IngestReport()
    campaigns: set[int] = set()
    for where, raw in read_messages(path):
        result.read += 1
        try:
            report = parse_report(raw)
        except NotAReport as exc:
            result.unrecognised.append((where, str(exc)))
            continue
        delivery = find_delivery(session, report, settings, secret)
        if delivery is None:
            result.unmatched.append(
                (
                    where,
                    f"{report.kind} report matches no delivery "
                    f"(Message-ID {report.original_message_id})",
                )
            )
            continue
        if not apply_report(session, report, raw, delivery, settings, now):
            result.already_seen += 1
            continue
        if report.kind == BounceKind.HARD:
            result.hard += 1
        elif report.kind == BounceKind.SOFT:
            result.soft += 1
        else:
            result.complaints += 1
        if report.kind == BounceKind.HARD and delivery.campaign_id is not None:
            campaigns.add(delivery.campaign_id)
    session.flush()
    for campaign_id in sorted(campaigns):
        slug = check_bounce_rate(session, campaign_id, settings, now)
        if slug:
            result.paused.append(slug)
    return result
