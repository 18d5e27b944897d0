"""Broadcasts (newsletters): one email, sent once to an audience at a chosen time.

    schedule  ->  (the planner, every tick)  ->  deliveries in the ledger  ->  the dispatcher

Scheduling stores when and to whom (a BroadcastSchedule row); nothing is written to the
ledger yet, so the audience is read when the email is due, not days before. At its time the
planner walks the audience in subscriber-id order, one batch per transaction, writing a
queued delivery per subscriber and the last id done (the cursor) together: a crash resumes
at the cursor, and the ledger's UNIQUE (subscriber, step) means a batch planned twice (or a
broadcast scheduled again) never sends anything twice. Memory stays constant: one batch.

Two ways to say when:
- one instant for everybody: `--at "2026-12-03 10:00" --tz Europe/Paris`;
- a wall-clock time in each subscriber's own timezone (`--local-time`): each timezone is a
  wave at its own instant (Tokyo first, Hawaii last). Waves that fall due together (or
  while the engine was down) are planned as one. A wall-clock time that a DST change skips
  (02:30 on the night clocks go forward) is read as the moment after the gap (03:30); one
  that happens twice is the first.

A newsletter that would land close to one of a subscriber's drip emails waits
(TIDINGS_NEWSLETTER_AFTER_DRIP=wait, the default) until TIDINGS_NEWSLETTER_GAP_SECONDS
after that drip email, or goes anyway (=send). This is decided when the newsletter is
planned; a drip email scheduled later is not moved.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, delete, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from tidings.campaigns.audience import Audience, like_pattern
from tidings.campaigns.sequencing import PlanResult, active_steps, message_id
from tidings.config import Settings
from tidings.errors import NotFound, TidingsError
from tidings.models import (
    BroadcastSchedule,
    BroadcastState,
    Campaign,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Step,
    Subscriber,
    SubscriberStatus,
)

log = logging.getLogger(__name__)

WHEN_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")
# No timezone is ahead of UTC+14: before (local time - 14 h) no wave can be due.
MAX_UTC_OFFSET = timedelta(hours=14)
# `--at` a little in the past (the time it took to type the command) still means "now".
PAST_TOLERANCE = timedelta(minutes=5)


class BroadcastError(TidingsError):
    """A broadcast cannot be scheduled, unscheduled or cancelled as asked; says why."""


# ----------------------------------------------------------------------------- time


def parse_when(text: str) -> datetime:
    """'2026-12-03 10:00' (or ISO 'T' form, optional seconds) -> a naive wall-clock time."""
    cleaned = " ".join(text.split())
    for fmt in WHEN_FORMATS:
        try:
            return datetime.strptime(cleaned, fmt)
        except ValueError:
            continue
    raise BroadcastError(f"--at: expected a date and time like '2026-12-03 10:00', got {text!r}")


def get_zone(name: str, option: str = "--tz") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BroadcastError(
            f"{option}: unknown timezone {name!r} (use an IANA name such as Europe/Paris)"
        ) from exc


def local_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time in a zone. zoneinfo (fold=0) moves a time that
    DST skips forward by the gap and takes the first of a time that happens twice."""
    return wall.replace(tzinfo=zone).astimezone(UTC)


def skipped_by_dst(wall: datetime, zone: ZoneInfo) -> bool:
    """True when this wall-clock time does not exist in the zone (clocks jump over it)."""
    back = local_instant(wall, zone).astimezone(zone).replace(tzinfo=None)
    return back != wall


def _zone_or_utc(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")  # subscribers' zones are checked on input; never crash here


# ----------------------------------------------------------------------------- audience


def audience_filter(query: Select[Any], session: Session, audience: Audience) -> Select[Any]:
    """Add the SQL part of an audience (status, timezones, enrollment) to a subscriber query.
    Attributes are compared in Python (`Audience.matches_attributes`): exact on every
    database, and the rows are streamed anyway."""
    query = query.where(Subscriber.status == SubscriberStatus.ACTIVE)
    if audience.timezones:
        query = query.where(
            or_(
                *(
                    Subscriber.timezone.like(like_pattern(p), escape="\\")
                    if "*" in p
                    else Subscriber.timezone == p
                    for p in audience.timezones
                )
            )
        )
    for slug, wanted in ((audience.enrolled, True), (audience.not_enrolled, False)):
        if not slug:
            continue
        campaign_id = session.scalar(select(Campaign.id).where(Campaign.slug == slug)) or -1
        in_it = exists().where(
            Enrollment.subscriber_id == Subscriber.id,
            Enrollment.campaign_id == campaign_id,
            Enrollment.status.in_((EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED)),
        )
        query = query.where(in_it if wanted else ~in_it)
    return query


def iter_audience(
    session: Session, audience: Audience, batch: int = 1000
) -> Iterator[list[tuple[int, str]]]:
    """(id, timezone) of the matching subscribers, batch by batch, in id order."""
    after = 0
    while True:
        rows = session.execute(
            audience_filter(
                select(Subscriber.id, Subscriber.timezone, Subscriber.attributes), session, audience
            )
            .where(Subscriber.id > after)
            .order_by(Subscriber.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        yield [(r.id, r.timezone) for r in rows if audience.matches_attributes(r.attributes)]


def count_audience(session: Session, audience: Audience) -> tuple[int, dict[str, int]]:
    """How many subscribers match now, and how many per timezone."""
    zones: dict[str, int] = {}
    for rows in iter_audience(session, audience):
        for _, tz in rows:
            zones[tz] = zones.get(tz, 0) + 1
    return sum(zones.values()), zones


# ----------------------------------------------------------------------------- commands


@dataclass
class ScheduleReport:
    slug: str
    when: str
    audience: str
    matching: int
    unchanged: bool = False
    already: int = 0  # subscribers who have it (or have it queued) from an earlier schedule
    removed: int = 0  # queued, never-tried deliveries of an earlier schedule, taken back
    notes: list[str] = field(default_factory=list)


def broadcast_campaign(session: Session, slug: str) -> tuple[Campaign, Step]:
    campaign = session.scalar(select(Campaign).where(Campaign.slug == slug))
    if campaign is None:
        known = ", ".join(
            session.scalars(
                select(Campaign.slug).where(Campaign.kind == "broadcast").order_by(Campaign.slug)
            )
        )
        raise NotFound(f"no campaign {slug!r} (loaded broadcasts: {known or 'none'})")
    if campaign.kind != "broadcast":
        raise BroadcastError(
            f"{slug} is a {campaign.kind}: only broadcasts are scheduled (a sequence starts "
            "for each subscriber when they enroll)"
        )
    steps = active_steps(session, campaign.id)
    if len(steps) != 1:
        raise BroadcastError(f"{slug}: a broadcast has exactly one email, found {len(steps)}")
    return campaign, steps[0]


def _locked_schedule(session: Session, campaign_id: int) -> BroadcastSchedule | None:
    return session.scalar(
        select(BroadcastSchedule)
        .where(BroadcastSchedule.campaign_id == campaign_id)
        .with_for_update()
    )


def schedule_broadcast(
    session: Session,
    slug: str,
    at: str,
    now: datetime,
    tz: str | None = None,
    local_time: bool = False,
    audience: Audience | None = None,
) -> ScheduleReport:
    """Schedule (or re-schedule) a broadcast. `at` is a wall-clock time, or "now".

    Scheduling the same thing again changes nothing. Scheduling differently takes back
    the deliveries an earlier schedule queued but never tried; subscribers who already have
    the email (sent, or in a server's hands) never get it again.
    """
    campaign, step = broadcast_campaign(session, slug)
    if local_time and tz:
        raise BroadcastError("--tz and --local-time exclude each other: choose one")
    if audience is None:
        audience = Audience.parse(campaign.definition.get("audience"))
    for other in (audience.enrolled, audience.not_enrolled):
        if other and session.scalar(select(Campaign.id).where(Campaign.slug == other)) is None:
            raise BroadcastError(f"audience: no campaign {other!r} is loaded")

    notes: list[str] = []
    send_at: datetime | None = None
    wall: datetime | None = None
    zone_name: str | None = None
    if at.strip().lower() == "now":
        if local_time:
            raise BroadcastError("--local-time needs a time of day, not 'now'")
        send_at, zone_name = now, "UTC"
        when = "now"
    else:
        wall = parse_when(at)
    matching, zones = count_audience(session, audience)
    if wall is not None and not local_time:
        zone_name = tz or "UTC"
        zone = get_zone(zone_name)
        send_at = local_instant(wall, zone)
        if skipped_by_dst(wall, zone):
            notes.append(
                f"{wall:%H:%M} does not exist in {zone_name} on {wall:%Y-%m-%d} (clocks go "
                f"forward): it goes out at {send_at.astimezone(zone):%H:%M} local time"
            )
        if send_at < now - PAST_TOLERANCE:
            raise BroadcastError(
                f"--at {at!r} in {zone_name} is {send_at:%Y-%m-%d %H:%M} UTC, which has passed "
                f"(now: {now:%Y-%m-%d %H:%M} UTC); use a later time, or --at now"
            )
        when = f"{wall:%Y-%m-%d %H:%M} {zone_name} ({send_at:%Y-%m-%d %H:%M} UTC)"
    elif wall is not None:
        late = sorted(
            z for z in zones if local_instant(wall, _zone_or_utc(z)) < now - PAST_TOLERANCE
        )
        if late:
            count = sum(zones[z] for z in late)
            raise BroadcastError(
                f"{wall:%Y-%m-%d %H:%M} has already passed in {', '.join(late[:5])}"
                f"{' and more' if len(late) > 5 else ''} ({count} subscriber(s) of this "
                "audience): choose a later date"
            )
        when = f"{wall:%Y-%m-%d %H:%M} in each subscriber's own timezone"

    row = _locked_schedule(session, campaign.id)
    local_text = wall.isoformat() if (local_time and wall is not None) else None
    stored_audience = audience.as_stored()
    report = ScheduleReport(slug, when, audience.describe(), matching, notes=notes)
    if row is not None:
        if row.state == BroadcastState.CANCELLED:
            raise BroadcastError(
                f"{slug} was cancelled; a cancelled broadcast is not sent again (load it "
                "under a new slug to send it)"
            )
        same = (
            row.send_at == send_at
            and row.local_time == local_text
            and row.tz == zone_name
            and row.audience == stored_audience
            and at.strip().lower() != "now"
        )
        if same:
            report.unchanged = True
            return report
        report.removed = _take_back_unsent(session, step, now)
    report.already = (
        session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.step_id == step.id)
        )
        or 0
    )
    if row is None:
        row = BroadcastSchedule(campaign_id=campaign.id)
        session.add(row)
    row.state = BroadcastState.SCHEDULED
    row.send_at = send_at
    row.local_time = local_text
    row.tz = zone_name
    row.audience = stored_audience
    row.planned_through = None
    row.after_subscriber_id = 0
    row.held = 0
    row.finished_at = None
    row.updated_at = now
    row.scheduled_at = now
    if send_at is not None:
        row.next_at = send_at
    else:
        assert wall is not None
        instants = [local_instant(wall, _zone_or_utc(z)) for z in zones]
        row.next_at = min(instants) if instants else wall.replace(tzinfo=UTC) - MAX_UTC_OFFSET
    session.flush()
    return report


def _take_back_unsent(session: Session, step: Step, now: datetime) -> int:
    """Delete this broadcast's deliveries that are queued and were never offered to a server.
    A delivery being sent (claimed by a worker: status `sending`) or retried stays."""
    result = session.execute(
        delete(Delivery)
        .where(
            Delivery.step_id == step.id,
            Delivery.status == DeliveryStatus.QUEUED,
            Delivery.attempts == 0,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


@dataclass
class StopReport:
    slug: str
    sent: int
    removed: int = 0
    skipped: int = 0


def unschedule_broadcast(session: Session, slug: str, now: datetime) -> StopReport:
    """Back to unscheduled: nothing more is planned; queued emails are taken back. It can be
    scheduled again; those who already got it will not get it twice."""
    campaign, step = broadcast_campaign(session, slug)
    row = _locked_schedule(session, campaign.id)
    if row is None:
        raise BroadcastError(f"{slug} is not scheduled")
    if row.state == BroadcastState.CANCELLED:
        raise BroadcastError(f"{slug} was cancelled; there is nothing to unschedule")
    removed = _take_back_unsent(session, step, now)
    session.delete(row)
    return StopReport(slug, _sent(session, step), removed=removed)


def cancel_broadcast(session: Session, slug: str, now: datetime) -> StopReport:
    """Stop a broadcast for good: nothing more is planned, what is queued is skipped."""
    campaign, step = broadcast_campaign(session, slug)
    row = _locked_schedule(session, campaign.id)
    if row is None:
        raise BroadcastError(f"{slug} is not scheduled; there is nothing to cancel")
    if row.state == BroadcastState.CANCELLED:
        raise BroadcastError(f"{slug} is already cancelled")
    result = session.execute(
        update(Delivery)
        .where(Delivery.step_id == step.id, Delivery.status.in_(DeliveryStatus.WAITING))
        .values(
            status=DeliveryStatus.SKIPPED,
            outcome="skipped: broadcast cancelled",
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    row.state = BroadcastState.CANCELLED
    row.next_at = None
    row.finished_at = now
    row.updated_at = now
    return StopReport(slug, _sent(session, step), skipped=result.rowcount or 0)


def _sent(session: Session, step: Step) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.step_id == step.id, Delivery.status == DeliveryStatus.SENT)
        )
        or 0
    )


def broadcast_info(session: Session, campaign: Campaign) -> dict[str, Any]:
    """What `campaigns show` and `schedule` say about a broadcast."""
    row = session.get(BroadcastSchedule, campaign.id)
    counts = dict(
        session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.campaign_id == campaign.id)
            .group_by(Delivery.status)
        ).all()
    )
    waiting = sum(counts.get(s, 0) for s in (*DeliveryStatus.WAITING, DeliveryStatus.SENDING))
    info: dict[str, Any] = {"state": "not scheduled"}
    if row is not None:
        state = row.state
        if state == BroadcastState.DONE:
            state = "sending" if waiting else "sent"
        info = {
            "state": state,
            "when": (
                f"{row.local_time.replace('T', ' ')[:16]} in each subscriber's timezone"
                if row.local_time
                else f"{row.send_at:%Y-%m-%d %H:%M} UTC"
                if row.send_at
                else ""
            ),
            "audience": Audience.parse(row.audience).describe(),
            "next_wave": row.next_at if row.state in BroadcastState.PLANNING else None,
            "held_for_drip_gap": row.held,
        }
    info.update(
        planned=sum(counts.values()),
        sent=counts.get(DeliveryStatus.SENT, 0),
        waiting=waiting,
        skipped=counts.get(DeliveryStatus.SKIPPED, 0),
        failed=counts.get(DeliveryStatus.FAILED, 0) + counts.get(DeliveryStatus.BOUNCED, 0),
    )
    return info


# ----------------------------------------------------------------------------- planning


def next_broadcast_event(session: Session) -> datetime | None:
    """When the planner next has a broadcast wave to look at, if ever."""
    return session.scalar(
        select(func.min(BroadcastSchedule.next_at))
        .join(Campaign, Campaign.id == BroadcastSchedule.campaign_id)
        .where(BroadcastSchedule.state.in_(BroadcastState.PLANNING), Campaign.status == "active")
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
                    BroadcastSchedule.state.in_(BroadcastState.PLANNING),
                    BroadcastSchedule.next_at <= now,
                    Campaign.status == "active",
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
                self._instants = {z: local_instant(wall, _zone_or_utc(z)) for z in zones}
        return self._instants

    def batch(self, session: Session) -> PlanResult | None:
        """One batch in the caller's transaction; None when nothing more is due now."""
        row = session.scalar(
            select(BroadcastSchedule)
            .where(BroadcastSchedule.campaign_id == self.campaign_id)
            .with_for_update(skip_locked=True)  # another worker is planning it: leave it
        )
        if row is None or row.state not in BroadcastState.PLANNING:
            return None
        if row.next_at is None or row.next_at > self.now:
            return None
        campaign = session.get(Campaign, self.campaign_id)
        if campaign is None or campaign.status != "active":
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
                {
                    "kind": "step",
                    "subscriber_id": subscriber_id,
                    "campaign_id": step.campaign_id,
                    "step_id": step.id,
                    "status": DeliveryStatus.QUEUED,
                    "attempts": 0,
                    "next_attempt_at": hold.get(subscriber_id, now),
                    "message_id": message_id(self.settings.sender_domain),
                    "content_sha256": step.content_sha256,
                    "created_at": now,
                    "updated_at": now,
                }
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
        drip = select(Campaign.id).where(Campaign.kind == "sequence")
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
                Delivery.status.in_((*DeliveryStatus.WAITING, DeliveryStatus.SENDING)),
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
                Campaign.kind == "sequence",
                Campaign.status == "active",
                Enrollment.next_due_at < now + gap,
            )
            .group_by(Enrollment.subscriber_id)
        ):
            note(subscriber_id, max(at, now) if at is not None else None)
        return {s: at + gap for s, at in latest.items() if at + gap > now}
