"""What the public web pages and the API do to subscribers: check a sign-up, confirm, come
back, change preferences, pause and resume. (What becomes of a sign-up is `signups`'s.)

Each function works inside the caller's transaction and takes `now` from the caller's clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tidings.campaigns.sequencing import step_window
from tidings.campaigns.windows import next_send_time
from tidings.clock import zone_or_utc
from tidings.db.models import Campaign, Delivery, Enrollment, Step, Subscriber
from tidings.errors import Conflict, InvalidInput, TidingsError
from tidings.states import (
    RECEIVING,
    CampaignKind,
    CampaignTrigger,
    DeliveryKind,
    DeliveryStatus,
    EnrollmentStatus,
    SubscriberStatus,
)
from tidings.subscribers.lifecycle import (
    Consent,
    activate,
    may_come_back,
    resubscribe,
)
from tidings.subscribers.tokens import InvalidToken, read_token
from tidings.subscribers.validation import (
    check_timezone,
    clean_name,
    normalize_email,
)

EMAIL_MAX_CHARS = 254  # RFC 5321's limit on a whole address
TIMEZONE_MAX_CHARS = 64
CONSENT_TEXT_MAX_CHARS = 2000
PAUSE_WEEKS = (1, 2, 4)

T = TypeVar("T")


class InvalidFields(TidingsError):
    """Several fields were wrong at once. `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class SignUp:
    """A checked sign-up: a normalized address, a clean name, a known timezone."""

    email: str
    name: str
    timezone: str


@dataclass(frozen=True)
class Profile:
    name: str
    timezone: str


def _field(errors: dict[str, str], field: str, check: Callable[..., T], *args: Any) -> T | None:
    """check(*args), or None with the reason noted in `errors` (to report every field)."""
    try:
        return check(*args)
    except InvalidInput as exc:
        errors[field] = exc.reason
        return None


def _too_long(value: str | None, limit: int) -> str | None:
    if value is not None and len(value) > limit:
        return f"is {len(value)} characters long; the limit is {limit}"
    return None


def check_sign_up(email: str | None, name: str | None, timezone: str | None) -> SignUp:
    """Every problem at once (InvalidFields), or a SignUp ready to store. An empty timezone
    means UTC."""
    errors: dict[str, str] = {}
    if (problem := _too_long(email, EMAIL_MAX_CHARS)) is not None:
        errors["email"] = problem
        clean_email = None
    else:
        clean_email = _field(errors, "email", normalize_email, email or "")
    clean = _field(errors, "name", clean_name, name)
    if (problem := _too_long(timezone, TIMEZONE_MAX_CHARS)) is not None:
        errors["timezone"] = problem
        tz = None
    else:
        tz = _field(errors, "timezone", check_timezone, (timezone or "").strip() or None)
    if errors or clean_email is None or clean is None or tz is None:
        raise InvalidFields(errors)
    return SignUp(email=clean_email, name=clean, timezone=tz)


def check_profile(name: str | None, timezone: str | None) -> Profile:
    """The preferences form's name and timezone, checked like a sign-up's."""
    errors: dict[str, str] = {}
    clean = _field(errors, "name", clean_name, name)
    if not (timezone or "").strip():
        errors["timezone"] = "choose a timezone, such as America/New_York"
        tz = None
    elif (problem := _too_long(timezone, TIMEZONE_MAX_CHARS)) is not None:
        errors["timezone"] = problem
        tz = None
    else:
        tz = _field(errors, "timezone", check_timezone, timezone)
    if errors or clean is None or tz is None:
        raise InvalidFields(errors)
    return Profile(name=clean, timezone=tz)


def check_ip(raw: str | None, field: str = "ip") -> str | None:
    """An IPv4 or IPv6 address in canonical form, or None if empty."""
    if raw is None or raw == "":
        return None
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError as exc:
        raise InvalidInput(field, f"{raw!r} is not an IP address") from exc


# ----------------------------------------------------------------------------- links


def subscriber_by_key(session: Session, key: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.key == key))


def subscriber_for_token(
    session: Session,
    secret: str,
    scope: str,
    token: str,
    now: datetime,
    max_age: timedelta | None = None,
) -> Subscriber:
    """The subscriber a link is for. InvalidToken if forged, of another scope or for nobody
    (erased); ExpiredToken (an InvalidToken) if too old."""
    if len(token) > 200:  # real tokens are ~50 characters
        raise InvalidToken("this link is not valid")
    key = read_token(secret, scope, token, now=now, max_age=max_age)
    subscriber = subscriber_by_key(session, key)
    if subscriber is None:
        raise InvalidToken("this link is not valid")
    return subscriber


class Confirmed(StrEnum):
    NOW = "confirmed"
    ALREADY = "already"
    GONE = "gone"  # unsubscribed, bounced or complained since: the link no longer applies


def confirm(session: Session, subscriber: Subscriber, consent: Consent, now: datetime) -> str:
    """The confirm link was opened. Idempotent. Returns a Confirmed value."""
    if subscriber.status == SubscriberStatus.ACTIVE:
        return Confirmed.ALREADY
    if subscriber.status != SubscriberStatus.PENDING:
        return Confirmed.GONE
    try:
        activate(session, subscriber, consent, now)
    except Conflict:
        return Confirmed.GONE  # suppressed meanwhile (a bounce, a complaint)
    return Confirmed.NOW


def come_back(session: Session, subscriber: Subscriber, consent: Consent, now: datetime) -> str:
    """The come-back link was clicked (its button pressed): someone who unsubscribed is back.
    Idempotent. Returns a Confirmed value."""
    if subscriber.status == SubscriberStatus.ACTIVE:
        return Confirmed.ALREADY
    if not may_come_back(session, subscriber):
        return Confirmed.GONE
    resubscribe(session, subscriber, consent, now, message_domain="", confirmed=True)
    return Confirmed.NOW


def campaign_names(session: Session, subscriber: Subscriber) -> list[str]:
    """Names of the sequences this subscriber is in now (for 'what you will stop receiving')."""
    return list(
        session.scalars(
            select(Campaign.name)
            .join(Enrollment, Enrollment.campaign_id == Campaign.id)
            .where(
                Enrollment.subscriber_id == subscriber.id,
                Enrollment.status == EnrollmentStatus.ACTIVE,
            )
            .order_by(Campaign.name)
        )
    )


def confirm_campaign_names(session: Session) -> list[str]:
    """Names of the sequences a new subscriber joins on confirming."""
    return list(
        session.scalars(
            select(Campaign.name)
            .where(
                Campaign.kind == CampaignKind.SEQUENCE, Campaign.trigger == CampaignTrigger.CONFIRM
            )
            .order_by(Campaign.name)
        )
    )


# ----------------------------------------------------------------------------- preferences


def update_profile(
    session: Session, subscriber: Subscriber, profile: Profile, now: datetime
) -> bool:
    """New name and timezone. The send window follows the new timezone from the next email on.
    Returns whether anything changed."""
    if subscriber.status not in RECEIVING:
        raise Conflict(f"a subscriber who is {subscriber.status} has no preferences to change")
    if (subscriber.name, subscriber.timezone) == (profile.name, profile.timezone):
        return False
    subscriber.name = profile.name
    subscriber.timezone = profile.timezone
    subscriber.updated_at = now
    return True


def pause(session: Session, subscriber: Subscriber, weeks: int, now: datetime) -> datetime:
    """Hold every campaign email for `weeks` weeks. The planner and the dispatcher defer what
    falls due meanwhile to the first send window after the pause: nothing is skipped and nothing
    is sent twice. Returns when the pause ends."""
    if weeks not in PAUSE_WEEKS:
        raise InvalidInput("weeks", f"choose {', '.join(map(str, PAUSE_WEEKS))} weeks")
    if subscriber.status != SubscriberStatus.ACTIVE:
        raise Conflict(f"only an active subscriber can pause (this one is {subscriber.status})")
    subscriber.paused_until = now + timedelta(weeks=weeks)
    subscriber.updated_at = now
    return subscriber.paused_until


def resume(session: Session, subscriber: Subscriber, now: datetime) -> bool:
    """End a pause now. What the pause pushed back comes forward again, but never earlier than
    the sequence's own delay after the last email, and only inside the send window.
    Returns False if there was no pause to end."""
    if subscriber.paused_until is None or subscriber.paused_until <= now:
        changed = subscriber.paused_until is not None
        subscriber.paused_until = None
        return changed
    subscriber.paused_until = None
    subscriber.updated_at = now
    tz = zone_or_utc(subscriber.timezone)
    rows = session.execute(
        select(Enrollment, Campaign)
        .join(Campaign, Campaign.id == Enrollment.campaign_id)
        .where(
            Enrollment.subscriber_id == subscriber.id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.next_due_at > now,
        )
    ).all()
    for enrollment, campaign in rows:
        step = session.scalar(
            select(Step).where(
                Step.campaign_id == campaign.id, Step.position == enrollment.next_position
            )
        )
        if step is None:
            continue
        # The same rule as sequencing.advance_after_deliveries: the delay counts from the
        # outcome of the previous email (or from enrolling, before the first one).
        outcomes = [
            sent_at or updated_at
            for sent_at, updated_at in session.execute(
                select(Delivery.sent_at, Delivery.updated_at).where(
                    Delivery.subscriber_id == subscriber.id,
                    Delivery.campaign_id == campaign.id,
                    Delivery.kind == DeliveryKind.STEP,
                )
            )
        ]
        since = max(outcomes) if outcomes else enrollment.created_at
        after = since + timedelta(seconds=step.delay_seconds)
        earliest = next_send_time(step_window(campaign, step.send_window), tz, max(now, after))
        if enrollment.next_due_at is None or earliest < enrollment.next_due_at:
            enrollment.next_due_at = earliest
            enrollment.updated_at = now
    # Emails already planned and held back by the dispatcher: let it look at them again (it
    # re-checks the send window). Retries keep their backoff.
    session.execute(
        update(Delivery)
        .where(
            Delivery.subscriber_id == subscriber.id,
            Delivery.kind == DeliveryKind.STEP,
            Delivery.status == DeliveryStatus.QUEUED,
            Delivery.next_attempt_at > now,
        )
        .values(next_attempt_at=now, updated_at=now)
    )
    return True
