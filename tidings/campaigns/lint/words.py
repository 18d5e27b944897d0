"""The wording rules (CONTENT.md "Words to flag"), and reading source text as paragraphs with
line numbers so that every finding names where it is written.

Each WordRule is a row of the table: its name, what it matches, what to say. The lint flags
the claim, not the verb: "may cure" is flagged like "cures".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tidings.campaigns.lint.findings import ERROR, WARNING, Finding

SUICIDE = re.compile(r"suicid", re.IGNORECASE)
HELP_PATH = re.compile(r"\b988\b|lifeline|crisis (?:line|text)|crisis counselor", re.IGNORECASE)
URL = re.compile(r"\]\([^)]*\)|<https?://[^>]*>|https?://\S+")


@dataclass(frozen=True)
class WordRule:
    rule: str
    pattern: re.Pattern[str]
    message: str
    severity: str = ERROR
    # When set, the rule fires only if the same sentence also matches this.
    with_pattern: re.Pattern[str] | None = None


def _rx(text: str) -> re.Pattern[str]:
    return re.compile(text, re.IGNORECASE)


WORD_RULES = (
    # Unsupported claims (CONTENT.md: the lint flags the claim, not the verb).
    WordRule(
        "claim-cure",
        _rx(r"\bcur(?:e|es|ed|ing)\b"),
        "'cure' is a claim no evidence supports here: say what studies found",
    ),
    WordRule(
        "claim-guarantee",
        _rx(r"\bguarantee(?:s|d)?\b"),
        "no treatment outcome can be guaranteed",
    ),
    WordRule(
        "claim-100-percent",
        _rx(r"\b100\s?(?:%|percent\b)"),
        "'100%' is an unsupported claim",
    ),
    WordRule(
        "claim-instant-relief",
        _rx(r"\b(?:instant(?:ly)?|immediate(?:ly)?)\s+reli(?:ef|eves?|eved)\b"),
        "'instant relief' promises what no treatment can",
    ),
    WordRule(
        "claim-no-side-effects",
        _rx(r"\b(?:no|zero|without(?:\s+any)?|free\s+of)\s+side[\s-]effects?\b"),
        "ketamine has side effects and risks: do not say otherwise",
    ),
    WordRule(
        "claim-non-addictive",
        _rx(r"\bnon[\s-]?addictive\b|\bnot\s+addictive\b"),
        "ketamine has potential for misuse: 'non-addictive' is not supported",
    ),
    WordRule(
        "claim-prevents-suicide",
        _rx(r"\bprevent(?:s|ed|ing)?\s+suicides?\b"),
        "'prevents suicide' is not supported: describe what studies found",
    ),
    WordRule(
        "claim-fda-ketamine",
        _rx(r"\bFDA[\s-]+(?:approved|approval|cleared)\b|\bapproved\s+by\s+the\s+FDA\b"),
        "only esketamine (nasal spray) is FDA-approved for depression; ketamine's use for "
        "depression is off-label",
        with_pattern=_rx(r"\bketamine\b"),
    ),
    # Safe messaging about suicide.
    WordRule(
        "stigma-committed-suicide",
        _rx(r"\bcommit(?:s|ted|ting)?\s+suicide\b"),
        "stigmatizing: say 'died by suicide' or 'took their own life'",
    ),
    WordRule(
        "stigma-attempt",
        _rx(r"\b(?:successful|unsuccessful|failed|completed)\s+(?:suicide\s+)?attempts?\b"),
        "stigmatizing: say 'suicide attempt' or 'died by suicide'",
    ),
    WordRule(
        "sensational",
        _rx(r"\bepidemic\b|\bsky-?rocket(?:s|ed|ing)?\b"),
        "sensational wording: state the facts calmly",
    ),
    WordRule(
        "suicide-as-way-out",
        _rx(
            r"\bsuicid\w*\s+(?:is|was|as|seemed|seems|became|becomes)\s+(?:a\s+|an\s+|the\s+|"
            r"their\s+|his\s+|her\s+)?(?:only\s+|last\s+)?(?:way\s+out|escape|relief|solution|"
            r"answer|option)\b|\b(?:way\s+out|escape|relief|solution|release)\s+(?:through|by|in)"
            r"\s+suicide\b"
        ),
        "never present suicide as a way out, a solution or relief",
    ),
    WordRule(
        "method-detail",
        _rx(
            r"\b(?:lethal|fatal|deadly)\s+(?:dose|amount|quantity)\b|\boverdos(?:e|ed|es|ing)\s+"
            r"on\b|\bhow\s+to\s+(?:kill|end\s+(?:my|your|their)\s+life)\b"
        ),
        "no details of methods or quantities",
    ),
)
# A condition in a subject or preheader (they show on lock screens and in shared inboxes: a
# subject about depression says to whoever sees it that the reader may be depressed), and
# "your ..." words that imply one.
CONDITION = _rx(
    r"\bdepress(?:ion|ions|ed|ive)\b|\banxi(?:ety|eties|ous)\b|\bpanic\s+(?:attacks?|disorder)\b"
    r"|\bptsd\b|\bpost[\s-]?traumatic\b|\btrauma(?:s|tic|tized|tised)?\b(?![\s-]informed)|\bocd\b"
    r"|\bobsessive[\s-]compulsive\b|\bbipolar\b|\bmanic\b|\bpsychos[ie]s\b|\bpsychotic\b"
    r"|\bschizo\w*|\baddict(?:ion|ions|ed)?\b|\bsubstance\s+(?:use|abuse)\b|\balcoholism\b"
    r"|\bchronic\s+pain\b|\bsuicid\w*|\bself[\s-]?harm\w*|\beating\s+disorders?\b"
    r"|\banorexi\w*|\bbulimi\w*|\bmental\s+illness(?:es)?\b|\bmentally\s+ill\b"
    r"|\byour\s+(?:diagnosis|illness|condition|disorder|symptoms|medications?)\b"
)

# Efficacy stated as fact (CONTENT.md): allowed only in an email that names its source.
EFFICACY = _rx(
    r"\bshown\s+to\s+(?:be\s+)?(?:(?:highly|very|more)\s+)?(?:effective|efficacious|work)\b"
    r"|\blife[\s-]?sav(?:ing|er|ers)\b|\bsave[sd]?\s+lives\b"
    r"|\bsignificant(?:ly)?\s+reduc(?:e|es|ed|ing|tions?)\b"
    r"|\b(?:clinically\s+)?proven\s+(?:to|effective|treatment)\b|\bclinically\s+proven\b"
    r"|\bhighly\s+effective\b"
)
# A named source: a year in parentheses ("(Zarate and others, 2006)", "(2019)") or "et al.".
SOURCE_NAMED = re.compile(r"\([^()]*\b(?:19|20)\d\d[a-z]?\)|\bet\s+al\b")
# A promise of safety (CONTENT.md), and what balances it in the email's own text.
SAFETY_PROMISE = _rx(
    r"\bsafe(?:ly|r|st)?\b|\bensur(?:e|es|ed|ing)\b|\brisk[\s-]free\b|\bharmless\b"
    r"|\bwithout\s+(?:any\s+)?risks?\b"
)
RISK_STATEMENT = _rx(
    r"\brisks?\b|\bside[\s-]effects?\b|\bnot\s+(?:right\s+|suitable\s+)?for\s+everyone\b"
    r"|\bscreen(?:ing|ed)\b|\badverse\b"
)
# Reducing, stopping or needing less medication (said of the reader or of patients), and
# the sentence that must go with it. Between the verb and the medication at most a few words,
# none of them a comparison or a list ("reduce symptoms faster than antidepressants" is not one).
_MEDICATION = r"(?:medications?|medicines?|antidepressants?|meds|psychiatric\s+drugs)\b"
_FEW_WORDS = r"(?:(?!(?:than|as|like|compared|and|or|but|while)\b)[\w'’-]+,?\s+){0,8}?"
_REDUCE = (
    r"reduc\w*|lower\w*|stop\w*|quit\w*|discontinu\w*|cut\w*\s+(?:back|down)|decreas\w*"
    r"|drop\w*|off|free\s+(?:of|from)"
)
MEDICATION_CHANGE = _rx(
    "|".join(
        (
            r"\btaper\w*|\bwean\w*|\b(?:come|comes|coming|came)\s+off\b",
            rf"\b(?:{_REDUCE})\s+{_FEW_WORDS}{_MEDICATION}",
            rf"\b(?:less|fewer)\s+(?:[\w'’-]+\s+){{0,2}}?{_MEDICATION}",
            rf"{_MEDICATION}[\s-](?:free|reduction)\b",
        )
    )
)
PRESCRIBER = _rx(r"\bprescriber|\bprescribing\s+clinician")


@dataclass(frozen=True)
class Chunk:
    """A paragraph of source text: its words on one line, and where each line began."""

    text: str
    file: str
    starts: tuple[tuple[int, int], ...]  # (offset in text, line in file)

    def line_at(self, offset: int) -> int:
        line = self.starts[0][1]
        for start, number in self.starts:
            if start > offset:
                break
            line = number
        return line


def paragraphs(source: str, file: str, first_line: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    parts: list[str] = []
    starts: list[tuple[int, int]] = []
    length = 0
    for number, raw in enumerate(source.splitlines(), start=first_line):
        line = URL.sub(lambda m: " " * len(m.group()), raw).strip()
        if not line:
            if parts:
                chunks.append(Chunk(" ".join(parts), file, tuple(starts)))
            parts, starts, length = [], [], 0
            continue
        starts.append((length, number))
        parts.append(line)
        length += len(line) + 1
    if parts:
        chunks.append(Chunk(" ".join(parts), file, tuple(starts)))
    return chunks


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> Iterator[tuple[int, str]]:
    start = 0
    for match in _SENTENCE_END.finditer(text):
        yield start, text[start : match.start()]
        start = match.end()
    yield start, text[start:]


class Allowances:
    """The campaign's allowed phrases, and which of them were used."""

    def __init__(self, phrases: Iterable[str]):
        self.phrases = [" ".join(p.lower().split()) for p in phrases]
        self.used: set[str] = set()

    def covers(self, text: str, start: int, end: int) -> bool:
        lowered = text.lower()
        for phrase in self.phrases:
            for match in re.finditer(re.escape(phrase), lowered):
                if match.start() <= start and end <= match.end():
                    self.used.add(phrase)
                    return True
        return False


def word_findings(chunk: Chunk, allow: Allowances) -> Iterator[Finding]:
    for rule in WORD_RULES:
        if rule.with_pattern is None:
            spans = [(m.start(), m.end(), m.group()) for m in rule.pattern.finditer(chunk.text)]
        else:
            spans = []
            for offset, sentence in sentences(chunk.text):
                if rule.with_pattern.search(sentence):
                    spans += [
                        (offset + m.start(), offset + m.end(), m.group())
                        for m in rule.pattern.finditer(sentence)
                    ]
        for start, end, found in spans:
            if allow.covers(chunk.text, start, end):
                continue
            yield Finding(
                rule.severity,
                rule.rule,
                chunk.file,
                chunk.line_at(start),
                f"{found!r}: {rule.message} (or allow the phrase in campaign.toml [lint] allow)",
            )


def statistic_findings(chunks: list[Chunk]) -> Iterator[Finding]:
    """A number next to suicide needs a path to help in the same or the next paragraph."""
    for i, chunk in enumerate(chunks):
        if not SUICIDE.search(chunk.text) or not re.search(r"\d", chunk.text):
            continue
        nearby = chunk.text + " " + (chunks[i + 1].text if i + 1 < len(chunks) else "")
        if HELP_PATH.search(nearby):
            continue
        yield Finding(
            WARNING,
            "suicide-statistic",
            chunk.file,
            chunk.line_at(SUICIDE.search(chunk.text).start()),  # type: ignore[union-attr]
            "a statistic about suicide needs a path to help next to it (988, "
            "988lifeline.org) in the same or the next paragraph",
        )
