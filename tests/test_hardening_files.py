"""Hardening of files, the server and secrets (issue 11, points 10 to 12): what tidings writes
is private and never written through a symbolic link; the web server refuses a huge body
before reading it and a JSON bomb with a 400; a short TIDINGS_SECRET_KEY stops every
command that signs links. Through the real command, a real waitress server, real sockets.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import Tidings, load_kap
from sqlalchemy import func
from sqlalchemy import select as sql_select

from tidings.db.models import Subscriber
from tidings.runtime import Runtime
from tidings.sending.devsmtp import free_port
from tidings.subscribers.apikeys import create_api_key
from tidings.web import WebServer, create_app
from tidings.web.server import MAX_BODY_BYTES

TARGET_TEXT = "the operator's own file\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def planted_link(path: Path, tmp_path: Path) -> Path:
    """A symbolic link at `path` to a file someone would like overwritten; returns the file."""
    target = tmp_path / f"target-of-{path.name}"
    target.write_text(TARGET_TEXT)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return target


def refused(output: str, target: Path) -> None:
    assert "symbolic link" in output and "does not write through links" in output, output
    assert target.read_text() == TARGET_TEXT  # untouched


# ----------------------------------------------------------------------------- 10. files


@pytest.fixture
def listed(tidings: Tidings) -> Tidings:
    tidings.ok("subscribers", "add", "ann@example.org", "--confirmed", "--evidence", "form")
    return tidings


def test_an_export_is_private_and_never_written_through_a_link(listed, tmp_path):
    out = tmp_path / "list.csv"
    listed.ok("subscribers", "export", "--out", str(out))
    assert mode(out) == 0o600 and "ann@example.org" in out.read_text()
    # An existing file is replaced whole (a new file renamed over it), not rewritten in place.
    out.chmod(0o644)
    old_copy = tmp_path / "hard-link-to-the-old-export"
    os.link(out, old_copy)
    listed.ok("subscribers", "export", "--json", "--out", str(out))
    assert mode(out) == 0o600 and out.read_text().startswith("[")
    assert old_copy.read_text().startswith("email,")

    for command in (["export"], ["export-data", "ann@example.org", "--yes"]):
        link = tmp_path / f"{command[0]}-link"
        target = planted_link(link, tmp_path)
        refused(listed.fails("subscribers", *command, "--out", str(link)), target)


def test_a_reject_file_is_private_and_never_written_through_a_link(tidings, tmp_path):
    source = tmp_path / "list.csv"
    source.write_text("email,name\nnot-an-address,Ann\nbob@example.org,Bob\n")
    rejects = tmp_path / "rejects.csv"
    importing = ("subscribers", "import", str(source), "--evidence", "paper form")
    tidings.fails(*importing, "--rejects", str(rejects), code=3)
    assert mode(rejects) == 0o600 and "not-an-address" in rejects.read_text()

    link = tmp_path / "rejects-link.csv"
    target = planted_link(link, tmp_path)
    refused(tidings.fails(*importing, "--rejects", str(link), code=2), target)


def dkim_generate(t: Tidings, folder: Path, *extra: str, ok: bool = True) -> str:
    args = ("dkim", "generate", "--selector", "s1", "--domain", "center.example.org")
    if ok:
        return t.ok(*args, "--out", str(folder), *extra).output
    return t.fails(*args, "--out", str(folder), *extra)


@pytest.mark.parametrize("name", ["s1.private", "s1.txt"])
def test_a_dkim_key_is_never_written_through_a_link(tidings_sqlite, tmp_path, name):
    folder = tmp_path / "dkim"
    target = planted_link(folder / name, tmp_path)
    refused(dkim_generate(tidings_sqlite, folder, "--force", ok=False), target)
    assert sorted(p.name for p in folder.iterdir()) == [name]  # no half of a key pair


def test_a_dkim_key_is_private_and_replaced_whole(tidings_sqlite, tmp_path):
    folder = tmp_path / "dkim"
    dkim_generate(tidings_sqlite, folder)
    key, record = folder / "s1.private", folder / "s1.txt"
    assert mode(key) == 0o600 and mode(record) == 0o600 and mode(folder) == 0o700
    old_key = key.read_bytes()
    os.link(key, tmp_path / "old-key")
    dkim_generate(tidings_sqlite, folder, "--force")
    assert key.read_bytes() != old_key and mode(key) == 0o600
    assert (tmp_path / "old-key").read_bytes() == old_key  # a new file, not the old one rewritten


@pytest.fixture
def with_kap(tidings_sqlite: Tidings, kap_sqlite: Path) -> Tidings:
    return load_kap(tidings_sqlite, lambda: kap_sqlite)


def test_previews_are_private_and_never_written_through_a_link(with_kap, tmp_path):
    one = tmp_path / "welcome.html"
    with_kap.ok("campaigns", "preview", "kap-benefits", "--out", str(one))
    assert mode(one) == 0o600 and "<html" in one.read_text()
    folder = tmp_path / "preview"
    with_kap.ok("campaigns", "preview", "kap-benefits", "--dir", str(folder))
    written = sorted(folder.iterdir())
    assert len(written) == 35 and {mode(p) for p in written} == {0o600}  # 17 x 2 + index

    link = tmp_path / "link.html"
    target = planted_link(link, tmp_path)
    refused(with_kap.fails("campaigns", "preview", "kap-benefits", "--out", str(link)), target)
    index = folder / "index.html"
    index.unlink()
    target = planted_link(index, tmp_path)
    refused(with_kap.fails("campaigns", "preview", "kap-benefits", "--dir", str(folder)), target)


def test_import_text_and_the_form_snippet_never_write_through_a_link(tidings_sqlite, tmp_path):
    """Neither holds anything private, but a link planted where they write could make them
    overwrite any file the operator may write."""
    source = tmp_path / "copy.txt"
    source.write_text("An introduction.\nA Heading\nIts paragraph.\n", encoding="utf-8")
    out = tmp_path / "imported"
    target = planted_link(out / "01-a-heading.md", tmp_path)
    output = tidings_sqlite.fails(
        "campaigns", "import-text", str(source), "--slug", "linked", "--out", str(out)
    )
    refused(output, target)

    snippet = tmp_path / "signup.html"
    target = planted_link(snippet, tmp_path)
    refused(tidings_sqlite.fails("form-snippet", "--out", str(snippet)), target)
    snippet.unlink()
    tidings_sqlite.ok("form-snippet", "--out", str(snippet))
    assert "<form" in snippet.read_text(encoding="utf-8") and not snippet.is_symlink()


# ----------------------------------------------------------------------------- 11. requests


@pytest.fixture
def web(sqlite_url: str) -> Iterator[tuple[WebServer, Runtime]]:
    """The app under waitress, as `tidings serve` runs it, on a free loopback port."""
    settings = Tidings(sqlite_url, "smtp://127.0.0.1:25").settings()
    with (
        Runtime.open(settings) as runtime,
        WebServer(create_app(runtime), "127.0.0.1", 0) as server,
    ):
        yield server, runtime


@pytest.fixture
def temporary_files(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every temporary file waitress makes to hold a request body (it spills there past
    512 KB)."""
    from waitress.buffers import TempfileBasedBuffer

    made: list[object] = []
    original = TempfileBasedBuffer.newfile

    def newfile(self: TempfileBasedBuffer) -> object:
        made.append(self)
        return original(self)

    monkeypatch.setattr(TempfileBasedBuffer, "newfile", newfile)
    return made


def send_until_answered(sock: socket.socket, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send the request head, then body chunks until the server answers; its answer."""
    sock.sendall(head)
    for chunk in chunks:
        if select.select([sock], [], [], 0)[0]:
            break
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    return answer


HUGE = 300 * 1024 * 1024


def test_a_huge_body_is_refused_before_it_is_read(web, temporary_files):
    server, _ = web
    head = (
        f"POST /api/subscribers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        f"\r\nContent-Length: {HUGE}\r\n\r\n"
    ).encode()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        answer = send_until_answered(sock, head, (b"x" * 65536 for _ in range(HUGE // 65536)))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert temporary_files == []


def test_a_huge_chunked_body_is_refused_as_it_arrives(web, temporary_files):
    server, _ = web
    head = (
        b"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        answer = send_until_answered(sock, head, (chunk for _ in range(HUGE // 0x10000)))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert temporary_files == []


def test_a_body_over_the_apps_limit_but_under_the_servers_gets_the_apps_page(web):
    server, _ = web
    body = b"email=" + b"a" * (MAX_BODY_BYTES // 2)
    head = (
        f"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 413 ") and b"Too much data" in answer


@pytest.mark.parametrize(
    "body",
    [
        '{"email": ' + "[" * 5000 + "]" * 5000 + "}",
        "[" * 5000 + "]" * 5000,
        '{"a": ' * 2000 + "1" + "}" * 2000,
    ],
    ids=["nested-field", "nested-array", "nested-objects"],
)
def test_deeply_nested_json_is_a_400_not_a_500(web, body):
    server, runtime = web
    with runtime.sessions.begin() as session:
        _, key = create_api_key(session, "site", runtime.clock.now())
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connection.request("POST", "/api/subscribers", body=body.encode(), headers=headers)
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    assert response.status == 400, answer
    assert "error" in json.loads(answer)
    with runtime.sessions.begin() as session:
        assert session.scalar(sql_select(func.count()).select_from(Subscriber)) == 0


# ----------------------------------------------------------------------------- 12. secrets

SHORT_KEYS = {"one letter": "k", "31 bytes": "x" * 31, "31 bytes of accents": "é" * 15 + "a"}


@pytest.mark.parametrize("key", SHORT_KEYS.values(), ids=SHORT_KEYS.keys())
def test_check_reports_a_short_secret_key_as_a_blocker(tidings_sqlite, key):
    output = tidings_sqlite.fails("check", TIDINGS_SECRET_KEY=key)
    (line,) = [x for x in output.splitlines() if x.startswith("FAIL  secret key")]
    assert f"{len(key.encode())} bytes is too short" in line and "at least 32" in line


@pytest.mark.parametrize("key", ["y" * 32, "é" * 16, None], ids=["32 bytes", "16 accents", "unset"])
def test_check_accepts_a_key_of_32_bytes_or_none(tidings_sqlite, key):
    output = tidings_sqlite("check", TIDINGS_SECRET_KEY=key).output
    assert "secret key" not in output


def test_send_due_refuses_a_short_secret_key(tidings_sqlite):
    output = tidings_sqlite.fails("send-due", TIDINGS_SECRET_KEY="k")
    assert "TIDINGS_SECRET_KEY: 1 bytes is too short to sign links safely" in output


@pytest.mark.slow
@pytest.mark.parametrize("command", [["run"], ["worker"], ["serve"]])
def test_run_worker_and_serve_refuse_to_start_with_a_short_secret_key(
    tidings_sqlite, smtp_server, command
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update({k: v for k, v in tidings_sqlite.env.items() if v is not None})
    env.update(TIDINGS_SECRET_KEY="k", TIDINGS_SMTP_URL=smtp_server.url)
    env["TIDINGS_WEB_PORT"] = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "tidings", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a process that started would run until stopped
    )
    assert done.returncode == 1, done.stderr
    assert "TIDINGS_SECRET_KEY: 1 bytes is too short to sign links safely" in done.stderr
    assert "running" not in done.stderr and "serving" not in done.stderr
    assert smtp_server.handler.messages == []
