"""`tidings demo`: the shipped KAP series, end to end, on a scaled clock.

Everything is real: a SQLite file migrated by Alembic, the campaign loaded from its folder,
APScheduler ticking, SMTP delivery to an aiosmtpd server on loopback that stores each message
in a Maildir. Only time is fast: one simulated day per `day_seconds` real seconds, from the
latest 1 December: the series runs across Christmas and New Year, and shows them skipped.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from tidings.campaigns.definition import read_campaign
from tidings.campaigns.loading import load_campaign, resolve_campaign_dir
from tidings.clock import FixedClock, RealClock, ScaledClock, zone_or_utc
from tidings.config import Settings
from tidings.db import upgrade
from tidings.db.models import Delivery, Enrollment, Step, Subscriber
from tidings.runtime import Runtime
from tidings.scheduler import Worker
from tidings.sending.devsmtp import LocalSMTPServer, MaildirHandler
from tidings.states import UNFINISHED, DeliveryKind, DeliveryStatus, EnrollmentStatus
from tidings.subscribers.lifecycle import Consent, add_subscriber

if TYPE_CHECKING:
    from tidings.web.server import WebServer

DEMO_CAMPAIGN = "kap-benefits"
DEMO_TIMEZONES = (
    "America/New_York",
    "Europe/London",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Chicago",
)
DEMO_NAMES = (
    "Alex Rivera",
    "Sam Okafor",
    "Jordan Lee",
    "Maria Schmidt",
    "Kenji Watanabe",
    "Priya Natarajan",
)
# A series of 16 emails two weekdays apart takes about 6 weeks with holidays; allow twice that.
MAX_SIMULATED_DAYS = 80
# The demo readers confirm at noon UTC (early morning in America, evening in Asia): their
# welcome goes at once, the other emails inside each one's send window.
DEMO_START_HOUR = 12


def demo_start(today: date) -> datetime:
    """Where simulated time starts: the latest 1 December on or before `today`, so the series
    crosses 25 December and 1 January whatever the day the demo is run."""
    year = today.year if today.month == 12 else today.year - 1
    return datetime(year, 12, 1, DEMO_START_HOUR, tzinfo=UTC)


@dataclass
class DemoSummary:
    finished: bool
    delivered: int
    expected: int
    outbox: Path
    message: str


def demo_settings(
    directory: Path, smtp_url: str, day_seconds: float, base_url: str = "http://localhost:8000"
) -> Settings:
    return Settings(
        database_url=f"sqlite:///{directory / 'tidings.db'}",
        transport="smtp",
        smtp_url=smtp_url,
        smtp_pool_size=2,
        base_url=base_url,
        from_address="kap-series@counseling-center.example",
        from_name="Center for Counseling and Conscious Healing",
        organization="Center for Counseling and Conscious Healing",
        postal_address="100 Example Street, Springfield, USA (demo address)",
        # Ticks far shorter than the 8-hour send window, in real seconds.
        tick_seconds=min(1.0, day_seconds / 200),
    )


# Long: the demo as a script, top to bottom, as a newcomer reads it.
def run_demo(
    directory: Path,
    count: int,
    day_seconds: float,
    echo: Callable[[str], None] = print,
    start: datetime | None = None,
    serve: Callable[[Runtime], None] | None = None,
    base_url: str = "http://localhost:8000",
) -> DemoSummary:
    """`start`: the first simulated moment (default: demo_start of today). `serve`: called
    once the series is done, with a runtime on the demo's database (its clock stopped at the
    demo's last moment, its SMTP server still storing into the outbox), e.g. to keep the
    staff console open; the demo ends when it returns."""
    directory = directory.resolve()
    for leftover in ("tidings.db", "tidings.db-wal", "tidings.db-shm"):
        (directory / leftover).unlink(missing_ok=True)
    shutil.rmtree(directory / "outbox", ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    outbox = directory / "outbox"

    with LocalSMTPServer(MaildirHandler(outbox)) as smtp:
        settings = demo_settings(directory, smtp.url, day_seconds, base_url)
        upgrade(settings.database_url)
        start = start or demo_start(RealClock().now().date())
        with Runtime.open(settings, FixedClock(start)) as runtime:
            with runtime.sessions.begin() as session:
                load_campaign(session, resolve_campaign_dir(DEMO_CAMPAIGN), settings, start)
                for i in range(count):
                    add_subscriber(
                        session,
                        start,
                        f"reader{i + 1}@demo.example",
                        Consent(source="demo", evidence="demo"),
                        name=DEMO_NAMES[i % len(DEMO_NAMES)],
                        timezone=DEMO_TIMEZONES[i % len(DEMO_TIMEZONES)],
                        confirmed=True,
                        message_domain=settings.sender_domain,
                    )
                steps = (
                    session.scalar(
                        select(func.count()).select_from(Step).where(Step.position.is_not(None))
                    )
                    or 0
                )
            expected = steps * count
            echo(
                f"Demo: {count} subscribers, {steps} emails each, one simulated day every "
                f"{day_seconds:g}s from {start:%a %Y-%m-%d}; SMTP server on {smtp.url}"
            )
            # Simulated time starts now that everything is set up.
            clock = runtime.clock = ScaledClock(start, 86400 / day_seconds)
            worker = Worker(runtime)
            worker.start()
            try:
                finished, delivered = _watch(runtime, clock, expected, day_seconds, echo)
            finally:
                worker.shutdown()
            ended = clock.now()

    new_dir = outbox / "new"
    if not finished:
        return DemoSummary(
            False,
            delivered,
            expected,
            outbox,
            f"the demo did not finish: {delivered} of {expected} emails after "
            f"{MAX_SIMULATED_DAYS} simulated days",
        )
    first = min(new_dir.iterdir(), default=None)
    echo(f"\nDone: {delivered} emails delivered to {new_dir}/")
    country = read_campaign(resolve_campaign_dir(DEMO_CAMPAIGN)).skip_holidays
    for line in holidays_crossed(runtime, country) if country else []:
        echo(line)
    echo(
        "Open one with any mail client that reads Maildir (e.g. `mutt -f "
        f"{outbox}`), or read it as text:"
    )
    if first is not None:
        echo(f"  less {first}")
    echo(
        f"Browse the database: sqlite3 {directory / 'tidings.db'} "
        "'select status, count(*) from deliveries group by 1'"
    )
    if serve is not None:
        with LocalSMTPServer(MaildirHandler(outbox)) as smtp:
            settings = demo_settings(directory, smtp.url, day_seconds, base_url)
            with Runtime.open(settings, FixedClock(ended)) as runtime:
                serve(runtime)
    return DemoSummary(True, delivered, expected, outbox, "ok")


def _watch(
    runtime: Runtime,
    clock: ScaledClock,
    expected: int,
    day_seconds: float,
    echo: Callable[[str], None],
) -> tuple[bool, int]:
    """Show progress until every enrollment has finished. Returns (finished, delivered)."""
    started = clock.now()
    interactive = sys.stdout.isatty()
    last_day_shown = -1
    delivered = 0
    while True:
        with runtime.read_sessions.begin() as session:
            delivered = (
                session.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(
                        Delivery.kind == DeliveryKind.STEP, Delivery.status == DeliveryStatus.SENT
                    )
                )
                or 0
            )
            active = (
                session.scalar(
                    select(func.count())
                    .select_from(Enrollment)
                    .where(Enrollment.status == EnrollmentStatus.ACTIVE)
                )
                or 0
            )
            waiting = (
                session.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.status.in_(UNFINISHED))
                )
                or 0
            )
        now = clock.now()
        day = int((now - started).total_seconds() // 86400)
        line = (
            f"simulated {now:%a %Y-%m-%d %H:%M} UTC (day {day:2d}): "
            f"{delivered}/{expected} emails delivered"
        )
        if interactive:
            sys.stdout.write("\r" + line + "    ")
            sys.stdout.flush()
        elif day // 7 != last_day_shown // 7 or active == 0:
            echo(line)
            last_day_shown = day
        if active == 0 and waiting == 0:
            if interactive:
                sys.stdout.write("\n")
            return True, delivered
        if day > MAX_SIMULATED_DAYS:
            return False, delivered
        time.sleep(min(0.25, day_seconds / 4))


def holidays_crossed(runtime: Runtime, campaign_country: str) -> list[str]:
    """One line per public holiday the readers' series crossed (each reader's own country, as
    [schedule] skip_holidays chooses it), with how many emails went out on it: none, unless
    the campaign does not skip holidays."""
    import holidays

    from tidings.campaigns.calendars import holiday_country, holiday_dates

    with runtime.read_sessions.begin() as session:
        rows = session.execute(
            select(Subscriber.timezone, Delivery.sent_at)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.kind == DeliveryKind.STEP, Delivery.sent_at.is_not(None))
        ).all()
    sent_on: dict[tuple[str, date], int] = {}
    spans: dict[str, tuple[date, date]] = {}
    for timezone, sent_at in rows:
        if sent_at is None:  # (excluded by the query; for the type checker)
            continue
        country = holiday_country(timezone or "UTC", campaign_country)
        local = sent_at.replace(tzinfo=UTC).astimezone(zone_or_utc(timezone or "UTC")).date()
        sent_on[(country, local)] = sent_on.get((country, local), 0) + 1
        first, last = spans.get(country, (local, local))
        spans[country] = (min(first, local), max(last, local))
    lines = []
    for country, (first, last) in sorted(spans.items()):
        for year in range(first.year, last.year + 1):
            names = holidays.country_holidays(country, years=year)
            for day in sorted(holiday_dates(country, year)):
                if first <= day <= last:
                    count = sent_on.get((country, day), 0)
                    lines.append(
                        f"  {day:%a %d %b %Y} ({names.get(day)}, {country}): "
                        f"{count} email{'s' if count != 1 else ''} sent"
                    )
    heading = "Public holidays the series crossed, in the readers' own countries:"
    return [heading, *lines] if lines else []


DEMO_LOGIN = "demo-admin@counseling-center.example"


def open_demo_console(runtime: Runtime, port: int) -> tuple[WebServer, str, str]:
    """The web server on loopback with an admin account for the demo, made with a new random
    password each run (printed by the caller; never a fixed one: a demo left running on a
    shared machine is still a console). Returns the server, the login and the password."""
    import secrets

    from tidings.staff.accounts import add_user
    from tidings.web.server import start_web

    password = secrets.token_urlsafe(12)
    with runtime.sessions.begin() as session:
        add_user(
            session, runtime.clock.now(), runtime.secret(), DEMO_LOGIN, "admin", "Demo", password
        )
    return start_web(runtime, "127.0.0.1", port), DEMO_LOGIN, password
