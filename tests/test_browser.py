"""The whole journey in a real browser: Debian's Chromium driven by Playwright, against the app
served by waitress on a loopback port, with the real scheduler sending to a real SMTP server.

Sign up on /subscribe (the timezone pre-filled by the page's script), read the confirmation
email, open its link, receive the welcome email, open its unsubscribe link and press the
button; then an RFC 8058 one-click POST for another subscriber from a plain HTTP client.
Nothing sleeps: the scheduler is driven with `worker.tick()`, and the browser waits on what
the page shows.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import decide_sign_ups, received
from playwright.sync_api import Browser, expect, sync_playwright
from sqlalchemy import select

from tidings.campaigns.loading import load_campaign, resolve_campaign_dir
from tidings.clock import FixedClock
from tidings.config import Settings
from tidings.db import signing_key
from tidings.db.models import Subscriber
from tidings.runtime import Runtime
from tidings.scheduler import Worker
from tidings.sending.devsmtp import free_port
from tidings.subscribers.directory import find_subscriber
from tidings.subscribers.lifecycle import Consent, add_subscriber
from tidings.subscribers.tokens import Links
from tidings.web import WebServer, create_app

# Real processes, browsers or external programs, seconds each: the full suite, not the fast tier.
pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does it)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def site(settings: Settings, clock: FixedClock) -> Iterator[tuple[str, Runtime]]:
    """The app under waitress on a free loopback port; TIDINGS_BASE_URL is that address, so
    the links in the emails lead back to it."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with Runtime.open(settings.replace(base_url=base_url), clock) as runtime:
        with runtime.sessions.begin() as session:
            load_campaign(
                session, resolve_campaign_dir("kap-benefits"), runtime.settings, clock.now()
            )
        with WebServer(create_app(runtime), "127.0.0.1", port, threads=2):
            yield base_url, runtime


def link_in(message: Any, base_url: str, scope: str) -> str:
    text = message.get_body(("plain",)).get_content()
    found = re.search(rf"{re.escape(base_url)}/{scope}/[\w.-]+", text)
    assert found, f"no {scope} link in {message['Subject']!r}"
    return found.group(0)


def status_of(runtime: Runtime, email: str) -> str:
    with runtime.sessions.begin() as session:
        return find_subscriber(session, email).status


def test_the_whole_journey_in_a_real_browser(browser, site, smtp_server):
    base_url, runtime = site
    context = browser.new_context(timezone_id="Europe/Paris", locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    with Worker(runtime) as worker:
        # Sign up. The page's own script fills in the browser's timezone; it stays editable.
        page.goto(f"{base_url}/subscribe")
        expect(page).to_have_title(re.compile("Sign up"))
        timezone = page.get_by_label("Timezone")
        expect(timezone).to_have_value("Europe/Paris")
        expect(timezone).to_be_editable()
        expect(page.get_by_role("complementary")).to_contain_text("988")
        expect(page.locator("#field-website")).not_to_be_in_viewport()  # the honeypot
        page.get_by_label("Email address").fill("ann@example.org")
        page.get_by_label("First name").fill("Ann")
        page.get_by_role("checkbox").check()
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")

        # The worker decides the sign-up; the confirmation email arrives. Its link asks, and
        # only the button confirms (opening a link is not consent: scanners open them too).
        worker.tick()
        assert status_of(runtime, "ann@example.org") == "pending"
        [confirmation] = received(smtp_server)
        assert confirmation["To"].addresses[0].addr_spec == "ann@example.org"
        page.goto(link_in(confirmation, base_url, "confirm"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your subscription")
        assert status_of(runtime, "ann@example.org") == "pending"
        page.get_by_role("button", name="Yes, subscribe me").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed, Ann")
        expect(page.get_by_text("Emails arrive during daytime hours, Paris time.")).to_be_visible()
        assert status_of(runtime, "ann@example.org") == "active"

        # The welcome email arrives (10:00 in Paris, inside the send window).
        worker.tick()
        welcome = received(smtp_server)[-1]
        assert welcome["Subject"] == "Welcome, and what to expect"

        # Its unsubscribe link: one button, then done.
        page.goto(link_in(welcome, base_url, "unsubscribe"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Unsubscribe")
        page.get_by_role("button", name="Unsubscribe").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
        expect(page.get_by_role("complementary")).to_contain_text("911")
        assert status_of(runtime, "ann@example.org") == "unsubscribed"
        worker.tick()
        assert len(received(smtp_server)) == 2

        # Signing up again changes nothing but sends the come-back email; its button, pressed
        # in another browser that never saw our pages, brings her back.
        page.goto(f"{base_url}/subscribe")
        page.get_by_label("Email address").fill("ann@example.org")
        page.get_by_role("checkbox").check()
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
        worker.tick()
        assert status_of(runtime, "ann@example.org") == "unsubscribed"
        offer = received(smtp_server)[-1]
        assert offer["Subject"] == "Would you like our emails again?"
        phone = browser.new_context(timezone_id="Europe/Paris", locale="en-US")
        phone.set_default_timeout(TIMEOUT_MS)
        other = phone.new_page()
        other.goto(link_in(offer, base_url, "comeback"))
        expect(other.get_by_role("heading", level=1)).to_have_text("Receive our emails again?")
        other.get_by_role("button", name="Yes, send me these emails again").click()
        expect(other.get_by_role("heading", level=1)).to_have_text("You are subscribed, Ann")
        assert status_of(runtime, "ann@example.org") == "active"
        phone.close()
    context.close()

    # RFC 8058: what Gmail or Yahoo send for another subscriber, from a plain HTTP client.
    with runtime.sessions.begin() as session:
        bob = add_subscriber(
            session,
            runtime.clock.now(),
            "bob@example.org",
            Consent("cli", "test"),
            timezone="UTC",
            confirmed=True,
        )
        url = Links(base_url, signing_key(session, runtime.settings.secret_key)).unsubscribe(
            bob.key
        )
    request = urllib.request.Request(
        url,
        data=b"List-Unsubscribe=One-Click",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert status_of(runtime, "bob@example.org") == "unsubscribed"


def test_the_form_works_without_javascript(browser, site):
    base_url, runtime = site
    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{base_url}/subscribe")
    expect(page.get_by_label("Timezone")).to_have_value("")
    page.get_by_label("Email address").fill("nojs@example.org")
    page.get_by_role("checkbox").check()
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
    decide_sign_ups(runtime)
    with runtime.sessions.begin() as session:
        subscriber = find_subscriber(session, "nojs@example.org")
        assert (subscriber.status, subscriber.timezone) == ("pending", "UTC")
    context.close()


def test_errors_are_listed_at_the_top_with_links_and_shown_at_each_field(browser, site):
    base_url, runtime = site
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{base_url}/subscribe")
    page.get_by_label("Email address").fill("not-an-address")
    page.get_by_role("button", name="Subscribe").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Email address")
    expect(alert).to_contain_text("Agreement")
    expect(page.get_by_label("Email address")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Email address")).to_have_value("not-an-address")
    # The summary's links lead to the fields.
    alert.get_by_role("link", name=re.compile("Email address")).click()
    expect(page).to_have_url(re.compile("#field-email$"))
    with runtime.sessions.begin() as session:
        assert session.scalars(select(Subscriber)).all() == []
    context.close()


def test_a_break_instead_of_leaving_is_one_link_away(browser, site):
    base_url, runtime = site
    key = add_bob(runtime)
    with runtime.sessions.begin() as session:
        links = Links(base_url, signing_key(session, runtime.settings.secret_key))
    context = browser.new_context(viewport={"width": 375, "height": 700}, is_mobile=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(links.unsubscribe(key))
    expect(page.get_by_text("from Center for Counseling, starting now")).to_be_visible()
    page.get_by_role("link", name="Pause the series").click()
    expect(page).to_have_url(re.compile(r"/preferences/[\w.-]+#pause$"))
    # The pause part is on screen (the page scrolled to it), not the top of the page.
    expect(page.get_by_role("button", name="Pause my emails")).to_be_in_viewport()
    expect(page.get_by_role("heading", level=1)).not_to_be_in_viewport()
    page.get_by_label("2 weeks").check()
    page.get_by_role("button", name="Pause my emails").click()
    expect(page.get_by_role("status")).to_contain_text("Your emails are paused until")
    assert status_of(runtime, "bob@example.org") == "active"
    context.close()


def test_the_web_view_of_an_email_is_styled_and_nothing_is_refused(browser, site):
    """The email's inline styles apply (its own CSP allows them); nothing breaks the policy
    of this page or of the others, and none of them runs a script."""
    base_url, _ = site
    context = browser.new_context(viewport={"width": 375, "height": 700}, is_mobile=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text))
    page.goto(f"{base_url}/emails/kap-benefits/welcome")
    expect(page).to_have_title("Welcome, and what to expect")
    expect(page.get_by_role("note").first).to_contain_text("shown in your browser")
    expect(page.get_by_role("link", name="Sign up for this series").first).to_be_visible()
    assert page.get_by_role("link", name=re.compile("Unsubscribe|preferences", re.I)).count() == 0
    body = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert body not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)"), body  # the email's own
    page.get_by_role("link", name="Sign up for this series").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign up for our emails")
    page.goto(f"{base_url}/emails/kap-benefits/no-such-email")
    expect(page).to_have_title(re.compile(r"^Error: Page not found"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Error: Page not found")
    assert [text for text in refused if "Content Security Policy" in text] == []
    context.close()


def add_bob(runtime: Runtime) -> str:
    with runtime.sessions.begin() as session:
        bob = add_subscriber(
            session,
            runtime.clock.now(),
            "bob@example.org",
            Consent("cli", "test"),
            timezone="America/Chicago",
            confirmed=True,
        )
        return bob.key
