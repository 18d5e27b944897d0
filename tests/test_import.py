"""`tidings subscribers import` driven as an admin would, against real databases (SQLite file
and PostgreSQL): a 10,000-row file with hundreds of broken rows of every kind, an import
killed with SIGKILL and run again, consent options, dry runs, encodings, stdin."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import Tidings, on_sqlite_copy
from conftest import received
from sqlalchemy import func, select

from tidings.config import Settings
from tidings.db.models import ConsentEvent, Delivery, Enrollment, Subscriber
from tidings.errors import InvalidInput
from tidings.runtime import Runtime
from tidings.subscribers.importing import Importer, ImportOptions, fast_normalize_email
from tidings.subscribers.validation import normalize_email

TIMEZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo"]
HEADER = "email,name,timezone,city"
EXCEL_HINT = " (if it comes from Excel, try --encoding cp1252)"


# ----------------------------------------------------------------------------- the big file


@dataclass
class BigFile:
    """A CSV of 10,000 rows and what importing it must give."""

    path: Path
    rows: dict[str, tuple[str, str, dict[str, str]]] = field(default_factory=dict)
    rejects: list[list[str]] = field(default_factory=list)
    suppressed_lines: list[int] = field(default_factory=list)
    created: int = 0
    duplicates: int = 0


def broken_row(kind: int, i: int, line: int) -> tuple[bytes, list[str], int]:
    """A row broken in one of 17 ways: (bytes, expected reject [line, field, reason, data],
    physical lines it takes)."""
    email = f"broken{i}@example.org"

    def plain(text: str, column: str, reason: str) -> tuple[bytes, list[str], int]:
        return (text + "\n").encode(), [str(line), column, reason, text], 1

    if kind == 0:
        bad = f"broken{i}.example.org"
        return plain(
            f"{bad},Ann,UTC,",
            "email",
            f"'{bad}' is not a valid email address: An email address must have an @-sign.",
        )
    if kind == 1:
        bad = f"broken{i}@@example.org"
        return plain(
            f"{bad},Ann,UTC,",
            "email",
            f"'{bad}' is not a valid email address: The part after the @-sign contains "
            "invalid characters: '@'.",
        )
    if kind == 2:
        bad = f"broken{i}@nodot"
        return plain(
            f"{bad},Ann,UTC,",
            "email",
            f"'{bad}' is not a valid email address: The part after the @-sign is not valid. "
            "It should have a period.",
        )
    if kind == 3:
        return plain(f",Nobody {i},UTC,", "email", "an email address is required")
    if kind == 4:
        return plain(f"{email},Ann,Mars/Olympus,", "timezone", "unknown timezone 'Mars/Olympus'")
    if kind == 5:
        return plain(
            f"{email},Ann,Pacific Time,",
            "timezone",
            "unknown timezone 'Pacific Time' (use a region name such as America/New_York, "
            "not an abbreviation)",
        )
    if kind == 6:  # Latin-1 bytes in a UTF-8 file
        prefix = f"{email},Jos"
        return (
            prefix.encode() + b"\xe9,UTC,\n",
            [
                str(line),
                "",
                f"not valid utf-8: byte 0xe9 at column {len(prefix) + 1}{EXCEL_HINT}",
                prefix + "\\xe9,UTC,",
            ],
            1,
        )
    if kind == 7:
        return plain(
            f"{email},Ann,UTC,Lyon,extra",
            "",
            f"5 fields, but the header has 4 ({', '.join(HEADER.split(','))})",
        )
    if kind == 8:
        return plain(
            f"{email},Ann", "", f"2 fields, but the header has 4 ({', '.join(HEADER.split(','))})"
        )
    if kind == 9:  # a quoted field with a line feed: one row over two lines
        text = f'{email},"Line\nBreak",UTC,'
        return (
            (text + "\n").encode(),
            [
                str(line),
                "name",
                f"contains a line break (CR or LF) (the row runs over lines {line}-{line + 1})",
                text,
            ],
            2,
        )
    if kind == 10:
        return plain(
            f"{email},Car\rriage,UTC,", "", "a carriage return (CR) in the middle of the line"
        )
    if kind == 11:
        return plain(
            f"{email},{'N' * 201},UTC,", "name", "is 201 characters long; the limit is 200"
        )
    if kind == 12:
        return plain(
            f"{email},Ann,UTC,{'C' * 1001}", "city", "is 1001 characters long; the limit is 1000"
        )
    if kind == 13:  # one line larger than the import holds in memory
        text = f"{email},Ann,UTC," + "x" * 70_000
        return (
            (text + "\n").encode(),
            [str(line), "", "the line is longer than 65536 bytes", text[:120] + "..."],
            1,
        )
    if kind == 14:
        return plain(
            f'{email},"Unclosed,UTC,',
            "",
            'a quoted field is never closed (a " without its closing ")',
        )
    if kind == 15:  # the reject file shows the control character escaped
        text = f"{email},Ann,UTC,Ly\x07on"
        return (
            (text + "\n").encode(),
            [str(line), "city", "contains a control character", text.replace("\x07", "\\x07")],
            1,
        )
    return plain(
        f'{email},"Ann"x,UTC,', "", 'malformed quoting: a closing " must be followed by a comma'
    )


KINDS = 17
SPECIAL = {
    100: ("kept@example.org", "Kept", "UTC", ""),  # stored with the same values: unchanged
    200: ("renamed@example.org", "New Name", "Europe/Paris", "Lyon"),  # updated
    300: ("pending@example.org", "Pen", "UTC", ""),  # pending: the evidence activates them
    400: ("left@example.org", "Left Again", "UTC", ""),  # unsubscribed: suppressed
    500: ("BLOCKED@example.org", "Blocked", "UTC", ""),  # on the suppression list
}


def write_big_file(path: Path, count: int = 10_000) -> BigFile:
    """Every 25th row is broken (a different way each time); around them, valid rows with
    upper-case addresses, quoted commas, accents, blanks and spaces to normalize."""
    big = BigFile(path)
    out = io.BytesIO()
    out.write((HEADER + "\n").encode())
    line = 1
    for i in range(count):
        line += 1
        if i % 25 == 7:
            data, reject, lines = broken_row((i // 25) % KINDS, i, line)
            out.write(data)
            big.rejects.append(reject)
            line += lines - 1
            continue
        if i in SPECIAL:
            email, name, tz, city = SPECIAL[i]
            out.write(f"{email},{name},{tz},{city}\n".encode())
            if email in ("left@example.org", "BLOCKED@example.org"):
                big.suppressed_lines.append(line)
            else:
                big.rows[email] = (name, tz, {"city": city} if city else {})
            continue
        k = i - 9000 if 9000 <= i < 9005 else i  # five addresses come back later in the file
        email = f"person{k}@example{k % 7}.org"
        name, tz, city = f"Person {i}", TIMEZONES[i % 4], f"City{i % 5}"
        cells = [email, name, tz, city]
        if i % 10 == 1:
            cells[0] = email.replace("person", "Person").replace("example", "EXAMPLE")
        if i % 10 == 2:
            cells[2], tz = "", "UTC"
        if i % 10 == 3:
            cells[3], city = "", ""
        if i % 10 == 4:
            cells[1] = name = f"Zoë {i}"
        if i % 10 == 5:
            cells = [f"  {c} " for c in cells]
        if i % 25 == 3:  # far from rows with a stray quote: a quoted comma
            name = f"Doe, Jane {i}"
            cells[1] = f'"{name}"'
        out.write((",".join(cells) + "\n").encode())
        if email in big.rows:
            big.duplicates += 1
        big.rows[email] = (name, tz, {"city": city} if city else {})
    path.write_bytes(out.getvalue())
    big.created = len(big.rows) - 3  # kept, renamed and pending exist before the import
    return big


def prepare_existing(tidings: Tidings) -> None:
    """Subscribers the big file meets: kept, renamed, pending, left; and a suppressed address."""
    tidings.ok(
        "subscribers",
        "add",
        "kept@example.org",
        "--name",
        "Kept",
        "--confirmed",
        "--evidence",
        "form",
    )
    tidings.ok(
        "subscribers",
        "add",
        "renamed@example.org",
        "--name",
        "Old",
        "--confirmed",
        "--evidence",
        "form",
    )
    tidings.ok("subscribers", "add", "pending@example.org", "--name", "Pen")
    tidings.ok(
        "subscribers",
        "add",
        "left@example.org",
        "--name",
        "Left",
        "--confirmed",
        "--evidence",
        "form",
    )
    tidings.ok("subscribers", "unsubscribe", "left@example.org")
    tidings.ok("suppressions", "add", "blocked@example.org", "--reason", "complaint")


def snapshot(tidings: Tidings) -> dict[str, Any]:
    """What an import may change, per address (ids and times aside)."""
    with tidings.session() as session:
        subscribers = {s.id: s for s in session.scalars(select(Subscriber))}
        events: dict[int, list[tuple[str, str, str | None]]] = {}
        for e in session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)):
            events.setdefault(e.subscriber_id, []).append((e.kind, e.source, e.evidence))
        enrollments: dict[int, list[tuple[int, str, int]]] = {}
        for e in session.scalars(select(Enrollment).order_by(Enrollment.id)):
            enrollments.setdefault(e.subscriber_id, []).append(
                (e.campaign_id, e.status, e.next_position)
            )
        confirmations = dict(
            session.execute(
                select(Delivery.subscriber_id, func.count())
                .where(Delivery.kind == "confirmation")
                .group_by(Delivery.subscriber_id)
            ).all()
        )
        return {
            s.email: {
                "name": s.name,
                "timezone": s.timezone,
                "status": s.status,
                "attributes": s.attributes,
                "consent": events.get(s.id, []),
                "enrollments": enrollments.get(s.id, []),
                "confirmations": confirmations.get(s.id, 0),
            }
            for s in subscribers.values()
        }


def read_rejects(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_a_10000_row_file_with_broken_rows_of_every_kind(tidings_kap, tmp_path):
    tidings = tidings_kap
    prepare_existing(tidings)
    big = write_big_file(tmp_path / "open-day.csv")
    assert len(big.rejects) == 400 and big.duplicates == 5

    keep = ("--keep", "city")
    result = tidings(
        "subscribers", "import", str(big.path), "--evidence", "paper form, open day", *keep
    )
    assert result.exit_code == 3, result.output
    summary = result.stdout.splitlines()[0]
    assert summary == (
        f"created {big.created}, updated {2 + big.duplicates}, unchanged 1, suppressed 2, "
        "rejected 400"
    )
    assert "2 rows are on the suppression list or unsubscribed" in result.stdout
    # Their line numbers, never their addresses.
    assert f"(lines {big.suppressed_lines[0]}, {big.suppressed_lines[1]})" in result.stdout
    assert "left@example.org" not in result.output and "blocked@" not in result.output.lower()
    rejects_path = tmp_path / "open-day.rejects.csv"
    assert f"400 rejected rows written to {rejects_path}" in result.stderr

    # The reject file, exactly: every broken row, its line, the field and the reason.
    assert read_rejects(rejects_path) == [["line", "field", "reason", "data"], *big.rejects]
    assert os.stat(rejects_path).st_mode & 0o777 == 0o600, "it holds addresses"

    # Imported rows are exactly the valid ones, normalized, each one whole.
    state = snapshot(tidings)
    imported = {email: v for email, v in state.items() if email not in ("left@example.org",)}
    assert {e: (v["name"], v["timezone"], v["attributes"]) for e, v in imported.items()} == big.rows
    assert state["left@example.org"]["status"] == "unsubscribed"
    assert state["left@example.org"]["name"] == "Left", "a suppressed row changes nothing"
    assert "blocked@example.org" not in state
    evidence = ("import", "paper form, open day")
    for email, v in imported.items():
        assert v["status"] == "active", email
        assert len(v["enrollments"]) == 1 and v["enrollments"][0][1:] == ("active", 1), email
        if email in ("kept@example.org", "renamed@example.org"):
            assert [k for k, _, _ in v["consent"]] == ["imported", "confirmed"]
            assert v["consent"][0][1] == "cli", "added before: the import adds no event"
        elif email == "pending@example.org":
            assert v["consent"] == [
                ("requested", "cli", None),
                ("imported", *evidence),
                ("confirmed", *evidence),
            ]
        else:
            assert v["consent"] == [("imported", *evidence)], email
    assert state["renamed@example.org"]["attributes"] == {"city": "Lyon"}
    assert state["person1@example1.org"]["name"] == "Person 9001", "the later row wins"

    # The same file again: nothing new, nothing lost, the same result.
    again = tidings(
        "subscribers", "import", str(big.path), "--evidence", "paper form, open day", *keep
    )
    assert again.exit_code == 3
    # The five addresses listed twice change twice (there and back); the rest is unchanged.
    valid = len(big.rows) + big.duplicates
    assert again.stdout.splitlines()[0] == (
        f"created 0, updated {2 * big.duplicates}, unchanged {valid - 2 * big.duplicates}, "
        "suppressed 2, rejected 400"
    )
    assert snapshot(tidings) == state
    assert read_rejects(rejects_path) == [["line", "field", "reason", "data"], *big.rejects]


# ----------------------------------------------------------------------------- killed midway


def environment(tidings: Tidings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update({k: v for k, v in tidings.env.items() if v is not None})
    return env


def rows_text(start: int, stop: int) -> str:
    return "".join(
        f"person{i}@example.org,Person {i},{TIMEZONES[i % 4]},City{i}\n" for i in range(start, stop)
    )


def test_an_import_killed_midway_leaves_whole_batches_and_runs_again(tidings_kap, tmp_path):
    tidings = tidings_kap
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidings",
            "-v",
            "subscribers",
            "import",
            "-",
            "--evidence",
            "signed forms",
            "--batch-size",
            "100",
            "--keep",
            "city",
            "--rejects",
            str(tmp_path / "rejects.csv"),
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=environment(tidings),
    )
    assert process.stdin is not None and process.stderr is not None
    # Two and a half batches, and the pipe stays open: the importer commits two batches and
    # waits for more rows with the third half read.
    process.stdin.write((HEADER + "\n" + rows_text(0, 250)).encode())
    process.stdin.flush()
    log = []
    for raw in process.stderr:
        log.append(raw.decode())
        if "committed lines 102-201" in log[-1]:
            break
    assert any("committed lines 2-101" in line for line in log), log
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdin.close()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    # Exactly the two committed batches are there, each row whole.
    state = snapshot(tidings)
    assert sorted(state) == sorted(f"person{i}@example.org" for i in range(200))
    for v in state.values():
        assert v["status"] == "active"
        assert v["consent"] == [("imported", "import", "signed forms")]
        assert len(v["enrollments"]) == 1

    # The admin runs the whole file again (with a bad row in it this time).
    full = tmp_path / "list.csv"
    full.write_text(HEADER + "\n" + rows_text(0, 300) + "bad-address,X,UTC,\n", encoding="utf-8")
    result = tidings(
        "subscribers", "import", str(full), "--evidence", "signed forms", "--keep", "city"
    )
    assert result.exit_code == 3, result.output
    assert result.stdout.splitlines()[0] == (
        "created 100, updated 0, unchanged 200, suppressed 0, rejected 1"
    )
    state = snapshot(tidings)
    assert sorted(state) == sorted(f"person{i}@example.org" for i in range(300))
    for i in range(300):
        v = state[f"person{i}@example.org"]
        assert (v["name"], v["timezone"], v["attributes"]) == (
            f"Person {i}",
            TIMEZONES[i % 4],
            {"city": f"City{i}"},
        )
        assert v["consent"] == [("imported", "import", "signed forms")]
        assert len(v["enrollments"]) == 1


# ----------------------------------------------------------------------------- options


def stored(tidings: Tidings) -> dict[str, int]:
    counts = tidings.counts()
    return {k: counts[k] for k in ("subscribers", "consent_events", "deliveries", "enrollments")}


NOTHING = {"subscribers": 0, "consent_events": 0, "deliveries": 0, "enrollments": 0}


def test_consent_must_be_accounted_for(tidings, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text(HEADER + "\nann@example.org,Ann,UTC,\n")
    output = tidings.fails("subscribers", "import", str(path), code=2)
    assert "--evidence: say how these people agreed" in output
    assert "--double-opt-in" in output
    output = tidings.fails("subscribers", "import", str(path), "--evidence", "  ", code=2)
    assert "--evidence: say how these people agreed" in output
    output = tidings.fails("subscribers", "import", str(path), "--evidence", "a\nb", code=2)
    assert "one line" in output
    assert stored(tidings) == NOTHING


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\n", "the file is empty"),
        (
            b"name,timezone\nAnn,UTC\n",
            "line 1: the header has no 'email' column (found: name, timezone)",
        ),
        (b"ann@example.org,Ann,UTC\n", "line 1: the header has no 'email' column"),
        (b"email,name,Email\nann@example.org,Ann,x\n", "the header names the column 'Email' twice"),
        (b"email,,timezone\n", "line 1: column 2 of the header has no name"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "line 1: not valid utf-8: byte 0x89"),
        (b"email,name\rann@example.org,Ann\r", "line 1: a carriage return (CR) in the middle"),
    ],
    ids=["empty", "blank", "no-email-column", "no-header", "twice", "unnamed", "binary", "old-mac"],
)
def test_a_file_that_cannot_be_imported_stores_nothing(tidings, tmp_path, content, message):
    path = tmp_path / "list.csv"
    path.write_bytes(content)
    output = tidings.fails("subscribers", "import", str(path), "--evidence", "form")
    assert message in output
    assert output.startswith("Error: ")
    assert stored(tidings) == NOTHING
    assert not (tmp_path / "list.rejects.csv").exists()


def test_a_missing_file_or_an_unwritable_reject_file_is_a_usage_error(tidings, tmp_path):
    output = tidings.fails(
        "subscribers", "import", str(tmp_path / "nope.csv"), "--evidence", "x", code=2
    )
    assert "nope.csv" in output and "does not exist" in output
    path = tmp_path / "list.csv"
    path.write_text(HEADER + "\nann@example.org,Ann,UTC,\nbad,X,UTC,\n")
    nowhere = tmp_path / "no-such-folder" / "rejects.csv"
    output = tidings.fails(
        "subscribers", "import", str(path), "--evidence", "x", "--rejects", str(nowhere), code=2
    )
    assert f"cannot write the reject file {nowhere}" in output
    output = tidings.fails(
        "subscribers", "import", str(path), "--evidence", "x", "--rejects", str(path), code=2
    )
    assert "--rejects must not be the file being imported" in output
    assert stored(tidings) == NOTHING


def test_dry_run_checks_and_counts_but_stores_nothing(tidings, tmp_path):
    tidings.ok(
        "subscribers", "add", "ann@example.org", "--name", "Ann", "--confirmed", "--evidence", "x"
    )
    before = stored(tidings)
    path = tmp_path / "list.csv"
    path.write_text(HEADER + "\nann@example.org,Ann B,UTC,\nbob@example.org,Bob,UTC,\nbad,X,UTC,\n")
    result = tidings("subscribers", "import", str(path), "--evidence", "form", "--dry-run")
    assert result.exit_code == 3
    assert result.stdout.splitlines()[0] == (
        "dry run, nothing was stored: would have created 1, updated 1, unchanged 0, "
        "suppressed 0, rejected 1"
    )
    assert stored(tidings) == before
    assert tidings.json("subscribers", "show", "ann@example.org")["name"] == "Ann"
    assert read_rejects(tmp_path / "list.rejects.csv")[1][:2] == ["4", "email"]


def test_dry_run_counts_what_the_real_run_does_when_an_address_repeats_across_batches(
    tidings, tmp_path
):
    # Batches of 2 rows: carol is new in the first batch and comes back, renamed, in the
    # second; dan comes back unchanged in the third. The real run creates each once.
    path = tmp_path / "list.csv"
    path.write_text(
        HEADER
        + "\ncarol@example.org,Carol,UTC,\nbob@example.org,Bob,UTC,"
        + "\ncarol@example.org,Carol B,UTC,\ndan@example.org,Dan,UTC,"
        + "\ndan@example.org,Dan,UTC,\n"
    )
    args = ("subscribers", "import", str(path), "--evidence", "form", "--batch-size", "2")
    before = stored(tidings)
    dry = tidings(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert stored(tidings) == before
    real = tidings(*args)
    assert real.exit_code == 0, real.output
    counts = "created 3, updated 1, unchanged 1, suppressed 0, rejected 0"
    assert dry.stdout.splitlines()[0] == f"dry run, nothing was stored: would have {counts}"
    assert counts in real.stdout.splitlines()[0]


def test_a_dry_run_holds_no_write_lock_so_others_keep_writing(sqlite_url, clock, tmp_path):
    """A dry run only reads: while one checks a long file, the web sign-ups and the scheduler
    of the same SQLite file write as usual (before, the dry run held the write lock for its
    whole length and a writer without patience failed with "database is locked")."""
    # SQLite only: its single write lock is what a long transaction would hold.
    runtime = Runtime.open(Settings(database_url=sqlite_url), clock)
    database = runtime.engine.url.database
    rows = "".join(f"\nreader{i}@example.org,Reader {i},UTC," for i in range(6000))
    path = tmp_path / "big.csv"
    path.write_text(HEADER + rows + "\n")
    writes: list[str] = []

    def write_meanwhile(_bytes: int) -> None:
        if not writes and importer.report.rows >= 5500:  # several batches are checked by now
            other = sqlite3.connect(database, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute(
                    "INSERT INTO app_secrets (name, value) VALUES ('written-meanwhile', 'yes')"
                )
                other.execute("COMMIT")
                writes.append("ok")
            except sqlite3.OperationalError as exc:
                writes.append(str(exc))
            finally:
                other.close()

    options = ImportOptions(evidence="form", dry_run=True, batch_size=1000)
    importer = Importer(
        runtime.sessions,
        runtime.read_sessions,
        runtime.clock,
        options,
        "center.example.org",
        on_reject=lambda reject: None,
        progress=write_meanwhile,
    )
    with path.open("rb") as stream:
        report = importer.run(stream)
    assert writes == ["ok"]
    assert (report.created, report.rejected) == (6000, 0)
    with runtime.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
    runtime.close()


def test_double_opt_in_sends_new_addresses_a_confirmation_and_nobody_else(
    tidings_kap, smtp_server, tmp_path
):
    tidings = tidings_kap
    tidings.ok("subscribers", "add", "old@example.org", "--confirmed", "--evidence", "x")
    path = tmp_path / "list.csv"
    path.write_text(
        HEADER + "\nnew1@example.org,New One,UTC,\nold@example.org,Old,UTC,\n"
        "new2@example.org,New Two,Asia/Tokyo,Osaka\n"
    )
    result = tidings.ok("subscribers", "import", str(path), "--double-opt-in", "--json")
    report = json.loads(result.stdout)
    assert (report["created"], report["updated"], report["confirmations_queued"]) == (2, 1, 2)
    assert report["rejects_file"] is None and not (tmp_path / "list.rejects.csv").exists()
    for address in ("new1@example.org", "new2@example.org"):
        info = tidings.json("subscribers", "show", address)
        assert info["status"] == "pending"
        assert [(e["kind"], e["source"]) for e in info["consent"]] == [("requested", "import")]
        assert info["enrollments"] == []
    assert tidings.json("subscribers", "show", "old@example.org")["status"] == "active"

    # The two confirmations, and old@'s welcome (sent at once: not held to the window).
    assert "sent 3" in tidings.ok("send-due").stdout
    confirmations = [m for m in received(smtp_server) if "confirm" in m["Subject"].lower()]
    assert sorted(m["To"].addresses[0].addr_spec for m in confirmations) == [
        "new1@example.org",
        "new2@example.org",
    ]
    # Importing again asks nobody a second time.
    again = json.loads(
        tidings.ok("subscribers", "import", str(path), "--double-opt-in", "--json").stdout
    )
    assert (again["created"], again["confirmations_queued"]) == (0, 0)
    assert "sent 0" in tidings.ok("send-due").stdout


def test_stdin_encoding_and_the_default_reject_file(tidings, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    latin1 = (HEADER + "\njose@example.org,José Núñez,Europe/Madrid,Cádiz\n").encode("cp1252")
    result = tidings("subscribers", "import", "-", "--evidence", "form", input=latin1)
    assert result.exit_code == 3
    (_, reject) = read_rejects(tmp_path / "import-rejects.csv")
    assert reject[:3] == ["2", "", f"not valid utf-8: byte 0xe9 at column 21{EXCEL_HINT}"]
    result = tidings.ok(
        "subscribers", "import", "-", "--evidence", "form", "--encoding", "cp1252", input=latin1
    )
    assert result.stdout.startswith("created 1,")
    info = tidings.json("subscribers", "show", "jose@example.org")
    assert (info["name"], info["timezone"]) == ("José Núñez", "Europe/Madrid")
    output = tidings.fails(
        "subscribers", "import", "-", "--evidence", "x", "--encoding", "utf-16", code=2
    )
    assert "utf-16 is not supported" in output


def test_an_export_imports_again_into_another_database(tidings, tmp_path, sqlite_template):
    tidings.ok("subscribers", "add", "ann@example.org", "--name", "Ann", "--timezone", "Asia/Tokyo")
    tidings.ok(
        "subscribers",
        "add",
        "bob@example.org",
        "--name",
        "Bob, Jr.",
        "--confirmed",
        "--evidence",
        "x",
    )
    tidings.ok("subscribers", "update", "bob@example.org", "--attr", "city=Lyon", "--attr", "ref=7")
    exported = tidings.ok("subscribers", "export").stdout
    path = tmp_path / "export.csv"
    path.write_text(exported)

    other_folder = tmp_path / "other"
    other_folder.mkdir()
    other = on_sqlite_copy(sqlite_template, other_folder)
    result = other.ok(
        "subscribers",
        "import",
        str(path),
        "--evidence",
        "moved from the old server",
        "--keep",
        "city",
        "--keep",
        "ref",
    )
    assert result.stdout.startswith("created 2, updated 0, unchanged 0")
    assert "ignored columns status, created_at, confirmed_at, unsubscribed_at" in result.stderr
    rows = other.json("subscribers", "export")
    assert [(r["email"], r["name"], r["timezone"], r["attributes"]) for r in rows] == [
        ("ann@example.org", "Ann", "Asia/Tokyo", {}),
        ("bob@example.org", "Bob, Jr.", "UTC", {"city": "Lyon", "ref": "7"}),
    ]


def test_a_database_error_midway_says_where_and_the_import_runs_again(sqlite_template, tmp_path):
    tidings = on_sqlite_copy(sqlite_template, tmp_path)
    database = str(tidings.env["TIDINGS_DATABASE_URL"]).removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:  # the database refuses one row, as a full disk would
        conn.execute(
            "CREATE TRIGGER refuse AFTER INSERT ON subscribers WHEN NEW.email = 'boom@example.org' "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    conn.close()
    path = tmp_path / "list.csv"
    path.write_text(
        HEADER + "\n" + rows_text(0, 5) + "boom@example.org,Boom,UTC,\n" + rows_text(5, 9)
    )
    output = tidings.fails(
        "subscribers", "import", str(path), "--evidence", "form", "--batch-size", "3"
    )
    assert output.strip() == (
        "Error: the database failed: disk on fire; rows up to line 4 are stored, each whole: "
        "run the same import again to finish it"
    )
    assert sorted(snapshot(tidings)) == sorted(f"person{i}@example.org" for i in range(3))

    with sqlite3.connect(database) as conn:
        conn.execute("DROP TRIGGER refuse")
    conn.close()
    result = tidings.ok("subscribers", "import", str(path), "--evidence", "form")
    assert result.stdout.startswith("created 7, updated 0, unchanged 3, suppressed 0, rejected 0")
    assert len(snapshot(tidings)) == 10


TRICKY_ADDRESSES = [
    "a@b.org",
    "A.B@Example.ORG",
    "a..b@x.org",
    ".a@x.org",
    "a.@x.org",
    "a@x",
    "a@localhost",
    "a@x.local",
    "a@x.test",
    "a@x.invalid",
    "a@x.onion",
    "a@-x.org",
    "a@x-.org",
    "a@x..org",
    "a@ab--cd.org",
    "a@xn--abc.org",
    "a@xn--nxasmq6b.com",
    "a@123.456",
    "a@x.123",
    "a@x.o",
    "x" * 65 + "@x.org",
    "x" * 64 + "@x.org",
    "a@" + "b" * 64 + ".org",
    "a@" + ("b" * 60 + ".") * 5 + "org",
    " a@x.org ",
    "a@x.org\n",
    "postmaster@X.org",
    "a+b@x.org",
    "a'b@x.org",
    "a_b@x_y.org",
    "a@x.org.",
    "a@_x.org",
    "a b@x.org",
    "zoë@example.org",
    "a@exämple.org",
    "",
    "@x.org",
    "a@",
    "a@@x.org",
]


@pytest.mark.parametrize("address", TRICKY_ADDRESSES)
def test_the_import_normalizes_addresses_exactly_as_every_other_path(address):
    """The import checks everyday addresses on a fast path; whatever it accepts or refuses,
    and how it writes it, must be what `subscribers add` and the web form do."""

    def outcome(check):  # type: ignore[no-untyped-def]
        try:
            return "ok", check(address)
        except InvalidInput as exc:
            return "refused", str(exc)

    assert outcome(fast_normalize_email) == outcome(normalize_email)


# ----------------------------------------------------------------------------- least data

CRM_HEADER = "Email,Name,Time zone,Primary Diagnosis,Notes,Clinic,City"
CRM_ROW = 'ann@example.org,Ann,Europe/Paris,F33.1,"Intake 3/2: ideation, no plan",portland,Lyon'


def test_only_the_address_name_and_timezone_are_kept_unless_a_column_is_named(tidings, tmp_path):
    """A CRM export puts a diagnosis and a therapist's notes beside the address: without being
    asked, tidings keeps neither (before, every column became an attribute)."""
    path = tmp_path / "crm.csv"
    path.write_text(CRM_HEADER + "\n" + CRM_ROW + "\n")
    result = tidings.ok("subscribers", "import", str(path), "--evidence", "intake form")
    assert result.stdout.startswith("created 1,")
    assert (
        "dropped columns Primary Diagnosis, Notes, Clinic, City: not stored (only email, name "
        "and timezone are, and the columns named with --keep COLUMN or "
        "TIDINGS_IMPORT_KEEP_COLUMNS)"
    ) in result.stderr
    state = snapshot(tidings)["ann@example.org"]
    assert (state["name"], state["timezone"], state["attributes"]) == ("Ann", "Europe/Paris", {})
    stored = json.dumps(snapshot(tidings))
    assert "F33.1" not in stored and "ideation" not in stored

    # --keep names a column (any case); the setting names others; both add up.
    path.write_text(CRM_HEADER + "\n" + CRM_ROW.replace("ann@", "bob@") + "\n")
    report = json.loads(
        tidings.ok(
            "subscribers",
            "import",
            str(path),
            "--evidence",
            "intake form",
            "--keep",
            "clinic",
            "--json",
            TIDINGS_IMPORT_KEEP_COLUMNS="city, language",
        ).stdout
    )
    assert report["attribute_columns"] == ["Clinic", "City"]
    assert report["dropped_columns"] == ["Primary Diagnosis", "Notes"]
    assert snapshot(tidings)["bob@example.org"]["attributes"] == {
        "Clinic": "portland",
        "City": "Lyon",
    }
    # A kept column named on the command line must be in the file (a typo drops nothing
    # silently); the setting's columns may be absent.
    args = ("subscribers", "import", str(path), "--evidence", "x", "--keep")
    output = tidings.fails(*args, "clnic")
    assert "--keep clnic: the file has no such column (found: Email, Name" in output
    output = tidings.fails(*args, "status")
    assert "--keep status: tidings keeps this column itself" in output


SENSITIVE = [
    "Primary Diagnosis",
    "diagnosis_code",
    "ICD10",
    "condition",
    "Current Medications",
    "treatment_plan",
    "Next Appointment",
    "Insurance ID",
    "Date of Birth",
    "DateOfBirth",
    "dob",
    "birth_date",
    "SSN",
    "social_security_number",
    "MRN",
    "therapist",
    "notes",
    "Session Notes",
    "phone",
    "Gender",
]


@pytest.mark.parametrize("column", SENSITIVE)
def test_a_kept_column_that_looks_clinical_or_identifying_is_refused(
    tidings_sqlite, tmp_path, column
):
    tidings = tidings_sqlite
    path = tmp_path / "crm.csv"
    path.write_text(f"email,{column}\nann@example.org,x\n")
    output = tidings.fails(
        "subscribers", "import", str(path), "--evidence", "form", "--keep", column, code=2
    )
    assert f"--keep: the column {column!r} looks like clinical or identifying data" in output
    assert "Leave it out and it is dropped at import" in output and "--allow-sensitive" in output
    output = tidings.fails(
        "subscribers",
        "import",
        str(path),
        "--evidence",
        "form",
        code=2,
        TIDINGS_IMPORT_KEEP_COLUMNS=f"city,{column}",
    )
    assert f"TIDINGS_IMPORT_KEEP_COLUMNS: the column {column!r} looks like" in output
    assert stored(tidings) == NOTHING


def test_allow_sensitive_keeps_a_column_on_purpose_and_ordinary_names_pass(tidings, tmp_path):
    path = tmp_path / "crm.csv"
    path.write_text("email,Referral Source,clinic,city,language,Sussex group\n")
    with path.open("a") as f:
        f.write("ann@example.org,Dr. Smith,portland,Lyon,fr,yes\n")
    args = ("subscribers", "import", str(path), "--evidence", "form")
    keep = ("--keep", "clinic", "--keep", "City", "--keep", "language", "--keep", "Sussex group")
    result = tidings.ok(*args, *keep, "--json")
    assert json.loads(result.stdout)["dropped_columns"] == ["Referral Source"]
    assert "Referral Source" not in json.dumps(snapshot(tidings))
    output = tidings.fails(*args, *keep, "--keep", "referral source", code=2)
    assert "'referral source' looks like clinical or identifying data ('referral')" in output
    tidings.ok(*args, *keep, "--keep", "referral source", "--allow-sensitive")
    assert snapshot(tidings)["ann@example.org"]["attributes"] == {
        "Referral Source": "Dr. Smith",
        "clinic": "portland",
        "city": "Lyon",
        "language": "fr",
        "Sussex group": "yes",
    }


def test_a_kept_column_may_hold_several_lines(tidings, tmp_path):
    """A quoted CSV field with line breaks is legal; an attribute is never put in a header,
    so such rows are imported (before, they were rejected). The address, the name and the
    timezone stay one line."""
    path = tmp_path / "list.csv"
    path.write_bytes(
        b"email,name,timezone,interests,diagnosis\r\n"
        b'ann@example.org,Ann,UTC,"groups\r\nreading list\r\n",private\r\n'
        b'bob@example.org,Bob,UTC,"one\nand two\tcolumns",\r\n'
        b'carol@example.org,"Carol\nSmith",UTC,x,\r\n'
        b'dan@example.org,Dan,UTC,"bell \x07 here","dropped\nnever read \x07"\r\n'
    )
    result = tidings(
        "subscribers", "import", str(path), "--evidence", "form", "--keep", "interests"
    )
    assert result.exit_code == 3, result.output
    assert result.stdout.startswith("created 2, updated 0, unchanged 0, suppressed 0, rejected 2")
    state = snapshot(tidings)
    assert state["ann@example.org"]["attributes"] == {"interests": "groups\nreading list"}
    assert state["bob@example.org"]["attributes"] == {"interests": "one\nand two\tcolumns"}
    rejects = read_rejects(tmp_path / "list.rejects.csv")
    assert [r[:3] for r in rejects[1:]] == [
        ["7", "name", "contains a line break (CR or LF) (the row runs over lines 7-8)"],
        ["9", "interests", "contains a control character (the row runs over lines 9-10)"],
    ]
    # What the reject file repeats of a row leaves out the columns the import drops.
    data = rejects[2][3]  # (its bell shown however the reject file writes it)
    assert data.startswith("dan@example.org,Dan,UTC,bell ") and data.endswith(" here,")
    assert "never read" not in (tmp_path / "list.rejects.csv").read_text()

    # And the export writes the value back as one CSV field, which imports again as it was.
    exported = tmp_path / "export.csv"
    exported.write_text(tidings.ok("subscribers", "export").stdout)
    other = tidings.ok(
        "subscribers", "import", str(exported), "--evidence", "form", "--keep", "interests"
    )
    assert other.stdout.startswith("created 0, updated 0, unchanged 2")
