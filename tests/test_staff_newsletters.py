"""The console's newsletters (issue 13, point 8): the list with each one's state and results;
one newsletter's page, where the audience is counted (a GET: nothing changes) and the counted
plan is scheduled, then sent by the worker to exactly those counted; unschedule and cancel;
bad input refused with nothing stored; roles; the audit log.

The real Flask app on real databases (SQLite and PostgreSQL), the real worker and SMTP
server, simulated time (Monday 19 October 2026, 08:00 UTC).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from conftest import received, run_for
from sqlalchemy import func, select
from web_helpers import Visitor

from tidings.campaigns.loading import load_campaign
from tidings.db.audit import entries
from tidings.db.models import BroadcastSchedule
from tidings.staff.accounts import add_user
from tidings.subscribers.lifecycle import Consent, add_subscriber
from tidings.web import create_app

PASSWORD = "plum-kettle-orbit-93-lantern"
PAGE = "/staff/newsletters/winter-news"
SUBJECT = "Winter news from the center"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NEWSLETTER_TOML = """\
slug = "winter-news"
name = "Winter newsletter"
kind = "broadcast"

[footer]
crisis = "If you are struggling or in crisis, call or text 988, or chat at 988lifeline.org."
crisis_line = "Help is available 24/7: call or text 988."
disclaimer = "Educational information, not medical advice."
risk = "Ketamine treatment has risks and needs medical screening."
reason = "You signed up at {{ sender.organization }}."
"""
NEWSLETTER_EMAIL = f"""\
+++
subject = "{SUBJECT}"
preheader = "Group sessions, and our new evening hours."
+++
## Winter news

Our evening hours start in December.
"""
READERS = [
    ("paris@example.org", "Europe/Paris"),
    ("berlin@example.org", "Europe/Berlin"),
    ("ny@example.org", "America/New_York"),
    ("tokyo@example.org", "Asia/Tokyo"),
]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def signed_in(app: Any, runtime: Any, email: str, role: str) -> Visitor:
    with runtime.sessions.begin() as session:
        add_user(session, runtime.clock.now(), runtime.secret(), email, role, "Test", PASSWORD)
    return sign_in(app, email)


def sign_in(app: Any, email: str) -> Visitor:
    """A new sign-in (a session ends after 30 idle minutes: simulated time moves on)."""
    visitor = Visitor(app)
    response = visitor.post("/staff/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 303
    return visitor


def csrf(visitor: Visitor, page: str = "/staff/") -> str:
    match = CSRF.search(visitor.get(page).get_data(as_text=True))
    assert match
    return match.group(1)


def schedule_form(page: str) -> dict[str, list[str]]:
    """The fields of the Schedule form that a Count shows (what was counted, and the token)."""
    match = re.search(r'<form method="post" action="[^"]*/schedule">(.*?)</form>', page, re.S)
    assert match, page
    fields: dict[str, list[str]] = {}
    hidden = r'<input type="hidden" name="([^"]+)" value="([^"]*)">'
    for name, value in re.findall(hidden, match[1]):
        fields.setdefault(name, []).append(unescape(value))
    return fields


def audit_of(runtime: Any, action: str) -> list[Any]:
    with runtime.read_sessions.begin() as session:
        return list(entries(session, action=action))


def arrivals(server: Any) -> set[str]:
    got = [m["To"].addresses[0].addr_spec for m in received(server) if m["Subject"] == SUBJECT]
    assert len(got) == len(set(got)), "someone got the newsletter twice"
    return set(got)


@pytest.fixture
def app(runtime, clock, tmp_path: Path):
    folder = tmp_path / "winter-news"
    folder.mkdir()
    (folder / "campaign.toml").write_text(NEWSLETTER_TOML, encoding="utf-8")
    (folder / "01-winter.md").write_text(NEWSLETTER_EMAIL, encoding="utf-8")
    with runtime.sessions.begin() as session:
        load_campaign(session, folder, runtime.settings, clock.now())
        for email, tz in READERS:
            add_subscriber(
                session,
                clock.now(),
                email,
                Consent(source="cli", evidence="test"),
                timezone=tz,
                confirmed=True,
                message_domain="center.example.org",
            )
    return create_app(runtime)


@pytest.fixture
def editor(app, runtime):
    return signed_in(app, runtime, "ed@center.example.org", "editor")


# ----------------------------------------------------------------------------- schedule


def test_count_then_schedule_sends_to_exactly_those_counted_and_shows_the_results(
    app, runtime, worker, clock, smtp_server, editor
):
    listing = editor.get("/staff/newsletters")
    assert listing.status_code == 200
    html = listing.get_data(as_text=True)
    assert f'href="{PAGE}"' in html and "not scheduled" in html and "Not sent yet" in html
    assert 'href="/staff/newsletters" aria-current="page"' in html  # the nav's entry

    page = editor.get(PAGE).get_data(as_text=True)
    assert "Not scheduled" in page and f'action="{PAGE}/unschedule"' not in page
    assert f'href="/staff/campaigns/winter-news/steps/winter">{SUBJECT}</a>' in page

    # Count: 10:00 in Paris on Monday (08:00 UTC, now: it has not passed), Europe only.
    plan = {"when": "instant", "at": "2026-10-19 10:00", "tz": "Europe/Paris"}
    counted = editor.get(PAGE, query_string={**plan, "timezones": "Europe/*", "count": "1"})
    assert counted.status_code == 200
    page = counted.get_data(as_text=True)
    assert "2 subscriber(s) match now" in page
    assert "active subscribers with timezone Europe/*" in page
    with runtime.read_sessions.begin() as session:  # counting stored nothing
        assert session.scalar(select(func.count()).select_from(BroadcastSchedule)) == 0

    # Schedule exactly what was counted.
    fields = schedule_form(page)
    assert fields["timezones"] == ["Europe/*"] and fields["at"] == ["2026-10-19 10:00"]
    response = editor.post(f"{PAGE}/schedule", data=fields)
    assert response.status_code == 303
    page = editor.get(response.headers["Location"]).get_data(as_text=True)
    assert "Scheduled." in page
    assert "2026-10-19 08:00 UTC" in page and "timezone Europe/*" in page
    # The form shows the schedule as stored, to change it.
    assert 'value="2026-10-19 10:00"' in page and 'value="Europe/Paris"' in page
    (entry,) = audit_of(runtime, "newsletter.schedule")
    assert entry.actor == "staff:ed@center.example.org" and entry.target == "winter-news"
    assert entry.detail["matching"] == 2

    run_for(worker, clock, timedelta(hours=3))
    assert arrivals(smtp_server) == {"paris@example.org", "berlin@example.org"}

    editor = sign_in(app, "ed@center.example.org")
    page = editor.get(PAGE).get_data(as_text=True)
    assert "<strong>Sent</strong>" in page
    results = re.search(r"<h2>Results</h2>.*?<tbody><tr>(.*?)</tr>", page, re.S)
    assert results and re.findall(r"<td>(\d+)</td>", results[1])[:3] == ["2", "0", "0"]
    html = editor.get("/staff/newsletters").get_data(as_text=True)
    assert "<td>sent</td>" in html and "<td>2</td><td>0</td><td>0</td><td>0</td>" in html


def test_local_time_and_attribute_filters_are_the_clis(app, runtime, worker, clock, editor):
    counted = editor.get(
        PAGE,
        query_string={"when": "local", "at": "2026-10-20 09:00", "count": "1", "tz": "Asia/Tokyo"},
    ).get_data(as_text=True)
    assert "4 subscriber(s) match now" in counted
    assert "2026-10-20 09:00 in each subscriber&#39;s own timezone" in counted
    response = editor.post(f"{PAGE}/schedule", data=schedule_form(counted))
    assert response.status_code == 303
    with runtime.read_sessions.begin() as session:
        row = session.scalar(select(BroadcastSchedule))
        assert row.local_time == "2026-10-20T09:00:00" and row.send_at is None

    # An attribute filter nobody matches: counted as none.
    counted = editor.get(
        PAGE, query_string={"when": "now", "where": "clinic=portland", "count": "1"}
    ).get_data(as_text=True)
    assert "0 subscriber(s) match now" in counted and "clinic = &#39;portland&#39;" in counted


def test_unschedule_and_cancel(app, runtime, worker, clock, smtp_server, editor):
    token = csrf(editor, PAGE)
    plan = {"csrf_token": token, "when": "instant", "at": "2026-10-19 09:00", "tz": "UTC"}
    assert editor.post(f"{PAGE}/schedule", data=plan).status_code == 303
    clock.set(at("2026-10-19T09:00:00"))
    worker.plan()  # queued, not yet sent

    editor = sign_in(app, "ed@center.example.org")
    token = csrf(editor, PAGE)
    plan["csrf_token"] = token
    page = editor.get(PAGE).get_data(as_text=True)
    assert "Unschedule" in page and "Cancel for good" in page
    response = editor.post(f"{PAGE}/unschedule", data={"csrf_token": token})
    assert response.status_code == 303
    assert "Unscheduled" in editor.get(response.headers["Location"]).get_data(as_text=True)
    worker.dispatch()
    assert arrivals(smtp_server) == set()
    (entry,) = audit_of(runtime, "newsletter.unschedule")
    assert entry.actor == "staff:ed@center.example.org" and entry.detail == {"taken_back": 4}
    # Not scheduled any more: a second unschedule is refused, clearly.
    again = editor.post(f"{PAGE}/unschedule", data={"csrf_token": token})
    assert again.status_code == 400 and "is not scheduled" in again.get_data(as_text=True)

    plan["at"] = "2026-10-19 10:00"
    assert editor.post(f"{PAGE}/schedule", data=plan).status_code == 303
    clock.set(at("2026-10-19T10:00:00"))
    worker.plan()
    editor = sign_in(app, "ed@center.example.org")
    token = csrf(editor, PAGE)
    plan["csrf_token"] = token
    response = editor.post(f"{PAGE}/cancel", data={"csrf_token": token})
    assert response.status_code == 303
    page = editor.get(response.headers["Location"]).get_data(as_text=True)
    assert "Cancelled for good" in page and "<strong>Cancelled</strong>" in page
    assert "Count</button>" not in page  # nothing left to schedule
    worker.dispatch()
    run_for(worker, clock, timedelta(hours=2))
    assert arrivals(smtp_server) == set()
    (entry,) = audit_of(runtime, "newsletter.cancel")
    assert entry.actor == "staff:ed@center.example.org" and entry.detail == {"skipped": 4}
    editor = sign_in(app, "ed@center.example.org")
    plan["csrf_token"] = csrf(editor, PAGE)
    refused = editor.post(f"{PAGE}/schedule", data={**plan, "at": "2026-10-20 10:00"})
    assert refused.status_code == 400 and "was cancelled" in refused.get_data(as_text=True)


# ----------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"at": "next tuesday"}, "Time: expected a date and time like"),
        ({"at": ""}, "Time: give a date and time"),
        ({"tz": "Mars/Olympus"}, "unknown timezone &#39;Mars/Olympus&#39;"),
        ({"at": "2026-10-18 10:00"}, "which has passed"),
        ({"timezones": "Europe/* Mars/Olympus"}, "audience.timezones: unknown timezone"),
        ({"where": "no-equals-sign"}, "Attributes: expected KEY=VALUE"),
        ({"when": "sometime"}, "when: expected one of instant, local, now"),
        ({"enrolled": "no-such-series"}, "no campaign &#39;no-such-series&#39; is loaded"),
    ],
)
def test_bad_input_is_refused_clearly_and_nothing_is_stored(app, runtime, editor, fields, message):
    token = csrf(editor, PAGE)
    data = {"csrf_token": token, "when": "instant", "at": "2026-10-19 10:00", "tz": "UTC"}
    response = editor.post(f"{PAGE}/schedule", data={**data, **fields})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert message in page, page
    assert 'role="alert"' in page
    # The Count says the same, and changes nothing either.
    if fields.get("at") != "":
        counted = editor.get(PAGE, query_string={**data, **fields, "count": "1"})
        assert counted.status_code == 400 and message in counted.get_data(as_text=True)
    with runtime.read_sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(BroadcastSchedule)) == 0
    assert audit_of(runtime, "newsletter.") == []


def test_unknown_names_and_sequences_are_refused(app, runtime, kap, editor):
    token = csrf(editor, PAGE)
    data = {"csrf_token": token, "when": "now"}
    assert editor.get("/staff/newsletters/nope").status_code == 404
    assert editor.post("/staff/newsletters/nope/schedule", data=data).status_code == 404
    for response in (
        editor.get("/staff/newsletters/kap-benefits"),
        editor.post("/staff/newsletters/kap-benefits/schedule", data=data),
        editor.post("/staff/newsletters/kap-benefits/cancel", data=data),
    ):
        assert response.status_code == 400
        assert "kap-benefits is a sequence" in response.get_data(as_text=True)
    # Only newsletters are listed.
    assert "kap-benefits" not in editor.get("/staff/newsletters").get_data(as_text=True)
    assert audit_of(runtime, "newsletter.") == []


def test_a_viewer_sees_newsletters_but_may_not_schedule(app, runtime):
    viewer = signed_in(app, runtime, "vi@center.example.org", "viewer")
    page = viewer.get(PAGE).get_data(as_text=True)
    assert "Winter newsletter" in page and "Count</button>" not in page
    token = csrf(viewer, PAGE)
    for action in ("schedule", "unschedule", "cancel"):
        response = viewer.post(f"{PAGE}/{action}", data={"csrf_token": token, "when": "now"})
        assert response.status_code == 403
    with runtime.read_sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(BroadcastSchedule)) == 0
