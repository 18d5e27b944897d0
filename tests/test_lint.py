"""The content lint (CONTENT.md): each rule fires on what it is about, with its file and line,
and stays quiet on the near miss; errors block `campaigns load`, warnings do not; a
campaign can accept a phrase explicitly; the shipped KAP campaign is clean.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from cli_helpers import Tidings, on_sqlite_copy

from tidings.campaigns.definition import read_campaign, toml_line
from tidings.campaigns.lint import ERROR, WARNING, Finding, lint_campaign, lint_folder
from tidings.campaigns.loading import compile_campaign, resolve_campaign_dir
from tidings.config import Settings

SETTINGS = Settings(
    base_url="https://news.example.org",
    secret_key="lint",
    from_address="kap@center.example.org",
    organization="Center for Counseling",
    postal_address="100 Example Street, Springfield",
)
TOML = """\
slug = "lint-me"
name = "Lint me"
kind = "sequence"

[footer]
crisis = "If you are struggling or in crisis, call or text 988 or chat at [988lifeline.org](https://988lifeline.org)."
crisis_line = "Help is available 24/7: call or text 988."
disclaimer = "Educational information, not medical advice."
risk = "Ketamine treatment has risks and needs medical screening and monitoring."
reason = "You signed up at {{ sender.organization }}."

[lint]
require = ["crisis", "crisis_line", "disclaimer", "risk", "reason"]
"""
FRONT = 'subject = "A calm subject"\npreheader = "A calm preheader."\n'
BODY = "## A heading\n\nA first paragraph about therapy.\n\n{text}\n"
BODY_LINE_OF_TEXT = 9  # +++, 2 lines of front matter, +++, heading, blank, paragraph, blank
CRISIS_FRONT = FRONT + "crisis_at_top = true\n"  # one more line of front matter


def write(
    folder: Path, text: str = "A plain second paragraph.", front: str = FRONT, toml: str = TOML
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "campaign.toml").write_text(toml, encoding="utf-8")
    (folder / "01-email.md").write_text(
        f"+++\n{front}+++\n" + BODY.format(text=text), encoding="utf-8"
    )
    return folder


def lint(folder: Path, settings: Settings = SETTINGS) -> list[Finding]:
    definition = read_campaign(folder)
    return lint_campaign(definition, settings, compile_campaign(definition, settings))


def rules(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings}


def test_a_clean_campaign_has_no_findings(tmp_path):
    assert lint(write(tmp_path / "c")) == []


def test_the_shipped_kap_campaign_is_clean():
    assert lint(resolve_campaign_dir("kap-benefits")) == []


# ----------------------------------------------------------------------------- wording

WORDING = [
    # rule, fires on, the near miss that must not fire
    ("claim-cure", "Ketamine can cure depression.", "Keep your records secure."),
    ("claim-guarantee", "Results are guaranteed.", "Nobody can promise results."),
    ("claim-100-percent", "It works 100% of the time.", "It helped 60 of the 100 people."),
    ("claim-instant-relief", "Expect instant relief.", "Some people feel relief within days."),
    ("claim-no-side-effects", "It has no side effects.", "Side effects are usually brief."),
    ("claim-non-addictive", "Ketamine is non-addictive.", "Ketamine has misuse potential."),
    ("claim-prevents-suicide", "Ketamine prevents suicide.", "It may reduce suicidal thoughts."),
    (
        "claim-fda-ketamine",
        "Ketamine is FDA-approved for depression.",
        "The esketamine nasal spray is FDA-approved for depression.",
    ),
    ("stigma-committed-suicide", "Her brother committed suicide.", "Her brother died by suicide."),
    ("stigma-attempt", "It was a failed attempt.", "It was a suicide attempt."),
    ("sensational", "Depression is an epidemic.", "Depression is common."),
    (
        "suicide-as-way-out",
        "Suicide seemed the only way out.",
        "There is a way out of a long wait: ask us.",
    ),
    ("method-detail", "A lethal dose is small.", "The dose is set by a clinician."),
]


@pytest.mark.parametrize(("rule", "bad", "good"), WORDING, ids=[w[0] for w in WORDING])
def test_each_wording_rule_fires_with_its_line_and_not_on_the_near_miss(tmp_path, rule, bad, good):
    # Emails mentioning suicide open with the crisis line, so that rule stays out of the way.
    found = [f for f in lint(write(tmp_path / "bad", bad, CRISIS_FRONT)) if f.rule == rule]
    assert len(found) == 1, found
    assert found[0].severity == ERROR
    assert (found[0].file, found[0].line) == ("01-email.md", BODY_LINE_OF_TEXT + 1)
    assert str(found[0]).startswith(f"01-email.md:{BODY_LINE_OF_TEXT + 1}: error [{rule}]: ")
    assert rule not in rules(lint(write(tmp_path / "good", good, CRISIS_FRONT)))


def test_a_finding_in_a_wrapped_paragraph_names_the_line_it_is_on(tmp_path):
    text = "Talk with your clinician first.\nThey will tell you\nthat no side effects\nexist."
    found = [f for f in lint(write(tmp_path / "c", text)) if f.rule == "claim-no-side-effects"]
    assert [f.line for f in found] == [BODY_LINE_OF_TEXT + 2]


def test_wording_is_checked_in_subjects_preheaders_and_the_footer(tmp_path):
    front = 'subject = "A guaranteed calm"\npreheader = "Results are 100% yours."\n'
    toml = TOML.replace(
        'risk = "Ketamine treatment has risks', 'risk = "Ketamine is non-addictive but has risks'
    )
    found = lint(write(tmp_path / "c", front=front, toml=toml))
    where = {(f.rule, f.file, f.line) for f in found}
    assert ("claim-guarantee", "01-email.md", 2) in where
    assert ("claim-100-percent", "01-email.md", 3) in where
    assert ("claim-non-addictive", "campaign.toml", 9) in where


def test_a_campaign_can_allow_a_phrase_explicitly(tmp_path):
    text = "Ketamine is FDA-approved as an anesthetic."
    assert "claim-fda-ketamine" in rules(lint(write(tmp_path / "a", text)))
    toml = TOML + 'allow = ["FDA-approved as an anesthetic"]\n'
    assert lint(write(tmp_path / "b", text, toml=toml)) == []
    # The same words elsewhere are still flagged: only the phrase is accepted.
    other = text + " Ketamine is FDA-approved for depression."
    assert rules(lint(write(tmp_path / "c", other, toml=toml))) == {"claim-fda-ketamine"}
    # An allowance nothing needs is pointed out.
    found = lint(write(tmp_path / "d", toml=toml))
    assert [(f.rule, f.severity, f.line) for f in found] == [("unused-allow", WARNING, 12)]


def test_a_suicide_statistic_needs_help_next_to_it(tmp_path):
    bad = "About 48,000 people die by suicide each year."
    good = bad + " If you are struggling, call or text 988."
    found = [
        f for f in lint(write(tmp_path / "a", bad, CRISIS_FRONT)) if f.rule == "suicide-statistic"
    ]
    assert [(f.severity, f.line) for f in found] == [(WARNING, BODY_LINE_OF_TEXT + 1)]
    assert "suicide-statistic" not in rules(lint(write(tmp_path / "b", good, CRISIS_FRONT)))


def test_an_email_about_suicide_opens_with_the_crisis_line(tmp_path):
    text = "Ketamine may reduce suicidal thoughts."
    found = [f for f in lint(write(tmp_path / "a", text)) if f.rule == "suicide-crisis-top"]
    assert [(f.severity, f.line) for f in found] == [(ERROR, BODY_LINE_OF_TEXT)]
    front = CRISIS_FRONT
    assert lint(write(tmp_path / "b", text, front)) == []
    # crisis_at_top without a crisis line to show is not enough.
    toml = TOML.replace('crisis_line = "Help is available 24/7: call or text 988."\n', "")
    toml = toml.replace('"crisis_line", ', "")
    assert "suicide-crisis-top" in rules(lint(write(tmp_path / "c", text, front, toml)))


# ----------------------------------------------------------------------------- balance


def research_front(*lines: str, front: str = FRONT) -> str:
    """Front matter with a research paragraph; its first line is line 5 of the file."""
    return front + 'research = """\n' + "\n".join(lines) + '\n"""\n'


RESEARCH_LINE = 5  # +++, subject, preheader, research = """, then the paragraph's first line


def body_after_research(research_lines: int) -> int:
    """Where the body's text is with a research paragraph of so many lines (and its 2)."""
    return BODY_LINE_OF_TEXT + research_lines + 2


def of_rule(findings: list[Finding], rule: str) -> list[tuple[str, str, int]]:
    return [(f.severity, f.file, f.line) for f in findings if f.rule == rule]


def test_efficacy_as_fact_needs_a_source_named_in_the_same_email(tmp_path):
    found = lint(write(tmp_path / "a", "KAP has been shown to be effective for many people."))
    assert of_rule(found, "efficacy-unsourced") == [(WARNING, "01-email.md", BODY_LINE_OF_TEXT)]
    assert "names no source" in found[0].message and "(Zarate and others, 2006)" in str(found[0])
    # Wherever the email says it (subject, preheader, research), and "may" does not excuse it.
    front = research_front(
        "Studies of ketamine were small.",
        "It may be life-saving.",
        front='subject = "Proven to help"\npreheader = "It can significantly reduce worry."\n',
    )
    found = lint(write(tmp_path / "b", "It is highly effective.", front))
    assert [line for _, _, line in of_rule(found, "efficacy-unsourced")] == [
        2,
        3,
        RESEARCH_LINE + 1,
        body_after_research(2),
    ]
    # A source named in the research paragraph or the body balances every claim of the email.
    cited = research_front(
        "In trials, some people improved within a day (Zarate and others, 2006)."
    )
    assert lint(write(tmp_path / "c", "It is highly effective.", front=cited)) == []
    assert lint(write(tmp_path / "d", "Zarate et al. found it highly effective.")) == []


def test_a_safety_promise_needs_the_risks_in_the_emails_own_text(tmp_path):
    # The footer's risk note (TOML above) is in this email, and does not count.
    text = "Sessions are safe, and we ensure you are looked after."
    found = lint(write(tmp_path / "a", text))
    assert [(f.rule, f.severity, f.line, f.message.split(" promises")[0]) for f in found] == [
        ("safety-promise", WARNING, BODY_LINE_OF_TEXT, "'safe'"),
        ("safety-promise", WARNING, BODY_LINE_OF_TEXT, "'ensure'"),
    ]
    assert "footer's risk note does not count" in found[0].message
    # "Risk-free" is no statement of risk.
    assert "safety-promise" in rules(lint(write(tmp_path / "b", "It is risk-free and harmless.")))
    balanced = text + " Treatment has risks, and screening comes first."
    assert lint(write(tmp_path / "c", balanced)) == []
    in_research = research_front("Treatment is not for everyone: a clinician decides.")
    assert lint(write(tmp_path / "d", text, in_research)) == []


def test_medication_reduction_needs_the_prescriber_sentence(tmp_path):
    text = "For some people, KAP can reduce the need for long-term medication."
    found = lint(write(tmp_path / "a", text))
    assert of_rule(found, "medication-prescriber") == [(ERROR, "01-email.md", BODY_LINE_OF_TEXT)]
    assert "Do not stop or change a medication without talking with your prescriber" in str(
        found[0]
    )
    for other in ("You could stop your medication.", "Some come off.", "Taper slowly."):
        assert "medication-prescriber" in rules(lint(write(tmp_path / "b", other))), other
    front = 'subject = "Needing less medication"\npreheader = "A calm preheader."\n'
    assert of_rule(lint(write(tmp_path / "c", front=front)), "medication-prescriber") == [
        (ERROR, "01-email.md", 2)
    ]
    # The sentence about the prescriber, in the body or the research paragraph, balances it.
    prescriber = " Do not stop or change a medication without talking with your prescriber."
    assert lint(write(tmp_path / "d", text + prescriber)) == []
    clinician = research_front("Ask your prescribing clinician before any change.")
    assert lint(write(tmp_path / "e", text, clinician)) == []
    # Medication named without any change to it is not this rule's case.
    near_miss = "Ketamine may work faster than antidepressants."
    assert lint(write(tmp_path / "f", near_miss)) == []


# ----------------------------------------------------------------------------- text part

MARKDOWN = ("text-markdown", WARNING)


def test_markdown_in_the_text_part_is_reported(tmp_path):
    """What the text part shows as typed: fed a compiled email whose text carries a Markdown
    link, heading and emphasis (the conversion of the real pipeline is checked by the clean
    campaigns, whose footer has a link)."""
    folder = write(tmp_path / "a", "Read our page.")
    definition = read_campaign(folder)
    [(source, email)] = compile_campaign(definition, SETTINGS)
    assert lint_campaign(definition, SETTINGS, [(source, email)]) == []
    markdown = (
        "\n## A first paragraph\n\nRead [our page](https://news.example.org/team).\n"
        "Or call **988**.\n"
    )
    broken = dataclasses.replace(email, text=email.text + markdown)
    found = lint_campaign(definition, SETTINGS, [(source, broken)])
    # Each where its words are written: 988 in the footer, the heading's words in the body;
    # a URL written nowhere, at the body's first line.
    assert {
        (f.rule, f.severity, f.file, f.line, f.message.split(" as typed")[0]) for f in found
    } == {
        (
            *MARKDOWN,
            "campaign.toml",
            toml_line(TOML, "crisis"),
            "the text part shows Markdown emphasis",
        ),
        (*MARKDOWN, "01-email.md", BODY_LINE_OF_TEXT - 4, "the text part shows a Markdown link"),
        (*MARKDOWN, "01-email.md", BODY_LINE_OF_TEXT - 2, "the text part shows a Markdown heading"),
    }
    plain = "\nA first paragraph\n\nRead our page: https://news.example.org/team\nOr call 988.\n"
    fine = dataclasses.replace(email, text=email.text + plain)
    assert lint_campaign(definition, SETTINGS, [(source, fine)]) == []


# ----------------------------------------------------------------------------- readability

HARD = (
    "Notwithstanding considerable methodological heterogeneity, contemporary investigations "
    "consistently demonstrate substantial amelioration of depressive symptomatology following "
    "subanesthetic intravenous administration."
)
EASY = (
    "Some people felt better within a day. For many, the effect faded within two weeks. "
    "The studies were small, and most did not add talk therapy. We still have a lot to learn."
)


def test_the_text_the_campaign_adds_reads_at_grade_8_or_lower(tmp_path):
    front = research_front(EASY, HARD)
    found = lint(write(tmp_path / "a", front=front))
    assert of_rule(found, "readability") == [(WARNING, "01-email.md", RESEARCH_LINE)]
    message = found[0].message
    assert "keep them at 8 or lower" in message
    assert (
        f"The hardest sentence is at 01-email.md:{RESEARCH_LINE + 1}: 'Notwithstanding" in message
    )
    assert lint(write(tmp_path / "b", front=research_front(EASY))) == []
    # A citation in parentheses is names and years, not prose: it is not scored.
    citation = "(Zarate, Singh, Carlson and others, Archives of General Psychiatry, 2006)"
    cited = research_front(EASY.replace("within a day.", f"within a day {citation}."))
    assert lint(write(tmp_path / "c", front=cited)) == []


def test_the_clients_own_paragraphs_are_not_scored(tmp_path):
    toml = TOML.replace('kind = "sequence"\n', 'kind = "sequence"\nclient_copy = "SOURCE.txt"\n')
    folder = write(tmp_path / "a", HARD, toml=toml)
    (folder / "SOURCE.txt").write_text(f"Intro.\nA heading\n{HARD}\n", encoding="utf-8")
    assert lint(folder) == []
    # The same words, not in the client's file, are the campaign's.
    (folder / "SOURCE.txt").write_text("Intro.\nA heading\nSomething else.\n", encoding="utf-8")
    # Reported at the first paragraph the campaign added: the client's file lacks both.
    assert of_rule(lint(folder), "readability") == [(WARNING, "01-email.md", BODY_LINE_OF_TEXT - 2)]


def test_fewer_than_30_words_are_not_scored(tmp_path):
    short_footer = (
        'crisis = "Call or text 988."\ncrisis_line = "Call 988."\n'
        'disclaimer = "Not medical advice."\nrisk = "Treatment has risks."\n'
        'reason = "You signed up."\n'
    )
    start, end = TOML.index("crisis ="), TOML.index("[lint]")
    toml = TOML[:start] + short_footer + "\n" + TOML[end:]
    short = "Notwithstanding methodological heterogeneity, investigations demonstrate amelioration."
    assert lint(write(tmp_path / "a", short, toml=toml)) == []  # 24 words with the footer
    assert "readability" in rules(lint(write(tmp_path / "b", HARD, toml=toml)))  # 34


# ----------------------------------------------------------------------------- subject


def test_subject_length_preheader_and_the_readers_condition(tmp_path):
    long = "A" * 40 + " " + "b" * 39  # 80 characters
    found = lint(write(tmp_path / "a", front=f'subject = "{long}"\npreheader = "x y"\n'))
    assert [(f.rule, f.severity, f.line) for f in found] == [("subject-length", ERROR, 2)]
    assert lint(write(tmp_path / "b", front=f'subject = "{long[:-1]}"\npreheader = "x y"\n')) == []

    found = lint(write(tmp_path / "c", front='subject = "Hello"\n'))
    assert [(f.rule, f.severity) for f in found] == [("preheader-missing", WARNING)]

    front = 'subject = "Your depression can lift"\npreheader = "About your symptoms"\n'
    found = lint(write(tmp_path / "d", front=front))
    assert {(f.rule, f.severity, f.line) for f in found} == {
        ("subject-condition", ERROR, 2),
        ("preheader-condition", ERROR, 3),
    }
    # "trauma-informed" names a way of working, not the reader's condition.
    front = 'subject = "Hope can return"\npreheader = "About our trauma-informed care"\n'
    assert lint(write(tmp_path / "e", front=front)) == []


CONDITIONS = [
    "depression",
    "Depressed",
    "anxiety",
    "PTSD",
    "trauma",
    "OCD",
    "bipolar",
    "psychosis",
    "addiction",
    "chronic pain",
    "self-harm",
    "eating disorder",
    "your diagnosis",
]


@pytest.mark.parametrize("condition", CONDITIONS)
def test_a_condition_word_in_a_subject_or_preheader_is_an_error(tmp_path, condition):
    """Not only "your depression": a subject or preheader about depression tells whoever
    sees the lock screen what the reader may live with (CONTENT.md)."""
    front = f'subject = "Ketamine and {condition}"\npreheader = "Notes on {condition}."\n'
    found = lint(write(tmp_path / "a", front=front))
    assert {(f.rule, f.severity, f.line) for f in found} == {
        ("subject-condition", ERROR, 2),
        ("preheader-condition", ERROR, 3),
    }
    assert f"{condition!r} names a condition in the subject" in str(found[0])
    # The same word in the body is fine: only what shows on the lock screen is at issue.
    assert lint(write(tmp_path / "b", f"Some people live with {condition}.")) == []


def test_suicide_in_a_subject_is_refused_when_the_folder_is_read(sqlite_template, tmp_path):
    t = on_sqlite_copy(sqlite_template, tmp_path)
    folder = write(tmp_path / "c", front='subject = "On suicide"\npreheader = "x y"\n')
    output = t.fails("campaigns", "lint", str(folder))
    assert "01-email.md:2: error [invalid]: subject mentions suicide" in output


# ----------------------------------------------------------------------------- footer


@pytest.mark.parametrize("part", ["crisis", "disclaimer", "risk", "reason"])
def test_footer_parts_are_errors_when_required_and_warnings_otherwise(tmp_path, part):
    without = "\n".join(line for line in TOML.splitlines() if not line.startswith(f"{part} ="))
    found = [
        f for f in lint(write(tmp_path / "a", toml=without + "\n")) if f.rule == f"footer-{part}"
    ]
    assert [(f.severity, f.file, f.line) for f in found] == [(ERROR, "campaign.toml", 5)]
    optional = without.replace(f'"{part}", ', "").replace(f', "{part}"', "") + "\n"
    found = [f for f in lint(write(tmp_path / "b", toml=optional)) if f.rule == f"footer-{part}"]
    assert [f.severity for f in found] == [WARNING]


def test_no_postal_address_is_a_warning_that_names_the_setting(tmp_path):
    found = lint(write(tmp_path / "a"), dataclasses.replace(SETTINGS, postal_address=""))
    assert [(f.rule, f.severity) for f in found] == [("postal-address", WARNING)]
    assert "TIDINGS_POSTAL_ADDRESS" in found[0].message


# ----------------------------------------------------------------------------- links, images


def test_links_must_be_https_and_to_allowed_domains(tmp_path):
    found = lint(write(tmp_path / "a", "Read [this](http://news.example.org/page)."))
    assert [(f.rule, f.line) for f in found] == [("link-https", BODY_LINE_OF_TEXT)]
    found = lint(write(tmp_path / "b", "Read [this](https://elsewhere.example.com/page)."))
    assert [(f.rule, f.line) for f in found] == [("link-domain", BODY_LINE_OF_TEXT)]
    found = lint(write(tmp_path / "c", "Read [this](javascript:alert(1))."))
    assert [f.rule for f in found] == ["link-scheme"]
    # The web pages, the sender's domain (and subdomains), 988, mailto and tel are fine;
    # other domains once listed in [lint] link_domains.
    fine = (
        "[a](https://news.example.org/x) [b](https://www.center.example.org/about) "
        "[c](https://988lifeline.org/chat) [d](mailto:help@center.example.org) "
        "[e](tel:988) [f](https://elsewhere.example.com/page)"
    )
    toml = TOML + 'link_domains = ["elsewhere.example.com"]\n'
    assert lint(write(tmp_path / "d", fine, toml=toml)) == []


def test_images_need_alt_text_and_pixels_are_refused(tmp_path):
    found = lint(write(tmp_path / "a", "![](https://news.example.org/logo.png)"))
    assert [(f.rule, f.line) for f in found] == [("image-alt", BODY_LINE_OF_TEXT)]
    assert lint(write(tmp_path / "b", "![Our logo](https://news.example.org/logo.png)")) == []

    pixel = '<img src="https://news.example.org/o.gif" width="1" height="1" alt="x">'
    found = lint(write(tmp_path / "c", pixel))
    assert [(f.rule, f.line) for f in found] == [("tracking-pixel", BODY_LINE_OF_TEXT)]
    third_party = '<img src="https://tracker.example.net/p.png" alt="banner">'
    assert [f.rule for f in lint(write(tmp_path / "d", third_party))] == ["tracking-pixel"]

    # A campaign may turn tracking on, but never for an email that mentions suicide.
    toml = TOML + "tracking = true\n"
    assert lint(write(tmp_path / "e", pixel, toml=toml)) == []
    about = pixel + "\n\nKetamine may reduce suicidal thoughts."
    found = lint(write(tmp_path / "f", about, CRISIS_FRONT, toml))
    assert [f.rule for f in found] == ["tracking-pixel"]
    assert "never in an email that mentions suicide" in found[0].message


# ----------------------------------------------------------------------------- the email


def test_html_over_gmails_clipping_limit_is_an_error(tmp_path):
    big = "\n\n".join(
        "A long paragraph about the therapy and what to expect. " * 20 for _ in range(100)
    )
    found = lint(write(tmp_path / "a", big))
    assert [f.rule for f in found] == ["gmail-clipping"]
    assert "Gmail clips emails over 102 KB" in found[0].message


def test_a_finding_after_an_image_of_the_footer_names_its_own_file(tmp_path):
    """An image written in campaign.toml's footer is reported there; a rule that runs after
    the images (size, parts) still names the email's own file: each rule says where its
    finding is, and no rule can move another's (before the rules were a table, the image
    loop left campaign.toml behind for the findings after it)."""
    toml = TOML.replace(
        'reason = "You signed up at {{ sender.organization }}."',
        'reason = "You signed up at {{ sender.organization }}. ![](https://news.example.org/l.png)"',
    )
    big = "\n\n".join(
        "A long paragraph about the therapy and what to expect. " * 20 for _ in range(100)
    )
    found = {(f.rule, f.file, f.line) for f in lint(write(tmp_path / "a", big, toml=toml))}
    assert ("image-alt", "campaign.toml", toml_line(toml, "reason")) in found
    assert ("gmail-clipping", "01-email.md", 1) in found


def test_missing_unsubscribe_link_and_parts_that_differ(tmp_path):
    """The layout always carries the link and both parts come from one source, so these two
    rules guard against a broken template: fed a compiled email that lacks them."""
    folder = write(tmp_path / "a")
    definition = read_campaign(folder)
    [(source, email)] = compile_campaign(definition, SETTINGS)
    broken = dataclasses.replace(
        email,
        html=email.html.replace('href="TIDINGSVARUNSUBSCRIBEURLX"', 'href="#"').replace(
            "A first paragraph", "A first paragraph with a secret coupon"
        ),
    )
    found = lint_campaign(definition, SETTINGS, [(source, broken)])
    assert {(f.rule, f.severity) for f in found} == {
        ("unsubscribe-link", ERROR),
        ("parts-differ", WARNING),
    }
    assert "coupon" in next(f for f in found if f.rule == "parts-differ").message


# ----------------------------------------------------------------------------- the commands


def test_lint_command_prints_file_and_line_and_exits_1_on_errors(sqlite_template, tmp_path):
    t = on_sqlite_copy(sqlite_template, tmp_path)
    folder = write(tmp_path / "c", "Results are guaranteed.\n\nSome people feel better.")
    output = t.fails("campaigns", "lint", str(folder))
    assert f"01-email.md:{BODY_LINE_OF_TEXT}: error [claim-guarantee]: 'guaranteed'" in output
    assert "1 error(s), 0 warning(s)" in output
    clean = t.ok("campaigns", "lint", "kap-benefits").output
    assert "0 error(s), 0 warning(s)" in clean


def test_load_runs_the_lint_errors_block_it_warnings_do_not(database_url, smtp_server, tmp_path):
    t = Tidings(database_url, smtp_server.url)
    bad = write(tmp_path / "bad", "Results are guaranteed.")
    output = t.fails("campaigns", "load", str(bad))
    assert "not loaded, nothing was stored" in output
    assert f"01-email.md:{BODY_LINE_OF_TEXT}: error [claim-guarantee]" in output
    assert t.counts()["campaigns"] == 0

    warned = write(tmp_path / "warned", front='subject = "Hello"\n')
    result = t.ok("campaigns", "load", str(warned))
    assert "warning [preheader-missing]" in result.output
    assert t.counts()["campaigns"] == 1


def test_lint_of_a_loaded_campaign_by_slug_reads_its_folder(database_url, smtp_server, tmp_path):
    t = Tidings(database_url, smtp_server.url)
    folder = write(tmp_path / "mine")
    t.ok("campaigns", "load", str(folder))
    (folder / "01-email.md").write_text(
        textwrap.dedent("""\
        +++
        subject = "Hello"
        preheader = "x y"
        +++
        It is a cure.
        """),
        encoding="utf-8",
    )
    assert "01-email.md:5: error [claim-cure]" in t.fails("campaigns", "lint", "lint-me")


def test_an_underscored_attribute_is_reported_by_its_own_rule_with_file_and_line(tmp_path):
    """Such a template does not compile (it would reach Python's internals); the lint still
    says where, under its own rule, and does not repeat it as `invalid`."""
    toml = TOML.replace("{{ sender.organization }}", "{{ sender._secret }}")
    folder = write(
        tmp_path / "c", "Hi {{ campaign.__class__ }} and {{ step|attr('_k') }}.", toml=toml
    )
    found = lint_folder(folder, SETTINGS)
    assert [(f.severity, f.rule, f.file, f.line) for f in found] == [
        (ERROR, "template-private", "campaign.toml", toml_line(toml, "reason")),
        (ERROR, "template-private", "01-email.md", BODY_LINE_OF_TEXT),
    ]
    assert "'__class__', '_k' start with an underscore" in found[1].message
    assert "'_secret' starts with an underscore" in found[0].message
