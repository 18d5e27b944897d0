"""What bounces mean for sending: a campaign whose recent sends bounce too often pauses
itself, before mailbox providers start treating everything from the sender as spam."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tidings.config import Settings
from tidings.db.models import Campaign, Delivery
from tidings.states import CampaignStatus, DeliveryStatus

log = logging.getLogger(__name__)


def check_bounce_rate(
    session: Session, campaign_id: int, settings: Settings, now: datetime
) -> str | None:
    """Pause a campaign whose last N sends hold too many hard bounces. Returns its slug if
    this call paused it. Only sends since the last resume count: an operator who resumed has
    seen the earlier ones."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.status != CampaignStatus.ACTIVE:
        return None
    window = settings.bounce_pause_sends
    recent = (
        select(Delivery.status)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.id > campaign.bounce_check_after_id,
            Delivery.status.in_((DeliveryStatus.SENT, DeliveryStatus.BOUNCED)),
        )
        .order_by(Delivery.id.desc())
        .limit(window)
        .subquery()
    )
    bounced = (
        session.scalar(
            select(func.count())
            .select_from(recent)
            .where(recent.c.status == DeliveryStatus.BOUNCED)
        )
        or 0
    )
    # Measured against the full window, so a handful of early sends cannot trip it.
    if bounced / window < settings.bounce_pause_ratio:
        return None
    campaign.status = CampaignStatus.PAUSED
    campaign.status_reason = (
        f"paused automatically {now:%Y-%m-%d %H:%M} UTC: {bounced} hard bounces in the "
        f"last {window} sends ({bounced / window:.0%}, the limit is "
        f"{settings.bounce_pause_ratio:.0%}); check the list, then `tidings campaigns resume`"
    )
    log.error(
        "campaign %s paused: %d hard bounces in its last %d sends", campaign.slug, bounced, window
    )
    return campaign.slug
