"""The lint's rules as a table: one function per rule, each returning its findings.

Campaign rules look at campaign.toml; step rules at one email, as written (its front matter
and Markdown) and as compiled (what people receive). Every finding carries the file and line
it is about, computed by the rule itself: no rule can file its finding under another's file.
To add a rule, write a function and list it in CAMPAIGN_RULES or STEP_RULES.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import urlsplit

from tidings.campaigns.lint.balance import (
    efficacy_unsourced,
    medication_prescriber,
    safety_promise,
)
from tidings.campaigns.lint.checks import CampaignCheck, StepCheck
from tidings.campaigns.lint.findings import ERROR, WARNING, Finding
from tidings.campaigns.lint.html import is_pixel, words_of
from tidings.campaigns.lint.readability import readability
from tidings.campaigns.lint.words import (
    CONDITION,
    SUICIDE,
    URL,
    paragraphs,
    statistic_findings,
    word_findings,
)
from tidings.rendering.compile import placeholder
from tidings.rendering.sandbox import private_name_problem, private_names_in

__all__ = [
    "CAMPAIGN_RULES",
    "FINAL_RULES",
    "SOURCE_RULES",
    "STEP_RULES",
    "CampaignCheck",
    "StepCheck",
]

SUBJECT_MAX = 80  # characters; subjects must be shorter
GMAIL_CLIP_BYTES = 102 * 1024  # Gmail hides everything after this much HTML
FOOTER_PARTS = {
    "crisis": "the crisis block (988, 988lifeline.org, 911)",
    "disclaimer": "the medical disclaimer",
    "risk": "the risk note",
    "reason": "why the reader gets this email",
}
# Markdown syntax that must not reach the text/plain part (CONTENT.md: real plain text).
# Each: what it is, its pattern, and its group that is looked for in the sources (the URL, the
# heading's or the emphasised words) to say where it was written.
TEXT_MARKDOWN = (
    ("a Markdown link", re.compile(r"!?\[[^\]\n]*\]\(([^)\s]*)\)"), 1),
    ("a Markdown heading", re.compile(r"^#{1,6}[ \t]+(\S.*)$"), 1),
    ("Markdown emphasis", re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), 2),
)


# ----------------------------------------------------------------------------- campaign rules


def footer_wording(c: CampaignCheck) -> Iterator[Finding]:
    """The footer and the letter's sign-off and signature, as every email carries them."""
    texts = [*c.definition.footer.items(), *c.definition.letter.items()]
    for name, text in texts:
        for chunk in paragraphs(text, "campaign.toml", c.toml(name)):
            yield from word_findings(chunk, c.allow)


def footer_parts(c: CampaignCheck) -> Iterator[Finding]:
    footer, required = c.definition.footer, c.definition.lint.require
    for name, description in FOOTER_PARTS.items():
        if footer.get(name, "").strip():
            continue
        needed = name in required
        yield c.finding(
            ERROR if needed else WARNING,
            f"footer-{name}",
            c.toml("footer", table=True),
            f"no [footer] {name}: every email should carry {description}"
            + ("" if needed else " (add it, or the lint keeps warning)"),
        )
    if "crisis_line" in required and not footer.get("crisis_line"):
        yield c.finding(
            ERROR,
            "footer-crisis_line",
            c.toml("footer", table=True),
            "no [footer] crisis_line: emails that mention suicide open with it",
        )


def postal_configured(c: CampaignCheck) -> Iterator[Finding]:
    if not c.postal:
        yield c.finding(
            WARNING,
            "postal-address",
            c.toml("sender", table=True),
            "no postal address (TIDINGS_POSTAL_ADDRESS or [sender] postal_address): the law "
            "requires one in marketing email, and sending refuses to start without it",
        )


def template_private(c: CampaignCheck) -> Iterator[Finding]:
    """A template that names an attribute starting with an underscore reaches for Python's
    internals (`sender.__class__...`): never what a campaign needs. Read from the sources, so
    it is reported even though such a campaign does not compile."""
    d = c.definition
    sources = [("campaign.toml", text, c.toml(name)) for name, text in d.footer.items()]
    for step in d.steps:
        sources += [
            (step.file, step.subject, step.subject_line),
            (step.file, step.preheader, step.preheader_line),
            (step.file, step.body, step.body_line),
        ]
    for file, text, first_line in sources:
        for line, names in private_names_in(text):
            message = private_name_problem(names)
            yield Finding(ERROR, "template-private", file, first_line + line - 1, message)


def unused_allow(c: CampaignCheck) -> Iterator[Finding]:
    """Runs last: the other rules note which allowed phrases they needed."""
    for phrase in c.allow.phrases:
        if phrase not in c.allow.used:
            yield c.finding(
                WARNING,
                "unused-allow",
                c.definition.lint.line,
                f"allowed phrase {phrase!r} is never needed: remove it from [lint] allow",
            )


# ----------------------------------------------------------------------------- step rules


def subject_length(s: StepCheck) -> Iterator[Finding]:
    if len(s.email.subject) >= SUBJECT_MAX:
        yield s.finding(
            ERROR,
            "subject-length",
            s.step.subject_line,
            f"subject has {len(s.email.subject)} characters; keep it under {SUBJECT_MAX} "
            "(inboxes and lock screens cut the rest)",
        )


def preheader_missing(s: StepCheck) -> Iterator[Finding]:
    if not s.email.preheader:
        yield s.finding(
            WARNING,
            "preheader-missing",
            s.step.subject_line,
            "no preheader: inboxes then show the first words of the body instead "
            '(add: preheader = "...")',
        )


def lock_screen(s: StepCheck) -> Iterator[Finding]:
    """The wording rules apply to the subject and the preheader too."""
    for _, chunk in s.lock_screen_chunks:
        yield from word_findings(chunk, s.campaign.allow)


def lock_screen_condition(s: StepCheck) -> Iterator[Finding]:
    """A subject or preheader shows on lock screens and in shared inboxes: naming a condition
    there ("depression", "PTSD", "your symptoms") tells whoever sees it about the reader."""
    for name, chunk in s.lock_screen_chunks:
        for match in CONDITION.finditer(chunk.text):
            yield s.finding(
                ERROR,
                f"{name}-condition",
                chunk.line_at(match.start()),
                f"{match.group()!r} names a condition in the {name}, which shows on lock "
                "screens and in shared inboxes: say what the email is about without it "
                "(keep the condition in the body)",
            )


def body_wording(s: StepCheck) -> Iterator[Finding]:
    """The body, the research paragraph and the next step."""
    for chunk in s.own_chunks:
        yield from word_findings(chunk, s.campaign.allow)
    yield from statistic_findings(s.chunks + s.research_chunks)


def suicide_crisis_top(s: StepCheck) -> Iterator[Finding]:
    chunk = s.mentions_suicide
    footer = s.campaign.definition.footer
    if chunk is not None and not (s.step.crisis_at_top and footer.get("crisis_line")):
        match = SUICIDE.search(chunk.text)
        assert match is not None
        yield s.finding(
            ERROR,
            "suicide-crisis-top",
            chunk.line_at(match.start()),
            "this email mentions suicide: it must open with the crisis line (front matter "
            "crisis_at_top = true, and [footer] crisis_line in campaign.toml)",
        )


def unsubscribe_link(s: StepCheck) -> Iterator[Finding]:
    link = placeholder("unsubscribe_url")
    if link not in s.facts.links or link not in s.email.text:
        yield s.finding(
            ERROR, "unsubscribe-link", 1, "no unsubscribe link in both the html and text parts"
        )


def footer_in_email(s: StepCheck) -> Iterator[Finding]:
    text_words = words_of(s.email.text)
    for name in ("crisis", "disclaimer", "risk"):
        source = s.campaign.definition.footer.get(name, "")
        fragment = URL.sub(" ", re.sub(r"{[{%].*?[%}]}", " ", source))
        if words_of(fragment) - text_words:
            yield s.finding(
                ERROR, f"footer-{name}", 1, f"the {name} footer does not appear in the email"
            )


def postal_in_email(s: StepCheck) -> Iterator[Finding]:
    postal = " ".join(s.campaign.postal.split())
    # The text part wraps long lines, so the address may cross a line break there.
    if postal and (postal not in s.email.html or postal not in " ".join(s.email.text.split())):
        yield s.finding(
            ERROR, "postal-address", 1, "the postal address does not appear in the email"
        )


def links(s: StepCheck) -> Iterator[Finding]:
    for href in s.facts.links:
        if not href.startswith("TIDINGSVAR"):  # the reader's own links, under TIDINGS_BASE_URL
            yield from _url_findings(s, href, "link")


def images(s: StepCheck) -> Iterator[Finding]:
    tracking_ok = s.campaign.definition.lint.tracking and s.mentions_suicide is None
    for image in s.facts.images:
        src = image.get("src", "")
        file, line = s.where(src)
        if not image.get("alt", "").strip():
            yield Finding(ERROR, "image-alt", file, line, f"image {src!r} has no alt text")
        host = (urlsplit(src).hostname or "").lower()
        third_party = bool(host) and not _domain_allowed(host, s.campaign.domains)
        if (is_pixel(image) or third_party) and not tracking_ok:
            why = (
                ": never in an email that mentions suicide"
                if s.mentions_suicide is not None
                else ": no tracking by default ([lint] tracking = true to allow it)"
            )
            yield Finding(
                ERROR,
                "tracking-pixel",
                file,
                line,
                f"image {src!r} looks like a tracking pixel or loads from another site{why}",
            )
        elif src:
            yield from _url_findings(s, src, "image")


def gmail_clipping(s: StepCheck) -> Iterator[Finding]:
    size = len(s.email.html.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        yield s.finding(
            ERROR,
            "gmail-clipping",
            1,
            f"the html is {size // 1024} KB; Gmail clips emails over 102 KB, hiding the footer "
            "with the unsubscribe link and the crisis block",
        )


def parts_differ(s: StepCheck) -> Iterator[Finding]:
    missing = sorted(words_of(" ".join(s.facts.words)) - words_of(s.email.text))
    if missing:
        yield s.finding(
            WARNING,
            "parts-differ",
            s.step.body_line,
            "the html part says what the text part does not: " + ", ".join(missing[:8]),
        )


def text_markdown(s: StepCheck) -> Iterator[Finding]:
    """The text/plain part is read as it is: Markdown syntax shows as typed, and a link
    detector takes the ')' of `[text](url)` into the link (a 404)."""
    for line in s.email.text.splitlines():
        for what, pattern, group in TEXT_MARKDOWN:
            for match in pattern.finditer(line):
                file, number = s.where(match.group(group))
                yield Finding(
                    WARNING,
                    "text-markdown",
                    file,
                    number,
                    f"the text part shows {what} as typed ({match.group()[:60]!r}): write it "
                    "so that it converts to plain text (links as bare URLs, no raw HTML "
                    "with Markdown in it); if the Markdown is tidings' own conversion, "
                    "report it",
                )


def _url_findings(s: StepCheck, url: str, what: str) -> Iterator[Finding]:
    parts = urlsplit(url)
    file, line = s.where(url)
    if parts.scheme in ("mailto", "tel", "sms") or url.startswith("#"):
        return
    if url.startswith(s.campaign.settings.public_base_url.rstrip("/") + "/"):
        # The installation's own pages: an http TIDINGS_BASE_URL is reported once, by
        # `tidings check`, not in every email.
        return
    if parts.scheme == "http":
        yield Finding(ERROR, "link-https", file, line, f"{what} {url!r} is not https")
    elif parts.scheme != "https":
        yield Finding(
            ERROR, "link-scheme", file, line, f"{what} {url!r}: only https, mailto and tel links"
        )
        return
    host = (parts.hostname or "").lower()
    domains = s.campaign.domains
    if not _domain_allowed(host, domains):
        yield Finding(
            ERROR,
            "link-domain",
            file,
            line,
            f"{what} to {host!r}, which is not an allowed domain ({', '.join(sorted(domains))}); "
            "add it to [lint] link_domains if it belongs there",
        )


def _domain_allowed(host: str, domains: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


CampaignRule = Callable[[CampaignCheck], Iterable[Finding]]
StepRule = Callable[[StepCheck], Iterable[Finding]]

CAMPAIGN_RULES: tuple[CampaignRule, ...] = (
    footer_wording,
    footer_parts,
    postal_configured,
    template_private,
)
# What can be checked of a campaign that does not compile.
SOURCE_RULES: tuple[CampaignRule, ...] = (template_private,)
STEP_RULES: tuple[StepRule, ...] = (
    subject_length,
    preheader_missing,
    lock_screen,
    lock_screen_condition,
    body_wording,
    efficacy_unsourced,
    safety_promise,
    medication_prescriber,
    suicide_crisis_top,
    unsubscribe_link,
    footer_in_email,
    postal_in_email,
    links,
    images,
    gmail_clipping,
    parts_differ,
    text_markdown,
    readability,
)
# After every other rule, which record the allowed phrases they used.
FINAL_RULES: tuple[CampaignRule, ...] = (unused_allow,)
