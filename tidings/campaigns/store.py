"""Campaigns in the database: find them, pause and resume them, and what the CLI and the
console show of them. Loading a folder is `campaigns.loading`'s."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tidings.campaigns.sequencing import active_steps
from tidings.campaigns.windows import format_delay
from tidings.db import audit
from tidings.db.models import Campaign, Delivery, Enrollment, Step
from tidings.errors import NotFound
from tidings.states import (
    BroadcastPhase,
    CampaignKind,
    CampaignStatus,
    CampaignTrigger,
    DeliveryStatus,
    EnrollmentStatus,
)


def get_campaign(session: Session, slug: str) -> Campaign:
    campaign = session.scalar(select(Campaign).where(Campaign.slug == slug))
    if campaign is None:
        known = ", ".join(session.scalars(select(Campaign.slug).order_by(Campaign.slug))) or "none"
        raise NotFound(f"no campaign {slug!r} (loaded campaigns: {known})")
    return campaign


def list_campaigns(session: Session) -> list[Campaign]:
    return list(session.scalars(select(Campaign).order_by(Campaign.slug)))


def set_status(
    session: Session, slug: str, status: CampaignStatus, reason: str | None = None
) -> Campaign:
    """Pause or resume a campaign. Nothing is lost either way: a paused campaign's emails wait."""
    campaign = get_campaign(session, slug)
    if status == CampaignStatus.ACTIVE and campaign.status != CampaignStatus.ACTIVE:
        # Resuming means the operator has seen the bounces so far: count only new ones.
        campaign.bounce_check_after_id = session.scalar(select(func.max(Delivery.id))) or 0
    campaign.status = status
    campaign.status_reason = reason
    return campaign


def pause(session: Session, now: datetime, slug: str, reason: str) -> Campaign:
    """Stop sending a campaign now, saying why (the dashboard shows it); in the audit log."""
    campaign = set_status(session, slug, CampaignStatus.PAUSED, reason)
    audit.record(session, now, "campaign.pause", slug, note=reason)
    return campaign


def resume(session: Session, now: datetime, slug: str) -> Campaign:
    """Send again from where it stopped; nothing already sent goes twice. In the audit log."""
    campaign = set_status(session, slug, CampaignStatus.ACTIVE, None)
    audit.record(session, now, "campaign.resume", slug)
    return campaign


def find_step(session: Session, campaign: Campaign, key: str | None) -> Step:
    steps = active_steps(session, campaign.id)
    if not steps:
        raise NotFound(f"campaign {campaign.slug!r} has no steps")
    if key is None:
        return steps[0]
    for step in steps:
        if step.key == key or str(step.position) == key:
            return step
    keys = ", ".join(s.key for s in steps)
    raise NotFound(f"campaign {campaign.slug!r} has no step {key!r} (steps: {keys})")


def _count(session: Session, query: Any) -> int:
    return session.scalar(query) or 0


def campaign_summary(
    session: Session, campaign: Campaign, sent: int | None = None
) -> dict[str, Any]:
    """A campaign's line in `campaigns list`: what it is and how far it has got. `sent`: the
    count of its sent emails when the caller has it already (counting reads the campaign's
    whole part of the ledger index)."""
    return {
        "slug": campaign.slug,
        "name": campaign.name,
        "kind": campaign.kind,
        "status": campaign.status,
        "steps": _count(
            session,
            select(func.count())
            .select_from(Step)
            .where(Step.campaign_id == campaign.id, Step.position.is_not(None)),
        ),
        "enrolled": _count(
            session,
            select(func.count())
            .select_from(Enrollment)
            .where(
                Enrollment.campaign_id == campaign.id,
                Enrollment.status == EnrollmentStatus.ACTIVE,
            ),
        ),
        "sent": sent
        if sent is not None
        else _count(
            session,
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.campaign_id == campaign.id, Delivery.status == DeliveryStatus.SENT),
        ),
    }


def campaign_summaries(session: Session) -> list[dict[str, Any]]:
    return [campaign_summary(session, c) for c in list_campaigns(session)]


def campaign_details(session: Session, slug: str) -> dict[str, Any]:
    """Everything `campaigns show` prints: settings, schedule, and each step with its sends."""
    from tidings.campaigns.broadcasts import broadcast_info

    campaign = get_campaign(session, slug)
    sent_by_step = dict(
        session.execute(
            select(Delivery.step_id, func.count())
            .where(Delivery.campaign_id == campaign.id, Delivery.status == DeliveryStatus.SENT)
            .group_by(Delivery.step_id)
        ).all()
    )
    # Every sent email of the campaign is in one of these groups (removed steps and none
    # included): their sum is the summary's count, without reading the ledger twice.
    info = campaign_summary(session, campaign, sent=sum(sent_by_step.values()))
    window = campaign.definition.get("window", {})
    days = "".join("MTWTFSS"[d] if d in window.get("days", []) else "-" for d in range(7))
    info.update(
        trigger=campaign.trigger,
        status_reason=campaign.status_reason,
        loaded_at=campaign.loaded_at,
        source=campaign.source_path,
        window=f"{window.get('start', '')[:5]}-{window.get('end', '')[:5]} {days}",
        # The same, as a person says it (the console): "one every two days, on weekdays".
        cadence=cadence_in_words(
            int(campaign.definition.get("every_seconds", 0)), window.get("days", [])
        ),
        hours=f"{window.get('start', '')[:5]} to {window.get('end', '')[:5]}",
    )
    info["steps"] = [
        {
            "position": s.position,
            "key": s.key,
            "delay": format_delay(s.delay_seconds),
            "subject": s.subject,
            "sent": sent_by_step.get(s.id, 0),
        }
        for s in active_steps(session, campaign.id)
    ]
    if campaign.kind == CampaignKind.BROADCAST:
        info["broadcast"] = broadcast_info(session, campaign)
    return info


# ----------------------------------------------------------------------------- for readers

_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_WEEKDAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")
_UNITS = (("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60))


def _number(n: int) -> str:
    return _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)


def cadence_in_words(every_seconds: int, days: Iterable[int]) -> str:
    """How often a series sends, as a person says it: 'one every two days, on weekdays'."""
    every = "all at once"
    for unit, seconds in _UNITS:
        if every_seconds >= seconds and every_seconds % seconds == 0:
            count = every_seconds // seconds
            every = f"one a{'n' if unit == 'hour' else ''} {unit}"
            if count > 1:
                every = f"one every {_number(count)} {unit}s"
            break
    else:
        if every_seconds > 0:
            every = f"one every {_number(every_seconds)} seconds"
    chosen = sorted(set(days))
    if not chosen or chosen == list(range(7)):
        return every
    if chosen == list(range(5)):
        return f"{every}, on weekdays"
    if chosen == [5, 6]:
        return f"{every}, at weekends"
    names = [_WEEKDAYS[d] for d in chosen]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"{every}, on {listed}"


@dataclass(frozen=True)
class SeriesOutline:
    """What a reader gets from one series: its name, how many emails and how often."""

    name: str
    emails: int
    every_seconds: int
    days: tuple[int, ...]

    @property
    def in_words(self) -> str:
        """'16 emails, one every two days, on weekdays'."""
        if self.emails == 1:
            return "one email"
        return f"{self.emails} emails, {cadence_in_words(self.every_seconds, self.days)}"


def series_on_confirm(session: Session) -> list[SeriesOutline]:
    """The sequences a new subscriber joins on confirming (as sequencing.enroll_on_confirm
    enrolls them), for the sign-up and confirmation pages."""
    campaigns = session.scalars(
        select(Campaign)
        .where(Campaign.kind == CampaignKind.SEQUENCE, Campaign.trigger == CampaignTrigger.CONFIRM)
        .order_by(Campaign.name)
    )
    outlines = []
    for campaign in campaigns:
        emails = _count(
            session,
            select(func.count())
            .select_from(Step)
            .where(Step.campaign_id == campaign.id, Step.position.is_not(None)),
        )
        if emails == 0:
            continue
        definition = campaign.definition or {}
        outlines.append(
            SeriesOutline(
                name=campaign.name,
                emails=emails,
                every_seconds=int(definition.get("every_seconds") or 0),
                days=tuple(definition.get("window", {}).get("days") or range(7)),
            )
        )
    return outlines


def public_step(session: Session, slug: str, key: str) -> tuple[Campaign, Step]:
    """The current version of an email anyone may read in a browser (its web view): a step of
    a sequence, or the email of a broadcast that has been sent. A broadcast's content may be
    private until it goes out, so before that it is NotFound, like a campaign or step that
    does not exist (the same answer: nobody learns what is being prepared)."""
    from tidings.campaigns.broadcasts import broadcast_info

    missing = NotFound(f"no public email {key!r} in campaign {slug!r}")
    campaign = session.scalar(select(Campaign).where(Campaign.slug == slug))
    if campaign is None:
        raise missing
    step = session.scalar(
        select(Step).where(
            Step.campaign_id == campaign.id, Step.key == key, Step.position.is_not(None)
        )
    )
    if step is None or not step.compiled:
        raise missing
    private = (
        campaign.kind == CampaignKind.BROADCAST
        and broadcast_info(session, campaign)["state"] != BroadcastPhase.SENT
    )
    if private:
        raise missing
    return campaign, step
