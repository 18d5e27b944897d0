"""Shared fixtures: real databases (SQLite file and PostgreSQL), a real SMTP server, a fixed
clock, and helpers to drive the engine through simulated time without sleeping.

Every test that takes `database_url` runs twice: on a SQLite file and on the PostgreSQL
server of this machine (127.0.0.1:5432, or TIDINGS_TEST_POSTGRES_URL). When PostgreSQL is
unreachable those runs are skipped with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import email
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
from cli_helpers import Tidings, load_kap, on_sqlite_copy, sqlite_with_kap
from sqlalchemy import text

from tidings.campaigns.loading import load_campaign, resolve_campaign_dir
from tidings.clock import FixedClock
from tidings.config import Settings
from tidings.db import make_engine, upgrade
from tidings.db.models import Base
from tidings.runtime import Runtime
from tidings.scheduler import Worker
from tidings.sending.devsmtp import LocalSMTPServer, MemoryHandler

POSTGRES_ADMIN_URL = os.environ.get(
    "TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# A Monday, 08:00 UTC: before the send window opens in Europe and America.
MONDAY = datetime(2026, 10, 19, 8, 0, tzinfo=UTC)
# Every table of the schema, emptied between PostgreSQL tests (a new table cannot be missed).
TABLES = tuple(table.name for table in Base.metadata.sorted_tables)


# ----------------------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test gets a copy (migrating is the slow part)."""
    path = tmp_path_factory.mktemp("template") / "tidings.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated with Alembic."""
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true but unreachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    name = f"tidings_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite file of this test's own."""
    path = tmp_path / "tidings.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The session's PostgreSQL database, emptied for this test. For tests of what only
    PostgreSQL does (several workers on one database)."""
    engine = make_engine(postgres_database)
    with engine.begin() as conn:
        # DELETE, children first, and the id sequences restarted: for tables this small it is
        # ten times faster than TRUNCATE (which makes new files for every table).
        sequences = conn.scalars(text("SELECT sequence_name FROM information_schema.sequences"))
        conn.execute(
            text(
                "; ".join(
                    # The audit log refuses DELETE and TRUNCATE (triggers): the tests' owner
                    # turns them off for the moment it empties it.
                    [
                        "ALTER TABLE audit_log DISABLE TRIGGER USER",
                        "TRUNCATE audit_log",
                        "ALTER TABLE audit_log ENABLE TRIGGER USER",
                    ]
                    + [f"DELETE FROM {table}" for table in reversed(TABLES) if table != "audit_log"]
                    + [f"ALTER SEQUENCE {sequence} RESTART" for sequence in sequences]
                )
            )
        )
    engine.dispose()
    return postgres_database


# The PostgreSQL run of each test is in the full suite; the fast tier (-m "not slow") runs the
# SQLite one, so that it stays under two minutes.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs the test twice: on SQLite and on PostgreSQL."""
    return request.getfixturevalue(f"{request.param.replace('postgresql', 'postgres')}_url")


# ----------------------------------------------------------------------------- SMTP, clock


@pytest.fixture
def smtp_server() -> Iterator[LocalSMTPServer]:
    """A real aiosmtpd server on loopback; `smtp_server.handler.messages` holds what arrived."""
    with LocalSMTPServer(MemoryHandler()) as server:
        yield server


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(MONDAY)


@pytest.fixture
def settings(database_url: str, smtp_server: LocalSMTPServer) -> Settings:
    return Settings(
        database_url=database_url,
        transport="smtp",
        smtp_url=smtp_server.url,
        smtp_pool_size=2,
        base_url="https://news.example.org",
        secret_key="test-secret-key",
        from_address="kap@center.example.org",
        from_name="Center for Counseling",
        organization="Center for Counseling",
        postal_address="100 Example Street, Springfield",
    )


@pytest.fixture
def runtime(settings: Settings, clock: FixedClock) -> Iterator[Runtime]:
    with Runtime.open(settings, clock) as rt:
        yield rt


@pytest.fixture
def worker(runtime: Runtime) -> Iterator[Worker]:
    with Worker(runtime) as w:
        yield w


@pytest.fixture
def kap(runtime: Runtime) -> str:
    """The shipped KAP campaign, loaded."""
    with runtime.sessions.begin() as session:
        load_campaign(
            session, resolve_campaign_dir("kap-benefits"), runtime.settings, runtime.clock.now()
        )
    return "kap-benefits"


# ----------------------------------------------------------------------------- the command


@pytest.fixture
def tidings(database_url: str, smtp_server: LocalSMTPServer) -> Tidings:
    """`tidings` as a shell runs it, on this test's database (twice: SQLite, PostgreSQL),
    with the real SMTP server."""
    return Tidings(database_url, smtp_server.url)


@pytest.fixture
def tidings_sqlite(sqlite_template: Path, tmp_path: Path) -> Tidings:
    """`tidings` on one migrated SQLite file and no mail server: for what comes before any
    database work (errors of the command line), where one database is enough."""
    return on_sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture(scope="session")
def kap_sqlite(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with the shipped KAP campaign loaded, made once for the whole run."""
    return sqlite_with_kap(sqlite_template, tmp_path_factory.mktemp("kap"))


@pytest.fixture
def tidings_kap(tidings: Tidings, request: pytest.FixtureRequest) -> Tidings:
    """`tidings` on a database where the shipped KAP campaign is loaded (at MONDAY_8)."""
    return load_kap(tidings, lambda: request.getfixturevalue("kap_sqlite"))


# ----------------------------------------------------------------------------- helpers


def received(server: LocalSMTPServer) -> list[EmailMessage]:
    """Messages the SMTP server got, parsed back with the stdlib."""
    return [
        email.message_from_bytes(data, policy=policy.default)  # type: ignore[misc]
        for _, _, data in server.handler.messages
    ]


def decide_sign_ups(runtime: Runtime) -> Counter[str]:
    """What the worker does first in each pass: decide the sign-ups the web received (the
    web only stores them). Returns how many of each outcome."""
    from tidings.subscribers.signups import handle_requests

    outcomes: Counter[str] = Counter()
    while True:
        decided = handle_requests(
            runtime.sessions, runtime.clock, runtime.settings, runtime.secret()
        )
        outcomes += decided.outcomes
        if not decided.more:
            return outcomes


def run_for(
    worker: Worker,
    clock: FixedClock,
    duration: timedelta,
    max_step: timedelta = timedelta(hours=12),
) -> None:
    """Advance simulated time by `duration`, ticking the engine at every moment something is
    due and at least every `max_step` (as a scheduler that ticks all the time would)."""
    end = clock.now() + duration
    while True:
        worker.tick()
        if clock.now() >= end:
            return
        upcoming = worker.next_event()
        target = clock.now() + max_step
        if upcoming is not None and clock.now() < upcoming < target:
            target = upcoming
        clock.set(min(target, end))
