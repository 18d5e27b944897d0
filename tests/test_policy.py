"""The decisions of sending (tidings.sending.policy), as pure functions: no database, no
network, no clock but the instants given."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from tidings.campaigns.windows import SendWindow
from tidings.config import Settings
from tidings.sending import policy
from tidings.sending.bounces import pause_reason
from tidings.sending.policy import Recheck
from tidings.states import DeliveryStatus, SendOutcome

MONDAY_10 = datetime(2026, 10, 19, 10, 0, tzinfo=UTC)
WINDOW = SendWindow(time(9), time(17), frozenset(range(5)))  # 09:00-17:00, Monday to Friday
UTC_ZONE = ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("check", "why"),
    [
        (Recheck("step", "active", None, False), None),
        (Recheck("step", "active", "unsubscribe", False), "skipped: address is suppressed"),
        (Recheck("step", "unsubscribed", None, False), "skipped: subscriber is unsubscribed"),
        (Recheck("step", "pending", None, False), "skipped: subscriber is pending"),
        (Recheck("step", "active", None, True), "skipped: subscriber left the campaign"),
        (Recheck("confirmation", "pending", None, False), None),
        # Someone who left and asked to come back gets the email that lets them back in...
        (Recheck("confirmation", "pending", "unsubscribe", False), None),
        # ...but no address suppressed for another reason gets anything.
        (
            Recheck("confirmation", "pending", "hard-bounce", False),
            "skipped: address is suppressed",
        ),
        (
            Recheck("confirmation", "active", None, False),
            "skipped: subscriber is active, no confirmation needed",
        ),
    ],
)
def test_reason_not_to_send(check, why):
    assert policy.reason_not_to_send(check) == why


def test_send_after_follows_the_campaign_the_window_and_the_readers_pause():
    now = MONDAY_10
    assert policy.send_after("active", WINDOW, UTC_ZONE, None, now) is None
    assert policy.send_after("paused", WINDOW, UTC_ZONE, None, now) == now, "waits for a resume"
    evening = now.replace(hour=18)
    assert policy.send_after("active", WINDOW, UTC_ZONE, None, evening) == datetime(
        2026, 10, 20, 9, 0, tzinfo=UTC
    ), "the next opening"
    until = now + timedelta(days=4, hours=3)  # Friday 13:00
    assert policy.send_after("active", WINDOW, UTC_ZONE, until, now) == until
    saturday = now + timedelta(days=5)
    assert policy.send_after("active", WINDOW, UTC_ZONE, saturday, now) == datetime(
        2026, 10, 26, 9, 0, tzinfo=UTC
    ), "a pause ending on Saturday: Monday's opening"
    tokyo = ZoneInfo("Asia/Tokyo")  # 10:00 UTC is 19:00 there: closed until 09:00 local
    assert policy.send_after("active", WINDOW, tokyo, None, now) == datetime(
        2026, 10, 20, 0, 0, tzinfo=UTC
    )


def test_an_outcome_becomes_a_ledger_change():
    queued, now, day = MONDAY_10, MONDAY_10 + timedelta(hours=1), timedelta(days=3)
    sent = policy.decide(SendOutcome.SENT, "250 ok", 1, queued, now, day, timedelta(minutes=1))
    assert (sent.status, sent.sent_at, sent.ends_step) == (DeliveryStatus.SENT, now, True)
    retry = policy.decide(SendOutcome.RETRY, "451 later", 2, queued, now, day, timedelta(minutes=2))
    assert retry.status == DeliveryStatus.RETRY and not retry.ends_step
    assert retry.next_attempt_at == now + timedelta(minutes=2)
    late = now + day
    gave_up = policy.decide(SendOutcome.RETRY, "451 later", 9, queued, late, day, timedelta(1))
    assert gave_up.status == DeliveryStatus.FAILED and gave_up.ends_step
    assert gave_up.outcome == "gave up after 9 attempts: 451 later"
    bounced = policy.decide(SendOutcome.BOUNCED, "550 5.1.1", 1, queued, now, day, timedelta(0))
    assert (bounced.status, bounced.ends_step) == (DeliveryStatus.BOUNCED, False)
    failed = policy.decide(SendOutcome.FAILED, "554 5.7.1 spam", 1, queued, now, day, timedelta(0))
    assert (failed.status, failed.ends_step) == (DeliveryStatus.FAILED, True)
    long_reply = "5" * 5000
    assert len(policy.decide(SendOutcome.FAILED, long_reply, 1, queued, now, day, day).outcome) == (
        policy.REPLY_MAX_CHARS
    )


def test_backoff_doubles_from_a_minute_to_an_hour_with_jitter():
    exact = [policy.backoff(n, jitter=lambda a, b: 1.0) for n in (1, 2, 3, 7, 20)]
    assert exact == [60.0, 120.0, 240.0, 3600.0, 3600.0]
    spread = [policy.backoff(1) for _ in range(200)]
    assert 48 <= min(spread) < max(spread) <= 72, "+-20%, so retries of one batch spread out"


def test_waiting_for_a_servers_cap_only_when_it_frees_up_soon():
    now, soon = MONDAY_10, timedelta(seconds=5)
    assert policy.wait_for_capacity(now + timedelta(seconds=3), now, soon)
    assert not policy.wait_for_capacity(now + timedelta(minutes=1), now, soon)
    assert not policy.wait_for_capacity(None, now, soon), "no server will have room"


def test_a_campaign_pauses_when_its_bounces_reach_the_limit_of_the_full_window():
    settings = Settings(bounce_pause_sends=50, bounce_pause_ratio=0.05)
    assert pause_reason(2, settings, MONDAY_10) is None, "2 of 50 is under 5%"
    reason = pause_reason(3, settings, MONDAY_10)
    assert reason is not None
    assert "3 hard bounces in the last 50 sends (6%, the limit is 5%)" in reason
