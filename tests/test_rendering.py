"""Rendering: what a subscriber's mail client receives, parsed back with the stdlib.

Campaigns are real folders (written to tmp_path, or the shipped KAP campaign), compiled with
compile_campaign and rendered with MessageSkeleton, the code path real sends use.
"""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from tidings.campaigns import shipped_campaign_dir
from tidings.campaigns.definition import read_campaign
from tidings.campaigns.loading import campaign_sender, compile_campaign
from tidings.config import Settings
from tidings.db.models import Campaign
from tidings.errors import CampaignError
from tidings.rendering.compile import CompiledStep
from tidings.rendering.message import Addressee, MessageBuilder
from tidings.rendering.mime import MessageHeaders, MessageSkeleton, Recipient
from tidings.subscribers.tokens import Links, read_token

BASE_URL = "https://news.example.org"
SECRET = "test-secret-key"
POSTAL = "100 Example Street, Springfield"
SENT_AT = datetime(2026, 10, 19, 13, 0, tzinfo=UTC)
MAILTO = "mailto:unsubscribe@center.example.org?subject=unsubscribe%20k3y"
KAP_DIR = shipped_campaign_dir("kap-benefits")


def make_settings() -> Settings:
    return Settings(
        database_url="sqlite:///unused.db",
        transport="smtp",
        smtp_url="smtp://127.0.0.1:2525",
        base_url=BASE_URL,
        secret_key=SECRET,
        from_address="kap@center.example.org",
        from_name="Center for Counseling",
        organization="Center for Counseling",
        postal_address=POSTAL,
    )


CAMPAIGN_TOML = """\
slug = "hello"
name = "Hello series"

[footer]
reason = "You are receiving this because you asked {{ sender.organization }} for it."
disclaimer = "This email is information, not medical advice."
"""

FIRST_STEP = """\
+++
subject = "Hello there"
preheader = "A short hello"
+++
## Hello

Dear {{ subscriber.name }}, hi {{ subscriber.first_name }}.

Your address: {{ subscriber.email }}

[Leave the series]({{ unsubscribe_url }})
"""

SECOND_STEP = """\
+++
subject = "Grüße aus Köln – Teil 2"
preheader = "Noch ein Gruß"
+++
## Zweiter Gruß

Hallo {{ subscriber.first_name }} ({{ subscriber.name }}).
"""


def write_campaign(folder: Path, steps: dict[str, str], toml: str = CAMPAIGN_TOML) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "campaign.toml").write_text(toml, encoding="utf-8")
    for name, text in steps.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def hello(tmp_path: Path) -> list[CompiledStep]:
    folder = write_campaign(
        tmp_path / "hello", {"01-first.md": FIRST_STEP, "02-second.md": SECOND_STEP}
    )
    return [compiled for _, compiled in compile_campaign(read_campaign(folder), make_settings())]


def headers(**changes: str) -> MessageHeaders:
    values = {
        "from_name": "Center for Counseling",
        "from_address": "kap@center.example.org",
        "message_id": "20261019.1@center.example.org",
        "date": SENT_AT,
        "list_id": "hello.center.example.org",
        "list_name": "Hello series",
        "unsubscribe_mailto": MAILTO,
    }
    values.update(changes)
    return MessageHeaders(**values)  # type: ignore[arg-type]


def recipient(
    name: str = "Ann Lee",
    address: str = "ann@example.org",
    unsubscribe_url: str = f"{BASE_URL}/unsubscribe/tok3n",
) -> Recipient:
    return Recipient(
        email=address,
        name=name,
        unsubscribe_url=unsubscribe_url,
        preferences_url=f"{BASE_URL}/preferences/pr3fs",
    )


def render(
    compiled: CompiledStep, who: Recipient | None = None, head: MessageHeaders | None = None
) -> tuple[bytes, EmailMessage]:
    data = MessageSkeleton(compiled).render(who or recipient(), head or headers())
    return data, email.message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def header_lines(data: bytes, name: bytes) -> list[bytes]:
    """The raw physical lines of one header: its first line and its folded continuations."""
    raw = header_block(data).split(b"\r\n")
    start = next(i for i, line in enumerate(raw) if line.lower().startswith(name.lower() + b":"))
    end = start + 1
    while end < len(raw) and raw[end][:1] in (b" ", b"\t"):
        end += 1
    return raw[start:end]


def flat(text: str) -> str:
    return " ".join(text.split())


# ----------------------------------------------------------------------------- headers


def test_headers_and_structure_of_a_rendered_email(hello):
    data, message = render(hello[0])

    assert message["From"] == "Center for Counseling <kap@center.example.org>"
    assert message["To"].addresses[0].display_name == "Ann Lee"
    assert message["To"].addresses[0].addr_spec == "ann@example.org"
    assert message["Subject"] == "Hello there"
    assert parsedate_to_datetime(message["Date"]) == SENT_AT
    assert message["Message-ID"] == "<20261019.1@center.example.org>"
    assert message["List-Id"] == "Hello series <hello.center.example.org>"
    assert message["List-Unsubscribe"] == f"<{BASE_URL}/unsubscribe/tok3n>, <{MAILTO}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["MIME-Version"] == "1.0"

    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in message.iter_parts())
    text, html = parts(message)
    assert "Dear Ann Lee, hi Ann." in text
    assert "Your address: ann@example.org" in text
    assert "Dear Ann Lee, hi Ann." in html
    assert f'href="{BASE_URL}/unsubscribe/tok3n"' in html
    assert f"Leave the series: {BASE_URL}/unsubscribe/tok3n" in text.splitlines()
    assert not message.defects
    # Every header is there once.
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe"):
        assert len(message.get_all(name)) == 1, name
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")


def test_reply_to_is_written_when_the_sender_has_one(hello):
    _, message = render(hello[0], head=headers(reply_to="office@center.example.org"))
    assert message["Reply-To"] == "office@center.example.org"
    _, without = render(hello[0])
    assert without["Reply-To"] is None


def test_long_unsubscribe_url_is_neither_encoded_nor_folded_inside_a_uri(hello):
    url = f"{BASE_URL}/unsubscribe/" + "Ab3-_" * 70  # 340 characters of token
    assert len(url) > 300
    data, message = render(hello[0], recipient(unsubscribe_url=url))

    lines = header_lines(data, b"List-Unsubscribe")
    assert b"=?" not in b"".join(lines)
    # Folded only at the comma between the two URIs.
    assert lines == [
        b"List-Unsubscribe: <" + url.encode() + b">,",
        b" <" + MAILTO.encode() + b">",
    ]
    assert message["List-Unsubscribe"] == f"<{url}>, <{MAILTO}>"
    # RFC 5322: no line longer than 998 octets, in the headers or anywhere else.
    assert all(len(line) < 998 for line in data.split(b"\r\n"))
    text, html = parts(message)
    assert url in text
    assert f'href="{url}"' in html


def test_long_ascii_subject_is_folded_and_reads_back_unchanged(tmp_path):
    subject = "A rather long subject line " * 5 + "that must be folded somewhere"
    step = FIRST_STEP.replace('subject = "Hello there"', f'subject = "{subject.strip()}"')
    folder = write_campaign(tmp_path / "long", {"01-first.md": step})
    [(_, compiled)] = compile_campaign(read_campaign(folder), make_settings())
    data, message = render(compiled)
    assert message["Subject"] == subject.strip()
    assert all(len(line) <= 78 for line in header_lines(data, b"Subject"))
    assert b"=?" not in b"".join(header_lines(data, b"Subject"))


# ----------------------------------------------------------------------------- personal values


def test_html_in_a_name_is_escaped_in_html_and_literal_in_text(hello):
    _, message = render(hello[0], recipient(name="<b>Ann</b> & Co"))
    text, html = parts(message)
    assert "Dear &lt;b&gt;Ann&lt;/b&gt; &amp; Co, hi &lt;b&gt;Ann&lt;/b&gt;." in html
    assert "<b>" not in html
    assert "Dear <b>Ann</b> & Co, hi <b>Ann</b>." in text
    assert message["To"].addresses[0].display_name == "<b>Ann</b> & Co"
    assert message["To"].addresses[0].addr_spec == "ann@example.org"


@pytest.mark.parametrize(
    "who, head",
    [
        (recipient(name="Ann\r\nBcc: evil@example.org"), headers()),
        (recipient(name="Ann\nBcc: evil@example.org"), headers()),
        (recipient(address="ann@example.org\r\nBcc: evil@example.org"), headers()),
        (
            recipient(unsubscribe_url=f"{BASE_URL}/u/x>\r\nBcc: evil@example.org\r\nX-A: <y"),
            headers(),
        ),
        (recipient(), headers(from_name="Center\r\nBcc: evil@example.org")),
        (recipient(), headers(list_name="Hello\r\nBcc: evil@example.org")),
        (recipient(), headers(message_id="x@y>\r\nBcc: evil@example.org")),
    ],
    ids=["name-crlf", "name-lf", "email", "unsubscribe-url", "from-name", "list-name", "msgid"],
)
def test_line_breaks_in_values_cannot_inject_headers(hello, who, head):
    data, message = render(hello[0], who, head)
    assert message["Bcc"] is None
    assert len(message.get_all("To")) == 1
    assert not any(line.lower().startswith(b"bcc:") for line in header_block(data).split(b"\r\n"))
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


def test_a_name_with_line_breaks_is_one_line_in_the_body_and_to(hello):
    _, message = render(hello[0], recipient(name="Ann\r\nBcc: evil@example.org"))
    assert len(message["To"].addresses) == 1
    assert message["To"].addresses[0].addr_spec == "ann@example.org"
    text, _ = parts(message)
    assert "Dear Ann Bcc: evil@example.org, hi Ann." in text


@pytest.mark.parametrize("name, first", [("Zoë Ünal", "Zoë"), ("José", "José")])
def test_non_ascii_names_round_trip(hello, name, first):
    data, message = render(hello[0], recipient(name=name))
    assert data.isascii()  # 7-bit clean: encoded words and quoted-printable
    assert message["To"].addresses[0].display_name == name
    assert message["To"].addresses[0].addr_spec == "ann@example.org"
    text, html = parts(message)
    assert f"Dear {name}, hi {first}." in text
    assert f"Dear {name}, hi {first}." in html


def test_non_ascii_subject_is_encoded_and_decodes_back(hello):
    data, message = render(hello[1], recipient(name="Zoë Ünal"))
    subject_lines = header_lines(data, b"Subject")
    assert subject_lines[0].lower().startswith(b"subject: =?utf-8?")
    assert all(len(line) <= 78 for line in subject_lines)
    assert message["Subject"] == "Grüße aus Köln – Teil 2"
    text, html = parts(message)
    assert "Hallo Zoë (Zoë Ünal)." in text
    assert "Zweiter Gruß" in html


def test_html_is_inlined_and_fully_personalized(hello):
    for compiled in hello:
        _, message = render(compiled)
        text, html = parts(message)
        assert re.search(r"<h2 style=\"[^\"]*font-family", html), "CSS was not inlined"
        assert re.search(r"<p style=\"[^\"]*margin", html)
        for part in (text, html):
            assert "{{" not in part and "}}" not in part and "{%" not in part
            assert "TIDINGSVAR" not in part.upper()
        assert "<img" not in html.lower()


# ----------------------------------------------------------------------------- template errors

BAD_STEP = """\
+++
subject = "Hello"
+++
## Title

Some text.

{bad}
"""  # `{bad}` is on line 8 of the file


@pytest.mark.parametrize(
    "bad, words",
    [
        ("Hi {{ nope }}", "nope"),
        ("Hi {{ subscriber.name }", "expected"),
        ("{% if subscriber.name %}Hi{% endif %}", "condition"),
        ("Hi {{ subscriber.name | lower }}", "filter"),
    ],
    ids=["unknown-variable", "syntax-error", "condition-on-personal-value", "filter-lower"],
)
def test_template_errors_name_the_file_and_line(tmp_path, bad, words):
    folder = write_campaign(
        tmp_path / "bad",
        {"01-good.md": FIRST_STEP, "02-bad.md": BAD_STEP.replace("{bad}", bad)},
    )
    with pytest.raises(CampaignError) as caught:
        compile_campaign(read_campaign(folder), make_settings())
    problems = caught.value.problems
    assert len(problems) == 1, problems
    assert problems[0].startswith("02-bad.md:8: "), problems
    assert words in problems[0]


@pytest.mark.parametrize(
    "bad", ["Hi {{ subscriber.name | upper }}", "Hi {{ subscriber.email | length }}"]
)
def test_other_filters_on_personal_values_are_refused_too(tmp_path, bad):
    # A filter cannot act on a value that is only known at send time: refusing it is the
    # only honest outcome (not a crash, and not an email that silently ignores the filter).
    folder = write_campaign(tmp_path / "bad", {"01-bad.md": BAD_STEP.replace("{bad}", bad)})
    with pytest.raises(CampaignError) as caught:
        compile_campaign(read_campaign(folder), make_settings())
    assert caught.value.problems[0].startswith("01-bad.md:8: "), caught.value.problems


def test_error_in_the_subject_names_the_subject_line(tmp_path):
    step = '+++\npreheader = "Hello"\nsubject = "Hi {{ subscriber.first_name }}"\n+++\nBody\n'
    folder = write_campaign(tmp_path / "bad", {"01-bad.md": step})
    with pytest.raises(CampaignError) as caught:
        compile_campaign(read_campaign(folder), make_settings())
    assert caught.value.problems[0].startswith("01-bad.md:3: "), caught.value.problems


def test_error_in_the_footer_names_campaign_toml_and_line(tmp_path):
    toml = CAMPAIGN_TOML.replace("not medical advice.", "{{ sender.nothing }}")
    folder = write_campaign(tmp_path / "bad", {"01-first.md": FIRST_STEP}, toml=toml)
    with pytest.raises(CampaignError) as caught:
        compile_campaign(read_campaign(folder), make_settings())
    assert caught.value.problems[0].startswith("campaign.toml:6: "), caught.value.problems


# ----------------------------------------------------------------------------- shipped KAP


@pytest.fixture(scope="module")
def kap_emails() -> list[tuple[str, CompiledStep, EmailMessage]]:
    """Every KAP email, as the dispatcher builds it for one subscriber."""
    assert KAP_DIR is not None
    settings = make_settings()
    definition = read_campaign(KAP_DIR)
    compiled = compile_campaign(definition, settings)
    campaign = Campaign(
        slug=definition.slug,
        name=definition.name,
        definition={"sender": campaign_sender(settings, definition.sender).__dict__},
    )
    builder = MessageBuilder(settings, Links(settings.public_base_url, SECRET))
    to = Addressee("ann@example.org", "Ann Lee", "k3yk3yk3yk3yk3yk3yk3yk")
    out = []
    for number, (source, step) in enumerate(compiled):
        data = builder.step_message(campaign, step, to, f"{number}@center.example.org", SENT_AT)
        out.append((source.key, step, email.message_from_bytes(data, policy=policy.default)))
    return out


def test_kap_has_welcome_then_the_fourteen_benefits_in_source_order_then_closing():
    assert KAP_DIR is not None
    definition = read_campaign(KAP_DIR)
    lines = [
        line.strip()
        for line in (KAP_DIR / "SOURCE.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    benefits = list(zip(lines[1:-1:2], lines[2:-1:2], strict=True))
    assert len(benefits) == 14
    assert len(definition.steps) == 17
    assert definition.steps[0].key == "welcome"
    assert definition.steps[2].key == "risks-and-screening"  # the campaign's own, not the client's
    assert definition.steps[-1].key == "closing"
    client_steps = [s for s in definition.steps[1:-1] if s.key != "risks-and-screening"]
    for step, (heading, paragraph) in zip(client_steps, benefits, strict=True):
        assert f"# {heading}\n" in step.body, (step.file, heading)
        assert flat(paragraph) in flat(step.body), step.file
    assert flat(lines[-1]) in flat(definition.steps[-1].body)


def test_every_kap_email_carries_the_required_footer_in_both_parts(kap_emails):
    assert len(kap_emails) == 17
    for key, _, message in kap_emails:
        text, html = parts(message)
        for name, part in (("text", text), ("html", html)):
            where = f"{key} ({name})"
            flat_part = flat(part)
            assert POSTAL in flat_part, where
            assert "988" in flat_part and "988lifeline.org" in flat_part, where
            assert "911" in flat_part, where
            assert "not medical advice" in flat_part, where
            assert "screening" in flat_part, where
            assert "You signed up for these emails" in flat_part, where
        for kind, scope in (("unsubscribe", "unsubscribe"), ("preferences", "preferences")):
            found = re.search(rf'href="{re.escape(BASE_URL)}/{kind}/([^"/]+)"', html)
            assert found, (key, kind)
            assert read_token(SECRET, scope, found.group(1)) == "k3yk3yk3yk3yk3yk3yk3yk"
            assert f"{BASE_URL}/{kind}/{found.group(1)}" in text, (key, kind)
        assert "<img" not in html.lower(), key
        assert "TIDINGSVAR" not in (text + html).upper(), key
        assert "{{" not in text + html, key


def test_suicidal_ideation_email_opens_with_the_crisis_line(kap_emails):
    [message] = [m for key, _, m in kap_emails if key == "reduction-in-suicidal-ideation"]
    text, html = parts(message)
    for part in (text, html):
        heading = part.index("Reduction in Suicidal Ideation")
        assert part.index("988") < heading
        assert part.index("988lifeline.org") < heading
        assert part.index("911") < heading
    body = html[html.index("<body") :]
    assert body.index("988") < body.index("<h1")


def test_no_subject_or_preheader_mentions_suicide(kap_emails):
    for key, compiled, message in kap_emails:
        assert "suicid" not in compiled.subject.lower(), key
        assert "suicid" not in compiled.preheader.lower(), key
        assert "suicid" not in message["Subject"].lower(), key
        _, html = parts(message)
        preheader = re.search(r'<div class="preheader"[^>]*>(.*?)</div>', html, re.S)
        assert preheader is not None, key
        assert "suicid" not in preheader.group(1).lower(), key


# ----------------------------------------------------------------------------- the letter


LETTER_TOML = (
    'client_copy = "SOURCE.txt"\n'
    + CAMPAIGN_TOML
    + """
[letter]
greeting = "Dear {first_name},"
greeting_fallback = "Hello,"
signoff = "With care,"
signature = "The care team"

[contact]
phone = "+1 555 0100"
website = "https://center.example.org"
booking_url = "https://center.example.org/book"
office_hours = "Monday to Friday, 9:00 to 17:00"
"""
)

FRAMED_STEP = '''\
+++
subject = "A framed email"
preheader = "What the letter carries"
research = """Small studies only (Dore et al., 2019)."""
next_step = { text = "Book a call", url = "{{ contact.booking_url }}" }
send_window = false
+++
## The client's heading

The client's paragraph.
'''


def test_the_letter_contact_and_framing_fields_are_read(tmp_path):
    folder = write_campaign(tmp_path / "framed", {"01-framed.md": FRAMED_STEP}, toml=LETTER_TOML)
    (folder / "SOURCE.txt").write_text("The client's heading\nThe client's paragraph.\n")
    definition = read_campaign(folder)
    assert definition.letter["greeting_fallback"] == "Hello,"
    assert definition.contact["booking_url"] == "https://center.example.org/book"
    assert definition.client_copy == "SOURCE.txt"
    [step] = definition.steps
    assert step.research == "Small studies only (Dore et al., 2019)."
    assert (step.next_step.text, step.next_step.url) == ("Book a call", "{{ contact.booking_url }}")
    assert step.send_window is False
    assert definition.as_stored()["contact"] == definition.contact


@pytest.mark.parametrize(
    ("change", "where", "words"),
    [
        (("[contact]", "[contact]\nfax = '1'"), "campaign.toml:", "unknown [contact] field"),
        (('website = "https://', 'website = "ftp://'), "campaign.toml:", "contact.website"),
        (('client_copy = "SOURCE.txt"', 'client_copy = "NOPE.txt"'), "campaign.toml:", "NOPE"),
        (("[letter]", "[schedule]\nskip_holidays = 'usa'\n[letter]"), "campaign.toml:", "code"),
    ],
)
def test_bad_letter_and_contact_fields_name_their_line(tmp_path, change, where, words):
    toml = LETTER_TOML.replace(*change)
    folder = write_campaign(tmp_path / "bad", {"01-framed.md": FRAMED_STEP}, toml=toml)
    (folder / "SOURCE.txt").write_text("x\n")
    with pytest.raises(CampaignError) as caught:
        read_campaign(folder)
    assert any(p.startswith(where) and words in p for p in caught.value.problems), caught.value


def test_a_next_step_needs_its_text_and_url(tmp_path):
    step = FRAMED_STEP.replace(', url = "{{ contact.booking_url }}"', "")
    folder = write_campaign(tmp_path / "bad", {"01-framed.md": step}, toml=LETTER_TOML)
    (folder / "SOURCE.txt").write_text("x\n")
    with pytest.raises(CampaignError) as caught:
        read_campaign(folder)
    assert caught.value.problems == [
        '01-framed.md:5: next_step: expected { text = "...", url = "https://..." }'
    ]
