"""What `tidings status` shows: the queue, the send rate, retries, failures, paused
campaigns and why, and each SMTP server's use of its caps."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tidings.db.models import BounceEvent, Campaign, Delivery, SmtpServerState
from tidings.runtime import Runtime
from tidings.sending.routing import Lane, RateLimiter
from tidings.states import WAITING, BounceKind, DeliveryStatus

WINDOW_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


def collect_status(runtime: Runtime) -> dict[str, Any]:
    """Everything `tidings status` shows, read without taking the write lock."""
    lanes = runtime.lanes()
    limiter = RateLimiter(runtime.read_sessions, runtime.clock)
    with runtime.read_sessions.begin() as session:
        return _status(session, limiter, lanes, runtime.clock.now())


# Long: one literal report; splitting it would scatter what `tidings status` shows.
def _status(
    session: Session, limiter: RateLimiter, lanes: list[Lane], now: datetime
) -> dict[str, Any]:

    def count(*conditions: Any) -> int:
        return session.scalar(select(func.count()).select_from(Delivery).where(*conditions)) or 0

    def sent_since(delta: timedelta) -> int:
        return count(Delivery.status == DeliveryStatus.SENT, Delivery.sent_at >= now - delta)

    oldest_due = session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.status.in_(WAITING), Delivery.next_attempt_at <= now
        )
    )
    day_ago = now - timedelta(days=1)
    servers_known = {s.name: s for s in session.scalars(select(SmtpServerState))}
    servers = []
    for lane in lanes:
        state = servers_known.get(lane.name)
        down = state is not None and state.down_until is not None and state.down_until > now
        servers.append(
            {
                "name": lane.name,
                "weight": lane.weight,
                "state": "down" if down else "up",
                "last_error": state.last_error if down and state else None,
                "windows": [
                    {"per": WINDOW_NAMES.get(window, f"{window}s"), "used": used, "cap": cap}
                    for window, used, cap in limiter.usage(lane)
                ],
            }
        )
    return {
        "at": now,
        "queue": {
            "queued": count(Delivery.status == DeliveryStatus.QUEUED),
            "due_now": count(Delivery.status.in_(WAITING), Delivery.next_attempt_at <= now),
            "oldest_due_since": oldest_due,
            "sending": count(Delivery.status == DeliveryStatus.SENDING),
            "retrying": count(Delivery.status == DeliveryStatus.RETRY),
            "retries_due": count(
                Delivery.status == DeliveryStatus.RETRY, Delivery.next_attempt_at <= now
            ),
        },
        "sent": {
            "last_minute": sent_since(timedelta(minutes=1)),
            "last_hour": sent_since(timedelta(hours=1)),
            "last_day": sent_since(timedelta(days=1)),
        },
        "last_day": {
            "failed": count(
                Delivery.status == DeliveryStatus.FAILED, Delivery.updated_at >= day_ago
            ),
            "bounced": count(
                Delivery.status == DeliveryStatus.BOUNCED, Delivery.updated_at >= day_ago
            ),
            "complaints": session.scalar(
                select(func.count())
                .select_from(BounceEvent)
                .where(BounceEvent.kind == BounceKind.COMPLAINT, BounceEvent.created_at >= day_ago)
            )
            or 0,
        },
        "campaigns": [
            {"slug": c.slug, "status": c.status, "why": c.status_reason}
            for c in session.scalars(select(Campaign).order_by(Campaign.slug))
        ],
        "servers": servers,
    }
