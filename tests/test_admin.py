"""The admin commands driven as an admin would, against real databases (SQLite file and
PostgreSQL) and real SMTP servers: finding and exporting subscribers, changing them, the
suppression list, the data rights (export-data, erase), stats, prune; and what they do on a
real terminal (a pseudo-terminal: paging, confirmation prompts, the progress bar)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import select as select_module
import subprocess
import sys
from datetime import timedelta

import pytest
from cli_helpers import MONDAY_8, MONDAY_9, Tidings, load_kap
from conftest import received
from sqlalchemy import func, select

from tidings.db.models import (
    AppSecret,
    Base,
    BounceEvent,
    Delivery,
    Erasure,
    Subscriber,
    Suppression,
)
from tidings.sending.devsmtp import LocalSMTPServer, free_port
from tidings.subscribers.directory import find_subscriber
from tidings.subscribers.lifecycle import Consent, record_consent


def emails(rows: list[dict]) -> list[str]:
    return [r["email"] for r in rows]


def keyed_hash(tidings: Tidings, address: str) -> str:
    """What the suppression list stores for an address: HMAC-SHA256 under the installation's
    own key (migration 0006's rule), computed here independently of tidings."""
    with tidings.session() as session:
        key = session.scalar(select(AppSecret.value).where(AppSecret.name == "suppression_key"))
    assert key, "the installation has a suppression key"
    return hmac.new(key.encode(), address.encode(), "sha256").hexdigest()


def confirmed(tidings: Tidings, address: str, *args: str) -> None:
    tidings.ok("subscribers", "add", address, "--confirmed", "--evidence", "form", *args)


# ----------------------------------------------------------------------------- terminal


def environment(tidings: Tidings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update({k: v for k, v in tidings.env.items() if v is not None})
    env.update(extra)
    return env


def on_terminal(
    tidings: Tidings, *args: str, answer: str | None = None, **env: str
) -> tuple[int, str]:
    """Run `tidings ARGS` with stdin, stdout and stderr on a pseudo-terminal, as in an admin's
    shell; type `answer` at its [y/N] question. Returns the exit code and what it showed."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "tidings", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environment(tidings, **env),
        close_fds=True,
    )
    os.close(slave)
    shown = b""
    answered = answer is None
    try:
        while True:
            ready, _, _ = select_module.select([master], [], [], 60)
            assert ready, f"tidings {' '.join(args)}: silent for 60 s: {shown!r}"
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if not answered and b"[y/N]" in shown:
                os.write(master, answer.encode() + b"\n")
                answered = True
    finally:
        os.close(master)
        code = process.wait(timeout=60)
    return code, shown.decode("utf-8", errors="replace").replace("\r\n", "\n")


@pytest.mark.slow
def test_list_pages_on_a_terminal_and_not_elsewhere(tidings_sqlite, tmp_path):
    tidings = tidings_sqlite
    for i in range(3):
        confirmed(tidings, f"reader{i}@example.org", "--name", f"Reader {i}")
    paged = tmp_path / "paged.txt"
    pager = tmp_path / "pager"  # a pager that keeps what it is given
    pager.write_text(f"#!/bin/sh\ncat > {paged}\n")
    pager.chmod(0o755)
    code, shown = on_terminal(tidings, "subscribers", "list", PAGER=str(pager))
    assert code == 0, shown
    lines = [line for line in paged.read_text().splitlines() if line.strip()]
    assert lines[0].split() == ["email", "name", "timezone", "status", "created_at", "confirmed_at"]
    assert [line.split()[0] for line in lines[2:]] == [f"reader{i}@example.org" for i in range(3)]
    paged.unlink()
    code, shown = on_terminal(tidings, "subscribers", "list", "--no-pager", PAGER=f"cat > {paged}")
    assert code == 0 and "reader2@example.org" in shown and not paged.exists()
    # Not a terminal (a pipe, a script): no pager.
    assert "reader2@example.org" in tidings.ok("subscribers", "list", PAGER=str(pager)).stdout
    assert not paged.exists()


@pytest.mark.slow
def test_erase_and_export_data_ask_on_a_terminal(tidings_sqlite):
    tidings = tidings_sqlite
    confirmed(tidings, "ann@example.org", "--name", "Ann")
    code, shown = on_terminal(tidings, "subscribers", "erase", "ann@example.org", answer="n")
    assert code == 1 and "Erase everything stored about ann@example.org?" in shown
    assert "Aborted" in shown
    assert tidings.json("subscribers", "show", "ann@example.org")["status"] == "active"

    code, shown = on_terminal(tidings, "subscribers", "export-data", "ann@example.org", answer="n")
    assert code == 1 and "Write everything stored about ann@example.org to stdout?" in shown
    assert '"profile"' not in shown

    code, shown = on_terminal(tidings, "subscribers", "erase", "ann@example.org", answer="y")
    assert code == 0, shown
    assert "ann@example.org: erased" in shown
    tidings.fails("subscribers", "show", "ann@example.org")


@pytest.mark.slow
def test_import_shows_progress_on_a_terminal(tidings_sqlite, tmp_path):
    tidings = tidings_sqlite
    path = tmp_path / "list.csv"
    path.write_text("email\n" + "".join(f"r{i}@example.org\n" for i in range(1000)))
    code, shown = on_terminal(
        tidings, "subscribers", "import", str(path), "--evidence", "form", "--batch-size", "250"
    )
    assert code == 0, shown
    assert "Importing" in shown and "100%" in shown
    assert "created 1000, updated 0, unchanged 0, suppressed 0, rejected 0" in shown
    # Without a terminal there is no bar: only the summary.
    result = tidings.ok("subscribers", "import", str(path), "--evidence", "form")
    assert "Importing" not in result.output and "%" not in result.output


# ----------------------------------------------------------------------------- list, export


def test_list_filters(tidings_kap):
    tidings = tidings_kap
    tidings.ok("subscribers", "add", "ann@example.org", "--name", "Ann LEE")
    confirmed(tidings, "bob@example.net", "--name", "Bob")
    confirmed(tidings, "cy@example.org", "--name", "Cy 100%_off")
    tidings.at(MONDAY_8 + timedelta(days=3))
    confirmed(tidings, "dee@example.org", "--name", "Dee")
    tidings.ok("subscribers", "add", "eve_x@example.org", "--name", "Eve")
    tidings.ok("subscribers", "unsubscribe", "eve_x@example.org")

    def listed(*args: str) -> list[str]:
        return emails(tidings.json("subscribers", "list", *args))

    assert listed("--status", "pending", "--status", "unsubscribed") == [
        "ann@example.org",
        "eve_x@example.org",
    ]
    assert listed("--campaign", "kap-benefits") == [
        "bob@example.net",
        "cy@example.org",
        "dee@example.org",
    ]
    assert listed("--since", "2026-10-20") == ["dee@example.org", "eve_x@example.org"]
    assert listed("--since", "2d") == ["dee@example.org", "eve_x@example.org"]
    assert listed("--since", "2026-10-22T08:00:00+00:00") == [
        "dee@example.org",
        "eve_x@example.org",
    ]
    assert listed("--since", "2026-10-22T08:00:01+00:00") == []
    assert listed("--search", "lee") == ["ann@example.org"]
    assert listed("--search", "@EXAMPLE.NET") == ["bob@example.net"]
    assert listed("--search", "100%") == ["cy@example.org"], "% is a character, not a wildcard"
    assert listed("--search", "_") == ["cy@example.org", "eve_x@example.org"]
    assert listed("--limit", "2") == ["ann@example.org", "bob@example.net"]
    assert listed("--campaign", "kap-benefits", "--since", "2d") == ["dee@example.org"]
    rows = tidings.json("subscribers", "list", "--search", "dee")
    assert list(rows[0]) == ["email", "name", "timezone", "status", "created_at", "confirmed_at"]

    assert "no campaign" in tidings.fails("subscribers", "list", "--campaign", "nope").lower()
    output = tidings.fails("subscribers", "list", "--since", "yesterday")
    assert "--since: 'yesterday': use a date (2026-10-01), a date and time, or an age" in output


def test_export_streams_csv_and_json_with_attributes(tidings, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(
        "email,name,city,ref\n"
        + "".join(f"p{i:04}@example.org,P {i},{'Lyon' if i % 2 else ''},{i}\n" for i in range(2500))
    )
    tidings.ok(
        "subscribers", "import", str(path), "--evidence", "form", "--keep", "city", "--keep", "ref"
    )
    tidings.ok("subscribers", "unsubscribe", "p0001@example.org")

    rows = list(csv.reader(io.StringIO(tidings.ok("subscribers", "export").stdout)))
    assert rows[0] == [
        "email",
        "name",
        "timezone",
        "status",
        "created_at",
        "confirmed_at",
        "unsubscribed_at",
        "city",
        "ref",
    ]
    assert len(rows) == 2501, "every subscriber once, over several chunks"
    assert [r[0] for r in rows[1:]] == [f"p{i:04}@example.org" for i in range(2500)]
    assert rows[2] == [
        "p0001@example.org",
        "P 1",
        "UTC",
        "unsubscribed",
        MONDAY_8.isoformat(),
        MONDAY_8.isoformat(),
        MONDAY_8.isoformat(),
        "Lyon",
        "1",
    ]
    assert rows[1][7:] == ["", "0"]

    data = tidings.json("subscribers", "export", "--status", "unsubscribed")
    assert data == [
        {
            "email": "p0001@example.org",
            "name": "P 1",
            "timezone": "UTC",
            "status": "unsubscribed",
            "created_at": MONDAY_8.isoformat(),
            "confirmed_at": MONDAY_8.isoformat(),
            "unsubscribed_at": MONDAY_8.isoformat(),
            "attributes": {"city": "Lyon", "ref": "1"},
        }
    ]
    out = tmp_path / "active.csv"
    result = tidings.ok("subscribers", "export", "--search", "p249", "--out", str(out))
    assert result.stdout == ""
    assert [r[0] for r in csv.reader(out.open())][1:] == [f"p249{i}@example.org" for i in range(10)]
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert tidings.json("subscribers", "export", "--status", "bounced") == []


# ----------------------------------------------------------------------------- change


def test_update_name_timezone_and_attributes(tidings):
    confirmed(tidings, "ann@example.org", "--name", "Ann")
    result = tidings.ok(
        "subscribers",
        "update",
        "ANN@example.org",
        "--name",
        "Ann Lee",
        "--timezone",
        "Europe/Paris",
        "--attr",
        "city=Lyon",
        "--attr",
        "ref=7",
    )
    assert result.stdout.strip() == (
        "ann@example.org: name: 'Ann' -> 'Ann Lee'; timezone: UTC -> Europe/Paris; "
        "city: None -> 'Lyon'; ref: None -> '7'"
    )
    result = tidings.ok("subscribers", "update", "ann@example.org", "--attr", "ref=")
    assert result.stdout.strip() == "ann@example.org: ref: removed"
    assert tidings.ok(
        "subscribers", "update", "ann@example.org", "--name", "Ann Lee"
    ).stdout.strip() == ("ann@example.org: nothing changed")
    (row,) = tidings.json("subscribers", "export")
    assert (row["name"], row["timezone"], row["attributes"]) == (
        "Ann Lee",
        "Europe/Paris",
        {"city": "Lyon"},
    )

    before = tidings.json("subscribers", "export")
    for args, code, message in [
        (["--timezone", "Paris"], 1, "--timezone: unknown timezone 'Paris'"),
        (["--name", "x" * 201], 1, "--name: is 201 characters long; the limit is 200"),
        (["--attr", "city"], 1, "--attr: 'city': use KEY=VALUE"),
        (["--attr", "email=x@example.org"], 1, "'email' is kept by tidings and cannot be"),
        (["--attr", "Timezone=UTC"], 1, "'Timezone' is not an attribute: use --timezone"),
        (["--attr", "note=a\x07b"], 1, "note: must be one line"),
        ([], 2, "nothing to change"),
    ]:
        output = tidings.fails("subscribers", "update", "ann@example.org", *args, code=code)
        assert message in output, (args, output)
    output = tidings.fails("subscribers", "update", "nobody@example.org", "--name", "X")
    assert "no subscriber nobody@example.org" in output
    assert tidings.json("subscribers", "export") == before


def test_unsubscribe_several_addresses_and_from_stdin(tidings_kap):
    tidings = tidings_kap
    for name in ("ann", "bob", "cy", "dee"):
        confirmed(tidings, f"{name}@example.org")
    result = tidings.ok("subscribers", "unsubscribe", "ann@example.org", "BOB@example.org")
    assert result.stdout.splitlines() == [
        "ann@example.org: unsubscribed",
        "bob@example.org: unsubscribed",
    ]
    stdin = (
        "cy@example.org\n# from the complaints desk\n\n"
        "nobody@example.org\nnot an address\nann@example.org\n"
    )
    result = tidings("subscribers", "unsubscribe", "-", input=stdin)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "cy@example.org: unsubscribed",
        "ann@example.org: was already unsubscribed",
    ]
    assert "nobody@example.org: no subscriber nobody@example.org" in result.stderr
    assert "not an address: email: 'not an address' is not a valid email address" in result.stderr
    assert "Error: 2 of 4 addresses could not be unsubscribed" in result.stderr
    statuses = {r["email"]: r["status"] for r in tidings.json("subscribers", "list")}
    assert statuses == {
        "ann@example.org": "unsubscribed",
        "bob@example.org": "unsubscribed",
        "cy@example.org": "unsubscribed",
        "dee@example.org": "active",
    }
    assert "give one or more addresses" in tidings.fails("subscribers", "unsubscribe", code=2)


def test_resubscribe_needs_new_consent(tidings_kap, smtp_server):
    tidings = tidings_kap
    confirmed(tidings, "ann@example.org")
    tidings.at(MONDAY_9)
    assert "sent 1" in tidings.ok("send-due").stdout  # the welcome
    tidings.ok("subscribers", "unsubscribe", "ann@example.org")

    for args in ([], ["--evidence", "phone", "--double-opt-in"], ["--evidence", " "]):
        output = tidings.fails("subscribers", "resubscribe", "ann@example.org", *args, code=2)
        assert "coming back needs new consent" in output or "--evidence" in output
    assert tidings.json("subscribers", "show", "ann@example.org")["status"] == "unsubscribed"

    result = tidings.ok(
        "subscribers", "resubscribe", "ann@example.org", "--evidence", "asked by phone, ticket 7"
    )
    assert result.stdout.strip() == "ann@example.org: active, back in kap-benefits"
    info = tidings.json("subscribers", "show", "ann@example.org")
    assert [(e["kind"], e["evidence"]) for e in info["consent"]][-3:] == [
        ("unsubscribed", None),
        ("requested", "asked by phone, ticket 7"),
        ("confirmed", "asked by phone, ticket 7"),
    ]
    (enrollment,) = info["enrollments"]
    assert (enrollment["status"], enrollment["next_step"]) == ("active", 2), "where she left"
    assert tidings.json("suppressions", "list", "--email", "ann@example.org") == []

    # Leaving again, then coming back by pressing the button of the come-back email.
    tidings.ok("subscribers", "unsubscribe", "ann@example.org")
    result = tidings.ok("subscribers", "resubscribe", "ann@example.org", "--double-opt-in")
    assert result.stdout.splitlines() == [
        "ann@example.org: unsubscribed until they press the button of the come-back email",
        "come-back email sent",
    ]
    assert received(smtp_server)[-1]["Subject"] == "Would you like our emails again?"
    assert tidings.json("subscribers", "show", "ann@example.org")["status"] == "unsubscribed"
    (entry,) = tidings.json("suppressions", "list", "--email", "ann@example.org")
    assert entry["reason"] == "unsubscribe", "suppressed until she clicks"

    confirmed(tidings, "gone@example.org")
    tidings.ok("suppressions", "add", "gone@example.org", "--reason", "hard-bounce")
    output = tidings.fails("subscribers", "resubscribe", "gone@example.org", "--evidence", "x")
    assert "gone@example.org is bounced, not unsubscribed" in output


# ----------------------------------------------------------------------------- suppressions


def test_suppressions_add_list_remove(tidings_kap, smtp_server):
    tidings = tidings_kap
    confirmed(tidings, "ann@example.org")
    confirmed(tidings, "bob@example.org")
    # 09:00: both welcomes are due, but the mail server is down: they wait for a retry.
    tidings.at(MONDAY_9)
    down = f"smtp://127.0.0.1:{free_port()}"
    assert "retrying 2" in tidings.ok("send-due", TIDINGS_SMTP_URL=down).stdout

    result = tidings.ok(
        "suppressions", "add", "ann@example.org", "--reason", "complaint", "--detail", "ticket 88"
    )
    assert result.stdout.strip() == "ann@example.org: suppressed (complaint); subscriber stopped"
    info = tidings.json("subscribers", "show", "ann@example.org")
    assert info["status"] == "complained"
    assert info["enrollments"][0]["status"] == "exited"
    assert [d["status"] for d in info["deliveries"]] == ["skipped"]
    # The same record as a complaint read from a feedback-loop report: consent withdrawn.
    assert info["consent"][-1]["kind"] == "complained"
    result = tidings.ok("suppressions", "add", "ann@example.org", "stranger@example.org")
    assert result.stdout.splitlines() == [
        "ann@example.org: was already suppressed (complaint)",
        "stranger@example.org: suppressed (manual)",
    ]
    # The server is back: Bob gets his welcome, Ann nothing.
    tidings.at(MONDAY_9 + timedelta(hours=1))
    assert "sent 1" in tidings.ok("send-due").stdout
    assert [m["To"].addresses[0].addr_spec for m in received(smtp_server)] == ["bob@example.org"]

    rows = tidings.json("suppressions", "list")
    assert [(r["email"], r["reason"], r["detail"]) for r in rows] == [
        ("ann@example.org", "complaint", "ticket 88"),
        ("", "manual", None),  # no subscriber has this address: only its hash is known
    ]
    assert rows[1]["hash"] == keyed_hash(tidings, "stranger@example.org")
    assert rows[1]["hash"] != hashlib.sha256(b"stranger@example.org").hexdigest()
    assert [r["keyed"] for r in rows] == [True, True]
    assert emails(tidings.json("suppressions", "list", "--reason", "manual")) == [""]
    assert len(tidings.json("suppressions", "list", "--email", "STRANGER@example.org")) == 1
    table = tidings.ok("suppressions", "list").stdout
    assert "ann@example.org" in table and "ticket 88" in table

    output = tidings.fails("suppressions", "remove", "ann@example.org", code=2)
    assert "Missing option '--reason'" in output
    output = tidings.fails("suppressions", "remove", "nobody@example.org", "--reason", "x")
    assert "nobody@example.org is not on the suppression list" in output
    result = tidings.ok(
        "suppressions", "remove", "ann@example.org", "--reason", "reported by mistake, ticket 90"
    )
    assert result.stdout.strip() == "ann@example.org: no longer suppressed (was complaint)"
    info = tidings.json("subscribers", "show", "ann@example.org")
    assert info["status"] == "complained", "lifting the entry re-activates nobody"
    assert (info["consent"][-1]["kind"], info["consent"][-1]["evidence"]) == (
        "suppression-removed",
        "was complaint; removed because: reported by mistake, ticket 90",
    )
    output = tidings.fails("suppressions", "add", "not-an-address")
    assert "not a valid email address" in output
    output = tidings.fails("suppressions", "add", "x@example.org", "--reason", "spite", code=2)
    assert "spite" in output


def test_suppressions_import(tidings_kap, tmp_path):
    tidings = tidings_kap
    confirmed(tidings, "ann@example.org")
    tidings.ok("suppressions", "add", "old@example.org")
    plain = tmp_path / "bounces.txt"
    plain.write_text(
        "ANN@example.org\nold@example.org\nnot-an-address\n\nnew@example.org\nnew@example.org\n"
    )
    result = tidings("suppressions", "import", str(plain), "--reason", "unsubscribe")
    assert result.exit_code == 3
    assert result.stdout.strip() == (
        "suppressed 2, already suppressed 2, subscribers stopped 1, rejected 1"
    )
    assert "line 3, email: 'not-an-address' is not a valid email address" in result.stderr
    assert tidings.json("subscribers", "show", "ann@example.org")["status"] == "unsubscribed"

    table = tmp_path / "esp-export.csv"
    table.write_text(
        "Reason,E-mail,Date\nspam,new@example.org,2026-01-02\nspam,later@example.org,x\n"
    )
    result = tidings.ok("suppressions", "import", str(table), "--reason", "complaint")
    assert result.stdout.strip() == (
        "suppressed 1, already suppressed 1, subscribers stopped 0, rejected 0"
    )
    rows = {r["hash"]: r["reason"] for r in tidings.json("suppressions", "list")}
    digest = keyed_hash(tidings, "later@example.org")
    assert rows[digest] == "complaint" and len(rows) == 4
    # An import of subscribers meets them as suppressed.
    people = tmp_path / "people.csv"
    people.write_text("email\nnew@example.org\nlater@example.org\nfresh@example.org\n")
    result = tidings.ok("subscribers", "import", str(people), "--evidence", "form")
    assert result.stdout.startswith("created 1, updated 0, unchanged 0, suppressed 2")


# ----------------------------------------------------------------------------- data rights


def test_export_data_has_everything_about_one_person_and_nobody_else(tidings_kap, tmp_path):
    tidings = tidings_kap
    tidings.ok(
        "subscribers", "add", "ann@example.org", "--name", "Ann", "--timezone", "Europe/Paris"
    )
    tidings.ok("subscribers", "update", "ann@example.org", "--attr", "city=Lyon")
    tidings.ok("subscribers", "confirm", "ann@example.org")
    confirmed(tidings, "bob@example.org", "--name", "Bob")
    tidings.at(MONDAY_9)
    tidings.ok("send-due")

    data = json.loads(tidings.ok("subscribers", "export-data", "ann@example.org").stdout)
    assert set(data) == {
        "exported_at",
        "about",
        "profile",
        "suppression",
        "consent_events",
        "sign_up_requests",
        "enrollments",
        "deliveries",
        "bounce_reports",
        "inbound_messages",
    }
    assert data["exported_at"] == MONDAY_9.isoformat()
    assert data["profile"] == {
        "email": "ann@example.org",
        "name": "Ann",
        "timezone": "Europe/Paris",
        "status": "active",
        "created_at": MONDAY_8.isoformat(),
        "confirmed_at": MONDAY_8.isoformat(),
        "unsubscribed_at": None,
        "updated_at": MONDAY_8.isoformat(),
        "paused_until": None,
        "soft_bounces": 0,
        "attributes": {"city": "Lyon"},
    }
    assert data["suppression"] is None
    assert [(e["kind"], e["source"], e["evidence"]) for e in data["consent_events"]] == [
        ("requested", "cli", None),
        ("confirmed", "cli", "confirmed by an operator"),
    ]
    (enrollment,) = data["enrollments"]
    assert enrollment["campaign"] == "kap-benefits"
    assert (enrollment["status"], enrollment["next_step"]) == ("active", 2)
    assert [
        (d["kind"], d["campaign"], d["step"], d["subject"], d["status"]) for d in data["deliveries"]
    ] == [
        ("confirmation", None, None, None, "sent"),
        ("step", "kap-benefits", "welcome", "Welcome, and what to expect", "sent"),
    ]
    assert all(d["message_id"] and d["sent_at"] for d in data["deliveries"])
    text = json.dumps(data)
    assert "bob@example.org" not in text and "Bob" not in text
    with tidings.session() as session:
        key = session.scalar(select(Subscriber.key).where(Subscriber.email == "ann@example.org"))
    assert key not in text, "the link key works like a password: it is not handed out"

    tidings.ok("subscribers", "unsubscribe", "ann@example.org")
    out = tmp_path / "ann.json"
    result = tidings.ok("subscribers", "export-data", "ann@example.org", "--out", str(out))
    assert result.stdout == "" and f"wrote {out}" in result.stderr
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert json.loads(out.read_text())["suppression"]["reason"] == "unsubscribe"
    output = tidings.fails("subscribers", "export-data", "nobody@example.org")
    assert "no subscriber nobody@example.org" in output


def everything_stored(tidings: Tidings) -> str:
    """Every row of every table, as text: to look for an address anywhere."""
    with tidings.session() as session:
        return "\n".join(
            repr(tuple(row))
            for table in Base.metadata.sorted_tables
            for row in session.execute(select(table))
        )


def test_erase_deletes_everything_but_a_hash(tidings_kap):
    tidings = tidings_kap
    tidings.ok("subscribers", "add", "ann@example.org", "--name", "Ann Example")
    tidings.ok("subscribers", "update", "ann@example.org", "--attr", "city=Lyon")
    tidings.ok("subscribers", "confirm", "ann@example.org")
    confirmed(tidings, "bob@example.org", "--name", "Bob")
    tidings.at(MONDAY_9)
    tidings.ok("send-due")
    with tidings.session() as session:  # a bounce report about her welcome, as ingested
        welcome = session.scalar(
            select(Delivery)
            .join(Subscriber)
            .where(Subscriber.email == "ann@example.org", Delivery.kind == "step")
        )
        session.add(
            BounceEvent(
                report_sha256="0" * 64,
                kind="soft",
                status="4.2.2",
                diagnostic="452 4.2.2 <ann@example.org>: mailbox full",
                delivery_id=welcome.id,
                campaign_id=welcome.campaign_id,
                created_at=MONDAY_9,
            )
        )
        erasures_before = session.scalar(select(func.count()).select_from(Erasure))
    bob_before = json.loads(tidings.ok("subscribers", "export-data", "bob@example.org").stdout)
    assert "ann@example.org" in everything_stored(tidings)

    before = everything_stored(tidings)
    output = tidings.fails("subscribers", "erase", "ann@example.org", code=2)
    assert "add --yes to erase without a terminal" in output
    output = tidings.fails(
        "subscribers", "erase", "ann@example.org", "--yes", "--note", "asked by Ann@example.org"
    )
    assert "--note: must not contain the address" in output
    assert everything_stored(tidings) == before

    tidings.at(MONDAY_9 + timedelta(hours=1))
    result = tidings.ok(
        "subscribers", "erase", "Ann@example.org", "--yes", "--note", "request 1234"
    )
    assert result.stdout.strip() == (
        "ann@example.org: erased (2 consent events, 1 enrollments, 2 emails); its hash is "
        "added to the suppression list (manual)"
    )
    stored = everything_stored(tidings)
    for trace in ("ann@example.org", "Ann Example", "Lyon"):
        assert trace.lower() not in stored.lower(), trace
    digest = keyed_hash(tidings, "ann@example.org")
    with tidings.session() as session:
        (suppression,) = session.scalars(select(Suppression)).all()
        assert suppression.email_sha256 == digest
        assert suppression.keyed
        assert suppression.reason == "manual"
        erasures = session.scalars(select(Erasure).order_by(Erasure.id)).all()
        assert len(erasures) == erasures_before + 1
        assert (erasures[-1].source, erasures[-1].note) == ("cli", "request 1234")
        assert erasures[-1].erased_at == MONDAY_9 + timedelta(hours=1)
        bounce = session.scalars(
            select(BounceEvent).where(BounceEvent.report_sha256 == "0" * 64)
        ).one()
        assert (bounce.kind, bounce.diagnostic, bounce.delivery_id) == ("soft", None, None)
    assert json.loads(
        tidings.ok("subscribers", "export-data", "bob@example.org").stdout
    ) == bob_before | {"exported_at": (MONDAY_9 + timedelta(hours=1)).isoformat()}
    output = tidings.fails("subscribers", "erase", "ann@example.org", "--yes")
    assert "no subscriber ann@example.org" in output


def test_erase_keeps_the_reason_of_a_suppression_but_not_its_detail(tidings):
    confirmed(tidings, "gone@example.org")
    tidings.ok(
        "suppressions",
        "add",
        "gone@example.org",
        "--reason",
        "hard-bounce",
        "--detail",
        "550 5.1.1 <gone@example.org>: Recipient address rejected",
    )
    result = tidings.ok("subscribers", "erase", "gone@example.org", "--yes")
    assert "its hash is kept on the suppression list (hard-bounce)" in result.stdout
    (row,) = tidings.json("suppressions", "list")
    assert row["reason"] == "hard-bounce"
    assert row["detail"] == "erased on 2026-10-19; the address itself is not stored"
    assert "gone@" not in everything_stored(tidings)


def test_an_erased_address_stays_suppressed_when_imported_or_added_again(
    tidings_kap, smtp_server, tmp_path
):
    tidings = tidings_kap
    confirmed(tidings, "ann@example.org", "--name", "Ann")
    tidings.ok("subscribers", "erase", "ann@example.org", "--yes")

    path = tmp_path / "list.csv"
    path.write_text("email,name\nAnn@Example.org,Ann\nbob@example.org,Bob\n")
    for options in (["--evidence", "paper form"], ["--double-opt-in"]):
        result = tidings.ok("subscribers", "import", str(path), *options)
        assert "suppressed 1" in result.stdout.splitlines()[0]
        assert "(lines 2)" in result.stdout
    assert emails(tidings.json("subscribers", "list")) == ["bob@example.org"]
    output = tidings.fails("subscribers", "add", "ann@example.org")
    assert "ann@example.org is on the suppression list" in output
    tidings.at(MONDAY_9 + timedelta(days=7))
    tidings.ok("send-due")
    assert "ann@example.org" not in {m["To"].addresses[0].addr_spec for m in received(smtp_server)}


# ----------------------------------------------------------------------------- prune


def test_prune_removes_only_requests_nobody_confirmed(tidings):
    forty_days_ago = MONDAY_8 - timedelta(days=40)
    tidings.at(forty_days_ago)
    tidings.ok("subscribers", "add", "stale@example.org")
    tidings.ok("subscribers", "add", "asked-again@example.org")
    confirmed(tidings, "kept@example.org")
    confirmed(tidings, "returning@example.org")
    tidings.ok("subscribers", "unsubscribe", "returning@example.org")
    tidings.ok("subscribers", "resubscribe", "returning@example.org", "--double-opt-in")
    tidings.at(MONDAY_8 - timedelta(days=10))
    tidings.ok("subscribers", "add", "recent@example.org")
    with tidings.session() as session:  # asked again through the form 5 days ago
        subscriber = find_subscriber(session, "asked-again@example.org")
        record_consent(
            session,
            subscriber,
            "requested",
            Consent(source="contact-form"),
            MONDAY_8 - timedelta(days=5),
        )
    tidings.at(MONDAY_8)
    before = tidings.counts()
    result = tidings.ok("prune", "--pending-older-than", "30d", "--dry-run")
    assert result.stdout.strip() == (
        "would delete 1 pending subscribers who asked before 2026-09-19 08:00 UTC and never "
        "confirmed (1 consent events, 1 confirmation emails)"
    )
    assert tidings.counts() == before
    result = tidings.ok("prune", "--pending-older-than", "30d")
    assert result.stdout.strip().startswith("deleted 1 pending subscribers")
    assert sorted(emails(tidings.json("subscribers", "list"))) == [
        "asked-again@example.org",
        "kept@example.org",
        "recent@example.org",
        "returning@example.org",
    ]
    after = tidings.counts()
    assert (before["consent_events"] - after["consent_events"]) == 1
    assert (before["deliveries"] - after["deliveries"]) == 1
    assert "would delete 0" in tidings.ok("prune", "--pending-older-than", "4w", "--dry-run").stdout
    for age, message in (("soon", "use a duration such as 30d"), ("0d", "longer than zero")):
        output = tidings.fails("prune", "--pending-older-than", age)
        assert "--pending-older-than: " in output and message in output


# ----------------------------------------------------------------------------- stats


class PickyHandler:
    """A mail server with opinions: bob@ does not exist (550 5.1.1), dee@'s mailbox is
    temporarily unavailable (451), anything for cy@ is refused by policy (554 5.7.1)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("bob@"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.startswith("dee@"):
            return "451 4.2.1 Mailbox temporarily unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if envelope.rcpt_tos == ["cy@example.org"]:
            return "554 5.7.1 Message refused by policy"
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 2.0.0 Ok: queued"


def test_stats_of_a_scenario_whose_answer_is_known(database_url, request):
    with LocalSMTPServer(PickyHandler()) as picky:
        tidings = load_kap(
            Tidings(database_url, picky.url), lambda: request.getfixturevalue("kap_sqlite")
        )
        for name in ("ann", "bob", "cy", "dee", "eve", "gus"):
            confirmed(tidings, f"{name}@example.org")
        tidings.ok("subscribers", "add", "fay@example.org")  # pending: her confirmation goes
        tidings.at(MONDAY_8 + timedelta(minutes=30))
        tidings.ok("subscribers", "unsubscribe", "gus@example.org")  # before any email
        # Monday 09:00, the welcome: ann and eve get it, bob bounces, cy is refused, dee waits.
        tidings.at(MONDAY_9)
        assert tidings.ok("send-due").stdout.strip() == (
            "planned 5, sent 2, retrying 1, failed 1, bounced 1, skipped 0"
        )
        # Wednesday 09:00, the second email: ann and eve get it, cy is refused again; dee's
        # welcome is tried again and still waits.
        wednesday = MONDAY_9 + timedelta(days=2)
        tidings.at(wednesday)
        assert "planned 3, sent 2, retrying 1, failed 1" in tidings.ok("send-due").stdout
        tidings.at(wednesday + timedelta(hours=1))
        tidings.ok("subscribers", "unsubscribe", "ann@example.org")

    result = json.loads(tidings.ok("stats", "kap-benefits", "--json", "--days", "3").stdout)
    assert result["subscribers"] == {
        "pending": 0,
        "active": 3,
        "unsubscribed": 2,
        "bounced": 1,
        "complained": 0,
    }
    (campaign,) = result["campaigns"]
    assert campaign["enrolled"] == {"active": 3, "completed": 0, "exited": 3}
    assert campaign["unsubscribed_before_first_email"] == 1
    steps = campaign["steps"]
    assert len(steps) == 17
    columns = ("sent", "queued", "failed", "bounced", "skipped", "unsubscribed_after")
    assert [(s["position"], s["key"]) for s in steps[:2]] == [
        (1, "welcome"),
        (2, "rapid-relief-of-symptoms"),
    ]
    assert [tuple(s[c] for c in columns) for s in steps] == [
        (2, 1, 1, 1, 0, 0),
        (2, 0, 1, 0, 0, 1),
        *[(0, 0, 0, 0, 0, 0)] * 15,
    ]
    assert result["sends_per_day"] == [
        {"date": "2026-10-19", "sent": 2},
        {"date": "2026-10-20", "sent": 0},
        {"date": "2026-10-21", "sent": 2},
    ]

    everything = json.loads(tidings.ok("stats", "--json", "--days", "3").stdout)
    assert everything["subscribers"]["pending"] == 1
    assert everything["sends_per_day"][0] == {"date": "2026-10-19", "sent": 3}, "+ confirmation"
    assert everything["campaigns"] == result["campaigns"]

    table = tidings.ok("stats", "kap-benefits").stdout
    assert "Subscribers: pending 0, active 3, unsubscribed 2, bounced 1, complained 0" in table
    assert "enrolled 6 (active 3, completed 0, exited 3)" in table
    assert [line.split() for line in table.splitlines() if "welcome" in line] == [
        ["1", "welcome", "2", "1", "1", "1", "0", "0"]
    ]
    assert "  2026-10-21  2" in table
    assert "no campaign" in tidings.fails("stats", "nope").lower()


# ----------------------------------------------------------------------------- help


ADMIN_COMMANDS = [
    *(
        ["subscribers", name]
        for name in (
            "add",
            "confirm",
            "unsubscribe",
            "resubscribe",
            "list",
            "show",
            "import",
            "export",
            "update",
            "export-data",
            "erase",
        )
    ),
    *(["suppressions", name] for name in ("list", "add", "remove", "import")),
    ["stats"],
    ["prune"],
]


@pytest.mark.parametrize("command", ADMIN_COMMANDS, ids=" ".join)
def test_every_admin_command_has_help_with_an_example(command, tidings_sqlite):
    result = tidings_sqlite.ok(*command, "--help")
    assert "Example" in result.stdout, result.stdout
    assert f"  tidings {' '.join(command)} " in result.stdout, "an example of this very command"
