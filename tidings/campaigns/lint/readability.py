"""Readability of what the campaign adds to the client's copy (CONTENT.md: reading grade 8 or
lower for the text the campaign adds), scored per email with textstat's Flesch-Kincaid grade.

What is scored in one email: its research paragraph, its next step's text, its body paragraphs
that are not the client's (a paragraph found word for word in campaign.toml's `client_copy`
file is the client's, and exempt; without `client_copy` every paragraph is the campaign's),
and the footer texts it carries. Headings are left out (they are not sentences), and so are
citations in parentheses ("(Zarate and others, 2006)": names and years, not prose), links'
URLs, web addresses and template expressions. Fewer than MIN_WORDS words are not scored: the
grade of a few sentences says little.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from tidings.campaigns.lint.checks import StepCheck, plain_paragraph
from tidings.campaigns.lint.findings import WARNING, Finding
from tidings.campaigns.lint.words import Chunk, sentences

GRADE_MAX = 8.0
MIN_WORDS = 30

# What is not prose, each replaced by a word of one syllable or by blanks (the same length,
# so that offsets still name the line). A citation: parentheses with a year or "et al.".
_CITATION = re.compile(r"\([^()]*(?:\b(?:19|20)\d\d[a-z]?\b|\bet\s+al\b)[^()]*\)")
_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_ADDRESS = re.compile(
    r"\b[\w-]+(?:\.[\w-]+)*\.(?:org|com|net|gov|edu|us|info|io)\b(?:/\S*)?|\S+@\S+\.\w+"
)
_MARKUP = re.compile(r"<[^>]*>|\*\*|__|[*`\[\]>#]")
_HEADING = re.compile(r"^\s*#{1,6}\s")


@dataclass(frozen=True)
class _Sentence:
    text: str  # as scored
    file: str
    line: int


def prose(text: str) -> str:
    """`text` as a reader reads its sentences, the same length (offsets kept)."""

    def blank(match: re.Match[str]) -> str:
        return " " * len(match.group())

    def word(match: re.Match[str]) -> str:
        return "it".ljust(len(match.group()))

    text = _CITATION.sub(blank, text)
    text = _TEMPLATE.sub(word, text)
    text = _ADDRESS.sub(word, text)
    return _MARKUP.sub(blank, text)


def added_chunks(s: StepCheck) -> list[Chunk]:
    """The paragraphs of this email that the campaign wrote."""
    client = s.campaign.client_paragraphs
    body = [
        c for c in s.chunks if not _HEADING.match(c.text) and plain_paragraph(c.text) not in client
    ]
    return (
        s.research_chunks
        + s.next_step_chunks
        + body
        + s.campaign.footer_chunks(s.step.crisis_at_top)
    )


def _sentences(chunks: list[Chunk]) -> Iterator[_Sentence]:
    for chunk in chunks:
        readable = prose(chunk.text)
        for offset, sentence in sentences(readable):
            words = " ".join(sentence.split())
            if not words:
                continue
            if not words.endswith((".", "!", "?")):
                words += "."  # a next step's text, a paragraph ending in a colon
            yield _Sentence(words, chunk.file, chunk.line_at(offset))


def readability(s: StepCheck) -> Iterator[Finding]:
    """The Flesch-Kincaid grade of the text this email adds is at most GRADE_MAX."""
    import textstat  # type: ignore[import-untyped]

    added = added_chunks(s)
    found = list(_sentences(added))
    text = " ".join(sentence.text for sentence in found)
    words = textstat.lexicon_count(text)
    if words < MIN_WORDS:
        return
    grade = round(float(textstat.flesch_kincaid_grade(text)), 1)  # as reported: 8.04 is 8.0
    if grade <= GRADE_MAX:
        return
    hardest = max(found, key=lambda sentence: float(textstat.flesch_kincaid_grade(sentence.text)))
    quoted = hardest.text if len(hardest.text) <= 90 else hardest.text[:87] + "..."
    own = [c for c in added if c.file == s.step.file]  # the research paragraph first
    line = own[0].line_at(0) if own else s.step.body_line
    yield s.finding(
        WARNING,
        "readability",
        line,
        f"the {words} words this email adds to the client's copy (research, next step, its "
        f"own paragraphs, the footer) read at grade {grade:.1f}; keep them at {GRADE_MAX:g} or "
        "lower with shorter sentences and everyday words. The hardest sentence is at "
        f"{hardest.file}:{hardest.line}: {quoted!r}",
    )
