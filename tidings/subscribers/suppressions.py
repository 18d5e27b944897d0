"""The suppression list: addresses never to be mailed, kept as SHA-256 hashes.

Adding an address that belongs to a subscriber who is still pending or active also stops
them at once (status, enrollments, queued emails), so the list and the subscribers agree.
Removing one needs a reason, recorded in the subscriber's consent history when there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from tidings.clock import Clock
from tidings.errors import InvalidInput, NotFound
from tidings.models import Subscriber, SubscriberStatus, Suppression
from tidings.subscribers.importer import (
    COLUMN_ALIASES,
    Reject,
    check_encoding,
    fast_normalize_email,
    read_records,
)
from tidings.subscribers.service import (
    Consent,
    exit_enrollments,
    record_consent,
    skip_waiting_deliveries,
    unsubscribe,
)
from tidings.subscribers.validation import email_sha256, normalize_email

REASONS = ("unsubscribe", "hard-bounce", "complaint", "manual")
DETAIL_MAX_CHARS = 500
BATCH_SIZE = 1000
# What a subscriber becomes when an operator suppresses their address for each reason.
STATUS_FOR_REASON = {
    "unsubscribe": SubscriberStatus.UNSUBSCRIBED,
    "manual": SubscriberStatus.UNSUBSCRIBED,
    "hard-bounce": SubscriberStatus.BOUNCED,
    "complaint": SubscriberStatus.COMPLAINED,
}


def check_reason(reason: str) -> str:
    if reason not in REASONS:
        raise InvalidInput("--reason", f"{reason!r}: one of {', '.join(REASONS)}")
    return reason


def check_detail(detail: str | None, option: str = "--detail") -> str | None:
    text = (detail or "").strip()
    if not text:
        return None
    if any(c in text for c in "\r\n") or len(text) > DETAIL_MAX_CHARS:
        raise InvalidInput(option, f"must be one line of at most {DETAIL_MAX_CHARS} characters")
    return text


def suppression_rows(
    session: Session, reason: str | None = None, email: str | None = None
) -> Iterator[dict[str, Any]]:
    """The list, oldest first. `email` is the subscriber's address when one still has it
    (an erased or never-subscribed address shows only as its hash)."""
    query = select(Suppression).order_by(Suppression.id)
    if reason:
        query = query.where(Suppression.reason == check_reason(reason))
    if email:
        query = query.where(Suppression.email_sha256 == email_sha256(normalize_email(email)))
    rows = session.scalars(query).all()
    known = _addresses_of(session, {row.email_sha256 for row in rows})
    for row in rows:
        yield {
            "email": known.get(row.email_sha256, ""),
            "reason": row.reason,
            "detail": row.detail,
            "created_at": row.created_at,
            "sha256": row.email_sha256,
        }


def _addresses_of(session: Session, digests: set[str]) -> dict[str, str]:
    """Hash -> address, for the subscribers among `digests` (hashes cannot be reversed,
    so the subscribers' addresses are hashed, a chunk at a time)."""
    found: dict[str, str] = {}
    if not digests:
        return found
    after = 0
    while True:
        chunk = session.execute(
            select(Subscriber.id, Subscriber.email)
            .where(Subscriber.id > after)
            .order_by(Subscriber.id)
            .limit(5000)
        ).all()
        for _, address in chunk:
            digest = email_sha256(address)
            if digest in digests:
                found[digest] = address
        if len(chunk) < 5000:
            return found
        after = chunk[-1][0]


@dataclass(frozen=True)
class AddResult:
    email: str
    added: bool
    reason: str  # the reason now stored (an existing entry keeps its own)
    stopped: bool  # a pending or active subscriber was stopped


def add_suppression(
    session: Session,
    email: str,
    reason: str,
    detail: str | None,
    now: datetime,
    source: str = "cli",
) -> AddResult:
    normalized = normalize_email(email)
    check_reason(reason)
    detail = check_detail(detail)
    digest = email_sha256(normalized)
    existing = session.scalar(select(Suppression).where(Suppression.email_sha256 == digest))
    if existing is None:
        session.add(Suppression(email_sha256=digest, reason=reason, detail=detail, created_at=now))
        session.flush()
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == normalized))
    stopped = subscriber is not None and _stop(
        session, subscriber, existing.reason if existing else reason, source, now
    )
    return AddResult(normalized, existing is None, existing.reason if existing else reason, stopped)


def _stop(
    session: Session, subscriber: Subscriber, reason: str, source: str, now: datetime
) -> bool:
    if subscriber.status not in (
        SubscriberStatus.PENDING,
        SubscriberStatus.ACTIVE,
    ):
        return False
    status = STATUS_FOR_REASON[reason]
    if status == SubscriberStatus.UNSUBSCRIBED:
        # The suppression exists already, so unsubscribe() keeps it as it is.
        unsubscribe(session, subscriber, source, now, reason=reason)
        return True
    if reason == "complaint":  # a spam report withdraws consent
        record_consent(
            session,
            subscriber,
            "unsubscribed",
            Consent(source=source, evidence="spam complaint, recorded by an operator"),
            now,
        )
    subscriber.status = status
    subscriber.updated_at = now
    exit_enrollments(session, subscriber.id, now)
    skip_waiting_deliveries(session, subscriber.id, f"skipped: address suppressed ({reason})", now)
    return True


def remove_suppression(
    session: Session, email: str, why: str, now: datetime, source: str = "cli"
) -> str:
    """Lift a suppression. Returns the reason it had. The subscriber's status does not
    change: someone who unsubscribed comes back with `subscribers resubscribe`."""
    normalized = normalize_email(email)
    why = check_detail(why, "--reason") or ""
    if not why:
        raise InvalidInput("--reason", "say why this address may be mailed again")
    digest = email_sha256(normalized)
    existing = session.scalar(select(Suppression).where(Suppression.email_sha256 == digest))
    if existing is None:
        raise NotFound(f"{normalized} is not on the suppression list")
    session.execute(delete(Suppression).where(Suppression.id == existing.id))
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == normalized))
    if subscriber is not None:
        record_consent(
            session,
            subscriber,
            "suppression-removed",
            Consent(source=source, evidence=f"was {existing.reason}; removed because: {why}"),
            now,
        )
    return existing.reason


@dataclass
class SuppressionImport:
    added: int = 0
    already: int = 0
    stopped: int = 0
    rejected: int = 0


def import_suppressions(
    sessions: sessionmaker[Session],
    stream: IO[bytes],
    reason: str,
    detail: str | None,
    clock: Clock,
    on_reject: Callable[[Reject], None],
    encoding: str = "utf-8",
    source: str = "cli",
) -> SuppressionImport:
    """Suppress every address of a file: one address per line, or a CSV whose header has an
    email column (other columns are ignored). Streams; commits every BATCH_SIZE addresses;
    safe to run again (an address already suppressed is counted, not duplicated)."""
    check_reason(reason)
    detail = check_detail(detail)
    check_encoding(encoding)
    records = read_records(stream, encoding)
    result = SuppressionImport()
    column = 0
    pending: list[tuple[int, str]] = []  # (line, address)
    first = True
    for record in records:
        if first:
            first = False
            names = [f.strip().lower() for f in record.fields or []]
            header = [i for i, n in enumerate(names) if COLUMN_ALIASES.get(n) == "email"]
            if header:
                column = header[0]
                continue
        if record.fields is None:
            result.rejected += 1
            on_reject(Reject(record.first_line, "", record.problem, record.data))
            continue
        raw = record.fields[column] if column < len(record.fields) else ""
        try:
            pending.append((record.first_line, fast_normalize_email(raw)))
        except InvalidInput as exc:
            result.rejected += 1
            on_reject(Reject(record.first_line, exc.field, exc.reason, record.data))
            continue
        if len(pending) >= BATCH_SIZE:
            _suppress_batch(sessions, pending, reason, detail, clock, source, result)
            pending = []
    if pending:
        _suppress_batch(sessions, pending, reason, detail, clock, source, result)
    return result


def _suppress_batch(
    sessions: sessionmaker[Session],
    batch: Iterable[tuple[int, str]],
    reason: str,
    detail: str | None,
    clock: Clock,
    source: str,
    result: SuppressionImport,
) -> None:
    now = clock.now()
    by_digest = {email_sha256(email): email for _, email in batch}
    with sessions.begin() as session:
        stored = set(
            session.scalars(
                select(Suppression.email_sha256).where(
                    Suppression.email_sha256.in_(list(by_digest))
                )
            )
        )
        new = [d for d in by_digest if d not in stored]
        session.add_all(
            Suppression(email_sha256=d, reason=reason, detail=detail, created_at=now) for d in new
        )
        session.flush()
        stopped = 0
        if new:
            for subscriber in session.scalars(
                select(Subscriber).where(
                    Subscriber.email.in_([by_digest[d] for d in new]),
                    Subscriber.status.in_([SubscriberStatus.PENDING, SubscriberStatus.ACTIVE]),
                )
            ).all():
                stopped += _stop(session, subscriber, reason, source, now)
    result.added += len(new)
    result.already += sum(1 for _ in batch) - len(new)
    result.stopped += stopped
