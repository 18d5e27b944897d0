"""Figure 9 (issue 13, point 12): the staff console stays fast on a big list, computed live.

A database of 1,000,000 subscribers and 10,000,000 deliveries (SQLite, then PostgreSQL) is
filled in bulk; then the app runs under waitress in this process, a staff admin signs in
(POST /staff/login, the cookie kept) and one client over one keep-alive connection asks for
each page: warm-up requests, then `REQUESTS` timed ones, p50 and p95 in ms. The baseline is
the same page on a database of 10,000 subscribers and 100,000 deliveries in the same run.
Target: p95 at most 100 ms, every number computed by the page from the tables themselves
(no cached counts, no materialized view refreshed by a cron job).

The pages: the dashboard (`/staff/`), the 17-step sequence's page (`/staff/campaigns/
kap-benefits`: its steps, funnel and enrolment), and, once they exist in
tidings.web.staff.ROUTES, a subscriber search (`/staff/subscribers?q=`, the local part of an
address) and a profile (`/staff/subscribers/<id>`, someone with a whole series behind them).

The shape of the data (the clock is the benches' fixed Monday, 19 Oct 2026 09:00 UTC):

- subscribers signed up evenly over the last 365 days, ids in that order; 2% never
  confirmed, 10% unsubscribed, 3% bounced, 0.5% complained, the rest active; 12 timezones;
  consent events requested, confirmed (10 minutes later) and, for those who left,
  unsubscribed or complained; a confirmation email each for the last 60 days' sign-ups;
- the KAP series (17 steps, one every 2 days) for everyone who confirmed in the last 60 days
  and for a share of the older subscribers who started it in that time, enough to make the
  10,000,000; its last email is queued where it fell in the last hour; those who left did
  after one of the emails they got (a bounce on that email, a complaint the next day); every
  confirmed subscriber has an enrolment (completed or exited before the window when their
  series falls outside it);
- two newsletters: one 25 days ago to everyone then on the list (sent, a few failed or
  bounced), one being sent now (the first 60% of its recipients sent in the last two hours,
  the rest queued: the queue);
- every ledger row in time order (ids rise with time, as the real ledger's do), so a day's
  sends sit together and a subscriber's deliveries are scattered through the table.

Filling: raw executemany in batches on SQLite (journal and sync off while filling only, then
back to WAL), COPY on PostgreSQL (foreign-key triggers off for that session); the tables'
secondary indexes are dropped before and built again after, then VACUUM ANALYZE on
PostgreSQL (what autovacuum does after a bulk load). SQLite gets no ANALYZE: tidings runs
none, so the planner works without statistics, as in an installation.

    python bench/console.py            1,000,000 / 10,000,000 vs 10,000 / 100,000
    python bench/console.py --quick    100,000 / 1,000,000 vs 10,000 / 100,000
    python bench/console.py --keep     the same, keeping the big databases and printing
                                       their URLs (to look at plans; drop them yourself)
"""

from __future__ import annotations

import contextlib
import http.client
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from common import MONDAY, QUICK, ROOT, bench_runtime, database, report
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from tidings.campaigns.loading import load_campaign
from tidings.db import upgrade
from tidings.db.models import BroadcastSchedule, Campaign, Step, Subscriber
from tidings.runtime import Runtime
from tidings.staff.accounts import add_user
from tidings.web import create_app
from tidings.web.server import WebServer
from tidings.web.staff import ROUTES

KEEP = "--keep" in sys.argv
LARGE = (100_000, 1_000_000) if QUICK else (1_000_000, 10_000_000)
SMALL = (10_000, 100_000)
REQUESTS = 20 if QUICK else 60
WARM_UP = 5
PAGE_BUDGET_S = 60.0  # a page slower than this budget allows is measured fewer times
TARGET_MS = 100.0
ADMIN = "bench-admin@center.example.org"
PASSWORD = "Quiet-harbour-lantern-1987-violet"

DAY = 86_400
STEP_EVERY = 2 * DAY
STEPS = 17
WINDOW = 60 * DAY  # deliveries fall in the last 60 days
A_AT = -25 * DAY  # the newsletter sent 25 days ago
B_FROM = -2 * 3600  # the newsletter being sent now started 2 hours ago
A_CODE, B_CODE, CONFIRM_CODE = STEPS, STEPS + 1, STEPS + 2
STATUSES = ("sent", "queued", "retry", "failed", "bounced", "skipped", "sent", "sending")
SENT, QUEUED, RETRY, FAILED, BOUNCED, SKIPPED, COMPLAINED = range(7)
DELIVERY_OFFSET = 1 << 23  # seconds (97 days) added to a delivery's time to pack it
CONSENT_OFFSET = 1 << 25  # (388 days) for consent events
TIMEZONES = (
    ["America/New_York"] * 6
    + ["America/Chicago"] * 3
    + ["America/Los_Angeles"] * 4
    + ["America/Denver", "America/Phoenix", "Europe/London", "Europe/Berlin", "Europe/Paris"]
    + ["Asia/Tokyo", "Australia/Sydney", "UTC", "America/Toronto"]
)
FIRST_NAMES = (
    "anna maria james john robert michael william david richard joseph thomas charles mary "
    "patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy betty "
    "sandra ashley kimberly emily donna michelle carol amanda melissa deborah stephanie "
    "rebecca laura sharon cynthia kathleen amy angela shirley brenda emma olivia noah liam "
    "sophia lucas mateo lena jonas mia leon hannah felix yuki haruto aiko chen wei priya "
    "arjun fatima omar layla ahmed sofia diego valentina camila nicolas"
)
LAST_NAMES = (
    "smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez "
    "lopez gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson "
    "white harris sanchez clark ramirez lewis robinson walker young allen king wright scott "
    "torres nguyen hill flores green adams nelson baker hall rivera campbell mitchell "
    "carter roberts muller schmidt schneider fischer weber meyer wagner becker schulz "
    "hoffmann tanaka suzuki takahashi watanabe kim park choi patel shah khan ali dubois "
    "moreau"
)
FIRST, LAST = FIRST_NAMES.split(), LAST_NAMES.split()
DOMAINS = (
    ["gmail.com"] * 8
    + ["yahoo.com"] * 3
    + ["outlook.com"] * 3
    + ["hotmail.com", "icloud.com", "aol.com", "proton.me", "comcast.net", "gmx.de"]
)

NEWSLETTER_TOML = """\
slug = "{slug}"
name = "{name}"
kind = "broadcast"

[footer]
crisis = "If you are struggling or in crisis, call or text 988, or chat at 988lifeline.org."
crisis_line = "Help is available 24/7: call or text 988."
disclaimer = "Educational information, not medical advice."
risk = "Ketamine treatment has risks and needs medical screening."
reason = "You signed up at {{{{ sender.organization }}}}."

[lint]
require = ["crisis", "disclaimer", "risk", "reason"]
"""
NEWSLETTER_EMAIL = """\
+++
subject = "{name} from the center"
preheader = "Group sessions, and our new evening hours."
+++
## {name}

Our evening hours start in December. Group sessions meet on Thursdays.
"""


# ----------------------------------------------------------------------------- timestamps


class Stamps:
    """Naive-UTC timestamps as the app stores them ('YYYY-MM-DD HH:MM:SS.ffffff'), for a
    number of seconds from the bench's now; one strftime per minute, not per row."""

    def __init__(self) -> None:
        self.now = MONDAY.replace(tzinfo=None)
        self.minutes: dict[int, str] = {}
        self.seconds = [f"{s:02d}.000000" for s in range(60)]

    def __call__(self, offset: int) -> str:
        minute, second = divmod(offset, 60)
        prefix = self.minutes.get(minute)
        if prefix is None:
            prefix = (self.now + timedelta(minutes=minute)).strftime("%Y-%m-%d %H:%M:")
            self.minutes[minute] = prefix
        return prefix + self.seconds[second]


# ----------------------------------------------------------------------------- bulk writers


class Writer:
    """Rows into tables, in batches; secondary indexes dropped first and built again at the
    end (building an index over sorted keys is much faster than growing it row by row)."""

    BATCH = 50_000

    def __init__(self) -> None:
        self.pending: dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]] = {}
        self.indexes: list[tuple[str, str]] = []

    def add(self, table: str, columns: tuple[str, ...], row: tuple[Any, ...]) -> None:
        entry = self.pending.get(table)
        if entry is None:
            entry = self.pending[table] = (columns, [])
        entry[1].append(row)
        if len(entry[1]) >= self.BATCH:
            self.write(table, columns, entry[1])
            entry[1].clear()

    def flush(self) -> None:
        for table, (columns, rows) in self.pending.items():
            if rows:
                self.write(table, columns, rows)
                rows.clear()

    def write(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class SqliteWriter(Writer):
    def __init__(self, path: str, tables: Iterable[str]):
        super().__init__()
        self.db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-1000000"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("PRAGMA foreign_keys=OFF")
        marks = ",".join("?" * len(list(tables)))
        self.indexes = list(
            self.db.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                f" AND tbl_name IN ({marks})",
                list(tables),
            )
        )
        for name, _ in self.indexes:
            self.db.execute(f'DROP INDEX "{name}"')
        self.db.execute("BEGIN")

    def write(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        marks = ",".join("?" * len(columns))
        self.db.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", rows)

    def finish(self) -> None:
        self.flush()
        self.db.execute("COMMIT")
        for _, sql in self.indexes:
            self.db.execute(sql)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.close()


class PostgresWriter(Writer):
    SEQUENCES = ("subscribers", "consent_events", "enrollments", "deliveries", "bounce_events")

    def __init__(self, url: str, tables: Iterable[str]):
        import psycopg

        super().__init__()
        self.url = url
        self.db = psycopg.connect(url)
        self.db.execute("SET session_replication_role = replica")  # no FK triggers: bulk load
        self.indexes = [
            (name, sql)
            for name, sql in self.db.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s)"
                " AND indexname NOT IN (SELECT conname FROM pg_constraint)",
                [list(tables)],
            )
        ]
        for name, _ in self.indexes:
            self.db.execute(f'DROP INDEX "{name}"')

    def write(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        text = "".join(
            "\t".join("\\N" if v is None else str(v) for v in row) + "\n" for row in rows
        )
        with self.db.cursor().copy(f"COPY {table} ({','.join(columns)}) FROM STDIN") as copy:
            copy.write(text.encode())

    def finish(self) -> None:
        import psycopg

        self.flush()
        for table in self.SEQUENCES:
            self.db.execute(
                f"SELECT setval('{table}_id_seq', (SELECT coalesce(max(id), 0) + 1 FROM {table}),"
                " false)"
            )
        self.db.execute("SET maintenance_work_mem = '512MB'")
        for _, sql in self.indexes:
            self.db.execute(sql)
        self.db.commit()
        self.db.close()
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute("VACUUM ANALYZE")


# ----------------------------------------------------------------------------- the data


SUBSCRIBER_COLUMNS = (
    "id", "email", "name", "timezone", "status", "key", "attributes", "created_at",
    "updated_at", "confirmed_at", "unsubscribed_at", "soft_bounces",
)  # fmt: skip
CONSENT_COLUMNS = (
    "id", "subscriber_id", "kind", "source", "evidence", "consent_text_sha256", "ip",
    "user_agent", "seconds_after_email", "created_at",
)  # fmt: skip
ENROLLMENT_COLUMNS = (
    "id", "subscriber_id", "campaign_id", "status", "next_position", "next_due_at",
    "created_at", "updated_at", "ended_at",
)  # fmt: skip
DELIVERY_COLUMNS = (
    "id", "kind", "subscriber_id", "campaign_id", "step_id", "status", "attempts",
    "next_attempt_at", "lease_owner", "lease_expires_at", "message_id", "content_sha256",
    "server", "outcome", "created_at", "updated_at", "sent_at",
)  # fmt: skip
BOUNCE_COLUMNS = (
    "id", "report_sha256", "kind", "status", "diagnostic", "delivery_id", "campaign_id",
    "created_at",
)  # fmt: skip
TABLES = ("subscribers", "consent_events", "enrollments", "deliveries", "bounce_events")
CONSENT_KINDS = ("requested", "confirmed", "unsubscribed", "complained")
PENDING, ACTIVE, UNSUBSCRIBED, BOUNCED_READER, COMPLAINED_READER = range(5)
SUBSCRIBER_STATUS = ("pending", "active", "unsubscribed", "bounced", "complained")
USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0"
CONSENT_SHA = "9f2c" * 16
EVIDENCE = "form at https://news.example.org/subscribe"
# The columns of a delivery row that follow from its outcome: attempts, server, outcome.
OUTCOMES = {
    SENT: (1, "primary", "250 2.0.0 Ok: queued as 4Xb7Kq1zZ"),
    COMPLAINED: (1, "primary", "250 2.0.0 Ok: queued as 4Xb7Kq1zZ"),
    QUEUED: (0, None, None),
    RETRY: (2, "primary", "451 4.7.1 Try again later"),
    SKIPPED: (0, None, "skipped: the subscriber is paused"),
    FAILED: (1, "primary", "554 5.7.1 rejected: content"),
    BOUNCED: (1, "primary", "550 5.1.1 <reader>: user unknown"),
}


def pack(offset: int, subscriber: int, code: int, status: int) -> int:
    """A delivery as one int that sorts by time: (seconds from now, subscriber, step code,
    status). Ten million of them sort in seconds; ten million tuples would not fit as well."""
    return ((offset + DELIVERY_OFFSET) << 32) | (subscriber << 8) | (code << 3) | status


@contextlib.contextmanager
def newsletter_folders() -> Iterator[list[Path]]:
    with tempfile.TemporaryDirectory(prefix="tidings-console-") as tmp:
        folders = []
        for slug, name in (("october-news", "October news"), ("november-news", "November news")):
            folder = Path(tmp) / slug
            folder.mkdir()
            (folder / "campaign.toml").write_text(
                NEWSLETTER_TOML.format(slug=slug, name=name), encoding="utf-8"
            )
            (folder / "01-news.md").write_text(NEWSLETTER_EMAIL.format(name=name), "utf-8")
            folders.append(folder)
        yield folders


def set_up(runtime: Runtime) -> dict[str, Any]:
    """The campaigns (KAP and two newsletters, loaded as `campaigns load` does) and the staff
    admin; returns the ids the rows refer to."""
    now = runtime.clock.now()
    with newsletter_folders() as folders, runtime.sessions.begin() as session:
        for folder in [ROOT / "tidings" / "campaigns" / "kap-benefits", *folders]:
            load_campaign(session, folder, runtime.settings, now)
        add_user(session, now, runtime.secret(), ADMIN, "admin", "", PASSWORD)
    codes = ((None, "kap-benefits"), (A_CODE, "october-news"), (B_CODE, "november-news"))
    with runtime.sessions.begin() as session:
        ids = dict(session.execute(select(Campaign.slug, Campaign.id)).all())
        steps: dict[int, tuple[int, int, str]] = {}  # code -> (campaign, step, content sha)
        for code, slug in codes:
            rows = session.execute(
                select(Step.id, Step.content_sha256)
                .where(Step.campaign_id == ids[slug], Step.position.is_not(None))
                .order_by(Step.position)
            ).all()
            for position, (step_id, sha) in enumerate(rows):
                steps[position if code is None else code] = (ids[slug], step_id, sha)
        assert len([c for c in steps if c < STEPS]) == STEPS, "the KAP series has 17 steps"
        for slug, at in (("october-news", A_AT), ("november-news", B_FROM)):
            when = MONDAY + timedelta(seconds=at)
            schedule = {
                "campaign_id": ids[slug],
                "state": "done",
                "send_at": when,
                "audience": {},
                "planned_through": when,
                "after_subscriber_id": 0,
                "planned": 0,
                "held": 0,
                "scheduled_at": when - timedelta(days=1),
                "updated_at": when,
                "finished_at": when,
            }
            session.execute(insert(BroadcastSchedule).values(**schedule))
    return {"kap": ids["kap-benefits"], "steps": steps}


class Fill:
    """The rows described at the top of this file, written through a Writer. Subscribers,
    their consent and enrolments are drawn in id order; deliveries and consent events are
    collected as packed ints, sorted by time and written with ids in that order."""

    def __init__(self, writer: Writer, ids: dict[str, Any], subscribers: int, seed: int):
        self.writer, self.ids, self.count = writer, ids, subscribers
        self.rng = random.Random(seed)
        self.stamp = Stamps()
        self.deliveries: list[int] = []
        self.consents: list[int] = []
        self.bounces: list[tuple[int, str, int, int]] = []
        self.b_candidates: list[int] = []  # active, on the list before the newsletter left
        self.profiles: list[int] = []  # active readers who got the whole series
        self.enrollments = 0
        self.started = time.perf_counter()
        self.share = 0.0  # of the older subscribers who started the series in the window
        self.newsletter = 0

    def phase(self, name: str) -> None:
        seconds = time.perf_counter() - self.started
        print(f"    {name}: {seconds:.0f} s", file=sys.stderr, flush=True)

    def run(self, deliveries: int) -> dict[str, Any]:
        per_start = sum(min(STEPS, d // 2 + 1) for d in range(60)) / 60  # 12.5 emails
        # Beside the older subscribers' series the list gets about 3.6 emails a head in the
        # window (the newest sign-ups' series, a confirmation, the October newsletter and
        # the one going out now to about half of it): calibrated on runs of this script.
        self.share = max(0.0, min(1.0, (deliveries / self.count - 3.6) / (0.74 * per_start)))
        for sid in range(1, self.count + 1):
            self.subscriber(sid)
        self.phase("subscribers, enrolments")
        self.newsletter_now(deliveries - len(self.deliveries))
        print(f"    the newsletter going out now: {self.newsletter:,} recipients", file=sys.stderr)
        self.deliveries.sort()
        self.phase("deliveries drawn and sorted")
        written = len(self.deliveries)
        self.write_deliveries()
        self.phase("deliveries written")
        consents = len(self.consents)
        self.write_consents()
        self.write_bounces()
        self.writer.flush()
        self.phase("consent events and bounce reports written")
        self.writer.finish()
        self.phase("indexes built")
        return {
            "subscribers": self.count,
            "deliveries": written,
            "consent_events": consents,
            "enrollments": self.enrollments,
            "bounce_events": len(self.bounces),
            # 200 readers who got the whole series, for the profiles and searches
            "profiles": sorted(self.rng.sample(self.profiles, min(200, len(self.profiles)))),
        }

    def subscriber(self, sid: int) -> None:
        rng, stamp = self.rng, self.stamp
        created = -int(365 * DAY * (self.count - sid + rng.random()) / self.count) - 700
        r = rng.random()
        status = (
            PENDING if r < 0.02
            else UNSUBSCRIBED if r < 0.12
            else BOUNCED_READER if r < 0.15
            else COMPLAINED_READER if r < 0.155
            else ACTIVE
        )  # fmt: skip
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first}.{last}{sid}@{rng.choice(DOMAINS)}"
        self.consent(created, sid, 0)
        if created > -WINDOW:
            self.deliveries.append(pack(created + 5, sid, CONFIRM_CODE, SENT))
        confirmed = left = None
        if status != PENDING:
            confirmed = min(-120, created + 600 + rng.randrange(3600))
            self.consent(confirmed, sid, 1)
            left = self.reader(sid, status, confirmed)
        if left is not None and status != BOUNCED_READER:  # a bounce withdraws no consent
            self.consent(left, sid, 3 if status == COMPLAINED_READER else 2)
        updated = left if left is not None else confirmed if confirmed is not None else created
        self.writer.add(
            "subscribers",
            SUBSCRIBER_COLUMNS,
            (
                sid,
                email,
                f"{first.title()} {last.title()}",
                rng.choice(TIMEZONES),
                SUBSCRIBER_STATUS[status],
                f"{rng.getrandbits(128):032x}",
                "{}",
                stamp(created),
                stamp(updated),
                None if confirmed is None else stamp(confirmed),
                stamp(left) if left is not None and status == UNSUBSCRIBED else None,
                0,
            ),
        )

    def consent(self, offset: int, sid: int, kind: int) -> None:
        self.consents.append(((offset + CONSENT_OFFSET) << 32) | (sid << 8) | kind)

    def reader(self, sid: int, status: int, confirmed: int) -> int | None:
        """A confirmed subscriber's series, newsletters and enrolment; returns when they left,
        if they did."""
        rng = self.rng
        start = None
        if confirmed > -WINDOW:
            start = confirmed + 60  # the welcome goes right after confirming
        elif rng.random() < self.share:
            start = -rng.randrange(WINDOW)
        got = 0 if start is None else min(STEPS, -start // STEP_EVERY + 1)
        leaves = status in (UNSUBSCRIBED, BOUNCED_READER, COMPLAINED_READER)
        leave_after = rng.randint(1, got) if leaves and got else None
        count = leave_after or got
        times = []
        if start is not None:
            times = [
                min(-1, start + j * STEP_EVERY + rng.randrange(8 * 3600)) for j in range(count)
            ]
        for j, t in enumerate(times):
            if t > -3600:
                code = QUEUED  # due in the last hour: not sent yet
            elif leave_after and j == count - 1 and status != UNSUBSCRIBED:
                code = BOUNCED if status == BOUNCED_READER else COMPLAINED
            else:
                x = rng.random()
                code = (
                    SENT if x > 0.005 else FAILED if x < 0.002 else SKIPPED if x < 0.0045 else RETRY
                )
            self.deliveries.append(pack(t, sid, j, code))
        left = None
        if leave_after:
            left = min(-1, times[-1] + 3600 + rng.randrange(2 * DAY))
        elif leaves:
            left = confirmed + rng.randrange(-confirmed)
        if confirmed < A_AT and (left is None or left > A_AT):
            at = A_AT + rng.randrange(3600)
            if leaves and not leave_after:  # they left after this newsletter, maybe for it
                code = {BOUNCED_READER: BOUNCED, COMPLAINED_READER: COMPLAINED}.get(status, SENT)
                if status == BOUNCED_READER:
                    left = at + 60
            else:
                x = rng.random()
                code = SENT if x > 0.003 else FAILED if x < 0.001 else BOUNCED
            self.deliveries.append(pack(at, sid, A_CODE, code))
        if status == ACTIVE and confirmed < B_FROM:
            self.b_candidates.append(sid)
        self.enrollment(sid, confirmed, start, times, left)
        if count == STEPS and status == ACTIVE:
            self.profiles.append(sid)
        return left

    def enrollment(
        self, sid: int, confirmed: int, start: int | None, times: list[int], left: int | None
    ) -> None:
        stamp = self.stamp
        due = None
        if start is None or not times:  # their series lies before the window
            status = "exited" if left else "completed"
            position, enrolled, ended = STEPS + 1, confirmed, left or confirmed + 34 * DAY
        elif left is not None:
            status, position, enrolled, ended = "exited", len(times) + 1, start, left
        elif len(times) == STEPS:
            status, position, enrolled, ended = "completed", STEPS + 1, start, times[-1]
        else:
            status, position, enrolled, ended = "active", len(times) + 1, start, None
            if times[-1] <= -3600:  # not while its last email is in flight
                due = stamp(times[-1] + STEP_EVERY)
        self.enrollments += 1
        self.writer.add(
            "enrollments",
            ENROLLMENT_COLUMNS,
            (
                self.enrollments,
                sid,
                self.ids["kap"],
                status,
                position,
                due,
                stamp(enrolled),
                stamp(ended if ended is not None else enrolled),
                None if ended is None else stamp(ended),
            ),
        )

    def newsletter_now(self, wanted: int) -> None:
        """The newsletter going out now, to as many as make up the total: the first 60% of
        them sent over the last two hours, the rest queued (most due now, some later)."""
        wanted = max(0, min(len(self.b_candidates), wanted))
        self.newsletter = wanted
        chosen = sorted(self.rng.sample(self.b_candidates, wanted))
        sent = int(wanted * 0.6)
        for n, sid in enumerate(chosen):
            if n < sent:
                t, code = min(-1, B_FROM + int(n * -B_FROM / max(1, sent)) + 1), SENT
            elif self.rng.random() < 0.7:
                t, code = -self.rng.randrange(3600), QUEUED
            else:
                t, code = self.rng.randrange(1, 3600), QUEUED
            self.deliveries.append(pack(t, sid, B_CODE, code))

    def write_deliveries(self) -> None:
        add, steps = self.writer.add, self.ids["steps"]
        minutes, seconds, now = self.stamp.minutes, self.stamp.seconds, self.stamp.now
        statuses, outcomes, bounces = STATUSES, OUTCOMES, self.bounces
        for delivery_id, value in enumerate(self.deliveries, 1):
            t = (value >> 32) - DELIVERY_OFFSET
            sid = (value >> 8) & 0xFFFFFF
            code = (value >> 3) & 0x1F
            status = value & 7
            if code == CONFIRM_CODE:
                campaign_id, step_id, sha, kind = None, None, None, "confirmation"
            else:
                (campaign_id, step_id, sha), kind = steps[code], "step"
            minute, second = divmod(t, 60)
            prefix = minutes.get(minute)
            if prefix is None:
                prefix = minutes[minute] = (now + timedelta(minutes=minute)).strftime(
                    "%Y-%m-%d %H:%M:"
                )
            when = prefix + seconds[second]
            done = prefix + seconds[second + 2] if second < 58 else self.stamp(t + 2)
            attempts, server, outcome = outcomes[status]
            next_at, sent_at = when, None
            if status in (SENT, COMPLAINED):
                sent_at = done
            elif status == RETRY:
                next_at = self.stamp(min(t + 3600, 3599))
            elif status == BOUNCED:
                bounces.append((t + 60, "hard", delivery_id, campaign_id or 0))
            if status == COMPLAINED:
                bounces.append((min(-1, t + DAY), "complaint", delivery_id, campaign_id or 0))
            add(
                "deliveries",
                DELIVERY_COLUMNS,
                (
                    delivery_id,
                    kind,
                    sid,
                    campaign_id,
                    step_id,
                    statuses[status],
                    attempts,
                    next_at,
                    None,
                    None,
                    f"{delivery_id:016x}.{sid:08x}@news.example.org",
                    sha,
                    server,
                    outcome,
                    when,
                    when if status == QUEUED else done,
                    sent_at,
                ),
            )
        self.deliveries = []

    def write_consents(self) -> None:
        self.consents.sort()
        for event_id, value in enumerate(self.consents, 1):
            t = (value >> 32) - CONSENT_OFFSET
            kind = CONSENT_KINDS[value & 0xFF]
            sid = (value >> 8) & 0xFFFFFF
            form = kind in ("requested", "confirmed")
            self.writer.add(
                "consent_events",
                CONSENT_COLUMNS,
                (
                    event_id,
                    sid,
                    kind,
                    "contact-form" if form else "email",
                    EVIDENCE if form else None,
                    CONSENT_SHA if kind == "requested" else None,
                    f"198.51.100.{sid % 250 + 1}" if form else None,
                    USER_AGENT if form else None,
                    120 if kind == "confirmed" else None,
                    self.stamp(t),
                ),
            )
        self.consents = []

    def write_bounces(self) -> None:
        self.bounces.sort()
        for bounce_id, (t, kind, delivery_id, campaign_id) in enumerate(self.bounces, 1):
            hard = kind == "hard"
            self.writer.add(
                "bounce_events",
                BOUNCE_COLUMNS,
                (
                    bounce_id,
                    f"{bounce_id:064x}",
                    kind,
                    "5.1.1" if hard else None,
                    "user unknown" if hard else "abuse report",
                    delivery_id,
                    campaign_id or None,
                    self.stamp(t),
                ),
            )


def fill(runtime: Runtime, subscribers: int, deliveries: int, seed: int = 13) -> dict[str, Any]:
    """Write the data described at the top; returns the row counts and the profile ids."""
    ids = set_up(runtime)
    runtime.engine.dispose()  # the bulk writer needs the file (SQLite) to itself
    url = make_url(runtime.settings.database_url)
    if url.get_backend_name() == "sqlite":
        writer: Writer = SqliteWriter(str(url.database), TABLES)
    else:
        writer = PostgresWriter(url.set(drivername="postgresql").render_as_string(False), TABLES)
    return Fill(writer, ids, subscribers, seed).run(deliveries)


# ----------------------------------------------------------------------------- the pages


class StaffClient:
    """A signed-in admin's browser over one keep-alive connection."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        body = urlencode({"email": ADMIN, "password": PASSWORD}).encode()
        status, _, response = self.request(
            "POST", "/staff/login", body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        cookie = SimpleCookie(response.headers.get("Set-Cookie", ""))
        if status != 303 or "tidings_staff" not in cookie:
            raise RuntimeError(f"staff sign-in answered {status}, no session cookie")
        self.cookie = f"tidings_staff={cookie['tidings_staff'].value}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        return response.status, response.read(), response

    def get(self, path: str) -> float:
        started = time.perf_counter()
        headers = {"Cookie": self.cookie, "Accept": "text/html"}
        status, body, _ = self.request("GET", path, headers=headers)
        seconds = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
        return seconds


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def pages(runtime: Runtime, facts: dict[str, Any]) -> dict[str, Callable[[int], str]]:
    """Page name -> the path of its n-th request (searches and profiles vary the person)."""
    endpoints = {route.endpoint for route in ROUTES}
    out: dict[str, Callable[[int], str]] = {
        "dashboard": lambda n: "/staff/",
        "campaign page": lambda n: "/staff/campaigns/kap-benefits",
    }
    people = facts["profiles"] or [1]
    with runtime.read_sessions.begin() as session:
        emails = list(session.scalars(select(Subscriber.email).where(Subscriber.id.in_(people))))
    if "staff.subscribers" in endpoints:
        parts = [e.split("@")[0] for e in emails]  # e.g. maria.garcia48213
        out["subscriber search, part of an address"] = lambda n: (
            f"/staff/subscribers?q={quote(parts[n % len(parts)])}"
        )
        out["subscriber search, whole address"] = lambda n: (
            f"/staff/subscribers?q={quote(emails[n % len(emails)])}"
        )
    if "staff.subscriber" in endpoints:
        out["subscriber profile"] = lambda n: f"/staff/subscribers/{people[n % len(people)]}"
    return out


def search_reach(runtime: Runtime, facts: dict[str, Any]) -> str:
    """How much of the list one search for part of an address reads before its page answers
    (the directory stops looking after a time budget and says where it stopped)."""
    import importlib

    from tidings.subscribers.directory import SubscriberFilter

    for module in ("tidings.subscribers.profiles", "tidings.subscribers.directory"):
        with contextlib.suppress(ImportError):
            search_page = importlib.import_module(module).search_page
            break
    else:
        return ""
    people = facts["profiles"] or [1]
    with runtime.read_sessions.begin() as session:
        email = session.scalar(select(Subscriber.email).where(Subscriber.id == people[0]))
        page = search_page(session, SubscriberFilter(search=(email or "").split("@")[0]))
    stopped = getattr(page, "searched_down_to", None)
    if stopped is None:
        return "the first page read the whole list"
    read = facts["subscribers"] - stopped
    return f"the first page read the newest {read:,} of {facts['subscribers']:,} ids, then stopped"


def measure(url: str, facts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """p50 and p95 (ms) of each page over real HTTP: warm-up, then up to REQUESTS requests
    (at least 10, fewer than REQUESTS when a page is slower than PAGE_BUDGET_S allows)."""
    runtime = bench_runtime(url, base_url="http://127.0.0.1")
    server = WebServer(create_app(runtime), "127.0.0.1", 0).start()
    results: dict[str, dict[str, Any]] = {}
    try:
        client = StaffClient(server.port)
        for name, path in pages(runtime, facts).items():
            warm = [client.get(path(n)) for n in range(WARM_UP)]
            times: list[float] = []
            started = time.perf_counter()
            for n in range(REQUESTS):
                times.append(client.get(path(WARM_UP + n)))
                if n >= 9 and time.perf_counter() - started > PAGE_BUDGET_S:
                    break
            results[name] = {
                "p50": quantile(times, 0.5) * 1000,
                "p95": quantile(times, 0.95) * 1000,
                "n": len(times),
                "first": warm[0] * 1000,
            }
            print(
                f"  {name}: p50 {results[name]['p50']:.1f} ms, p95 {results[name]['p95']:.1f} ms"
                f" ({len(times)} requests; the first of the warm-up {warm[0] * 1000:.0f} ms)",
                file=sys.stderr,
                flush=True,
            )
        client.connection.close()
        reach = search_reach(runtime, facts)
        if reach:
            results["subscriber search, part of an address"]["reach"] = reach
            print(f"  search: {reach}", file=sys.stderr, flush=True)
    finally:
        server.stop()
        runtime.close()
    return results


def run(kind: str, size: tuple[int, int]) -> dict[str, dict[str, Any]]:
    subscribers, deliveries = size
    with database(kind) as url:
        started = time.perf_counter()
        runtime = bench_runtime(url)
        facts = fill(runtime, subscribers, deliveries)
        runtime.close()
        counts = ", ".join(f"{v:,} {k}" for k, v in facts.items() if isinstance(v, int))
        seconds = time.perf_counter() - started
        print(f"{kind}: {counts}; filled in {seconds:.0f} s", file=sys.stderr, flush=True)
        results = measure(url, facts)
        if KEEP and size == LARGE:
            _keep(url)
    return results


# ----------------------------------------------------------------------------- what it costs


def write_cost(revision: str, rows: int = 20_000, ledger: int = 200_000) -> float:
    """Microseconds of SQLite time per delivery for what the ledger writes of each email, on
    the schema at `revision`: planned (an insert, queued), claimed (sending, leased, by 200),
    recorded (sent, one update each), beside `ledger` older rows. The statements are the
    dispatcher's in shape, run through the sqlite3 module alone; CPU time, the best of three."""
    best = float("inf")
    for _ in range(3):
        with tempfile.TemporaryDirectory(prefix="tidings-cost-") as tmp:
            path = Path(tmp) / "cost.db"
            upgrade(f"sqlite:///{path}", revision)
            best = min(best, _ledger_writes(path, rows, ledger))
    return best


def _ledger_writes(path: Path, rows: int, ledger: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-16384"):
        db.execute(f"PRAGMA {pragma}")
    day = "2026-10-19 09:00:00.000000"
    db.execute("BEGIN")
    db.execute(
        'INSERT INTO campaigns (id, slug, name, kind, "trigger", status, bounce_check_after_id,'
        " definition, content_sha256, created_at, loaded_at)"
        " VALUES (1, 'c', 'c', 'sequence', 'confirm', 'active', 0, '{}', 'x', ?, ?)",
        (day, day),
    )
    db.executemany(
        "INSERT INTO steps (id, campaign_id, key, position, delay_seconds, send_window, subject,"
        " preheader, source, source_file, compiled, content_sha256, created_at, updated_at)"
        " VALUES (?, 1, ?, ?, 0, 1, 's', '', '', '', '{}', 'x', ?, ?)",
        [(i, f"k{i}", i, day, day) for i in range(1, STEPS + 1)],
    )
    db.executemany(
        "INSERT INTO subscribers (id, email, name, timezone, status, key, attributes,"
        " created_at, updated_at, soft_bounces)"
        " VALUES (?, ?, '', 'UTC', 'active', ?, '{}', ?, ?, 0)",
        [(i, f"r{i}@example.org", f"k{i}", day, day) for i in range(1, rows + 1)],
    )
    old = [
        (i % rows + 1, i // rows + 2, f"2026-09-{1 + i % 28:02d} 10:00:00.000000", f"m{i}")
        for i in range(ledger)
    ]
    db.executemany(
        "INSERT INTO deliveries (kind, subscriber_id, campaign_id, step_id, status, attempts,"
        " next_attempt_at, message_id, created_at, updated_at, sent_at)"
        " VALUES ('step', ?, 1, ?, 'sent', 1, ?3, ?4, ?3, ?3, ?3)",
        old,
    )
    db.execute("COMMIT")
    started = time.process_time()
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO deliveries (kind, subscriber_id, campaign_id, step_id, status, attempts,"
        " next_attempt_at, message_id, created_at, updated_at)"
        " VALUES ('step', ?, 1, 1, 'queued', 0, ?2, ?3, ?2, ?2)",
        [(i, day, f"n{i}") for i in range(1, rows + 1)],
    )
    db.execute("COMMIT")
    ids = [r[0] for r in db.execute("SELECT id FROM deliveries WHERE status = 'queued'")]
    for start in range(0, rows, 200):
        chunk = ids[start : start + 200]
        marks = ",".join("?" * len(chunk))
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "UPDATE deliveries SET status = 'sending', lease_owner = 'bench', attempts ="
            f" attempts + 1, lease_expires_at = ?, updated_at = ? WHERE id IN ({marks})",
            [day, day, *chunk],
        )
        db.execute("COMMIT")
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "UPDATE deliveries SET status = 'sent', sent_at = ?, updated_at = ?,"
            " outcome = '250 2.0.0 Ok', server = 'primary' WHERE id = ?",
            [(day, day, i) for i in chunk],
        )
        db.execute("COMMIT")
    seconds = time.process_time() - started
    db.close()
    return seconds * 1e6 / rows


def _keep(url: str) -> None:
    """--keep: leave the database for a look at the plans (the context manager drops it)."""
    import shutil

    if url.startswith("sqlite"):
        path = Path(make_url(url).database or "")
        target = Path(tempfile.gettempdir()) / f"tidings-console-{path.stat().st_size}.db"
        shutil.copy(path, target)
        print(f"copied to sqlite:///{target}", file=sys.stderr)
        return
    import psycopg
    from common import POSTGRES_ADMIN

    name = make_url(url).database
    with psycopg.connect(f"{POSTGRES_ADMIN}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}_kept" TEMPLATE "{name}"')
    print(f"copied to {POSTGRES_ADMIN}/{name}_kept", file=sys.stderr)


def main() -> None:
    big_label = f"{LARGE[0]:,} subscribers / {LARGE[1]:,} deliveries"
    small_label = f"{SMALL[0]:,} / {SMALL[1]:,}"
    for kind in ("sqlite", "postgresql"):
        small = run(kind, SMALL)
        large = run(kind, LARGE)
        for name, figures in large.items():
            base = small[name]
            ratio = figures["p95"] / base["p95"]
            reach = f"; {figures['reach']}" if "reach" in figures else ""
            report(
                f"9. console, {name}, p95 ms ({big_label} vs {small_label}, {kind})",
                round(figures["p95"], 1),
                round(base["p95"], 1),
                round(ratio, 2),
                f"<= {TARGET_MS:.0f} ms",
                figures["p95"] <= TARGET_MS,
                "ms",
                f"p50 {figures['p50']:.1f} ms (baseline {base['p50']:.1f}); "
                f"{int(figures['n'])} requests after {WARM_UP} to warm up{reach}",
            )
    with_indexes, without = write_cost("head"), write_cost("0008")
    report(
        "9. ledger writes of one email with the console's indexes (0009) vs without (0008),"
        " us of SQLite CPU (plan + claim + record)",
        round(with_indexes, 1),
        round(without, 1),
        round(with_indexes / without, 2),
        "what the live counts cost the sending",
        True,
        "us",
    )


if __name__ == "__main__":
    main()
