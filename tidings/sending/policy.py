"""The decisions of sending, as pure functions: no database, no network, no clock of their own.

- may this claimed email go at all (`reason_not_to_send`), and may it go now (`send_after`);
- what an SMTP outcome means for its ledger row (`decide`): sent, retried when, or given up;
- how long to wait before a retry (`backoff`), and whether to wait for a server's cap.

The dispatcher asks; `ledger` writes what they answer.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from tidings.campaigns.windows import SendWindow, next_send_time
from tidings.states import (
    CampaignStatus,
    DeliveryKind,
    DeliveryStatus,
    SendOutcome,
    StopReason,
    SubscriberStatus,
)

RETRY_BASE_SECONDS = 60.0
RETRY_MAX_DELAY_SECONDS = 3600.0
# When a server's cap frees up within this many (real) seconds, wait for it instead of
# putting the messages back in the queue.
MAX_RATE_WAIT_SECONDS = 5.0
REPLY_MAX_CHARS = 1000


@dataclass(frozen=True)
class Recheck:
    """What is true at send time about a claimed delivery and its reader."""

    kind: str  # DeliveryKind
    subscriber_status: str  # SubscriberStatus
    suppression: str | None  # the reason the address is suppressed, if it is
    left_campaign: bool  # their enrollment in the campaign has ended


def reason_not_to_send(check: Recheck) -> str | None:
    """Why this email must not go (it is then skipped for good), or None."""
    if check.kind == DeliveryKind.COMEBACK:
        # To someone who unsubscribed (and is suppressed for that alone), and only while they
        # still are: the email offers them the way back.
        if check.subscriber_status != SubscriberStatus.UNSUBSCRIBED:
            return f"skipped: subscriber is {check.subscriber_status}, no come-back needed"
        if check.suppression not in (None, StopReason.UNSUBSCRIBE):
            return "skipped: address is suppressed"
        return None
    # Pending with only an unsubscribe suppression: someone who asked to come back before
    # the come-back email existed (schema 0006); their confirmation lifts the suppression.
    coming_back = (
        check.suppression == StopReason.UNSUBSCRIBE
        and check.kind == DeliveryKind.CONFIRMATION
        and check.subscriber_status == SubscriberStatus.PENDING
    )
    if check.suppression is not None and not coming_back:
        return "skipped: address is suppressed"
    if check.kind == DeliveryKind.CONFIRMATION:
        if check.subscriber_status != SubscriberStatus.PENDING:
            return f"skipped: subscriber is {check.subscriber_status}, no confirmation needed"
        return None
    if check.subscriber_status != SubscriberStatus.ACTIVE:
        return f"skipped: subscriber is {check.subscriber_status}"
    if check.left_campaign:
        return "skipped: subscriber left the campaign"
    return None


def send_after(
    campaign_status: str,
    window: SendWindow,
    tz: ZoneInfo,
    paused_until: datetime | None,
    now: datetime,
) -> datetime | None:
    """When a campaign email may go if not now (campaign paused, reader pausing, send window
    closed), or None if it may go now."""
    if campaign_status != CampaignStatus.ACTIVE:
        return now  # not claimed again until the campaign is resumed
    at = next_send_time(window, tz, now, paused_until)
    return at if at > now else None


def backoff(attempts: int, jitter: Callable[[float, float], float] = random.uniform) -> float:
    """Real seconds before the next try: 1 minute doubling to 1 hour, +-20% so that retries
    of one failed batch spread out."""
    delay = min(RETRY_MAX_DELAY_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return delay * jitter(0.8, 1.2)


@dataclass(frozen=True)
class Decision:
    """What to write on a delivery after an attempt."""

    status: DeliveryStatus
    outcome: str  # the server's reply, or why we gave up
    next_attempt_at: datetime | None = None  # retries only
    sent_at: datetime | None = None

    @property
    def ends_step(self) -> bool:
        """The reader's sequence may move on (sent, or given up for good)."""
        return self.status in (DeliveryStatus.SENT, DeliveryStatus.FAILED)


def decide(
    outcome: SendOutcome,
    reply: str,
    attempts: int,
    queued_at: datetime,
    now: datetime,
    max_age: timedelta,
    retry_in: timedelta,
) -> Decision:
    """An attempt's outcome as a ledger change. A temporary failure is retried in `retry_in`
    until the email has waited `max_age` since it was queued; then it has failed."""
    reply = reply[:REPLY_MAX_CHARS]
    if outcome == SendOutcome.SENT:
        return Decision(DeliveryStatus.SENT, reply, sent_at=now)
    if outcome == SendOutcome.BOUNCED:
        return Decision(DeliveryStatus.BOUNCED, reply)
    if outcome == SendOutcome.RETRY:
        if now - queued_at < max_age:
            return Decision(DeliveryStatus.RETRY, reply, next_attempt_at=now + retry_in)
        reply = f"gave up after {attempts} attempts: {reply}"[:REPLY_MAX_CHARS]
    return Decision(DeliveryStatus.FAILED, reply)


def wait_for_capacity(retry_at: datetime | None, now: datetime, longest_wait: timedelta) -> bool:
    """A server's cap is reached: wait for it (True) if it frees up soon enough, else put the
    emails back in the queue until it does."""
    return retry_at is not None and retry_at - now <= longest_wait
