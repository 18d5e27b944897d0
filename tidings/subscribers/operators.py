"""What staff and admins do to one subscriber, one call per action for the CLI and the
console; each calls the lifecycle and writes the audit log.

Nothing here changes a subscriber's status itself: that is `subscribers.lifecycle`'s alone
(a pause, which changes no status, is the preferences page's own `subscribers.forms.pause`).
Each function works inside the caller's transaction and takes `now` from the caller's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from tidings.db import audit
from tidings.db.models import Delivery, Subscriber
from tidings.errors import Conflict
from tidings.states import SubscriberStatus
from tidings.subscribers.directory import audit_target, find_subscriber, subscriber_by_id
from tidings.subscribers.forms import pause
from tidings.subscribers.lifecycle import (
    Consent,
    add_subscriber,
    queue_confirmation,
    resubscribe,
    unsubscribe_on_behalf,
    waiting_confirmations,
)


@dataclass(frozen=True)
class Joined:
    """Someone added or brought back, as the operator is told: address, status, the campaigns
    they are (back) in, and their confirmation or come-back emails waiting (to send at once)."""

    email: str
    status: str
    campaigns: list[str]
    waiting: list[int]

    @classmethod
    def of(cls, session: Session, subscriber: Subscriber, campaigns: list[str]) -> Joined:
        waiting = waiting_confirmations(session, subscriber)
        return cls(subscriber.email, subscriber.status, campaigns, waiting)


def add_by_operator(
    session: Session,
    now: datetime,
    email: str,
    consent: Consent,
    *,
    name: str | None,
    timezone: str | None,
    confirmed: bool,
    message_domain: str,
) -> Joined:
    """`tidings subscribers add`: add_subscriber, and what to tell the operator."""
    subscriber = add_subscriber(
        session,
        now,
        email,
        consent,
        name=name,
        timezone=timezone,
        confirmed=confirmed,
        message_domain=message_domain,
    )
    session.flush()  # the id, for the audit entry
    audit.record(
        session,
        now,
        "subscriber.add",
        audit_target(subscriber),
        {"confirmed": confirmed, "source": consent.source},
    )
    return Joined.of(session, subscriber, [])


def bring_back(
    session: Session,
    email: str,
    consent: Consent,
    now: datetime,
    message_domain: str,
    confirmed: bool,
) -> Joined:
    """`tidings subscribers resubscribe`: `resubscribe` the subscriber with this address, and
    what to tell the operator."""
    subscriber = find_subscriber(session, email)
    joined = resubscribe(session, subscriber, consent, now, message_domain, confirmed)
    audit.record(
        session, now, "subscriber.resubscribe", audit_target(subscriber), {"confirmed": confirmed}
    )
    return Joined.of(session, subscriber, joined)


def unsubscribe_by_id(
    session: Session, now: datetime, subscriber_id: int, source: str = "staff"
) -> tuple[str, bool]:
    """lifecycle.unsubscribe_address() for the subscriber with this id (the console's profile
    page): the address, and whether it changed anything."""
    subscriber = subscriber_by_id(session, subscriber_id)
    return subscriber.email, unsubscribe_on_behalf(session, subscriber, source, now)


def resend_confirmation_by_operator(
    session: Session, now: datetime, subscriber_id: int, message_domain: str
) -> Delivery:
    """Staff send a pending subscriber a new confirmation email (a fresh link). It is queued,
    as every confirmation is, and the worker sends it at its next pass; one waiting already
    is not doubled. Recorded in the audit log."""
    subscriber = subscriber_by_id(session, subscriber_id)
    if subscriber.status != SubscriberStatus.PENDING:
        raise Conflict(
            f"only a pending subscriber is sent a confirmation email (this one is "
            f"{subscriber.status})"
        )
    if waiting_confirmations(session, subscriber):
        raise Conflict(
            "a confirmation email is already waiting to be sent: the worker sends it at its "
            "next pass"
        )
    delivery = queue_confirmation(session, subscriber, now, message_domain)
    audit.record(session, now, "subscriber.resend-confirmation", audit_target(subscriber))
    return delivery


def pause_by_operator(session: Session, now: datetime, subscriber_id: int, weeks: int) -> datetime:
    """Staff pause an active subscriber's emails for `weeks` weeks on their behalf: the pause
    of their own preferences page (forms.pause), recorded in the audit log."""
    subscriber = subscriber_by_id(session, subscriber_id)
    until = pause(session, subscriber, weeks, now)
    audit.record(
        session,
        now,
        "subscriber.pause",
        audit_target(subscriber),
        {"weeks": weeks, "until": until.isoformat(timespec="seconds")},
    )
    return until
