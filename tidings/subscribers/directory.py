"""Finding subscribers, and changing what they told us (name, timezone, attributes): what
admins (and the console) do to the list beyond joining and leaving, which are
`subscribers.lifecycle`'s. One person's data rights and retention are `subscribers.privacy`;
what the staff console shows (its search page, a profile) is `subscribers.profiles`.

Each function works inside the caller's transaction and takes `now` from the caller's clock,
except the streaming ones, which read in chunks so a list of any size fits in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, or_, select
from sqlalchemy.orm import Session

from tidings.campaigns.store import get_campaign
from tidings.campaigns.windows import parse_delay
from tidings.db import audit
from tidings.db.models import Campaign, ConsentEvent, Delivery, Enrollment, Step, Subscriber
from tidings.errors import InvalidInput, NotFound
from tidings.states import SubscriberStatus
from tidings.subscribers.validation import (
    check_timezone,
    clean_name,
    mask_email,
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


def find_subscriber(session: Session, email: str) -> Subscriber:
    """The subscriber with this address (NotFound names it, normalized, if nobody has it)."""
    # Stored addresses are normalized, and most lookups are of one as stored: an exact match
    # needs no full syntax check (which a command would otherwise load email_validator for).
    plain = email.strip().lower() if isinstance(email, str) else ""
    if plain.isascii() and "@" in plain:
        found = session.scalar(select(Subscriber).where(Subscriber.email == plain))
        if found is not None:
            return found
    normalized = normalize_email(email)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == normalized))
    if subscriber is None:
        raise NotFound(f"no subscriber {normalized}")
    return subscriber


def subscriber_by_id(session: Session, subscriber_id: int) -> Subscriber:
    """The subscriber with this id (NotFound if there is none: erased, pruned, or never)."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFound(f"there is no subscriber #{subscriber_id} (erased, or never added)")
    return subscriber


def audit_target(subscriber: Subscriber) -> str:
    """How the audit log names a subscriber: by id and masked address (the log outlives an
    erasure, and is read by more people than the list is)."""
    return f"subscriber #{subscriber.id} {mask_email(subscriber.email)}"


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
            query = query.where(_address_or_name(session, self.search))
        return query


def _address_or_name(session: Session, text: str) -> ColumnElement[bool]:
    """`text` in the address or the name, case-insensitive. Addresses are stored in lower
    case. SQLite's LIKE ignores ASCII case by itself (and its lower() knows no other), so the
    name needs no lower() there, which halves the cost of a scan. (On PostgreSQL, lower() and
    LIKE measured faster than ILIKE.)"""
    needle = text.strip().lower()
    sqlite = session.get_bind().dialect.name == "sqlite"
    name = Subscriber.name if sqlite else func.lower(Subscriber.name)
    in_name = name.contains(needle, autoescape=True)
    return or_(Subscriber.email.contains(needle, autoescape=True), in_name)


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


def export_columns(session: Session, filters: SubscriberFilter, flat: bool = True) -> list[str]:
    """The columns of an export: the profile, then (flat, for CSV) one per attribute name
    found among the matching subscribers, or (not flat, for JSON) `attributes`."""
    if not flat:
        return [*PROFILE_COLUMNS, "attributes"]
    return [*PROFILE_COLUMNS, *attribute_keys(session, filters)]


def export_rows(
    session: Session, filters: SubscriberFilter, flat: bool = True
) -> Iterator[dict[str, Any]]:
    """The matching subscribers, streamed; flat rows carry each attribute as a column."""
    for row in subscriber_rows(session, filters):
        if flat:
            attributes = row.pop("attributes")
            row.update({k: v for k, v in attributes.items() if k not in row})
        yield row


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
        # What changed, by field name only: the values are the person's data.
        fields = sorted({change.split(":", 1)[0] for change in result.changes})
        audit.record(
            session, now, "subscriber.update", audit_target(subscriber), {"fields": fields}
        )
    return result


# ----------------------------------------------------------------------------- one person


def subscriber_details(session: Session, email: str) -> dict[str, Any]:
    """What `subscribers show` prints: status, consent history, enrollments, deliveries."""
    subscriber = find_subscriber(session, email)
    consent = [
        {"at": e.created_at, "kind": e.kind, "source": e.source, "evidence": e.evidence}
        for e in consent_events(session, subscriber.id)
    ]
    enrollments = [
        {
            "campaign": slug,
            "status": e.status,
            "next_step": e.next_position,
            "next_due_at": e.next_due_at,
        }
        for e, slug, _name in enrollments_of(session, subscriber.id)
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
        for d, _slug, key, _subject in deliveries_of(session, subscriber.id)
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


def consent_events(session: Session, subscriber_id: int) -> Sequence[ConsentEvent]:
    return session.scalars(
        select(ConsentEvent)
        .where(ConsentEvent.subscriber_id == subscriber_id)
        .order_by(ConsentEvent.id)
    ).all()


def enrollments_of(session: Session, subscriber_id: int) -> Sequence[Any]:
    """(enrollment, campaign slug, campaign name) rows."""
    return session.execute(
        select(Enrollment, Campaign.slug, Campaign.name)
        .join(Campaign, Campaign.id == Enrollment.campaign_id)
        .where(Enrollment.subscriber_id == subscriber_id)
        .order_by(Enrollment.id)
    ).all()


def deliveries_of(session: Session, subscriber_id: int) -> Sequence[Any]:
    """(delivery, campaign slug, step key, step subject) rows; a confirmation has no step."""
    return session.execute(
        select(Delivery, Campaign.slug, Step.key, Step.subject)
        .outerjoin(Campaign, Campaign.id == Delivery.campaign_id)
        .outerjoin(Step, Step.id == Delivery.step_id)
        .where(Delivery.subscriber_id == subscriber_id)
        .order_by(Delivery.id)
    ).all()


def find_subscribers(session: Session, emails: Sequence[str] | None) -> list[Subscriber]:
    """The subscribers with these addresses (NotFound names the first unknown one), or every
    active subscriber when `emails` is None."""
    if emails is None:
        return list(
            session.scalars(select(Subscriber).where(Subscriber.status == SubscriberStatus.ACTIVE))
        )
    return [find_subscriber(session, email) for email in emails]
