"""A campaign is a folder: campaign.toml plus one Markdown file per email.

    kap-benefits/
      campaign.toml           slug, name, kind, trigger, client_copy, [schedule], [sender],
                              [letter], [contact], [footer], [lint]
      00-welcome.md           +++ TOML front matter +++ then the body (Markdown + Jinja)
      01-rapid-relief.md
      ...
      REVIEW.md               notes for people: a file named in capitals is not an email

Emails go out in file-name order. A step's key (stable across edits and renames) is its
front matter's `key`, or the file name without the leading number: `01-rapid-relief.md` is
`rapid-relief`. This module only reads and checks the folder; it knows no database.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidings.campaigns.audience import Audience
from tidings.campaigns.calendars import supported_countries
from tidings.campaigns.windows import SendWindow, parse_delay
from tidings.errors import CampaignError
from tidings.rendering.compile import FOOTER_FIELDS
from tidings.states import CampaignKind, CampaignTrigger

KINDS = tuple(CampaignKind)
TRIGGERS = tuple(CampaignTrigger)
SENDER_FIELDS = ("organization", "postal_address", "from_name", "from_address", "reply_to")
STEP_FIELDS = {
    "key",
    "subject",
    "preheader",
    "delay",
    "crisis_at_top",
    "research",
    "next_step",
    "send_window",
}
# [letter]: what frames every email as a letter. `greeting` names the reader ({first_name});
# `greeting_fallback` is used when there is no first name; the sign-off and signature close it.
LETTER_FIELDS = ("greeting", "greeting_fallback", "signoff", "signature")
# [contact]: how a reader reaches the sender (a call to action in the emails that ask for it).
CONTACT_FIELDS = ("phone", "website", "booking_url", "office_hours")
SCHEDULE_FIELDS = ("every", "window", "days", "skip_holidays")
# A country's public holidays, as the `holidays` package names countries: ISO 3166 alpha-2.
COUNTRY = re.compile(r"^[A-Z]{2}$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# Words that must never reach a subject or preheader: they show on lock screens.
LOCK_SCREEN_WORDS = re.compile(r"suicid", re.IGNORECASE)


# What [lint] may list in `require`: footer parts every email of the campaign must carry.
LINT_REQUIRABLE = ("crisis", "crisis_line", "disclaimer", "risk", "reason")
LINT_FIELDS = ("allow", "require", "link_domains", "tracking")


@dataclass(frozen=True)
class LintOptions:
    """campaign.toml's [lint]: what the content lint (campaigns/lint.py) expects of it."""

    allow: tuple[str, ...] = ()  # phrases accepted here although a rule flags their words
    require: tuple[str, ...] = ()  # footer parts whose absence is an error, not a warning
    link_domains: tuple[str, ...] = ()  # besides TIDINGS_BASE_URL's host and the sender's
    tracking: bool = False  # images from other sites (pixels) are refused unless true
    line: int = 1  # line of [lint] in campaign.toml


@dataclass(frozen=True)
class NextStep:
    """The one thing an email asks the reader to do: a button (html), a line (text)."""

    text: str
    url: str  # may use {{ contact.booking_url }} and the like


@dataclass(frozen=True)
class StepDefinition:
    key: str
    file: str
    subject: str
    preheader: str
    delay_seconds: int
    crisis_at_top: bool
    body: str  # Markdown with Jinja, after the front matter
    body_line: int  # 1-based line of the file where `body` starts
    source: str  # the whole file, as written
    subject_line: int = 2
    preheader_line: int = 2
    # "What the research says, and its limits": Markdown with Jinja, the source(s) named.
    research: str = ""
    research_line: int = 2
    next_step: NextStep | None = None
    next_step_line: int = 2
    # False: sent as soon as due, at any hour (a welcome right after confirming), not held
    # to the campaign's send window.
    send_window: bool = True


@dataclass(frozen=True)
class CampaignDefinition:
    slug: str
    name: str
    kind: str
    trigger: str
    window: SendWindow
    every_seconds: int
    sender: dict[str, str] = field(default_factory=dict)
    footer: dict[str, str] = field(default_factory=dict)
    steps: list[StepDefinition] = field(default_factory=list)
    folder: str | None = None
    raw_toml: str = ""
    audience: dict[str, Any] = field(default_factory=dict)  # broadcasts: see audience.py
    lint: LintOptions = field(default_factory=LintOptions)
    letter: dict[str, str] = field(default_factory=dict)
    contact: dict[str, str] = field(default_factory=dict)
    skip_holidays: str | None = None  # a country code: no email on its public holidays
    client_copy: str | None = None  # the client's own text (a file of the folder), verbatim

    def as_stored(self) -> dict[str, Any]:
        """What Campaign.definition keeps: everything but the steps."""
        window = {
            "start": self.window.start.isoformat(),
            "end": self.window.end.isoformat(),
            "days": sorted(self.window.days),
            "skip_holidays": self.skip_holidays,
        }
        return {
            "window": window,
            "every_seconds": self.every_seconds,
            "sender": self.sender,
            "footer": self.footer,
            "audience": self.audience,
            "letter": self.letter,
            "contact": self.contact,
        }


def read_campaign(folder: str | Path) -> CampaignDefinition:
    """Read and check a campaign folder. Raises CampaignError listing every problem found."""
    folder = Path(folder)
    toml_path = folder / "campaign.toml"
    if not toml_path.is_file():
        raise CampaignError([f"{folder}: no campaign.toml here (is this a campaign folder?)"])
    raw = toml_path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError([f"campaign.toml: {exc}"]) from exc
    toml = _Toml(raw, data)
    slug = str(data.get("slug", ""))
    if not SLUG.match(slug):
        toml.problem("slug", f"slug {slug!r} must be lower-case letters, digits and dashes")
    kind = data.get("kind", CampaignKind.SEQUENCE)
    if kind not in KINDS:
        toml.problem("kind", f"kind {kind!r} must be one of {', '.join(KINDS)}")
    default_trigger = (
        CampaignTrigger.CONFIRM if kind == CampaignKind.SEQUENCE else CampaignTrigger.MANUAL
    )
    trigger = data.get("trigger", default_trigger)
    if trigger not in TRIGGERS:
        toml.problem("trigger", f"trigger {trigger!r} must be one of {', '.join(TRIGGERS)}")
    window, every, skip_holidays = toml.schedule()
    sender, footer = toml.table("sender", SENDER_FIELDS), toml.table("footer", FOOTER_FIELDS)
    letter, contact = toml.table("letter", LETTER_FIELDS), toml.contact()
    audience, lint = toml.audience(kind), toml.lint()
    client_copy = toml.client_copy(folder)
    steps = _read_steps(folder, kind, every, toml.problems)
    if toml.problems:
        raise CampaignError(toml.problems)
    return CampaignDefinition(
        slug=slug,
        name=str(data.get("name") or slug),
        kind=kind,
        trigger=trigger,
        window=window,
        every_seconds=every,
        sender=sender,
        footer=footer,
        steps=steps,
        folder=str(folder.resolve()),
        raw_toml=raw,
        audience=audience,
        lint=lint,
        letter=letter,
        contact=contact,
        skip_holidays=skip_holidays,
        client_copy=client_copy,
    )


class _Toml:
    """campaign.toml as read, and the problems found in it so far (each with its line)."""

    def __init__(self, raw: str, data: dict[str, Any]):
        self.raw = raw
        self.data = data
        self.problems: list[str] = []

    def problem(self, key: str, message: str, table: bool = False) -> None:
        self.problems.append(f"campaign.toml:{toml_line(self.raw, key, table)}: {message}")

    def schedule(self) -> tuple[SendWindow, int, str | None]:
        schedule = self.data.get("schedule", {})
        window, every = SendWindow(), 0
        for unknown in sorted(set(schedule) - set(SCHEDULE_FIELDS)):
            self.problem(unknown, f"unknown [schedule] field {unknown!r}")
        holidays = schedule.get("skip_holidays")
        if holidays is not None and not (isinstance(holidays, str) and COUNTRY.match(holidays)):
            self.problem(
                "skip_holidays",
                f'skip_holidays: expected a country code such as "US", got {holidays!r}',
            )
            holidays = None
        elif holidays is not None and holidays not in supported_countries():
            self.problem(
                "skip_holidays",
                f"skip_holidays: the holidays package knows no country {holidays!r}",
            )
            holidays = None
        try:
            window = SendWindow.parse(schedule.get("window"), schedule.get("days"))
        except ValueError as exc:
            self.problem("window" if "window" in str(exc) else "days", str(exc))
        try:
            every = parse_delay(schedule.get("every", "1d"))
        except ValueError as exc:
            self.problem("every", str(exc))
        return window, every, holidays

    def contact(self) -> dict[str, str]:
        contact = self.table("contact", CONTACT_FIELDS)
        for name in ("website", "booking_url"):
            if name in contact and not re.match(r"^https?://[^\s/]+\S*$", contact[name]):
                self.problem(
                    name, f"contact.{name}: expected an http(s) URL, got {contact[name]!r}"
                )
        return contact

    def client_copy(self, folder: Path) -> str | None:
        name = self.data.get("client_copy")
        if name is None:
            return None
        if not isinstance(name, str) or "/" in name or not (folder / name).is_file():
            self.problem("client_copy", f"client_copy: no file {name!r} in the campaign folder")
            return None
        return name

    def table(self, name: str, known: tuple[str, ...]) -> dict[str, str]:
        values = {k: str(v) for k, v in self.data.get(name, {}).items()}
        unknown = sorted(set(values) - set(known))
        if unknown:
            self.problem(unknown[0], f"unknown [{name}] field(s): {unknown}")
        return values

    def audience(self, kind: str) -> dict[str, Any]:
        if "audience" not in self.data:
            return {}
        if kind != CampaignKind.BROADCAST:
            self.problem(
                "audience",
                "[audience] is for broadcasts; a sequence goes to the subscribers enrolled in it",
                table=True,
            )
        try:
            return Audience.parse(self.data["audience"]).as_stored()
        except ValueError as exc:
            line = _field_line(self.raw, "audience", str(exc))
            self.problems.append(f"campaign.toml:{line}: {exc}")
            return {}

    def lint(self) -> LintOptions:
        line = toml_line(self.raw, "lint", table=True)
        try:
            return _lint_options(self.data.get("lint", {}), line)
        except ValueError as exc:
            self.problems.append(f"campaign.toml:{line}: {exc}")
            return LintOptions()


def _is_note(path: Path) -> bool:
    """Not an email: hidden or set aside (`_draft.md`), or a note for people named in
    capitals (REVIEW.md, README.md)."""
    return path.name.startswith(("_", ".")) or (path.stem.isupper() and path.stem.isalpha())


def _read_steps(folder: Path, kind: str, every: int, problems: list[str]) -> list[StepDefinition]:
    """The step files, in file-name order; the first waits 0 unless it says otherwise, the
    others the schedule's `every`."""
    steps: list[StepDefinition] = []
    files = sorted(p for p in folder.glob("*.md") if not _is_note(p))
    if not files:
        problems.append(f"{folder}: no step files (*.md)")
    for number, path in enumerate(files):
        step = read_step_file(path, default_delay=0 if number == 0 else every, problems=problems)
        if step is not None:
            steps.append(step)
    seen: dict[str, str] = {}
    for step in steps:
        if step.key in seen:
            problems.append(f"{step.file}:1: key {step.key!r} is also used by {seen[step.key]}")
        seen[step.key] = step.file
    if kind == CampaignKind.BROADCAST and len(files) > 1:
        problems.append(f"{folder}: a broadcast has exactly one email, found {len(files)}")
    return steps


def _lint_options(data: Any, line: int) -> LintOptions:
    if not isinstance(data, dict):
        raise ValueError("[lint] must be a table")
    unknown = sorted(set(data) - set(LINT_FIELDS))
    if unknown:
        raise ValueError(f"unknown [lint] field(s) {unknown} (known: {', '.join(LINT_FIELDS)})")
    lists: dict[str, tuple[str, ...]] = {}
    for name in ("allow", "require", "link_domains"):
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError(f"lint.{name}: expected a list of texts")
        lists[name] = tuple(v.strip() for v in value)
    bad = sorted(set(lists["require"]) - set(LINT_REQUIRABLE))
    if bad:
        raise ValueError(f"lint.require: unknown {bad} (known: {', '.join(LINT_REQUIRABLE)})")
    tracking = data.get("tracking", False)
    if not isinstance(tracking, bool):
        raise ValueError("lint.tracking: expected true or false")
    return LintOptions(
        allow=lists["allow"],
        require=lists["require"],
        link_domains=tuple(d.lower().lstrip(".") for d in lists["link_domains"]),
        tracking=tracking,
        line=line,
    )


def _field_line(text: str, table: str, message: str) -> int:
    """The line of the field a message names ("audience.timezones: ..."), searched from
    the table's header; the header's line if not found."""
    start = toml_line(text, table, table=True)
    named = re.match(rf"{re.escape(table)}\.(\w+)", message)
    if named:
        lines = text.splitlines()
        for number in range(start, len(lines) + 1):
            if re.match(rf"\s*{re.escape(named.group(1))}\s*[=.]", lines[number - 1]):
                return number
    return start


def toml_line(text: str, key: str, table: bool = False) -> int:
    """The 1-based line of TOML text where `key = ...` is set, or with table=True where the
    table `[key]` starts (or a dotted `key.x = ...` / `[key.x]`); 1 when absent. The one line
    finder for campaign.toml and front matter: every problem found names its line."""
    if table:
        pattern = rf"^[ \t]*\[\s*{re.escape(key)}\s*[\].]|^[ \t]*{re.escape(key)}\."
    else:
        pattern = rf"^[ \t]*{re.escape(key)}\s*="
    match = re.search(pattern, text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else 1


# Long: one check per front-matter field, in the order a writer reads them.
def read_step_file(path: Path, default_delay: int, problems: list[str]) -> StepDefinition | None:
    name = path.name
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{name}:1: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    lines = source.splitlines(keepends=True)
    if not lines or lines[0].strip() != "+++":
        problems.append(f"{name}:1: must start with a +++ line opening the TOML front matter")
        return None
    try:
        close = next(i for i in range(1, len(lines)) if lines[i].strip() == "+++")
    except StopIteration:
        problems.append(f"{name}:1: the front matter opened by +++ is never closed")
        return None
    front_text = "".join(lines[1:close])
    try:
        front = tomllib.loads(front_text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{name}:{_toml_error_line(exc) + 1}: front matter: {exc}")
        return None

    def problem(key: str, message: str) -> None:
        problems.append(f"{name}:{toml_line(front_text, key) + 1}: {message}")

    before = len(problems)
    for unknown in sorted(set(front) - STEP_FIELDS):
        problem(unknown, f"unknown front matter field {unknown!r}")
    key = str(front.get("key") or re.sub(r"^\d+[a-z]?[-_]", "", path.stem))
    if not SLUG.match(key):
        problem("key", f"step key {key!r} must be lower-case letters, digits and dashes")
    subject = front.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        problem("subject", 'missing subject (add: subject = "...")')
        subject = ""
    preheader = front.get("preheader", "")
    if not isinstance(preheader, str):
        problem("preheader", "preheader must be a string")
        preheader = ""
    for field_name, value in (("subject", subject), ("preheader", preheader)):
        if "\n" in value or "\r" in value:
            problem(field_name, f"{field_name} must be one line")
        if LOCK_SCREEN_WORDS.search(value):
            problem(
                field_name,
                f"{field_name} mentions suicide; it shows on lock screens: use a discreet one "
                "and keep the heading in the body",
            )
    delay = default_delay
    if "delay" in front:
        try:
            delay = parse_delay(front["delay"])
        except ValueError as exc:
            problem("delay", str(exc))
    crisis_at_top = front.get("crisis_at_top", False)
    send_window = front.get("send_window", True)
    for flag, value in (("crisis_at_top", crisis_at_top), ("send_window", send_window)):
        if not isinstance(value, bool):
            problem(flag, f"{flag} must be true or false")
    research = front.get("research", "")
    if not isinstance(research, str):
        problem("research", 'research must be a text (research = """...""")')
        research = ""
    next_step = _next_step(front.get("next_step"), lambda message: problem("next_step", message))
    if len(problems) > before:
        return None
    return StepDefinition(
        key=key,
        file=name,
        subject=subject.strip(),
        preheader=preheader.strip(),
        delay_seconds=delay,
        crisis_at_top=bool(crisis_at_top),
        body="".join(lines[close + 1 :]),
        body_line=close + 2,
        source=source,
        subject_line=toml_line(front_text, "subject") + 1,
        preheader_line=toml_line(front_text, "preheader") + 1,
        research=research.strip(),
        research_line=toml_line(front_text, "research") + 1,
        next_step=next_step,
        next_step_line=toml_line(front_text, "next_step") + 1,
        send_window=bool(send_window),
    )


def _next_step(value: Any, problem: Any) -> NextStep | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"text", "url"}
        or not all(isinstance(v, str) and v.strip() for v in value.values())
    ):
        problem('next_step: expected { text = "...", url = "https://..." }')
        return None
    return NextStep(value["text"].strip(), value["url"].strip())


def _toml_error_line(exc: tomllib.TOMLDecodeError) -> int:
    match = re.search(r"line (\d+)", str(exc))
    return int(match.group(1)) if match else 1
