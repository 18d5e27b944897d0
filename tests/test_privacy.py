"""Data rights as a clinic's privacy officer would check them, through the command line against
real databases and a real SMTP server: an erasure leaves no copy of the address in the
database's files (SQLite's main file and its write-ahead log, read byte by byte); the
suppression list holds hashes keyed with the installation's own key, so a stolen copy of the
database cannot be tested against a known address, while entries from before the key keep
working; `export-data` hands out everything stored about the person."""

from __future__ import annotations

import hashlib
import hmac
import json
import mailbox
import sqlite3
from pathlib import Path

from cli_helpers import MONDAY_8, MONDAY_9, SECRET_KEY, Tidings, load_kap
from conftest import received
from sqlalchemy import func, select

import tidings.db
from tidings.clock import FixedClock
from tidings.config import Settings
from tidings.db import upgrade
from tidings.db.models import (
    AppSecret,
    Base,
    InboundMessage,
    SignUpRequest,
    Subscriber,
    Suppression,
)
from tidings.runtime import Runtime
from tidings.subscribers.lifecycle import Consent, add_subscriber
from tidings.subscribers.privacy import empty_the_write_ahead_log, erase_everywhere
from tidings.subscribers.suppressions import suppression_key

SAMPLES = Path(__file__).parent / "data" / "bounces"
# Tokens found nowhere else in a database: each is looked for in the files' bytes.
ADDRESS = "annabel.quist@example.org"
NAME = "Annabel Quist"
CITY = "Zanzibar Town"
OTHER_KEY = "another-signing-key-of-this-installation-0123"


def confirmed(tidings: Tidings, address: str, *args: str) -> None:
    tidings.ok("subscribers", "add", address, "--confirmed", "--evidence", "form", *args)


def suppression_key_value(tidings: Tidings) -> str:
    with tidings.session() as session:
        key = session.scalar(select(AppSecret.value).where(AppSecret.name == "suppression_key"))
    assert key
    return key


def everything_stored(tidings: Tidings) -> str:
    """Every row of every table, as text."""
    with tidings.session() as session:
        return "\n".join(
            repr(tuple(row))
            for table in Base.metadata.sorted_tables
            for row in session.execute(select(table))
        )


def a_history(tidings: Tidings, folder: Path) -> dict:
    """Ann signs up, confirms, is sent her confirmation and her first email through the real
    SMTP server; a mail server reports her mailbox full (a soft bounce, read from a Maildir);
    a sign-up of hers waits for the worker. Bob is there too. Returns her export."""
    tidings.ok("subscribers", "add", ADDRESS, "--name", NAME, "--timezone", "Europe/Paris")
    tidings.ok("subscribers", "update", ADDRESS, "--attr", f"city={CITY}")
    tidings.ok("subscribers", "confirm", ADDRESS)
    confirmed(tidings, "bob@example.org", "--name", "Bob")
    tidings.at(MONDAY_9)
    tidings.ok("send-due")
    data = json.loads(tidings.ok("subscribers", "export-data", ADDRESS, "--yes").stdout)
    welcome = next(d for d in data["deliveries"] if d["kind"] == "step")
    report = (SAMPLES / "postfix-delayed.eml").read_text(encoding="utf-8")
    report = report.replace("{VERP}", "").replace("{RCPT}", ADDRESS)
    box = mailbox.Maildir(folder / "bounces", create=True)
    box.add(report.replace("{MSGID}", welcome["message_id"]).encode())
    tidings.ok("bounces", "ingest", str(folder / "bounces"))
    with tidings.session() as session:  # as the web form stores it, before the worker decides
        session.add(
            SignUpRequest(
                email=ADDRESS,
                name=NAME,
                timezone="Europe/Paris",
                source="contact-form",
                ip="203.0.113.9",
                user_agent="Mozilla/5.0",
                received_at=MONDAY_9,
            )
        )
    return json.loads(tidings.ok("subscribers", "export-data", ADDRESS, "--yes").stdout)


# ----------------------------------------------------------------------------- erasure


def traces(database: Path) -> dict[str, int]:
    """How often each token appears in the bytes of the database's files (the file, its
    write-ahead log and its shared-memory index), whatever their case."""
    data = b"".join(
        path.read_bytes().lower() for path in sorted(database.parent.glob(database.name + "*"))
    )
    return {token: data.count(token.lower().encode()) for token in (ADDRESS, NAME, CITY)}


def test_after_an_erasure_no_database_file_holds_the_address(
    sqlite_url, smtp_server, kap_sqlite, tmp_path
):
    """The issue measured 112 copies of an erased address in the write-ahead log; deleted
    rows also stayed readable in the database file's free space."""
    tidings = load_kap(Tidings(sqlite_url, smtp_server.url), lambda: kap_sqlite)
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    # `tidings run` (the web pages and the scheduler) has the database open all along, so
    # the write-ahead log is not removed when a command closes it.
    running = sqlite3.connect(database, isolation_level=None)
    running.execute("PRAGMA journal_mode=WAL")
    running.execute("SELECT count(*) FROM subscribers").fetchone()
    try:
        data = a_history(tidings, tmp_path)
        assert data["profile"]["soft_bounces"] == 1 and data["bounce_reports"]
        tidings.ok(
            "suppressions",
            "add",
            ADDRESS,
            "--reason",
            "hard-bounce",
            "--detail",
            f"550 5.1.1 <{ADDRESS}>: no such user",
        )
        assert ADDRESS in {m["To"].addresses[0].addr_spec for m in received(smtp_server)}
        before = traces(database)
        assert all(before.values()), before  # the search can see them

        result = tidings.ok("subscribers", "erase", ADDRESS, "--yes")
        assert "erased" in result.stdout and "warning" not in result.output

        assert traces(database) == {ADDRESS: 0, NAME: 0, CITY: 0}
        with tidings.session() as session:  # whatever the SQLite build's own default
            assert session.connection().exec_driver_sql("PRAGMA secure_delete").scalar() == 1
        wal = database.with_name(database.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0, "the log is emptied"
        # What was not erased is all there, in the database file itself.
        assert b"bob@example.org" in database.read_bytes()
        assert running.execute("SELECT email FROM subscribers").fetchall() == [("bob@example.org",)]
    finally:
        running.close()
    assert "is on the suppression list" in tidings.fails("subscribers", "add", ADDRESS)


def test_a_log_held_by_a_reader_is_reported_and_emptied_once_it_lets_go(sqlite_url, monkeypatch):
    # A reader in the middle of a long read keeps the log from being emptied; the erasure
    # does not wait for it longer than the busy timeout (30 s in production; shortened here).
    monkeypatch.setattr(tidings.db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    runtime = Runtime.open(Settings(database_url=sqlite_url), FixedClock(MONDAY_8))
    try:
        with runtime.sessions.begin() as session:
            add_subscriber(session, MONDAY_8, ADDRESS, Consent(source="cli", evidence="x"), NAME)
        reader = sqlite3.connect(runtime.engine.url.database, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM subscribers").fetchone()  # an old snapshot
        report = erase_everywhere(runtime.sessions, ADDRESS, MONDAY_8)
        assert report.log_emptied is False
        reader.execute("COMMIT")
        reader.close()
        assert empty_the_write_ahead_log(runtime.engine) is True
        database = Path(str(runtime.engine.url.database))
        assert traces(database)[ADDRESS] == 0
    finally:
        runtime.close()


def test_erasure_forgets_sign_up_requests_and_whose_inbound_mail_it_was(tidings_kap, tmp_path):
    tidings = tidings_kap
    a_history(tidings, tmp_path)
    with tidings.session() as session:
        inbound = session.scalar(select(func.count()).select_from(InboundMessage))
    tidings.ok("subscribers", "erase", ADDRESS, "--yes")
    stored = everything_stored(tidings)
    for trace in (ADDRESS, NAME, CITY, "203.0.113.9"):
        assert trace.lower() not in stored.lower(), trace
    with tidings.session() as session:
        assert session.scalar(select(func.count()).select_from(SignUpRequest)) == 0
        rows = session.scalars(select(InboundMessage)).all()
        assert len(rows) == inbound, "that a report came stays (it is not acted on twice)"
        assert all(r.subscriber_id is None and r.delivery_id is None for r in rows)


# ----------------------------------------------------------------------------- export


def test_export_data_holds_bounces_inbound_mail_sign_ups_and_the_suppression(tidings_kap, tmp_path):
    tidings = tidings_kap
    data = a_history(tidings, tmp_path)
    assert data["profile"]["soft_bounces"] == 1
    welcome = next(d for d in data["deliveries"] if d["kind"] == "step")
    (bounce,) = data["bounce_reports"]
    assert (bounce["kind"], bounce["status"], bounce["message_id"], bounce["campaign"]) == (
        "soft",
        "4.2.2",
        welcome["message_id"],
        "kap-benefits",
    )
    assert bounce["received_at"] == MONDAY_9.isoformat()
    assert [(m["kind"], m["source"]) for m in data["inbound_messages"]] == [("bounce", "maildir")]
    assert len(data["inbound_messages"][0]["message_sha256"]) == 64
    (request,) = data["sign_up_requests"]
    assert (request["source"], request["ip"], request["user_agent"]) == (
        "contact-form",
        "203.0.113.9",
        "Mozilla/5.0",
    )
    assert all("seconds_after_email" in e for e in data["consent_events"])
    assert data["suppression"] is None
    assert "bounces" in data["about"]

    tidings.ok("suppressions", "add", ADDRESS, "--reason", "complaint", "--detail", "ticket 9")
    data = json.loads(tidings.ok("subscribers", "export-data", ADDRESS, "--yes").stdout)
    assert (data["suppression"]["reason"], data["suppression"]["detail"]) == (
        "complaint",
        "ticket 9",
    )
    bob = json.loads(tidings.ok("subscribers", "export-data", "bob@example.org").stdout)
    assert bob["bounce_reports"] == bob["inbound_messages"] == bob["sign_up_requests"] == []
    assert ADDRESS not in json.dumps(bob)


# ----------------------------------------------------------------------------- keyed list


def test_the_suppression_list_is_keyed_so_a_stolen_copy_cannot_be_tested(tidings):
    confirmed(tidings, "ann@example.org")
    tidings.ok("suppressions", "add", "ann@example.org", "stranger@example.org")
    key = suppression_key_value(tidings)
    with tidings.session() as session:
        entries = session.scalars(select(Suppression).order_by(Suppression.id)).all()
    assert [e.email_sha256 for e in entries] == [
        hmac.new(key.encode(), address.encode(), "sha256").hexdigest()
        for address in ("ann@example.org", "stranger@example.org")
    ]
    assert all(e.keyed for e in entries)
    # Whoever has the file and a list of addresses to try finds no plain hash of any of them.
    stored = everything_stored(tidings)
    for address in ("ann@example.org", "stranger@example.org"):
        assert hashlib.sha256(address.encode()).hexdigest() not in stored
    assert key != SECRET_KEY

    # The key is the installation's own, not the link-signing key: another signing key
    # changes nothing about who is suppressed.
    with_other_key = {"TIDINGS_SECRET_KEY": OTHER_KEY}
    rows = json.loads(
        tidings.ok(
            "suppressions", "list", "--email", "Stranger@example.org", "--json", **with_other_key
        ).stdout
    )
    assert [(r["email"], r["reason"], r["keyed"]) for r in rows] == [
        ("stranger@example.org", "manual", True)
    ]
    output = tidings.fails("subscribers", "add", "stranger@example.org", **with_other_key)
    assert "stranger@example.org is on the suppression list" in output
    listed = tidings.json("suppressions", "list")
    assert [r["email"] for r in listed] == ["ann@example.org", ""], "a subscriber's shows"


def test_the_key_is_never_shown(tidings, tmp_path):
    confirmed(tidings, "ann@example.org")
    first = tidings.ok("-vv", "suppressions", "add", "ann@example.org", "other@example.org")
    key = suppression_key_value(tidings)
    path = tmp_path / "list.csv"
    path.write_text("email\nann@example.org\nnew@example.org\n")
    shown = [
        first,
        tidings.ok("-vv", "suppressions", "list", "--json"),
        tidings.ok("-vv", "subscribers", "import", str(path), "--evidence", "form", "--json"),
        tidings.ok("-vv", "subscribers", "export-data", "new@example.org"),
        tidings.ok("-vv", "subscribers", "erase", "new@example.org", "--yes"),
    ]
    for result in shown:
        assert key not in result.output
    with tidings.session() as session:
        loaded = suppression_key(session)
    assert key not in repr(loaded) and key not in str(loaded)


def test_entries_from_before_the_key_keep_working_and_become_keyed(tidings_kap, tmp_path):
    """Migration 0006 could not rehash the entries of erased people (only their plain hash
    was left): those stay plain (keyed false) and must still be found, by every path."""
    tidings = tidings_kap
    confirmed(tidings, "late@example.org")  # the welcome is queued for her
    with tidings.session() as session:
        plain = (("gone@example.org", "hard-bounce"), ("late@example.org", "manual"))
        for address, reason in plain:
            session.add(
                Suppression(
                    email_sha256=hashlib.sha256(address.encode()).hexdigest(),
                    keyed=False,
                    reason=reason,
                    detail=None,
                    created_at=MONDAY_8,
                )
            )
    output = tidings.fails("subscribers", "add", "gone@example.org")
    assert "gone@example.org is on the suppression list" in output
    path = tmp_path / "list.csv"
    path.write_text("email\nGone@example.org\nnew@example.org\n")
    result = tidings.ok("subscribers", "import", str(path), "--evidence", "form")
    assert result.stdout.startswith("created 1, updated 0, unchanged 0, suppressed 1")
    rows = tidings.json("suppressions", "list", "--email", "gone@example.org")
    assert [(r["email"], r["reason"], r["keyed"]) for r in rows] == [
        ("gone@example.org", "hard-bounce", False)
    ]
    listed = {r["hash"]: r for r in tidings.json("suppressions", "list")}
    assert listed[hashlib.sha256(b"late@example.org").hexdigest()]["email"] == "late@example.org"
    tidings.at(MONDAY_9)  # the send-time check finds a plain entry too
    tidings.ok("send-due")
    info = tidings.json("subscribers", "show", "late@example.org")
    assert [d["status"] for d in info["deliveries"] if d["kind"] == "step"] == ["skipped"]

    # Once an address is seen again, its entry is rehashed with the key; the plain hash goes.
    result = tidings.ok("suppressions", "add", "gone@example.org")
    assert result.stdout.strip() == "gone@example.org: was already suppressed (hard-bounce)"
    tidings.ok("subscribers", "erase", "late@example.org", "--yes")
    key = suppression_key_value(tidings)
    with tidings.session() as session:
        entries = {e.email_sha256: e for e in session.scalars(select(Suppression))}
    for address in ("gone@example.org", "late@example.org"):
        entry = entries[hmac.new(key.encode(), address.encode(), "sha256").hexdigest()]
        assert entry.keyed
        assert hashlib.sha256(address.encode()).hexdigest() not in entries
    assert len(entries) == 2


def test_a_list_from_before_the_key_works_after_the_upgrade(tmp_path):
    """Migration 0006 rehashes the entries whose address a subscriber still has, by the rule
    tidings looks them up with; the entries of people erased before stay plain and found."""
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    upgrade(url, "0005")
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO subscribers (id, email, name, timezone, status, key, attributes,"
        " created_at, updated_at, unsubscribed_at, soft_bounces) VALUES (1, 'ann@example.org',"
        " 'Ann', 'UTC', 'unsubscribed', 'k', '{}', '2026-01-05', '2026-01-05', '2026-01-05', 0)"
    )
    for address, reason in (("ann@example.org", "unsubscribe"), ("gone@example.org", "manual")):
        db.execute(
            "INSERT INTO suppressions (email_sha256, reason, created_at) VALUES (?, ?, ?)",
            (hashlib.sha256(address.encode()).hexdigest(), reason, "2026-01-05"),
        )
    db.commit()
    db.close()
    upgrade(url)
    tidings = Tidings(url, "smtp://127.0.0.1:25")
    rows = tidings.json("suppressions", "list")
    assert [(r["email"], r["reason"], r["keyed"]) for r in rows] == [
        ("ann@example.org", "unsubscribe", True),
        ("", "manual", False),
    ]
    assert (
        rows[0]["hash"]
        == hmac.new(
            suppression_key_value(tidings).encode(), b"ann@example.org", "sha256"
        ).hexdigest()
    )
    output = tidings.fails("subscribers", "add", "gone@example.org")
    assert "gone@example.org is on the suppression list" in output
    result = tidings.ok("suppressions", "add", "ann@example.org")
    assert result.stdout.strip() == "ann@example.org: was already suppressed (unsubscribe)"


def test_keyed_entries_whose_key_is_lost_are_refused_not_ignored(tidings):
    tidings.ok("suppressions", "add", "ann@example.org", "--reason", "complaint")
    with tidings.session() as session:
        session.delete(session.get(AppSecret, "suppression_key"))
    for args in (("subscribers", "add", "ann@example.org"), ("suppressions", "list")):
        output = tidings.fails(*args)
        assert "the installation's suppression key" in output and "is missing" in output
        assert "restore that row from a backup" in output
    with tidings.session() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
        assert session.get(AppSecret, "suppression_key") is None, "no new key replaces it"
