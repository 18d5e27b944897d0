"""`tidings subscribers ...` driven as a user would, against a real database (SQLite and
PostgreSQL) and a real SMTP server; plus the errors every command shares (settings, schema)."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import pytest
from cli_helpers import (
    BASE_URL,
    FROM_ADDRESS,
    MONDAY_8,
    MONDAY_9,
    SECRET_KEY,
    Tidings,
)
from conftest import received
from sqlalchemy import select

from tidings.db.models import Subscriber
from tidings.sending.devsmtp import free_port
from tidings.subscribers.tokens import read_token

NOTHING_STORED = {
    "subscribers": 0,
    "consent_events": 0,
    "suppressions": 0,
    "deliveries": 0,
    "enrollments": 0,
}


def stored(tidings: Tidings) -> dict[str, int]:
    counts = tidings.counts()
    return {k: counts[k] for k in NOTHING_STORED}


def show(tidings: Tidings, email: str) -> dict:
    return tidings.json("subscribers", "show", email)


# ----------------------------------------------------------------------------- add


def test_add_creates_a_pending_subscriber_and_a_confirmation_email_arrives(tidings, smtp_server):
    result = tidings.ok(
        "subscribers", "add", "Ann@Example.ORG", "--name", "Ann Lee", "--timezone", "Europe/Paris"
    )
    assert "ann@example.org: added (pending)" in result.stdout
    assert "confirmation email sent" in result.stdout

    info = show(tidings, "ann@example.org")
    assert info["email"] == "ann@example.org"  # normalized
    assert info["name"] == "Ann Lee"
    assert info["timezone"] == "Europe/Paris"
    assert info["status"] == "pending"
    assert info["confirmed_at"] is None
    assert [(e["kind"], e["source"]) for e in info["consent"]] == [("requested", "cli")]
    assert info["enrollments"] == []
    assert [(d["kind"], d["status"], d["attempts"]) for d in info["deliveries"]] == [
        ("confirmation", "sent", 1)
    ]

    # The email really reached the SMTP server, addressed to her.
    assert len(smtp_server.handler.messages) == 1
    mail_from, rcpt_tos, _ = smtp_server.handler.messages[0]
    assert (mail_from, rcpt_tos) == (FROM_ADDRESS, ["ann@example.org"])
    (message,) = received(smtp_server)
    assert message["Subject"] == "Please confirm your subscription"
    assert message["To"].addresses[0].addr_spec == "ann@example.org"
    assert message["To"].addresses[0].display_name == "Ann Lee"
    assert message["From"].addresses[0].addr_spec == FROM_ADDRESS

    # One-click unsubscribe (RFC 8058), pointing under the public base URL.
    unsubscribe = str(message["List-Unsubscribe"])
    assert re.search(rf"<{re.escape(BASE_URL)}/unsubscribe/[^>]+>", unsubscribe), unsubscribe
    assert "<mailto:" in unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # The confirm link is in both parts, under the base URL, and carries a genuine token for
    # this subscriber.
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    links = re.findall(rf"{re.escape(BASE_URL)}/confirm/([A-Za-z0-9_.-]+)", text)
    assert links, text
    assert re.search(rf'href="{re.escape(BASE_URL)}/confirm/{re.escape(links[0])}"', html)
    with tidings.session() as session:
        key = session.scalars(select(Subscriber.key)).one()
    assert read_token(SECRET_KEY, "confirm", links[0]) == key
    assert "TIDINGSVAR" not in text + html


def test_add_with_defaults_uses_utc_and_no_name(tidings, smtp_server):
    tidings.ok("subscribers", "add", "bob@example.org")
    info = show(tidings, "bob@example.org")
    assert (info["name"], info["timezone"], info["status"]) == ("", "UTC", "pending")
    (message,) = received(smtp_server)
    assert message["To"].addresses[0].addr_spec == "bob@example.org"


def test_names_reach_the_to_header_intact(tidings, smtp_server):
    names = {
        "zoe@example.org": "Zoë Müller-Łukasiewicz",
        "lee@example.org": "Lee, Ann",
        "boss@example.org": 'Ann "The Boss" Lee',
    }
    for address, name in names.items():
        tidings.ok("subscribers", "add", address, "--name", name)
    for message in received(smtp_server):
        (to,) = message["To"].addresses
        assert to.display_name == names[to.addr_spec]
    assert len(smtp_server.handler.messages) == 3


def test_add_confirmed_with_evidence_is_active_and_enrolled_without_confirmation_email(
    tidings_kap, smtp_server
):
    tidings = tidings_kap
    result = tidings.ok(
        "subscribers",
        "add",
        "bob@example.org",
        "--confirmed",
        "--evidence",
        "signed paper form, 2026 open day",
    )
    assert "bob@example.org: added (active)" in result.stdout
    assert "confirmation" not in result.output
    assert smtp_server.handler.messages == []

    info = show(tidings, "bob@example.org")
    assert info["status"] == "active"
    assert info["confirmed_at"] == MONDAY_8.isoformat()
    assert [e["kind"] for e in info["consent"]] == ["imported", "confirmed"]
    assert info["consent"][0]["evidence"] == "signed paper form, 2026 open day"
    assert info["deliveries"] == []
    (enrollment,) = info["enrollments"]
    assert enrollment["campaign"] == "kap-benefits"
    assert enrollment["status"] == "active"
    assert enrollment["next_step"] == 1
    # The welcome is due at once, not when the window opens (its send_window = false).
    assert enrollment["next_due_at"] == MONDAY_8.isoformat()


def test_add_confirmed_before_any_campaign_is_loaded_is_active_and_not_enrolled(tidings):
    tidings.ok("subscribers", "add", "bob@example.org", "--confirmed", "--evidence", "form")
    info = show(tidings, "bob@example.org")
    assert info["status"] == "active"
    assert info["enrollments"] == []


def test_add_confirmed_without_evidence_fails_and_stores_nothing(tidings, smtp_server):
    output = tidings.fails("subscribers", "add", "bob@example.org", "--confirmed")
    assert "evidence" in output
    output = tidings.fails(
        "subscribers", "add", "bob@example.org", "--confirmed", "--evidence", "   "
    )
    assert "evidence" in output
    assert stored(tidings) == NOTHING_STORED
    assert smtp_server.handler.messages == []


def test_evidence_without_confirmed_is_a_usage_error(tidings, smtp_server):
    output = tidings.fails("subscribers", "add", "bob@example.org", "--evidence", "form", code=2)
    assert "--evidence goes with --confirmed" in output
    assert stored(tidings) == NOTHING_STORED
    assert smtp_server.handler.messages == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["not-an-email"], "not a valid email address"),
        (["ann@"], "not a valid email address"),
        (["ann@example..org"], "not a valid email address"),
        (["ann@example.org\r\nBcc: eve@example.org"], "line breaks"),
        (["ann@example.org", "--timezone", "Mars/Olympus"], "unknown timezone 'Mars/Olympus'"),
        (["ann@example.org", "--timezone", "EST5"], "unknown timezone 'EST5'"),
        (["ann@example.org", "--timezone", "../../etc/passwd"], "unknown timezone"),
        (["ann@example.org", "--name", "Ann\r\nBcc: eve@example.org"], "name"),
        (["ann@example.org", "--name", "Ann\nLee"], "name"),
        (["ann@example.org", "--name", "A" * 201], "name"),
    ],
    ids=[
        "no-at",
        "no-domain",
        "double-dot",
        "crlf-in-address",
        "mars",
        "est5",
        "path-as-timezone",
        "crlf-in-name",
        "lf-in-name",
        "name-too-long",
    ],
)
def test_add_rejects_bad_input_with_a_message_and_stores_nothing(
    tidings, smtp_server, args, expected
):
    output = tidings.fails("subscribers", "add", *args)
    assert expected in output
    assert output.startswith("Error: ")
    assert stored(tidings) == NOTHING_STORED
    assert smtp_server.handler.messages == []


def test_abbreviated_timezone_error_says_to_use_a_region_name(tidings):
    output = tidings.fails("subscribers", "add", "ann@example.org", "--timezone", "EST5")
    assert "America/New_York" in output


def test_adding_the_same_address_twice_fails_and_stores_nothing_more(tidings, smtp_server):
    tidings.ok("subscribers", "add", "ann@example.org")
    before = stored(tidings)
    for again in ("ann@example.org", "ANN@example.org", " Ann@Example.Org "):
        output = tidings.fails("subscribers", "add", again, "--name", "Other Ann")
        assert "ann@example.org is already a subscriber (status: pending)" in output
    output = tidings.fails(
        "subscribers", "add", "ann@example.org", "--confirmed", "--evidence", "form"
    )
    assert "already a subscriber" in output
    assert stored(tidings) == before
    assert len(smtp_server.handler.messages) == 1  # only the first confirmation
    assert show(tidings, "ann@example.org")["name"] == ""


def test_an_unsubscribed_address_cannot_be_added_again(tidings, smtp_server):
    tidings.ok("subscribers", "add", "ann@example.org")
    tidings.ok("subscribers", "unsubscribe", "ann@example.org")
    before = stored(tidings)
    assert before["suppressions"] == 1

    for again in (["ann@example.org"], ["Ann@EXAMPLE.org", "--confirmed", "--evidence", "form"]):
        output = tidings.fails("subscribers", "add", *again)
        assert "ann@example.org is on the suppression list" in output
    assert stored(tidings) == before
    assert show(tidings, "ann@example.org")["status"] == "unsubscribed"
    assert len(smtp_server.handler.messages) == 1


def test_add_when_the_mail_server_is_down_keeps_the_confirmation_queued(tidings, smtp_server):
    down = f"smtp://127.0.0.1:{free_port()}"
    result = tidings.ok("subscribers", "add", "ann@example.org", TIDINGS_SMTP_URL=down)
    assert "ann@example.org: added (pending)" in result.stdout
    assert "confirmation email queued" in result.stderr
    (delivery,) = show(tidings, "ann@example.org")["deliveries"]
    assert delivery["status"] == "retry"
    assert "connection to 127.0.0.1" in delivery["outcome"]

    # The server is back an hour later: send-due delivers it.
    tidings.at(MONDAY_8 + timedelta(hours=1))
    assert "sent 1" in tidings.ok("send-due").stdout
    (message,) = received(smtp_server)
    assert message["Subject"] == "Please confirm your subscription"


# ----------------------------------------------------------------------------- confirm


def test_confirm_activates_records_consent_and_enrolls(tidings_kap, smtp_server):
    tidings = tidings_kap
    tidings.ok("subscribers", "add", "ann@example.org", "--timezone", "America/New_York")
    tidings.at(MONDAY_8 + timedelta(minutes=30))
    result = tidings.ok("subscribers", "confirm", "ANN@example.org")
    assert result.stdout.strip() == "ann@example.org: active, enrolled in kap-benefits"

    info = show(tidings, "ann@example.org")
    assert info["status"] == "active"
    assert info["confirmed_at"] == (MONDAY_8 + timedelta(minutes=30)).isoformat()
    assert [(e["kind"], e["source"]) for e in info["consent"]] == [
        ("requested", "cli"),
        ("confirmed", "cli"),
    ]
    (enrollment,) = info["enrollments"]
    assert (enrollment["campaign"], enrollment["status"], enrollment["next_step"]) == (
        "kap-benefits",
        "active",
        1,
    )
    # The welcome is due at once: 04:30 in New York, not held to the window.
    assert enrollment["next_due_at"] == (MONDAY_8 + timedelta(minutes=30)).isoformat()

    # Confirming again changes nothing and enrolls nobody twice.
    assert tidings.ok("subscribers", "confirm", "ann@example.org").stdout.strip() == (
        "ann@example.org: active"
    )
    assert len(show(tidings, "ann@example.org")["consent"]) == 2

    # At the next pass the welcome goes out, and only to her.
    assert "sent 1" in tidings.ok("send-due").stdout
    subjects = [m["Subject"] for m in received(smtp_server)]
    assert subjects == ["Please confirm your subscription", "Welcome, and what to expect"]


def test_a_queued_confirmation_is_not_sent_once_confirmed(tidings, smtp_server):
    down = f"smtp://127.0.0.1:{free_port()}"
    tidings.ok("subscribers", "add", "ann@example.org", TIDINGS_SMTP_URL=down)
    tidings.ok("subscribers", "confirm", "ann@example.org")
    tidings.at(MONDAY_8 + timedelta(hours=2))
    assert "sent 0" in tidings.ok("send-due").stdout
    assert smtp_server.handler.messages == []
    (delivery,) = show(tidings, "ann@example.org")["deliveries"]
    assert delivery["status"] == "skipped"


def test_confirm_unknown_email_fails(tidings):
    tidings.ok("subscribers", "add", "ann@example.org")
    output = tidings.fails("subscribers", "confirm", "nobody@example.org")
    assert "no subscriber nobody@example.org" in output
    output = tidings.fails("subscribers", "confirm", "not an address")
    assert "not a valid email address" in output
    assert show(tidings, "ann@example.org")["status"] == "pending"


def test_confirm_an_unsubscribed_subscriber_fails(tidings):
    tidings.ok("subscribers", "add", "ann@example.org")
    tidings.ok("subscribers", "unsubscribe", "ann@example.org")
    output = tidings.fails("subscribers", "confirm", "ann@example.org")
    assert "only a pending subscriber can be confirmed" in output
    info = show(tidings, "ann@example.org")
    assert info["status"] == "unsubscribed"
    assert "confirmed" not in [e["kind"] for e in info["consent"]]


# ----------------------------------------------------------------------------- unsubscribe


def test_unsubscribe_skips_queued_deliveries_and_nothing_more_is_sent(tidings_kap, smtp_server):
    tidings = tidings_kap
    for address in ("ann@example.org", "bob@example.org"):
        tidings.ok("subscribers", "add", address, "--confirmed", "--evidence", "form")

    # 09:00: both welcomes are planned, but the mail server is down: both wait for a retry.
    tidings.at(MONDAY_9)
    down = f"smtp://127.0.0.1:{free_port()}"
    assert "planned 2, sent 0, retrying 2" in tidings.ok("send-due", TIDINGS_SMTP_URL=down).stdout

    result = tidings.ok("subscribers", "unsubscribe", "Ann@example.org")
    assert result.stdout.strip() == "ann@example.org: unsubscribed"
    info = show(tidings, "ann@example.org")
    assert info["status"] == "unsubscribed"
    assert info["unsubscribed_at"] == MONDAY_9.isoformat()
    assert info["consent"][-1]["kind"] == "unsubscribed"
    assert [e["status"] for e in info["enrollments"]] == ["exited"]
    (delivery,) = info["deliveries"]
    assert delivery["status"] == "skipped"
    assert "unsubscribed" in delivery["outcome"]

    # The server is back: Bob gets his welcome, Ann nothing, then or days later.
    tidings.at(MONDAY_9 + timedelta(hours=2))
    assert "sent 1" in tidings.ok("send-due").stdout
    tidings.at(MONDAY_9 + timedelta(days=2, hours=2))
    assert "sent 1" in tidings.ok("send-due").stdout
    rcpts = [rcpt for _, rcpt, _ in smtp_server.handler.messages]
    assert rcpts == [["bob@example.org"], ["bob@example.org"]]
    assert show(tidings, "ann@example.org")["deliveries"] == [delivery]

    # Unsubscribing twice is harmless.
    result = tidings.ok("subscribers", "unsubscribe", "ann@example.org")
    assert "was already unsubscribed" in result.stdout


def test_unsubscribe_a_pending_subscriber_skips_the_queued_confirmation(tidings, smtp_server):
    down = f"smtp://127.0.0.1:{free_port()}"
    tidings.ok("subscribers", "add", "ann@example.org", TIDINGS_SMTP_URL=down)
    tidings.ok("subscribers", "unsubscribe", "ann@example.org")
    tidings.at(MONDAY_8 + timedelta(hours=2))
    assert "sent 0" in tidings.ok("send-due").stdout
    assert smtp_server.handler.messages == []
    (delivery,) = show(tidings, "ann@example.org")["deliveries"]
    assert delivery["status"] == "skipped"


def test_unsubscribe_unknown_email_fails(tidings):
    output = tidings.fails("subscribers", "unsubscribe", "nobody@example.org")
    assert "no subscriber nobody@example.org" in output
    assert stored(tidings) == NOTHING_STORED


# ----------------------------------------------------------------------------- list, show


def add_three(tidings: Tidings) -> None:
    tidings.ok("subscribers", "add", "ann@example.org", "--name", "Ann", "--timezone", "Asia/Tokyo")
    tidings.ok(
        "subscribers", "add", "bob@example.org", "--name", "Bob", "--confirmed", "--evidence", "x"
    )
    tidings.ok("subscribers", "add", "cy@example.org", "--name", "Zoë, Jr.")
    tidings.ok("subscribers", "unsubscribe", "cy@example.org")


def test_list_json_and_status_filter(tidings):
    assert tidings.json("subscribers", "list") == []
    add_three(tidings)
    rows = tidings.json("subscribers", "list")
    assert [(r["email"], r["name"], r["timezone"], r["status"]) for r in rows] == [
        ("ann@example.org", "Ann", "Asia/Tokyo", "pending"),
        ("bob@example.org", "Bob", "UTC", "active"),
        ("cy@example.org", "Zoë, Jr.", "UTC", "unsubscribed"),
    ]
    assert rows[0]["created_at"] == MONDAY_8.isoformat()
    assert rows[0]["confirmed_at"] is None
    assert rows[1]["confirmed_at"] == MONDAY_8.isoformat()

    for status, expected in (
        ("pending", ["ann@example.org"]),
        ("active", ["bob@example.org"]),
        ("unsubscribed", ["cy@example.org"]),
        ("bounced", []),
    ):
        rows = tidings.json("subscribers", "list", "--status", status)
        assert [r["email"] for r in rows] == expected, status


def test_list_csv(tidings):
    add_three(tidings)
    out = tidings.ok("subscribers", "list", "--csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["email", "name", "timezone", "status", "created_at", "confirmed_at"]
    assert [(r["email"], r["name"], r["status"]) for r in rows] == [
        ("ann@example.org", "Ann", "pending"),
        ("bob@example.org", "Bob", "active"),
        ("cy@example.org", "Zoë, Jr.", "unsubscribed"),
    ]
    assert rows[0]["confirmed_at"] == ""
    out = tidings.ok("subscribers", "list", "--status", "active", "--csv").stdout
    assert [r["email"] for r in csv.DictReader(io.StringIO(out))] == ["bob@example.org"]


def test_list_table_and_bad_status(tidings):
    add_three(tidings)
    out = tidings.ok("subscribers", "list").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["email", "name", "timezone", "status", "created_at", "confirmed_at"]
    assert len(lines) == 5
    assert "ann@example.org" in lines[2] and "Asia/Tokyo" in lines[2]
    output = tidings.fails("subscribers", "list", "--status", "happy", code=2)
    assert "happy" in output


def test_show_has_consent_history_position_and_deliveries(tidings_kap, smtp_server):
    tidings = tidings_kap
    tidings.ok("subscribers", "add", "ann@example.org", "--name", "Ann")
    tidings.ok("subscribers", "confirm", "ann@example.org")
    tidings.at(MONDAY_9)
    tidings.ok("send-due")

    info = show(tidings, "ann@example.org")
    assert [e["kind"] for e in info["consent"]] == ["requested", "confirmed"]
    assert all(e["at"] for e in info["consent"])
    (enrollment,) = info["enrollments"]
    assert enrollment["campaign"] == "kap-benefits"
    assert enrollment["next_step"] == 2
    # The next email is 2 days after the welcome, inside the window.
    assert enrollment["next_due_at"] == (MONDAY_9 + timedelta(days=2)).isoformat()
    assert [(d["kind"], d["step"], d["status"]) for d in info["deliveries"]] == [
        ("confirmation", None, "sent"),
        ("step", "welcome", "sent"),
    ]
    assert info["deliveries"][1]["sent_at"] == MONDAY_9.isoformat()
    assert info["deliveries"][1]["outcome"].startswith("250")
    assert len(received(smtp_server)) == 2

    table = tidings.ok("subscribers", "show", "ann@example.org").stdout
    assert "status: active" in table
    assert "kind=confirmed" in table
    assert "campaign=kap-benefits" in table


def test_show_unknown_email_fails(tidings):
    output = tidings.fails("subscribers", "show", "nobody@example.org")
    assert "no subscriber nobody@example.org" in output


# ----------------------------------------------------------------------------- settings, schema


def test_a_database_never_migrated_asks_for_db_upgrade(tmp_path: Path, smtp_server):
    path = tmp_path / "tidings.db"
    tidings = Tidings(f"sqlite:///{path}", smtp_server.url)
    assert not path.exists()
    for command in (
        ["subscribers", "list"],
        ["subscribers", "add", "ann@example.org"],
        ["campaigns", "list"],
        ["campaigns", "load", "kap-benefits"],
        ["send-due"],
    ):
        output = tidings.fails(*command)
        assert "run `tidings db upgrade`" in output, command
    assert smtp_server.handler.messages == []

    assert "database is up to date" in tidings.ok("db", "upgrade").stdout
    assert "database is up to date" in tidings.ok("db", "upgrade").stdout  # idempotent
    assert tidings.json("subscribers", "list") == []
    tidings.ok("subscribers", "add", "ann@example.org")
    assert [r["email"] for r in tidings.json("subscribers", "list")] == ["ann@example.org"]
    assert len(smtp_server.handler.messages) == 1


@pytest.mark.parametrize("where", ["postgresql-not-listening", "sqlite-under-a-file"])
def test_db_upgrade_on_a_database_it_cannot_reach_is_a_clear_error(tmp_path: Path, where):
    if where == "postgresql-not-listening":
        url = f"postgresql+psycopg://tidings@127.0.0.1:{free_port()}/tidings"
        expected = "127.0.0.1"
    else:
        not_a_folder = tmp_path / "notes.txt"
        not_a_folder.write_text("a file, not a folder")
        url = f"sqlite:///{not_a_folder / 'tidings.db'}"
        expected = "notes.txt"
    tidings = Tidings(url, f"smtp://127.0.0.1:{free_port()}")
    for command in (["subscribers", "list"], ["db", "upgrade"]):
        output = tidings.fails(*command)
        assert expected in output, command


def test_an_empty_sqlite_file_asks_for_db_upgrade(tmp_path: Path, smtp_server):
    path = tmp_path / "empty.db"
    path.touch()
    tidings = Tidings(f"sqlite:///{path}", smtp_server.url)
    output = tidings.fails("subscribers", "list")
    assert "is empty" in output and "run `tidings db upgrade`" in output


@pytest.mark.parametrize(
    "smtp_url",
    [
        "localhost:25",
        "http://mail.example.org",
        "smtp://",
        "smtp://mail.example.org:port",
        "smtp://mail.example.org:99999",
        "smtp://mail.example.org:25?timeout=soon",
    ],
)
def test_a_malformed_smtp_url_is_a_clear_error(tidings_sqlite, smtp_url):
    tidings = tidings_sqlite
    output = tidings.fails("subscribers", "add", "ann@example.org", TIDINGS_SMTP_URL=smtp_url)
    assert "TIDINGS_SMTP_URL" in output
    assert output.startswith("Error: ")
    assert stored(tidings) == NOTHING_STORED


@pytest.mark.parametrize(
    "clock",
    [
        "fixed:yesterday",
        "fixed:",
        "frozen:2026-10-19T08:00:00+00:00",
        "2026-10-19T08:00:00",
        "scaled:2026-10-19T08:00:00+00:00:fast",
        "scaled:2026-10-19T08:00:00+00:00:0",
    ],
)
def test_a_malformed_clock_is_a_clear_error(tidings_sqlite, clock):
    tidings = tidings_sqlite
    output = tidings.fails("subscribers", "add", "ann@example.org", TIDINGS_CLOCK=clock)
    assert "TIDINGS_CLOCK" in output
    assert output.startswith("Error: ")
    assert stored(tidings) == NOTHING_STORED


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TIDINGS_TRANSPORT", "pigeon"),
        ("TIDINGS_BASE_URL", "news.example.org"),
        # What TIDINGS_BASE_URL="https://$DOMAIN" gives when DOMAIN is unset: every link
        # in every email would be https:///unsubscribe/...
        ("TIDINGS_BASE_URL", "https://"),
        # No sender address: every From header would be invalid.
        ("TIDINGS_FROM_ADDRESS", "newsletter"),
        ("TIDINGS_SMTP_POOL_SIZE", "many"),
        ("TIDINGS_DATABASE_URL", "not a url"),
    ],
)
def test_other_malformed_settings_are_clear_errors(tidings_sqlite, name, value):
    tidings = tidings_sqlite
    output = tidings.fails("subscribers", "list", **{name: value})
    assert name in output
    assert output.startswith("Error: ")
