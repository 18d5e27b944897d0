"""What the console's dashboard shows, computed live from indexed queries (no cached
counts): the queue and what is due next, sends and sign-ups per day, paused campaigns and
why, and the bounce and complaint rates against their limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tidings.db.models import BounceEvent, Campaign, ConsentEvent, Delivery, Enrollment
from tidings.ops.stats import count_per_day, sends_per_day
from tidings.ops.status import collect_status
from tidings.runtime import Runtime
from tidings.states import (
    BounceKind,
    CampaignStatus,
    ConsentKind,
    DeliveryStatus,
    EnrollmentStatus,
)

DAYS = 30
# Mailbox providers start filtering a sender whose readers mark more than this as spam
# (Google's sender guidelines: keep the spam rate below 0.3%).
COMPLAINT_LIMIT = 0.003
RATE_WINDOW = timedelta(days=7)


def dashboard_facts(runtime: Runtime, now: datetime) -> dict[str, Any]:
    status = collect_status(runtime)
    with runtime.read_sessions.begin() as session:
        return {
            "status": status,
            "next": _next_sends(session, now),
            "paused": [
                {"slug": slug, "name": name, "why": why}
                for slug, name, why in session.execute(
                    select(Campaign.slug, Campaign.name, Campaign.status_reason)
                    .where(Campaign.status == CampaignStatus.PAUSED)
                    .order_by(Campaign.slug)
                )
            ],
            "rates": _rates(session, runtime, now),
            "sends_per_day": sends_per_day(session, now, DAYS),
            "signups_per_day": signups_per_day(session, now, DAYS),
        }


def _next_sends(session: Session, now: datetime) -> dict[str, Any]:
    due = Enrollment.status == EnrollmentStatus.ACTIVE
    return {
        "next_due_at": session.scalar(
            select(func.min(Enrollment.next_due_at)).where(due, Enrollment.next_due_at.is_not(None))
        ),
        "due_within_day": session.scalar(
            select(func.count())
            .select_from(Enrollment)
            .where(due, Enrollment.next_due_at <= now + timedelta(days=1))
        )
        or 0,
    }


def _rates(session: Session, runtime: Runtime, now: datetime) -> dict[str, Any]:
    since = now - RATE_WINDOW
    final = (DeliveryStatus.SENT, DeliveryStatus.BOUNCED)
    sent, bounced = (
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.status.in_(which), Delivery.updated_at >= since)
        )
        or 0
        for which in (final, (DeliveryStatus.BOUNCED,))
    )
    complaints = (
        session.scalar(
            select(func.count())
            .select_from(BounceEvent)
            .where(BounceEvent.kind == BounceKind.COMPLAINT, BounceEvent.created_at >= since)
        )
        or 0
    )
    return {
        "days": RATE_WINDOW.days,
        "sent": sent,
        "bounce": {
            "count": bounced,
            "rate": bounced / sent if sent else 0.0,
            "limit": runtime.settings.bounce_pause_ratio,
        },
        "complaint": {
            "count": complaints,
            "rate": complaints / sent if sent else 0.0,
            "limit": COMPLAINT_LIMIT,
        },
    }


def signups_per_day(session: Session, now: datetime, days: int) -> list[dict[str, Any]]:
    """Sign-ups asked for and confirmed per UTC day (counts only), zeros included."""
    first = now.astimezone(UTC).date() - timedelta(days=days - 1)
    requested, confirmed = (
        count_per_day(session, ConsentEvent.created_at, [ConsentEvent.kind == kind], first, days)
        for kind in (ConsentKind.REQUESTED, ConsentKind.CONFIRMED)
    )
    return [
        {
            "date": (first + timedelta(days=i)).isoformat(),
            "requested": requested[i],
            "confirmed": confirmed[i],
        }
        for i in range(days)
    ]
