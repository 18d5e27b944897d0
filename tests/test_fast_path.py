"""The fast path (compile once, fill in per reader) against the slow path (Jinja, Markdown,
premailer and EmailMessage for every reader): same headers, same decoded html and text."""

from __future__ import annotations

import email
import quopri
import re
import textwrap
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from tidings.campaigns import SHIPPED_DIR
from tidings.campaigns.definition import read_campaign
from tidings.campaigns.loading import campaign_context, campaign_sender, compile_campaign
from tidings.config import Settings
from tidings.rendering.mime import MessageHeaders, MessageSkeleton, Recipient
from tidings.rendering.reference import render_message_naive

SETTINGS = Settings(
    postal_address="100 Example Street, Springfield",
    base_url="https://news.example.org",
    from_address="kap@center.example.org",
    organization="Center for Counseling",
)
HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
NAMES = [
    "Ann",
    "José Ñúñez-Ünal",
    'Ann "Nan" O\'Brien',
    "<b>Ann</b> & Co",
    "Zoë Müller-Lüdenscheidt Østergård Þórsdóttir Ðặng Thị Hồng Nhung",
    "Łukasz 李小龍 محمد",
    "Ann\r\nBcc: evil@example.org",
]
LONG_URL = "https://news.example.org/unsubscribe/" + "a1B2" * 80 + ".mac"


def personal_campaign(tmp_path: Path) -> Path:
    """A campaign that prints every personal value in body, links and footer."""
    (tmp_path / "campaign.toml").write_text(
        textwrap.dedent("""\
        slug = "personal"
        name = "Personal test"
        [footer]
        reason = "You signed up as {{ subscriber.email }}, {{ subscriber.first_name }}."
        crisis = "Call or text **988**."
        """),
        encoding="utf-8",
    )
    (tmp_path / "01-hello.md").write_text(
        textwrap.dedent("""\
        +++
        subject = "Hello there, a subject long enough to be folded over two header lines, surely"
        preheader = "A preheader"
        +++
        ## Dear {{ subscriber.first_name }}

        Your full name is **{{ subscriber.name }}** and your address {{ subscriber.email }}.
        [Leave]({{ unsubscribe_url }}) or [change]({{ preferences_url }}) at any time.

        """)
        + "A long paragraph of plain text that goes on. " * 40
        + "\n",
        encoding="utf-8",
    )
    return tmp_path


def compiled_steps(folder: Path):
    definition = read_campaign(folder)
    context = campaign_context(definition, SETTINGS)
    sender = campaign_sender(SETTINGS, definition.sender)
    return [
        (source, compiled, context, sender)
        for source, compiled in compile_campaign(definition, SETTINGS)
    ]


def both_paths(source, compiled, context, sender, recipient):
    headers = MessageHeaders(
        "Center for Counseling Ü",
        "kap@center.example.org",
        "0123abcd@center.example.org",
        datetime(2026, 10, 19, 9, tzinfo=UTC),
        "personal.center.example.org",
        "Personal test",
        "mailto:kap@center.example.org?subject=unsubscribe%20key",
    )
    fast = MessageSkeleton(compiled).render(recipient, headers)
    slow = render_message_naive(source, context, sender, recipient, headers)
    return fast, slow


def decoded_header(raw: bytes, name: str) -> str:
    """A header as RFC 2047 says to read it (encoded words joined, folding removed)."""
    value = email.message_from_bytes(raw)[name]
    return str(make_header(decode_header(value.replace("\r\n ", " ").replace("\n ", " "))))


def assert_same(fast: bytes, slow: bytes) -> None:
    for name in HEADERS:
        assert decoded_header(fast, name) == decoded_header(slow, name), name
    parsed_fast = email.message_from_bytes(fast, policy=policy.default)
    parsed_slow = email.message_from_bytes(slow, policy=policy.default)
    for kind in ("plain", "html"):
        assert (
            parsed_fast.get_body((kind,)).get_content()
            == parsed_slow.get_body((kind,)).get_content()
        ), kind


@pytest.mark.parametrize("name", NAMES)
def test_fast_and_slow_paths_agree_for_every_kind_of_name(tmp_path, name):
    ((source, compiled, context, sender),) = compiled_steps(personal_campaign(tmp_path))
    recipient = Recipient(
        "ann@example.org", name, LONG_URL, "https://news.example.org/preferences/key.mac"
    )
    fast, slow = both_paths(source, compiled, context, sender, recipient)
    assert_same(fast, slow)
    html = email.message_from_bytes(fast, policy=policy.default).get_body(("html",)).get_content()
    if "<b>" in name:
        assert "&lt;b&gt;Ann&lt;/b&gt; &amp; Co" in html and "<b>Ann" not in html


@pytest.mark.parametrize("number", range(16))
def test_fast_and_slow_paths_agree_on_every_kap_email(number):
    source, compiled, context, sender = compiled_steps(SHIPPED_DIR / "kap-benefits")[number]
    recipient = Recipient(
        "reader@example.org", "Zoë Ünal", LONG_URL, "https://news.example.org/preferences/key.mac"
    )
    assert_same(*both_paths(source, compiled, context, sender, recipient))


@pytest.mark.parametrize("name", NAMES)
def test_fast_output_is_valid_mime(tmp_path, name):
    ((source, compiled, context, sender),) = compiled_steps(personal_campaign(tmp_path))
    fast, _ = both_paths(
        source,
        compiled,
        context,
        sender,
        Recipient("ann@example.org", name, LONG_URL, LONG_URL + "p"),
    )
    head = fast.partition(b"\r\n\r\n")[0]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert b"\r\nBcc:" not in head
    assert b"\n" not in fast.replace(b"\r\n", b""), "only CRLF line ends"
    message = email.message_from_bytes(fast, policy=policy.default)
    for part in message.iter_parts():
        raw = part.get_payload(decode=False).encode("ascii")
        assert all(len(line) <= 76 for line in raw.split(b"\r\n")), "RFC 2045 line length"
        decoded = quopri.decodestring(raw).decode("utf-8").replace("\r\n", "\n")
        assert decoded == part.get_content().replace("\r\n", "\n")
    assert not message.defects


ATTACKS = ["x' onmouseover='alert(1)", 'x" onmouseover="alert(1)', "a'b\"c<d>&e"]


def attribute_campaign(tmp_path: Path) -> Path:
    """Personal values inside attributes, quoted both ways (lxml writes a value holding " between
    single quotes)."""
    personal_campaign(tmp_path)
    (tmp_path / "01-hello.md").write_text(
        textwrap.dedent("""\
        +++
        subject = "Hello"
        preheader = "A preheader"
        +++
        <span title='{{ subscriber.name }}'>one</span>
        <span title='Dear "{{ subscriber.first_name }}"' data-x="{{ subscriber.email }}">two</span>
        <span style="font-family:'Georgia'" title="{{ subscriber.name }}">three</span>
        """),
        encoding="utf-8",
    )
    return tmp_path


@pytest.mark.parametrize("name", NAMES + ATTACKS)
def test_both_paths_agree_on_values_in_attributes_and_escape_both_quotes(tmp_path, name):
    ((source, compiled, context, sender),) = compiled_steps(attribute_campaign(tmp_path))
    recipient = Recipient("ann@example.org", name, LONG_URL, LONG_URL + "p")
    fast, slow = both_paths(source, compiled, context, sender, recipient)
    assert_same(fast, slow)
    html = email.message_from_bytes(fast, policy=policy.default).get_body(("html",)).get_content()
    tags = re.findall(r"<span[^>]*>", html)
    assert len(tags) == 3 and all("onmouseover=" not in re.sub(r'"[^"]*"', "", t) for t in tags)
    assert "'" not in "".join(re.findall(r'title="([^"]*)"', html))  # written as &#39;
