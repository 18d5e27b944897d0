"""The suppression list: addresses never to be mailed, kept as hashes so that an entry survives
the erasure of the person. This module is the list itself (look up, add, remove, list);
`subscribers.lifecycle` stops the subscriber an entry is about.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tidings.db.models import Subscriber, Suppression
from tidings.errors import InvalidInput
from tidings.states import StopReason
from tidings.subscribers.validation import email_sha256, normalize_email

REASONS = tuple(StopReason)
DETAIL_MAX_CHARS = 500


def check_reason(reason: str) -> StopReason:
    try:
        return StopReason(reason)
    except ValueError:
        raise InvalidInput("--reason", f"{reason!r}: one of {', '.join(REASONS)}") from None


def check_detail(detail: str | None, option: str = "--detail") -> str | None:
    text = (detail or "").strip()
    if not text:
        return None
    if any(c in text for c in "\r\n") or len(text) > DETAIL_MAX_CHARS:
        raise InvalidInput(option, f"must be one line of at most {DETAIL_MAX_CHARS} characters")
    return text


def suppression_of(session: Session, email: str) -> Suppression | None:
    """The entry for a normalized address, if it is suppressed."""
    return session.scalar(
        select(Suppression).where(Suppression.email_sha256 == email_sha256(email))
    )


def suppression_reason(session: Session, email: str) -> str | None:
    return session.scalar(
        select(Suppression.reason).where(Suppression.email_sha256 == email_sha256(email))
    )


def suppressed_digests(session: Session, digests: Iterable[str]) -> dict[str, str]:
    """{hash: reason} for the hashes that are on the list (one query for a batch)."""
    return dict(
        session.execute(
            select(Suppression.email_sha256, Suppression.reason).where(
                Suppression.email_sha256.in_(list(digests))
            )
        ).all()
    )


def add_entry(
    session: Session, email: str, reason: str, detail: str | None, now: datetime
) -> tuple[Suppression, bool]:
    """Put a normalized address on the list. An address already there keeps its entry (and
    its first reason). Returns the entry and whether it is new."""
    existing = suppression_of(session, email)
    if existing is not None:
        return existing, False
    entry = Suppression(
        email_sha256=email_sha256(email), reason=reason, detail=detail, created_at=now
    )
    session.add(entry)
    session.flush()
    return entry, True


def add_entries(
    session: Session, emails: list[str], reason: str, detail: str | None, now: datetime
) -> list[str]:
    """add_entry for many normalized addresses at once. Returns those that were new."""
    digests = {email_sha256(email): email for email in emails}
    known = suppressed_digests(session, digests)
    new = [email for digest, email in digests.items() if digest not in known]
    session.add_all(
        Suppression(email_sha256=email_sha256(e), reason=reason, detail=detail, created_at=now)
        for e in new
    )
    session.flush()
    return new


def remove_entry(session: Session, entry: Suppression) -> None:
    session.execute(delete(Suppression).where(Suppression.id == entry.id))


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
