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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from tidings.campaigns.audience import Audience, count_audience
from tidings.campaigns.sequencing import active_steps
from tidings.clock import zone, zone_or_utc
from tidings.db import audit
from tidings.db.bulk import affected
from tidings.db.models import BroadcastSchedule, Campaign, Delivery, Step
from tidings.errors import NotFound, TidingsError
from tidings.states import (
    PLANNING,
    UNFINISHED,
    WAITING,
    BroadcastPhase,
    BroadcastState,
    CampaignKind,
    DeliveryStatus,
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


def local_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time in a zone. zoneinfo (fold=0) moves a time that
    DST skips forward by the gap and takes the first of a time that happens twice."""
    return wall.replace(tzinfo=tz).astimezone(UTC)


def skipped_by_dst(wall: datetime, tz: ZoneInfo) -> bool:
    """True when this wall-clock time does not exist in the zone (clocks jump over it)."""
    back = local_instant(wall, tz).astimezone(tz).replace(tzinfo=None)
    return back != wall


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
                select(Campaign.slug)
                .where(Campaign.kind == CampaignKind.BROADCAST)
                .order_by(Campaign.slug)
            )
        )
        raise NotFound(f"no campaign {slug!r} (loaded broadcasts: {known or 'none'})")
    if campaign.kind != CampaignKind.BROADCAST:
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


@dataclass(frozen=True)
class _When:
    """When a schedule sends: one instant (send_at, the zone --at was given in), or a wall
    clock time in each reader's zone (wall, with local_time)."""

    send_at: datetime | None
    wall: datetime | None
    zone_name: str | None
    text: str  # for people
    notes: tuple[str, ...] = ()


def _when(at: str, tz: str | None, local_time: bool, now: datetime, zones: dict[str, int]) -> _When:
    """Read `--at`, refusing a time that has passed (somewhere in the audience)."""
    if local_time and tz:
        raise BroadcastError("--tz and --local-time exclude each other: choose one")
    if at.strip().lower() == "now":
        if local_time:
            raise BroadcastError("--local-time needs a time of day, not 'now'")
        return _When(now, None, "UTC", "now")
    wall = parse_when(at)
    if local_time:
        late = sorted(
            z for z in zones if local_instant(wall, zone_or_utc(z)) < now - PAST_TOLERANCE
        )
        if late:
            count = sum(zones[z] for z in late)
            raise BroadcastError(
                f"{wall:%Y-%m-%d %H:%M} has already passed in {', '.join(late[:5])}"
                f"{' and more' if len(late) > 5 else ''} ({count} subscriber(s) of this "
                "audience): choose a later date"
            )
        return _When(None, wall, None, f"{wall:%Y-%m-%d %H:%M} in each subscriber's own timezone")
    zone_name = tz or "UTC"
    try:
        tzinfo = zone(zone_name)
    except ValueError as exc:  # "unknown timezone 'Mars/X'"
        raise BroadcastError(f"--tz: {exc} (use an IANA name such as Europe/Paris)") from exc
    send_at = local_instant(wall, tzinfo)
    notes: tuple[str, ...] = ()
    if skipped_by_dst(wall, tzinfo):
        notes = (
            f"{wall:%H:%M} does not exist in {zone_name} on {wall:%Y-%m-%d} (clocks go "
            f"forward): it goes out at {send_at.astimezone(tzinfo):%H:%M} local time",
        )
    if send_at < now - PAST_TOLERANCE:
        raise BroadcastError(
            f"--at {at!r} in {zone_name} is {send_at:%Y-%m-%d %H:%M} UTC, which has passed "
            f"(now: {now:%Y-%m-%d %H:%M} UTC); use a later time, or --at now"
        )
    text = f"{wall:%Y-%m-%d %H:%M} {zone_name} ({send_at:%Y-%m-%d %H:%M} UTC)"
    return _When(send_at, wall, zone_name, text, notes)


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
    audience = _audience_for(session, campaign, audience)
    matching, zones = count_audience(session, audience)
    when = _when(at, tz, local_time, now, zones)
    row = _locked_schedule(session, campaign.id)
    local_text = when.wall.isoformat() if when.send_at is None and when.wall else None
    stored_audience = audience.as_stored()
    report = ScheduleReport(slug, when.text, audience.describe(), matching, notes=list(when.notes))
    if row is not None:
        if row.state == BroadcastState.CANCELLED:
            raise BroadcastError(
                f"{slug} was cancelled; a cancelled broadcast is not sent again (load it "
                "under a new slug to send it)"
            )
        same = (row.send_at, row.local_time, row.tz, row.audience) == (
            when.send_at,
            local_text,
            when.zone_name,
            stored_audience,
        )
        if same and at.strip().lower() != "now":
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
    _store(row, when, local_text, stored_audience, zones, now)
    session.flush()
    audit.record(
        session,
        now,
        "newsletter.schedule",
        slug,
        {"when": report.when, "audience": report.audience, "matching": matching},
    )
    return report


def _audience_for(session: Session, campaign: Campaign, audience: Audience | None) -> Audience:
    """The audience asked for, or the campaign's [audience] (everyone when it has none); the
    sequences it names must be loaded."""
    if audience is None:
        audience = Audience.parse(campaign.definition.get("audience"))
    for other in (audience.enrolled, audience.not_enrolled):
        if other and session.scalar(select(Campaign.id).where(Campaign.slug == other)) is None:
            raise BroadcastError(f"audience: no campaign {other!r} is loaded")
    return audience


def count_recipients(
    session: Session,
    slug: str,
    now: datetime,
    at: str = "",
    tz: str | None = None,
    local_time: bool = False,
    audience: Audience | None = None,
) -> ScheduleReport:
    """What `schedule_broadcast` would say, without scheduling anything (the console's
    Count): who matches now, who has it already, and when it would go (`at` checked as
    `schedule` checks it, when given)."""
    campaign, step = broadcast_campaign(session, slug)
    audience = _audience_for(session, campaign, audience)
    matching, zones = count_audience(session, audience)
    report = ScheduleReport(slug, "", audience.describe(), matching)
    if at.strip():
        when = _when(at, tz, local_time, now, zones)
        report.when, report.notes = when.text, list(when.notes)
    report.already = (
        session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.step_id == step.id)
        )
        or 0
    )
    return report


def _store(
    row: BroadcastSchedule,
    when: _When,
    local_text: str | None,
    audience: dict[str, Any],
    zones: dict[str, int],
    now: datetime,
) -> None:
    """A schedule as planning starts it: nothing planned yet, the first wave next."""
    row.state = BroadcastState.SCHEDULED
    row.send_at = when.send_at
    row.local_time = local_text
    row.tz = when.zone_name
    row.audience = audience
    row.planned_through = None
    row.after_subscriber_id = 0
    row.held = 0
    row.finished_at = None
    row.updated_at = now
    row.scheduled_at = now
    if when.send_at is not None:
        row.next_at = when.send_at
    else:
        assert when.wall is not None
        instants = [local_instant(when.wall, zone_or_utc(z)) for z in zones]
        fallback = when.wall.replace(tzinfo=UTC) - MAX_UTC_OFFSET
        row.next_at = min(instants) if instants else fallback


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
    return affected(result)


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
    audit.record(session, now, "newsletter.unschedule", slug, {"taken_back": removed})
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
        .where(Delivery.step_id == step.id, Delivery.status.in_(WAITING))
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
    skipped = affected(result)
    audit.record(session, now, "newsletter.cancel", slug, {"skipped": skipped})
    return StopReport(slug, _sent(session, step), skipped=skipped)


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
    waiting = sum(counts.get(s, 0) for s in UNFINISHED)
    info: dict[str, Any] = {"state": BroadcastPhase.NOT_SCHEDULED}
    if row is not None:
        if row.state == BroadcastState.DONE:
            state = BroadcastPhase.SENDING if waiting else BroadcastPhase.SENT
        else:
            state = BroadcastPhase(row.state)
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
            "next_wave": row.next_at if row.state in PLANNING else None,
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


def newsletter_overview(session: Session, slug: str | None = None) -> list[dict[str, Any]]:
    """Every broadcast (or the one `slug` names) for the console: its campaign's status, its
    email, `broadcast_info`, and its schedule as stored (`scheduled`: the wall-clock time, the
    zone or local time, the audience), with the Campaign row for `ops.stats`."""
    if slug is not None:
        campaigns = [broadcast_campaign(session, slug)[0]]
    else:
        campaigns = list(
            session.scalars(
                select(Campaign)
                .where(Campaign.kind == CampaignKind.BROADCAST)
                .order_by(Campaign.loaded_at.desc(), Campaign.slug)
            )
        )
    rows = []
    for campaign in campaigns:
        steps = active_steps(session, campaign.id)
        row = session.get(BroadcastSchedule, campaign.id)
        scheduled = None
        if row is not None and row.state != BroadcastState.CANCELLED:
            wall = (
                datetime.fromisoformat(row.local_time)
                if row.local_time
                else row.send_at.astimezone(zone_or_utc(row.tz or "UTC"))
                if row.send_at
                else None
            )
            scheduled = {
                "at": f"{wall:%Y-%m-%d %H:%M}" if wall else "",
                "tz": row.tz or "UTC",
                "local_time": bool(row.local_time),
                "audience": dict(row.audience or {}),
            }
        rows.append(
            {
                "slug": campaign.slug,
                "name": campaign.name,
                "status": campaign.status,
                "status_reason": campaign.status_reason,
                "step": steps[0].key if steps else None,
                "subject": steps[0].subject if steps else "",
                "own_audience": Audience.parse(campaign.definition.get("audience")).describe(),
                "scheduled": scheduled,
                "campaign": campaign,
                **broadcast_info(session, campaign),
            }
        )
    return rows
