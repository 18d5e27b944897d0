"""DKIM: `tidings dkim generate` writes a key and prints the record; with it configured every
message (series emails, confirmations, previews) is signed, and dkimpy's own verifier accepts
the signature given the printed TXT record (the one thing mocked: DNS, which this machine
does not have).
"""

from __future__ import annotations

import re
import stat
from datetime import UTC, datetime

import dkim
import pytest
from cli_helpers import Tidings

REQUIRED = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
}


def generate(t: Tidings, folder, selector="s2026", domain="center.example.org") -> str:
    """Run `tidings dkim generate`; returns the TXT record it printed."""
    out = t.ok(
        "dkim", "generate", "--selector", selector, "--domain", domain, "--out", str(folder)
    ).output
    record = re.search(r"^  (v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]+)$", out, re.MULTILINE)
    assert record, out
    assert f"{selector}._domainkey.{domain}" in out
    return record.group(1)


def dns_returning(record: str, asked: list[bytes]):
    """dkimpy's dnsfunc: answers the TXT query for the test key, and notes what was asked."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return record.encode()

    return dnsfunc


def signature_tags(message: bytes) -> dict[str, str]:
    header = re.search(rb"^DKIM-Signature: (.*?)\r\n(?! )(?!\t)", message, re.DOTALL | re.MULTILINE)
    assert header, message[:500]
    flat = re.sub(r"\s+", "", header.group(1).decode())
    return dict(part.split("=", 1) for part in flat.split(";") if part)


def test_generate_writes_a_private_key_and_the_record(database_url, smtp_server, tmp_path):
    t = Tidings(database_url, smtp_server.url)
    record = generate(t, tmp_path / "dkim")
    key = tmp_path / "dkim" / "s2026.private"
    assert key.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    zone = (tmp_path / "dkim" / "s2026.txt").read_text()
    assert zone.startswith("s2026._domainkey.center.example.org. IN TXT (")
    # Quoted strings of at most 255 characters that join into the record.
    assert "".join(re.findall(r'"([^"]*)"', zone)) == record
    assert all(len(s) <= 255 for s in re.findall(r'"([^"]*)"', zone))

    # A second key for the same selector would break the published record.
    assert "exists" in t.fails(
        "dkim",
        "generate",
        "--selector",
        "s2026",
        "--domain",
        "center.example.org",
        "--out",
        str(tmp_path / "dkim"),
    )
    assert "expected a domain name" in t.fails(
        "dkim",
        "generate",
        "--selector",
        "s1",
        "--domain",
        "not a domain",
        "--out",
        str(tmp_path / "x"),
    )


def test_every_message_is_signed_and_verifies_with_the_published_record(
    database_url, smtp_server, tmp_path
):
    t = Tidings(database_url, smtp_server.url)
    record = generate(t, tmp_path / "dkim")
    t.env.update(
        TIDINGS_DKIM_SELECTOR="s2026",
        TIDINGS_DKIM_PRIVATE_KEY=str(tmp_path / "dkim" / "s2026.private"),
    )
    t.ok("campaigns", "load", "kap-benefits")
    t.ok("subscribers", "add", "ann@example.org", "--timezone", "UTC")  # confirmation email
    t.ok(
        "subscribers",
        "add",
        "bob@example.org",
        "--confirmed",
        "--evidence",
        "form",
        "--timezone",
        "UTC",
    )
    t.at(datetime(2026, 10, 19, 9, 0, tzinfo=UTC))
    t.ok("send-due")
    messages = [data for _, _, data in smtp_server.handler.messages]
    assert len(messages) == 2  # Ann's confirmation, Bob's welcome

    for data in messages:
        asked: list[bytes] = []
        assert dkim.verify(data, dnsfunc=dns_returning(record, asked)), data[:800]
        assert asked == [b"s2026._domainkey.center.example.org."]
        tags = signature_tags(data)
        assert tags["c"] == "relaxed/relaxed" and tags["a"] == "rsa-sha256"
        assert tags["d"] == "center.example.org" and tags["s"] == "s2026"
        assert set(tags["h"].lower().split(":")) >= REQUIRED

        # Any change to a signed header or to the body breaks it.
        tampered_subject = re.sub(rb"\r\nSubject: ", b"\r\nSubject: Re: ", data, count=1)
        assert not dkim.verify(tampered_subject, dnsfunc=dns_returning(record, []))
        tampered_body = data.replace(b"988", b"989", 1)
        assert not dkim.verify(tampered_body, dnsfunc=dns_returning(record, []))
        # Relaxed canonicalization: a relay that refolds headers does not break it.
        refolded = data.replace(b"\r\nList-Unsubscribe-Post: ", b"\r\nList-Unsubscribe-Post:  ")
        assert dkim.verify(refolded, dnsfunc=dns_returning(record, []))

    # The preview of the whole message is what a send would be: signed too.
    eml = t.ok("campaigns", "preview", "kap-benefits", "--format", "eml").stdout_bytes
    assert dkim.verify(eml, dnsfunc=dns_returning(record, []))


def test_a_key_of_another_domain_does_not_verify(database_url, smtp_server, tmp_path):
    t = Tidings(database_url, smtp_server.url)
    generate(t, tmp_path / "dkim")
    other = generate(t, tmp_path / "other", selector="s2026")
    t.env.update(
        TIDINGS_DKIM_SELECTOR="s2026",
        TIDINGS_DKIM_PRIVATE_KEY=str(tmp_path / "dkim" / "s2026.private"),
    )
    t.ok("campaigns", "load", "kap-benefits")
    eml = t.ok("campaigns", "preview", "kap-benefits", "--format", "eml").stdout_bytes
    assert not dkim.verify(eml, dnsfunc=dns_returning(other, []))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIDINGS_DKIM_SELECTOR": "s2026"}, "TIDINGS_DKIM_SELECTOR and TIDINGS_DKIM_PRIVATE_KEY"),
        (
            {"TIDINGS_DKIM_SELECTOR": "s2026", "TIDINGS_DKIM_PRIVATE_KEY": "/nonexistent/key"},
            "TIDINGS_DKIM_PRIVATE_KEY: cannot read /nonexistent/key",
        ),
    ],
)
def test_a_broken_dkim_setting_stops_sending_with_a_clear_message(
    database_url, smtp_server, env, message
):
    t = Tidings(database_url, smtp_server.url)
    t.ok("campaigns", "load", "kap-benefits")
    for command in (
        ("subscribers", "add", "ann@example.org"),
        ("send-due",),
        ("campaigns", "test-send", "kap-benefits", "--to", "me@example.org"),
    ):
        assert message in t.fails(*command, **env)
    assert smtp_server.handler.messages == []  # nothing goes out unsigned
