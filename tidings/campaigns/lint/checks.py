"""What the lint's rules look at: a campaign (CampaignCheck) and one of its emails (StepCheck),
as written (each text with the file and line it comes from) and as compiled."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from tidings.campaigns.definition import CampaignDefinition, StepDefinition, toml_line
from tidings.campaigns.lint.findings import Finding
from tidings.campaigns.lint.html import HtmlFacts
from tidings.campaigns.lint.words import SUICIDE, Allowances, Chunk, paragraphs
from tidings.config import Settings
from tidings.rendering.compile import CompiledStep

# Crisis resources every email may link to, whatever the campaign lists.
CRISIS_DOMAINS = ("988lifeline.org",)
# `campaigns import-text` writes "{{" in the client's copy as {{ '{{' }} (it prints as typed).
_TEMPLATE_LITERAL = re.compile(r"\{\{ '(\{[{%#])' \}\}")


def plain_paragraph(text: str) -> str:
    """A paragraph as its words read, to compare with the client's copy: the heading marks,
    the import's template escapes and the line breaks left out."""
    text = _TEMPLATE_LITERAL.sub(lambda m: m.group(1), text)
    return " ".join(re.sub(r"^#{1,6}\s+", "", text.strip()).split())


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

    @cached_property
    def client_paragraphs(self) -> frozenset[str]:
        """The client's own paragraphs and headings (campaign.toml `client_copy`), as read by
        plain_paragraph: a line of the file, or a block between blank lines."""
        d = self.definition
        if not d.client_copy or not d.folder:
            return frozenset()
        text = (Path(d.folder) / d.client_copy).read_text(encoding="utf-8", errors="replace")
        pieces = text.splitlines() + re.split(r"\n\s*\n", text)
        return frozenset(p for p in map(plain_paragraph, pieces) if p)

    def footer_chunks(self, crisis_at_top: bool) -> list[Chunk]:
        """The footer texts an email carries (the crisis line only in those that open with it)."""
        chunks: list[Chunk] = []
        for name, text in self.definition.footer.items():
            if name != "crisis_line" or crisis_at_top:
                chunks += paragraphs(text, "campaign.toml", self.toml(name))
        return chunks

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
        """The body's paragraphs."""
        return paragraphs(self.step.body, self.step.file, self.step.body_line)

    @cached_property
    def research_chunks(self) -> list[Chunk]:
        """The front matter's research paragraph(s)."""
        step = self.step
        if not step.research:
            return []
        first = _value_line(step.source, step.research_line, step.research)
        return paragraphs(step.research, step.file, first)

    @cached_property
    def next_step_chunks(self) -> list[Chunk]:
        next_step = self.step.next_step
        if next_step is None:
            return []
        return [Chunk(next_step.text, self.step.file, ((0, self.step.next_step_line),))]

    @cached_property
    def lock_screen_chunks(self) -> list[tuple[str, Chunk]]:
        """The subject and the preheader, as compiled, each with its line."""
        return [
            (name, Chunk(value, self.step.file, ((0, line),)))
            for name, value, line in (
                ("subject", self.email.subject, self.step.subject_line),
                ("preheader", self.email.preheader, self.step.preheader_line),
            )
            if value
        ]

    @cached_property
    def own_chunks(self) -> list[Chunk]:
        """Everything this email says in its own text: body, research, next step (not the
        footer, which is the same in every email)."""
        return self.chunks + self.research_chunks + self.next_step_chunks

    @cached_property
    def every_chunk(self) -> list[Chunk]:
        """The email's own text with its subject and preheader."""
        return [c for _, c in self.lock_screen_chunks] + self.own_chunks

    @cached_property
    def facts(self) -> HtmlFacts:
        facts = HtmlFacts()
        facts.feed(self.email.html)
        return facts

    @cached_property
    def mentions_suicide(self) -> Chunk | None:
        return next((c for c in self.own_chunks if SUICIDE.search(c.text)), None)

    def finding(self, severity: str, rule: str, line: int, message: str) -> Finding:
        return Finding(severity, rule, self.step.file, line, message)

    def where(self, needle: str) -> tuple[str, int]:
        """Where a text is written: a line of the step's body, of its front matter, or of
        campaign.toml (the footer); the body's first line when none has it."""
        step_lines = list(enumerate(self.step.source.splitlines(), start=1))
        body_first = self.step.body_line - 1
        sources = (
            (self.step.file, step_lines[body_first:] + step_lines[:body_first]),
            ("campaign.toml", list(enumerate(self.campaign.definition.raw_toml.splitlines(), 1))),
        )
        for file, lines in sources if needle else ():
            for number, line in lines:
                if needle in line:
                    return file, number
        return self.step.file, self.step.body_line


def _value_line(source: str, key_line: int, value: str) -> int:
    """The line of `source` where a front-matter text `value` set at `key_line` begins (on
    the key's line, or the next one for research = \"\"\" followed by a line break)."""
    first = value.splitlines()[0].strip()[:40] if value.strip() else ""
    lines = source.splitlines()
    for number in range(key_line, min(key_line + 3, len(lines) + 1)):
        if first and first in lines[number - 1]:
            return number
    return key_line
