"""Staff accounts as an admin manages them from the shell (`tidings users ...`), their
passwords, two-factor sign-in and recovery codes, and the append-only audit log
(`tidings audit`), on SQLite and PostgreSQL.

The set-password link an admin hands out is opened in the real web app (the same
`create_app` that `tidings serve` runs), on the same database, with a fixed clock that the
test moves: nothing sleeps.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from cli_helpers import BASE_URL, MONDAY_8, Tidings
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError
from web_helpers import Visitor

from tidings.clock import FixedClock
from tidings.db import make_engine, make_sessions
from tidings.db.audit import act_as, record
from tidings.db.staff import AuditEntry, StaffSession, StaffUser
from tidings.errors import InvalidInput
from tidings.runtime import Runtime
from tidings.staff import accounts, sessions
from tidings.web import create_app

ANN = "ann@center.example.org"
BOB = "bob@center.example.org"
STRONG = "violet harbor lantern quietly"
OTHER_STRONG = "copper meadow tugboat riddle"
PAUSE_RESUME = ("campaign.pause", "campaign.resume")
LINK = re.compile(re.escape(BASE_URL) + r"(/staff/set-password/[\w.-]+)")


# ----------------------------------------------------------------------------- helpers


def staff_rows(t: Tidings) -> dict[str, int]:
    with t.session() as session:
        return {
            "users": session.scalar(select(func.count()).select_from(StaffUser)) or 0,
            "audit": session.scalar(select(func.count()).select_from(AuditEntry)) or 0,
        }


def link_of(output: str) -> str:
    found = LINK.search(output)
    assert found, output
    return found[1]


def audit_json(t: Tidings, *args: str) -> list[dict[str, Any]]:
    return json.loads(t.ok("audit", *args, "--format", "json").stdout)


def users_json(t: Tidings) -> dict[str, dict[str, Any]]:
    return {row["email"]: row for row in t.json("users", "list")}


def can_sign_in(t: Tidings, email: str, password: str) -> bool:
    with t.session() as session:
        try:
            accounts.check_password(session, MONDAY_8, email, password)
        except accounts.SignInFailed:
            return False
        return True


@pytest.fixture
def web(tidings: Tidings) -> Iterator[tuple[Any, FixedClock]]:
    """The web app on the CLI's database (same settings, same secret), at MONDAY_8."""
    clock = FixedClock(MONDAY_8)
    with Runtime.open(tidings.settings(), clock) as runtime:
        yield create_app(runtime), clock


def open_link(app: Any, path: str) -> Any:
    return Visitor(app).get(path)


def set_password_by_link(app: Any, path: str, password: str) -> Any:
    return Visitor(app).post(path, data={"password": password, "again": password})


def operator() -> str:
    """The actor the CLI records: cli:<OS user>, as getpass finds it under this env."""
    from tidings.db.audit import cli_actor

    return cli_actor()


# ----------------------------------------------------------------------------- users add


def test_add_prints_a_link_that_sets_the_password_once(tidings, web):
    app, _ = web
    out = tidings.ok("users", "add", "Ann@Center.Example.ORG", "--role", "editor", "--name", "Ann")
    assert f"{ANN}: added as editor" in out.stdout
    assert "works once, for 24 hours" in out.stdout
    path = link_of(out.stdout)
    assert users_json(tidings)[ANN]["password"] == "not set"
    assert not can_sign_in(tidings, ANN, STRONG)

    page = open_link(app, path)
    assert page.status_code == 200 and ANN in page.get_data(as_text=True)
    done = set_password_by_link(app, path, STRONG)
    assert done.status_code == 200 and "Your password is set" in done.get_data(as_text=True)
    assert can_sign_in(tidings, ANN, STRONG)
    assert users_json(tidings)[ANN]["password"] == "set"

    # Once used, the link is refused, and cannot set another password.
    assert open_link(app, path).status_code == 410
    again = set_password_by_link(app, path, OTHER_STRONG)
    assert again.status_code == 410 and "not valid, or used already" in again.get_data(as_text=True)
    assert can_sign_in(tidings, ANN, STRONG) and not can_sign_in(tidings, ANN, OTHER_STRONG)


def test_a_link_older_than_24_hours_is_refused(tidings, web):
    app, clock = web
    path = link_of(tidings.ok("users", "add", ANN, "--role", "viewer").stdout)
    clock.advance(hours=24)
    assert open_link(app, path).status_code == 200  # 24 hours to the second: still good
    clock.advance(seconds=1)
    late = set_password_by_link(app, path, STRONG)
    assert late.status_code == 410 and "expired" in late.get_data(as_text=True)
    assert not can_sign_in(tidings, ANN, STRONG)
    assert users_json(tidings)[ANN]["password"] == "not set"


def test_a_tampered_link_is_refused(tidings, web):
    app, _ = web
    path = link_of(tidings.ok("users", "add", ANN, "--role", "viewer").stdout)
    user_id, version, stamp, mac = path.rsplit("/", 1)[1].split(".")
    for token in (
        f"{user_id}.{int(version) + 1}.{stamp}.{mac}",  # a later version, same signature
        f"{user_id}.{version}.{int(stamp, 16) + 86400:x}.{mac}",  # a later time
        f"{user_id}.{version}.{stamp}",
        "nonsense",
    ):
        assert open_link(app, f"/staff/set-password/{token}").status_code == 410, token


def test_a_weak_password_on_the_link_page_is_refused_and_the_link_still_works(tidings, web):
    app, _ = web
    path = link_of(tidings.ok("users", "add", ANN, "--role", "viewer").stdout)
    weak = set_password_by_link(app, path, "password1234")
    assert weak.status_code == 400 and "most common passwords" in weak.get_data(as_text=True)
    differ = Visitor(app).post(path, data={"password": STRONG, "again": STRONG + "x"})
    assert differ.status_code == 400 and "the two entries differ" in differ.get_data(as_text=True)
    assert set_password_by_link(app, path, STRONG).status_code == 200
    assert can_sign_in(tidings, ANN, STRONG)


def test_add_with_password_stdin(tidings):
    out = tidings.ok(
        "users", "add", BOB, "--role", "admin", "--password-stdin", input=STRONG + "\n"
    )
    assert out.stdout == f"{BOB}: added as admin\n"  # no link: the password is set
    assert can_sign_in(tidings, BOB, STRONG)
    assert not can_sign_in(tidings, BOB, STRONG.upper())
    row = users_json(tidings)[BOB]
    assert (row["role"], row["password"], row["two_factor"]) == ("admin", "set", "off")
    with tidings.session() as session:
        stored = session.scalars(select(StaffUser.password_hash)).one()
    assert stored is not None and stored.startswith("$argon2id$") and STRONG not in stored


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short pass1", "at least 12 characters"),
        ("", "at least 12 characters"),
        ("password1234", "one of the most common passwords"),
        ("Password1234!", "one of the most common passwords"),
        ("qwertyuiop123", "one of the most common passwords"),
        ("aaaaaaaaaaaaaaaa", "too easy to guess"),
        ("abcdefghijklmnop", "too easy to guess"),
        ("bob@center.example.org", "too easy to guess"),  # the account's own address
    ],
)
def test_a_weak_password_is_refused_and_nothing_is_stored(tidings, password, message):
    before = staff_rows(tidings)
    out = tidings.fails("users", "add", BOB, "--role", "admin", "--password-stdin", input=password)
    assert out.startswith("Error: password: ") and message in out, out
    assert staff_rows(tidings) == before == {"users": 0, "audit": 0}


def test_a_duplicate_address_is_refused(tidings):
    tidings.ok("users", "add", ANN, "--role", "viewer")
    before = staff_rows(tidings)
    for spelling in (ANN, ANN.upper(), f"  {ANN} "):
        out = tidings.fails("users", "add", spelling, "--role", "admin")
        assert f"{ANN} already has a staff account" in out
    assert staff_rows(tidings) == before
    assert users_json(tidings)[ANN]["role"] == "viewer"


def test_an_unknown_role_or_address_is_refused(tidings):
    out = tidings.fails("users", "add", ANN, "--role", "owner", code=2)
    assert "'owner' is not one of" in out
    assert "no staff account for nobody@center.example.org" in tidings.fails(
        "users", "set-role", "nobody@center.example.org", "admin"
    )
    for verb in ("disable", "reset"):
        assert "no staff account" in tidings.fails("users", verb, "nobody@center.example.org")
    assert staff_rows(tidings) == {"users": 0, "audit": 0}


# ----------------------------------------------------------------------- set-role, disable, reset


def test_set_role(tidings):
    tidings.ok("users", "add", ANN, "--role", "viewer")
    assert tidings.ok("users", "set-role", ANN, "editor").stdout == f"{ANN}: editor\n"
    assert users_json(tidings)[ANN]["role"] == "editor"
    assert tidings.fails("users", "set-role", ANN, "superuser", code=2)
    assert users_json(tidings)[ANN]["role"] == "editor"


def test_disable_ends_every_session_and_sign_in(tidings):
    tidings.ok("users", "add", ANN, "--role", "editor", "--password-stdin", input=STRONG)
    tidings.ok("users", "add", BOB, "--role", "editor", "--password-stdin", input=STRONG)
    with tidings.session() as session:
        cookies = [
            sessions.open_session(session, MONDAY_8, accounts.find(session, who), False)
            for who in (ANN, ANN, BOB)
        ]
    out = tidings.ok("users", "disable", ANN)
    assert out.stdout == f"{ANN}: disabled, signed out everywhere\n"
    with tidings.session() as session:
        assert [sessions.current(session, MONDAY_8, c) is not None for c in cookies] == [
            False,
            False,
            True,  # Bob's session is his own
        ]
        assert session.scalar(select(func.count()).select_from(StaffSession)) == 1
    assert not can_sign_in(tidings, ANN, STRONG)
    assert can_sign_in(tidings, BOB, STRONG)
    assert users_json(tidings)[ANN]["disabled_at"] == MONDAY_8.isoformat()


def test_reset_forgets_password_links_second_factor_and_sessions(tidings, web):
    app, _ = web
    first_link = link_of(tidings.ok("users", "add", ANN, "--role", "editor").stdout)
    assert set_password_by_link(app, first_link, STRONG).status_code == 200
    with tidings.session() as session:
        user = accounts.find(session, ANN)
        accounts.start_totp(user, STRONG)
        assert user.totp_secret is not None
        codes = accounts.confirm_totp(
            session, MONDAY_8, user, pyotp.TOTP(user.totp_secret).at(MONDAY_8)
        )
        cookie = sessions.open_session(session, MONDAY_8, user, False)
    assert users_json(tidings)[ANN]["two_factor"] == "on"

    out = tidings.ok("users", "reset", ANN)
    new_link = link_of(out.stdout)
    assert new_link != first_link

    assert not can_sign_in(tidings, ANN, STRONG)  # the old password is gone
    row = users_json(tidings)[ANN]
    assert (row["password"], row["two_factor"]) == ("not set", "off")
    with tidings.session() as session:
        user = accounts.find(session, ANN)
        assert user.totp_secret is None and not user.totp_enabled
        assert sessions.current(session, MONDAY_8, cookie) is None
        for code in codes:  # no recovery code stands in for a second factor any more
            assert not accounts.check_second_factor(session, MONDAY_8, user, code)
    assert open_link(app, first_link).status_code == 410
    assert set_password_by_link(app, new_link, OTHER_STRONG).status_code == 200
    assert can_sign_in(tidings, ANN, OTHER_STRONG)


def test_reset_brings_back_a_disabled_account_and_only_the_newest_link_works(tidings, web):
    app, _ = web
    tidings.ok("users", "add", ANN, "--role", "editor", "--password-stdin", input=STRONG)
    tidings.ok("users", "disable", ANN)
    older = link_of(tidings.ok("users", "reset", ANN).stdout)
    newer = link_of(tidings.ok("users", "reset", ANN).stdout)
    assert users_json(tidings)[ANN]["disabled_at"] is None
    assert open_link(app, older).status_code == 410
    assert open_link(app, newer).status_code == 200
    assert not can_sign_in(tidings, ANN, STRONG)
    assert set_password_by_link(app, newer, OTHER_STRONG).status_code == 200
    assert can_sign_in(tidings, ANN, OTHER_STRONG)


# ----------------------------------------------------------------------------- users list


def test_list_as_table_json_and_csv(tidings):
    bob = ("users", "add", BOB, "--role", "admin", "--name", "Bob Ray", "--password-stdin")
    tidings.ok(*bob, input=STRONG)
    tidings.ok("users", "add", ANN, "--role", "viewer", "--name", "Ann Lee")
    tidings.ok("users", "disable", ANN)

    table = tidings.ok("users", "list").stdout.splitlines()
    assert table[0].split() == [
        "email",
        "name",
        "role",
        "two_factor",
        "password",
        "last_login_at",
        "disabled_at",
    ]
    assert table[2].startswith(ANN) and table[3].startswith(BOB)  # by address
    assert "Ann Lee" in table[2] and "viewer" in table[2] and "not set" in table[2]
    assert "Bob Ray" in table[3] and "admin" in table[3]

    rows = tidings.json("users", "list")
    assert [r["email"] for r in rows] == [ANN, BOB]
    assert rows[0] == {
        "email": ANN,
        "name": "Ann Lee",
        "role": "viewer",
        "two_factor": "off",
        "password": "not set",
        "last_login_at": None,
        "disabled_at": MONDAY_8.isoformat(),
    }
    assert rows[1]["password"] == "set" and rows[1]["disabled_at"] is None

    parsed = list(csv.DictReader(io.StringIO(tidings.ok("users", "list", "--csv").stdout)))
    assert [(r["email"], r["name"], r["role"]) for r in parsed] == [
        (ANN, "Ann Lee", "viewer"),
        (BOB, "Bob Ray", "admin"),
    ]
    # Nothing secret is ever printed.
    everything = "".join(tidings.ok("users", "list", "--format", f).stdout for f in ("json", "csv"))
    assert "argon2" not in everything and STRONG not in everything


# ----------------------------------------------------------------------------- two factors


def test_totp_turns_on_with_a_code_from_the_app_and_recovery_codes_work_once(tidings):
    tidings.ok("users", "add", ANN, "--role", "editor", "--password-stdin", input=STRONG)
    clock = FixedClock(MONDAY_8)
    with tidings.session() as session:
        user = accounts.find(session, ANN)
        uri = accounts.start_totp(user, STRONG)
        assert uri.startswith("otpauth://totp/") and "issuer=tidings" in uri
        seed = user.totp_secret
        assert seed is not None and not user.totp_enabled
        app = pyotp.TOTP(seed)

        # A wrong code, and a code of an hour ago, leave it off.
        wrong = f"{(int(app.at(clock.now())) + 1) % 1_000_000:06d}"
        for code in (wrong, app.at(clock.now() - timedelta(hours=1)), ""):
            with pytest.raises(InvalidInput, match="not the code your app shows"):
                accounts.confirm_totp(session, clock.now(), user, code)
        assert not user.totp_enabled

        codes = accounts.confirm_totp(session, clock.now(), user, app.at(clock.now()))
        assert user.totp_enabled and len(codes) == accounts.RECOVERY_CODES
        assert len(set(codes)) == len(codes)

    assert users_json(tidings)[ANN]["two_factor"] == "on"
    clock.advance(minutes=7)
    with tidings.session() as session:
        user = accounts.find(session, ANN)
        now = clock.now()
        # A phone 30 seconds behind is accepted (drift); then the current code; but a code is
        # never accepted twice, nor one older than the last accepted (RFC 6238, section 5.2).
        behind = app.at(now - timedelta(seconds=30))
        assert accounts.check_second_factor(session, now, user, behind)
        assert accounts.check_second_factor(session, now, user, app.at(now))
        assert not accounts.check_second_factor(session, now, user, app.at(now))
        assert not accounts.check_second_factor(session, now, user, behind)
        assert not accounts.check_second_factor(
            session, now, user, app.at(now - timedelta(hours=1))
        )
        assert not accounts.check_second_factor(session, now, user, wrong)
        assert not accounts.check_second_factor(session, now, user, "")

        assert accounts.check_second_factor(session, now, user, codes[0])
        assert not accounts.check_second_factor(session, now, user, codes[0])  # used up
        # As typed from paper: upper case, spaces around.
        assert accounts.check_second_factor(session, now, user, f"  {codes[1].upper()} ")
        assert not accounts.check_second_factor(session, now, user, codes[1])
        assert accounts.check_second_factor(session, now, user, codes[2])

        # Setting it up again makes new recovery codes; the old ones stop working.
        accounts.start_totp(user, STRONG)
        assert user.totp_secret is not None
        fresh = accounts.confirm_totp(session, now, user, pyotp.TOTP(user.totp_secret).at(now))
        assert not accounts.check_second_factor(session, now, user, codes[3])
        assert accounts.check_second_factor(session, now, user, fresh[3])
        assert not set(fresh) & set(codes)


# ----------------------------------------------------------------------------- the audit log


def test_every_change_by_the_cli_is_in_the_audit_log(tidings, web):
    app, _ = web
    tidings.ok("users", "add", ANN, "--role", "viewer", "--name", "Ann")
    tidings.ok("users", "add", BOB, "--role", "admin", "--password-stdin", input=STRONG)
    tidings.ok("users", "set-role", ANN, "editor")
    tidings.ok("users", "disable", ANN)
    path = link_of(tidings.ok("users", "reset", ANN).stdout)
    # Refused commands write nothing.
    tidings.fails("users", "add", ANN, "--role", "admin")
    carl = ("users", "add", "carl@center.example.org", "--role", "admin", "--password-stdin")
    tidings.fails(*carl, input="password1234")
    assert set_password_by_link(app, path, STRONG).status_code == 200

    log = list(reversed(audit_json(tidings)))  # oldest first
    assert [(e["action"], e["target"]) for e in log] == [
        ("user.add", ANN),
        ("user.add", BOB),
        ("user.set-role", ANN),
        ("user.disable", ANN),
        ("user.reset", ANN),
        ("user.set-password", ANN),
    ]
    me = operator()
    assert me.startswith("cli:") and len(me) > len("cli:")
    assert [e["actor"] for e in log[:5]] == [me] * 5
    assert log[5]["actor"] == f"staff:{ANN}"  # through the link: the person herself
    assert log[0]["detail"] == {"role": "viewer"} and log[1]["detail"] == {"role": "admin"}
    assert log[2]["detail"] == {"from": "viewer", "to": "editor"}
    assert all(e["at"] == MONDAY_8.isoformat() for e in log)
    assert STRONG not in json.dumps(log) and "argon2" not in json.dumps(log)


def test_the_os_user_is_the_actor(tidings):
    tidings.ok("users", "add", ANN, "--role", "viewer", LOGNAME="alice")
    tidings.ok("users", "set-role", ANN, "editor", LOGNAME="bruno")
    assert [e["actor"] for e in audit_json(tidings)] == ["cli:bruno", "cli:alice"]


def test_audit_filters_by_user_action_and_since(tidings):
    tidings.ok("users", "add", ANN, "--role", "viewer", LOGNAME="alice")
    tidings.ok("users", "add", BOB, "--role", "viewer", LOGNAME="bruno")
    tidings.at(MONDAY_8 + timedelta(days=2))
    tidings.ok("users", "set-role", ANN, "editor", LOGNAME="alice")
    tidings.ok("users", "disable", BOB, LOGNAME="bruno")
    tidings.at(MONDAY_8 + timedelta(days=3))

    def pick(*args: str) -> list[tuple[str, str, str]]:
        return [(e["actor"], e["action"], e["target"]) for e in audit_json(tidings, *args)]

    assert pick("--user", "cli:alice") == [
        ("cli:alice", "user.set-role", ANN),
        ("cli:alice", "user.add", ANN),
    ]
    assert pick("--user", "bruno", "--action", "user.add") == [("cli:bruno", "user.add", BOB)]
    assert pick("--action", "user.") == pick()
    assert [a for _, a, _ in pick("--action", "user.add")] == ["user.add", "user.add"]
    assert pick("--action", "campaign.") == []
    assert pick("--since", "2026-10-20") == [
        ("cli:bruno", "user.disable", BOB),
        ("cli:alice", "user.set-role", ANN),
    ]
    assert pick("--since", "36h") == pick("--since", "2026-10-21")  # an age, before now
    assert pick("--since", "2026-10-20", "--user", "alice", "--action", "user.set") == [
        ("cli:alice", "user.set-role", ANN)
    ]
    assert pick("--since", "2026-10-22") == []
    assert pick("--user", "%") == [] and pick("--user", "_") == []  # no wildcards
    assert len(pick("--limit", "3")) == 3
    assert "--since" in tidings.fails("audit", "--since", "last tuesday")

    table = tidings.ok("audit", "--user", "alice").stdout
    assert table.splitlines()[0].split() == ["at", "actor", "action", "target", "detail", "note"]
    assert "user.set-role" in table and "bruno" not in table
    rows = list(csv.DictReader(io.StringIO(tidings.ok("audit", "--csv").stdout)))
    assert [r["action"] for r in rows] == ["user.disable", "user.set-role", "user.add", "user.add"]


def test_pause_and_resume_from_the_cli_are_audited(tidings_kap):
    t = tidings_kap
    t.ok("campaigns", "pause", "kap-benefits", "--reason", "bounces went up; checking the list")
    t.at(MONDAY_8 + timedelta(hours=3))
    t.ok("campaigns", "resume", "kap-benefits")
    t.fails("campaigns", "pause", "no-such-campaign", "--reason", "x")  # nothing recorded
    # (Other changes to the campaign, its loading for one, have entries of their own.)
    log = [e for e in audit_json(t, "--action", "campaign.") if e["action"] in PAUSE_RESUME]
    assert [(e["action"], e["target"], e["note"], e["at"]) for e in log] == [
        ("campaign.resume", "kap-benefits", "", (MONDAY_8 + timedelta(hours=3)).isoformat()),
        (
            "campaign.pause",
            "kap-benefits",
            "bounces went up; checking the list",
            MONDAY_8.isoformat(),
        ),
    ]
    assert {e["actor"] for e in log} == {operator()}


@pytest.fixture
def audit_db(database_url: str) -> Iterator[Any]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_the_audit_log_takes_inserts_and_refuses_update_and_delete(audit_db):
    writes = make_sessions(audit_db, "cli:test")
    with writes.begin() as session:
        record(session, MONDAY_8, "campaign.pause", "kap-benefits", note="first")
        record(act_as(session, "staff:ann@center.example.org"), MONDAY_8, "user.sign-in", ANN)
    with audit_db.begin() as conn:  # a plain INSERT works too
        conn.execute(
            insert(AuditEntry).values(
                at=MONDAY_8, actor="system", action="campaign.resume", target="kap-benefits"
            )
        )

    def snapshot() -> list[tuple[Any, ...]]:
        with audit_db.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    text("SELECT id, actor, action, target, note FROM audit_log ORDER BY id")
                )
            ]

    before = snapshot()
    assert [r[1:4] for r in before] == [
        ("cli:test", "campaign.pause", "kap-benefits"),
        ("staff:ann@center.example.org", "user.sign-in", ANN),
        ("system", "campaign.resume", "kap-benefits"),
    ]
    for statement in (
        "UPDATE audit_log SET actor = 'someone else'",
        "UPDATE audit_log SET note = NULL WHERE id = 1",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE id = 2",
        # SQLite has no TRUNCATE; PostgreSQL's is refused by a statement trigger.
        *(["TRUNCATE audit_log"] if audit_db.dialect.name == "postgresql" else []),
    ):
        with pytest.raises(DBAPIError, match="append-only"), audit_db.begin() as conn:
            conn.execute(text(statement))
        assert snapshot() == before, statement

    # Through the ORM as well: a changed or deleted entry is refused at flush.
    for change in ("update", "delete"):
        with pytest.raises(DBAPIError, match="append-only"), writes.begin() as session:
            entry = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).first()
            assert entry is not None
            if change == "update":
                entry.note = "rewritten"
            else:
                session.delete(entry)
        assert snapshot() == before, change
