"""Turn a plain-text document of heading + paragraph pairs into a campaign folder.

The format, as the client's copy is written:

    An introduction paragraph (optional: becomes part of the welcome email).
    First Heading
    Its paragraph.
    Second Heading
    Its paragraph.
    A closing paragraph (optional: becomes part of the closing email).

A heading is a short line without final punctuation; every other non-blank line is a
paragraph. Each heading takes the paragraph that follows it.

What is written is the client's part of the campaign, in the structure every campaign of a
sensitive audience has (CONTENT.md "What every email of a series is"): each email's body is
the client's heading (`# Heading`) and paragraph, word for word; the text itself is kept as
SOURCE.txt (campaign.toml `client_copy`: the lint exempts it from the readability rule and
the shipped campaign's tests keep it verbatim). The framing is left for the writer, in its
place: each step's `research = ""` (what the research says, and its limits, the source
named) and `next_step`, campaign.toml's [letter] (greeting, sign-off) and [contact] stubs.

The client's words are written so that they print as typed: a campaign file is a template,
so `{{`, `{%` and `{#` in the copy are written as expressions that print them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tidings.campaigns.definition import LOCK_SCREEN_WORDS, SLUG
from tidings.campaigns.lint.words import CONDITION
from tidings.errors import InvalidInput
from tidings.files import write_public

HEADING_MAX_CHARS = 90
SUBJECT_MAX_CHARS = 70
CLIENT_COPY = "SOURCE.txt"
# Subjects and preheaders show on lock screens and in shared inboxes: an email whose heading
# names suicide or a condition gets these instead (its body keeps the heading).
DISCREET_SUBJECT = "A note on hope and safety"
DISCREET_PREHEADER = "Support is available, and there are reasons for hope."
NEUTRAL_PREHEADER = "What the research says, and its limits."
# Each email's one call to action until the writer picks a better one ([contact] website).
DEFAULT_NEXT_STEP = '{ text = "Visit our website", url = "{{ contact.website }}" }'


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


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lock_screen_texts(heading: str) -> tuple[str, str]:
    """The subject and preheader for a heading: the heading, and a preheader that says what
    the email adds, unless the heading would tell whoever sees the inbox about the reader
    (suicide, a condition). A preheader is not cut from the first sentence (CONTENT.md)."""
    if LOCK_SCREEN_WORDS.search(heading):
        return DISCREET_SUBJECT, DISCREET_PREHEADER
    if CONDITION.search(heading) or len(heading) > SUBJECT_MAX_CHARS:
        return "One more thing to know about this treatment", NEUTRAL_PREHEADER
    # "Rapid Relief of Symptoms" -> "rapid relief of symptoms"; "OCD" stays as it is.
    topic = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in heading.split())
    return heading, f"What the research says about {topic}, and its limits."


def _front(subject: str, preheader: str, *extra: str) -> str:
    return "\n".join(
        [
            "+++",
            f"subject = {_toml_string(template_literal(subject))}",
            "# What shows after the subject in the inbox: write it for the reader.",
            f"preheader = {_toml_string(template_literal(preheader))}",
            *extra,
            "# What the research says, and its limits, in plain words, the source named:",
            '# research = """In trials, ... (Author and others, 2020). It does not show ..."""',
            'research = ""',
            "# The one thing this email asks the reader to do.",
            f"next_step = {DEFAULT_NEXT_STEP}",
            "+++",
        ]
    )


def step_file(heading: str, paragraph: str) -> str:
    """The Markdown file for one heading + paragraph pair: the client's words as the body."""
    subject, preheader = lock_screen_texts(heading)
    extra = ["crisis_at_top = true"] if LOCK_SCREEN_WORDS.search(heading + paragraph) else []
    body = f"# {heading}\n\n{paragraph}\n"
    return _front(subject, preheader, *extra) + "\n" + template_literal(body)


def welcome_file(intro: list[str]) -> str:
    """The welcome: sent at once after confirming; the client's introduction, then what the
    reader will get (the count follows the folder), how often, and how to leave."""
    front = _front(
        "Welcome, and what to expect",
        "What the next emails cover, how often they come, and how to pause or leave.",
        'delay = "0"',
        "# Sent as soon as the reader confirms, at any hour: not held to the send window.",
        "send_window = false",
    )
    intro_text = template_literal("\n\n".join(intro))
    what_comes = (
        "Here is what to expect. After this email, we will send you {{ step.total - 1 }} "
        "more, one every two to three days, on weekdays. Each one covers one topic.\n\n"
        "You can pause the series or leave it at any time. The links are at the bottom of "
        "every email. Leaving takes one click."
    )
    thanks = "Thank you for confirming your subscription."
    return f"{front}\n# Welcome\n\n{thanks}\n\n{intro_text}\n\n{what_comes}\n"


def closing_file(outro: list[str]) -> str:
    """The closing email: the client's closing words and the way to act on them."""
    front = _front(
        "If you would like to learn more",
        "How to reach us, when we answer, and how to book a first conversation.",
    ).replace(
        DEFAULT_NEXT_STEP,
        '{ text = "Book a first conversation", url = "{{ contact.booking_url }}" }',
    )
    body = template_literal("\n\n".join(outro))
    return (
        f"{front}\n# Next steps\n\nThis is the last email of the series. Thank you for reading.\n\n"
        f"{body}\n\nYou can call us at {{{{ contact.phone }}}}, {{{{ contact.office_hours }}}}.\n"
    )


CAMPAIGN_TOML = """\
slug = {slug}
name = {name}
kind = "sequence"
# Subscribers are enrolled when they confirm their subscription.
trigger = "confirm"
# The client's own text: its paragraphs appear in the emails word for word.
client_copy = "SOURCE.txt"

[schedule]
every = "2d"            # between two emails; a step's `delay` overrides it
window = "09:00-17:00"  # only inside these hours, in each subscriber's own timezone
days = "mon-fri"
skip_holidays = "US"    # no email on a public holiday of the reader's country

# How every email opens and closes. The signature: a named person or team.
[letter]
greeting = "Dear {{first_name}},"
greeting_fallback = "Hello,"
signoff = "With care,"
signature = "The care team"

# How a reader reaches you. PLACEHOLDERS: replace with your own before launch.
[contact]
phone = "(555) 555-0142"
website = "https://www.example.org/"
booking_url = "https://www.example.org/book"
office_hours = "Monday to Friday, 9 am to 5 pm"

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

[lint]
# Where [contact] links go (replace with your own domain).
link_domains = ["example.org"]
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
        CLIENT_COPY: text,
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
        written.append(write_public(path, content))
    return written
