"""One person's data rights, and retention: export everything stored about someone (right of
access), erase someone everywhere (right to erasure), prune sign-up requests nobody confirmed.

Each function works inside the caller's transaction and takes `now` from the caller's clock,
except `erase_everywhere`, which is one erasure from start to finish: its own transaction, and
then, on SQLite, the write-ahead log folded into the database file and emptied. Together with
`PRAGMA secure_delete` (set on every connection, tidings.db), that leaves no copy of what was
deleted in either file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from tidings.db import audit
from tidings.db.bulk import affected
from tidings.db.models import (
    BounceEvent,
    Campaign,
    ConsentEvent,
    Delivery,
    Enrollment,
    Erasure,
    InboundMessage,
    SignUpRequest,
    Subscriber,
    Suppression,
)
from tidings.errors import InvalidInput
from tidings.states import StopReason, SubscriberStatus
from tidings.subscribers.directory import (
    audit_target,
    consent_events,
    deliveries_of,
    enrollments_of,
    find_subscriber,
    profile_row,
    subscriber_by_id,
)
from tidings.subscribers.suppressions import add_entry, key_entry, suppression_of
from tidings.subscribers.validation import mask_addresses, normalize_email

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
STREAM_CHUNK = 1000
ABOUT = (
    "Everything this newsletter stores about you: your profile, each time you gave or "
    "withdrew consent, any sign-up request not yet handled, the email series you are in, every "
    "email sent or planned for you, the reports mail servers sent back about those emails "
    "(bounces), the messages that came back from you or about you (an unsubscribe request, a "
    "reply), and whether your address is on the list of addresses never to be mailed. Nothing "
    "else is kept: no opens, no clicks, nothing clinical."
)


# ----------------------------------------------------------------------------- data rights


def export_data(session: Session, email: str, now: datetime) -> dict[str, Any]:
    """Everything tidings stores about one person, for a right-of-access request. The link
    key is left out: it works like a password."""
    subscriber = find_subscriber(session, email)
    suppression = suppression_of(session, subscriber.email)
    return {
        "exported_at": now,
        "about": ABOUT,
        "profile": {
            **{k: v for k, v in profile_row(subscriber).items() if k != "attributes"},
            "updated_at": subscriber.updated_at,
            "paused_until": subscriber.paused_until,
            "soft_bounces": subscriber.soft_bounces,
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
        "consent_events": _consent_of(session, subscriber),
        "sign_up_requests": _sign_up_requests_of(session, subscriber),
        "enrollments": _enrollments_of(session, subscriber),
        "deliveries": _deliveries_of(session, subscriber),
        "bounce_reports": _bounce_reports_of(session, subscriber),
        "inbound_messages": _inbound_messages_of(session, subscriber),
    }


def export_data_by_operator(session: Session, now: datetime, subscriber_id: int) -> dict[str, Any]:
    """export_data() for the subscriber with this id, taken by a member of staff: recorded in
    the audit log (who downloaded whose data), so it needs a unit of work that writes."""
    subscriber = subscriber_by_id(session, subscriber_id)
    data = export_data(session, subscriber.email, now)
    audit.record(session, now, "subscriber.export-data", audit_target(subscriber))
    return data


def _consent_of(session: Session, subscriber: Subscriber) -> list[dict[str, Any]]:
    return [
        {
            "at": e.created_at,
            "kind": e.kind,
            "source": e.source,
            "evidence": e.evidence,
            "consent_text_sha256": e.consent_text_sha256,
            "ip": e.ip,
            "user_agent": e.user_agent,
            "seconds_after_email": e.seconds_after_email,
        }
        for e in consent_events(session, subscriber.id)
    ]


def _sign_up_requests_of(session: Session, subscriber: Subscriber) -> list[dict[str, Any]]:
    """Sign-ups received for this address that the worker has not handled yet."""
    return [
        {
            "received_at": r.received_at,
            "name": r.name,
            "timezone": r.timezone,
            "source": r.source,
            "evidence": r.evidence,
            "consent_text_sha256": r.consent_text_sha256,
            "ip": r.ip,
            "user_agent": r.user_agent,
        }
        for r in session.scalars(
            select(SignUpRequest)
            .where(SignUpRequest.email == subscriber.email)
            .order_by(SignUpRequest.id)
        )
    ]


def _enrollments_of(session: Session, subscriber: Subscriber) -> list[dict[str, Any]]:
    return [
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


def _deliveries_of(session: Session, subscriber: Subscriber) -> list[dict[str, Any]]:
    return [
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
            "server": d.server,
            "outcome": d.outcome,
        }
        for d, slug, key, subject in deliveries_of(session, subscriber.id)
    ]


def _their_deliveries(subscriber: Subscriber) -> Any:
    return select(Delivery.id).where(Delivery.subscriber_id == subscriber.id)


def _bounce_reports_of(session: Session, subscriber: Subscriber) -> list[dict[str, Any]]:
    """Bounce and complaint reports about their emails (soft ones included)."""
    return [
        {
            "received_at": b.created_at,
            "kind": b.kind,
            "status": b.status,
            "diagnostic": b.diagnostic,
            "message_id": message_id,
            "campaign": slug,
        }
        for b, message_id, slug in session.execute(
            select(BounceEvent, Delivery.message_id, Campaign.slug)
            .join(Delivery, Delivery.id == BounceEvent.delivery_id)
            .outerjoin(Campaign, Campaign.id == BounceEvent.campaign_id)
            .where(Delivery.subscriber_id == subscriber.id)
            .order_by(BounceEvent.id)
        )
    ]


def _inbound_messages_of(session: Session, subscriber: Subscriber) -> list[dict[str, Any]]:
    """Messages that came back from them or about their emails, as classified (the messages
    themselves are not kept)."""
    return [
        {
            "received_at": m.received_at,
            "kind": m.kind,
            "source": m.source,
            "message_sha256": m.digest,
        }
        for m in session.scalars(
            select(InboundMessage)
            .where(
                or_(
                    InboundMessage.subscriber_id == subscriber.id,
                    InboundMessage.delivery_id.in_(_their_deliveries(subscriber)),
                )
            )
            .order_by(InboundMessage.id)
        )
    ]


@dataclass(frozen=True)
class ErasureReport:
    email: str
    consent_events: int
    enrollments: int
    deliveries: int
    suppression_reason: str
    suppression_added: bool
    # SQLite: whether the write-ahead log could be emptied at once (False: a reader held it;
    # it is at the next checkpoint). None on PostgreSQL, or before the erasure's commit.
    log_emptied: bool | None = None


def erase_everywhere(
    sessions: sessionmaker[Session],
    email: str,
    now: datetime,
    source: str = "cli",
    note: str | None = None,
) -> ErasureReport:
    """`erase` in a transaction of its own, then, on SQLite, the write-ahead log emptied: the
    pages that held the person's data before (the log keeps every version of a page until a
    checkpoint) are gone from the disk too."""
    with sessions.begin() as session:
        report = erase(session, email, now, source, note)
        engine = session.get_bind()
    assert isinstance(engine, Engine)
    return replace(report, log_emptied=empty_the_write_ahead_log(engine))


def erase_confirmed(
    sessions: sessionmaker[Session],
    now: datetime,
    subscriber_id: int,
    typed: str,
    actor: str,
    source: str = "staff",
    note: str | None = None,
) -> ErasureReport:
    """The console's erasure: `erase_everywhere` for the subscriber with this id, on behalf of
    `actor` (the audit log's), once the address typed to confirm it is theirs. Anything else
    typed (another address, a malformed one, nothing) erases nothing: InvalidInput says so."""
    with sessions.begin() as session:
        audit.act_as(session, actor)
        subscriber = subscriber_by_id(session, subscriber_id)
        try:
            same = normalize_email(typed) == subscriber.email
        except InvalidInput:
            same = False
        if not same:
            raise InvalidInput(
                "confirm",
                f"what was typed is not the address of subscriber #{subscriber_id}; "
                "nothing was erased",
            )
        report = erase(session, subscriber.email, now, source, note)
        engine = session.get_bind()
    assert isinstance(engine, Engine)
    return replace(report, log_emptied=empty_the_write_ahead_log(engine))


def empty_the_write_ahead_log(engine: Engine) -> bool | None:
    """SQLite: copy every page of the write-ahead log into the database file, then truncate
    the log to zero bytes (PRAGMA wal_checkpoint(TRUNCATE)). It waits, up to the busy timeout,
    for readers of older snapshots (the web pages, the scheduler) to finish; True when it
    could. None on PostgreSQL, which has no such file."""
    if engine.dialect.name != "sqlite":
        return None
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()  # the driver's own: a checkpoint cannot run inside a transaction
        busy, _pages, _copied = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        cursor.close()
    finally:
        raw.close()
    return int(busy) == 0


def erase(
    session: Session, email: str, now: datetime, source: str = "cli", note: str | None = None
) -> ErasureReport:
    """Delete one person everywhere; keep only a keyed hash on the suppression list so nothing
    is ever sent to them again (not even by a later import), and record that an erasure
    happened, without the address."""
    normalized = normalize_email(email)
    note = _erasure_note(note, normalized)
    subscriber = find_subscriber(session, normalized)
    counts = _delete_their_rows(session, subscriber)
    target = audit_target(subscriber)  # while the address is known: masked, as the log keeps it
    session.delete(subscriber)
    suppression, added = _suppress_for_good(session, normalized, now)
    session.add(Erasure(erased_at=now, source=source, note=note))
    audit.record(
        session,
        now,
        "subscriber.erase",
        target,
        {
            "source": source,
            "consent_events": counts[ConsentEvent],
            "enrollments": counts[Enrollment],
            "deliveries": counts[Delivery],
        },
        note=mask_addresses(note or ""),
    )
    session.flush()
    return ErasureReport(
        email=normalized,
        consent_events=counts[ConsentEvent],
        enrollments=counts[Enrollment],
        deliveries=counts[Delivery],
        suppression_reason=suppression.reason,
        suppression_added=added,
    )


def _erasure_note(note: str | None, address: str) -> str | None:
    """The operator's note on an erasure, checked: one line, and not the address."""
    note = (note or "").strip() or None
    if note is not None:
        if address in note.lower():
            raise InvalidInput("--note", "must not contain the address: the point is to forget it")
        if _CONTROL.search(note) or len(note) > 500:
            raise InvalidInput("--note", "must be one line of at most 500 characters")
    return note


def _delete_their_rows(session: Session, subscriber: Subscriber) -> dict[Any, int]:
    """Delete their sign-up requests, emails, enrollments and consent events, and detach the
    bounce reports and messages about them (their own row is the caller's to delete). Returns
    how many rows went, by model."""
    sid = subscriber.id
    theirs = _their_deliveries(subscriber)
    # Bounce reports about their emails quote the address in the server's diagnostic: the
    # report stays (it counts in a campaign's bounce rate) without the text or the link.
    session.execute(
        update(BounceEvent)
        .where(BounceEvent.delivery_id.in_(theirs))
        .values(diagnostic=None, delivery_id=None)
        .execution_options(synchronize_session=False)
    )
    # Likewise what came back from them: that a message of its kind arrived stays (its digest
    # keeps it from being acted on twice), not whose it was.
    session.execute(
        update(InboundMessage)
        .where(or_(InboundMessage.subscriber_id == sid, InboundMessage.delivery_id.in_(theirs)))
        .values(subscriber_id=None, delivery_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(SignUpRequest)
        .where(SignUpRequest.email == subscriber.email)
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
    return counts


def _suppress_for_good(session: Session, email: str, now: datetime) -> tuple[Suppression, bool]:
    """The entry that outlives the person: keyed (an entry from before keys is rehashed: this
    is the last moment the address is known), its reason kept, its detail (often the server's
    reply, quoting the address) replaced."""
    detail = f"erased on {now.date().isoformat()}; the address itself is not stored"
    existing = suppression_of(session, email)
    if existing is not None:
        key_entry(session, existing, email)
        existing.detail = detail
        return existing, False
    entry, _ = add_entry(session, email, StopReason.MANUAL, detail, now)
    return entry, True


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
    if not dry_run and totals["subscribers"]:
        audit.record(
            session, now, "subscriber.prune", f"pending before {cutoff:%Y-%m-%d %H:%M} UTC", totals
        )
    return PruneReport(cutoff=cutoff, **totals)
