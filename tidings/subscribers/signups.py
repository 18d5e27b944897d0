"""Sign-ups from the public form and the API: received in the request, decided by the worker.

The web request checks the fields and stores a `SignUpRequest` (`receive`): the same work
and the same answer whatever the address's state, so neither the page nor its timing tells
anyone who is subscribed. The worker then decides each request (`handle_requests`):

- a new address becomes pending and gets a confirmation email;
- a pending one gets a fresh confirmation, at most one per `confirm_resend_seconds`;
- an active one: nothing;
- someone who unsubscribed: no status changes; at most one "you asked to come back" email
  per `comeback_email_days`, whose link is the only way back;
- a bounced, complained or suppressed address: nothing.

Every confirmation or come-back email counts against the caps of `throttle` (per mailbox,
per domain, in all); past a cap nothing is sent and nothing is stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tidings.clock import Clock
from tidings.config import Settings
from tidings.db.models import Delivery, SignUpRequest, Subscriber
from tidings.states import ConsentKind, DeliveryKind, DeliveryStatus, SubscriberStatus
from tidings.subscribers import throttle
from tidings.subscribers.forms import SignUp
from tidings.subscribers.lifecycle import (
    Consent,
    add_subscriber,
    last_comeback_email,
    may_come_back,
    queue_comeback,
    queue_confirmation,
    record_consent,
)
from tidings.subscribers.suppressions import suppression_reason
from tidings.subscribers.validation import mask_email

log = logging.getLogger(__name__)
BATCH = 200
# Real seconds: a transaction decides for about this long (the web's sign-ups wait for it on
# SQLite), and a pass for at most PASS_SECONDS before the worker goes on to send.
TRANSACTION_SECONDS = 0.025
PASS_SECONDS = 2.0


class OptIn(StrEnum):
    """What became of a sign-up. For logs and tests: never shown to the person asking."""

    CREATED = "created"  # new pending subscriber, confirmation queued
    RESENT = "resent"  # already pending: a fresh confirmation queued
    THROTTLED = "throttled"  # mailed too recently: nothing
    CAPPED = "capped"  # a confirmation cap is reached: nothing
    ALREADY_ACTIVE = "already-active"  # nothing
    COMEBACK = "comeback"  # had unsubscribed: the come-back email queued, nothing else
    REFUSED = "refused"  # bounced, complained or suppressed: nothing


def receive(session: Session, sign_up: SignUp, consent: Consent, now: datetime) -> None:
    """Keep a checked sign-up for the worker to decide. Only the hash of the consent text is
    kept, as for every consent event."""
    session.add(
        SignUpRequest(
            email=sign_up.email,
            name=sign_up.name,
            timezone=sign_up.timezone,
            source=consent.source,
            evidence=consent.evidence,
            consent_text_sha256=consent.text_sha256(),
            ip=consent.ip,
            user_agent=(consent.user_agent or "")[:300] or None,
            received_at=now,
        )
    )


@dataclass
class Decided:
    """What a pass of `handle_requests` did: how many of each outcome, and whether requests
    are still waiting (the pass reached its time budget)."""

    outcomes: Counter[OptIn] = field(default_factory=Counter)
    more: bool = False


def handle_requests(
    sessions: sessionmaker[Session],
    clock: Clock,
    settings: Settings,
    key: str,
    stop: threading.Event | None = None,
    budget_seconds: float = PASS_SECONDS,
) -> Decided:
    """Decide the waiting sign-ups, oldest first, for at most `budget_seconds` (then the
    worker plans and sends, and comes back for the rest). Short transactions, each handled
    row deleted in the one that decided it; several workers (PostgreSQL) take turns, so each
    request is decided exactly once. On SQLite, the web waits for the single write lock
    while a transaction runs: a pause as long as each transaction lets its requests in."""
    decided = Decided()
    stop = stop or threading.Event()
    sqlite = sessions.kw["bind"].dialect.name == "sqlite"
    started = time.monotonic()
    while not stop.is_set():
        began = time.monotonic()
        with sessions.begin() as session:
            _one_decider_at_a_time(session)
            now = clock.now()
            requests = session.scalars(
                select(SignUpRequest).order_by(SignUpRequest.id).limit(BATCH)
            ).all()
            handled = []
            for request in requests:
                outcome = decide(session, request, now, settings, key)
                decided.outcomes[outcome] += 1
                handled.append(request.id)
                log.info("sign-up (%s): %s: %s", request.source, mask_email(request.email), outcome)
                if time.monotonic() - began > TRANSACTION_SECONDS:
                    break
            if handled:
                session.execute(delete(SignUpRequest).where(SignUpRequest.id.in_(handled)))
                throttle.prune(session, now)
        if len(requests) < BATCH and len(handled) == len(requests):
            return decided  # none left
        if time.monotonic() - started > budget_seconds:
            decided.more = True
            return decided
        if sqlite:
            stop.wait(time.monotonic() - began)
    decided.more = True
    return decided


# Deciding updates shared counters ("confirm:all", the domains'): on PostgreSQL deciders
# take turns, which also makes checking a cap and counting under it one step.
DECIDER_LOCK = 0x7469_6469  # any constant: "tidi"


def _one_decider_at_a_time(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DECIDER_LOCK})


def decide(
    session: Session, request: SignUpRequest, now: datetime, settings: Settings, key: str
) -> OptIn:
    """Act on one sign-up, inside the caller's transaction."""
    consent = Consent(
        source=request.source,
        evidence=request.evidence,
        consent_text_sha256=request.consent_text_sha256,
        ip=request.ip,
        user_agent=request.user_agent,
    )
    domain = settings.sender_domain
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == request.email))
    if subscriber is None:
        if suppression_reason(session, request.email) is not None:
            return OptIn.REFUSED  # suppressed without a subscriber row: erased, or removed
        if not _take_confirmation(session, settings, request.email, key, now):
            return OptIn.CAPPED
        try:
            with session.begin_nested():
                add_subscriber(
                    session,
                    now,
                    request.email,
                    consent,
                    name=request.name,
                    timezone=request.timezone,
                    message_domain=domain,
                )
        except IntegrityError:
            return OptIn.THROTTLED  # another worker created it at the same moment
        return OptIn.CREATED
    if subscriber.status == SubscriberStatus.PENDING:
        if _mailed_since(session, subscriber, DeliveryKind.CONFIRMATION, now, settings):
            return OptIn.THROTTLED
        if not _take_confirmation(session, settings, subscriber.email, key, now):
            return OptIn.CAPPED
        # Name and timezone stay as first given: a stranger typing someone's address must
        # not be able to change what is stored about them.
        record_consent(session, subscriber, ConsentKind.REQUESTED, consent, now)
        queue_confirmation(session, subscriber, now, domain)
        return OptIn.RESENT
    if subscriber.status == SubscriberStatus.ACTIVE:
        return OptIn.ALREADY_ACTIVE
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED and may_come_back(session, subscriber):
        # Nothing of what a stranger sends is recorded against this person: they left, and
        # only their own click on the come-back link brings them back.
        last = last_comeback_email(session, subscriber)
        if last is not None and last.status == DeliveryStatus.BOUNCED:
            return OptIn.REFUSED  # the mailbox is gone since they left
        if last is not None and now - last.created_at < timedelta(
            days=settings.comeback_email_days
        ):
            return OptIn.THROTTLED
        if not _take_confirmation(session, settings, subscriber.email, key, now):
            return OptIn.CAPPED
        queue_comeback(session, subscriber, now, domain)
        return OptIn.COMEBACK
    return OptIn.REFUSED


def resend_confirmation(
    session: Session, subscriber: Subscriber, now: datetime, settings: Settings, key: str
) -> bool:
    """A new confirmation email for a pending subscriber whose link expired (asked from the
    page of that link), within the same limits as a sign-up."""
    if subscriber.status != SubscriberStatus.PENDING:
        return False
    _one_decider_at_a_time(session)  # counting under the caps, as the worker does
    if _mailed_since(session, subscriber, DeliveryKind.CONFIRMATION, now, settings):
        return False
    if not _take_confirmation(session, settings, subscriber.email, key, now):
        return False
    queue_confirmation(session, subscriber, now, settings.sender_domain)
    return True


def _mailed_since(
    session: Session, subscriber: Subscriber, kind: DeliveryKind, now: datetime, settings: Settings
) -> bool:
    """Whether an email of this kind was queued for them within the resend interval."""
    since = now - timedelta(seconds=settings.confirm_resend_seconds)
    return (
        session.scalar(
            select(Delivery.id)
            .where(
                Delivery.subscriber_id == subscriber.id,
                Delivery.kind == kind,
                Delivery.created_at > since,
            )
            .limit(1)
        )
        is not None
    )


def _take_confirmation(
    session: Session, settings: Settings, email: str, key: str, now: datetime
) -> bool:
    return throttle.take(session, throttle.confirmation_caps(settings, email, key), now)
