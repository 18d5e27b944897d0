"""The staff console in a real browser: Debian's Chromium driven by Playwright against the app
served by waitress on a loopback port, the real worker sending to a real SMTP server.

An editor with two-factor sign-in goes through a day's work (issue 13, point 11): password,
then the code of their app; the dashboard; the KAP campaign; one email at phone and desktop
width; a test send that arrives; a pause with a reason (the next pass sends nothing of that
campaign) and the resume (the next pass sends); a search by part of an address and the
profile it finds. Then an admin erases that subscriber by typing the address. Besides: thirty
idle minutes sign out, and a form whose CSRF token was altered in the page changes nothing.
axe-core checks every page on the way: no serious or critical violation.

The pages are found the way a keyboard or screen-reader user finds them: by their labels,
roles and link names. Nothing sleeps: the worker is driven with `worker.tick()`, time is the
FixedClock, and the browser waits on what the pages show.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from axe_playwright_python.sync_playwright import Axe
from conftest import received
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import func, select
from test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS

from tidings.campaigns.loading import load_campaign, resolve_campaign_dir
from tidings.clock import FixedClock
from tidings.config import Settings
from tidings.db.audit import entries
from tidings.db.models import Campaign, Delivery, Enrollment, Subscriber
from tidings.runtime import Runtime
from tidings.scheduler import Worker
from tidings.sending.devsmtp import LocalSMTPServer, free_port
from tidings.staff import accounts
from tidings.states import DeliveryStatus
from tidings.subscribers.lifecycle import Consent, add_subscriber
from tidings.web import WebServer, create_app

# Real processes, browsers or external programs, seconds each: the full suite, not the fast tier.
pytestmark = pytest.mark.slow

PASSWORD = "violet harbor lantern quietly"
EDITOR = "erin.editor@center.example.org"
ADMIN = "adam.admin@center.example.org"
DANA = "dana.whitfield@example.org"  # confirmed in Paris: her welcome is due at once
OMAR = "omar.haddad@example.org"
KAP = "kap-benefits"
KAP_NAME = "Understanding ketamine-assisted psychotherapy"
WELCOME = "Welcome, and what to expect"
SERIOUS = ("serious", "critical")


@dataclass
class Console:
    base_url: str
    runtime: Runtime
    clock: FixedClock
    smtp: LocalSMTPServer
    totp: pyotp.TOTP  # the editor's authenticator app
    ids: dict[str, int]  # subscribers' ids by address

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, as tests/test_browser.py starts it (never a downloaded one)."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def console(
    settings: Settings, clock: FixedClock, smtp_server: LocalSMTPServer
) -> Iterator[Console]:
    """The app under waitress on a free loopback port, with the KAP campaign loaded, an editor
    with two-factor sign-in on, an admin, and two readers confirmed into the series (their
    welcome due now, not sent yet)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with Runtime.open(settings.replace(base_url=base_url), clock) as runtime:
        now = clock.now()
        with runtime.sessions.begin() as session:
            load_campaign(session, resolve_campaign_dir(KAP), runtime.settings, now)
            for email, role, name in ((EDITOR, "editor", "Erin Editor"), (ADMIN, "admin", "")):
                accounts.add_user(
                    session, now, runtime.secret(), email, role, name, password=PASSWORD
                )
            # The editor turned two-factor on yesterday (a code works once: not today's).
            editor = accounts.find(session, EDITOR)
            accounts.start_totp(editor, PASSWORD)
            assert editor.totp_secret is not None
            totp = pyotp.TOTP(editor.totp_secret)
            yesterday = now - timedelta(days=1)
            accounts.confirm_totp(session, yesterday, editor, totp.at(yesterday))
            ids = {}
            for email, name in ((DANA, "Dana Whitfield"), (OMAR, "Omar Haddad")):
                reader = add_subscriber(
                    session,
                    now,
                    email,
                    Consent(source="cli", evidence="paper form, open day"),
                    name=name,
                    timezone="Europe/Paris",
                    confirmed=True,
                )
                ids[email] = reader.id
        with WebServer(create_app(runtime), "127.0.0.1", port, threads=4):
            yield Console(base_url, runtime, clock, smtp_server, totp, ids)


# ----------------------------------------------------------------------------- helpers


def new_page(browser: Browser, width: int = 1280) -> Page:
    context = browser.new_context(viewport={"width": width, "height": 900}, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def assert_accessible(page: Page) -> None:
    """axe-core on the page as it is now: no serious or critical violation."""
    results = Axe().run(page)
    found = [v for v in results.response["violations"] if v.get("impact") in SERIOUS]
    assert not found, f"{page.url}:\n" + "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']}; "
        + "; ".join(
            f"{n['target']} {' '.join(n.get('failureSummary', '').split())}" for n in v["nodes"][:5]
        )
        for v in found
    )


def sign_in(console: Console, page: Page, email: str, path: str = "/staff/") -> None:
    """Password, then (for an account with two-factor on) the code its app shows now."""
    page.goto(console.url(path))
    expect(page).to_have_url(re.compile(r"/staff/login\?"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    if email == EDITOR:
        expect(page).to_have_url(re.compile(r"/staff/login/code"))
        page.get_by_label("code your authenticator app shows").fill(
            console.totp.at(console.clock.now())
        )
        page.get_by_role("button", name="Continue").click()


def subjects_to(console: Console, email: str) -> list[str]:
    """Subjects of what the SMTP server received for `email`, in order."""
    return [
        m["Subject"]
        for m in received(console.smtp)
        if any(a.addr_spec == email for a in m["To"].addresses)
    ]


def due_welcomes(console: Console) -> int:
    """KAP enrollments whose next email is due now (the welcome of each reader)."""
    with console.runtime.sessions.begin() as session:
        due = session.scalar(
            select(func.count())
            .select_from(Enrollment)
            .join(Campaign, Campaign.id == Enrollment.campaign_id)
            .where(Campaign.slug == KAP, Enrollment.next_due_at <= console.clock.now())
        )
        return due or 0


def kap_emails_sent(console: Console) -> int:
    with console.runtime.sessions.begin() as session:
        sent = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .join(Campaign, Campaign.id == Delivery.campaign_id)
            .where(Campaign.slug == KAP, Delivery.status == DeliveryStatus.SENT)
        )
        return sent or 0


def campaign_status(console: Console) -> str:
    with console.runtime.sessions.begin() as session:
        status = session.scalar(select(Campaign.status).where(Campaign.slug == KAP))
        assert status is not None
        return status


# ----------------------------------------------------------------------------- the journey


def test_an_editors_day_and_an_erasure_in_a_real_browser(browser, console):
    page = new_page(browser)

    # Sign in: password, then the code. Both pages are checked before anything is typed.
    page.goto(console.url("/staff/login"))
    assert_accessible(page)
    page.get_by_label("Email address").fill(EDITOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/staff/login/code"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Your code")
    assert_accessible(page)
    page.get_by_label("code your authenticator app shows").fill(
        console.totp.at(console.clock.now())
    )
    page.get_by_role("button", name="Continue").click()

    # The dashboard.
    expect(page).to_have_url(console.url("/staff/"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect(page.get_by_role("banner")).to_contain_text("Erin Editor")
    assert_accessible(page)

    # The campaigns, the KAP campaign, its welcome email.
    nav = page.get_by_role("navigation", name="Console")
    nav.get_by_role("link", name="Campaigns").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Campaigns")
    assert_accessible(page)
    page.get_by_role("link", name=KAP_NAME).click()
    expect(page).to_have_url(console.url(f"/staff/campaigns/{KAP}"))
    expect(page.get_by_role("heading", level=1)).to_have_text(KAP_NAME)
    assert_accessible(page)
    page.get_by_role("link", name=WELCOME).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(WELCOME)

    # A test to the editor's own address: it arrives at the SMTP server.
    assert subjects_to(console, EDITOR) == []
    page.get_by_role("button", name="Send a test").click()
    expect(page.get_by_role("status")).to_have_text("Test sent to 1 address(es).")
    assert subjects_to(console, EDITOR) == [WELCOME]

    # The email at both widths, each in its sandboxed frame. (Not scrolled to: both frames are
    # near enough to load at once, and in headless Chromium the first click after a scroll
    # that left a cross-origin frame under the pointer can be lost.)
    for title, width in (("The email at phone width", 375), ("The email at desktop width", 900)):
        frame = page.get_by_title(title)
        box = frame.bounding_box()
        assert box is not None
        assert (box["width"] == width) if width == 375 else (box["width"] >= width), box
        assert frame.get_attribute("sandbox") == ""
        heading = page.frame_locator(f'iframe[title="{title}"]').get_by_role("heading", level=1)
        expect(heading).to_have_text("Welcome")
    assert_accessible(page)
    # axe cannot go into a sandbox that runs no script: the email's own document, on its own.
    email = page.context.new_page()
    src = page.get_by_title("The email at phone width").get_attribute("src")
    assert src is not None
    email.goto(console.url(src))
    expect(email.get_by_role("heading", level=1)).to_have_text("Welcome")
    assert_accessible(email)
    email.close()

    # Pause, with a reason: the welcomes are due, and the next pass sends none of them.
    page.get_by_role("link", name=KAP_NAME).click()
    page.get_by_label("Why pause it?").fill("checking the welcome's links")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_text("paused: checking the welcome's links")).to_be_visible()
    assert campaign_status(console) == "paused"
    assert due_welcomes(console) == 2
    with Worker(console.runtime) as worker:
        worker.tick()
        assert kap_emails_sent(console) == 0
        assert subjects_to(console, DANA) == []

        # Resume: the next pass sends the welcomes.
        page.get_by_role("button", name="Resume").click()
        expect(page.get_by_role("button", name="Pause")).to_be_visible()
        assert campaign_status(console) == "active"
        worker.tick()
    assert subjects_to(console, DANA) == [WELCOME]
    assert kap_emails_sent(console) == 2

    # The other pages of the menu.
    nav.get_by_role("link", name="Newsletters").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Newsletters")
    assert_accessible(page)
    nav.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit log")
    expect(page.get_by_role("table")).to_contain_text("campaign.resume")
    assert_accessible(page)
    page.get_by_role("banner").get_by_role("link", name="Erin Editor").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
    assert_accessible(page)

    # Find Dana by a part of her address; her profile shows her welcome.
    nav.get_by_role("link", name="Subscribers").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Subscribers")
    assert_accessible(page)
    page.get_by_label("Address or name contains").fill("whitf")
    page.get_by_role("button", name="Search").click()
    results = page.get_by_role("table")
    expect(results.get_by_role("link")).to_have_count(1)
    results.get_by_role("link", name=DANA).click()
    dana = console.ids[DANA]
    expect(page).to_have_url(console.url(f"/staff/subscribers/{dana}"))
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Subscriber #{dana}")
    expect(page.get_by_role("region", name="Emails")).to_contain_text(WELCOME)
    expect(page.get_by_role("button", name="Erase")).to_have_count(0)  # an admin's to press
    assert_accessible(page)
    page.context.close()

    # An admin erases her, typing the address.
    admin = new_page(browser)
    sign_in(console, admin, ADMIN, f"/staff/subscribers/{dana}")
    expect(admin.get_by_role("heading", level=1)).to_have_text(f"Subscriber #{dana}")
    assert_accessible(admin)
    admin.get_by_label("Type their address to confirm").fill(DANA)
    admin.get_by_role("button", name="Erase").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("Subscribers")
    expect(admin.get_by_role("status").first).to_contain_text("Erased everywhere")
    expect(admin.get_by_role("link", name=DANA)).to_have_count(0)
    with console.runtime.sessions.begin() as session:
        assert session.get(Subscriber, dana) is None
        [erased] = entries(session, action="subscriber.erase")
        assert (erased.actor, erased.target) == (
            f"staff:{ADMIN}",
            f"subscriber #{dana} d**@example.org",
        )

    nav = admin.get_by_role("navigation", name="Console")
    nav.get_by_role("link", name="Suppressions").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("Suppression list")
    assert_accessible(admin)
    nav.get_by_role("link", name="Audit log").click()
    row = admin.get_by_role("row").filter(has_text="subscriber.erase")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(f"subscriber #{dana} d**@example.org")
    expect(row).to_contain_text(f"staff:{ADMIN}")
    expect(admin.get_by_role("main")).not_to_contain_text(DANA)
    assert_accessible(admin)
    admin.context.close()


# ----------------------------------------------------------------------------- sessions, CSRF


def test_thirty_one_idle_minutes_lead_back_to_the_sign_in_page(browser, console):
    page = new_page(browser)
    sign_in(console, page, EDITOR)
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    console.clock.advance(minutes=31)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Campaigns").click()
    expect(page).to_have_url(console.url("/staff/login?next=/staff/campaigns"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    # Signing in again leads to the page asked for.
    page.get_by_label("Email address").fill(ADMIN)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(console.url("/staff/campaigns"))
    page.context.close()


def test_a_form_with_an_altered_csrf_token_is_refused_and_changes_nothing(browser, console):
    page = new_page(browser)
    sign_in(console, page, ADMIN, f"/staff/campaigns/{KAP}")
    expect(page.get_by_role("heading", level=1)).to_have_text(KAP_NAME)
    pause = page.locator("form").filter(has=page.get_by_role("button", name="Pause"))
    token = pause.locator('input[name="csrf_token"]')
    original = token.input_value()
    token.evaluate("input => { input.value = input.value.slice(0, -4) + 'AAAA'; }")
    assert token.input_value() != original
    page.get_by_label("Why pause it?").fill("a forged request")
    with page.expect_response(re.compile(rf"/staff/campaigns/{KAP}/pause$")) as answer:
        page.get_by_role("button", name="Pause").click()
    assert answer.value.status == 400
    expect(page.get_by_role("heading", level=1)).to_have_text("Not done")
    expect(page.get_by_role("main")).to_contain_text("This form has expired")
    assert campaign_status(console) == "active"
    with console.runtime.sessions.begin() as session:
        assert list(entries(session, action="campaign.pause")) == []
    # The page reloaded carries the right token, and the same form then works.
    page.goto(console.url(f"/staff/campaigns/{KAP}"))
    page.get_by_label("Why pause it?").fill("a real request")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    assert campaign_status(console) == "paused"
    page.context.close()
