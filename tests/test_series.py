"""The drip series end to end: real SMTP server, real database, a fixed clock driven forward."""

from __future__ import annotations

import itertools
from datetime import timedelta
from zoneinfo import ZoneInfo

from conftest import received, run_for
from sqlalchemy import select

from tidings.campaigns import SHIPPED_DIR
from tidings.campaigns.definition import read_campaign
from tidings.db.models import Delivery, Enrollment
from tidings.subscribers.directory import find_subscriber
from tidings.subscribers.lifecycle import Consent, activate, add_subscriber

NEW_YORK = ZoneInfo("America/New_York")
# The shipped series: the welcome, the client's 14 benefits, the risks email, the closing.
KAP_STEPS = read_campaign(SHIPPED_DIR / "kap-benefits").steps


def test_one_subscriber_receives_the_whole_series_in_order_inside_the_window(
    runtime, worker, kap, clock, smtp_server
):
    # Friday 2026-10-23, 20:00 in New York: signs up outside the window, before a weekend,
    # and the series crosses the end of daylight saving time (Sunday 2026-11-01).
    clock.set(clock.now().replace(day=24, hour=0))
    with runtime.sessions.begin() as session:
        add_subscriber(
            session,
            clock.now(),
            "ann@example.org",
            Consent(source="cli"),
            name="Ann",
            timezone="America/New_York",
            message_domain=runtime.settings.sender_domain,
        )
    worker.tick()
    confirmation = received(smtp_server)
    assert [m["Subject"] for m in confirmation] == ["Please confirm your subscription"]

    # Nothing but the confirmation email while she has not confirmed, for days.
    run_for(worker, clock, timedelta(days=3))
    assert len(received(smtp_server)) == 1

    with runtime.sessions.begin() as session:
        activate(
            session, find_subscriber(session, "ann@example.org"), Consent(source="cli"), clock.now()
        )
    confirmed_at = clock.now()
    run_for(worker, clock, timedelta(days=60))

    series = received(smtp_server)[1:]
    assert len(KAP_STEPS) == 17
    assert len(series) == 17
    with runtime.sessions.begin() as session:
        subjects = [
            s
            for s in session.scalars(
                select(Delivery.step_id).where(Delivery.kind == "step").order_by(Delivery.id)
            )
        ]
    assert len(subjects) == 17
    assert [m["Subject"] for m in series] == [step.subject for step in KAP_STEPS]
    assert series[0]["Subject"] == "Welcome, and what to expect"
    assert series[2]["Subject"] == "Is KAP right for me? Risks, screening and who it is not for"
    assert series[5]["Subject"] == "A note on hope and safety"
    assert series[-1]["Subject"] == "If you would like to learn more"

    sent_at = [m["Date"].datetime for m in series]
    assert sent_at == sorted(sent_at)
    # The welcome goes right after confirming (Monday 20:00 in New York: send_window = false),
    # the other emails inside the window, and none on a US holiday the series crosses.
    assert confirmed_at <= sent_at[0] < confirmed_at + timedelta(minutes=1)
    for earlier, later in itertools.pairwise(sent_at[1:]):
        assert later - earlier >= timedelta(days=2)
    for when in sent_at[1:]:
        local = when.astimezone(NEW_YORK)
        assert local.weekday() < 5, f"sent on a weekend: {local}"
        assert 9 <= local.hour < 17, f"sent outside 09:00-17:00: {local}"
        assert (local.month, local.day) not in {(11, 11), (11, 26)}, f"on a holiday: {local}"
    offsets = {when.astimezone(NEW_YORK).utcoffset() for when in sent_at}
    assert offsets == {timedelta(hours=-4), timedelta(hours=-5)}, "the series crosses DST"

    with runtime.sessions.begin() as session:
        enrollment = session.scalars(select(Enrollment)).one()
        assert enrollment.status == "completed"
