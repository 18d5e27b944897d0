"""What the tests of the web face share: a visitor's browser over plain HTTP, the emails it
gets, what every public page must carry, and the API call."""

from __future__ import annotations

import calendar
import re
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from conftest import decide_sign_ups, received

from tidings.clock import FixedClock
from tidings.runtime import Runtime
from tidings.web import create_app

BASE_URL = "https://news.example.org"
CRISIS = ("988", "988lifeline.org", "911")
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


class Visitor:
    """One person's browser as far as plain HTTP goes: cookies, an address, the hidden fields
    of the forms they loaded."""

    def __init__(self, app: Any, ip: str = "192.0.2.10", user_agent: str = "TestBrowser/1.0"):
        self.app = app
        self.client = app.test_client()
        self.client.environ_base.update({"REMOTE_ADDR": ip, "HTTP_USER_AGENT": user_agent})

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> Any:
        return self.client.head(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.post(path, **kwargs)

    def hidden_fields(self, page: str) -> dict[str, str]:
        response = self.get(page)
        assert response.status_code in (200, 410), response.status_code
        return dict(HIDDEN.findall(response.get_data(as_text=True)))

    def submit(self, page: str, data: dict[str, str], action: str | None = None) -> Any:
        """Load `page`, then post its form with `data` (as a browser does)."""
        fields = self.hidden_fields(page)
        return self.post(action or page, data={**fields, **data})

    def sign_up(
        self,
        email: str,
        name: str = "Ann",
        timezone: str = "Europe/Paris",
        decide: bool = True,
        **extra: str,
    ) -> Any:
        """Post the form; then (decide=True) let the worker decide it, as its next pass does."""
        data = {"email": email, "name": name, "timezone": timezone, "consent": "yes", **extra}
        response = self.submit("/subscribe", data)
        if decide:
            decide_sign_ups(self.app.extensions["tidings"].runtime)
        return response


def links_in(message: Any, scope: str) -> list[str]:
    """Paths of the `scope` links in an email's text part."""
    text = message.get_body(("plain",)).get_content()
    return [urlsplit(u).path for u in re.findall(rf"{BASE_URL}/{scope}/[\w.-]+", text)]


def emails_to(server: Any, address: str) -> list[Any]:
    return [m for m in received(server) if m["To"].addresses[0].addr_spec == address]


def assert_public_page(response: Any) -> str:
    """What every public page shares: the crisis block, headers, nothing from elsewhere."""
    html = response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/html")
    for needle in CRISIS:
        assert needle in html
    assert re.search(r'<html lang="en"[ >]', html)
    assert "Traceback" not in html
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    for src in re.findall(r'<(?:script|link|img|iframe)[^>]+(?:src|href)="([^"]+)"', html):
        assert src.startswith("/static/"), f"loads {src} from elsewhere"
    return html


def api_post(app: Any, body: Any, key: str | None, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = app.test_client()
    if "data" in kwargs:
        return client.post("/api/subscribers", headers=headers, **kwargs)
    return client.post("/api/subscribers", json=body, headers=headers, **kwargs)


API_BODY = {
    "email": "ann@example.org",
    "name": "Ann",
    "timezone": "America/Denver",
    "consent_text": "Yes, email me the KAP series (checkbox on the contact page).",
    "source": "contact page, 'newsletter' box",
}


def app_with(runtime: Runtime, clock: FixedClock, **changes: Any) -> tuple[Any, Runtime]:
    """An app on the same database with other settings (rate limits, proxies, origins)."""
    other = Runtime.open(runtime.settings.replace(**changes), clock)
    return create_app(other), other


# ----------------------------------------------------------------------------- what people read

ROOT = Path(__file__).resolve().parents[1]
# Elements a browser shows on a line of their own (so words either side of them never touch).
_BLOCKS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt"),
        *("fieldset", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr"),
        *("legend", "li", "main", "nav", "ol", "option", "p", "section", "table", "td", "th"),
        *("title", "tr", "ul"),
    }
)
_UNSEEN = frozenset({"script", "style", "datalist", "template"})
WORD = re.compile(r"[A-Za-z]+")
_BREAK = "\x00"


class _TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _UNSEEN:
            self.hidden += 1
        if tag in _BLOCKS:
            self.parts.append(_BREAK)

    def handle_endtag(self, tag: str) -> None:
        if tag in _UNSEEN:
            self.hidden -= 1
        if tag in _BLOCKS:
            self.parts.append(_BREAK)

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    """The words of a page as a browser lays them out: inline elements (strong, a, span) join
    their neighbours, blocks stand apart; whitespace collapsed, as a browser does."""
    parser = _TextOf()
    parser.feed(html)
    lines = "".join(parser.parts).split(_BREAK)
    return "\n".join(" ".join(line.split()) for line in lines if line.strip())


@cache
def page_vocabulary() -> frozenset[str]:
    """Every word the pages can show: the words of their templates and of the code that fills
    them (messages, settings' defaults, the shipped campaign), plus dates. Two words glued
    together ("emailsfrom") are in none of them."""
    sources = [
        *(ROOT / "tidings/templates/web").glob("*.html"),
        *(ROOT / "tidings/web").rglob("*.py"),
        *(ROOT / "tidings/subscribers").rglob("*.py"),
        ROOT / "tidings/campaigns/store.py",
        ROOT / "tidings/config.py",
        ROOT / "tidings/campaigns/kap-benefits/campaign.toml",
        ROOT / "tests/conftest.py",
    ]
    words = {w.lower() for path in sources for w in WORD.findall(path.read_text("utf-8"))}
    words |= {w.lower() for w in (*calendar.day_name, *calendar.month_name) if w}
    return frozenset(words)


def glued_words(html: str, also: tuple[str, ...] = ()) -> list[str]:
    """Words on the page that no template or message has (nor `also`, e.g. names typed in
    the test): two words run together."""
    known = page_vocabulary() | {w.lower() for text in also for w in WORD.findall(text)}
    return sorted({w for w in WORD.findall(visible_text(html)) if w.lower() not in known})
