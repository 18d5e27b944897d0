"""What admins do to the subscriber list beyond opt-in and leaving: find, export, update,
export one person's data (right of access), erase one person (right to erasure), prune
requests nobody confirmed.

Each function works inside the caller's transaction and takes `now` from the caller's clock,
except the streaming ones, which read in chunks so a list of any size fits in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from tidings.campaigns.schedule import parse_delay
from tidings.campaigns.store import get_campaign
from tidings.errors import InvalidInput
from tidings.models import (
    BounceEvent,
    Campaign,
    ConsentEvent,
    Delivery,
    Enrollment,
    Erasure,
    Step,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from tidings.subscribers.service import find_subscriber
from tidings.subscribers.validation import (
    check_timezone,
    clean_name,
    email_sha256,
    normalize_email,
)

ATTRIBUTE_KEY_MAX_CHARS = 64
ATTRIBUTE_VALUE_MAX_CHARS = 1000
# Profile fields, and the columns of an export that an import ignores.
RESERVED_ATTRIBUTES = frozenset(
    {"email", "name", "timezone", "status", "created_at", "updated_at", "confirmed_at"}
    | {"unsubscribed_at", "paused_until"}
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
STREAM_CHUNK = 1000

# ----------------------------------------------------------------------------- finding


@dataclass(frozen=True)
class SubscriberFilter:
    """Which subscribers a list or an export covers; empty means everyone."""

    statuses: Sequence[str] = ()
    campaign: str | None = None  # slug: enrolled in it (in any enrollment state)
    since: datetime | None = None  # created at or after
    search: str | None = None  # in the address or the name, case-insensitive

    def apply(self, session: Session, query: Select[Any]) -> Select[Any]:
        if self.statuses:
            query = query.where(Subscriber.status.in_(list(self.statuses)))
        if self.campaign:
            campaign = get_campaign(session, self.campaign)
            query = query.where(
                exists().where(
                    Enrollment.subscriber_id == Subscriber.id,
                    Enrollment.campaign_id == campaign.id,
                )
            )
        if self.since is not None:
            query = query.where(Subscriber.created_at >= self.since)
        if self.search:
            needle = self.search.strip().lower()
            query = query.where(
                or_(
                    Subscriber.email.contains(needle, autoescape=True),
                    func.lower(Subscriber.name).contains(needle, autoescape=True),
                )
            )
        return query


def parse_since(text: str, now: datetime) -> datetime:
    """'2026-10-01', '2026-10-01T12:00:00+02:00', or an age such as '7d' / '12h' (before now)."""
    raw = text.strip()
    try:
        return now - timedelta(seconds=parse_delay(raw))
    except ValueError:
        pass
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(
            "--since", f"{text!r}: use a date (2026-10-01), a date and time, or an age (7d, 12h)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_age(text: str, option: str) -> timedelta:
    """'30d', '2w', '36h' -> a duration (weeks allowed here: 'w' = 7 days)."""
    raw = text.strip().lower()
    weeks = re.fullmatch(r"(\d+)\s*w", raw)
    try:
        seconds = int(weeks[1]) * 7 * 86400 if weeks else parse_delay(raw)
    except ValueError:
        raise InvalidInput(option, f"{text!r}: use a duration such as 30d, 2w or 36h") from None
    if seconds <= 0:
        raise InvalidInput(option, "must be longer than zero")
    return timedelta(seconds=seconds)


PROFILE_COLUMNS = [
    "email",
    "name",
    "timezone",
    "status",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
]


def subscriber_rows(
    session: Session, filters: SubscriberFilter, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Matching subscribers in id order, read in chunks (keyset paging), so memory stays flat
    however long the list, on SQLite and PostgreSQL alike."""
    after = 0
    left = limit
    while left is None or left > 0:
        chunk = STREAM_CHUNK if left is None else min(STREAM_CHUNK, left)
        query = filters.apply(
            session, select(Subscriber).where(Subscriber.id > after).order_by(Subscriber.id)
        ).limit(chunk)
        found = session.scalars(query).all()
        for subscriber in found:
            yield profile_row(subscriber)
        session.expunge_all()  # keep the identity map from growing with the list
        if len(found) < chunk:
            return
        after = found[-1].id
        if left is not None:
            left -= len(found)


def profile_row(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "timezone": subscriber.timezone,
        "status": subscriber.status,
        "created_at": subscriber.created_at,
        "confirmed_at": subscriber.confirmed_at,
        "unsubscribed_at": subscriber.unsubscribed_at,
        "attributes": dict(subscriber.attributes or {}),
    }


def attribute_keys(session: Session, filters: SubscriberFilter) -> list[str]:
    """Every attribute name among the matching subscribers, sorted: the extra CSV columns of
    an export. One streaming pass; memory holds the names, not the rows."""
    keys: set[str] = set()
    for row in subscriber_rows(session, filters):
        keys.update(row["attributes"])
    return sorted(keys)


# ----------------------------------------------------------------------------- changing


@dataclass
class UpdateResult:
    email: str
    changes: list[str] = field(default_factory=list)


def parse_attribute(text: str) -> tuple[str, str | None]:
    """'city=Lyon' -> ('city', 'Lyon'); 'city=' -> ('city', None), which removes it."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InvalidInput("--attr", f"{text!r}: use KEY=VALUE (KEY= removes the attribute)")
    if len(key) > ATTRIBUTE_KEY_MAX_CHARS or _CONTROL.search(key):
        raise InvalidInput(
            "--attr", f"{key[:80]!r}: a name is one line of at most {ATTRIBUTE_KEY_MAX_CHARS} chars"
        )
    if key.lower() in ("name", "timezone"):
        raise InvalidInput("--attr", f"{key!r} is not an attribute: use --{key.lower()}")
    if key.lower() in RESERVED_ATTRIBUTES:
        raise InvalidInput("--attr", f"{key!r} is kept by tidings and cannot be an attribute")
    value = value.strip()
    if _CONTROL.search(value):
        raise InvalidInput("--attr", f"{key}: must be one line without control characters")
    if len(value) > ATTRIBUTE_VALUE_MAX_CHARS:
        raise InvalidInput(
            "--attr",
            f"{key}: is {len(value)} characters long; the limit is {ATTRIBUTE_VALUE_MAX_CHARS}",
        )
    return key, value or None


def update_subscriber(
    session: Session,
    email: str,
    now: datetime,
    name: str | None = None,
    timezone: str | None = None,
    attributes: Sequence[tuple[str, str | None]] = (),
) -> UpdateResult:
    """Change a subscriber's name, timezone or attributes. Everything is checked before
    anything changes. A new timezone applies from the next email planned."""
    new_name = clean_name(name, "--name") if name is not None else None
    new_tz = check_timezone(timezone, "--timezone") if timezone is not None else None
    subscriber = find_subscriber(session, email)
    result = UpdateResult(subscriber.email)
    if new_name is not None and new_name != subscriber.name:
        result.changes.append(f"name: {subscriber.name!r} -> {new_name!r}")
        subscriber.name = new_name
    if new_tz is not None and new_tz != subscriber.timezone:
        result.changes.append(f"timezone: {subscriber.timezone} -> {new_tz}")
        subscriber.timezone = new_tz
    merged = dict(subscriber.attributes or {})
    for key, value in attributes:
        if value is None:
            if key in merged:
                result.changes.append(f"{key}: removed")
                del merged[key]
        elif merged.get(key) != value:
            result.changes.append(f"{key}: {merged.get(key)!r} -> {value!r}")
            merged[key] = value
    if merged != (subscriber.attributes or {}):
        subscriber.attributes = merged  # a new dict: JSON columns only notice reassignment
    if result.changes:
        subscriber.updated_at = now
    return result


# ----------------------------------------------------------------------------- one person


def subscriber_details(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """What `subscribers show` prints: status, consent history, enrollments, deliveries."""
    consent = [
        {"at": e.created_at, "kind": e.kind, "source": e.source, "evidence": e.evidence}
        for e in _consent_events(session, subscriber.id)
    ]
    enrollments = [
        {
            "campaign": slug,
            "status": e.status,
            "next_step": e.next_position,
            "next_due_at": e.next_due_at,
        }
        for e, slug, _name in _enrollments(session, subscriber.id)
    ]
    deliveries = [
        {
            "id": d.id,
            "kind": d.kind,
            "step": key,
            "status": d.status,
            "attempts": d.attempts,
            "sent_at": d.sent_at,
            "outcome": d.outcome,
        }
        for d, _slug, key, _subject in _deliveries(session, subscriber.id)
    ]
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "timezone": subscriber.timezone,
        "status": subscriber.status,
        "created_at": subscriber.created_at,
        "confirmed_at": subscriber.confirmed_at,
        "unsubscribed_at": subscriber.unsubscribed_at,
        "consent": consent,
        "enrollments": enrollments,
        "deliveries": deliveries,
    }


def _consent_events(session: Session, subscriber_id: int) -> Sequence[ConsentEvent]:
    return session.scalars(
        select(ConsentEvent)
        .where(ConsentEvent.subscriber_id == subscriber_id)
        .order_by(ConsentEvent.id)
    ).all()


def _enrollments(session: Session, subscriber_id: int) -> Sequence[Any]:
    """(enrollment, campaign slug, campaign name) rows."""
    return session.execute(
        select(Enrollment, Campaign.slug, Campaign.name)
        .join(Campaign, Campaign.id == Enrollment.campaign_id)
        .where(Enrollment.subscriber_id == subscriber_id)
        .order_by(Enrollment.id)
    ).all()


def _deliveries(session: Session, subscriber_id: int) -> Sequence[Any]:
    """(delivery, campaign slug, step key, step subject) rows; a confirmation has no step."""
    return session.execute(
        select(Delivery, Campaign.slug, Step.key, Step.subject)
        .outerjoin(Campaign, Campaign.id == Delivery.campaign_id)
        .outerjoin(Step, Step.id == Delivery.step_id)
        .where(Delivery.subscriber_id == subscriber_id)
        .order_by(Delivery.id)
    ).all()


# ----------------------------------------------------------------------------- data rights


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
        for e in _consent_events(session, subscriber.id)
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
        for e, slug, name in _enrollments(session, subscriber.id)
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
        for d, slug, key, subject in _deliveries(session, subscriber.id)
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
        counts[model] = result.rowcount or 0
    session.delete(subscriber)
    # The detail of a bounce is the server's reply, which usually quotes the address: it goes.
    detail = f"erased on {now.date().isoformat()}; the address itself is not stored"
    suppression = session.scalar(select(Suppression).where(Suppression.email_sha256 == digest))
    added = suppression is None
    if suppression is None:
        suppression = Suppression(
            email_sha256=digest, reason="manual", detail=detail, created_at=now
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
            totals[name] += result.rowcount or 0
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
        totals["subscribers"] += result.rowcount or 0
    return PruneReport(cutoff=cutoff, **totals)
