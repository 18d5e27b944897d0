"""`tidings check`: line by line, against real parts (the web pages under waitress on a
loopback port, real SMTP servers, a real DKIM key); every blocker makes it exit 1. And
sending refuses to start without a postal address.

On SQLite only: nothing here depends on the database (the broadcast, DKIM and lint tests run
on both).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cli_helpers import Tidings

from tidings.clock import FixedClock
from tidings.runtime import Runtime
from tidings.sending.devsmtp import MemoryHandler, free_port
from tidings.web import WebServer, create_app


@pytest.fixture
def site(sqlite_url) -> Iterator[str]:
    """tidings' web pages on a free loopback port, on the test's database."""
    t = Tidings(sqlite_url, "smtp://127.0.0.1:25")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = t.settings().replace(base_url=base_url)
    clock = FixedClock(datetime(2026, 10, 19, 8, tzinfo=UTC))
    with (
        Runtime.open(settings, clock) as runtime,
        WebServer(create_app(runtime), "127.0.0.1", port, threads=2),
    ):
        yield base_url


@pytest.fixture
def ready(sqlite_url, smtp_server, site, tmp_path) -> Tidings:
    """Everything in order: the checks pass."""
    t = Tidings(sqlite_url, smtp_server.url)
    t.env["TIDINGS_BASE_URL"] = site
    t.ok(
        "dkim",
        "generate",
        "--selector",
        "s1",
        "--domain",
        "center.example.org",
        "--out",
        str(tmp_path / "dkim"),
    )
    t.env.update(
        TIDINGS_DKIM_SELECTOR="s1", TIDINGS_DKIM_PRIVATE_KEY=str(tmp_path / "dkim" / "s1.private")
    )
    t.ok("campaigns", "load", "kap-benefits")
    t.ok("subscribers", "add", "ann@example.org", "--confirmed", "--evidence", "form")
    return t


def line(output: str, status: str, name: str) -> str:
    found = [x for x in output.splitlines() if x.startswith(f"{status:<4}  {name}")]
    assert found, output
    return found[0]


def test_everything_in_order(ready):
    output = ready.ok("check").output
    assert "ok    sender       Center for Counseling <kap@center.example.org>" in output
    assert "ok    postal       100 Example Street, Springfield" in output
    assert "answers (healthz ok)" in line(output, "ok", "base url")
    assert "links are accepted" in line(output, "ok", "unsubscribe")
    assert "EHLO ok" in line(output, "ok", "smtp")
    assert "d=center.example.org s=s1" in line(output, "ok", "dkim")
    assert "s1._domainkey.center.example.org. IN TXT" in line(output, "info", "dkim")
    assert "v=spf1" in line(output, "info", "spf")
    assert "_dmarc.center.example.org" in line(output, "info", "dmarc")
    assert "http on this machine" in line(output, "warn", "base url")
    assert "FAIL" not in output and output.rstrip().endswith("ready to send")


def blocked(t: Tidings, name: str, **env: str) -> str:
    output = t.fails("check", **env)
    assert "blocker(s): fix them before sending" in output
    return line(output, "FAIL", name)


def test_a_sender_at_localhost(ready):
    assert "newsletter@localhost" in blocked(
        ready, "sender", TIDINGS_FROM_ADDRESS="newsletter@localhost"
    )


def test_no_postal_address(ready):
    assert "TIDINGS_POSTAL_ADDRESS is empty" in blocked(ready, "postal", TIDINGS_POSTAL_ADDRESS="")


def test_a_campaign_loaded_before_the_postal_address_was_set(ready):
    ready.ok("campaigns", "load", "kap-benefits", TIDINGS_POSTAL_ADDRESS="")
    assert "kap-benefits was loaded without a postal address" in blocked(ready, "postal")


def test_a_base_url_that_is_not_https(ready):
    assert "is not https" in blocked(ready, "base url", TIDINGS_BASE_URL="http://news.example.org")


def test_a_base_url_nobody_answers(ready):
    dead = f"https://127.0.0.1:{free_port()}"
    assert "cannot be reached" in blocked(ready, "base url", TIDINGS_BASE_URL=dead)


def test_a_base_url_that_is_not_tidings(ready):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        message = blocked(
            ready, "base url", TIDINGS_BASE_URL=f"http://127.0.0.1:{server.server_address[1]}"
        )
    finally:
        server.shutdown()
        server.server_close()
    assert "answered 404" in message


def test_links_signed_with_another_key_than_the_web_pages(ready):
    message = blocked(ready, "unsubscribe", TIDINGS_SECRET_KEY="another-key")
    assert "another key" in message and "TIDINGS_SECRET_KEY" in message


def test_an_smtp_server_nobody_answers(ready):
    port = free_port()
    message = blocked(ready, f"smtp 127.0.0.1:{port}", TIDINGS_SMTP_URL=f"smtp://127.0.0.1:{port}")
    assert "cannot connect" in message


def test_starttls_asked_but_not_offered(ready, smtp_server):
    message = blocked(ready, "smtp", TIDINGS_SMTP_URL=f"{smtp_server.url}?starttls=1")
    assert "does not offer STARTTLS" in message


def test_a_refused_login(ready):
    def refuse(server, session, envelope, mechanism, auth_data) -> AuthResult:
        return AuthResult(success=False, handled=False)

    port = free_port()
    controller = Controller(
        MemoryHandler(),
        hostname="127.0.0.1",
        port=port,
        authenticator=refuse,
        auth_require_tls=False,
    )
    controller.start()
    try:
        message = blocked(ready, "smtp", TIDINGS_SMTP_URL=f"smtp://news:wrong@127.0.0.1:{port}")
    finally:
        controller.stop()
    assert "login refused: 535" in message


def test_a_dkim_key_that_cannot_be_read(ready):
    message = blocked(ready, "dkim", TIDINGS_DKIM_PRIVATE_KEY="/nonexistent/s1.private")
    assert "cannot read /nonexistent/s1.private" in message


def test_a_dkim_key_that_does_not_match_the_published_record(ready, tmp_path):
    ready.ok(
        "dkim",
        "generate",
        "--selector",
        "s1",
        "--domain",
        "center.example.org",
        "--out",
        str(tmp_path / "other"),
    )
    published = (tmp_path / "other" / "s1.txt").read_text()
    message = ready.fails("check", "--dkim-record", published)
    assert "does not match the record given" in line(message, "FAIL", "dkim")
    # The record written beside the key by `dkim generate` is compared too.
    key_dir = Path(ready.env["TIDINGS_DKIM_PRIVATE_KEY"]).parent
    (key_dir / "s1.txt").write_text(published)
    assert "does not match" in blocked(ready, "dkim")


# ----------------------------------------------------------------------------- refusing to send


def test_sending_refuses_to_start_without_a_postal_address(sqlite_url, smtp_server, tmp_path):
    t = Tidings(sqlite_url, smtp_server.url)
    t.ok("campaigns", "load", "kap-benefits")
    t.ok(
        "subscribers",
        "add",
        "ann@example.org",
        "--confirmed",
        "--evidence",
        "form",
        "--timezone",
        "UTC",
    )
    t.at(datetime(2026, 10, 19, 9, tzinfo=UTC))
    for command in (("send-due",), ("worker",), ("run", "--no-web")):
        output = t.fails(*command, TIDINGS_POSTAL_ADDRESS="")
        assert "TIDINGS_POSTAL_ADDRESS is empty" in output and "CAN-SPAM" in output
    assert smtp_server.handler.messages == []
    # Writing to a local maildir sends nothing out: allowed.
    assert (
        "sent 1"
        in t.ok(
            "send-due",
            TIDINGS_POSTAL_ADDRESS="",
            TIDINGS_TRANSPORT="maildir",
            TIDINGS_MAILDIR=str(tmp_path / "outbox"),
        ).output
    )
