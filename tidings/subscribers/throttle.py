"""Caps on the confirmation emails that strangers can ask for.

Anyone can type an address into a sign-up form, so without caps the form is a way to flood
someone's inbox ("confirmation bombing"). Whoever asks and from wherever, at most
`confirm_mailbox_per_day` confirmations go to one mailbox a day, `confirm_domain_per_hour` to
one recipient domain an hour, and `confirm_total_per_hour` in all. A mailbox is counted
without its +tag, and at Gmail without its dots (ann+1@, a.n.n+2@gmail.com are ann@gmail.com),
since those all reach the same person.

Counts live in `rate_counters` under keyed-hash names (no address is stored), in buckets of a
minute (hour caps) or an hour (the day cap). Only what the public can trigger is capped:
operators (CLI, import) are not.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from tidings.config import Settings
from tidings.db.bulk import affected
from tidings.db.models import RateCounter

# Providers where dots in the local part are ignored (the same inbox).
DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def mailbox_of(email: str) -> str:
    """The inbox an address reaches: ann+news@x.org -> ann@x.org; A.n.n@googlemail.com ->
    ann@gmail.com. Only for counting: the address itself is kept as given."""
    local, _, domain = email.lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in DOTLESS_DOMAINS:
        domain = DOTLESS_DOMAINS[domain]
        local = local.replace(".", "")
    return f"{local}@{domain}"


@dataclass(frozen=True)
class Cap:
    """At most `limit` in any `window`, counted in buckets of `bucket`."""

    name: str
    limit: int
    window: timedelta
    bucket: timedelta

    def bucket_start(self, now: datetime) -> datetime:
        size = int(self.bucket.total_seconds())
        return datetime.fromtimestamp(int(now.timestamp()) // size * size, now.tzinfo)


def _hashed(key: str, kind: str, value: str) -> str:
    digest = hmac.new(key.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"confirm:{kind}:{digest[:32]}"


def confirmation_caps(settings: Settings, email: str, key: str) -> list[Cap]:
    mailbox = mailbox_of(email)
    domain = mailbox.rpartition("@")[2]
    minute, hour = timedelta(minutes=1), HOUR
    return [
        Cap(_hashed(key, "mailbox", mailbox), settings.confirm_mailbox_per_day, DAY, hour),
        Cap(_hashed(key, "domain", domain), settings.confirm_domain_per_hour, HOUR, minute),
        Cap("confirm:all", settings.confirm_total_per_hour, HOUR, minute),
    ]


def take(session: Session, caps: list[Cap], now: datetime) -> bool:
    """Count one more under every cap and say True, or (some cap is reached) count nothing
    and say False. Two statements. Callers take turns (the sign-up deciders' lock on
    PostgreSQL, SQLite's single writer), so nobody counts between the check and the count."""
    window = or_(
        *(and_(RateCounter.name == c.name, RateCounter.bucket_start > now - c.window) for c in caps)
    )
    used = dict(
        session.execute(
            select(RateCounter.name, func.sum(RateCounter.count))
            .where(window)
            .group_by(RateCounter.name)
        ).all()
    )
    if any(int(used.get(c.name) or 0) >= c.limit for c in caps):
        return False
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(RateCounter).values(
        [{"name": c.name, "bucket_start": c.bucket_start(now), "count": 1} for c in caps]
    )
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["name", "bucket_start"], set_={"count": RateCounter.count + 1}
        )
    )
    return True


def prune(session: Session, now: datetime) -> int:
    """Forget counts older than the longest window."""
    return affected(
        session.execute(delete(RateCounter).where(RateCounter.bucket_start < now - DAY - HOUR))
    )
