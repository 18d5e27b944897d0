"""The cadence a reader sees: the welcome right after confirming (a step with
`send_window = false`), the other emails inside the window, and no email on a public holiday
of the reader's country (or of the campaign's, when their timezone names none).
Real SMTP server, real database (SQLite and PostgreSQL), a fixed clock driven forward."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import received, run_for
from sqlalchemy import select

from tidings.campaigns import calendars
from tidings.campaigns.definition import read_campaign
from tidings.campaigns.loading import load_campaign, resolve_campaign_dir
from tidings.campaigns.windows import SendWindow, next_send_time, stored_window
from tidings.db.models import Step
from tidings.errors import CampaignError
from tidings.subscribers.directory import find_subscriber
from tidings.subscribers.lifecycle import Consent, activate, add_subscriber

NEW_YORK = ZoneInfo("America/New_York")
KAP_WINDOW = {"start": "09:00:00", "end": "17:00:00", "days": [0, 1, 2, 3, 4]}
US_WINDOW = stored_window({"window": {**KAP_WINDOW, "skip_holidays": "US"}})


def local(when: datetime, zone: str) -> datetime:
    return when.astimezone(ZoneInfo(zone))


def at(zone: str, *args: int) -> datetime:
    """A wall-clock time in `zone`, as UTC."""
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)  # type: ignore[misc]


def sign_up_and_confirm(runtime, address: str, timezone: str) -> datetime:
    with runtime.sessions.begin() as session:
        add_subscriber(
            session,
            runtime.clock.now(),
            address,
            Consent(source="cli"),
            name="Ann Reader",
            timezone=timezone,
            message_domain=runtime.settings.sender_domain,
        )
    with runtime.sessions.begin() as session:
        activate(
            session, find_subscriber(session, address), Consent(source="cli"), runtime.clock.now()
        )
    return runtime.clock.now()


def series_of(smtp_server, address: str) -> list:
    return [
        m
        for m in received(smtp_server)
        if m["To"].addresses[0].addr_spec == address and "confirm" not in m["Subject"].lower()
    ]


# ------------------------------------------------------------------- the welcome goes at once


def test_the_shipped_welcome_is_not_held_to_the_window_and_the_campaign_skips_us_holidays():
    definition = read_campaign(resolve_campaign_dir("kap-benefits"))
    assert definition.steps[0].key == "welcome"
    assert definition.steps[0].send_window is False
    assert all(step.send_window for step in definition.steps[1:])
    assert definition.skip_holidays == "US"


def test_a_welcome_confirmed_on_saturday_night_arrives_at_the_next_pass(
    runtime, worker, kap, clock, smtp_server
):
    # Saturday 2026-10-24, 23:30 in New York: outside the window, before a weekend.
    clock.set(at("America/New_York", 2026, 10, 24, 23, 30))
    confirmed_at = sign_up_and_confirm(runtime, "ann@example.org", "America/New_York")
    worker.tick()
    [welcome] = series_of(smtp_server, "ann@example.org")
    assert welcome["Subject"] == "Welcome, and what to expect"
    sent = welcome["Date"].datetime
    assert confirmed_at <= sent < confirmed_at + timedelta(minutes=1)
    assert local(sent, "America/New_York").strftime("%a %H:%M") == "Sat 23:30"

    # The next email: its delay after the welcome (Monday 23:30), then the window's opening.
    run_for(worker, clock, timedelta(days=5))
    series = series_of(smtp_server, "ann@example.org")
    assert len(series) >= 2
    second = local(series[1]["Date"].datetime, "America/New_York")
    assert second.strftime("%a %Y-%m-%d %H:%M") == "Tue 2026-10-27 09:00"
    with runtime.sessions.begin() as session:
        flags = dict(session.execute(select(Step.key, Step.send_window)).all())
    assert flags.pop("welcome") is False and all(flags.values())


INSTANT_SECOND = """\
+++
subject = "Second, at once"
delay = "1d"
send_window = false
+++
Sent a day after the first, whatever the hour.
"""


def test_a_later_step_not_held_to_the_window_goes_its_delay_after_the_previous_one(
    runtime, worker, clock, smtp_server, tmp_path: Path
):
    folder = tmp_path / "two"
    folder.mkdir()
    (folder / "campaign.toml").write_text(
        'slug = "two"\nname = "Two"\n[schedule]\nwindow = "09:00-17:00"\ndays = "mon-fri"\n'
        '[footer]\nreason = "You signed up."\n'
    )
    (folder / "01-first.md").write_text('+++\nsubject = "First"\n+++\nThe first email.\n')
    (folder / "02-second.md").write_text(INSTANT_SECOND)
    (folder / "03-third.md").write_text('+++\nsubject = "Third"\ndelay = "1h"\n+++\nThird.\n')
    # Friday 2026-10-23, 16:00 UTC: the first email inside the window, the second a day
    # later on Saturday at 16:00, the third an hour after that but only on Monday at 09:00.
    clock.set(datetime(2026, 10, 23, 16, 0, tzinfo=UTC))
    with runtime.sessions.begin() as session:
        load_campaign(session, folder, runtime.settings, clock.now())
    sign_up_and_confirm(runtime, "bo@example.org", "UTC")
    run_for(worker, clock, timedelta(days=4), max_step=timedelta(hours=1))
    dates = [
        m["Date"].datetime.strftime("%a %H:%M") for m in series_of(smtp_server, "bo@example.org")
    ]
    assert dates == ["Fri 16:00", "Sat 16:00", "Mon 09:00"]


# ------------------------------------------------------------------- holidays, in the engine


@pytest.mark.parametrize(
    ("zone", "second_email"),
    [
        # 25 December is a Friday: New York's next working day is Monday the 28th...
        ("America/New_York", "Mon 2026-12-28 09:00"),
        # ...London also keeps Boxing Day, observed on Monday the 28th...
        ("Europe/London", "Tue 2026-12-29 09:00"),
        # ...in Tokyo 25 December is a working day...
        ("Asia/Tokyo", "Fri 2026-12-25 10:00"),
        # ...and a reader whose timezone names no country keeps the campaign's (US) holidays.
        ("UTC", "Mon 2026-12-28 09:00"),
    ],
)
def test_an_email_due_on_a_holiday_waits_for_the_next_working_day_of_the_readers_country(
    runtime, worker, kap, clock, smtp_server, zone, second_email
):
    # Wednesday 23 December, 10:00 in the reader's timezone: the welcome at once, the next
    # email due two days later, on Christmas Day.
    clock.set(at(zone, 2026, 12, 23, 10, 0))
    sign_up_and_confirm(runtime, "cy@example.org", zone)
    run_for(worker, clock, timedelta(days=8), max_step=timedelta(hours=2))
    series = series_of(smtp_server, "cy@example.org")
    assert local(series[0]["Date"].datetime, zone).strftime("%a %m-%d %H:%M") == "Wed 12-23 10:00"
    assert local(series[1]["Date"].datetime, zone).strftime("%a %Y-%m-%d %H:%M") == second_email


def test_on_christmas_morning_an_email_may_not_go_and_goes_at_the_next_opening():
    """The rule the planner and the dispatcher's re-check both ask."""
    christmas = at("America/New_York", 2026, 12, 25, 10, 0)
    assert not US_WINDOW.contains(christmas, NEW_YORK)
    assert next_send_time(US_WINDOW, NEW_YORK, christmas) == at(
        "America/New_York", 2026, 12, 28, 9, 0
    )


# ------------------------------------------------------------------- the rule itself


@pytest.mark.parametrize(
    ("zone", "country"),
    [
        ("America/New_York", "US"),
        ("America/Los_Angeles", "US"),
        ("Europe/London", "GB"),
        ("Europe/Berlin", "DE"),
        ("Europe/Vaduz", "LI"),  # a country's own name for a zone it shares (Zurich)
        ("Australia/Sydney", "AU"),
        ("US/Eastern", "US"),  # old names follow their link
        ("Asia/Calcutta", "IN"),
        ("Japan", "JP"),
        ("UTC", None),
        ("Etc/GMT+5", None),
        ("EST", None),  # an abbreviation, though a link to America/Panama
        ("CET", None),
    ],
)
def test_a_timezone_is_placed_in_its_country_by_the_tz_tables(zone, country):
    assert calendars.zone_country(zone) == country


def test_the_tz_tables_are_the_tzdata_wheels():
    assert "America/New_York" in calendars._tz_file("zone.tab")
    assert "L America/New_York US/Eastern" in calendars._tz_file("tzdata.zi")


@pytest.mark.parametrize(
    ("zone", "campaign", "day", "holiday"),
    [
        ("America/Chicago", "US", date(2026, 11, 26), True),  # Thanksgiving
        ("Europe/Berlin", "US", date(2026, 11, 26), False),  # not in Germany
        ("Europe/Berlin", "US", date(2026, 10, 3), True),  # German Unity Day
        ("UTC", "US", date(2026, 7, 3), True),  # Independence Day, observed on the Friday
        ("UTC", "GB", date(2026, 7, 3), False),
        ("America/New_York", "US", date(2027, 1, 1), True),
        ("America/New_York", "US", date(2026, 12, 24), False),
    ],
)
def test_holidays_are_the_readers_countrys_or_the_campaigns(zone, campaign, day, holiday):
    window = SendWindow(skip_holidays=campaign)
    assert window.is_holiday(day, ZoneInfo(zone)) is holiday


def test_a_window_without_skip_holidays_sends_on_christmas():
    window = stored_window({"window": KAP_WINDOW})
    christmas = at("America/New_York", 2026, 12, 25, 10, 0)
    assert next_send_time(window, NEW_YORK, christmas) == christmas


def test_holiday_dates_are_computed_once_per_country_and_year(monkeypatch):
    import holidays

    made: list[tuple[str, object]] = []
    real = holidays.country_holidays

    def counting(country, years=None, **kwargs):
        made.append((country, years))
        return real(country, years=years, **kwargs)

    monkeypatch.setattr(holidays, "country_holidays", counting)
    calendars.holiday_dates.cache_clear()
    window = SendWindow(skip_holidays="US")
    start = datetime(2026, 12, 20, 12, 0, tzinfo=UTC)
    for hour in range(24 * 30):  # a month of planning, hour by hour, for two readers
        for zone in (NEW_YORK, ZoneInfo("UTC")):
            next_send_time(window, zone, start + timedelta(hours=hour))
    assert sorted(made) == [("US", 2026), ("US", 2027)]


def test_an_unknown_holiday_country_is_refused_with_its_line(tmp_path: Path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "campaign.toml").write_text(
        'slug = "bad"\n[schedule]\nskip_holidays = "QQ"\n[footer]\nreason = "Signed up."\n'
    )
    (folder / "01-one.md").write_text('+++\nsubject = "One"\n+++\nOne.\n')
    with pytest.raises(CampaignError) as caught:
        read_campaign(folder)
    assert caught.value.problems == [
        "campaign.toml:3: skip_holidays: the holidays package knows no country 'QQ'"
    ]
