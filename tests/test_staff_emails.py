"""The console's page of one email (issue 13, point 7): the email as the sample reader gets
it in two sandboxed iframes (phone and desktop width) served with a CSP of its own, its text
part, headers and lint findings; Spam score (the real SpamAssassin); Send a test to the real
aiosmtpd server, a test send like the CLI's, by role, audited with masked addresses.

The real Flask app on real databases (SQLite and PostgreSQL), signed in as staff.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

import pytest
from conftest import received
from sqlalchemy import func, select
from web_helpers import Visitor

from tidings.db.audit import entries
from tidings.db.models import Delivery
from tidings.ops.previews import preview_step
from tidings.staff.accounts import add_user
from tidings.web import create_app

PASSWORD = "plum-kettle-orbit-93-lantern"
KEY = "enhanced-therapeutic-process"
PAGE = f"/staff/campaigns/kap-benefits/steps/{KEY}"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def signed_in(app: Any, runtime: Any, email: str, role: str) -> Visitor:
    """A member of staff with this role, signed in through the login form."""
    with runtime.sessions.begin() as session:
        add_user(session, runtime.clock.now(), runtime.secret(), email, role, "Test", PASSWORD)
    visitor = Visitor(app)
    response = visitor.post("/staff/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 303, response.get_data(as_text=True)
    return visitor


def csrf(visitor: Visitor, page: str = "/staff/") -> str:
    match = CSRF.search(visitor.get(page).get_data(as_text=True))
    assert match
    return match.group(1)


def deliveries(runtime: Any) -> int:
    with runtime.read_sessions.begin() as session:
        return session.scalar(select(func.count()).select_from(Delivery)) or 0


def audit_of(runtime: Any, action: str) -> list[Any]:
    with runtime.read_sessions.begin() as session:
        return list(entries(session, action=action))


@pytest.fixture
def app(runtime, kap):
    return create_app(runtime)


@pytest.fixture
def editor(app, runtime):
    return signed_in(app, runtime, "ed@center.example.org", "editor")


# ----------------------------------------------------------------------------- the page


def test_the_email_page_frames_the_email_sandboxed_with_its_text_headers_and_lint(
    app, runtime, editor
):
    campaign = editor.get("/staff/campaigns/kap-benefits").get_data(as_text=True)
    assert f'href="{PAGE}"' in campaign  # each email of the campaign links to its page

    response = editor.get(PAGE)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    frames = re.findall(r"<iframe[^>]*>", page)
    assert len(frames) == 2
    for frame in frames:
        assert 'sandbox=""' in frame  # no scripts, no same origin, no forms, no popups
        assert f'src="{PAGE}/html"' in frame
    assert 'width="375"' in frames[0] and 'class="preview phone"' in frames[0]
    assert 'class="preview desktop"' in frames[1]
    # The console's own page keeps the console's headers: nobody may frame it.
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "<script" not in page and "style=" not in page and "<style" not in page

    email = preview_step(runtime, "kap-benefits", KEY)
    text = re.search(r'<pre class="text-part">(.*?)</pre>', page, re.S)
    assert text and "Enhanced Therapeutic Process" in text.group(1)
    headers = dict(re.findall(r'<tr><th scope="row">([^<]+)</th><td>([^<]*)</td></tr>', page))
    assert f"<h1>{email.subject}</h1>" in page and headers["Subject"] == email.subject
    assert headers["From"].endswith(" &lt;kap@center.example.org&gt;")
    assert headers["List-Unsubscribe"].startswith("&lt;https://news.example.org/unsubscribe/")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "No findings: the lint has nothing to say about this email." in page

    # The frame's content: the email as `campaigns preview` writes it, under a CSP of its own
    # that lets its inline styles through and no script at all, framed by the console only.
    html = editor.get(f"{PAGE}/html")
    assert html.status_code == 200
    assert html.get_data(as_text=True) == email.html
    policy = html.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "style-src 'unsafe-inline'" in policy
    assert "script" not in policy and "frame-ancestors 'self'" in policy
    assert html.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert html.headers["Cache-Control"] == "no-store"

    # A step by its position works too; unknown names are a clear 404.
    assert editor.get("/staff/campaigns/kap-benefits/steps/1").status_code == 200
    missing = editor.get("/staff/campaigns/kap-benefits/steps/no-such-email")
    assert missing.status_code == 404
    assert "has no step &#39;no-such-email&#39;" in missing.get_data(as_text=True)
    assert editor.get("/staff/campaigns/nope/steps/1").status_code == 404
    assert editor.get("/staff/campaigns/nope/steps/1/html").status_code == 404
    # Nobody signed in sees nothing of it.
    stranger = Visitor(app)
    assert stranger.get(PAGE).status_code == 302
    assert stranger.get(f"{PAGE}/html", headers={"Accept": "*/*"}).status_code in (302, 401)


def test_lint_findings_of_this_email_are_shown(app, runtime, editor, tmp_path):
    """A campaign whose email breaks a rule: the finding, with its file and line."""
    from tidings.campaigns.loading import load_campaign

    folder = tmp_path / "news"
    folder.mkdir()
    (folder / "campaign.toml").write_text(
        'slug = "lint-news"\nname = "Lint news"\n\n[footer]\n'
        'crisis = "If you are struggling or in crisis, call or text 988, or chat at '
        '988lifeline.org."\ndisclaimer = "Educational information, not medical advice."\n'
        'risk = "Ketamine treatment has risks and needs medical screening."\n'
        'reason = "You signed up at {{ sender.organization }}."\n',
        encoding="utf-8",
    )
    (folder / "01-hello.md").write_text(
        '+++\nsubject = "Hello"\n+++\n## Hello\n\nThis is a short note.\n', encoding="utf-8"
    )
    with runtime.sessions.begin() as session:
        load_campaign(session, folder, runtime.settings, runtime.clock.now())
    page = editor.get("/staff/campaigns/lint-news/steps/hello").get_data(as_text=True)
    assert "<td>preheader-missing</td><td>01-hello.md:2</td>" in page

    # Edited on disk since it was loaded: the page says the findings are of the new file.
    (folder / "01-hello.md").write_text(
        '+++\nsubject = "Hello"\npreheader = "A short note"\n+++\n## Hello\n\nShort.\n',
        encoding="utf-8",
    )
    page = editor.get("/staff/campaigns/lint-news/steps/hello").get_data(as_text=True)
    assert "has changed since the campaign was loaded" in page

    # The folder gone: the email is still shown, and the page says why there is no lint.
    shutil.rmtree(folder)
    page = editor.get("/staff/campaigns/lint-news/steps/hello").get_data(as_text=True)
    assert "The lint could not run" in page


# ----------------------------------------------------------------------------- test send


def test_send_a_test_to_oneself_or_a_list_arrives_like_the_clis_and_is_audited(
    runtime, smtp_server, editor
):
    before = deliveries(runtime)
    token = csrf(editor, PAGE)
    response = editor.post(f"{PAGE}/test-send", data={"csrf_token": token, "to": ""})
    assert response.status_code == 303
    shown = editor.get(response.headers["Location"]).get_data(as_text=True)
    assert "Test sent to 1 address(es)." in shown

    # As `tidings campaigns test-send` sends it: the campaign's envelope sender, both parts,
    # to a "Test Recipient" whose links belong to nobody, and nothing in the ledger.
    ((mail_from, rcpts, _),) = smtp_server.handler.messages
    assert (mail_from, rcpts) == ("kap@center.example.org", ["ed@center.example.org"])
    (message,) = received(smtp_server)
    assert message["Subject"] == preview_step(runtime, "kap-benefits", KEY).subject
    assert message["To"].addresses[0].display_name == "Test Recipient"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert deliveries(runtime) == before

    # A list, separated by commas and new lines.
    smtp_server.handler.messages.clear()
    response = editor.post(
        f"{PAGE}/test-send",
        data={"csrf_token": token, "to": "Ann@Example.org, bob@example.org\r\ncy@example.net"},
    )
    assert response.status_code == 303
    assert sorted(r for _, (r,), _ in smtp_server.handler.messages) == [
        "ann@example.org",
        "bob@example.org",
        "cy@example.net",
    ]
    assert deliveries(runtime) == before

    # In the audit log: who, on which email, how many addresses, never an address in full.
    latest, first = audit_of(runtime, "campaign.test-send")
    assert first.actor == latest.actor == "staff:ed@center.example.org"
    assert first.target == latest.target == f"kap-benefits/{KEY}"
    assert first.detail["addresses"] == 1 and latest.detail["addresses"] == 3
    assert latest.detail["to"] == ["a**@example.org", "b**@example.org", "c**@example.net"]
    for entry in (first, latest):
        assert "ann@" not in str(entry.detail) and "ed@center" not in str(entry.detail)


def test_a_malformed_address_is_refused_by_name_and_nothing_is_sent(runtime, smtp_server, editor):
    token = csrf(editor, PAGE)
    response = editor.post(
        f"{PAGE}/test-send",
        data={"csrf_token": token, "to": "ann@example.org, not-an-address, bob@example.org"},
    )
    assert response.status_code == 400
    refusal = response.get_data(as_text=True)
    assert "to: &#39;not-an-address&#39; is not a valid email address" in refusal
    too_many = ", ".join(f"p{i}@example.org" for i in range(11))
    response = editor.post(f"{PAGE}/test-send", data={"csrf_token": token, "to": too_many})
    assert response.status_code == 400 and "at most 10" in response.get_data(as_text=True)
    assert smtp_server.handler.messages == []
    assert audit_of(runtime, "campaign.test-send") == []


def test_a_viewer_reads_the_email_but_may_not_test_send_or_score_it(app, runtime, smtp_server):
    viewer = signed_in(app, runtime, "vi@center.example.org", "viewer")
    page = viewer.get(PAGE).get_data(as_text=True)
    assert "<iframe" in page
    assert "Send a test" not in page and "Spam score" not in page
    token = csrf(viewer, PAGE)
    response = viewer.post(f"{PAGE}/test-send", data={"csrf_token": token, "to": ""})
    assert response.status_code == 403
    assert viewer.post(f"{PAGE}/spamcheck", data={"csrf_token": token}).status_code == 403
    assert smtp_server.handler.messages == []
    assert audit_of(runtime, "campaign.test-send") == []
    # Without the form's token an editor's post is refused too.
    editor = signed_in(app, runtime, "ed2@center.example.org", "editor")
    assert editor.post(f"{PAGE}/test-send", data={"to": ""}).status_code == 400
    assert smtp_server.handler.messages == []


# ----------------------------------------------------------------------------- spam score


def test_spam_score_without_spamassassin_says_so(editor, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no spamassassin on this PATH
    token = csrf(editor, PAGE)
    response = editor.post(f"{PAGE}/spamcheck", data={"csrf_token": token})
    assert response.status_code == 200
    assert "spamassassin is not installed" in response.get_data(as_text=True)


@pytest.mark.slow
def test_spam_score_runs_spamassassin_on_this_email(editor):
    assert shutil.which("spamassassin"), "apt-get install spamassassin (.ci/run does it)"
    token = csrf(editor, PAGE)
    response = editor.post(f"{PAGE}/spamcheck", data={"csrf_token": token})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    score = re.search(r"SpamAssassin gives this email <strong>(-?\d+\.\d)</strong>", page)
    assert score, page
    assert float(score.group(1)) <= 0.5  # as test_spamcheck holds every KAP email to
    assert '<th scope="col">Rule</th>' in page
