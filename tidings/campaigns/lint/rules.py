"""The lint's rules as a table: one function per rule, each returning its findings.

Campaign rules look at campaign.toml; step rules at one email, as written (its front matter
and Markdown) and as compiled (what people receive). Every finding carries the file and line
it is about, computed by the rule itself: no rule can file its finding under another's file.
To add a rule, write a function and list it in CAMPAIGN_RULES or STEP_RULES.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import urlsplit

from tidings.campaigns.definition import CampaignDefinition, StepDefinition, toml_line
from tidings.campaigns.lint.findings import ERROR, WARNING, Finding
from tidings.campaigns.lint.html import HtmlFacts, is_pixel, words_of
from tidings.campaigns.lint.words import (
    READER_CONDITION,
    SUICIDE,
    URL,
    Allowances,
    Chunk,
    paragraphs,
    statistic_findings,
    word_findings,
)
from tidings.config import Settings
from tidings.rendering.compile import CompiledStep, placeholder
from tidings.rendering.sandbox import private_name_problem, private_names_in

SUBJECT_MAX = 80  # characters; subjects must be shorter
GMAIL_CLIP_BYTES = 102 * 1024  # Gmail hides everything after this much HTML
# Crisis resources every email may link to, whatever the campaign lists.
CRISIS_DOMAINS = ("988lifeline.org",)
FOOTER_PARTS = {
    "crisis": "the crisis block (988, 988lifeline.org, 911)",
    "disclaimer": "the medical disclaimer",
    "risk": "the risk note",
    "reason": "why the reader gets this email",
}


@dataclass
class CampaignCheck:
    """What the rules of one campaign share."""

    definition: CampaignDefinition
    settings: Settings
    allow: Allowances = field(init=False)

    def __post_init__(self) -> None:
        self.allow = Allowances(self.definition.lint.allow)

    @cached_property
    def domains(self) -> set[str]:
        """Where links and images may point: the web pages, the sender's domain, the crisis
        lifeline, and what the campaign lists (subdomains included)."""
        d = self.definition
        domains = {
            *CRISIS_DOMAINS,
            (urlsplit(self.settings.public_base_url).hostname or "").lower(),
            d.sender.get("from_address", self.settings.from_address).rpartition("@")[2].lower(),
            *d.lint.link_domains,
        }
        return {x for x in domains if x}

    @cached_property
    def postal(self) -> str:
        return self.definition.sender.get("postal_address", self.settings.postal_address).strip()

    def toml(self, key: str, table: bool = False) -> int:
        return toml_line(self.definition.raw_toml, key, table=table)

    def finding(self, severity: str, rule: str, line: int, message: str) -> Finding:
        return Finding(severity, rule, "campaign.toml", line, message)


@dataclass
class StepCheck:
    """One email, as written and as compiled."""

    campaign: CampaignCheck
    step: StepDefinition
    email: CompiledStep

    @cached_property
    def chunks(self) -> list[Chunk]:
        return paragraphs(self.step.body, self.step.file, self.step.body_line)

    @cached_property
    def facts(self) -> HtmlFacts:
        facts = HtmlFacts()
        facts.feed(self.email.html)
        return facts

    @cached_property
    def mentions_suicide(self) -> Chunk | None:
        return next((c for c in self.chunks if SUICIDE.search(c.text)), None)

    def finding(self, severity: str, rule: str, line: int, message: str) -> Finding:
        return Finding(severity, rule, self.step.file, line, message)

    def where(self, needle: str) -> tuple[str, int]:
        """Where a URL is written: a line of the step file, or of campaign.toml (the footer)."""
        sources = (
            (self.step.file, self.step.source),
            ("campaign.toml", self.campaign.definition.raw_toml),
        )
        for file, text in sources if needle else ():
            for number, line in enumerate(text.splitlines(), start=1):
                if needle in line:
                    return file, number
        return self.step.file, self.step.body_line


# ----------------------------------------------------------------------------- campaign rules


def footer_wording(c: CampaignCheck) -> Iterator[Finding]:
    for name, text in c.definition.footer.items():
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
    """Subject and preheader show on lock screens and in shared inboxes: calm, nothing about
    the reader's condition, and the wording rules apply to them too."""
    for name, value, line in (
        ("subject", s.email.subject, s.step.subject_line),
        ("preheader", s.email.preheader, s.step.preheader_line),
    ):
        match = READER_CONDITION.search(value)
        if match:
            yield s.finding(
                ERROR,
                f"{name}-condition",
                line,
                f"{match.group()!r} implies the reader's condition in a {name}; it shows "
                "on lock screens and in shared inboxes",
            )
        yield from word_findings(Chunk(value, s.step.file, ((0, line),)), s.campaign.allow)


def body_wording(s: StepCheck) -> Iterator[Finding]:
    for chunk in s.chunks:
        yield from word_findings(chunk, s.campaign.allow)
    yield from statistic_findings(s.chunks)


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
    postal = s.campaign.postal
    if postal and (postal not in s.email.html or postal not in s.email.text):
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


def _url_findings(s: StepCheck, url: str, what: str) -> Iterator[Finding]:
    parts = urlsplit(url)
    file, line = s.where(url)
    if parts.scheme in ("mailto", "tel", "sms") or url.startswith("#"):
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
    body_wording,
    suicide_crisis_top,
    unsubscribe_link,
    footer_in_email,
    postal_in_email,
    links,
    images,
    gmail_clipping,
    parts_differ,
)
# After every other rule, which record the allowed phrases they used.
FINAL_RULES: tuple[CampaignRule, ...] = (unused_allow,)
