"""Planning broadcasts (newsletters): at its time, each wave of a scheduled broadcast becomes
queued deliveries, one batch per transaction.

The planner walks the audience in subscriber-id order, writing a queued delivery per
subscriber and the last id done (the cursor) together: a crash resumes at the cursor, and the
ledger's UNIQUE (subscriber, step) means a batch planned twice (or a broadcast scheduled
again) never sends anything twice. Memory stays constant: one batch. In local-time mode each
timezone is a wave at its own instant; waves that fall due together are planned as one.

A newsletter that would land close to one of a subscriber's drip emails waits
(TIDINGS_NEWSLETTER_AFTER_DRIP=wait) until TIDINGS_NEWSLETTER_GAP_SECONDS after that drip
email, or goes anyway (=send); this is decided here, when it is planned.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from tidings.campaigns.audience import Audience, audience_filter
from tidings.campaigns.broadcasts import local_instant
from tidings.campaigns.sequencing import PlanResult, active_steps
from tidings.clock import zone_or_utc
from tidings.config import Settings
from tidings.db.models import (
    BroadcastSchedule,
    Campaign,
    Delivery,
    Enrollment,
    Step,
    Subscriber,
    queued_delivery,
)
from tidings.states import (
    PLANNING,
    UNFINISHED,
    BroadcastState,
    CampaignKind,
    CampaignStatus,
    DeliveryStatus,
    EnrollmentStatus,
)

log = logging.getLogger(__name__)


def next_broadcast_event(session: Session) -> datetime | None:
    """When the planner next has a broadcast wave to look at, if ever."""
    return session.scalar(
        select(func.min(BroadcastSchedule.next_at))
        .join(Campaign, Campaign.id == BroadcastSchedule.campaign_id)
        .where(BroadcastSchedule.state.in_(PLANNING), Campaign.status == CampaignStatus.ACTIVE)
    )


def plan_broadcasts(
    sessions: sessionmaker[Session],
    now: datetime,
    settings: Settings,
    stop: threading.Event | None = None,
) -> PlanResult:
    """Plan every broadcast wave that is due: one batch per transaction, until none is due."""
    with sessions.begin() as session:
        due = list(
            session.scalars(
                select(BroadcastSchedule.campaign_id)
                .join(Campaign, Campaign.id == BroadcastSchedule.campaign_id)
                .where(
                    BroadcastSchedule.state.in_(PLANNING),
                    BroadcastSchedule.next_at <= now,
                    Campaign.status == CampaignStatus.ACTIVE,
                )
                .order_by(BroadcastSchedule.next_at)
            )
        )
    total = PlanResult()
    for campaign_id in due:
        planner = _WavePlanner(campaign_id, now, settings)
        while stop is None or not stop.is_set():
            with sessions.begin() as session:
                result = planner.batch(session)
            if result is None:
                break
            total += result
    return total


class _WavePlanner:
    """Plans one broadcast, batch after batch. Keeps nothing between batches but the
    timezones of the audience (a few hundred names at most), read once per pass."""

    def __init__(self, campaign_id: int, now: datetime, settings: Settings):
        self.campaign_id = campaign_id
        self.now = now
        self.settings = settings
        self._instants: dict[str | None, datetime] | None = None

    def _zone_instants(
        self, session: Session, row: BroadcastSchedule, audience: Audience
    ) -> dict[str | None, datetime]:
        """{timezone: its instant}; in one-instant mode {None: send_at}."""
        if self._instants is None:
            if row.local_time is None:
                assert row.send_at is not None
                self._instants = {None: row.send_at}
            else:
                wall = datetime.fromisoformat(row.local_time)
                zones = session.scalars(
                    audience_filter(select(Subscriber.timezone).distinct(), session, audience)
                )
                self._instants = {z: local_instant(wall, zone_or_utc(z)) for z in zones}
        return self._instants

    def batch(self, session: Session) -> PlanResult | None:
        """One batch in the caller's transaction; None when nothing more is due now."""
        row = session.scalar(
            select(BroadcastSchedule)
            .where(BroadcastSchedule.campaign_id == self.campaign_id)
            .with_for_update(skip_locked=True)  # another worker is planning it: leave it
        )
        if row is None or row.state not in PLANNING:
            return None
        if row.next_at is None or row.next_at > self.now:
            return None
        campaign = session.get(Campaign, self.campaign_id)
        if campaign is None or campaign.status != CampaignStatus.ACTIVE:
            return None
        steps = active_steps(session, campaign.id)
        if len(steps) != 1:
            log.warning("broadcast %s has %d emails, not 1: not planned", campaign.slug, len(steps))
            return None
        step = steps[0]
        audience = Audience.parse(row.audience)
        instants = self._zone_instants(session, row, audience)
        after = row.planned_through

        def pending(t: datetime) -> bool:
            return after is None or t > after

        if row.after_subscriber_id == 0:
            # Starting a wave: every timezone whose instant has come, not yet planned.
            due = [t for t in instants.values() if pending(t) and t <= self.now]
            if not due:
                return self._wait_or_finish(row, instants)
            row.next_at = max(due)  # the wave's instant, kept while it is being planned
        wave_at = row.next_at
        zones = [z for z, t in instants.items() if pending(t) and t <= wave_at]

        query = audience_filter(
            select(Subscriber.id, Subscriber.attributes), session, audience
        ).where(Subscriber.id > row.after_subscriber_id)
        if None not in zones:
            query = query.where(Subscriber.timezone.in_([z for z in zones if z is not None]))
        limit = self.settings.batch_size
        rows = session.execute(query.order_by(Subscriber.id).limit(limit)).all()
        ids = [r.id for r in rows if audience.matches_attributes(r.attributes)]
        planned, held = self._write(session, step, ids)

        row.state = BroadcastState.SENDING
        row.planned += planned
        row.held += held
        row.updated_at = self.now
        if len(rows) == limit:
            row.after_subscriber_id = rows[-1].id
        else:  # the wave is done
            row.planned_through = wave_at
            row.after_subscriber_id = 0
            self._wait_or_finish(row, instants)
        session.flush()
        return PlanResult(planned=planned, deferred=held)

    def _wait_or_finish(
        self, row: BroadcastSchedule, instants: dict[str | None, datetime]
    ) -> PlanResult | None:
        after = row.planned_through
        later = [t for t in instants.values() if after is None or t > after]
        if later:
            row.next_at = min(later)
            return None if row.next_at > self.now else PlanResult()
        row.state = BroadcastState.DONE
        row.next_at = None
        row.finished_at = self.now
        row.updated_at = self.now
        log.info("broadcast planned for every recipient (%d)", row.planned)
        return None

    def _write(self, session: Session, step: Step, ids: Sequence[int]) -> tuple[int, int]:
        """Queue the email for these subscribers, except those who have it already."""
        if not ids:
            return 0, 0
        have = set(
            session.scalars(
                select(Delivery.subscriber_id).where(
                    Delivery.step_id == step.id, Delivery.subscriber_id.in_(ids)
                )
            )
        )
        fresh = [i for i in ids if i not in have]
        if not fresh:
            return 0, 0
        hold = self._drip_gap(session, fresh)
        now = self.now
        session.execute(
            insert(Delivery),
            [
                queued_delivery(
                    subscriber_id,
                    now,
                    self.settings.sender_domain,
                    campaign_id=step.campaign_id,
                    step_id=step.id,
                    content_sha256=step.content_sha256,
                    not_before=hold.get(subscriber_id),
                )
                for subscriber_id in fresh
            ],
        )
        return len(fresh), len(hold)

    def _drip_gap(self, session: Session, ids: list[int]) -> dict[int, datetime]:
        """{subscriber: when their newsletter may go} for those with a drip email within the
        gap of now (sent, waiting in the queue, or due soon): it waits until the gap after
        that drip email has passed."""
        gap = timedelta(seconds=self.settings.newsletter_gap_seconds)
        if self.settings.newsletter_after_drip != "wait" or not gap:
            return {}
        now = self.now
        drip = select(Campaign.id).where(Campaign.kind == CampaignKind.SEQUENCE)
        latest: dict[int, datetime] = {}

        def note(subscriber_id: int, at: datetime | None) -> None:
            if at is not None and at > latest.get(subscriber_id, at - timedelta(seconds=1)):
                latest[subscriber_id] = at

        for subscriber_id, at in session.execute(
            select(Delivery.subscriber_id, func.max(Delivery.sent_at))
            .where(
                Delivery.subscriber_id.in_(ids),
                Delivery.campaign_id.in_(drip),
                Delivery.status == DeliveryStatus.SENT,
                Delivery.sent_at > now - gap,
            )
            .group_by(Delivery.subscriber_id)
        ):
            note(subscriber_id, at)
        for subscriber_id, at in session.execute(
            select(Delivery.subscriber_id, func.max(Delivery.next_attempt_at))
            .where(
                Delivery.subscriber_id.in_(ids),
                Delivery.campaign_id.in_(drip),
                Delivery.status.in_(UNFINISHED),
            )
            .group_by(Delivery.subscriber_id)
        ):
            note(subscriber_id, max(at, now) if at is not None else None)
        for subscriber_id, at in session.execute(
            select(Enrollment.subscriber_id, func.min(Enrollment.next_due_at))
            .join(Campaign, Campaign.id == Enrollment.campaign_id)
            .where(
                Enrollment.subscriber_id.in_(ids),
                Enrollment.status == EnrollmentStatus.ACTIVE,
                Campaign.kind == CampaignKind.SEQUENCE,
                Campaign.status == CampaignStatus.ACTIVE,
                Enrollment.next_due_at < now + gap,
            )
            .group_by(Enrollment.subscriber_id)
        ):
            note(subscriber_id, max(at, now) if at is not None else None)
        return {s: at + gap for s, at in latest.items() if at + gap > now}
