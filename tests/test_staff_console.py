"""The staff console's front door and its guard: signing in (password, second factor,
recovery code), sessions (cookie flags, new ids, idle and absolute timeouts, signing out,
signed out everywhere), sign-in rate limits, the networks it answers, CSRF, redirects,
security headers, and every /staff/ route walked as every role and as nobody.

Requests go through Flask's test client into the real app (`create_app`, as `tidings serve`
runs it) on a real database (SQLite and PostgreSQL); time is a FixedClock the tests move.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import count
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from sqlalchemy import select
from web_helpers import HIDDEN, Visitor, app_with, visible_text

from tidings.clock import FixedClock
from tidings.db.audit import act_as, entries
from tidings.db.models import Campaign, Step
from tidings.db.staff import StaffSession
from tidings.runtime import Runtime
from tidings.staff import accounts, roles, sessions
from tidings.states import StaffRole
from tidings.subscribers.lifecycle import Consent, add_subscriber
from tidings.web import create_app
from tidings.web.staff import COOKIE, ROUTES

PASSWORD = "violet harbor lantern quietly"
NEW_PASSWORD = "copper meadow tugboat riddle"
ANN = "ann@center.example.org"
BOB = "bob@center.example.org"
REFUSED = "That address and password do not match an account that may sign in."
TOO_MANY = "Too many attempts: wait 15 minutes, then try again."
ERROR = re.compile(r'<p class="error" role="alert">(.*?)</p>', re.S)


# ----------------------------------------------------------------------------- helpers


class Staff(Visitor):
    """A browser of a member of staff."""

    def sign_in(self, email: str, password: str = PASSWORD, next: str | None = None) -> Any:
        path = "/staff/login" + (f"?next={next}" if next is not None else "")
        fields = self.hidden_fields(path)
        return self.post("/staff/login", data={**fields, "email": email, "password": password})

    def cookie(self) -> str | None:
        found = self.client.get_cookie(COOKIE, path="/staff")
        return found.value if found else None

    def use_cookie(self, value: str) -> None:
        self.client.set_cookie(COOKIE, value, path="/staff")

    def csrf(self, page: str = "/staff/account") -> str:
        return self.hidden_fields(page)["csrf_token"]

    def signed_in(self) -> bool:
        response = self.get("/staff/account")
        if response.status_code == 200:
            return True
        assert response.status_code == 302, response.status_code
        assert urlsplit(response.location).path == "/staff/login", response.location
        return False


def add_staff(runtime: Runtime, email: str, role: str, password: str | None = PASSWORD) -> None:
    with runtime.sessions.begin() as session:
        accounts.add_user(
            session, runtime.clock.now(), runtime.secret(), email, role, password=password
        )


def turn_on_totp(
    runtime: Runtime, email: str, password: str = PASSWORD
) -> tuple[pyotp.TOTP, list[str]]:
    """Two-factor on, as the account page does it; returns the app and the recovery codes."""
    now = runtime.clock.now()
    with runtime.sessions.begin() as session:
        user = accounts.find(session, email)
        accounts.start_totp(user, password)
        assert user.totp_secret is not None
        app = pyotp.TOTP(user.totp_secret)
        codes = accounts.confirm_totp(session, now, user, app.at(now))
    return app, codes


def error_of(response: Any) -> str:
    found = ERROR.search(response.get_data(as_text=True))
    return found[1] if found else ""


def goes_to(response: Any, path: str) -> bool:
    return response.status_code in (302, 303) and urlsplit(response.location).path == path


def session_rows(runtime: Runtime) -> list[StaffSession]:
    with runtime.sessions.begin() as session:
        return list(session.scalars(select(StaffSession)))


@pytest.fixture
def app(runtime: Runtime) -> Any:
    return create_app(runtime)


@pytest.fixture
def app_of(runtime: Runtime, clock: FixedClock) -> Iterator[Callable[..., Any]]:
    """Another app on the same database and clock, with other settings."""
    opened: list[Runtime] = []

    def make(**changes: Any) -> Any:
        other_app, other = app_with(runtime, clock, **changes)
        opened.append(other)
        return other_app

    yield make
    for other in opened:
        other.close()


@pytest.fixture
def ann(runtime: Runtime) -> str:
    add_staff(runtime, ANN, "editor")
    return ANN


# ----------------------------------------------------------------------------- signing in


def test_sign_in_and_one_refusal_for_every_kind_of_wrong(app, runtime, ann):
    add_staff(runtime, "nopassword@center.example.org", "viewer", password=None)
    add_staff(runtime, "gone@center.example.org", "viewer")
    with runtime.sessions.begin() as session:
        accounts.disable(session, runtime.clock.now(), "gone@center.example.org")

    refusals = []
    for email, password in (
        (ANN, NEW_PASSWORD),  # a wrong password
        (ANN, PASSWORD.upper()),
        ("nobody@center.example.org", PASSWORD),  # no such account
        ("nopassword@center.example.org", PASSWORD),  # no password set yet
        ("nopassword@center.example.org", ""),
        ("gone@center.example.org", PASSWORD),  # disabled
        ("not an address", PASSWORD),
        ("", ""),
    ):
        response = Staff(app).sign_in(email, password)
        refusals.append(
            (response.status_code, error_of(response), response.headers.get_all("Set-Cookie"))
        )
    assert set(map(repr, refusals)) == {repr((401, REFUSED, []))}
    assert session_rows(runtime) == []

    browser = Staff(app)
    assert not browser.signed_in()
    response = browser.sign_in(" Ann@Center.Example.ORG ")
    assert goes_to(response, "/staff/")
    assert browser.signed_in()
    dashboard = browser.get("/staff/")
    assert dashboard.status_code == 200 and ANN in dashboard.get_data(as_text=True)
    with runtime.sessions.begin() as session:
        assert accounts.find(session, ANN).last_login_at == runtime.clock.now()
        signed = [(e.actor, e.action, e.target) for e in entries(session, action="user.sign-in")]
    assert signed == [(f"staff:{ANN}", "user.sign-in", ANN)]


def test_the_session_cookie(app, app_of, runtime, ann):
    response = Staff(app).sign_in(ANN)
    [header] = response.headers.get_all("Set-Cookie")
    name_value, *flags = [part.strip() for part in header.split(";")]
    assert name_value.startswith(f"{COOKIE}=")
    assert {f.lower() for f in flags} >= {"httponly", "secure", "samesite=strict", "path=/staff"}
    assert not any(f.lower().startswith(("expires", "max-age", "domain")) for f in flags)
    value = name_value.split("=", 1)[1]
    assert len(value) >= 43  # 256 bits
    # The database keeps only a hash of it.
    assert [row.id_sha256 for row in session_rows(runtime)] != [value]
    assert value not in repr([vars(row) for row in session_rows(runtime)])

    plain = app_of(base_url="http://localhost:8000")
    [header] = Staff(plain).sign_in(ANN).headers.get_all("Set-Cookie")
    flags = {part.strip().lower() for part in header.split(";")[1:]}
    assert "secure" not in flags and {"httponly", "samesite=strict", "path=/staff"} <= flags


def test_every_sign_in_gets_a_new_session_id(app, runtime, ann):
    browser = Staff(app)
    seen = []
    for _ in range(3):
        browser.sign_in(ANN)
        seen.append(browser.cookie())
        assert browser.signed_in()
    other = Staff(app, ip="198.51.100.7")
    other.sign_in(ANN)
    seen.append(other.cookie())
    assert None not in seen and len(set(seen)) == len(seen)
    assert browser.signed_in() and other.signed_in()  # two browsers, two sessions


def test_thirty_idle_minutes_sign_out(app, runtime, clock, ann):
    browser = Staff(app)
    browser.sign_in(ANN)
    for _ in range(4):  # active every 29 minutes: two hours, still signed in
        clock.advance(minutes=29)
        assert browser.signed_in()
    clock.advance(minutes=30)
    assert browser.signed_in()  # 30 idle minutes to the second: still in
    clock.advance(minutes=31)
    page = browser.get("/staff/campaigns")
    assert goes_to(page, "/staff/login")
    assert parse_qs(urlsplit(page.location).query) == {"next": ["/staff/campaigns"]}
    assert session_rows(runtime) == []  # an expired session is deleted
    clock.advance(minutes=1)
    assert not browser.signed_in()


def test_twelve_hours_sign_out_even_when_active(app, runtime, clock, ann):
    browser = Staff(app)
    browser.sign_in(ANN)
    start = clock.now()
    while clock.now() + timedelta(minutes=20) <= start + timedelta(hours=12):
        clock.advance(minutes=20)
        assert browser.signed_in(), clock.now() - start
    assert clock.now() == start + timedelta(hours=12)
    clock.advance(minutes=1)
    assert not browser.signed_in()
    assert goes_to(browser.sign_in(ANN), "/staff/")  # signing in again starts a new 12 hours
    assert browser.signed_in()


def test_sign_out(app, runtime, ann):
    browser = Staff(app)
    browser.sign_in(ANN)
    cookie = browser.cookie()
    assert cookie is not None

    # Without the form's token nothing happens.
    assert browser.post("/staff/logout").status_code == 400
    assert browser.signed_in()

    response = browser.post("/staff/logout", data={"csrf_token": browser.csrf()})
    assert goes_to(response, "/staff/login")
    assert browser.cookie() is None
    assert not browser.signed_in()
    # The server forgot it: the same cookie, kept by someone, opens nothing.
    thief = Staff(app)
    thief.use_cookie(cookie)
    assert not thief.signed_in()
    assert session_rows(runtime) == []


def test_a_password_change_signs_out_every_browser(app, runtime, ann):
    here, there = Staff(app), Staff(app, ip="198.51.100.7")
    here.sign_in(ANN)
    there.sign_in(ANN)
    add_staff(runtime, BOB, "editor")
    bob = Staff(app)
    bob.sign_in(BOB)

    def change(current: str, new: str) -> Any:
        data = {"csrf_token": here.csrf(), "action": "password", "current": current, "new": new}
        return here.post("/staff/account", data=data)

    wrong = change(NEW_PASSWORD, NEW_PASSWORD)
    assert wrong.status_code == 400 and "current password: that is not it" in error_of(wrong)
    weak = change(PASSWORD, "password1234")
    assert weak.status_code == 400 and "most common passwords" in error_of(weak)
    assert here.signed_in() and there.signed_in()

    changed = change(PASSWORD, NEW_PASSWORD)
    assert goes_to(changed, "/staff/login")
    assert not here.signed_in() and not there.signed_in()
    assert bob.signed_in()  # only Ann's sessions end

    assert Staff(app).sign_in(ANN).status_code == 401
    assert goes_to(Staff(app).sign_in(ANN, NEW_PASSWORD), "/staff/")


def test_disabling_an_account_signs_it_out_and_a_new_role_counts_at_once(
    app, runtime, tidings, kap, ann
):
    add_staff(runtime, BOB, "viewer")
    ann_browser, bob_browser = Staff(app), Staff(app)
    ann_browser.sign_in(ANN)
    bob_browser.sign_in(BOB)
    pause = "/staff/campaigns/kap-benefits/pause"

    refused = bob_browser.post(pause, data={"csrf_token": bob_browser.csrf(), "reason": "x"})
    assert refused.status_code == 403
    tidings.ok("users", "set-role", BOB, "editor")
    paused = bob_browser.post(pause, data={"csrf_token": bob_browser.csrf(), "reason": "checking"})
    assert goes_to(paused, "/staff/campaigns/kap-benefits")

    tidings.ok("users", "disable", ANN)
    assert not ann_browser.signed_in()
    assert Staff(app).sign_in(ANN).status_code == 401
    assert bob_browser.signed_in()


# ----------------------------------------------------------------------------- two factors


def test_sign_in_with_a_code_from_the_app(app, runtime, clock, ann):
    totp, _ = turn_on_totp(runtime, ANN)
    clock.advance(minutes=5)
    browser = Staff(app)
    response = browser.sign_in(ANN, next="/staff/campaigns")
    assert goes_to(response, "/staff/login/code")
    assert parse_qs(urlsplit(response.location).query) == {"next": ["/staff/campaigns"]}
    halfway = browser.cookie()
    assert halfway is not None

    # Half signed in: every page leads to the code page, and nothing is readable.
    for path in ("/staff/", "/staff/campaigns", "/staff/account", "/staff/audit"):
        assert goes_to(browser.get(path), "/staff/login/code"), path
    assert goes_to(browser.post("/staff/logout", data={}), "/staff/login/code")
    page = browser.get("/staff/login/code?next=/staff/campaigns")
    assert page.status_code == 200 and "authenticator app" in page.get_data(as_text=True)
    fields = dict(HIDDEN.findall(page.get_data(as_text=True)))

    wrong = f"{(int(totp.at(clock.now())) + 1) % 1_000_000:06d}"
    refused = browser.post("/staff/login/code", data={**fields, "code": wrong})
    assert refused.status_code == 401 and "not right" in error_of(refused)
    no_token = browser.post("/staff/login/code", data={"code": totp.at(clock.now())})
    assert no_token.status_code == 400
    assert browser.cookie() == halfway

    done = browser.post("/staff/login/code", data={**fields, "code": totp.at(clock.now())})
    assert goes_to(done, "/staff/campaigns")
    after = browser.cookie()
    assert after is not None and after != halfway
    assert browser.get("/staff/campaigns").status_code == 200

    # The id seen before the code is worth nothing now.
    earlier = Staff(app)
    earlier.use_cookie(halfway)
    assert not earlier.signed_in()
    assert goes_to(earlier.get("/staff/login/code"), "/staff/login")

    with runtime.sessions.begin() as session:
        signed = [e.actor for e in entries(session, action="user.sign-in")]
    assert signed == [f"staff:{ANN}"]  # once, when the code was given


def test_a_recovery_code_signs_in_once(app, runtime, ann):
    _, codes = turn_on_totp(runtime, ANN)

    def with_code(code: str) -> Any:
        browser = Staff(app)
        assert goes_to(browser.sign_in(ANN), "/staff/login/code")
        fields = browser.hidden_fields("/staff/login/code")
        return browser.post("/staff/login/code", data={**fields, "code": code})

    assert goes_to(with_code(codes[0]), "/staff/")
    assert with_code(codes[0]).status_code == 401
    assert goes_to(with_code(codes[1].upper()), "/staff/")


def test_required_two_factor_sends_an_account_without_it_to_its_setup(app_of, runtime, clock, ann):
    app = app_of(staff_require_2fa=1)
    add_staff(runtime, BOB, "editor")
    turn_on_totp(runtime, BOB)

    browser = Staff(app)
    assert goes_to(browser.sign_in(ANN), "/staff/")
    for path in ("/staff/", "/staff/campaigns", "/staff/audit"):
        response = browser.get(path)
        assert goes_to(response, "/staff/account"), path
        assert parse_qs(urlsplit(response.location).query) == {"required": ["1"]}
    setup = browser.get("/staff/account?required=1")
    assert setup.status_code == 200
    assert "asks every account to use two-factor" in setup.get_data(as_text=True)

    # Setting it up asks for the password again (a session left open is not enough).
    refused = browser.post(
        "/staff/account",
        data={"csrf_token": browser.csrf(), "action": "totp-start", "current": "not it"},
    )
    assert refused.status_code == 400 and "current password" in error_of(refused)
    started = browser.post(
        "/staff/account",
        data={"csrf_token": browser.csrf(), "action": "totp-start", "current": PASSWORD},
    )
    assert started.status_code == 200
    html = started.get_data(as_text=True)
    seed = re.search(r'<code class="secret">([A-Z2-7]+)</code>', html)
    assert seed, html
    assert goes_to(browser.get("/staff/"), "/staff/account")  # not on until confirmed

    confirmed = browser.post(
        "/staff/account",
        data={
            "csrf_token": browser.csrf(),
            "action": "totp-confirm",
            "code": pyotp.TOTP(seed[1]).at(clock.now()),
        },
    )
    assert confirmed.status_code == 200
    shown = re.findall(r"<li><code>([0-9a-f]{6}-[0-9a-f]{6})</code></li>", confirmed.text)
    assert len(set(shown)) == accounts.RECOVERY_CODES
    assert browser.get("/staff/").status_code == 200
    # Once on, the seed is never shown again.
    assert seed[1] not in browser.get("/staff/account").get_data(as_text=True)

    # An account that has it on is asked for its code, not sent to the setup.
    other = Staff(app)
    assert goes_to(other.sign_in(BOB), "/staff/login/code")


# ----------------------------------------------------------------------------- rate limits


@pytest.mark.slow  # dozens of argon2 checks: seconds
def test_the_eleventh_attempt_for_one_account_in_15_minutes_is_refused(app, runtime, clock, ann):
    browser = Staff(app)
    for attempt in range(10):
        response = browser.sign_in(ANN, f"wrong password number {attempt}")
        assert response.status_code == 401 and error_of(response) == REFUSED
        clock.advance(seconds=20)
    start = clock.now() - timedelta(seconds=200)

    # Even with the right password, and from another network.
    for where in ("192.0.2.10", "198.51.100.7", "2001:db8::1"):
        refused = Staff(app, ip=where).sign_in(ANN)
        assert refused.status_code == 401 and error_of(refused) == TOO_MANY
        assert refused.headers.get_all("Set-Cookie") == []
    # An unknown address is limited the same way (the limit says nothing about accounts).
    for _ in range(10):
        browser.sign_in("nobody@center.example.org", "x")
    assert error_of(browser.sign_in("nobody@center.example.org", "x")) == TOO_MANY

    clock.set(start + timedelta(minutes=14, seconds=59))
    assert error_of(browser.sign_in(ANN)) == TOO_MANY
    clock.set(start + timedelta(minutes=15))
    assert goes_to(browser.sign_in(ANN), "/staff/")
    assert browser.signed_in()


@pytest.mark.slow  # dozens of argon2 checks: seconds
def test_a_burst_of_parallel_attempts_gets_no_more_than_the_cap(app, runtime, ann):
    """Attempts sent all at once (waitress serves them on parallel threads) are counted one
    after the other: on PostgreSQL they once all read the count before any added to it."""
    burst = 16
    start = threading.Barrier(burst)
    outcomes: list[str] = []

    def attempt(n: int) -> None:
        browser = Staff(app, ip=f"198.51.100.{n + 1}")
        start.wait()
        response = browser.post("/staff/login", data={"email": ANN, "password": f"guess {n}"})
        outcomes.append(error_of(response))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(burst)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == sorted([REFUSED] * 10 + [TOO_MANY] * (burst - 10))


@pytest.mark.slow  # dozens of argon2 checks: seconds
def test_thirty_attempts_from_one_network_in_15_minutes(app, runtime, clock, ann):
    crowd = Staff(app, ip="203.0.113.9")
    for n in range(30):
        response = crowd.sign_in(f"guess{n}@center.example.org", "password guess")
        assert error_of(response) == REFUSED, n
    refused = crowd.sign_in(ANN)
    assert refused.status_code == 401 and error_of(refused) == TOO_MANY
    # The same network is one client (IPv6: its /64).
    assert error_of(Staff(app, ip="203.0.113.9").sign_in(ANN)) == TOO_MANY
    # Another network is not held up by it.
    assert goes_to(Staff(app, ip="198.51.100.7").sign_in(ANN), "/staff/")
    clock.advance(minutes=15)
    assert goes_to(crowd.sign_in(ANN), "/staff/")


# ----------------------------------------------------------------------------- networks


def test_the_console_is_not_there_outside_its_networks(app_of, runtime, ann):
    app = app_of(staff_networks="10.0.0.0/8, 2001:db8:aa::/48")
    outside = Staff(app, ip="192.0.2.10")
    not_found = outside.get("/no-such-page")
    assert not_found.status_code == 404
    for path in ("/staff/login", "/staff/", "/staff/campaigns", "/staff/no-such-page"):
        response = outside.get(path)
        assert response.status_code == 404, path
        assert response.get_data() == not_found.get_data()  # the same as no page at all
    assert outside.post("/staff/login", data={"email": ANN, "password": PASSWORD}).status_code == (
        404
    )
    assert session_rows(runtime) == []
    assert outside.get("/subscribe").status_code == 200  # the public pages are for everyone

    for inside_ip in ("10.1.2.3", "::ffff:10.1.2.3", "2001:db8:aa:1::5"):
        inside = Staff(app, ip=inside_ip)
        assert inside.get("/staff/login").status_code == 200, inside_ip
        assert goes_to(inside.sign_in(ANN), "/staff/"), inside_ip
        assert inside.get("/staff/").status_code == 200, inside_ip

    # A session cookie carried outside opens nothing there.
    inside = Staff(app, ip="10.1.2.3")
    inside.sign_in(ANN)
    cookie = inside.cookie()
    assert cookie is not None
    outside.use_cookie(cookie)
    assert outside.get("/staff/").status_code == 404
    assert outside.post("/staff/logout", data={"csrf_token": inside.csrf()}).status_code == 404
    assert inside.signed_in()


# ----------------------------------------------------------------------------- CSRF, redirects


def test_a_post_without_the_sessions_token_changes_nothing(app, runtime, kap, ann):
    browser, other = Staff(app), Staff(app)
    browser.sign_in(ANN)
    add_staff(runtime, BOB, "editor")
    other.sign_in(BOB)
    pause = "/staff/campaigns/kap-benefits/pause"

    def status() -> str:
        with runtime.sessions.begin() as session:
            return session.scalars(select(Campaign.status).where(Campaign.slug == kap)).one()

    for data in (
        {"reason": "no token"},
        {"reason": "empty token", "csrf_token": ""},
        {"reason": "wrong token", "csrf_token": "x" * 43},
        {"reason": "another session's", "csrf_token": other.csrf()},
    ):
        response = browser.post(pause, data=data)
        assert response.status_code == 400, data
        assert "expired or was sent from another site" in response.get_data(as_text=True)
    account = browser.post(
        "/staff/account",
        data={"action": "password", "current": PASSWORD, "new": NEW_PASSWORD},
    )
    assert account.status_code == 400
    assert status() == "active"
    with runtime.sessions.begin() as session:
        assert list(entries(session, action="campaign.pause")) == []
    assert browser.signed_in()
    assert goes_to(Staff(app).sign_in(ANN), "/staff/")  # the password did not change

    done = browser.post(pause, data={"reason": "bounces", "csrf_token": browser.csrf()})
    assert goes_to(done, "/staff/campaigns/kap-benefits") and status() == "paused"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example",
        "https://evil.example/staff/",
        "//evil.example/staff/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "/subscribe",
        "",
    ],
)
def test_sign_in_never_sends_the_browser_elsewhere(app, runtime, target, ann):
    from urllib.parse import quote

    browser = Staff(app)
    page = browser.get(f"/staff/login?next={quote(target, safe='')}")
    assert page.status_code == 200
    assert 'name="next" value="/staff/"' in page.get_data(as_text=True)
    # Even posted directly, with the form's next field forged.
    forged = {"email": ANN, "password": PASSWORD, "next": target}
    response = browser.post("/staff/login", data=forged)
    assert response.status_code == 303 and response.location == "/staff/"


def test_sign_in_returns_to_the_console_page_asked_for(app, runtime, ann):
    browser = Staff(app)
    asked = browser.get("/staff/campaigns")
    assert goes_to(asked, "/staff/login")
    nxt = parse_qs(urlsplit(asked.location).query)["next"][0]
    assert nxt == "/staff/campaigns"
    response = browser.sign_in(ANN, next="/staff/campaigns")
    assert response.status_code == 303 and response.location == "/staff/campaigns"


# ----------------------------------------------------------------------------- headers


def check_headers(response: Any, what: str) -> None:
    csp = {
        d.split()[0]: d.split()[1:]
        for d in response.headers["Content-Security-Policy"].split(";")
        if d.strip()
    }
    scripts = csp.get("script-src", csp.get("default-src"))
    assert scripts is not None and "'unsafe-inline'" not in scripts, (what, csp)
    assert "'unsafe-eval'" not in scripts and "*" not in scripts, (what, csp)
    assert csp.get("frame-ancestors") in (["'none'"], ["'self'"]), (what, csp)
    assert response.headers["Referrer-Policy"] == "no-referrer", what
    assert response.headers["Cache-Control"] == "no-store", what
    assert response.headers["X-Content-Type-Options"] == "nosniff", what


def test_console_pages_send_the_security_headers(app, runtime, kap):
    add_staff(runtime, ANN, "admin")
    anonymous = Staff(app)
    for path in ("/staff/login", "/staff/", "/staff/set-password/nonsense"):
        response = anonymous.get(path)
        check_headers(response, path)
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp, path
    browser = Staff(app)
    browser.sign_in(ANN)
    for path in (
        "/staff/",
        "/staff/account",
        "/staff/campaigns",
        "/staff/campaigns/kap-benefits",
        "/staff/audit",
        "/staff/campaigns/no-such-campaign",
    ):
        response = browser.get(path)
        assert response.status_code in (200, 404), path
        check_headers(response, path)
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
        html = response.get_data(as_text=True)
        assert "<script" not in html and " style=" not in html, path  # nothing inline
        assert "Traceback" not in html
    check_headers(browser.post("/staff/logout"), "a refused POST")


def test_no_page_shows_a_secret(app_of, runtime, walk_values):
    from tidings.subscribers.apikeys import create_api_key

    smtp_password = "smtp-pass-Q7x9"
    app = app_of(smtp_url=runtime.settings.smtp_url.replace("//", f"//mailer:{smtp_password}@"))
    with runtime.sessions.begin() as session:
        _, api_key = create_api_key(session, "crm", runtime.clock.now())
    add_staff(runtime, ANN, "admin")
    browser = Staff(app)
    browser.sign_in(ANN)
    secrets = (smtp_password, runtime.settings.secret_key, runtime.secret(), api_key, PASSWORD)
    for route in ROUTES:
        if "GET" in route.methods:
            html = browser.get(fill(route.rule, walk_values)).get_data(as_text=True)
            for secret in secrets:
                assert secret not in html, (route.rule, secret[:4])


# ------------------------------------------------------------------------ the console's own audit


def test_the_console_records_who_paused_and_resumed_and_lists_it(app, runtime, clock, kap):
    add_staff(runtime, ANN, "editor")
    add_staff(runtime, BOB, "viewer")
    editor = Staff(app)
    editor.sign_in(ANN)
    clock.advance(minutes=3)
    pause = editor.post(
        "/staff/campaigns/kap-benefits/pause",
        data={"csrf_token": editor.csrf(), "reason": "  the  link in email 3 is broken "},
    )
    assert goes_to(pause, "/staff/campaigns/kap-benefits")
    page = editor.get("/staff/campaigns/kap-benefits").get_data(as_text=True)
    assert "paused" in page and "the link in email 3 is broken" in page
    no_reason = editor.post(
        "/staff/campaigns/kap-benefits/pause", data={"csrf_token": editor.csrf(), "reason": "   "}
    )
    assert no_reason.status_code == 400 and "say why you pause it" in no_reason.get_data(
        as_text=True
    )
    clock.advance(minutes=3)
    resume = "/staff/campaigns/kap-benefits/resume"
    resumed = editor.post(resume, data={"csrf_token": editor.csrf()})
    assert goes_to(resumed, "/staff/campaigns/kap-benefits")

    with runtime.sessions.begin() as session:
        log = [
            (e.actor, e.action, e.target, e.note, e.at)
            for e in entries(session, actor="staff:")
            if e.action != "user.sign-in"
        ]
    start = clock.now() - timedelta(minutes=6)
    assert log == [
        (f"staff:{ANN}", "campaign.resume", "kap-benefits", None, start + timedelta(minutes=6)),
        (
            f"staff:{ANN}",
            "campaign.pause",
            "kap-benefits",
            "the link in email 3 is broken",
            start + timedelta(minutes=3),
        ),
    ]

    viewer = Staff(app)
    viewer.sign_in(BOB)
    everything = visible_text(viewer.get("/staff/audit").get_data(as_text=True))
    assert "campaign.pause" in everything and "campaign.resume" in everything
    assert f"staff:{ANN}" in everything and "the link in email 3 is broken" in everything
    only_pauses = visible_text(viewer.get("/staff/audit?action=campaign.pause").text)
    assert "campaign.pause" in only_pauses and "campaign.resume" not in only_pauses
    by_bob = visible_text(viewer.get(f"/staff/audit?actor=staff:{BOB}").get_data(as_text=True))
    assert "campaign.pause" not in by_bob and "user.sign-in" in by_bob


# ----------------------------------------------------------------------------- the role walk

IDENTITIES: list[str | None] = [None, *(r.value for r in StaffRole)]
PARAM = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def test_every_console_url_is_declared_as_a_route_with_a_known_permission(app):
    declared = {r.endpoint: r for r in ROUTES}
    assert len(declared) == len(ROUTES)
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/staff"):
            continue
        route = declared.get(rule.endpoint)
        assert route is not None, f"{rule.rule} is not declared with staff_route"
        assert route.rule == rule.rule
        assert set(route.methods) == set(rule.methods or ()) - {"HEAD", "OPTIONS"}, rule.rule
    for route in ROUTES:
        assert route.permission is None or route.permission in roles.PERMISSIONS, route
    public = sorted(r.endpoint for r in ROUTES if r.permission is None)
    assert public == ["staff.login", "staff.set_password"]  # the issue: nothing else


@pytest.fixture
def walk_values(runtime: Runtime, kap: str, tmp_path: Any) -> dict[str, Any]:
    """Real values for the routes' URL parameters."""
    from tidings.campaigns.loading import load_campaign

    now = runtime.clock.now()
    newsletter = tmp_path / "winter-news"
    newsletter.mkdir()
    (newsletter / "campaign.toml").write_text(NEWSLETTER_TOML, encoding="utf-8")
    (newsletter / "01-winter.md").write_text(NEWSLETTER_EMAIL, encoding="utf-8")
    with runtime.sessions.begin() as session:
        load_campaign(session, newsletter, runtime.settings, now)
        step_key = session.scalars(
            select(Step.key)
            .join(Campaign, Campaign.id == Step.campaign_id)
            .where(Campaign.slug == kap)
            .order_by(Step.position)
        ).first()
        subscriber = add_subscriber(
            session,
            now,
            "reader@example.org",
            Consent("cli", "test"),
            name="Reader",
            timezone="Europe/Paris",
            confirmed=True,
            message_domain=runtime.settings.sender_domain,
        )
        target = accounts.add_user(
            session, now, runtime.secret(), "target@center.example.org", "viewer"
        )
        assert target.set_password_token is not None
        return {
            "slug": kap,
            "newsletter": "winter-news",
            "key": step_key,
            "subscriber_id": subscriber.id,
            "subscriber_email": subscriber.email,
            "token": target.set_password_token,
            "user_id": target.user.id,
            "user_email": target.user.email,
        }


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


def fill(rule: str, values: dict[str, Any]) -> str:
    """The rule with a real value in each parameter, chosen by its name (and converter)."""

    def value(match: re.Match[str]) -> str:
        converter, name = match[1] or "string", match[2]
        about_users = "user" in name or "staff" in name or "/users/" in rule
        if name in ("slug", "campaign", "campaign_slug", "broadcast", "newsletter"):
            return values["newsletter" if "/newsletters" in rule else "slug"]
        if name in ("key", "step", "step_key"):
            return str(values["key"])
        if name == "token":
            return str(values["token"])
        if about_users:
            return str(values["user_id" if converter == "int" else "user_email"])
        if converter == "int" or name.endswith("id"):
            return str(values["subscriber_id"])
        if "email" in name or "address" in name or "subscriber" in name:
            return str(values["subscriber_email"])
        return str(values["slug"])

    return PARAM.sub(value, rule)


def test_every_route_as_every_role_and_as_nobody(app, runtime, walk_values):
    now = runtime.clock.now()
    serial = count()
    failures: list[str] = []
    walked: set[str] = set()

    def browser_of(role: str | None) -> tuple[Staff, str]:
        """A new account with this role, signed in (a new one each time: a route may sign
        out, disable or change the one it acts as)."""
        client = Staff(app)
        if role is None:
            return client, ""
        with runtime.sessions.begin() as session:
            made = accounts.add_user(
                act_as(session, "cli:walk"),
                now,
                runtime.secret(),
                f"walk-{role}-{next(serial)}@center.example.org",
                role,
            )
            cookie = sessions.open_session(session, now, made.user, needs_second_factor=False)
        with runtime.sessions.begin() as session:
            current = sessions.current(session, now, cookie)
            assert current is not None
            csrf = current.row.csrf_token
        client.use_cookie(cookie)
        return client, csrf

    def check(route: Any, method: str, role: str | None) -> None:
        path = fill(route.rule, walk_values)
        client, csrf = browser_of(role)
        if method == "GET":
            response = client.get(path, headers={"Accept": "text/html"})
        else:
            data = {"csrf_token": csrf, "reason": "role walk"} if role else {}
            response = client.post(path, data=data)
        walked.add(f"{method} {route.rule}")
        status = response.status_code
        what = f"{method} {path} as {role or 'nobody'} -> {status} {response.location or ''}"
        # 503: a tool the route runs is not installed here (SpamAssassin), which it says.
        if status >= 500 and status != 503:
            failures.append(f"{what}: a server error")
            return
        if route.permission is None:
            if status == 403 or goes_to(response, "/staff/login"):
                failures.append(f"{what}: a public route refused")
            return
        if role is None:
            expected = goes_to(response, "/staff/login") if method == "GET" else status == 401
            if method == "GET":
                query = parse_qs(urlsplit(response.location or "").query)
                expected = expected and query.get("next") == [path]
                other = client.get(path, headers={"Accept": "application/json"})
                if other.status_code != 401:
                    failures.append(f"{what}: not a page, answered {other.status_code}, not 401")
            if not expected:
                failures.append(f"{what}: nobody got through")
            return
        if not roles.allowed(role, route.permission):
            if status != 403:
                failures.append(f"{what}: {route.permission} is not {role}'s")
            return
        if status in (401, 403) or (
            route.endpoint != "staff.logout" and goes_to(response, "/staff/login")
        ):
            failures.append(f"{what}: {route.permission} is {role}'s, but refused")
        if method == "GET":
            check_headers(response, what)

    # Pages first, then forms (which may pause, erase, sign out...), each as nobody first and
    # as an admin last.
    for method in ("GET", "POST"):
        for route in ROUTES:
            if method in route.methods:
                for role in IDENTITIES:
                    check(route, method, role)

    assert not failures, "\n".join(failures)
    # The walk saw every route, and the ones this guard is about.
    assert len(walked) == sum(len(r.methods) for r in ROUTES)
    for needle in ("GET /staff/", "POST /staff/campaigns/<slug>/pause", "POST /staff/logout"):
        assert needle in walked


def test_the_walk_fills_parameters_with_real_values():
    values = {
        "slug": "kap-benefits",
        "newsletter": "winter-news",
        "key": "01-welcome",
        "subscriber_id": 7,
        "subscriber_email": "reader@example.org",
        "token": "1.1.abc.def",
        "user_id": 3,
        "user_email": "target@center.example.org",
    }
    assert fill("/staff/campaigns/<slug>/steps/<key>", values) == (
        "/staff/campaigns/kap-benefits/steps/01-welcome"
    )
    assert fill("/staff/subscribers/<int:subscriber_id>", values) == "/staff/subscribers/7"
    assert fill("/staff/subscribers/<subscriber>/erase", values) == (
        "/staff/subscribers/reader@example.org/erase"
    )
    assert fill("/staff/newsletters/<slug>", values) == "/staff/newsletters/winter-news"
    assert fill("/staff/set-password/<token>", values) == "/staff/set-password/1.1.abc.def"
    assert fill("/staff/users/<int:user_id>/disable", values) == "/staff/users/3/disable"
    assert fill("/staff/users/<email>", values) == "/staff/users/target@center.example.org"


def test_signing_in_again_ends_the_browsers_earlier_session(app, runtime):
    add_staff(runtime, ANN, "editor")
    browser = Staff(app)
    assert goes_to(browser.sign_in(ANN), "/staff/")
    first = browser.cookie()
    assert goes_to(browser.sign_in(ANN), "/staff/")
    assert browser.cookie() != first
    # The earlier cookie, kept by someone else, opens nothing.
    stolen = Staff(app)
    assert first is not None
    stolen.use_cookie(first)
    assert not stolen.signed_in()


def test_a_totp_code_signs_in_once(app, runtime, clock):
    add_staff(runtime, ANN, "editor")
    totp, _ = turn_on_totp(runtime, ANN)
    clock.advance(minutes=1)
    code = totp.at(clock.now())
    first = Staff(app)
    first.sign_in(ANN)
    entered = first.post(
        "/staff/login/code", data={"csrf_token": first.csrf("/staff/login/code"), "code": code}
    )
    assert goes_to(entered, "/staff/")
    # The same code seen over a shoulder, typed within its 30 seconds elsewhere: refused.
    second = Staff(app)
    second.sign_in(ANN)
    replay = second.post(
        "/staff/login/code", data={"csrf_token": second.csrf("/staff/login/code"), "code": code}
    )
    assert replay.status_code == 401
    assert goes_to(second.get("/staff/"), "/staff/login/code")  # still waiting for a code
