"""The web's commands as a user runs them: `tidings apikeys`, `tidings form-snippet`, and
`tidings serve` / `tidings run` serving the pages from their own processes."""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_helpers import BASE_URL, Tidings, on_sqlite_copy
from conftest import decide_sign_ups
from sqlalchemy import select

from tidings.db.models import ApiKey, Subscriber
from tidings.runtime import Runtime
from tidings.sending.devsmtp import LocalSMTPServer, free_port
from tidings.web import create_app
from tidings.web.app import consent_text_for, consent_version_of

TIDINGS = [sys.executable, "-m", "tidings"]


# ----------------------------------------------------------------------------- apikeys


def test_an_api_key_is_printed_once_stored_hashed_listed_and_revoked(tidings):
    created = tidings.ok("apikeys", "create", "contact-form")
    key = created.stdout.strip()
    assert re.fullmatch(r"tdk_[\w-]{43}", key)
    assert "shown only this once" in created.stderr
    with tidings.session() as session:
        row = session.scalars(select(ApiKey)).one()
        assert row.key_sha256 == hashlib.sha256(key.encode()).hexdigest()
        assert row.prefix == key[:12] and key not in (row.name, row.prefix)

    listed = tidings.json("apikeys", "list")
    assert [(k["name"], k["prefix"], k["revoked_at"]) for k in listed] == [
        ("contact-form", key[:12], None)
    ]
    assert key not in tidings.ok("apikeys", "list").stdout

    assert "revoked" in tidings.ok("apikeys", "revoke", "contact-form").stdout
    assert "already revoked" in tidings.ok("apikeys", "revoke", "contact-form").stdout
    assert tidings.json("apikeys", "list")[0]["revoked_at"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("apikeys", "create", ""), "name: use 1 to 100 letters"),
        (("apikeys", "create", "bad\nname"), "name: use 1 to 100 letters"),
        (("apikeys", "create", "x" * 101), "name: use 1 to 100 letters"),
        (("apikeys", "revoke", "nobody"), "no API key named 'nobody'"),
    ],
)
def test_apikeys_errors_are_one_line_and_store_nothing(tidings, args, message):
    assert message in tidings.fails(*args)
    assert tidings.json("apikeys", "list") == []


def test_two_keys_cannot_share_a_name(tidings):
    tidings.ok("apikeys", "create", "site")
    assert "already exists" in tidings.fails("apikeys", "create", "site")
    assert len(tidings.json("apikeys", "list")) == 1


# ----------------------------------------------------------------------------- form-snippet


def test_the_form_snippet_posts_to_the_base_url_and_is_accepted_from_the_site(tidings, tmp_path):
    html = tidings.ok("form-snippet").stdout
    settings = tidings.settings()
    assert f'action="{BASE_URL}/subscribe"' in html
    assert consent_text_for(settings) in html
    assert (
        f'name="consent_version" value="{consent_version_of(consent_text_for(settings))}"' in html
    )
    assert re.findall(r'<script[^>]*src="([^"]+)"', html) == [f"{BASE_URL}/static/timezone.js"]
    assert "<script>" not in html  # nothing inline, nothing from a third party
    for name in ("email", "name", "timezone", "consent", "website"):
        assert f'name="{name}"' in html
        assert re.search(rf'<label for="tidings-{name}">', html)

    out = tmp_path / "signup.html"
    tidings.ok("form-snippet", "--out", str(out))
    assert out.read_text(encoding="utf-8") == html

    # What a browser on the center's site would send with this form, filled in.
    fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', html))
    data = {
        **fields,
        "email": "ann@example.org",
        "name": "Ann",
        "timezone": "America/Denver",
        "consent": "yes",
    }
    site = "https://www.center.example.org"
    with Runtime.open(settings.replace(form_origins=site)) as runtime:
        client = create_app(runtime).test_client()
        response = client.post("/subscribe", data=data, headers={"Origin": site})
        assert response.status_code == 200
        decide_sign_ups(runtime)
    with tidings.session() as session:
        ann = session.scalars(select(Subscriber)).one()
        assert (ann.email, ann.status, ann.timezone) == (
            "ann@example.org",
            "pending",
            "America/Denver",
        )


def test_a_snippet_left_over_from_an_older_consent_text_is_caught(tidings):
    old = tidings.ok("form-snippet").stdout
    fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', old))
    site = "https://www.center.example.org"
    newer = tidings.settings().replace(
        form_origins=site, consent_text="Send me the weekly letter. Leave anytime."
    )
    with Runtime.open(newer) as runtime:
        client = create_app(runtime).test_client()
        response = client.post(
            "/subscribe",
            headers={"Origin": site},
            data={**fields, "email": "ann@example.org", "timezone": "UTC", "consent": "yes"},
        )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "wording of this agreement has changed" in page
    assert "Send me the weekly letter. Leave anytime." in page
    with tidings.session() as session:
        assert session.scalars(select(Subscriber)).all() == []


# ----------------------------------------------------------------------------- processes


class Server:
    """A `tidings` process serving the pages; `.url`, and cookies like a browser."""

    def __init__(self, process: subprocess.Popen, url: str):
        self.process = process
        self.url = url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.url + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode()
        try:
            with self.opener.open(self.url + path, data=body, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def sign_up(self, email: str) -> tuple[int, str]:
        _, form = self.get("/subscribe")
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))
        return self.post(
            "/subscribe", {**fields, "email": email, "timezone": "UTC", "consent": "yes"}
        )


@contextmanager
def running(args: list[str], env: dict[str, str]) -> Iterator[Server]:
    """Start `tidings ARGS`, wait until it says where it listens, stop it with SIGTERM."""
    process = subprocess.Popen(
        [*TIDINGS, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        # Read stderr until the line naming the address (the server listens before printing).
        assert process.stderr is not None
        url = None
        for line in process.stderr:
            lines.append(line)
            found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            if found and ("serving" in line or "web pages at" in line):
                url = found.group(1)
                break
        assert url, "".join(lines)
        drain = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
        drain.start()
        yield Server(process, url)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "".join(lines)
        drain.join(timeout=10)
        assert "stopped cleanly" in "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def process_env(db_path: Path, smtp_url: str, port: int) -> dict[str, str]:
    """Settings for a process listening on `port`: its pages are reached over plain HTTP here,
    so TIDINGS_BASE_URL says so (with https, the session cookie is Secure and a client on
    http:// would not send it back)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        TIDINGS_DATABASE_URL=f"sqlite:///{db_path}",
        TIDINGS_SMTP_URL=smtp_url,
        TIDINGS_SECRET_KEY="processes-test-secret-key-of-32-bytes",
        TIDINGS_BASE_URL=f"http://127.0.0.1:{port}",
        TIDINGS_POSTAL_ADDRESS="1 Main St",
        TIDINGS_CLOCK="fixed:2026-10-19T08:00:00+00:00",
        TIDINGS_TICK_SECONDS="0.05",
    )
    return env


def test_tidings_serve_serves_the_pages_and_stops_cleanly(sqlite_template, tmp_path):
    db_path = tmp_path / "tidings.db"
    db_path.write_bytes(sqlite_template.read_bytes())
    port = free_port()
    env = process_env(db_path, f"smtp://127.0.0.1:{free_port()}", port)
    with running(["serve", "--host", "127.0.0.1", "--port", str(port)], env) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        status, body = server.get("/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok", "database": "ok"})
        status, page = server.get("/subscribe")
        assert status == 200 and "988lifeline.org" in page
        status, page = server.sign_up("ann@example.org")
        assert status == 200 and "Check your inbox" in page
        assert server.get("/nowhere")[0] == 404
    # The web only received the sign-up; the worker's next pass (here `send-due`) decides it.
    tidings = Tidings(f"sqlite:///{db_path}", env["TIDINGS_SMTP_URL"])
    tidings.fails("subscribers", "show", "ann@example.org")
    tidings.ok("send-due")
    assert tidings.json("subscribers", "show", "ann@example.org")["status"] == "pending"


class Signalling:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content)
        self.arrived.set()
        return "250 2.0.0 Ok"


def test_tidings_run_serves_the_pages_and_sends_what_they_queue(sqlite_template, tmp_path):
    db_path = tmp_path / "tidings.db"
    db_path.write_bytes(sqlite_template.read_bytes())
    handler = Signalling()
    with LocalSMTPServer(handler) as smtp:
        port = free_port()
        env = process_env(db_path, smtp.url, port)
        with running(["run", "--port", str(port)], env) as server:
            assert server.get("/healthz")[0] == 200
            assert server.sign_up("ann@example.org")[0] == 200
            # The scheduler in the same process sends the confirmation email.
            assert handler.arrived.wait(timeout=60), "no confirmation email"
    assert b"Please confirm your subscription" in handler.messages[0]


def test_tidings_run_no_web_does_not_listen(sqlite_template, tmp_path):
    db_path = tmp_path / "tidings.db"
    db_path.write_bytes(sqlite_template.read_bytes())
    port = free_port()
    env = process_env(db_path, f"smtp://127.0.0.1:{free_port()}", port)
    process = subprocess.Popen(
        [*TIDINGS, "run", "--no-web", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "tidings is running" in line and "web pages" not in line
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_busy_port_is_a_clear_error(sqlite_template, tmp_path):
    import socket

    tidings = on_sqlite_copy(sqlite_template, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for command in ("serve", "run"):
            output = tidings.fails(command, "--port", str(port))
            assert f"cannot listen on 127.0.0.1:{port}" in output
            assert "--port" in output
