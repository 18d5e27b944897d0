"""Signed-in browsers. The cookie carries a random id (256 bits); the database keeps its hash,
the account's credentials version at sign-in, and when it was last used, so that a session
ends after 30 idle minutes, after 12 hours whatever happens, at sign-out, and on every browser
at once when the password changes or the account is disabled or reset.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from tidings.db.staff import StaffSession, StaffUser

IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=12)
# last_seen_at is written at most this often: a page view is a read, not a write, mostly.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Current:
    user: StaffUser
    row: StaffSession

    @property
    def complete(self) -> bool:
        """Signed in with every factor the account has."""
        return not self.row.needs_second_factor


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def open_session(
    session: Session, now: datetime, user: StaffUser, needs_second_factor: bool
) -> str:
    """A new session (a new id at every sign-in); returns the cookie's value."""
    cookie = secrets.token_urlsafe(32)
    session.add(
        StaffSession(
            id_sha256=_sha(cookie),
            user_id=user.id,
            credentials_version=user.credentials_version,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            needs_second_factor=needs_second_factor,
        )
    )
    return cookie


def current(session: Session, now: datetime, cookie: str | None) -> Current | None:
    """The live session this cookie opens, or None (unknown, expired, or its account's
    credentials changed); an expired one is deleted."""
    if not cookie or len(cookie) > 100:
        return None
    row = session.get(StaffSession, _sha(cookie))
    if row is None:
        return None
    user = session.get(StaffUser, row.user_id)
    expired = (
        now - row.last_seen_at > IDLE
        or now - row.created_at > ABSOLUTE
        or user is None
        or user.disabled_at is not None
        or user.credentials_version != row.credentials_version
    )
    if expired or user is None:
        session.delete(row)
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
    return Current(user, row)


def second_factor_given(session: Session, row: StaffSession) -> str:
    """The second factor checked: the same browser gets a new session id (and keeps the
    rest), so an id seen before the second factor is worth nothing after it."""
    cookie = secrets.token_urlsafe(32)
    fresh = StaffSession(
        id_sha256=_sha(cookie),
        user_id=row.user_id,
        credentials_version=row.credentials_version,
        csrf_token=secrets.token_urlsafe(32),
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        needs_second_factor=False,
    )
    session.delete(row)
    session.add(fresh)
    return cookie


def close(session: Session, cookie: str | None) -> None:
    if cookie:
        row = session.get(StaffSession, _sha(cookie))
        if row is not None:
            session.delete(row)
