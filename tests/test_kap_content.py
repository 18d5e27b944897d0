"""What the shipped KAP series says, read as its reader gets it: every email test-sent through
a real SMTP server from a database where the campaign is loaded, and its text and html parts
read back. CONTENT.md "What every email of a series is" and issue 12 points 1, 2, 3 and 10."""

from __future__ import annotations

import re
import shutil
import tomllib
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cli_helpers import Tidings
from conftest import received

from tidings.campaigns import SHIPPED_DIR
from tidings.campaigns.definition import read_campaign
from tidings.campaigns.importtext import parse_text
from tidings.campaigns.lint.words import CONDITION, EFFICACY
from tidings.sending.devsmtp import LocalSMTPServer, MemoryHandler

KAP_DIR = SHIPPED_DIR / "kap-benefits"
DEFINITION = read_campaign(KAP_DIR)
STEPS = {step.key: step for step in DEFINITION.steps}
CLIENT = parse_text((KAP_DIR / "SOURCE.txt").read_text(encoding="utf-8"))
# The client's benefits: files 01-14 (01a, the risks email, and 00 and 99 are the campaign's).
BENEFIT_KEYS = [
    p.stem[3:] for p in sorted(KAP_DIR.glob("*.md")) if re.match(r"(0[1-9]|1[0-4])-", p.name)
]
# Words a subject or preheader must not use to promise an outcome (they show on lock screens
# with nothing beside them): the lint's efficacy phrases and the client's own claim words.
OUTCOME_PROMISE = re.compile(
    rf"{EFFICACY.pattern}|\beffective\b|\breli(?:ef|eve)\b|\bcures?\b|\bheal(?:s|ed|ing)?\b",
    re.IGNORECASE,
)


class _Text(HTMLParser):
    """The words of an html part as a reader sees them (no head, no hidden preheader)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.words: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("head", "style", "title"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("head", "style", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.words.append(data)


def words(text: str) -> str:
    """Text with its line breaks and runs of spaces as single spaces (a wrapped plain-text
    line breaks inside a paragraph, after a hyphen too)."""
    return " ".join(re.sub(r"-\s*\n\s*", "-", text).split())


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text part, html part's visible text), each as words()."""
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    reader = _Text()
    reader.feed(html.get_content())
    return words(text.get_content()), words(" ".join(reader.words))


@pytest.fixture(scope="module")
def sent(kap_sqlite: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, EmailMessage]:
    """Every email of the series as it arrives, by step key: `campaigns test-send --step all`
    from a database where the shipped campaign is loaded."""
    database = tmp_path_factory.mktemp("kap-content") / "tidings.db"
    shutil.copy(kap_sqlite, database)
    with LocalSMTPServer(MemoryHandler()) as server:
        tidings = Tidings(f"sqlite:///{database}", server.url)
        tidings.ok(
            "campaigns", "test-send", "kap-benefits", "--to", "ann@example.org", "--step", "all"
        )
        messages = received(server)
        steps = tidings.json("campaigns", "show", "kap-benefits")["steps"]
    by_subject = {str(m["Subject"]): m for m in messages}
    assert len(by_subject) == len(steps) == len(DEFINITION.steps), "one email per step"
    return {s["key"]: by_subject[s["subject"]] for s in steps}


# ----------------------------------------------------------------------------- 1. the copy


def test_every_benefit_of_the_clients_copy_is_one_email_in_order():
    assert len(CLIENT.sections) == 14
    assert [
        re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") for heading, _ in CLIENT.sections
    ] == BENEFIT_KEYS
    assert DEFINITION.client_copy == "SOURCE.txt"
    assert (KAP_DIR / "SOURCE.txt").read_bytes() == (
        Path(__file__).resolve().parents[2] / "shared" / "seed" / "kap-benefits.txt"
    ).read_bytes(), "SOURCE.txt is the client's file as they sent it"


def test_each_heading_and_paragraph_is_word_for_word_in_both_parts(sent):
    for key, (heading, paragraph) in zip(BENEFIT_KEYS, CLIENT.sections, strict=True):
        text, html = parts(sent[key])
        for part, name in ((text, "text"), (html, "html")):
            assert words(heading) in part, f"{key}: heading not in the {name} part"
            assert words(paragraph) in part, f"{key}: paragraph not verbatim in the {name} part"
        html_part = sent[key].get_body(("html",))
        assert html_part is not None
        assert re.search(rf"<h1\b[^>]*>\s*{re.escape(heading)}\s*</h1>", html_part.get_content())


def test_the_welcome_and_the_closing_keep_the_clients_introduction_and_closing_words(sent):
    assert words(" ".join(CLIENT.intro)) in parts(sent["welcome"])[0]
    assert words(" ".join(CLIENT.outro)) in parts(sent["closing"])[0]


def test_each_benefit_email_frames_the_copy_with_research_and_one_next_step():
    for key in BENEFIT_KEYS:
        step = STEPS[key]
        assert step.research, f"{key}: no research paragraph"
        assert re.search(r"\([^()]*\b(?:19|20)\d\d\)", step.research), f"{key}: no source named"
        assert step.next_step is not None, f"{key}: no next step"


# ----------------------------------------------------------------------------- 2. balance


def test_the_risks_email_comes_early_and_says_what_a_reader_must_know(sent):
    keys = [step.key for step in DEFINITION.steps]
    assert keys.index("risks-and-screening") in (1, 2), "second or third email"
    step = STEPS["risks-and-screening"]
    assert step.subject == "Is KAP right for me? Risks, screening and who it is not for"
    text, html = parts(sent["risks-and-screening"])
    for said in (
        "The FDA has not approved ketamine for depression or any other mental health use",
        "Using it that way is called off-label use.",
        "Spravato",
        "Before any treatment, a clinician meets with you.",
        "Do not drive until the next day",
        "Ketamine can be misused.",
        "A history of psychosis.",
        "High blood pressure that is not under control.",
        "A pregnancy.",
        "A clinician decides with you, after screening.",
    ):
        assert said in text and said in html, said


def test_the_medication_email_sends_the_reader_to_their_prescriber(sent):
    text, html = parts(sent["reduced-dependence-on-long-term-medication"])
    for said in (
        "Do not stop or change a medication without talking with your prescriber.",
        "No trial has shown that KAP lets people stop their medication.",
    ):
        assert said in text and said in html, said
    assert text.index("talking with your prescriber") > text.index("medication dependency")


def test_the_email_on_suicidal_thoughts_opens_with_the_crisis_line_and_is_discreet(sent):
    key = "reduction-in-suicidal-ideation"
    step = STEPS[key]
    assert step.crisis_at_top
    message = sent[key]
    text, _ = parts(message)
    assert text.index("988") < text.index("Reduction in Suicidal Ideation"), "crisis line first"
    for said in (
        "Ketamine is not a crisis or emergency treatment.",
        "Other treatments and support help too",
        "That is not proof that it lowers the risk of suicide.",
    ):
        assert said in text, said
    lock_screen = f"{message['Subject']} {step.preheader}"
    assert not re.search(r"suicid", lock_screen, re.IGNORECASE)


def test_no_subject_or_preheader_names_a_condition_or_promises_an_outcome(sent):
    for step in DEFINITION.steps:
        for name, value in (("subject", step.subject), ("preheader", step.preheader)):
            assert value, f"{step.file}: no {name}"
            assert not CONDITION.search(value), f"{step.file}: {name} {value!r}"
            assert not OUTCOME_PROMISE.search(value), f"{step.file}: {name} {value!r}"
        assert str(sent[step.key]["Subject"]) == step.subject
    assert "Effective" not in STEPS["effective-for-treatment-resistant-conditions"].subject


def test_preheaders_are_written_for_the_inbox_not_cut_from_the_first_sentence():
    for step in DEFINITION.steps:
        assert not step.preheader.endswith("…"), step.file
        first_line = next(line for line in step.body.splitlines() if line and line[0] != "#")
        assert not first_line.startswith(step.preheader.rstrip(".…")), step.file


# ----------------------------------------------------------------------------- welcome, closing


def test_the_welcome_goes_at_once_and_says_what_comes_and_how_to_leave(sent):
    welcome = STEPS["welcome"]
    assert welcome is DEFINITION.steps[0]
    assert welcome.send_window is False and welcome.delay_seconds == 0
    text, _ = parts(sent["welcome"])
    more = len(DEFINITION.steps) - 1
    assert f"After this email, we will send you {more} more." in text
    assert "one every two to three days, on weekdays only" in text
    assert "risks, screening, and who KAP may not suit" in text
    assert "You can pause the series or leave it at any time." in text


# ----------------------------------------------------------------------------- 3. contact


def test_the_shipped_campaign_says_how_to_reach_the_center():
    """The client gave no phone or web address: the shipped values are placeholders that
    work, marked for replacement (campaign.toml); none may be missing."""
    contact = tomllib.loads((KAP_DIR / "campaign.toml").read_text(encoding="utf-8"))["contact"]
    assert set(contact) == {"phone", "website", "booking_url", "office_hours"}
    assert DEFINITION.contact == contact
    for name in ("phone", "website", "booking_url", "office_hours"):
        assert contact[name].strip(), f"[contact] {name} is empty"
    assert re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", contact["phone"])
    for name in ("website", "booking_url"):
        assert contact[name].startswith("https://"), name
    raw = (KAP_DIR / "campaign.toml").read_text(encoding="utf-8")
    table = raw.index("\n[contact]\n")
    assert "Replace" in raw[table - 400 : table], "a comment says to replace the placeholders"


def test_the_closing_email_is_a_call_to_action(sent):
    closing = STEPS["closing"]
    assert closing is DEFINITION.steps[-1]
    assert closing.next_step is not None
    assert closing.next_step.url == "{{ contact.booking_url }}"
    text, html = parts(sent["closing"])
    for value in (DEFINITION.contact["phone"], DEFINITION.contact["office_hours"]):
        assert value in text and value in html, value


# ----------------------------------------------------------------------------- 10. review


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", words(text)) if s]


def test_every_research_sentence_is_listed_for_the_clinician_in_review_md():
    review = words((KAP_DIR / "REVIEW.md").read_text(encoding="utf-8"))
    for step in DEFINITION.steps:
        for sentence in sentences(step.research):
            assert sentence in review, f"{step.file}: not in REVIEW.md: {sentence!r}"
        if step.next_step is not None:
            assert step.next_step.text in review, f"{step.file}: next step not in REVIEW.md"


def test_every_sentence_of_the_risks_welcome_and_closing_emails_is_in_review_md():
    review = words((KAP_DIR / "REVIEW.md").read_text(encoding="utf-8"))
    client = {words(p) for p in [*CLIENT.intro, *CLIENT.outro]}
    for key in ("welcome", "risks-and-screening", "closing"):
        for paragraph in re.split(r"\n\s*\n", STEPS[key].body):
            text = re.sub(r"^- ", "", paragraph.strip(), flags=re.M)
            if not text or text.startswith("#") or words(text) in client:
                continue
            for sentence in sentences(text.replace("\n", " ")):
                assert sentence in review, f"{key}: not in REVIEW.md: {sentence!r}"
