"""The schema: the models and the migrations agree, the database refuses a state the code
does not know (CHECK constraints), and migrating a database that holds data keeps every row."""

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from tidings.db import MIGRATIONS, SCHEMA_HEAD, make_engine, upgrade
from tidings.db.models import Base, Subscriber

NOW = datetime(2026, 10, 19, 8, 0, tzinfo=UTC)


def test_the_schema_this_code_needs_is_alembics_head():
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


def test_the_migrated_database_is_what_the_models_describe(database_url):
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


@pytest.mark.parametrize(
    ("table", "row"),
    [
        ("subscribers", {"status": "actve"}),
        ("deliveries", {"status": "sending-ish"}),
        ("deliveries", {"kind": "newsletter"}),
        ("enrollments", {"status": "done"}),
        ("campaigns", {"status": "stopped"}),
        ("campaigns", {"kind": "drip"}),
        ("broadcast_schedules", {"state": "later"}),
    ],
)
def test_an_unknown_state_is_refused_by_the_database(database_url, table, row):
    engine = make_engine(database_url)
    column, value = next(iter(row.items()))
    try:
        refused = pytest.raises(IntegrityError, match=f"ck_{table}_{column}|CHECK constraint")
        with refused, engine.begin() as connection:
            # Any row of the table will do: the constraint is checked on UPDATE as well.
            connection.execute(
                insert(Subscriber.__table__).values(
                    email="ann@example.org",
                    name="",
                    timezone="UTC",
                    status="active",
                    key="k1",
                    attributes={},
                    created_at=NOW,
                    updated_at=NOW,
                    soft_bounces=0,
                )
            )
            _row_of(connection, table)
            connection.execute(text(f"UPDATE {table} SET {column} = :v"), {"v": value})
    finally:
        engine.dispose()


def _row_of(connection, table: str) -> None:
    """One valid row in `table` (and what it refers to)."""
    now = NOW.replace(tzinfo=None)
    if table == "subscribers":
        return
    connection.execute(
        text(
            "INSERT INTO campaigns (id, slug, name, kind, trigger, status, bounce_check_after_id,"
            " definition, content_sha256, created_at, loaded_at) VALUES"
            " (1, 'c', 'C', 'sequence', 'confirm', 'active', 0, '{}', 'x', :n, :n)"
        ),
        {"n": now},
    )
    if table == "enrollments":
        connection.execute(
            text(
                "INSERT INTO enrollments (subscriber_id, campaign_id, status, next_position,"
                " created_at, updated_at) SELECT id, 1, 'active', 1, :n, :n FROM subscribers"
            ),
            {"n": now},
        )
    if table == "deliveries":
        connection.execute(
            text(
                "INSERT INTO deliveries (kind, subscriber_id, status, attempts, next_attempt_at,"
                " message_id, created_at, updated_at) SELECT 'confirmation', id, 'queued', 0,"
                " :n, 'm@x', :n, :n FROM subscribers"
            ),
            {"n": now},
        )
    if table == "broadcast_schedules":
        connection.execute(
            text(
                "INSERT INTO broadcast_schedules (campaign_id, state, audience,"
                " after_subscriber_id, planned, held, scheduled_at, updated_at) VALUES"
                " (1, 'scheduled', '{}', 0, 0, 0, :n, :n)"
            ),
            {"n": now},
        )


def test_migrating_a_sqlite_database_with_data_keeps_every_row(tmp_path: Path):
    """SQLite alters a table by copying it: with foreign keys on, dropping the old
    `subscribers` would cascade to consent events and deliveries. Nothing may be lost."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0004")
    db = sqlite3.connect(tmp_path / "old.db")
    db.execute(
        "INSERT INTO subscribers (id, email, name, timezone, status, key, attributes,"
        " created_at, updated_at, soft_bounces) VALUES"
        " (1, 'ann@example.org', 'Ann', 'UTC', 'active', 'k', '{}', '2026-10-19', '2026-10-19', 0)"
    )
    db.execute(
        "INSERT INTO consent_events (subscriber_id, kind, source, created_at)"
        " VALUES (1, 'imported', 'cli', '2026-10-19')"
    )
    db.execute(
        "INSERT INTO deliveries (kind, subscriber_id, status, attempts, next_attempt_at,"
        " message_id, created_at, updated_at) VALUES"
        " ('confirmation', 1, 'sent', 1, '2026-10-19', 'm@x', '2026-10-19', '2026-10-19')"
    )
    db.commit()
    db.close()
    upgrade(url)
    db = sqlite3.connect(tmp_path / "old.db")
    counts = [
        db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("subscribers", "consent_events", "deliveries")
    ]
    version = db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    foreign_keys_ok = db.execute("PRAGMA foreign_key_check").fetchall() == []
    db.close()
    assert (counts, version, foreign_keys_ok) == ([1, 1, 1], SCHEMA_HEAD, True)


def test_steps_stored_before_0007_keep_the_send_window_and_their_deliveries(tmp_path: Path):
    """0007 adds steps.send_window (SQLite copies the table): every step stored before it is
    held to its campaign's window, as it was, and the deliveries that name it stay."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0006")
    db = sqlite3.connect(tmp_path / "old.db")
    db.execute(
        "INSERT INTO subscribers (id, email, name, timezone, status, key, attributes,"
        " created_at, updated_at, soft_bounces) VALUES"
        " (1, 'ann@example.org', 'Ann', 'UTC', 'active', 'k', '{}', '2026-10-19', '2026-10-19', 0)"
    )
    db.execute(
        "INSERT INTO campaigns (id, slug, name, kind, trigger, status, bounce_check_after_id,"
        " definition, content_sha256, created_at, loaded_at) VALUES"
        " (1, 'c', 'C', 'sequence', 'confirm', 'active', 0, '{}', 'x', '2026-10-19', '2026-10-19')"
    )
    db.execute(
        "INSERT INTO steps (id, campaign_id, key, position, delay_seconds, subject, preheader,"
        " source, source_file, compiled, content_sha256, created_at, updated_at) VALUES"
        " (1, 1, 'welcome', 1, 0, 'Hi', '', 'x', '00-welcome.md', '{}', 'h', '2026-10-19',"
        " '2026-10-19')"
    )
    db.execute(
        "INSERT INTO deliveries (kind, subscriber_id, campaign_id, step_id, status, attempts,"
        " next_attempt_at, message_id, created_at, updated_at) VALUES"
        " ('step', 1, 1, 1, 'sent', 1, '2026-10-19', 'm@x', '2026-10-19', '2026-10-19')"
    )
    db.commit()
    db.close()
    upgrade(url)
    db = sqlite3.connect(tmp_path / "old.db")
    steps = db.execute("SELECT key, send_window FROM steps").fetchall()
    deliveries = db.execute("SELECT step_id FROM deliveries").fetchall()
    db.close()
    assert (steps, deliveries) == ([("welcome", 1)], [(1,)])
