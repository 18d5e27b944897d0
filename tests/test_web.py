"""The contact channel over HTTP: sign-up form, confirm, unsubscribe (incl. RFC 8058 one-click),
preferences, the opt-in API and the health check, each with its bad input.

Requests go through Flask's test client into the real app (the same `create_app` that
`tidings serve` runs), on a real database (SQLite and PostgreSQL), with the real scheduler
sending to a real SMTP server. The end-to-end journey through a real server and a real browser
is in test_browser.py.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import decide_sign_ups, run_for
from sqlalchemy import func, select
from web_helpers import (
    API_BODY,
    BASE_URL,
    Visitor,
    api_post,
    app_with,
    assert_public_page,
    emails_to,
    glued_words,
    links_in,
    visible_text,
)

from tidings.campaigns.broadcasts import schedule_broadcast
from tidings.campaigns.definition import read_campaign
from tidings.campaigns.loading import load_campaign, resolve_campaign_dir
from tidings.campaigns.store import cadence_in_words
from tidings.config import Settings
from tidings.db.models import (
    ApiKey,
    ConsentEvent,
    Delivery,
    Enrollment,
    Step,
    Subscriber,
    Suppression,
)
from tidings.errors import ConfigError
from tidings.rendering.compile import CompiledStep
from tidings.runtime import Runtime
from tidings.scheduler import Worker
from tidings.subscribers.apikeys import create_api_key, revoke_api_key
from tidings.subscribers.directory import find_subscriber
from tidings.subscribers.lifecycle import Consent, add_subscriber, unsubscribe
from tidings.subscribers.tokens import Links, make_token
from tidings.web import create_app
from tidings.web.app import consent_text_for
from tidings.web.public.webview import SIGN_UP_TEXT, WEB_VIEW_CSP, web_view_html
from tidings.web.snippet import render_snippet

SECRET = "test-secret-key"  # conftest's settings
TABLES = {
    "subscribers": Subscriber,
    "consent_events": ConsentEvent,
    "deliveries": Delivery,
    "suppressions": Suppression,
    "enrollments": Enrollment,
}


# ----------------------------------------------------------------------------- helpers


def counts(runtime: Runtime) -> dict[str, int]:
    with runtime.sessions.begin() as session:
        return {
            name: session.scalar(select(func.count()).select_from(model)) or 0
            for name, model in TABLES.items()
        }


def subscriber(runtime: Runtime, email: str) -> Subscriber:
    with runtime.sessions.begin() as session:
        return find_subscriber(session, email)


def consent_events(runtime: Runtime, email: str) -> list[ConsentEvent]:
    with runtime.sessions.begin() as session:
        sub = find_subscriber(session, email)
        return list(
            session.scalars(
                select(ConsentEvent)
                .where(ConsentEvent.subscriber_id == sub.id)
                .order_by(ConsentEvent.id)
            )
        )


def add_active(runtime: Runtime, email: str, tz: str = "Europe/Paris", name: str = "Bob") -> str:
    """An active subscriber; returns their link key."""
    with runtime.sessions.begin() as session:
        sub = add_subscriber(
            session,
            runtime.clock.now(),
            email,
            Consent("cli", "test"),
            name=name,
            timezone=tz,
            confirmed=True,
            message_domain=runtime.settings.sender_domain,
        )
        return sub.key


def link_path(scope: str, key: str, runtime: Runtime | None = None) -> str:
    if scope == "confirm":
        assert runtime is not None
        return urlsplit(Links(BASE_URL, SECRET).confirm(key, runtime.clock.now())).path
    return f"/{scope}/{make_token(SECRET, scope, key)}"


@pytest.fixture
def app(runtime: Runtime) -> Any:
    return create_app(runtime)


@pytest.fixture
def visitor(app: Any) -> Visitor:
    return Visitor(app)


# ----------------------------------------------------------------------------- sign-up form


def test_the_sign_up_form_is_accessible_and_loads_nothing_from_elsewhere(visitor, settings):
    response = visitor.get("/subscribe")
    assert response.status_code == 200
    html = assert_public_page(response)
    for field in ("email", "name", "timezone", "consent"):
        assert f'<label for="field-{field}">' in html
        assert f'id="field-{field}"' in html
    assert html.count("<fieldset>") == 2 and html.count("<legend>") == 2
    assert consent_text_for(settings) in html
    assert "Center for Counseling" in html  # {organization} filled in
    assert "unsubscribe" in consent_text_for(settings)  # says how to leave
    assert "data-tidings-timezone" in html and 'list="timezones"' in html
    assert '<option value="America/New_York">' in html
    assert 'src="/static/timezone.js"' in html
    assert 'name="website"' in html and 'class="hp" aria-hidden="true"' in html
    assert visitor.get("/static/timezone.js").status_code == 200
    assert visitor.get("/static/tidings.css").status_code == 200


def test_signing_up_stores_consent_evidence_and_the_confirmation_email_arrives(
    visitor, runtime, worker, smtp_server, settings
):
    response = visitor.sign_up("Ann@Example.org", name="Ann Lee", timezone="Europe/Paris")
    assert response.status_code == 200
    assert "Check your inbox" in assert_public_page(response)

    ann = subscriber(runtime, "ann@example.org")
    assert (ann.status, ann.name, ann.timezone) == ("pending", "Ann Lee", "Europe/Paris")
    [event] = consent_events(runtime, "ann@example.org")
    assert (event.kind, event.source, event.ip, event.user_agent) == (
        "requested",
        "contact-form",
        "192.0.2.10",
        "TestBrowser/1.0",
    )
    shown = consent_text_for(settings)
    assert event.consent_text_sha256 == hashlib.sha256(shown.encode()).hexdigest()
    assert event.evidence == f"sign-up form at {BASE_URL}/subscribe"
    assert event.created_at == runtime.clock.now()

    worker.tick()
    [message] = emails_to(smtp_server, "ann@example.org")
    assert message["Subject"] == "Please confirm your subscription"
    assert len(links_in(message, "confirm")) >= 1
    # The confirmation email carries working one-click unsubscribe headers too.
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = re.search(r"<(https://[^>]+)>", message["List-Unsubscribe"]).group(1)
    assert unsubscribe_url.startswith(f"{BASE_URL}/unsubscribe/")
    one_click = visitor.post(urlsplit(unsubscribe_url).path, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    assert subscriber(runtime, "ann@example.org").status == "unsubscribed"


def test_the_answer_is_the_same_bytes_whoever_is_already_subscribed(app, runtime, clock):
    """Nobody can learn through the form who is on the list: new, pending, active, unsubscribed
    and bounced addresses get byte-identical answers (the CSRF token aside)."""
    add_active(runtime, "active@example.org")
    add_active(runtime, "gone@example.org")
    with runtime.sessions.begin() as session:
        unsubscribe(session, find_subscriber(session, "gone@example.org"), "cli", clock.now())
    Visitor(app).sign_up("pending@example.org")
    with runtime.sessions.begin() as session:
        sub = add_subscriber(
            session, clock.now(), "bounced@example.org", Consent("cli", "t"), confirmed=True
        )
        sub.status = "bounced"

    def answer(email: str) -> tuple[int, list[tuple[str, str]], bytes, str]:
        visitor = Visitor(app)
        form = visitor.get("/subscribe").get_data(as_text=True)
        response = visitor.sign_up(email)
        headers = sorted((k, v) for k, v in response.headers.items() if k != "Date")
        form_without_token = re.sub(r'name="csrf_token" value="[^"]+"', "", form)
        return response.status_code, headers, response.get_data(), form_without_token

    new = answer("new@example.org")
    assert new[0] == 200
    for existing in (
        "pending@example.org",
        "active@example.org",
        "gone@example.org",
        "bounced@example.org",
        "NEW@example.org",
    ):
        assert answer(existing) == new, existing


def test_a_pending_address_gets_at_most_one_new_confirmation_per_interval(
    visitor, runtime, clock, worker, smtp_server
):
    visitor.sign_up("ann@example.org")
    visitor.sign_up("ann@example.org")
    worker.tick()
    assert len(emails_to(smtp_server, "ann@example.org")) == 1

    clock.advance(minutes=16)  # TIDINGS_CONFIRM_RESEND_SECONDS is 900 by default
    assert visitor.sign_up("ann@example.org", name="Mallory").status_code == 200
    worker.tick()
    assert len(emails_to(smtp_server, "ann@example.org")) == 2
    # A stranger re-typing the address cannot change what is stored about her.
    assert subscriber(runtime, "ann@example.org").name == "Ann"

    for _ in range(10):  # however the form is pushed: at most 3 a day to one mailbox
        clock.advance(minutes=16)
        visitor.sign_up("ann@example.org")
    worker.tick()
    assert len(emails_to(smtp_server, "ann@example.org")) == 3


def test_someone_who_left_stays_left_until_they_press_the_come_back_button(
    app, runtime, clock, worker, smtp_server, kap
):
    add_active(runtime, "bob@example.org")
    clock.advance(days=1)
    with runtime.sessions.begin() as session:
        unsubscribe(session, find_subscriber(session, "bob@example.org"), "cli", clock.now())
    left_at = subscriber(runtime, "bob@example.org").unsubscribed_at
    events_before = [(e.kind, e.ip) for e in consent_events(runtime, "bob@example.org")]

    # A stranger types Bob's address: nothing about Bob changes...
    stranger = Visitor(app, ip="203.0.113.66", user_agent="Stranger/1.0")
    assert stranger.sign_up("bob@example.org").status_code == 200
    bob = subscriber(runtime, "bob@example.org")
    assert (bob.status, bob.unsubscribed_at) == ("unsubscribed", left_at)
    assert [(e.kind, e.ip) for e in consent_events(runtime, "bob@example.org")] == events_before
    # ... and Bob gets one email asking whether he wants to come back.
    worker.tick()
    [offer] = emails_to(smtp_server, "bob@example.org")
    assert offer["Subject"] == "Would you like our emails again?"
    assert "we have changed nothing" in " ".join(offer.get_body(("plain",)).get_content().split())
    [link] = links_in(offer, "comeback")

    # However often the form is pushed, one such email per 30 days.
    for _ in range(3):
        clock.advance(days=1)
        stranger.sign_up("bob@example.org")
        worker.tick()
    assert len(emails_to(smtp_server, "bob@example.org")) == 1

    # Opening the link (a scanner, a preview) changes nothing; the button brings him back.
    for method in ("get", "head"):
        opened = getattr(Visitor(app), method)(link)
        assert opened.status_code == 200
    page = Visitor(app).get(link).get_data(as_text=True)
    assert "Yes, send me these emails again" in page
    assert subscriber(runtime, "bob@example.org").status == "unsubscribed"
    clock.advance(hours=2)
    browser = Visitor(app, ip="198.51.100.20", user_agent="BobsPhone/2.0")  # no cookies yet
    pressed = browser.post(link)
    assert pressed.status_code == 200
    assert "You are subscribed" in assert_public_page(pressed)
    bob = subscriber(runtime, "bob@example.org")
    assert (bob.status, bob.unsubscribed_at) == ("active", None)
    clicked = [e for e in consent_events(runtime, "bob@example.org") if e.ip == "198.51.100.20"]
    assert [(e.kind, e.source, e.user_agent) for e in clicked] == [
        ("requested", "email", "BobsPhone/2.0"),
        ("confirmed", "email", "BobsPhone/2.0"),
    ]
    back = clicked[-1]
    sent_at = offer_sent_at(runtime, "bob@example.org")
    assert back.seconds_after_email == int((clock.now() - sent_at).total_seconds())
    with runtime.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 0
    assert browser.post(link).status_code == 200  # pressing again changes nothing


def test_one_come_back_email_per_30_days_and_its_link_expires(
    app, runtime, clock, worker, smtp_server
):
    add_active(runtime, "bob@example.org")
    with runtime.sessions.begin() as session:
        unsubscribe(session, find_subscriber(session, "bob@example.org"), "cli", clock.now())
    Visitor(app).sign_up("bob@example.org")
    worker.tick()
    [link] = links_in(emails_to(smtp_server, "bob@example.org")[0], "comeback")
    clock.advance(days=29)
    Visitor(app).sign_up("bob@example.org")
    worker.tick()
    assert len(emails_to(smtp_server, "bob@example.org")) == 1
    # Its link works as long as a confirm link (7 days), then for nobody.
    for method in ("get", "post"):
        expired = getattr(Visitor(app), method)(link)
        assert expired.status_code == 410
        assert "This link has expired" in assert_public_page(expired)
        assert "/unsubscribe/" not in expired.get_data(as_text=True)
    assert subscriber(runtime, "bob@example.org").status == "unsubscribed"
    clock.advance(days=2)
    Visitor(app).sign_up("bob@example.org")
    worker.tick()
    assert len(emails_to(smtp_server, "bob@example.org")) == 2


def offer_sent_at(runtime: Runtime, email: str) -> Any:
    with runtime.sessions.begin() as session:
        sub = find_subscriber(session, email)
        sent = session.scalar(
            select(Delivery.sent_at).where(
                Delivery.subscriber_id == sub.id, Delivery.kind == "comeback"
            )
        )
    return sent


@pytest.mark.parametrize("how", ["hard-bounce", "complaint", "erased"])
def test_bounced_complained_and_suppressed_addresses_get_no_email_from_the_form(
    app, runtime, clock, worker, smtp_server, how
):
    from tidings.states import StopReason
    from tidings.subscribers.lifecycle import stop
    from tidings.subscribers.privacy import erase

    add_active(runtime, "bob@example.org")
    with runtime.sessions.begin() as session:
        bob = find_subscriber(session, "bob@example.org")
        if how == "erased":
            erase(session, bob.email, clock.now())
        else:
            stop(session, bob, StopReason(how), "test", None, clock.now())
    before = counts(runtime)
    assert Visitor(app).sign_up("bob@example.org").status_code == 200
    worker.tick()
    assert emails_to(smtp_server, "bob@example.org") == []
    assert counts(runtime) == before


def test_a_come_back_email_that_bounced_is_not_sent_again(app, runtime, clock, worker, smtp_server):
    add_active(runtime, "bob@example.org")
    with runtime.sessions.begin() as session:
        unsubscribe(session, find_subscriber(session, "bob@example.org"), "cli", clock.now())

    async def no_such_user(server: Any, session: Any, envelope: Any, address: str, *_: Any) -> str:
        if address == "bob@example.org":
            return "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    smtp_server.handler.handle_RCPT = no_such_user  # the mailbox is gone meanwhile
    Visitor(app).sign_up("bob@example.org")
    assert worker.tick().dispatched.bounced == 1
    del smtp_server.handler.handle_RCPT
    clock.advance(days=31)
    Visitor(app).sign_up("bob@example.org")
    worker.tick()
    assert emails_to(smtp_server, "bob@example.org") == []


@pytest.mark.parametrize(
    ("fields", "bad_field", "message"),
    [
        ({"email": "not-an-address"}, "email", "is not a valid email address"),
        ({"email": "a" * 250 + "@example.org"}, "email", "the limit is 254"),
        ({"email": ""}, "email", "an email address is required"),
        ({"name": "Ann\r\nBcc: victim@example.org"}, "name", "without control characters"),
        ({"name": "A" * 201}, "name", "the limit is 200"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown timezone"),
        ({"timezone": "PST"}, "timezone", "use a region name"),
        ({"timezone": "Europe/" + "x" * 80}, "timezone", "the limit is 64"),
        ({"consent": ""}, "consent", "Please tick the box"),
        ({"consent_version": "0123456789abcdef"}, "consent", "wording of this agreement"),
    ],
)
def test_bad_sign_up_input_is_a_422_naming_the_field_and_nothing_is_stored(
    visitor, runtime, fields, bad_field, message
):
    response = visitor.sign_up(**{"email": "ann@example.org", **fields})
    assert response.status_code == 422
    html = assert_public_page(response)
    assert 'role="alert"' in html
    assert f'href="#field-{bad_field}"' in html
    assert message in html.replace("&#39;", "'")
    assert 'aria-invalid="true"' in html
    assert counts(runtime) == dict.fromkeys(TABLES, 0)


def test_every_bad_field_is_reported_at_once_and_what_was_typed_comes_back_escaped(
    visitor, runtime
):
    response = visitor.sign_up(
        '"><script>alert(1)</script>', name="<b>Ann</b>\nBcc: x", timezone="Nowhere", consent=""
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    for field in ("email", "name", "timezone", "consent"):
        assert f'href="#field-{field}"' in html
    assert "<script>alert(1)</script>" not in html and "<b>Ann</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert counts(runtime) == dict.fromkeys(TABLES, 0)


def test_a_form_without_a_valid_csrf_token_is_refused_and_comes_back_to_send_again(
    visitor, runtime
):
    data = {"email": "ann@example.org", "name": "Ann", "timezone": "UTC", "consent": "yes"}
    fields = visitor.hidden_fields("/subscribe")
    without = visitor.post(
        "/subscribe", data={**data, "consent_version": fields["consent_version"]}
    )
    forged = visitor.post("/subscribe", data={**fields, **data, "csrf_token": "forged"})
    for response in (without, forged):
        assert response.status_code == 400
        html = assert_public_page(response)
        assert "send the form again" in html
        assert 'value="ann@example.org"' in html  # filled in, ready to send again
        assert re.search(r'name="csrf_token" value="[^"]+"', html)
    assert counts(runtime) == dict.fromkeys(TABLES, 0)
    # Another visitor's token is not valid with this visitor's session either.
    stranger = Visitor(create_app(runtime))
    stolen = stranger.hidden_fields("/subscribe")
    assert visitor.post("/subscribe", data={**stolen, **data}).status_code == 400
    assert counts(runtime) == dict.fromkeys(TABLES, 0)


def test_the_embedded_form_is_accepted_from_an_allowed_origin_only(runtime, clock):
    app, other = app_with(runtime, clock, form_origins="https://www.center.example.org")
    try:
        from tidings.web.app import consent_version_of

        data = {
            "email": "ann@example.org",
            "name": "Ann",
            "timezone": "UTC",
            "consent": "yes",
            "consent_version": consent_version_of(consent_text_for(other.settings)),
        }
        visitor = Visitor(app)
        refused = visitor.post(
            "/subscribe", data=data, headers={"Origin": "https://evil.example.net"}
        )
        assert refused.status_code == 400
        assert counts(runtime)["subscribers"] == 0
        accepted = visitor.post(
            "/subscribe", data=data, headers={"Origin": "https://www.center.example.org"}
        )
        assert accepted.status_code == 200
        decide_sign_ups(runtime)
        assert subscriber(runtime, "ann@example.org").status == "pending"
        [event] = consent_events(runtime, "ann@example.org")
        assert event.evidence == "sign-up form at https://www.center.example.org"
    finally:
        other.close()


def test_a_filled_in_honeypot_gets_the_usual_answer_and_nothing_is_stored(visitor, runtime):
    response = visitor.sign_up("bot@example.org", website="https://spam.example")
    assert response.status_code == 200
    assert "Check your inbox" in response.get_data(as_text=True)
    assert counts(runtime) == dict.fromkeys(TABLES, 0)


def test_too_many_sign_ups_from_one_address_get_429(runtime, clock):
    app, other = app_with(runtime, clock, subscribe_rate_limit="3/minute")
    try:
        visitor = Visitor(app, ip="198.51.100.7")
        for i in range(3):
            assert visitor.sign_up(f"p{i}@example.org").status_code == 200
        response = visitor.sign_up("p3@example.org")
        assert response.status_code == 429
        assert "Too many requests" in assert_public_page(response)
        assert counts(runtime)["subscribers"] == 3
        # Someone else, from another address, is not held back.
        assert Visitor(app, ip="198.51.100.8").sign_up("q@example.org").status_code == 200
        assert counts(runtime)["subscribers"] == 4
    finally:
        other.close()


def test_the_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(runtime, clock):
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    direct_app, direct = app_with(runtime, clock, subscribe_rate_limit="1/minute")
    proxied_app, proxied = app_with(
        runtime, clock, subscribe_rate_limit="1/minute", trusted_proxies=1
    )
    try:
        visitor = Visitor(direct_app, ip="127.0.0.1")
        fields = visitor.hidden_fields("/subscribe")
        data = {**fields, "email": "ann@example.org", "timezone": "UTC", "consent": "yes"}
        assert visitor.post("/subscribe", data=data, headers=forwarded).status_code == 200
        decide_sign_ups(runtime)
        assert consent_events(runtime, "ann@example.org")[0].ip == "127.0.0.1"
        # A forged header does not get around the limit when no proxy is trusted.
        data["email"] = "bob@example.org"
        assert (
            visitor.post(
                "/subscribe", data=data, headers={"X-Forwarded-For": "203.0.113.77"}
            ).status_code
            == 429
        )

        visitor = Visitor(proxied_app, ip="127.0.0.1")
        fields = visitor.hidden_fields("/subscribe")
        data = {**fields, "email": "cat@example.org", "timezone": "UTC", "consent": "yes"}
        assert visitor.post("/subscribe", data=data, headers=forwarded).status_code == 200
        decide_sign_ups(runtime)
        assert consent_events(runtime, "cat@example.org")[0].ip == "203.0.113.9"
        data["email"] = "dan@example.org"
        assert visitor.post("/subscribe", data=data, headers=forwarded).status_code == 429
        assert (
            visitor.post(
                "/subscribe", data=data, headers={"X-Forwarded-For": "203.0.113.10"}
            ).status_code
            == 200
        )
    finally:
        direct.close()
        proxied.close()


def test_an_oversized_request_is_413_and_nothing_is_stored(visitor, runtime):
    response = visitor.sign_up("ann@example.org", name="x" * 20_000)
    assert response.status_code == 413
    assert "Too much data" in assert_public_page(response)
    assert counts(runtime) == dict.fromkeys(TABLES, 0)


def test_a_script_tag_in_the_name_is_escaped_on_every_page_and_in_the_email(
    visitor, runtime, worker, smtp_server, kap
):
    name = "<script>alert('x')</script>"
    assert visitor.sign_up("ann@example.org", name=name).status_code == 200
    assert subscriber(runtime, "ann@example.org").name == name  # stored as typed
    worker.tick()
    [message] = emails_to(smtp_server, "ann@example.org")
    html_part = message.get_body(("html",)).get_content()
    assert "<script" not in html_part
    confirmed = visitor.post(links_in(message, "confirm")[0]).get_data(as_text=True)
    assert "<script>alert" not in confirmed and "&lt;script&gt;alert" in confirmed
    key = subscriber(runtime, "ann@example.org").key
    prefs = visitor.get(link_path("preferences", key)).get_data(as_text=True)
    assert "<script>alert" not in prefs
    assert 'value="&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"' in prefs
    worker.tick()  # the welcome email
    welcome = emails_to(smtp_server, "ann@example.org")[-1]
    assert "<script" not in welcome.get_body(("html",)).get_content()


# ----------------------------------------------------------------------------- confirm


def confirmation_link(visitor: Visitor, worker: Worker, smtp_server: Any, email: str) -> str:
    visitor.sign_up(email)
    worker.tick()
    return links_in(emails_to(smtp_server, email)[-1], "confirm")[0]


def test_opening_the_confirm_link_asks_and_only_its_button_confirms(
    app, visitor, runtime, worker, smtp_server, kap, clock
):
    """Mail scanners and chat previews open links: GET and HEAD change nothing. The button
    (a POST without any CSRF cookie: from any browser) confirms, with its evidence."""
    link = confirmation_link(visitor, worker, smtp_server, "ann@example.org")
    sent_at = clock.now()
    clock.advance(hours=1)
    before = counts(runtime)
    scanner = Visitor(app, ip="203.0.113.200", user_agent="SafeLinks/1.0")
    assert scanner.head(link).status_code == 200
    asked = scanner.get(link)
    assert asked.status_code == 200
    html = assert_public_page(asked)
    assert "Yes, subscribe me" in html and 'method="post"' in html
    assert "csrf_token" not in html  # the signed link is the authority
    assert counts(runtime) == before
    assert subscriber(runtime, "ann@example.org").status == "pending"

    clock.advance(minutes=5)
    phone = Visitor(app, ip="198.51.100.44", user_agent="AnnsPhone/3.1")  # never saw our pages
    response = phone.post(link)
    assert response.status_code == 200
    html = assert_public_page(response)
    assert "You are subscribed, Ann" in html
    assert "What comes next" in html and "during daytime hours, Paris time." in html
    assert "/preferences/" in html and "/unsubscribe/" in html

    ann = subscriber(runtime, "ann@example.org")
    assert ann.status == "active" and ann.confirmed_at == clock.now()
    with runtime.sessions.begin() as session:
        assert session.scalars(select(Enrollment.status)).all() == ["active"]
    confirmed = consent_events(runtime, "ann@example.org")[-1]
    assert (confirmed.kind, confirmed.source, confirmed.ip, confirmed.user_agent) == (
        "confirmed",
        "email",
        "198.51.100.44",
        "AnnsPhone/3.1",
    )
    assert confirmed.seconds_after_email == (clock.now() - sent_at).total_seconds() == 3900
    # Pressing (or opening) it again changes nothing and says so.
    for again in (phone.post(link), phone.get(link)):
        assert again.status_code == 200
        assert "already subscribed" in again.get_data(as_text=True)
    assert [e.kind for e in consent_events(runtime, "ann@example.org")] == [
        "requested",
        "confirmed",
    ]
    worker.tick()
    assert emails_to(smtp_server, "ann@example.org")[-1]["Subject"] != (
        "Please confirm your subscription"
    )  # the welcome email arrived


def test_an_expired_confirm_link_offers_a_new_email_whose_link_works(
    visitor, runtime, worker, smtp_server, clock
):
    link = confirmation_link(visitor, worker, smtp_server, "ann@example.org")
    clock.advance(days=7, seconds=1)
    for response in (visitor.get(link), visitor.post(link)):
        assert response.status_code == 410
        html = assert_public_page(response)
        assert "This link has expired" in html and "Send me a new confirmation email" in html
    assert subscriber(runtime, "ann@example.org").status == "pending"

    again = visitor.submit(link, {}, action=f"{link}/resend")
    assert again.status_code == 200
    assert "Check your inbox" in again.get_data(as_text=True)
    worker.tick()
    fresh = links_in(emails_to(smtp_server, "ann@example.org")[-1], "confirm")[0]
    assert fresh != link
    assert visitor.post(fresh).status_code == 200
    assert subscriber(runtime, "ann@example.org").status == "active"


def test_an_expired_link_stays_expired_for_an_active_subscriber(
    visitor, runtime, worker, smtp_server, clock
):
    """A 400-day-old confirm link opens nothing: no page with fresh preference and
    unsubscribe links for whoever holds the old email."""
    link = confirmation_link(visitor, worker, smtp_server, "ann@example.org")
    assert visitor.post(link).status_code == 200
    clock.advance(days=400)
    for response in (visitor.get(link), visitor.post(link), visitor.head(link)):
        assert response.status_code == 410
    html = visitor.get(link).get_data(as_text=True)
    assert "/preferences/" not in html and "/unsubscribe/" not in html
    assert "Send me a new confirmation email" not in html
    assert subscriber(runtime, "ann@example.org").status == "active"


def test_asking_for_a_new_confirmation_email_needs_a_csrf_token(
    visitor, runtime, worker, smtp_server, clock
):
    link = confirmation_link(visitor, worker, smtp_server, "ann@example.org")
    clock.advance(days=8)
    assert visitor.post(f"{link}/resend", data={}).status_code == 400
    worker.tick()
    assert len(emails_to(smtp_server, "ann@example.org")) == 1


def test_a_confirm_link_of_someone_who_left_since_does_not_bring_them_back(
    visitor, runtime, worker, smtp_server, clock
):
    link = confirmation_link(visitor, worker, smtp_server, "ann@example.org")
    with runtime.sessions.begin() as session:
        unsubscribe(session, find_subscriber(session, "ann@example.org"), "cli", clock.now())
    for response in (visitor.get(link), visitor.post(link)):
        assert response.status_code == 409
        assert "sign up again" in assert_public_page(response)
    assert subscriber(runtime, "ann@example.org").status == "unsubscribed"


def tampered(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


@pytest.mark.parametrize("scope", ["confirm", "unsubscribe", "preferences"])
def test_forged_foreign_and_wrong_kind_links_are_404_and_change_nothing(
    visitor, runtime, clock, scope
):
    key = add_active(runtime, "bob@example.org")
    with runtime.sessions.begin() as session:
        pending = add_subscriber(session, clock.now(), "ann@example.org", Consent("cli"))
        pending_key = pending.key
    before = counts(runtime)
    other_scopes = [s for s in ("confirm", "unsubscribe", "preferences") if s != scope]
    bad_tokens = [
        "garbage",
        "a.b.c.d",
        tampered(link_path(scope, key, runtime).rsplit("/", 1)[1]),
        make_token("another-secret", "unsubscribe", key)
        if scope != "confirm"
        else Links(BASE_URL, "another-secret").confirm(key, clock.now()).rsplit("/", 1)[1],
        "x" * 5000,
    ]
    # A genuine token of another kind: an unsubscribe link cannot confirm, a confirm link
    # cannot change preferences...
    for other in other_scopes:
        bad_tokens.append(link_path(other, pending_key, runtime).rsplit("/", 1)[1])
    # A genuine token for nobody (an erased subscriber's old link).
    bad_tokens.append(link_path(scope, "nobody-has-this-key", runtime).rsplit("/", 1)[1])
    for token in bad_tokens:
        response = visitor.get(f"/{scope}/{token}")
        assert response.status_code == 404, token
        assert "This link does not work" in assert_public_page(response)
        posted = visitor.post(f"/{scope}/{token}", data={"List-Unsubscribe": "One-Click"})
        assert posted.status_code in (400, 404), token
    assert counts(runtime) == before
    assert subscriber(runtime, "ann@example.org").status == "pending"
    assert subscriber(runtime, "bob@example.org").status == "active"


# ----------------------------------------------------------------------------- unsubscribe


def test_the_unsubscribe_page_has_one_button_that_stops_everything(
    visitor, runtime, worker, kap, clock, smtp_server
):
    key = add_active(runtime, "bob@example.org")
    run_for(worker, clock, timedelta(days=3))
    sent = len(emails_to(smtp_server, "bob@example.org"))
    assert sent >= 1
    path = link_path("unsubscribe", key)
    page = visitor.get(path)
    assert page.status_code == 200
    html = assert_public_page(page)
    assert html.count("<button") == 1
    assert "You will stop receiving" in html
    assert "Understanding ketamine-assisted psychotherapy" in html  # the campaign's name

    done = visitor.submit(path, {})
    assert done.status_code == 200
    assert "You are unsubscribed" in assert_public_page(done)
    bob = subscriber(runtime, "bob@example.org")
    assert bob.status == "unsubscribed"
    assert consent_events(runtime, "bob@example.org")[-1].source == "unsubscribe-page"
    run_for(worker, clock, timedelta(days=30))
    assert len(emails_to(smtp_server, "bob@example.org")) == sent
    # The link keeps working and says so.
    assert "You are unsubscribed" in visitor.get(path).get_data(as_text=True)


def test_the_unsubscribe_button_without_csrf_token_is_refused(visitor, runtime):
    key = add_active(runtime, "bob@example.org")
    response = visitor.post(link_path("unsubscribe", key), data={})
    assert response.status_code == 400
    assert_public_page(response)
    assert subscriber(runtime, "bob@example.org").status == "active"


def test_rfc8058_one_click_unsubscribes_before_the_next_send_without_any_page(
    visitor, runtime, worker, kap, clock, smtp_server
):
    key = add_active(runtime, "bob@example.org")
    run_for(worker, clock, timedelta(days=3))
    sent = len(emails_to(smtp_server, "bob@example.org"))
    clock.set(worker.next_event())
    assert worker.plan().planned == 1  # the next email is in the ledger, queued

    response = Visitor(create_app(runtime), ip="209.85.1.1").post(
        link_path("unsubscribe", key),
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert subscriber(runtime, "bob@example.org").status == "unsubscribed"
    assert consent_events(runtime, "bob@example.org")[-1].source == "one-click"
    worker.tick()
    assert len(emails_to(smtp_server, "bob@example.org")) == sent
    with runtime.sessions.begin() as session:
        statuses = session.scalars(select(Delivery.status).where(Delivery.kind == "step")).all()
        assert statuses.count("skipped") == 1
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1
    # Mail providers may send it again: still 200, nothing more recorded.
    recorded = len(consent_events(runtime, "bob@example.org"))
    again = visitor.post(link_path("unsubscribe", key), data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert len(consent_events(runtime, "bob@example.org")) == recorded


def test_one_click_also_accepts_multipart_bodies(visitor, runtime):
    key = add_active(runtime, "bob@example.org")
    response = visitor.post(
        link_path("unsubscribe", key),
        data={"List-Unsubscribe": "One-Click"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200
    assert subscriber(runtime, "bob@example.org").status == "unsubscribed"


def test_a_bounced_address_stays_bounced_when_its_unsubscribe_link_is_used(visitor, runtime, clock):
    key = add_active(runtime, "bob@example.org")
    with runtime.sessions.begin() as session:
        find_subscriber(session, "bob@example.org").status = "bounced"
    response = visitor.post(link_path("unsubscribe", key), data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert subscriber(runtime, "bob@example.org").status == "bounced"


# ----------------------------------------------------------------------------- preferences


def test_the_preferences_page_shows_the_details_and_the_choices(visitor, runtime):
    key = add_active(runtime, "bob@example.org", tz="America/Chicago", name="Bob Stone")
    response = visitor.get(link_path("preferences", key))
    assert response.status_code == 200
    html = assert_public_page(response)
    assert 'value="Bob Stone"' in html and 'value="America/Chicago"' in html
    for weeks in (1, 2, 4):
        assert f'name="weeks" type="radio" value="{weeks}"' in html
    assert 'value="pause"' in html and 'value="leave"' in html and 'value="save"' in html
    assert "bob@example.org" not in html  # the address is never shown on a token page


def test_changing_name_and_timezone(visitor, runtime):
    key = add_active(runtime, "bob@example.org", tz="America/Chicago")
    path = link_path("preferences", key)
    response = visitor.submit(
        path, {"action": "save", "name": "  Robert  ", "timezone": "Asia/Tokyo"}
    )
    assert response.status_code == 200
    assert "Your details are saved." in response.get_data(as_text=True)
    bob = subscriber(runtime, "bob@example.org")
    assert (bob.name, bob.timezone) == ("Robert", "Asia/Tokyo")


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"timezone": "Nowhere/City"}, "timezone", "unknown timezone"),
        ({"timezone": ""}, "timezone", "choose a timezone"),
        ({"name": "Bob\rBcc: x@example.org"}, "name", "without control characters"),
        ({"name": "B" * 201}, "name", "the limit is 200"),
    ],
)
def test_bad_preferences_are_422_and_change_nothing(visitor, runtime, fields, field, message):
    key = add_active(runtime, "bob@example.org", tz="America/Chicago")
    data = {"action": "save", "name": "Bob", "timezone": "Europe/Rome", **fields}
    response = visitor.submit(link_path("preferences", key), data)
    assert response.status_code == 422
    html = assert_public_page(response)
    assert f'href="#field-{field}"' in html and message in html.replace("&#39;", "'")
    bob = subscriber(runtime, "bob@example.org")
    assert (bob.name, bob.timezone) == ("Bob", "America/Chicago")


def test_preferences_without_csrf_token_change_nothing(visitor, runtime):
    key = add_active(runtime, "bob@example.org")
    for action in ("save", "pause", "leave"):
        response = visitor.post(
            link_path("preferences", key),
            data={"action": action, "name": "Eve", "timezone": "UTC", "weeks": "4"},
        )
        assert response.status_code == 400
    bob = subscriber(runtime, "bob@example.org")
    assert (bob.status, bob.name, bob.paused_until) == ("active", "Bob", None)


def test_a_pause_holds_the_series_and_it_continues_where_it_stopped(
    visitor, runtime, worker, kap, clock, smtp_server
):
    key = add_active(runtime, "bob@example.org")
    run_for(worker, clock, timedelta(days=3))
    before = [m["Subject"] for m in emails_to(smtp_server, "bob@example.org")]
    assert len(before) == 2
    path = link_path("preferences", key)

    response = visitor.submit(path, {"action": "pause", "weeks": "2"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Your emails are paused until" in html and "Resume my emails now" in html
    assert subscriber(runtime, "bob@example.org").paused_until == clock.now() + timedelta(weeks=2)

    run_for(worker, clock, timedelta(days=13))
    assert [m["Subject"] for m in emails_to(smtp_server, "bob@example.org")] == before
    run_for(worker, clock, timedelta(days=30))
    after = [m["Subject"] for m in emails_to(smtp_server, "bob@example.org")]
    assert after[:2] == before and len(after) > 4
    assert len(set(after)) == len(after), "an email was sent twice"
    with runtime.sessions.begin() as session:
        positions = session.scalars(
            select(Step.position)
            .join(Delivery, Delivery.step_id == Step.id)
            .order_by(Delivery.sent_at)
        ).all()
    assert positions == list(range(1, len(positions) + 1)), "an email was skipped"


def test_resuming_now_sends_the_next_email_at_the_next_window_not_after_the_pause(
    visitor, runtime, worker, kap, clock, smtp_server
):
    key = add_active(runtime, "bob@example.org")
    run_for(worker, clock, timedelta(days=3))
    path = link_path("preferences", key)
    visitor.submit(path, {"action": "pause", "weeks": "4"})
    run_for(worker, clock, timedelta(days=5))
    held = len(emails_to(smtp_server, "bob@example.org"))

    response = visitor.submit(path, {"action": "resume"})
    assert response.status_code == 200
    assert "Your emails will continue" in response.get_data(as_text=True)
    assert subscriber(runtime, "bob@example.org").paused_until is None
    resumed_at = clock.now()  # a Tuesday morning, inside the window, weeks before the end
    run_for(worker, clock, timedelta(hours=1))
    mails = emails_to(smtp_server, "bob@example.org")
    assert len(mails) == held + 1
    assert mails[-1]["Date"].datetime == resumed_at
    run_for(worker, clock, timedelta(days=45))
    subjects = [m["Subject"] for m in emails_to(smtp_server, "bob@example.org")]
    assert len(subjects) == 17 and len(set(subjects)) == 17


@pytest.mark.parametrize("weeks", ["3", "0", "", "two", "-1"])
def test_a_pause_of_another_length_is_refused(visitor, runtime, weeks):
    key = add_active(runtime, "bob@example.org")
    response = visitor.submit(link_path("preferences", key), {"action": "pause", "weeks": weeks})
    assert response.status_code == 422
    assert 'href="#field-weeks"' in response.get_data(as_text=True)
    assert subscriber(runtime, "bob@example.org").paused_until is None


def test_an_unknown_preferences_action_is_400(visitor, runtime):
    key = add_active(runtime, "bob@example.org")
    response = visitor.submit(link_path("preferences", key), {"action": "delete-everything"})
    assert response.status_code == 400
    assert subscriber(runtime, "bob@example.org").status == "active"


def test_leaving_from_the_preferences_page(visitor, runtime):
    key = add_active(runtime, "bob@example.org")
    path = link_path("preferences", key)
    response = visitor.submit(path, {"action": "leave"})
    assert response.status_code == 200
    assert "You are unsubscribed" in assert_public_page(response)
    assert subscriber(runtime, "bob@example.org").status == "unsubscribed"
    # Afterwards the page says there is nothing to change, and refuses changes.
    closed = visitor.get(path)
    assert closed.status_code == 200 and "sign up again" in closed.get_data(as_text=True)
    # (The closed page has no form: the CSRF token comes from the sign-up page.)
    refused = visitor.submit("/subscribe", {"action": "pause", "weeks": "1"}, action=path)
    assert refused.status_code == 409


def test_a_pending_subscriber_can_fix_details_but_not_pause(visitor, runtime, clock):
    with runtime.sessions.begin() as session:
        key = add_subscriber(session, clock.now(), "ann@example.org", Consent("cli")).key
    path = link_path("preferences", key)
    html = visitor.get(path).get_data(as_text=True)
    assert 'value="pause"' not in html
    assert (
        visitor.submit(
            path, {"action": "save", "name": "Ann", "timezone": "Europe/Oslo"}
        ).status_code
        == 200
    )
    assert subscriber(runtime, "ann@example.org").timezone == "Europe/Oslo"
    assert visitor.submit(path, {"action": "pause", "weeks": "1"}).status_code == 409
    assert subscriber(runtime, "ann@example.org").paused_until is None


# ----------------------------------------------------------------------------- API


@pytest.fixture
def api_key(runtime: Runtime) -> str:
    with runtime.sessions.begin() as session:
        _, key = create_api_key(session, "contact-form", runtime.clock.now())
    return key


def test_the_api_forwards_an_opt_in_with_its_evidence(app, runtime, api_key, worker, smtp_server):
    response = api_post(
        app, {**API_BODY, "ip": "198.51.100.23", "user_agent": "Mozilla/5.0"}, api_key
    )
    assert response.status_code == 202
    assert response.json["status"] == "accepted"
    decide_sign_ups(runtime)
    ann = subscriber(runtime, "ann@example.org")
    assert (ann.status, ann.name, ann.timezone) == ("pending", "Ann", "America/Denver")
    [event] = consent_events(runtime, "ann@example.org")
    assert (event.kind, event.source, event.ip, event.user_agent) == (
        "requested",
        "api",
        "198.51.100.23",
        "Mozilla/5.0",
    )
    assert (
        event.consent_text_sha256 == hashlib.sha256(API_BODY["consent_text"].encode()).hexdigest()
    )
    assert event.evidence == (
        "forwarded with API key 'contact-form'; source: contact page, 'newsletter' box"
    )
    with runtime.sessions.begin() as session:
        assert session.scalars(select(ApiKey.last_used_at)).one() == runtime.clock.now()
    worker.tick()
    assert len(emails_to(smtp_server, "ann@example.org")) == 1
    # The same answer for an address already there.
    assert api_post(app, API_BODY, api_key).get_data() == response.get_data()


@pytest.mark.parametrize("key", [None, "tdk_wrong", "not-even-a-key", "revoked"])
def test_the_api_without_a_live_key_is_401_and_stores_nothing(app, runtime, api_key, key):
    if key == "revoked":
        with runtime.sessions.begin() as session:
            revoke_api_key(session, "contact-form", runtime.clock.now())
        key = api_key
    response = api_post(app, API_BODY, key)
    assert response.status_code == 401
    assert "API key" in response.json["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert counts(runtime) == dict.fromkeys(TABLES, 0)


def test_the_api_names_every_bad_field_in_a_422(app, runtime, api_key):
    body = {
        "email": "not an address",
        "name": "Ann\nBcc: x@example.org",
        "timezone": "Moon/Base",
        "consent_text": "",
        "source": 42,
        "ip": "999.1.1.1",
        "favourite_colour": "blue",
    }
    response = api_post(app, body, api_key)
    assert response.status_code == 422
    errors = response.json["errors"]
    assert set(errors) == {
        "email",
        "name",
        "timezone",
        "consent_text",
        "source",
        "ip",
        "favourite_colour",
    }
    assert "not a valid email address" in errors["email"]
    assert "control characters" in errors["name"]
    assert "unknown timezone" in errors["timezone"]
    assert errors["consent_text"] == "must not be empty"
    assert errors["source"] == "must be a string"
    assert "unknown field" in errors["favourite_colour"]
    missing = api_post(app, {"name": "Ann"}, api_key)
    assert missing.status_code == 422
    assert set(missing.json["errors"]) == {"email", "consent_text"}
    long = api_post(
        app, {**API_BODY, "email": "a" * 300 + "@example.org", "consent_text": "y" * 2001}, api_key
    )
    assert set(long.json["errors"]) == {"email", "consent_text"}
    assert counts(runtime) == dict.fromkeys(TABLES, 0)


def test_the_api_wants_json(app, runtime, api_key):
    form = api_post(app, None, api_key, data={"email": "ann@example.org"})
    assert form.status_code == 415 and "JSON" in form.json["error"]
    broken = api_post(app, None, api_key, data="{not json", content_type="application/json")
    assert broken.status_code == 400 and "JSON object" in broken.json["error"]
    array = api_post(app, [API_BODY], api_key)
    assert array.status_code == 400
    huge = api_post(app, {**API_BODY, "name": "x" * 20_000}, api_key)
    assert huge.status_code == 413 and huge.is_json
    assert counts(runtime) == dict.fromkeys(TABLES, 0)


def test_api_errors_are_json(app, api_key):
    client = app.test_client()
    assert client.get("/api/subscribers").status_code == 405
    assert client.get("/api/subscribers").is_json
    assert client.get("/api/nothing-here").json == {"error": "There is nothing at this address."}


def test_the_api_has_its_own_rate_limit(runtime, clock, api_key):
    app, other = app_with(runtime, clock, api_rate_limit="2/minute")
    try:
        assert api_post(app, API_BODY, api_key).status_code == 202
        assert api_post(app, {**API_BODY, "email": "b@example.org"}, api_key).status_code == 202
        limited = api_post(app, {**API_BODY, "email": "c@example.org"}, api_key)
        assert limited.status_code == 429 and limited.is_json
        decide_sign_ups(runtime)
        assert counts(runtime)["subscribers"] == 2
    finally:
        other.close()


# ----------------------------------------------------------------------------- health, errors


def test_healthz_reports_the_database(app):
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok"}


def test_healthz_is_503_when_the_database_is_unreachable(settings, clock, tmp_path):
    broken = settings.replace(database_url=f"sqlite:///{tmp_path}/missing/dir/tidings.db")
    runtime = Runtime.open(broken, clock, check=False)
    try:
        response = create_app(runtime).test_client().get("/healthz")
        assert response.status_code == 503
        assert response.json == {"status": "error", "database": "unreachable"}
    finally:
        runtime.close()


def test_errors_are_pages_with_the_crisis_block_never_a_stack_trace(visitor):
    for method, path, code in (
        ("get", "/nowhere", 404),
        ("put", "/subscribe", 405),
        ("delete", "/healthz", 405),
    ):
        response = getattr(visitor.client, method)(path)
        assert response.status_code == code
        if path != "/healthz":
            assert_public_page(response)


def test_a_crash_is_a_500_page_and_the_log_masks_the_address(settings, clock, tmp_path, caplog):
    # A database without the schema: the insert fails deep inside SQLAlchemy.
    empty = settings.replace(database_url=f"sqlite:///{tmp_path}/empty.db")
    runtime = Runtime.open(empty, clock, check=False)
    try:
        visitor = Visitor(create_app(runtime))
        with caplog.at_level(logging.ERROR, logger="tidings.web.app"):
            response = visitor.sign_up("secret.person@example.org", decide=False)
        assert response.status_code == 500
        html = assert_public_page(response)
        assert "Something went wrong on our side" in html
        assert "sqlite" not in html.lower() and "secret.person" not in html
        logged = caplog.text
        assert "OperationalError" in logged
        assert "secret.person@example.org" not in logged
        assert "s**@example.org" in logged
    finally:
        runtime.close()


def test_bad_web_settings_are_clear_errors(runtime, clock):
    from tidings.errors import ConfigError

    for changes, needle in (
        ({"subscribe_rate_limit": "lots"}, "TIDINGS_SUBSCRIBE_RATE_LIMIT"),
        ({"form_origins": "www.example.org"}, "TIDINGS_FORM_ORIGINS"),
        ({"rate_limit_storage": "localhost:6379"}, "TIDINGS_RATE_LIMIT_STORAGE: expected"),
        ({"rate_limit_storage": "memcached://localhost:11211"}, "pymemcache"),
    ):
        with pytest.raises(ConfigError, match=needle):
            create_app(
                Runtime(
                    runtime.settings.replace(**changes),
                    clock,
                    runtime.engine,
                    runtime.sessions,
                    runtime.read_sessions,
                )
            )
    with pytest.raises(ConfigError, match="TIDINGS_WEB_PORT"):
        Settings(web_port=70000)
    for name in ("confirm_mailbox_per_day", "comeback_email_days", "web_threads"):
        with pytest.raises(ConfigError, match=f"TIDINGS_{name.upper()}: must"):
            Settings(**{name: -1})


# ----------------------------------------------------------------------------- every page's words
# What a reader reads: no words run together, no jargon, errors that say so first.

TYPED = (
    "Ann",
    "Bob",
    "Stone",
    "Paris",
    "Chicago",
    "Mars/Base",
)  # names and places these tests type in
ERROR_TITLE = re.compile(r"<title>Error: ")
ERROR_HEADING = re.compile(r"<h1>Error: ")


def every_page(app: Any, runtime: Runtime, clock: Any, worker: Worker, smtp_server: Any) -> dict:
    """Each public page in each of its states, as visitors get them over HTTP."""
    visitor = Visitor(app)
    pages = {"sign-up form": visitor.get("/subscribe")}
    pages["sign-up form with errors"] = visitor.submit("/subscribe", {"email": ""})
    pages["sign-up form without its token"] = visitor.post("/subscribe", data={"email": "a@b.org"})
    pages["check your inbox"] = visitor.sign_up("ann@example.org", timezone="")
    worker.tick()
    [confirm] = links_in(emails_to(smtp_server, "ann@example.org")[-1], "confirm")
    ann = subscriber(runtime, "ann@example.org").key
    pages["confirm: the question"] = visitor.get(confirm)
    pages["unsubscribe: not confirmed yet"] = visitor.get(link_path("unsubscribe", ann))
    pages["preferences: not confirmed yet"] = visitor.get(link_path("preferences", ann))
    pages["preferences: pausing before confirming"] = visitor.submit(
        link_path("preferences", ann), {"action": "pause", "weeks": "1"}
    )
    pages["confirmed, no timezone given"] = visitor.post(confirm)
    pages["confirmed already"] = visitor.get(confirm)

    bob = add_active(runtime, "bob@example.org", tz="America/Chicago", name="Bob Stone")
    preferences = link_path("preferences", bob)
    pages["unsubscribe"] = visitor.get(link_path("unsubscribe", bob))
    pages["preferences"] = visitor.get(preferences)
    pages["preferences saved"] = visitor.submit(
        preferences, {"action": "save", "name": "Bob", "timezone": "Europe/Paris"}
    )
    pages["preferences with errors"] = visitor.submit(
        preferences, {"action": "save", "name": "Bob", "timezone": "Mars/Base"}
    )
    pages["preferences: paused"] = visitor.submit(preferences, {"action": "pause", "weeks": "2"})
    pages["preferences: resumed"] = visitor.submit(preferences, {"action": "resume"})
    pages["preferences without its token"] = visitor.post(preferences, data={"action": "save"})
    pages["unsubscribed"] = visitor.submit(preferences, {"action": "leave"})
    pages["preferences after leaving"] = visitor.get(preferences)
    pages["unsubscribe after leaving"] = visitor.get(link_path("unsubscribe", bob))

    with runtime.sessions.begin() as session:
        unsubscribe(session, find_subscriber(session, "ann@example.org"), "cli", clock.now())
    pages["confirm link of someone who left"] = visitor.get(confirm)
    comeback = urlsplit(Links(BASE_URL, SECRET).comeback(ann, clock.now())).path
    pages["come back: the question"] = visitor.get(comeback)
    for scope in ("confirm", "unsubscribe", "preferences"):
        pages[f"{scope} link that does not work"] = visitor.get(f"/{scope}/garbage")
    pages["not found"] = visitor.get("/nowhere")
    pages["not allowed"] = visitor.client.put("/subscribe")
    pages["too much data"] = visitor.post("/subscribe", data={"email": "x" * 20_000})

    visitor.sign_up("cleo@example.org")
    worker.tick()
    [old] = links_in(emails_to(smtp_server, "cleo@example.org")[-1], "confirm")
    clock.advance(days=8)
    pages["expired link"] = visitor.get(old)
    pages["new link sent"] = visitor.submit(old, {}, action=f"{old}/resend")
    return pages


def test_no_page_runs_two_words_together_or_speaks_jargon(
    app, runtime, clock, worker, smtp_server, kap
):
    for name, response in every_page(app, runtime, clock, worker, smtp_server).items():
        html = assert_public_page(response)
        assert glued_words(html, TYPED) == [], name
        text = visible_text(html)
        assert "UTC" not in text, name
    # The words of the snippet for the center's own site too.
    assert glued_words(render_snippet(runtime.settings), TYPED) == []


def test_the_words_of_the_unsubscribe_page_are_the_sentence_it_means(visitor, runtime, kap):
    key = add_active(runtime, "bob@example.org")
    text = visible_text(visitor.get(link_path("unsubscribe", key)).get_data(as_text=True))
    assert (
        "You will stop receiving Understanding ketamine-assisted psychotherapy and any other "
        "emails from Center for Counseling, starting now."
    ) in text


def test_error_pages_say_error_first_in_the_title_and_the_heading(
    app, runtime, clock, worker, smtp_server, kap
):
    """What a screen reader announces first (the window title, then the heading). A form shown
    again with its errors keeps its heading; its error summary is an alert."""
    forms = ("sign-up form", "preferences")
    for name, response in every_page(app, runtime, clock, worker, smtp_server).items():
        html = response.get_data(as_text=True)
        if response.status_code < 400:
            assert not ERROR_TITLE.search(html) and not ERROR_HEADING.search(html), name
            continue
        assert ERROR_TITLE.search(html), name
        if not name.startswith(forms):
            assert ERROR_HEADING.search(html), name
    busy, _ = app_with(runtime, clock, subscribe_rate_limit="1/minute")
    visitor = Visitor(busy)
    visitor.sign_up("dan@example.org", decide=False)
    refused = visitor.sign_up("dan@example.org", decide=False)
    assert refused.status_code == 429
    assert "<title>Error: Too many requests · " in refused.get_data(as_text=True)
    assert "<h1>Error: Too many requests</h1>" in refused.get_data(as_text=True)


# ----------------------------------------------------------------------------- what they get


def test_the_unsubscribe_page_offers_a_break_on_the_readers_own_preferences_page(
    visitor, runtime, clock, kap
):
    key = add_active(runtime, "bob@example.org", name="Bob Stone")
    html = visitor.get(link_path("unsubscribe", key)).get_data(as_text=True)
    found = re.search(
        r'Would a break suit you better\? <a href="([^"]+)">Pause the series</a>', html
    )
    assert found, html
    path, _, fragment = found.group(1).partition("#")
    assert (path, fragment) == (link_path("preferences", key), "pause")
    preferences = visitor.get(path).get_data(as_text=True)
    assert 'value="Bob Stone"' in preferences  # the same reader's page
    pause_part = preferences[preferences.index('<form id="pause"') :]
    pause_part = pause_part[: pause_part.index("</form>")]
    assert "Take a break" in pause_part and 'value="pause"' in pause_part
    assert "for 1, 2 or 4 weeks" in visible_text(html)

    # Someone not confirmed yet cannot pause: no such offer.
    with runtime.sessions.begin() as session:
        pending = add_subscriber(session, clock.now(), "ann@example.org", Consent("cli"))
        pending_key = pending.key
    html = visitor.get(link_path("unsubscribe", pending_key)).get_data(as_text=True)
    assert "Would a break" not in html and "#pause" not in html


@pytest.mark.parametrize(
    ("seconds", "days", "words"),
    [
        (2 * 86400, range(5), "one every two days, on weekdays"),
        (86400, range(7), "one a day"),
        (7 * 86400, [0], "one a week, on Mondays"),
        (14 * 86400, [5, 6], "one every two weeks, at weekends"),
        (36 * 3600, [0, 2, 4], "one every 36 hours, on Mondays, Wednesdays and Fridays"),
        (3600, [1, 3], "one an hour, on Tuesdays and Thursdays"),
    ],
)
def test_how_often_a_series_sends_in_words(seconds, days, words):
    assert cadence_in_words(seconds, days) == words


def test_the_sign_up_page_says_what_the_reader_gets_and_how_to_leave(
    app, runtime, clock, visitor, kap, tmp_path
):
    emails = len(read_campaign(resolve_campaign_dir("kap-benefits")).steps)
    with runtime.sessions.begin() as session:  # a newsletter nobody joins by signing up
        load_campaign(session, newsletter(tmp_path), runtime.settings, clock.now())
    html = assert_public_page(visitor.get("/subscribe"))
    text = visible_text(html)
    assert (
        f"Understanding ketamine-assisted psychotherapy: {emails} emails, one every two days, "
        "on weekdays, during daytime hours in your timezone."
    ) in text
    assert "Winter newsletter" not in text
    assert "Educational information, not medical advice." in text
    assert "Leaving takes one click: every email has a link to unsubscribe" in text
    assert "privacy" not in text.lower()  # TIDINGS_PRIVACY_URL is not set

    private, _ = app_with(runtime, clock, privacy_url="https://center.example.org/privacy")
    for path in ("/subscribe", "/nowhere"):
        html = Visitor(private).get(path).get_data(as_text=True)
        assert '<a href="https://center.example.org/privacy">Our privacy notice</a>' in html
    with pytest.raises(ConfigError, match="TIDINGS_PRIVACY_URL: expected"):
        Settings(privacy_url="javascript:alert(1)")


def test_the_confirmed_page_says_when_emails_come_as_a_person_would(
    visitor, runtime, worker, smtp_server, kap
):
    emails = len(read_campaign(resolve_campaign_dir("kap-benefits")).steps)
    pages = {}
    for email, zone in (("ann@example.org", "Europe/Paris"), ("bob@example.org", "")):
        visitor.sign_up(email, timezone=zone)
        worker.tick()
        [link] = links_in(emails_to(smtp_server, email)[-1], "confirm")
        pages[email] = visitor.post(link).get_data(as_text=True)
    paris, unknown = (visible_text(pages[e]) for e in ("ann@example.org", "bob@example.org"))
    assert (
        f"You will receive Understanding ketamine-assisted psychotherapy: {emails} emails, "
        "one every two days, on weekdays."
    ) in paris
    assert "Emails arrive during daytime hours, Paris time." in paris
    assert "choose your own" not in paris
    assert (
        "No timezone was given, so emails arrive during daytime hours by Greenwich Mean Time "
        "(GMT): choose your own if you live elsewhere."
    ) in unknown
    bob = subscriber(runtime, "bob@example.org")
    assert (
        f'<a href="{link_path("preferences", bob.key)}">choose your own</a>'
        in pages["bob@example.org"]
    )
    assert "UTC" not in paris + unknown


# ----------------------------------------------------------------------------- the web view


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

[lint]
require = ["crisis", "disclaimer", "risk", "reason"]
"""
NEWSLETTER_EMAIL = """\
+++
subject = "Winter news from the center"
preheader = "Group sessions, and our new evening hours."
+++
## Winter news

Our evening hours start in December.
"""


def newsletter(tmp_path: Any) -> Any:
    folder = tmp_path / "winter-news"
    folder.mkdir()
    (folder / "campaign.toml").write_text(NEWSLETTER_TOML, encoding="utf-8")
    (folder / "01-winter.md").write_text(NEWSLETTER_EMAIL, encoding="utf-8")
    return folder


def test_the_web_view_shows_each_email_of_the_series_with_nobodys_data(
    visitor, runtime, worker, clock, smtp_server, kap
):
    key = add_active(runtime, "bob@example.org", name="Bob Stone")
    run_for(worker, clock, timedelta(days=1))
    [first_email] = emails_to(smtp_server, "bob@example.org")
    assert link_path("unsubscribe", key) in first_email.get_body(("html",)).get_content()
    definition = read_campaign(resolve_campaign_dir("kap-benefits"))
    for step in definition.steps:
        response = visitor.get(f"/emails/kap-benefits/{step.key}")
        assert response.status_code == 200, step.key
        html = assert_public_page(response)
        with runtime.sessions.begin() as session:
            subject = session.scalar(select(Step.subject).where(Step.key == step.key))
        assert f"<title>{subject}</title>" in html.replace("&amp;", "&")
        assert "TIDINGSVAR" not in html
        assert "Bob" not in html and "bob@example.org" not in html
        assert "/unsubscribe/" not in html and "/preferences/" not in html
        assert f'<a href="/subscribe" style="color:#2f6b5f">{SIGN_UP_TEXT}</a>' in html
        assert "<script" not in html.lower()
        assert f"An email of the series “{definition.name}”, shown in your browser." in html
        csp = response.headers["Content-Security-Policy"]
        assert csp == WEB_VIEW_CSP
        assert "style-src 'self' 'unsafe-inline'" in csp and "script-src 'none'" in csp
    # Every other page keeps the strict policy: no inline style anywhere else.
    assert "unsafe-inline" not in visitor.get("/subscribe").headers["Content-Security-Policy"]
    assert visitor.head(f"/emails/kap-benefits/{definition.steps[0].key}").status_code == 200


def test_the_web_view_greets_nobody_by_name(visitor, runtime, kap):
    letter = read_campaign(resolve_campaign_dir("kap-benefits")).letter
    html = visitor.get("/emails/kap-benefits/welcome").get_data(as_text=True)
    assert letter["greeting_fallback"] in html
    assert letter["greeting"].partition("{")[0] not in html  # "Dear ..." is for a name


def test_the_web_view_is_404_for_what_is_not_public(visitor, runtime, clock, worker, tmp_path, kap):
    first = read_campaign(resolve_campaign_dir("kap-benefits")).steps[0].key
    for path in (
        "/emails/no-such-campaign/welcome",
        "/emails/kap-benefits/no-such-email",
        "/emails/kap-benefits/1",  # by key only, not by position
        f"/emails/KAP-BENEFITS/{first}",
    ):
        response = visitor.get(path)
        assert response.status_code == 404, path
        assert "<h1>Error: Page not found</h1>" in assert_public_page(response)
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    # A newsletter is private until it has gone out.
    add_active(runtime, "bob@example.org")
    with runtime.sessions.begin() as session:
        load_campaign(session, newsletter(tmp_path), runtime.settings, clock.now())
    path = "/emails/winter-news/winter"
    assert visitor.get(path).status_code == 404
    with runtime.sessions.begin() as session:
        schedule_broadcast(session, "winter-news", "2026-10-21 10:00", clock.now(), tz="UTC")
    assert visitor.get(path).status_code == 404
    run_for(worker, clock, timedelta(days=3))
    assert visitor.get(path).status_code == 200
    assert "Our evening hours start in December." in visitor.get(path).get_data(as_text=True)


def compiled_with(footer: str, body: str = "<p>Hello,</p>") -> CompiledStep:
    html = (
        '<!DOCTYPE html>\n<html lang="en"><head><title>Subject</title></head><body>'
        f'<table><tr><td>{body}</td></tr><tr><td style="font-size:14px">{footer}</td></tr>'
        "</table></body></html>"
    )
    return CompiledStep("Subject", "", html, "", "sha")


@pytest.mark.parametrize(
    "footer",
    [
        '<p style="margin:0"><a href="TIDINGSVARUNSUBSCRIBEURLX" style="color:#555">Unsubscribe</a>'
        ' &middot; <a href="TIDINGSVARPREFERENCESURLX">Change preferences or pause</a></p>',
        '<p><span><a href="TIDINGSVARUNSUBSCRIBEURLX">Unsubscribe</a></span> | '
        '<span><a href="TIDINGSVARPREFERENCESURLX">Preferences</a></span></p>',
    ],
)
def test_the_footer_line_of_personal_links_becomes_one_sign_up_link(footer):
    page = web_view_html(compiled_with(footer), "The series", "/subscribe")
    assert "TIDINGSVAR" not in page and "Unsubscribe" not in page and "Preferences" not in page
    line = re.search(r"<p[^>]*>(.*?)</p>", page.split("<td")[2]).group(0)
    assert line.count("<a ") == 1 and f">{SIGN_UP_TEXT}</a>" in line
    if 'style="margin:0"' in footer:  # the line and the link keep their looks
        assert line.startswith('<p style="margin:0">') and 'style="color:#555"' in line


def test_a_personal_link_inside_a_sentence_keeps_its_words_and_loses_its_link():
    body = '<p>You can <a href="TIDINGSVARUNSUBSCRIBEURLX">leave</a> at any time.</p>'
    page = web_view_html(compiled_with("", body), "The series", "/subscribe")
    assert "<p>You can leave at any time.</p>" in page
