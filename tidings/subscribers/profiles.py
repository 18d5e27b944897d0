"""What the staff console shows of subscribers: a search page and a profile.

Read only: the console's actions are `subscribers.operators`'. Each function works inside
the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import Any, cast

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tidings.db.models import BounceEvent, Campaign, Delivery, Step, Subscriber
from tidings.subscribers.directory import (
    SubscriberFilter,
    consent_events,
    enrollments_of,
    subscriber_by_id,
)
from tidings.subscribers.suppressions import suppression_of

PAGE_SIZE = 50
# No index answers "contains" (nor "joined since", nor a small campaign's members), so a
# filtered page walks the primary key down, SEARCH_CHUNK ids per query, until its page is full
# or it has spent SEARCH_BUDGET seconds; then it says how far down it looked and offers to go
# on. A search whose text is nowhere in a list of millions thus answers in bounded time, under
# any load, instead of scanning the whole table on every request.
SEARCH_CHUNK = 25_000
SEARCH_BUDGET = 0.03
HISTORY_CAP = 200  # emails and bounce reports shown on a profile, newest first

# ----------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class SubscriberPage:
    """One page of the console's subscriber search, newest first."""

    rows: list[dict[str, Any]]  # id, email, name, status, created_at
    # Where the next page starts (the ids below this one), or None: nothing older to look at.
    next_before: int | None
    full: bool  # the page is full: more may match below it
    # When the page stopped short of full because its time was up: the lowest id it looked
    # at (the next page looks below it).
    searched_down_to: int | None
    exact: bool  # the text was a whole address and matched one subscriber's exactly
    campaigns: list[tuple[str, str]]  # (slug, name) of every campaign: the filter's choices


def search_page(
    session: Session,
    filters: SubscriberFilter,
    before: int | None = None,
    size: int = PAGE_SIZE,
    chunk: int = SEARCH_CHUNK,
    budget: float = SEARCH_BUDGET,
) -> SubscriberPage:
    """Subscribers matching `filters`, newest first, `size` at a time, paged by id (`before`:
    the ids below it). Never counts the whole list: a page says whether more may follow.

    A whole address is looked up by its unique index first. Otherwise the page walks the
    primary key down from `before`; with a filter no index answers (text, campaign, joined
    since) it reads `chunk` ids at a time and stops after `budget` seconds of looking (a
    deadline for this request's latency, not a time of the business: hence not the clock's),
    saying where it stopped. A status alone has its index."""
    campaigns = [
        (slug, name)
        for slug, name in session.execute(
            select(Campaign.slug, Campaign.name).order_by(Campaign.name, Campaign.slug)
        )
    ]
    listing = cast(
        "Select[Any]",
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.name,
            Subscriber.status,
            Subscriber.created_at,
        ),
    )
    text = (filters.search or "").strip().lower()
    if "@" in text and " " not in text and before is None:
        found = _by_address(session, filters, listing, text)
        if found:
            return SubscriberPage(found, None, False, None, True, campaigns)
    query = filters.apply(session, listing).order_by(Subscriber.id.desc())
    if not (filters.search or filters.campaign or filters.since is not None):
        if before is not None:
            query = query.where(Subscriber.id < before)
        rows = [row._asdict() for row in session.execute(query.limit(size + 1))]
        full = len(rows) > size
        rows = rows[:size]
        return SubscriberPage(rows, rows[-1]["id"] if full else None, full, None, False, campaigns)
    return _walk_down(session, query, before, size, chunk, budget, campaigns)


def _by_address(
    session: Session, filters: SubscriberFilter, listing: Select[Any], address: str
) -> list[dict[str, Any]]:
    """The subscriber with this whole address (by its unique index), if the other filters
    let them through."""
    others = SubscriberFilter(filters.statuses, filters.campaign, filters.since)
    exact = others.apply(session, listing.where(Subscriber.email == address))
    return [row._asdict() for row in session.execute(exact)]


def _walk_down(
    session: Session,
    query: Select[Any],
    before: int | None,
    size: int,
    chunk: int,
    budget: float,
    campaigns: list[tuple[str, str]],
) -> SubscriberPage:
    """The walk down the primary key, `chunk` ids at a time, until the page is full, the list
    ends, or `budget` seconds are spent (see search_page)."""
    lowest = session.scalar(select(func.min(Subscriber.id)))
    newest = session.scalar(select(func.max(Subscriber.id)))
    top = (newest or 0) + 1 if before is None else before
    deadline = perf_counter() + budget
    rows: list[dict[str, Any]] = []
    while lowest is not None and top > lowest:
        floor = max(top - chunk, lowest)
        window = query.where(Subscriber.id < top, Subscriber.id >= floor)
        rows += [row._asdict() for row in session.execute(window.limit(size + 1 - len(rows)))]
        if len(rows) > size:
            return SubscriberPage(rows[:size], rows[size - 1]["id"], True, None, False, campaigns)
        top = floor
        if top > lowest and perf_counter() >= deadline:
            return SubscriberPage(rows, top, False, top, False, campaigns)
    return SubscriberPage(rows, None, False, None, False, campaigns)


# ----------------------------------------------------------------------------- a profile


def subscriber_profile(
    session: Session, subscriber_id: int, cap: int = HISTORY_CAP
) -> dict[str, Any]:
    """Everything the console's profile page shows of one subscriber: status, consent history
    with its evidence, their place in each campaign, their emails (newest first, at most `cap`)
    with each one's outcome, and the bounce reports about them. Every query is by the
    subscriber's id, through an index on it."""
    subscriber = subscriber_by_id(session, subscriber_id)
    suppression = suppression_of(session, subscriber.email)
    consent = _consent_rows(session, subscriber.id)
    enrollments = _enrollment_rows(session, subscriber.id)
    deliveries = _delivery_rows(session, subscriber.id, cap + 1)
    bounces = _bounce_rows(session, subscriber.id, cap)
    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "timezone": subscriber.timezone,
        "status": subscriber.status,
        "created_at": subscriber.created_at,
        "confirmed_at": subscriber.confirmed_at,
        "unsubscribed_at": subscriber.unsubscribed_at,
        "paused_until": subscriber.paused_until,
        "soft_bounces": subscriber.soft_bounces,
        "attributes": dict(subscriber.attributes or {}),
        "suppression": (
            None
            if suppression is None
            else {"reason": suppression.reason, "since": suppression.created_at}
        ),
        "consent": consent,
        "enrollments": enrollments,
        "deliveries": deliveries[:cap],
        "more_deliveries": len(deliveries) > cap,
        "bounces": bounces,
        "cap": cap,
    }


def _consent_rows(session: Session, subscriber_id: int) -> list[dict[str, Any]]:
    """Their consent history, oldest first, with its evidence."""
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
        for e in consent_events(session, subscriber_id)
    ]


def _enrollment_rows(session: Session, subscriber_id: int) -> list[dict[str, Any]]:
    """Their place in each campaign: the step next, of how many, and when it is due."""
    enrolled = enrollments_of(session, subscriber_id)
    campaign_ids = [e.campaign_id for e, _slug, _name in enrolled]
    step_counts = dict(
        session.execute(
            select(Step.campaign_id, func.count())
            .where(Step.campaign_id.in_(campaign_ids), Step.position.is_not(None))
            .group_by(Step.campaign_id)
        ).all()
    )
    next_steps = {
        (campaign_id, position): (key, subject)
        for campaign_id, position, key, subject in session.execute(
            select(Step.campaign_id, Step.position, Step.key, Step.subject).where(
                Step.campaign_id.in_(campaign_ids)
            )
        )
    }
    rows = []
    for e, slug, name in enrolled:
        key, subject = next_steps.get((e.campaign_id, e.next_position), (None, None))
        rows.append(
            {
                "campaign": slug,
                "campaign_name": name,
                "status": e.status,
                "next_step": e.next_position,
                "steps": step_counts.get(e.campaign_id, 0),
                "next_key": key,
                "next_subject": subject,
                "next_due_at": e.next_due_at,
                "enrolled_at": e.created_at,
                "ended_at": e.ended_at,
            }
        )
    return rows


def _delivery_rows(session: Session, subscriber_id: int, limit: int) -> list[dict[str, Any]]:
    """Their emails, newest first, at most `limit`, each with its outcome."""
    return [
        {
            "id": d.id,
            "kind": d.kind,
            "campaign": slug,
            "step": key,
            "subject": subject,
            "status": d.status,
            "attempts": d.attempts,
            "queued_at": d.created_at,
            "sent_at": d.sent_at,
            "server": d.server,
            "outcome": d.outcome,
        }
        for d, slug, key, subject in session.execute(
            select(Delivery, Campaign.slug, Step.key, Step.subject)
            .outerjoin(Campaign, Campaign.id == Delivery.campaign_id)
            .outerjoin(Step, Step.id == Delivery.step_id)
            .where(Delivery.subscriber_id == subscriber_id)
            .order_by(Delivery.id.desc())
            .limit(limit)
        )
    ]


def _bounce_rows(session: Session, subscriber_id: int, limit: int) -> list[dict[str, Any]]:
    """The bounce reports about their emails, newest first, at most `limit`."""
    return [
        {
            "received_at": b.created_at,
            "kind": b.kind,
            "status": b.status,
            "diagnostic": b.diagnostic,
            "campaign": slug,
            "delivery_id": b.delivery_id,
        }
        for b, slug in session.execute(
            select(BounceEvent, Campaign.slug)
            .join(Delivery, Delivery.id == BounceEvent.delivery_id)
            .outerjoin(Campaign, Campaign.id == BounceEvent.campaign_id)
            .where(Delivery.subscriber_id == subscriber_id)
            .order_by(BounceEvent.id.desc())
            .limit(limit)
        )
    ]
