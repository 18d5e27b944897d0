"""The suppression list: addresses never to be mailed, kept as hashes so that an entry survives
the erasure of the person. This module is the list itself (look up, add, remove, list);
`subscribers.lifecycle` stops the subscriber an entry is about.

An entry is HMAC-SHA256(installation key, normalized address), hex (`digest`): the key is the
installation's own (app_secrets "suppression_key", made by migration 0006, independent of
TIDINGS_SECRET_KEY), so a stolen copy of the database cannot be used to test whether a known
address was ever on the list without also breaking the key out of it, and a copy of the list
alone tells nothing. Entries made before keys (`keyed` false: plain SHA-256, for addresses no
subscriber had any more when the key was made) keep working: every lookup also tries the plain
hash, and an entry of that kind is rehashed with the key when its address comes back in view.

The key is never logged, printed or put in an error message: it is held inside an HMAC
object, whose repr shows nothing of it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tidings.db.bulk import select_in
from tidings.db.models import AppSecret, Subscriber, Suppression
from tidings.errors import InvalidInput, TidingsError
from tidings.states import StopReason
from tidings.subscribers.validation import email_sha256, normalize_email

REASONS = tuple(StopReason)
DETAIL_MAX_CHARS = 500
KEY_NAME = "suppression_key"  # the app_secrets row
_CACHE = "tidings.suppression_key"  # in session.info: read once per unit of work
_LOOKUP_CHUNK = 5000  # digests per IN list


def digest(key: str, normalized_email: str) -> str:
    """The rule of an entry: HMAC-SHA256(key, address), hex (migration 0006 applies it too)."""
    return hmac.new(key.encode(), normalized_email.encode(), "sha256").hexdigest()


class SuppressionKey:
    """The installation's key, ready to hash addresses (`digest`, a few times faster per
    address). It keeps only the HMAC state, and shows nothing of the key when printed."""

    __slots__ = ("_mac",)

    def __init__(self, key: str):
        self._mac = hmac.new(key.encode(), digestmod=hashlib.sha256)

    def digest(self, normalized_email: str) -> str:
        mac = self._mac.copy()
        mac.update(normalized_email.encode())
        return mac.hexdigest()

    def __repr__(self) -> str:
        return "SuppressionKey(<not shown>)"


class MissingSuppressionKey(TidingsError):
    """Keyed entries exist but their key is gone: they can no longer be matched."""

    def __init__(self) -> None:
        super().__init__(
            "the suppression list holds keyed entries but the installation's suppression key "
            f"(app_secrets {KEY_NAME!r}) is missing, so nobody on the list could be recognized: "
            "restore that row from a backup of this database before sending anything"
        )


def suppression_key(session: Session, create: bool = False) -> SuppressionKey | None:
    """The installation's key; None when there is none yet and `create` is false (a lookup
    then only finds plain entries, the only kind there can be). A write creates it. Refuses
    to work on a list whose keyed entries lost their key (a new key would not find them)."""
    cached: SuppressionKey | None = session.info.get(_CACHE)
    if cached is not None:
        return cached
    stored = session.scalar(select(AppSecret.value).where(AppSecret.name == KEY_NAME))
    if stored is None:
        if session.scalar(select(exists().where(Suppression.keyed.is_(True)))):
            raise MissingSuppressionKey()
        if not create:
            return None
        try:
            with session.begin_nested():
                session.add(AppSecret(name=KEY_NAME, value=secrets.token_urlsafe(32)))
        except IntegrityError:
            pass  # another process made it first
        stored = session.scalars(select(AppSecret.value).where(AppSecret.name == KEY_NAME)).one()
        # Not cached: made in this transaction, it is gone again if the transaction rolls back.
        return SuppressionKey(stored)
    key = SuppressionKey(stored)
    session.info[_CACHE] = key
    return key


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


# ----------------------------------------------------------------------------- look up


def _entry_clause(key: SuppressionKey | None, email: str) -> Any:
    plain = and_(Suppression.email_sha256 == email_sha256(email), Suppression.keyed.is_(False))
    if key is None:
        return plain
    return or_(
        and_(Suppression.email_sha256 == key.digest(email), Suppression.keyed.is_(True)), plain
    )


def suppression_of(session: Session, email: str) -> Suppression | None:
    """The entry for a normalized address, if it is suppressed."""
    key = suppression_key(session)
    return session.scalars(
        select(Suppression).where(_entry_clause(key, email)).order_by(Suppression.keyed.desc())
    ).first()


def suppression_reason(session: Session, email: str) -> str | None:
    entry = suppression_of(session, email)
    return None if entry is None else entry.reason


@dataclass(frozen=True, slots=True)
class _Found:
    id: int
    keyed: bool
    reason: str


def _entries_for(session: Session, emails: Iterable[str]) -> dict[str, _Found]:
    """{normalized address: its entry} for the addresses on the list, a few queries for any
    number of them (a keyed entry wins over a plain one of the same address)."""
    key = suppression_key(session)
    wanted: dict[tuple[str, bool], str] = {}
    for email in emails:
        wanted[(email_sha256(email), False)] = email
        if key is not None:
            wanted[(key.digest(email), True)] = email
    digests = list(dict.fromkeys(d for d, _ in wanted))
    found: dict[str, _Found] = {}
    for start in range(0, len(digests), _LOOKUP_CHUNK):
        for entry_id, entry_digest, keyed, reason in select_in(
            session,
            "SELECT id, email_sha256, keyed, reason FROM suppressions WHERE email_sha256 IN ({})",
            digests[start : start + _LOOKUP_CHUNK],
        ):
            address = wanted.get((entry_digest, bool(keyed)))
            if address is not None and (address not in found or bool(keyed)):
                found[address] = _Found(entry_id, bool(keyed), reason)
    return found


def suppressed_addresses(session: Session, emails: Iterable[str]) -> dict[str, str]:
    """{address: reason} for the normalized addresses that are on the list."""
    return {email: entry.reason for email, entry in _entries_for(session, emails).items()}


# ----------------------------------------------------------------------------- change


def _write_key(session: Session) -> SuppressionKey:
    key = suppression_key(session, create=True)
    assert key is not None
    return key


def add_entry(
    session: Session, email: str, reason: str, detail: str | None, now: datetime
) -> tuple[Suppression, bool]:
    """Put a normalized address on the list. An address already there keeps its entry (and
    its first reason; a plain entry becomes keyed). Returns the entry and whether it is new."""
    key = _write_key(session)
    existing = suppression_of(session, email)
    if existing is not None:
        key_entry(session, existing, email)
        return existing, False
    entry = Suppression(
        email_sha256=key.digest(email), keyed=True, reason=reason, detail=detail, created_at=now
    )
    session.add(entry)
    session.flush()
    return entry, True


def key_entry(session: Session, entry: Suppression, email: str) -> None:
    """Rehash a plain (pre-key) entry with the key, now that its address is known again."""
    if not entry.keyed:
        entry.email_sha256 = _write_key(session).digest(email)
        entry.keyed = True
        session.flush()


def add_entries(
    session: Session, emails: list[str], reason: str, detail: str | None, now: datetime
) -> list[str]:
    """add_entry for many normalized addresses at once. Returns those that were new."""
    key = _write_key(session)
    unique = list(dict.fromkeys(emails))
    known = _entries_for(session, unique)
    for email, entry in known.items():
        if not entry.keyed:
            session.execute(
                update(Suppression)
                .where(Suppression.id == entry.id)
                .values(email_sha256=key.digest(email), keyed=True)
                .execution_options(synchronize_session=False)
            )
    new = [email for email in unique if email not in known]
    session.add_all(
        Suppression(
            email_sha256=key.digest(e), keyed=True, reason=reason, detail=detail, created_at=now
        )
        for e in new
    )
    session.flush()
    return new


def remove_entry(session: Session, entry: Suppression) -> None:
    session.execute(delete(Suppression).where(Suppression.id == entry.id))


# ----------------------------------------------------------------------------- list


def suppression_rows(
    session: Session, reason: str | None = None, email: str | None = None
) -> Iterator[dict[str, Any]]:
    """The list, oldest first. `email` in a row is the subscriber's address when one still
    has it, or the address asked about (`email=`); an erased or never-subscribed address shows
    only as its hash."""
    query = select(Suppression).order_by(Suppression.id)
    if reason:
        query = query.where(Suppression.reason == check_reason(reason))
    wanted = ""
    if email:
        wanted = normalize_email(email)  # the one address asked about: its entry shows it
        query = query.where(_entry_clause(suppression_key(session), wanted))
    rows = session.scalars(query).all()
    known = {} if wanted else _addresses_of(session, rows)
    for row in rows:
        yield {
            "email": wanted or known.get((row.email_sha256, row.keyed), ""),
            "reason": row.reason,
            "detail": row.detail,
            "created_at": row.created_at,
            "hash": row.email_sha256,
            "keyed": row.keyed,
        }


def _addresses_of(session: Session, rows: Iterable[Suppression]) -> dict[tuple[str, bool], str]:
    """(hash, keyed) -> address, for the entries whose address a subscriber has (hashes
    cannot be reversed, so the subscribers' addresses are hashed, a chunk at a time)."""
    digests = {(row.email_sha256, row.keyed) for row in rows}
    found: dict[tuple[str, bool], str] = {}
    if not digests:
        return found
    key = suppression_key(session)
    any_plain = any(not keyed for _, keyed in digests)
    after = 0
    while True:
        chunk = session.execute(
            select(Subscriber.id, Subscriber.email)
            .where(Subscriber.id > after)
            .order_by(Subscriber.id)
            .limit(5000)
        ).all()
        for _, address in chunk:
            candidates = [(key.digest(address), True)] if key is not None else []
            if any_plain:
                candidates.append((email_sha256(address), False))
            for candidate in candidates:
                if candidate in digests:
                    found[candidate] = address
        if len(chunk) < 5000:
            return found
        after = chunk[-1][0]


@dataclass(frozen=True)
class EntryPage:
    """One page of the list for the console, newest first: entries as stored (a keyed hash
    cannot name its address, so none is shown)."""

    rows: list[dict[str, Any]]  # id, reason, detail, created_at, keyed
    next_before: int | None  # the next page: the entries below this id; None: no more


def entries_page(
    session: Session, reason: str | None = None, before: int | None = None, size: int = 50
) -> EntryPage:
    """Entries newest first, `size` at a time, paged by id (the primary key): no count of
    the whole list, and no hashing of every subscriber's address to name them."""
    query = select(Suppression).order_by(Suppression.id.desc()).limit(size + 1)
    if reason:
        query = query.where(Suppression.reason == check_reason(reason))
    if before is not None:
        query = query.where(Suppression.id < before)
    found = session.scalars(query).all()
    rows: list[dict[str, Any]] = [
        {
            "id": row.id,
            "reason": row.reason,
            "detail": row.detail,
            "created_at": row.created_at,
            "keyed": row.keyed,
        }
        for row in found[:size]
    ]
    return EntryPage(rows, found[size - 1].id if len(found) > size else None)
