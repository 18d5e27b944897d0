"""The console's subscriber pages as the marketing team and the admins use them, through the
real Flask app on real databases (SQLite file and PostgreSQL) with a real SMTP server: search
by part of an address or a name, a profile with the consent evidence and every email's
outcome, the actions each role may take (and the 403 for the others), erasure only with the
address typed out, the suppression list for admins; every change leaves an audit entry that
names the member of staff and masks the subscriber's address."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from conftest import MONDAY, received
from sqlalchemy import func, select

from tidings.db.models import BounceEvent, Delivery, Subscriber, Suppression
from tidings.db.staff import AuditEntry
from tidings.runtime import Runtime
from tidings.scheduler import Worker
from tidings.staff.accounts import add_user
from tidings.subscribers.directory import SubscriberFilter
from tidings.subscribers.lifecycle import Consent, activate, add_subscriber
from tidings.subscribers.profiles import search_page
from tidings.web import create_app

PASSWORD = "Quiet-harbor-lantern-7291"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ANN = "ann.lee@example.org"  # pending, signed up through the form
BOB = "bob@clinic.example.net"  # active, in the KAP series
CARLA = "carla@example.org"  # active, named Lee


class Staff:
    """A member of staff's browser, signed in to the console with the role given."""

    def __init__(self, app: Any, runtime: Runtime, role: str):
        self.email = f"{role}@center.example.org"
        with runtime.sessions.begin() as session:
            add_user(
                session,
                runtime.clock.now(),
                runtime.secret(),
                self.email,
                role,
                role.title(),
                PASSWORD,
            )
        self.client = app.test_client()
        signed_in = self.client.post(
            "/staff/login", data={"email": self.email, "password": PASSWORD}
        )
        assert signed_in.status_code in (302, 303), signed_in.get_data(as_text=True)
        page = self.client.get("/staff/")
        assert page.status_code == 200
        self.csrf = CSRF.findall(page.get_data(as_text=True))[0]

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, **kwargs)

    def page(self, path: str) -> str:
        response = self.get(path)
        assert response.status_code == 200, response.status_code
        return response.get_data(as_text=True)

    def post(self, path: str, data: dict[str, str] | None = None) -> Any:
        return self.client.post(path, data={"csrf_token": self.csrf, **(data or {})})


@pytest.fixture
def app(runtime: Runtime) -> Any:
    return create_app(runtime)


@pytest.fixture
def people(runtime: Runtime, kap: str, worker: Worker) -> dict[str, int]:
    """Ann asked through the form (pending, her confirmation sent); Bob confirmed and got the
    welcome of the KAP series, which then bounced; Carla Lee is active too. Their ids."""
    now = runtime.clock.now()
    form = Consent(
        source="contact-form",
        consent_text="Yes, email me the KAP series.",
        ip="203.0.113.9",
        user_agent="Mozilla/5.0 (TestBrowser)",
    )
    with runtime.sessions.begin() as session:
        ann = add_subscriber(session, now, ANN, form, name="Ann Smith", message_domain="ex.org")
        bob = add_subscriber(session, now, BOB, form, name="Bob Stone", message_domain="ex.org")
        carla = add_subscriber(
            session,
            now,
            CARLA,
            Consent(source="cli", evidence="paper form, 2026 open day"),
            name="Carla Lee",
            confirmed=True,
        )
        ids = {"ann": ann.id, "bob": bob.id, "carla": carla.id}
    worker.tick()  # the confirmation emails go out
    with runtime.sessions.begin() as session:
        clicked = Consent(source="email", ip="198.51.100.4", user_agent="Mail/2.0 (Clicker)")
        activate(session, session.get(Subscriber, ids["bob"]), clicked, now)
    worker.tick()  # the welcome
    with runtime.sessions.begin() as session:
        welcome = session.scalars(
            select(Delivery).where(Delivery.subscriber_id == ids["bob"], Delivery.kind == "step")
        ).one()
        assert welcome.status == "sent"
        session.add(
            BounceEvent(
                report_sha256="0" * 64,
                kind="soft",
                status="4.2.2",
                diagnostic="452 4.2.2 Mailbox full",
                delivery_id=welcome.id,
                campaign_id=welcome.campaign_id,
                created_at=now,
            )
        )
    return ids


def audit_entries(runtime: Runtime) -> list[AuditEntry]:
    with runtime.read_sessions.begin() as session:
        rows = session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.action.startswith("subscriber.")
                | AuditEntry.action.startswith("suppression.")
            )
            .order_by(AuditEntry.id)
        ).all()
    for entry in rows:  # never a whole address, anywhere in an entry
        text = f"{entry.target} {entry.note} {json.dumps(entry.detail)}"
        for address in (ANN, BOB, CARLA):
            assert address not in text
    return list(rows)


def subscriber(runtime: Runtime, subscriber_id: int) -> Subscriber | None:
    with runtime.read_sessions.begin() as session:
        return session.get(Subscriber, subscriber_id)


# ----------------------------------------------------------------------------- search


def test_search_finds_by_part_of_an_address_and_by_name(app, runtime, people):
    viewer = Staff(app, runtime, "viewer")
    everyone = viewer.page("/staff/subscribers")
    for address in (ANN, BOB, CARLA):
        assert address in everyone  # staff see whole addresses here
    assert everyone.index(CARLA) < everyone.index(ANN)  # newest first
    assert "3 shown: that is everyone" in everyone

    clinic = viewer.page("/staff/subscribers?q=clinic.example")
    assert BOB in clinic and ANN not in clinic and CARLA not in clinic

    lees = viewer.page("/staff/subscribers?q=LEE")  # Ann's address, Carla's name
    assert ANN in lees and CARLA in lees and BOB not in lees
    assert "2 shown: no more match" in lees

    exact = viewer.page(f"/staff/subscribers?q={ANN}")
    assert ANN in exact and "exactly this address" in exact

    pending = viewer.page("/staff/subscribers?status=pending")
    assert ANN in pending and BOB not in pending
    in_kap = viewer.page("/staff/subscribers?campaign=kap-benefits")
    assert BOB in in_kap and CARLA in in_kap and ANN not in in_kap
    later = (MONDAY + timedelta(days=1)).date().isoformat()
    assert "Nobody matches" in viewer.page(f"/staff/subscribers?since={later}")
    assert ANN in viewer.page(f"/staff/subscribers?since={MONDAY.date().isoformat()}")

    nothing = viewer.page("/staff/subscribers?q=no-such-text")
    assert "Nobody matches" in nothing and "@" not in nothing.split("<tbody>")[1]

    for bad in ("status=gone", "since=yesterday", "campaign=no-such-campaign"):
        response = viewer.get(f"/staff/subscribers?{bad}")
        assert response.status_code in (400, 404), bad
        assert "Traceback" not in response.get_data(as_text=True)


def test_search_pages_by_id_and_stops_looking_when_its_time_is_up(runtime, people):
    """Pages of `size`, newest first, continued by id; a filtered page reads `chunk` ids at a
    time and, once its time budget is spent, says where it stopped instead of scanning the
    whole list."""
    with runtime.read_sessions.begin() as session:
        first = search_page(session, SubscriberFilter(), size=2)
        assert [r["email"] for r in first.rows] == [CARLA, BOB] and first.full
        second = search_page(session, SubscriberFilter(), before=first.next_before, size=2)
        assert [r["email"] for r in second.rows] == [ANN] and second.next_before is None

        lee = SubscriberFilter(search="lee")
        everything = search_page(session, lee, chunk=1)  # within the budget: to the end
        assert [r["email"] for r in everything.rows] == [CARLA, ANN]
        assert everything.next_before is None and everything.searched_down_to is None
        near = search_page(session, lee, chunk=1, budget=0)  # one chunk: Carla's id
        assert [r["email"] for r in near.rows] == [CARLA]
        assert near.searched_down_to == people["carla"] and not near.full
        further = search_page(session, lee, before=near.next_before, chunk=1, budget=0)
        assert further.rows == [] and further.next_before == people["bob"]
        last = search_page(session, lee, before=further.next_before, chunk=1, budget=0)
        assert [r["email"] for r in last.rows] == [ANN] and last.next_before is None
        full = search_page(session, SubscriberFilter(search="example"), size=1, chunk=1)
        assert [r["email"] for r in full.rows] == [CARLA] and full.full
        assert full.next_before == people["carla"] and full.searched_down_to is None


# ----------------------------------------------------------------------------- a profile


def test_the_profile_shows_consent_evidence_series_position_emails_and_bounces(
    app, runtime, people
):
    viewer = Staff(app, runtime, "viewer")
    bob = viewer.page(f"/staff/subscribers/{people['bob']}")
    assert BOB in bob and "Bob Stone" in bob and "active" in bob
    # consent: the request from the form and the click on the link, with their evidence
    assert "requested" in bob and "contact-form" in bob
    assert "203.0.113.9" in bob and "Mozilla/5.0 (TestBrowser)" in bob
    assert "confirmed" in bob and "198.51.100.4" in bob and "Mail/2.0 (Clicker)" in bob
    assert "consent text SHA-256" in bob
    # the series: the welcome went out, the second email is next
    assert "2 of " in bob
    # every email with its outcome, newest first: the welcome, then the confirmation
    emails = bob.split('id="emails-title"')[1]
    assert emails.index("kap-benefits") < emails.index("confirmation email")
    assert emails.count(">sent<") == 2 and "250" in emails  # the SMTP server's reply
    assert "452 4.2.2 Mailbox full" in bob and "4.2.2" in bob
    # a viewer reads, and is offered no action
    assert "Unsubscribe</button>" not in bob and "Erase</button>" not in bob

    carla = viewer.page(f"/staff/subscribers/{people['carla']}")
    assert "imported" in carla and "paper form, 2026 open day" in carla

    missing = viewer.get("/staff/subscribers/999999")
    assert missing.status_code == 404
    assert "no subscriber #999999" in missing.get_data(as_text=True)


def test_an_editor_sees_the_actions_a_viewer_does_not(app, runtime, people):
    editor = Staff(app, runtime, "editor")
    ann = editor.page(f"/staff/subscribers/{people['ann']}")
    assert "Resend the confirmation email" in ann and "Unsubscribe</button>" in ann
    assert "Erase</button>" not in ann  # admins only
    bob = editor.page(f"/staff/subscribers/{people['bob']}")
    assert "Pause</button>" in bob and "Resend the confirmation" not in bob
    admin = Staff(app, runtime, "admin")
    assert "Erase</button>" in admin.page(f"/staff/subscribers/{people['bob']}")


# ----------------------------------------------------------------------------- actions


def test_each_action_is_refused_to_a_viewer(app, runtime, people):
    viewer = Staff(app, runtime, "viewer")
    sid = people["ann"]
    for action, data in (
        ("unsubscribe", {}),
        ("resend-confirmation", {}),
        ("pause", {"weeks": "2"}),
        ("export-data", {}),
        ("erase", {"confirm": ANN}),
    ):
        assert viewer.post(f"/staff/subscribers/{sid}/{action}", data).status_code == 403
    for path, data in (
        ("/staff/suppressions/add", {"email": ANN, "reason": "manual"}),
        ("/staff/suppressions/remove", {"email": ANN, "why": "typo"}),
    ):
        assert viewer.post(path, data).status_code == 403
    assert subscriber(runtime, sid).status == "pending"
    assert audit_entries(runtime) == []


def test_unsubscribe_on_their_behalf(app, runtime, people):
    editor = Staff(app, runtime, "editor")
    sid = people["bob"]
    done = editor.post(f"/staff/subscribers/{sid}/unsubscribe")
    assert done.status_code == 303
    assert "Unsubscribed" in editor.page(done.headers["Location"])
    assert subscriber(runtime, sid).status == "unsubscribed"
    with runtime.read_sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1
    again = editor.post(f"/staff/subscribers/{sid}/unsubscribe")
    assert "already left" in editor.page(again.headers["Location"])
    (entry,) = audit_entries(runtime)  # the second changed nothing: no entry
    assert entry.actor == "staff:editor@center.example.org"
    assert entry.action == "subscriber.unsubscribe"
    assert entry.target == f"subscriber #{sid} b**@clinic.example.net"


def test_resend_confirmation_queues_it_for_the_worker(app, runtime, people, worker, smtp_server):
    editor = Staff(app, runtime, "editor")
    sid = people["ann"]
    sent_before = len(received(smtp_server))
    done = editor.post(f"/staff/subscribers/{sid}/resend-confirmation")
    assert done.status_code == 303
    assert "queued" in editor.page(done.headers["Location"])
    assert len(received(smtp_server)) == sent_before  # not sent from inside the request
    with runtime.read_sessions.begin() as session:
        waiting = session.scalars(
            select(Delivery).where(
                Delivery.subscriber_id == sid,
                Delivery.kind == "confirmation",
                Delivery.status == "queued",
            )
        ).all()
    assert len(waiting) == 1
    twice = editor.post(f"/staff/subscribers/{sid}/resend-confirmation")
    assert twice.status_code == 409 and "already waiting" in twice.get_data(as_text=True)
    worker.tick()
    assert [m["To"].addresses[0].addr_spec for m in received(smtp_server)[sent_before:]] == [ANN]
    active = editor.post(f"/staff/subscribers/{people['bob']}/resend-confirmation")
    assert active.status_code == 409 and "only a pending subscriber" in active.get_data(
        as_text=True
    )
    (entry,) = audit_entries(runtime)
    assert (entry.actor, entry.action) == (
        "staff:editor@center.example.org",
        "subscriber.resend-confirmation",
    )
    assert entry.target == f"subscriber #{sid} a**@example.org"


def test_pause_as_on_the_preferences_page(app, runtime, people):
    editor = Staff(app, runtime, "editor")
    sid = people["bob"]
    wrong = editor.post(f"/staff/subscribers/{sid}/pause", {"weeks": "3"})
    assert wrong.status_code == 400 and "Nothing was changed" in wrong.get_data(as_text=True)
    assert subscriber(runtime, sid).paused_until is None
    done = editor.post(f"/staff/subscribers/{sid}/pause", {"weeks": "2"})
    assert done.status_code == 303
    assert subscriber(runtime, sid).paused_until == MONDAY + timedelta(weeks=2)
    assert "paused until" in editor.page(done.headers["Location"])
    pending = editor.post(f"/staff/subscribers/{people['ann']}/pause", {"weeks": "1"})
    assert pending.status_code == 409
    (entry,) = audit_entries(runtime)
    assert (entry.action, entry.detail["weeks"]) == ("subscriber.pause", 2)
    assert entry.actor == "staff:editor@center.example.org"


def test_export_data_is_a_download_kept_out_of_caches(app, runtime, people):
    for role in ("editor", "admin"):
        member = Staff(app, runtime, role)
        response = member.post(f"/staff/subscribers/{people['bob']}/export-data")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["Content-Disposition"] == (
            f'attachment; filename="subscriber-{people["bob"]}-data.json"'
        )
        assert response.headers["Cache-Control"] == "no-store"
        data = json.loads(response.get_data(as_text=True))
        assert data["profile"]["email"] == BOB
        assert {e["kind"] for e in data["consent_events"]} == {"requested", "confirmed"}
    entries = audit_entries(runtime)
    assert [(e.actor, e.action) for e in entries] == [
        ("staff:editor@center.example.org", "subscriber.export-data"),
        ("staff:admin@center.example.org", "subscriber.export-data"),
    ]
    assert entries[0].target == f"subscriber #{people['bob']} b**@clinic.example.net"
    reviewer = Staff(app, runtime, "reviewer")
    assert reviewer.post(f"/staff/subscribers/{people['bob']}/export-data").status_code == 403


def test_erase_needs_the_exact_address_typed(app, runtime, people):
    sid = people["bob"]
    editor = Staff(app, runtime, "editor")
    assert editor.post(f"/staff/subscribers/{sid}/erase", {"confirm": BOB}).status_code == 403
    admin = Staff(app, runtime, "admin")
    for typed in (CARLA, "bob@clinic", "", "bob@clinic.example.ne"):
        refused = admin.post(f"/staff/subscribers/{sid}/erase", {"confirm": typed})
        assert refused.status_code == 400, typed
        page = refused.get_data(as_text=True)
        assert "nothing was erased" in page and "Nothing was changed" in page
        assert subscriber(runtime, sid) is not None
    assert audit_entries(runtime) == []
    done = admin.post(
        f"/staff/subscribers/{sid}/erase", {"confirm": " Bob@Clinic.Example.NET ", "note": "#12"}
    )
    assert done.status_code == 303
    assert "Erased everywhere" in admin.page(done.headers["Location"])
    assert subscriber(runtime, sid) is None
    assert admin.get(f"/staff/subscribers/{sid}").status_code == 404
    (entry,) = audit_entries(runtime)
    assert (entry.actor, entry.action, entry.note) == (
        "staff:admin@center.example.org",
        "subscriber.erase",
        "#12",
    )
    assert entry.target == f"subscriber #{sid} b**@clinic.example.net"
    assert entry.detail["deliveries"] == 2  # the confirmation and the welcome
    assert admin.post(f"/staff/subscribers/{sid}/erase", {"confirm": BOB}).status_code == 404


def test_an_unknown_subscriber_or_a_missing_token_changes_nothing(app, runtime, people):
    editor = Staff(app, runtime, "editor")
    for action in ("unsubscribe", "resend-confirmation", "export-data"):
        response = editor.post(f"/staff/subscribers/999999/{action}")
        assert response.status_code == 404, action
    forged = editor.client.post(f"/staff/subscribers/{people['bob']}/unsubscribe")
    assert forged.status_code == 400  # no CSRF token
    assert subscriber(runtime, people["bob"]).status == "active"
    assert audit_entries(runtime) == []


# ----------------------------------------------------------------------------- suppressions


def test_the_suppression_list_is_for_admins(app, runtime, people):
    for role in ("viewer", "editor", "reviewer"):
        member = Staff(app, runtime, role)
        assert member.get("/staff/suppressions").status_code == 403, role
        assert "Suppressions</a>" not in member.page("/staff/subscribers")
    admin = Staff(app, runtime, "admin")
    page = admin.page("/staff/suppressions")
    assert "keyed" in page and "no address is shown" in page and "The list is empty" in page

    bad = admin.post("/staff/suppressions/add", {"email": "carla@", "reason": "manual"})
    assert bad.status_code == 400 and "not a valid email address" in bad.get_data(as_text=True)
    done = admin.post(
        "/staff/suppressions/add", {"email": CARLA, "reason": "complaint", "detail": "ticket 88"}
    )
    assert done.status_code == 303
    listed = admin.page(done.headers["Location"])
    assert "Suppressed, and the subscriber" in listed
    assert "complaint" in listed and "ticket 88" in listed and CARLA not in listed
    assert subscriber(runtime, people["carla"]).status == "complained"
    again = admin.post("/staff/suppressions/add", {"email": CARLA, "reason": "manual"})
    assert "already on the list" in admin.page(again.headers["Location"])

    no_reason = admin.post("/staff/suppressions/remove", {"email": CARLA, "why": " "})
    assert no_reason.status_code == 400
    unknown = admin.post("/staff/suppressions/remove", {"email": ANN, "why": "typo"})
    assert unknown.status_code == 404
    removed = admin.post("/staff/suppressions/remove", {"email": CARLA, "why": "typo, ticket 91"})
    assert removed.status_code == 303
    assert "The list is empty" in admin.page(removed.headers["Location"])

    entries = audit_entries(runtime)
    assert [(e.actor, e.action) for e in entries] == [
        ("staff:admin@center.example.org", "suppression.add"),
        ("staff:admin@center.example.org", "suppression.remove"),
    ]
    assert entries[0].target == f"subscriber #{people['carla']} c**@example.org"
    assert entries[0].detail["reason"] == "complaint" and entries[0].note == "ticket 88"
    assert entries[1].note == "typo, ticket 91"
