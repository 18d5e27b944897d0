"""Turn a plain-text document of heading + paragraph pairs into a campaign folder.

The format, as the client's copy is written:

    An introduction paragraph (optional: becomes the welcome email).
    First Heading
    Its paragraph.
    Second Heading
    Its paragraph.
    A closing paragraph (optional: becomes the closing email).

A heading is a short line without final punctuation; every other non-blank line is a
paragraph. Each heading takes the paragraph that follows it.

The client's words are written so that they print as typed: a campaign file is a template,
so `{{`, `{%` and `{#` in the copy are written as expressions that print them.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from tidings.campaigns.definition import LOCK_SCREEN_WORDS, SLUG
from tidings.errors import InvalidInput

HEADING_MAX_CHARS = 90
PREHEADER_MAX_CHARS = 100
DISCREET_SUBJECT = "A note on hope and safety"
DISCREET_PREHEADER = "Support is available, and there are reasons for hope."


@dataclass
class TextDocument:
    intro: list[str] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    outro: list[str] = field(default_factory=list)


def is_heading(line: str) -> bool:
    return len(line) <= HEADING_MAX_CHARS and not line.endswith((".", ":", "!", "?", ",", ";"))


def parse_text(text: str) -> TextDocument:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    doc = TextDocument()
    heading: str | None = None
    for line in lines:
        if is_heading(line):
            if heading is not None:
                raise InvalidInput(
                    "text", f"heading {heading!r} has no paragraph before the next heading {line!r}"
                )
            heading = line
        elif heading is not None:
            doc.sections.append((heading, line))
            heading = None
        elif doc.sections:
            doc.outro.append(line)
        else:
            doc.intro.append(line)
    if heading is not None:
        raise InvalidInput("text", f"the last heading {heading!r} has no paragraph")
    if not doc.sections:
        raise InvalidInput("text", "no heading + paragraph pairs found")
    return doc


_TEMPLATE_SYNTAX = re.compile(r"\{[{%#]")


def template_literal(text: str) -> str:
    """`text` as a template that prints it as typed: 'a {{ b }}' -> "a {{ '{{' }} b }}". The
    copy is then only printed, never run: it can neither break the load nor reach anything."""
    return _TEMPLATE_SYNTAX.sub(lambda match: "{{ '" + match.group() + "' }}", text)


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:60].rstrip("-") or "step"


def first_sentence(paragraph: str, limit: int = PREHEADER_MAX_CHARS) -> str:
    sentence = re.split(r"(?<=[.!?])\s", paragraph, maxsplit=1)[0]
    if len(sentence) <= limit:
        return sentence
    return textwrap.shorten(sentence, width=limit, placeholder="…")


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def step_file(heading: str, paragraph: str) -> str:
    """The Markdown file for one heading + paragraph pair."""
    subject, preheader = heading, first_sentence(paragraph)
    mentions_suicide = bool(LOCK_SCREEN_WORDS.search(heading + " " + paragraph))
    if LOCK_SCREEN_WORDS.search(subject) or LOCK_SCREEN_WORDS.search(preheader):
        # Subjects and preheaders show on lock screens and in shared inboxes.
        subject, preheader = DISCREET_SUBJECT, DISCREET_PREHEADER
    front = [
        "+++",
        f"subject = {_toml_string(template_literal(subject))}",
        f"preheader = {_toml_string(template_literal(preheader))}",
    ]
    if mentions_suicide:
        front.append("crisis_at_top = true")
    front.append("+++")
    body = f"## {heading}\n\n{paragraph}\n"
    return "\n".join(front) + "\n" + template_literal(body)


def welcome_file(intro: list[str]) -> str:
    body = template_literal("\n\n".join(intro))
    return (
        "+++\n"
        'subject = "Welcome, and what to expect"\n'
        'preheader = "Thank you for subscribing. Here is what the coming emails cover."\n'
        'delay = "0"\n'
        "+++\n"
        f"## Welcome\n\n{body}\n"
    )


def closing_file(outro: list[str]) -> str:
    body = template_literal("\n\n".join(outro))
    return (
        "+++\n"
        'subject = "If you would like to learn more"\n'
        'preheader = "How to talk with us about whether this could be right for you."\n'
        "+++\n"
        f"## Next steps\n\n{body}\n"
    )


CAMPAIGN_TOML = """\
slug = {slug}
name = {name}
kind = "sequence"
# Subscribers are enrolled when they confirm their subscription.
trigger = "confirm"

[schedule]
every = "2d"            # between two emails; a step's `delay` overrides it
window = "09:00-17:00"  # only inside these hours, in each subscriber's own timezone
days = "mon-fri"

# Review this footer: it goes into every email.
[footer]
crisis = \"\"\"**If you are struggling or in crisis**, trained counselors are there 24/7: \\
call or text **988**, or chat at [988lifeline.org](https://988lifeline.org). \\
If anyone is in immediate danger, call **911**. \\
Replies to this email are not monitored for emergencies.\"\"\"
crisis_line = \"\"\"Help is available 24/7: call or text **988** or chat at \\
[988lifeline.org](https://988lifeline.org). In immediate danger, call **911**.\"\"\"
disclaimer = \"\"\"This email is educational information, not medical advice. Please talk \\
with a licensed clinician about whether any treatment is right for you.\"\"\"
reason = \"\"\"You are receiving this because you signed up for this email series \\
from {{{{ sender.organization }}}}. Leaving takes one click.\"\"\"
"""


def write_campaign(text: str, slug: str, out: Path, name: str | None = None) -> list[Path]:
    """Write a campaign folder for `text` into `out` (created; must not hold a campaign yet)."""
    if not SLUG.match(slug):
        raise InvalidInput("--slug", f"{slug!r} must be lower-case letters, digits and dashes")
    doc = parse_text(text)
    if (out / "campaign.toml").exists():
        raise InvalidInput("--out", f"{out} already holds a campaign; choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {
        "campaign.toml": CAMPAIGN_TOML.format(
            slug=_toml_string(slug), name=_toml_string(name or slug)
        ),
    }
    if doc.intro:
        files["00-welcome.md"] = welcome_file(doc.intro)
    for number, (heading, paragraph) in enumerate(doc.sections, start=1):
        files[f"{number:02d}-{slugify(heading)}.md"] = step_file(heading, paragraph)
    if doc.outro:
        files["99-closing.md"] = closing_file(doc.outro)
    written = []
    for filename, content in files.items():
        path = out / filename
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written
