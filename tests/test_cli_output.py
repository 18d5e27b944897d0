"""One output option bundle on every listing and `show`: --format table|json|csv, with
--table/--json/--csv as its shorthands, written by one streaming writer."""

import csv
import io
import json
import shutil

import pytest

from tidings.db import is_disconnect
from tidings.sending.devsmtp import LocalSMTPServer, MemoryHandler

LISTINGS = [
    ("campaigns", "list"),
    ("subscribers", "list"),
    ("suppressions", "list"),
    ("apikeys", "list"),
    ("campaigns", "show", "kap-benefits"),
    ("subscribers", "show", "ann@example.org"),
    ("status",),
    ("stats",),
]


@pytest.fixture
def loaded(tidings_sqlite, kap_sqlite):
    url = tidings_sqlite.env["TIDINGS_DATABASE_URL"] or ""
    shutil.copy(kap_sqlite, url.removeprefix("sqlite:///"))
    tidings_sqlite.ok(
        "subscribers", "add", "ann@example.org", "--confirmed", "--evidence", "paper form"
    )
    return tidings_sqlite


@pytest.mark.parametrize("command", LISTINGS, ids=[" ".join(c) for c in LISTINGS])
def test_every_listing_and_show_speaks_each_format(loaded, command):
    as_json = loaded.ok(*command, "--format", "json").stdout
    assert json.loads(as_json) == json.loads(loaded.ok(*command, "--json").stdout)
    as_csv = loaded.ok(*command, "--format", "csv").stdout
    assert as_csv == loaded.ok(*command, "--csv").stdout
    header, *rows = csv_rows(as_csv)
    assert header and all(len(row) == len(header) for row in rows), "a real CSV, not a table"
    table = loaded.ok(*command, "--format", "table").stdout
    assert table == loaded.ok(*command).stdout, "the table is the default"
    assert table != as_csv


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_show_as_csv_is_csv_never_a_table(loaded):
    rows = list(
        csv.reader(io.StringIO(loaded.ok("subscribers", "show", "ann@example.org", "--csv").stdout))
    )
    assert rows[0] == ["field", "value"]
    assert ["email", "ann@example.org"] in rows
    assert ["status", "active"] in rows
    assert ["consent.0.kind", "imported"] in rows, "nested fields as dotted paths"
    steps = list(
        csv.reader(io.StringIO(loaded.ok("campaigns", "show", "kap-benefits", "--csv").stdout))
    )
    assert steps[0] == ["position", "key", "delay", "subject", "sent"]
    assert len(steps) == 18, "a campaign's CSV is its steps, one row each"


def test_two_formats_at_once_are_a_usage_error(loaded):
    output = loaded.fails("campaigns", "list", "--json", "--csv", code=2)
    assert "choose one output format: --csv or --json" in output
    output = loaded.fails("subscribers", "list", "--format", "table", "--json", code=2)
    assert "choose one output format" in output
    output = loaded.fails("subscribers", "list", "--format", "xml", code=2)
    assert "'xml' is not one of 'table', 'json', 'csv'" in output


def test_a_test_send_respects_the_servers_cap_like_every_other_email(loaded, tmp_path):
    """One factory of lanes: test sends go through the same caps as the scheduler's emails."""
    with LocalSMTPServer(MemoryHandler()) as server:
        capped = f"{server.url}?per_minute=1"
        result = loaded(
            "campaigns",
            "test-send",
            "kap-benefits",
            "--to",
            "me@example.org",
            "--step",
            "all",
            TIDINGS_SMTP_URL=capped,
        )
        arrived = len(server.handler.messages)
    assert result.exit_code == 1
    assert arrived == 1, "one a minute: the others wait"
    lines = result.stdout.splitlines()
    assert lines[0].startswith("welcome: sent")
    assert "cap is reached" in lines[1]
    assert "16 of 17 test emails were not sent" in result.output


def test_a_database_that_is_busy_is_not_a_lost_connection():
    """Disconnects are what SQLAlchemy calls one (or a failure to connect at all), never a
    message that happens to say "locked"."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    locked = OperationalError(
        "UPDATE deliveries ...", {}, sqlite3.OperationalError("database is locked")
    )
    assert not is_disconnect(locked)
    refused = OperationalError(None, None, Exception("connection refused"))
    assert is_disconnect(refused), "no statement ran: the connection could not be made"
    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    lost.connection_invalidated = True
    assert is_disconnect(lost)
