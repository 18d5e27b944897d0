"""Newsletters (broadcasts): scheduled at one instant or at a local time in each reader's
timezone (across a DST change), to an audience, paused, unscheduled, cancelled, planned in
batches that survive a crash, and held back a day when a drip email went out the same day.

Real SMTP server, real databases (SQLite and PostgreSQL), the real CLI, simulated time.
"""

from __future__ import annotations

import secrets
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from cli_helpers import Tidings
from conftest import received, run_for
from sqlalchemy import delete, func, insert, select, update

from tidings.campaigns import broadcast_planning
from tidings.campaigns.broadcast_planning import plan_broadcasts
from tidings.campaigns.broadcasts import schedule_broadcast
from tidings.campaigns.loading import load_campaign
from tidings.clock import FixedClock
from tidings.db.models import BroadcastSchedule, Campaign, Delivery, Subscriber
from tidings.runtime import Runtime
from tidings.scheduler import Worker
from tidings.subscribers.lifecycle import Consent, add_subscriber

NEWSLETTER_TOML = """\
slug = "winter-news"
name = "Winter newsletter"
kind = "broadcast"

[footer]
crisis = "If you are struggling or in crisis, call or text 988, or chat at 988lifeline.org."
crisis_line = "Help is available 24/7: call or text 988."
disclaimer = "Educational information, not medical advice."
risk = "Ketamine treatment has risks and needs medical screening."
reason = "You signed up at {{ sender.organization }}."

[lint]
require = ["crisis", "disclaimer", "risk", "reason"]
"""
NEWSLETTER_EMAIL = """\
+++
subject = "Winter news from the center"
preheader = "Group sessions, and our new evening hours."
+++
## Winter news

Our evening hours start in December.
"""


def write_newsletter(folder: Path, audience: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "campaign.toml").write_text(NEWSLETTER_TOML + audience, encoding="utf-8")
    (folder / "01-winter.md").write_text(NEWSLETTER_EMAIL, encoding="utf-8")
    return folder


@pytest.fixture
def tidings(database_url, smtp_server, tmp_path) -> Tidings:
    """The CLI on this test's database, with the newsletter loaded, at Monday 19 Oct 08:00 UTC."""
    t = Tidings(database_url, smtp_server.url)
    t.ok("campaigns", "load", str(write_newsletter(tmp_path / "winter-news")))
    return t


def add(t: Tidings, email: str, tz: str) -> None:
    t.ok("subscribers", "add", email, "--confirmed", "--evidence", "test", "--timezone", tz)


def arrivals(server) -> dict[str, datetime]:
    """Recipient -> the Date of the newsletter they got (each must get it at most once)."""
    got: dict[str, datetime] = {}
    for message in received(server):
        if message["Subject"] != "Winter news from the center":
            continue
        to = message["To"].addresses[0].addr_spec
        assert to not in got, f"{to} got the newsletter twice"
        got[to] = parsedate_to_datetime(message["Date"]).astimezone(UTC)
    return got


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ----------------------------------------------------------------------------- when


def test_one_instant_in_a_named_timezone_after_its_dst_change(tidings, smtp_server):
    for email, tz in [
        ("paris@example.org", "Europe/Paris"),
        ("ny@example.org", "America/New_York"),
        ("tokyo@example.org", "Asia/Tokyo"),
    ]:
        add(tidings, email, tz)
    # Europe leaves summer time on Sunday 25 October: 10:00 in Paris on the 26th is 09:00 UTC.
    out = tidings.ok(
        "campaigns", "schedule", "winter-news", "--at", "2026-10-26 10:00", "--tz", "Europe/Paris"
    ).output
    assert "2026-10-26 10:00 Europe/Paris (2026-10-26 09:00 UTC)" in out
    assert "3 subscriber(s)" in out

    tidings.at(at("2026-10-26T08:59:00"))
    tidings.ok("send-due")
    assert arrivals(smtp_server) == {}
    tidings.at(at("2026-10-26T09:00:00"))
    tidings.ok("send-due")
    assert set(arrivals(smtp_server).values()) == {at("2026-10-26T09:00:00")}
    assert len(arrivals(smtp_server)) == 3
    show = tidings.json("campaigns", "show", "winter-news")
    assert show["broadcast"]["state"] == "sent" and show["broadcast"]["sent"] == 3


def test_local_time_in_each_timezone_across_a_dst_change(
    runtime, worker, clock, smtp_server, tmp_path
):
    with runtime.sessions.begin() as session:
        load_campaign(session, write_newsletter(tmp_path / "n"), runtime.settings, clock.now())
        for email, tz in [
            ("tokyo@example.org", "Asia/Tokyo"),
            ("paris@example.org", "Europe/Paris"),
            ("london@example.org", "Europe/London"),
            ("ny@example.org", "America/New_York"),
            ("ny2@example.org", "America/New_York"),
        ]:
            add_subscriber(
                session,
                clock.now(),
                email,
                Consent(source="cli", evidence="t"),
                timezone=tz,
                confirmed=True,
                message_domain="center.example.org",
            )
        report = schedule_broadcast(
            session, "winter-news", "2026-10-26 10:00", clock.now(), local_time=True
        )
    assert report.matching == 5

    run_for(worker, clock, timedelta(days=8))
    # 10:00 local on Monday 26 October: Europe has left summer time (Paris UTC+1, London
    # UTC+0), New York has not yet (UTC-4, until 1 November).
    assert arrivals(smtp_server) == {
        "tokyo@example.org": at("2026-10-26T01:00:00"),
        "paris@example.org": at("2026-10-26T09:00:00"),
        "london@example.org": at("2026-10-26T10:00:00"),
        "ny@example.org": at("2026-10-26T14:00:00"),
        "ny2@example.org": at("2026-10-26T14:00:00"),
    }


def test_a_local_time_that_dst_skips_goes_out_just_after_the_gap(tidings):
    out = tidings.ok(
        "campaigns",
        "schedule",
        "winter-news",
        "--at",
        "2027-03-14 02:30",
        "--tz",
        "America/New_York",
    ).output
    # Clocks jump from 02:00 to 03:00 that night: 02:30 does not exist; 03:30 EDT = 07:30 UTC.
    assert "does not exist in America/New_York" in out
    assert "(2027-03-14 07:30 UTC)" in out


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--at", "tomorrow"], "expected a date and time like '2026-12-03 10:00'", 1),
        (
            ["--at", "2026-12-03 10:00", "--tz", "Mars/Olympus"],
            "unknown timezone 'Mars/Olympus'",
            1,
        ),
        (["--at", "2026-10-01 10:00"], "which has passed", 1),
        (["--at", "2026-12-03 10:00", "--tz", "UTC", "--local-time"], "exclude each other", 1),
        (["--at", "2026-12-03 10:00", "--enrolled", "nope"], "no campaign 'nope' is loaded", 1),
        (["--at", "2026-12-03 10:00", "--where", "clinic"], "expected KEY=VALUE", 2),
        (["--at", "2026-12-03 10:00", "--timezone", "Mars/X"], "unknown timezone 'Mars/X'", 2),
    ],
)
def test_bad_schedules_are_refused_with_a_clear_message(tidings, args, message, code):
    output = tidings.fails("campaigns", "schedule", "winter-news", *args, code=code)
    assert message in output
    with tidings.session() as session:
        assert session.scalar(select(func.count()).select_from(BroadcastSchedule)) == 0


def test_a_sequence_cannot_be_scheduled(tidings):
    tidings.ok("campaigns", "load", "kap-benefits")
    assert "only broadcasts are scheduled" in tidings.fails(
        "campaigns", "schedule", "kap-benefits", "--at", "2026-12-03 10:00"
    )


def test_local_time_already_passed_somewhere_is_refused(tidings):
    add(tidings, "kiritimati@example.org", "Pacific/Kiritimati")  # UTC+14
    tidings.at(at("2026-10-19T21:00:00"))  # 11:00 on the 20th in Kiritimati
    output = tidings.fails(
        "campaigns", "schedule", "winter-news", "--at", "2026-10-20 10:00", "--local-time"
    )
    assert "already passed in Pacific/Kiritimati" in output


# ----------------------------------------------------------------------------- never twice


def test_scheduling_again_never_sends_twice_and_reaches_newcomers(tidings, smtp_server):
    add(tidings, "ann@example.org", "UTC")
    add(tidings, "bob@example.org", "UTC")
    schedule = ("campaigns", "schedule", "winter-news", "--at", "2026-10-19 10:00")
    tidings.ok(*schedule)
    assert "already scheduled" in tidings.ok(*schedule).output  # the same again: no change

    tidings.at(at("2026-10-19T10:00:00"))
    tidings.ok("send-due")
    assert set(arrivals(smtp_server)) == {"ann@example.org", "bob@example.org"}

    # Scheduled again later (after someone new subscribed): only the newcomer gets it.
    add(tidings, "cat@example.org", "UTC")
    out = tidings.ok("campaigns", "schedule", "winter-news", "--at", "2026-10-19 12:00").output
    assert "2 subscriber(s) already have it" in out
    tidings.at(at("2026-10-19T12:00:00"))
    tidings.ok("send-due")
    tidings.at(at("2026-10-20T12:00:00"))
    tidings.ok("send-due")
    assert arrivals(smtp_server) == {
        "ann@example.org": at("2026-10-19T10:00:00"),
        "bob@example.org": at("2026-10-19T10:00:00"),
        "cat@example.org": at("2026-10-19T12:00:00"),
    }


def bulk_subscribers(runtime, count: int, tz: str = "UTC") -> list[str]:
    """Active subscribers inserted in a few statements (fast, like an import)."""
    now = runtime.clock.now()
    addresses = [f"reader{i:04d}@example.org" for i in range(count)]
    with runtime.sessions.begin() as session:
        session.execute(
            insert(Subscriber),
            [
                {
                    "email": a,
                    "name": "",
                    "timezone": tz,
                    "status": "active",
                    "key": secrets.token_urlsafe(16),
                    "attributes": {},
                    "created_at": now,
                    "updated_at": now,
                    "confirmed_at": now,
                }
                for a in addresses
            ],
        )
    return addresses


def test_planning_interrupted_by_a_crash_resumes_nobody_twice_nobody_missed(
    runtime, worker, clock, smtp_server, tmp_path, monkeypatch
):
    with runtime.sessions.begin() as session:
        load_campaign(session, write_newsletter(tmp_path / "n"), runtime.settings, clock.now())
    addresses = bulk_subscribers(runtime, 230)
    with runtime.sessions.begin() as session:
        schedule_broadcast(session, "winter-news", "2026-10-19 09:00", clock.now())
    clock.set(at("2026-10-19T09:00:00"))
    small = runtime.settings.replace(batch_size=40)

    # The planner dies while writing its fourth batch (three batches are committed).
    real_write = broadcast_planning._WavePlanner._write
    calls = Counter()

    def dying_write(self, session, step, ids):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("worker killed")
        return real_write(self, session, step, ids)

    monkeypatch.setattr(broadcast_planning._WavePlanner, "_write", dying_write)
    with pytest.raises(RuntimeError, match="worker killed"):
        plan_broadcasts(runtime.sessions, clock.now(), small)
    monkeypatch.undo()

    def planned() -> list[int]:
        with runtime.sessions.begin() as session:
            return list(session.scalars(select(Delivery.subscriber_id)))

    assert len(planned()) == 120  # three whole batches, nothing of the fourth
    # A new pass resumes at the cursor...
    result = plan_broadcasts(runtime.sessions, clock.now(), small)
    assert result.planned == 110
    # ...and even with the cursor lost (a pass replayed from the start), nothing is doubled.
    with runtime.sessions.begin() as session:
        session.execute(
            update(BroadcastSchedule).values(
                state="sending", after_subscriber_id=0, planned_through=None, next_at=clock.now()
            )
        )
    assert plan_broadcasts(runtime.sessions, clock.now(), small).planned == 0
    ids = planned()
    assert len(ids) == len(set(ids)) == 230

    worker.tick()
    assert sorted(arrivals(smtp_server)) == addresses


# ----------------------------------------------------------------------------- audience


def test_audience_filters_attributes_timezones_and_enrollment(tidings, smtp_server):
    # (The series' welcome email goes out in between: not holding the newsletter for it
    # keeps this test about who gets it; the gap has a test of its own below.)
    tidings.env["TIDINGS_NEWSLETTER_AFTER_DRIP"] = "send"
    with tidings.session() as session:  # before the series existed: not enrolled in it
        for email, tz, clinic in [
            ("old-portland@example.org", "America/Los_Angeles", "portland"),
            ("old-salem@example.org", "America/Los_Angeles", "salem"),
            ("old-paris@example.org", "Europe/Paris", "portland"),
        ]:
            add_subscriber(
                session,
                at("2026-10-19T08:00:00"),
                email,
                Consent(source="cli", evidence="t"),
                timezone=tz,
                confirmed=True,
                message_domain="center.example.org",
            )
            session.execute(
                update(Subscriber)
                .where(Subscriber.email == email)
                .values(attributes={"clinic": clinic})
            )
    tidings.ok("campaigns", "load", "kap-benefits")  # those added from now on are enrolled
    add(tidings, "in-kap-portland@example.org", "America/Los_Angeles")
    with tidings.session() as session:
        session.execute(
            update(Subscriber)
            .where(Subscriber.email.like("in-kap-portland%"))
            .values(attributes={"clinic": "portland"})
        )

    out = tidings.ok(
        "campaigns",
        "schedule",
        "winter-news",
        "--at",
        "2026-10-20 18:00",
        "--where",
        "clinic=portland",
        "--timezone",
        "America/*",
        "--not-enrolled",
        "kap-benefits",
    ).output
    assert "1 subscriber(s)" in out
    tidings.at(at("2026-10-20T18:00:00"))
    tidings.ok("send-due")
    assert set(arrivals(smtp_server)) == {"old-portland@example.org"}

    # Those in the series, wherever they are.
    smtp_server.handler.messages.clear()
    tidings.ok("campaigns", "unschedule", "winter-news")
    with tidings.session() as session:  # start over: nobody has it
        session.execute(
            delete(Delivery).where(
                Delivery.campaign_id.in_(select(Campaign.id).where(Campaign.slug == "winter-news"))
            )
        )
    tidings.ok(
        "campaigns",
        "schedule",
        "winter-news",
        "--at",
        "2026-10-20 19:00",
        "--enrolled",
        "kap-benefits",
    )
    tidings.at(at("2026-10-20T19:00:00"))
    tidings.ok("send-due")
    assert set(arrivals(smtp_server)) == {"in-kap-portland@example.org"}


def test_the_audience_in_campaign_toml(database_url, smtp_server, tmp_path):
    t = Tidings(database_url, smtp_server.url)
    folder = write_newsletter(
        tmp_path / "n",
        audience=textwrap.dedent("""
        [audience]
        timezones = ["Europe/*"]
        """),
    )
    t.ok("campaigns", "load", str(folder))
    add(t, "paris@example.org", "Europe/Paris")
    add(t, "ny@example.org", "America/New_York")
    out = t.ok("campaigns", "schedule", "winter-news", "--at", "2026-10-19 10:00").output
    assert "timezone Europe/*" in out and "1 subscriber(s)" in out
    t.at(at("2026-10-19T10:00:00"))
    t.ok("send-due")
    assert set(arrivals(smtp_server)) == {"paris@example.org"}


def test_a_bad_audience_in_campaign_toml_names_its_line(database_url, smtp_server, tmp_path):
    t = Tidings(database_url, smtp_server.url)
    folder = write_newsletter(tmp_path / "n", audience='\n[audience]\ntimezones = ["Mars/X"]\n')
    output = t.fails("campaigns", "load", str(folder))
    assert "campaign.toml:16: audience.timezones: unknown timezone 'Mars/X'" in output


# ----------------------------------------------------------------------------- control


def plan_only(t: Tidings, when: datetime) -> None:
    """Plan what is due at `when` without sending it (as a worker between its two stages)."""
    with Runtime.open(t.settings(), FixedClock(when)) as runtime:
        Worker(runtime).plan()


def test_pause_resume_unschedule_and_cancel(tidings, smtp_server):
    add(tidings, "ann@example.org", "UTC")
    tidings.ok("campaigns", "schedule", "winter-news", "--at", "2026-10-19 10:00")

    # Paused at its time: nothing goes; resumed: it goes.
    tidings.ok("campaigns", "pause", "winter-news")
    tidings.at(at("2026-10-19T10:00:00"))
    tidings.ok("send-due")
    assert arrivals(smtp_server) == {}
    tidings.ok("campaigns", "resume", "winter-news")
    tidings.at(at("2026-10-19T10:05:00"))
    tidings.ok("send-due")
    assert set(arrivals(smtp_server)) == {"ann@example.org"}

    # Scheduled again for a newcomer, planned, then unscheduled before it went out: the
    # queued email is taken back and nothing is sent.
    add(tidings, "bob@example.org", "UTC")
    tidings.ok("campaigns", "schedule", "winter-news", "--at", "2026-10-19 11:00")
    plan_only(tidings, at("2026-10-19T11:00:00"))
    out = tidings.ok("campaigns", "unschedule", "winter-news").output
    assert "1 queued email(s) taken back" in out and "1 sent stay sent" in out
    tidings.at(at("2026-10-19T11:00:00"))
    tidings.ok("send-due")
    assert set(arrivals(smtp_server)) == {"ann@example.org"}
    assert "not scheduled" in tidings.fails("campaigns", "unschedule", "winter-news")

    # Scheduled again, planned, then cancelled: what was queued is skipped, for good.
    tidings.ok("campaigns", "schedule", "winter-news", "--at", "2026-10-19 12:00")
    plan_only(tidings, at("2026-10-19T12:00:00"))
    out = tidings.ok("campaigns", "cancel", "winter-news").output
    assert "1 queued email(s) skipped" in out
    tidings.at(at("2026-10-19T12:00:00"))
    tidings.ok("send-due")
    assert set(arrivals(smtp_server)) == {"ann@example.org"}
    assert "was cancelled" in tidings.fails(
        "campaigns", "schedule", "winter-news", "--at", "2026-10-20 12:00"
    )
    assert tidings.json("campaigns", "show", "winter-news")["broadcast"]["state"] == "cancelled"


# ----------------------------------------------------------------------------- drip gap


@pytest.mark.parametrize(
    ("mode", "expected"), [("wait", "2026-10-20T09:00:00"), ("send", "2026-10-19T14:00:00")]
)
def test_a_newsletter_waits_a_day_after_a_drip_email_or_goes_by_config(
    tidings, smtp_server, mode, expected
):
    tidings.env["TIDINGS_NEWSLETTER_AFTER_DRIP"] = mode
    add(tidings, "no-series@example.org", "UTC")  # before the series was loaded
    tidings.ok("campaigns", "load", "kap-benefits")
    add(tidings, "in-series@example.org", "UTC")  # its welcome email goes at 09:00 (window)
    tidings.at(at("2026-10-19T09:00:00"))
    tidings.ok("send-due")
    tidings.ok("campaigns", "schedule", "winter-news", "--at", "2026-10-19 14:00")
    for hour in ("2026-10-19T14:00:00", "2026-10-20T09:00:00", "2026-10-21T09:00:00"):
        tidings.at(at(hour))
        tidings.ok("send-due")
    assert arrivals(smtp_server) == {
        "no-series@example.org": at("2026-10-19T14:00:00"),
        "in-series@example.org": at(expected),
    }
    series = [
        parsedate_to_datetime(m["Date"])
        for m in received(smtp_server)
        if m["Subject"] != "Winter news from the center"
    ]
    assert series == [at("2026-10-19T09:00:00"), at("2026-10-21T09:00:00")]
