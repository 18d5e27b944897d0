"""The content lint: what every email must carry and which words it must not use, for an
audience that may be in crisis (../shared/CONTENT.md). Runs at `campaigns load` (errors
block the load) and as `tidings campaigns lint SLUG|DIR`.

Wording rules read the sources as written (front matter, Markdown bodies, the footer in
campaign.toml), so every finding names the file and line. Structure rules (unsubscribe
link, postal address, links, images, size, the two parts saying the same thing) read the
compiled email, which is what people receive.

A campaign accepts a flagged phrase explicitly in campaign.toml:

    [lint]
    allow = ["window of relief"]     # a finding inside one of these phrases is not reported
    require = ["crisis", "disclaimer", "risk"]   # missing footer parts are errors, not warnings
    link_domains = ["988lifeline.org"]           # besides TIDINGS_BASE_URL's and the sender's
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urlsplit

from tidings.campaigns.definition import CampaignDefinition, StepDefinition
from tidings.config import Settings
from tidings.rendering import CompiledStep, StepSource, placeholder

ERROR = "error"
WARNING = "warning"
SUBJECT_MAX = 80  # characters; subjects must be shorter
GMAIL_CLIP_BYTES = 102 * 1024  # Gmail hides everything after this much HTML
SUICIDE = re.compile(r"suicid", re.IGNORECASE)
HELP_PATH = re.compile(r"\b988\b|lifeline|crisis (?:line|text)|crisis counselor", re.IGNORECASE)
# Crisis resources every email may link to, whatever the campaign lists.
CRISIS_DOMAINS = ("988lifeline.org",)
_URL = re.compile(r"\]\([^)]*\)|<https?://[^>]*>|https?://\S+")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning"
    rule: str
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity} [{self.rule}]: {self.message}"


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
# A condition of the reader in a subject or preheader (they show on lock screens).
READER_CONDITION = _rx(
    r"\byour\s+(?:depression|anxiety|ptsd|trauma|addiction|diagnosis|illness|condition|"
    r"disorder|bipolar|ocd|suicidal\w*|symptoms|medication)\b"
)


# ----------------------------------------------------------------------------- text scanning


@dataclass(frozen=True)
class _Chunk:
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


def _paragraphs(source: str, file: str, first_line: int) -> list[_Chunk]:
    chunks: list[_Chunk] = []
    parts: list[str] = []
    starts: list[tuple[int, int]] = []
    length = 0
    for number, raw in enumerate(source.splitlines(), start=first_line):
        line = _URL.sub(lambda m: " " * len(m.group()), raw).strip()
        if not line:
            if parts:
                chunks.append(_Chunk(" ".join(parts), file, tuple(starts)))
            parts, starts, length = [], [], 0
            continue
        starts.append((length, number))
        parts.append(line)
        length += len(line) + 1
    if parts:
        chunks.append(_Chunk(" ".join(parts), file, tuple(starts)))
    return chunks


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> Iterator[tuple[int, str]]:
    start = 0
    for match in _SENTENCE_END.finditer(text):
        yield start, text[start : match.start()]
        start = match.end()
    yield start, text[start:]


class _Allowances:
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


def _word_findings(chunk: _Chunk, allow: _Allowances) -> Iterator[Finding]:
    for rule in WORD_RULES:
        if rule.with_pattern is None:
            spans = [(m.start(), m.end(), m.group()) for m in rule.pattern.finditer(chunk.text)]
        else:
            spans = []
            for offset, sentence in _sentences(chunk.text):
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


def _statistic_findings(chunks: list[_Chunk]) -> Iterator[Finding]:
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


# ----------------------------------------------------------------------------- html reading


class _HtmlFacts(HTMLParser):
    """Links, images and visible text of a compiled email (preheader and head left out)."""

    HIDDEN = frozenset({"style", "script", "title", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[dict[str, str]] = []
        self.words: list[str] = []
        self._hidden = 0
        self._preheader_depth = 0
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag in self.HIDDEN:
            self._hidden += 1
        if tag == "div":
            self._depth += 1
            if "preheader" in values.get("class", "").split() and not self._preheader_depth:
                self._preheader_depth = self._depth
        if tag == "a" and "href" in values:
            self.links.append(values["href"])
        if tag == "img":
            self.images.append(values)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN and self._hidden:
            self._hidden -= 1
        if tag == "div":
            if self._preheader_depth == self._depth:
                self._preheader_depth = 0
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and not self._preheader_depth:
            self.words.append(data)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{4,}", text.lower()) if "tidingsvar" not in w}


def _is_pixel(image: dict[str, str]) -> bool:
    style = image.get("style", "").replace(" ", "").lower()
    tiny = any(image.get(a, "").strip() in ("0", "1", "0px", "1px") for a in ("width", "height"))
    hidden = "display:none" in style or re.search(r"(?:width|height):[01]px", style) is not None
    return tiny or hidden


# ----------------------------------------------------------------------------- the lint


def allowed_domains(definition: CampaignDefinition, settings: Settings) -> set[str]:
    """Where links and images may point: the web pages, the sender's domain, the crisis
    lifeline, and what the campaign lists (subdomains included)."""
    domains = {
        *CRISIS_DOMAINS,
        (urlsplit(settings.public_base_url).hostname or "").lower(),
        definition.sender.get("from_address", settings.from_address).rpartition("@")[2].lower(),
        *definition.lint.link_domains,
    }
    return {d for d in domains if d}


def _domain_allowed(host: str, domains: set[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def lint_campaign(
    definition: CampaignDefinition,
    settings: Settings,
    compiled: list[tuple[StepSource, CompiledStep]],
) -> list[Finding]:
    """Every finding for a campaign that read and compiled cleanly, in file order."""
    findings: list[Finding] = []
    allow = _Allowances(definition.lint.allow)
    footer_chunks: list[_Chunk] = []
    for name, text in definition.footer.items():
        line = _toml_line(definition.raw_toml, name)
        footer_chunks += _paragraphs(text, "campaign.toml", line)
    for chunk in footer_chunks:
        findings += _word_findings(chunk, allow)
    findings += _footer_findings(definition, settings)
    domains = allowed_domains(definition, settings)
    postal = definition.sender.get("postal_address", settings.postal_address).strip()
    for step, (_, email) in zip(definition.steps, compiled, strict=True):
        findings += _step_findings(definition, step, email, allow, domains, postal)
    # A link in the footer is reported once, at its line of campaign.toml.
    lint_line = definition.lint.line
    for phrase in allow.phrases:
        if phrase not in allow.used:
            findings.append(
                Finding(
                    WARNING,
                    "unused-allow",
                    "campaign.toml",
                    lint_line,
                    f"allowed phrase {phrase!r} is never needed: remove it from [lint] allow",
                )
            )
    seen: set[Finding] = set()
    unique = [f for f in findings if not (f in seen or seen.add(f))]  # type: ignore[func-returns-value]
    return sorted(unique, key=lambda f: (f.file != "campaign.toml", f.file, f.line))


def _footer_findings(definition: CampaignDefinition, settings: Settings) -> list[Finding]:
    findings = []
    what = {
        "crisis": "the crisis block (988, 988lifeline.org, 911)",
        "disclaimer": "the medical disclaimer",
        "risk": "the risk note",
        "reason": "why the reader gets this email",
    }
    for name, description in what.items():
        if definition.footer.get(name, "").strip():
            continue
        required = name in definition.lint.require
        findings.append(
            Finding(
                ERROR if required else WARNING,
                f"footer-{name}",
                "campaign.toml",
                _toml_line(definition.raw_toml, "footer", table=True),
                f"no [footer] {name}: every email should carry {description}"
                + ("" if required else " (add it, or the lint keeps warning)"),
            )
        )
    if "crisis_line" in definition.lint.require and not definition.footer.get("crisis_line"):
        findings.append(
            Finding(
                ERROR,
                "footer-crisis_line",
                "campaign.toml",
                _toml_line(definition.raw_toml, "footer", table=True),
                "no [footer] crisis_line: emails that mention suicide open with it",
            )
        )
    postal = definition.sender.get("postal_address", settings.postal_address)
    if not postal.strip():
        findings.append(
            Finding(
                WARNING,
                "postal-address",
                "campaign.toml",
                _toml_line(definition.raw_toml, "sender", table=True),
                "no postal address (TIDINGS_POSTAL_ADDRESS or [sender] postal_address): the law "
                "requires one in marketing email, and sending refuses to start without it",
            )
        )
    return findings


def _step_findings(
    definition: CampaignDefinition,
    step: StepDefinition,
    email: CompiledStep,
    allow: _Allowances,
    domains: set[str],
    postal: str,
) -> list[Finding]:
    file = step.file
    findings: list[Finding] = []

    def add(severity: str, rule: str, line: int, message: str) -> None:
        findings.append(Finding(severity, rule, file, line, message))

    # Subject and preheader: calm, short, nothing about the reader's condition.
    if len(email.subject) >= SUBJECT_MAX:
        add(
            ERROR,
            "subject-length",
            step.subject_line,
            f"subject has {len(email.subject)} characters; keep it under {SUBJECT_MAX} "
            "(inboxes and lock screens cut the rest)",
        )
    if not email.preheader:
        add(
            WARNING,
            "preheader-missing",
            step.subject_line,
            "no preheader: inboxes then show the first words of the body instead "
            '(add: preheader = "...")',
        )
    for field_name, value, line in (
        ("subject", email.subject, step.subject_line),
        ("preheader", email.preheader, step.preheader_line),
    ):
        match = READER_CONDITION.search(value)
        if match:
            add(
                ERROR,
                f"{field_name}-condition",
                line,
                f"{match.group()!r} implies the reader's condition in a {field_name}; it shows "
                "on lock screens and in shared inboxes",
            )
        findings += _word_findings(_Chunk(value, file, ((0, line),)), allow)

    # The body as written.
    chunks = _paragraphs(step.body, file, step.body_line)
    for chunk in chunks:
        findings += _word_findings(chunk, allow)
    findings += _statistic_findings(chunks)
    mentions = next((c for c in chunks if SUICIDE.search(c.text)), None)
    if mentions is not None and not (step.crisis_at_top and definition.footer.get("crisis_line")):
        add(
            ERROR,
            "suicide-crisis-top",
            mentions.line_at(SUICIDE.search(mentions.text).start()),  # type: ignore[union-attr]
            "this email mentions suicide: it must open with the crisis line (front matter "
            "crisis_at_top = true, and [footer] crisis_line in campaign.toml)",
        )

    # The compiled email, as people receive it.
    facts = _HtmlFacts()
    facts.feed(email.html)
    unsubscribe = placeholder("unsubscribe_url")
    if unsubscribe not in facts.links or unsubscribe not in email.text:
        add(ERROR, "unsubscribe-link", 1, "no unsubscribe link in both the html and text parts")
    text_words = _words(email.text)
    for name in ("crisis", "disclaimer", "risk"):
        fragment = _URL.sub(" ", re.sub(r"{[{%].*?[%}]}", " ", definition.footer.get(name, "")))
        if _words(fragment) - text_words:
            add(ERROR, f"footer-{name}", 1, f"the {name} footer does not appear in the email")
    if postal and (postal not in email.html or postal not in email.text):
        add(ERROR, "postal-address", 1, "the postal address does not appear in the email")
    for href in facts.links:
        if href.startswith("TIDINGSVAR"):
            continue  # the reader's own links, under TIDINGS_BASE_URL
        _check_url(href, "link", definition, step, domains, findings)
    tracking_ok = definition.lint.tracking and mentions is None
    for image in facts.images:
        src = image.get("src", "")
        file, line = _where(definition, step, src)
        if not image.get("alt", "").strip():
            findings.append(
                Finding(ERROR, "image-alt", file, line, f"image {src!r} has no alt text")
            )
        host = (urlsplit(src).hostname or "").lower()
        third_party = bool(host) and not _domain_allowed(host, domains)
        if (_is_pixel(image) or third_party) and not tracking_ok:
            findings.append(
                Finding(
                    ERROR,
                    "tracking-pixel",
                    file,
                    line,
                    f"image {src!r} looks like a tracking pixel or loads from another site"
                    + (
                        ": never in an email that mentions suicide"
                        if mentions is not None
                        else ": no tracking by default ([lint] tracking = true to allow it)"
                    ),
                )
            )
        elif src:
            _check_url(src, "image", definition, step, domains, findings)
    size = len(email.html.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        add(
            ERROR,
            "gmail-clipping",
            1,
            f"the html is {size // 1024} KB; Gmail clips emails over 102 KB, hiding the footer "
            "with the unsubscribe link and the crisis block",
        )
    missing = sorted(_words(" ".join(facts.words)) - text_words)
    if missing:
        add(
            WARNING,
            "parts-differ",
            step.body_line,
            "the html part says what the text part does not: " + ", ".join(missing[:8]),
        )
    return findings


def _check_url(
    url: str,
    what: str,
    definition: CampaignDefinition,
    step: StepDefinition,
    domains: set[str],
    findings: list[Finding],
) -> None:
    parts = urlsplit(url)
    file, line = _where(definition, step, url)

    def report(severity: str, rule: str, line: int, message: str) -> None:
        findings.append(Finding(severity, rule, file, line, message))

    if parts.scheme in ("mailto", "tel", "sms") or url.startswith("#"):
        return
    if parts.scheme == "http":
        report(ERROR, "link-https", line, f"{what} {url!r} is not https")
    elif parts.scheme != "https":
        report(ERROR, "link-scheme", line, f"{what} {url!r}: only https, mailto and tel links")
        return
    host = (parts.hostname or "").lower()
    if not _domain_allowed(host, domains):
        report(
            ERROR,
            "link-domain",
            line,
            f"{what} to {host!r}, which is not an allowed domain ({', '.join(sorted(domains))}); "
            "add it to [lint] link_domains if it belongs there",
        )


def _where(definition: CampaignDefinition, step: StepDefinition, needle: str) -> tuple[str, int]:
    """Where a URL is written: a line of the step file, or of campaign.toml (the footer)."""
    if needle:
        for file, text in ((step.file, step.source), ("campaign.toml", definition.raw_toml)):
            for number, line in enumerate(text.splitlines(), start=1):
                if needle in line:
                    return file, number
    return step.file, step.body_line


def _toml_line(raw: str, key: str, table: bool = False) -> int:
    pattern = rf"^[ \t]*\[\s*{re.escape(key)}\s*\]" if table else rf"^[ \t]*{re.escape(key)}\s*="
    match = re.search(pattern, raw, re.MULTILINE)
    return raw.count("\n", 0, match.start()) + 1 if match else 1


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]
