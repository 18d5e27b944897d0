"""Drip sequencing: enrolling subscribers, planning what is due, advancing after each send.

An enrollment holds the position of the next step and when to plan it. Planning turns a due
enrollment into a delivery row (the ledger) and then waits: the next step's due time is set
only when that delivery has an outcome, counted from the moment it was really sent. So steps
go out in order, at least their delay apart, and an engine that was down catches up at the
next open send window, one email at a time, never in a burst. A step whose front matter says
`send_window = false` (the welcome) is due at its time whatever the hour, day or holiday.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from tidings.campaigns.windows import ANY_TIME, SendWindow, next_send_time, stored_window
from tidings.clock import zone_or_utc
from tidings.db import audit
from tidings.db.bulk import affected, bulk_insert, select_in, table_of, update_by_id
from tidings.db.models import Campaign, Delivery, Enrollment, Step, Subscriber, queued_delivery
from tidings.errors import Conflict
from tidings.states import (
    CampaignKind,
    CampaignStatus,
    CampaignTrigger,
    EnrollmentStatus,
    SubscriberStatus,
)


def campaign_window(campaign: Campaign) -> SendWindow:
    return stored_window(campaign.definition)


def step_window(campaign: Campaign, send_window: bool) -> SendWindow:
    """The window a step of `campaign` is held to: the campaign's, or none at all for a step
    sent as soon as it is due (front matter `send_window = false`)."""
    return campaign_window(campaign) if send_window else ANY_TIME


def active_steps(session: Session, campaign_id: int) -> list[Step]:
    return list(
        session.scalars(
            select(Step)
            .where(Step.campaign_id == campaign_id, Step.position.is_not(None))
            .order_by(Step.position)
        )
    )


def enroll(
    session: Session, subscriber: Subscriber, campaign: Campaign, now: datetime
) -> Enrollment | None:
    """Put an active subscriber at the start of a sequence, or back where they left it if
    they had left (unsubscribed, then came back). Returns None if already in or finished."""
    existing = session.scalar(
        select(Enrollment).where(
            Enrollment.subscriber_id == subscriber.id, Enrollment.campaign_id == campaign.id
        )
    )
    if existing is not None:
        if existing.status != EnrollmentStatus.EXITED:
            return None
        return _resume(session, existing, subscriber, campaign, now)
    first = session.execute(
        select(Step.delay_seconds, Step.send_window).where(
            Step.campaign_id == campaign.id, Step.position == 1
        )
    ).first()
    first_delay, in_window = first if first is not None else (None, True)
    enrollment = Enrollment(
        subscriber_id=subscriber.id,
        campaign_id=campaign.id,
        created_at=now,
        updated_at=now,
        **first_enrollment_values(
            campaign, first_delay, subscriber.timezone, now, send_window=in_window
        ),
    )
    session.add(enrollment)
    return enrollment


def first_enrollment_values(
    campaign: Campaign,
    first_delay_seconds: int | None,
    timezone: str,
    now: datetime,
    send_window: bool = True,
) -> dict[str, Any]:
    """Where a new enrollment starts: the first step, due after its delay at the next open
    moment of the send window in the subscriber's timezone (at once if that step is not held
    to the window: `send_window`); an empty sequence (no first step) is finished at once.
    Shared by enroll() and the bulk import, which must agree."""
    if first_delay_seconds is None:
        status, due, ended = EnrollmentStatus.COMPLETED, None, now
    else:
        status, ended = EnrollmentStatus.ACTIVE, None
        due = next_send_time(
            step_window(campaign, send_window),
            zone_or_utc(timezone),
            now + timedelta(seconds=first_delay_seconds),
        )
    return {"status": status, "next_position": 1, "next_due_at": due, "ended_at": ended}


def _resume(
    session: Session,
    enrollment: Enrollment,
    subscriber: Subscriber,
    campaign: Campaign,
    now: datetime,
) -> Enrollment:
    step = session.scalar(
        select(Step).where(
            Step.campaign_id == campaign.id, Step.position == enrollment.next_position
        )
    )
    enrollment.updated_at = now
    if step is None:
        _end(enrollment, EnrollmentStatus.COMPLETED, now)
        return enrollment
    enrollment.status = EnrollmentStatus.ACTIVE
    enrollment.ended_at = None
    enrollment.next_due_at = next_send_time(
        step_window(campaign, step.send_window),
        zone_or_utc(subscriber.timezone),
        now + timedelta(seconds=step.delay_seconds),
        subscriber.paused_until,
    )
    return enrollment


def enroll_on_confirm(session: Session, subscriber: Subscriber, now: datetime) -> list[str]:
    """Enroll a newly confirmed subscriber in every sequence triggered by confirmation."""
    campaigns = session.scalars(
        select(Campaign)
        .where(Campaign.kind == CampaignKind.SEQUENCE, Campaign.trigger == CampaignTrigger.CONFIRM)
        .order_by(Campaign.id)
    )
    return [c.slug for c in campaigns if enroll(session, subscriber, c, now) is not None]


@dataclass
class PlanResult:
    planned: int = 0
    deferred: int = 0  # due, but the subscriber's send window is closed: moved to its opening
    completed: int = 0

    def __iadd__(self, other: PlanResult) -> PlanResult:
        self.planned += other.planned
        self.deferred += other.deferred
        self.completed += other.completed
        return self


def plan_due(session: Session, now: datetime, limit: int, sender_domain: str) -> PlanResult:
    """One planning batch: turn up to `limit` due enrollments into queued deliveries.

    Reads only due rows (indexed on next_due_at), so its cost follows what is due, not the
    size of the list. On PostgreSQL the rows are locked (SKIP LOCKED) so planners on several
    machines never plan the same enrollment. Plain rows and executemany statements: this runs
    for every email of every sequence.
    """
    rows = _due_enrollments(session, now, limit)
    result = PlanResult()
    if not rows:
        return result
    campaign_ids = {r.campaign_id for r in rows}
    windows = {
        c.id: campaign_window(c)
        for c in session.scalars(select(Campaign).where(Campaign.id.in_(campaign_ids)))
    }
    steps = {
        (campaign_id, position): (step_id, version, in_window)
        for step_id, campaign_id, position, version, in_window in session.execute(
            select(
                Step.id, Step.campaign_id, Step.position, Step.content_sha256, Step.send_window
            ).where(Step.campaign_id.in_(campaign_ids), Step.position.is_not(None))
        )
    }
    changes: list[dict[str, object]] = []
    wanted: list[tuple[Any, int, str]] = []
    for row in rows:
        step = steps.get((row.campaign_id, row.next_position))
        if row.status != SubscriberStatus.ACTIVE or step is None:
            active = row.status == SubscriberStatus.ACTIVE
            result.completed += active
            changes.append(_ended(row.id, active, now))
            continue
        step_id, version, in_window = step
        window = windows[row.campaign_id] if in_window else ANY_TIME
        due = next_send_time(window, zone_or_utc(row.timezone), now, row.paused_until)
        if due > now:  # the reader paused, or their window is closed: plan it then
            changes.append({"id": row.id, "next_due_at": due, "updated_at": now})
            result.deferred += 1
        else:
            wanted.append((row, step_id, version))
    deliveries = _plan_steps(session, wanted, changes, now, sender_domain)
    if deliveries:
        bulk_insert(session, table_of(Delivery), deliveries, {})
    update_by_id(session, Enrollment, changes)
    result.planned = len(deliveries)
    return result


def _due_enrollments(session: Session, now: datetime, limit: int) -> list[Any]:
    return list(
        session.execute(
            select(
                Enrollment.id,
                Enrollment.subscriber_id,
                Enrollment.campaign_id,
                Enrollment.next_position,
                Subscriber.timezone,
                Subscriber.status,
                Subscriber.paused_until,
            )
            .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
            .join(Campaign, Campaign.id == Enrollment.campaign_id)
            .where(
                Enrollment.next_due_at <= now,
                Enrollment.status == EnrollmentStatus.ACTIVE,
                Campaign.status == CampaignStatus.ACTIVE,
                Campaign.kind == CampaignKind.SEQUENCE,
            )
            .order_by(Enrollment.next_due_at)
            .limit(limit)
            .with_for_update(of=Enrollment, skip_locked=True)
        ).all()
    )


def _ended(enrollment_id: int, completed: bool, now: datetime) -> dict[str, object]:
    """An enrollment that ends: completed (no step left) or exited (the reader left)."""
    status = EnrollmentStatus.COMPLETED if completed else EnrollmentStatus.EXITED
    return {
        "id": enrollment_id,
        "status": status,
        "next_due_at": None,
        "ended_at": now,
        "updated_at": now,
    }


def _plan_steps(
    session: Session,
    wanted: list[tuple[Any, int, str]],
    changes: list[dict[str, object]],
    now: datetime,
    sender_domain: str,
) -> list[dict[str, Any]]:
    """The deliveries of the due steps, each enrollment moved past its step. A step sent
    before (a reload moved it after this subscriber's place) is never sent twice: the next
    one is planned instead. Otherwise the enrollment waits for this delivery's outcome."""
    already = _already_delivered(session, [(row.subscriber_id, sid) for row, sid, _ in wanted])
    deliveries = []
    for row, step_id, version in wanted:
        done = (row.subscriber_id, step_id) in already
        changes.append(
            {
                "id": row.id,
                "next_position": row.next_position + 1,
                "next_due_at": now if done else None,
                "updated_at": now,
            }
        )
        if not done:
            deliveries.append(
                queued_delivery(
                    row.subscriber_id,
                    now,
                    sender_domain,
                    campaign_id=row.campaign_id,
                    step_id=step_id,
                    content_sha256=version,
                )
            )
    return deliveries


def _already_delivered(session: Session, pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    if not pairs:
        return set()
    subscriber_ids = {s for s, _ in pairs}
    step_ids = {t for _, t in pairs}
    found = session.execute(
        select(Delivery.subscriber_id, Delivery.step_id).where(
            Delivery.subscriber_id.in_(subscriber_ids), Delivery.step_id.in_(step_ids)
        )
    )
    wanted = set(pairs)
    return {(s, t) for s, t in found if t is not None and (s, t) in wanted}


def _end(enrollment: Enrollment, status: str, now: datetime) -> None:
    enrollment.status = status
    enrollment.next_due_at = None
    enrollment.ended_at = now
    enrollment.updated_at = now


class _Waiting(NamedTuple):
    id: int
    subscriber_id: int
    campaign_id: int
    next_position: int
    timezone: str


@dataclass(frozen=True)
class NextSteps:
    """What moving a reader on in a campaign needs: its send window, each step's delay, and
    which steps are not held to the window."""

    window: SendWindow
    delays: dict[int, int]  # position -> delay_seconds
    any_time: frozenset[int] = frozenset()  # positions of steps with send_window = false

    def window_for(self, position: int) -> SendWindow:
        return ANY_TIME if position in self.any_time else self.window


def next_steps(session: Session, campaigns: Iterable[Campaign]) -> dict[int, NextSteps]:
    """NextSteps of these campaigns (loaded already), with one query for their steps."""
    by_id = {c.id: c for c in campaigns}
    delays: dict[int, dict[int, int]] = {c: {} for c in by_id}
    any_time: dict[int, set[int]] = {c: set() for c in by_id}
    if by_id:
        for campaign_id, position, delay, in_window in session.execute(
            select(Step.campaign_id, Step.position, Step.delay_seconds, Step.send_window).where(
                Step.campaign_id.in_(list(by_id)), Step.position.is_not(None)
            )
        ):
            if position is not None:
                delays[campaign_id][position] = delay
                if not in_window:
                    any_time[campaign_id].add(position)
    return {
        c: NextSteps(campaign_window(by_id[c]), delays[c], frozenset(any_time[c])) for c in by_id
    }


def advance_after_deliveries(
    session: Session,
    pairs: Iterable[tuple[int, int]],
    finished_at: datetime,
    known: Mapping[int, NextSteps] | None = None,
) -> None:
    """Deliveries have their outcome: schedule each (subscriber, campaign)'s next step, counted
    from `finished_at`, or finish the sequence. A few statements for any number of pairs.
    `known`: NextSteps the caller has already (the dispatcher, per claim), not fetched again."""
    wanted = set(pairs)
    if not wanted:
        return
    # A plain driver statement: this runs for every group of sent emails, and SQLAlchemy's
    # work for an IN list costs more than the query. "next_due_at IS NULL" (waiting for this
    # outcome) is checked here, not in SQL: there SQLite would pick the next_due_at index and
    # read every enrollment in flight, thousands during a send, instead of these few.
    rows = [
        _Waiting(*row[:5])
        for row in select_in(
            session,
            "SELECT e.id, e.subscriber_id, e.campaign_id, e.next_position, s.timezone, "
            "e.next_due_at FROM enrollments e JOIN subscribers s ON s.id = e.subscriber_id "
            f"WHERE e.subscriber_id IN ({{}}) AND e.status = '{EnrollmentStatus.ACTIVE}'",
            sorted({s for s, _ in wanted}),
        )
        if row[5] is None and (row[1], row[2]) in wanted
    ]
    if not rows:
        return
    plans = dict(known or {})
    missing = {r.campaign_id for r in rows} - set(plans)
    if missing:
        plans |= next_steps(
            session, session.scalars(select(Campaign).where(Campaign.id.in_(missing)))
        )
    changes = []
    for r in rows:
        plan = plans[r.campaign_id]
        delay = plan.delays.get(r.next_position)
        if delay is None:  # that was the last step
            changes.append(_ended(r.id, True, finished_at))
        else:
            due = next_send_time(
                plan.window_for(r.next_position),
                zone_or_utc(r.timezone),
                finished_at + timedelta(seconds=delay),
            )
            changes.append({"id": r.id, "next_due_at": due, "updated_at": finished_at})
    update_by_id(session, Enrollment, changes)


def exit_enrollments(session: Session, subscriber_id: int, now: datetime) -> int:
    result = session.execute(
        update(Enrollment)
        .where(
            Enrollment.subscriber_id == subscriber_id, Enrollment.status == EnrollmentStatus.ACTIVE
        )
        .values(status=EnrollmentStatus.EXITED, next_due_at=None, ended_at=now, updated_at=now)
    )
    return affected(result)


def remap_positions(
    session: Session, campaign_id: int, old_keys: list[str], new_keys: list[str], now: datetime
) -> int:
    """After a reload, keep every active subscriber where they were in the sequence.

    A subscriber whose next step was old position p has received (or been planned) the old
    steps before p. In the new order, everything up to the last of those is behind them, so
    a step inserted before their place is never sent to them, and every step after it is.
    """
    mapping: dict[int, int] = {}
    for p in range(1, len(old_keys) + 2):
        done = set(old_keys[: p - 1])
        last_done = max((i for i, key in enumerate(new_keys, start=1) if key in done), default=0)
        if last_done + 1 != p:
            mapping[p] = last_done + 1
    if not mapping:
        return 0
    new_position = case(mapping, value=Enrollment.next_position, else_=Enrollment.next_position)
    result = session.execute(
        update(Enrollment)
        .where(
            Enrollment.campaign_id == campaign_id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.next_position.in_(list(mapping)),
        )
        .values(next_position=new_position, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return affected(result)


def enroll_many(
    session: Session, campaign: Campaign, subscribers: list[Subscriber], now: datetime
) -> int:
    """Start a sequence for these active subscribers (people who confirmed before it was
    loaded). Everyone is checked before anyone is enrolled. Returns how many were new to it."""
    if campaign.kind != CampaignKind.SEQUENCE:
        raise Conflict(f"{campaign.slug} is a {campaign.kind}; only sequences take enrollments")
    for subscriber in subscribers:
        if subscriber.status != SubscriberStatus.ACTIVE:
            raise Conflict(
                f"{subscriber.email} is {subscriber.status}; only active subscribers can be "
                "enrolled"
            )
    return sum(enroll(session, s, campaign, now) is not None for s in subscribers)


@dataclass(frozen=True)
class Enrolled:
    added: int  # new to the sequence
    already: int  # in it (or through it) before


def enroll_addresses(
    session: Session, slug: str, emails: Sequence[str] | None, now: datetime
) -> Enrolled:
    """`tidings campaigns enroll`: start the sequence `slug` for these addresses, or for every
    active subscriber when `emails` is None. Everyone is checked before anyone is enrolled."""
    # Imported here: both import this module (directory through store).
    from tidings.campaigns.store import get_campaign
    from tidings.subscribers.directory import find_subscribers

    campaign = get_campaign(session, slug)
    subscribers = find_subscribers(session, emails)
    added = enroll_many(session, campaign, subscribers, now)
    everyone = "every active subscriber" if emails is None else f"{len(subscribers)} named"
    audit.record(session, now, "campaign.enroll", slug, {"who": everyone, "enrolled": added})
    return Enrolled(added, len(subscribers) - added)
