"""Compiling a step, once per version (at `campaigns load`): Markdown and Jinja to an inlined
html part and a text part, with placeholders where each reader's values go.

    Markdown body -> Jinja (sandboxed, autoescape, StrictUndefined) -> HTML -> Jinja layout
    (templates/email/layout.html: greeting, body, research box, button, sign-off, contact
    line, footer) -> premailer inlines the CSS (the dark-mode @media block stays in the
    head); the text part comes from the same pieces through plaintext.py (layout.txt).
    Campaign texts (bodies, footer fields, subjects, preheaders) are untrusted templates: they
    run in Jinja's immutable sandbox and may not name anything starting with an underscore
    (`sender.__class__...` would reach Python itself); only tidings' own layouts run unsandboxed.
    Personal values (name, email, links, the greeting) are rendered as plain-word placeholders
    such as TIDINGSVARFIRSTNAMEX: premailer would URL-quote Jinja syntax left in an href, and
    running premailer per recipient is far too slow.

Per reader, `mime` fills the placeholders in and builds the message. Nothing here touches
the database or the network.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from markupsafe import Markup

from tidings import __version__
from tidings.rendering.inline import double_quoted_attributes, inline_css
from tidings.rendering.letter import contact_line, greeting_for
from tidings.rendering.plaintext import finish, html_to_text, link_line
from tidings.rendering.sandbox import (
    campaign_environment,
    misused_personal_value,
    private_name_problem,
    private_names,
    template_line,
)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

# Values that differ per recipient. Everything else is fixed when the step is compiled.
PERSONAL_FIELDS = (
    "first_name",
    "name",
    "email",
    "unsubscribe_url",
    "preferences_url",
    "confirm_url",
    "greeting",  # [letter] greeting with the first name, or its fallback (letter.py)
)
# What a campaign's footer may define; the layouts place each one.
FOOTER_FIELDS = ("reason", "crisis", "crisis_line", "disclaimer", "risk", "abroad")
PLACEHOLDER = re.compile(r"TIDINGSVAR([A-Z]+)X")
_PLACEHOLDER_ANY_CASE = re.compile(r"tidingsvar[a-z]*x?", re.IGNORECASE)


def placeholder(field_name: str) -> str:
    return f"TIDINGSVAR{field_name.replace('_', '').upper()}X"


FIELD_BY_TAG = {placeholder(f)[len("TIDINGSVAR") : -1]: f for f in PERSONAL_FIELDS}


class TemplateProblem(Exception):
    """A template cannot be compiled. `where` is 'file:line'."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True)
class Sender:
    organization: str
    postal_address: str
    from_name: str
    from_address: str
    reply_to: str | None = None


@dataclass(frozen=True)
class StepSource:
    """What compile_step needs to know about one email (a subset of StepDefinition)."""

    key: str
    file: str
    subject: str
    preheader: str
    body: str
    body_line: int
    crisis_at_top: bool = False
    number: int = 1
    total: int = 1
    subject_line: int = 2
    preheader_line: int = 2
    research: str = ""  # "What the research says, and its limits": Markdown with Jinja
    research_line: int = 2
    next_step: tuple[str, str] | None = None  # (text, url): the button; url may use Jinja
    next_step_line: int = 2


@dataclass(frozen=True)
class CampaignContext:
    slug: str
    name: str
    footer: Mapping[str, str] = field(default_factory=dict)
    footer_lines: Mapping[str, int] = field(default_factory=dict)  # for error messages
    base_url: str = ""
    letter: Mapping[str, str] = field(default_factory=dict)  # greeting, signoff...
    contact: Mapping[str, str] = field(default_factory=dict)  # phone, website...
    letter_lines: Mapping[str, int] = field(default_factory=dict)
    step_keys: tuple[str, ...] = ()  # what web_view() may name (empty: anything)
    variables: Mapping[str, str] = field(default_factory=dict)  # more template variables
    preferences_link: bool = True  # False before the address is confirmed


@dataclass(frozen=True, eq=False)
class CompiledStep:
    """A step ready to personalize. `html` and `text` contain placeholders. Two are the same
    when their version (content hash) is: caches key on it without hashing the html."""

    subject: str
    preheader: str
    html: str
    text: str
    content_sha256: str
    # [letter] greeting and its fallback: what TIDINGSVARGREETINGX becomes per reader.
    greeting: str = ""
    greeting_fallback: str = ""

    def as_stored(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "preheader": self.preheader,
            "html": self.html,
            "text": self.text,
            "content_sha256": self.content_sha256,
            "greeting": self.greeting,
            "greeting_fallback": self.greeting_fallback,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompiledStep) and other.content_sha256 == self.content_sha256

    def __hash__(self) -> int:
        return hash(self.content_sha256)

    @classmethod
    def from_stored(cls, data: Mapping[str, str]) -> CompiledStep:
        return cls(
            **{k: data[k] for k in ("subject", "preheader", "html", "text", "content_sha256")},
            greeting=data.get("greeting", ""),  # steps compiled before [letter] have none
            greeting_fallback=data.get("greeting_fallback", ""),
        )


# --------------------------------------------------------------------------- compile


class _PersonalValue:
    """Stands for a personal value while compiling: prints as its placeholder.

    A condition on it (`{% if subscriber.name %}`) could only test the placeholder, never the
    recipient's value, so it is refused at compile time instead of misbehaving at send time.
    """

    def __init__(self, field_name: str):
        self.field_name = field_name

    def __str__(self) -> str:
        return placeholder(self.field_name)

    def __html__(self) -> str:
        return placeholder(self.field_name)

    def __bool__(self) -> bool:
        raise jinja2.TemplateError(
            f"'{self.field_name}' differs per subscriber and cannot be used in a condition; "
            "it can only be printed, e.g. {{ subscriber.first_name }}"
        )


class _Subscriber:
    def __init__(self) -> None:
        for name in ("first_name", "name", "email"):
            setattr(self, name, _PersonalValue(name))


@functools.cache
def _layout_environment(autoescape: bool) -> jinja2.Environment:
    """tidings' own email layouts (templates/email/): trusted code, shipped with tidings."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def template_context(
    campaign: CampaignContext,
    sender: Sender,
    step: StepSource | None,
    personal: bool = True,
    confirmation: bool = False,
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "sender": sender,
        "campaign": {"slug": campaign.slug, "name": campaign.name},
        "base_url": campaign.base_url,
        "contact": dict(campaign.contact),
        "web_view": _web_view(campaign),
        **campaign.variables,
    }
    if step is not None:
        context["step"] = {
            "key": step.key,
            "number": step.number,
            "total": step.total,
            "subject": step.subject,
        }
    if personal:
        context["subscriber"] = _Subscriber()
        context["unsubscribe_url"] = _PersonalValue("unsubscribe_url")
        context["preferences_url"] = _PersonalValue("preferences_url")
        if confirmation:
            context["confirm_url"] = _PersonalValue("confirm_url")
    return context


def _web_view(campaign: CampaignContext) -> Any:
    def web_view(key: str) -> str:
        """The page showing one email of this campaign on the web (the risks email, from
        every footer): {base_url}/emails/{campaign}/{step key}."""
        if campaign.step_keys and key not in campaign.step_keys:
            raise ValueError(
                f"web_view({key!r}): no email with that key in this campaign "
                f"(keys: {', '.join(campaign.step_keys)})"
            )
        return f"{campaign.base_url}/emails/{campaign.slug}/{key}"

    return web_view


def render_fragment(
    source: str, where_file: str, first_line: int, context: dict[str, Any], autoescape: bool = True
) -> str:
    """Render one Jinja source (a step body, a footer field, a subject) or raise TemplateProblem
    naming the file and line. Campaign texts run sandboxed (see the module)."""
    env = campaign_environment(autoescape)
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(
            f"{where_file}:{first_line + (exc.lineno or 1) - 1}", exc.message or str(exc)
        ) from exc
    for line, names in private_names(ast):
        raise TemplateProblem(f"{where_file}:{first_line + line - 1}", private_name_problem(names))
    misuse = misused_personal_value(ast)
    if misuse is not None:
        raise TemplateProblem(
            f"{where_file}:{first_line + misuse.lineno - 1}",
            "name, email and links differ per subscriber: they can only be printed as they "
            "are, e.g. {{ subscriber.first_name }}, not filtered, used in a condition or combined",
        )
    for name in sorted(jinja2.meta.find_undeclared_variables(ast) - set(context)):
        line = next((n.lineno for n in ast.find_all(nodes.Name) if n.name == name), 1)
        known = ", ".join(sorted(set(context)))
        raise TemplateProblem(
            f"{where_file}:{first_line + line - 1}", f"unknown variable '{name}' (known: {known})"
        )
    for node in ast.find_all(nodes.Getattr):
        is_contact = isinstance(node.node, nodes.Name) and node.node.name == "contact"
        if is_contact and node.attr not in context.get("contact", {}):
            raise TemplateProblem(
                f"{where_file}:{first_line + node.lineno - 1}",
                f'contact.{node.attr} is not set: add {node.attr} = "..." to [contact] '
                "in campaign.toml",
            )
    template = env.from_string(source)
    try:
        out = template.render(context)
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        line = template_line(exc) or 1
        message = exc.message if isinstance(exc, jinja2.UndefinedError) else str(exc)
        raise TemplateProblem(f"{where_file}:{first_line + line - 1}", str(message)) from exc
    for match in _PLACEHOLDER_ANY_CASE.finditer(out):
        exact = PLACEHOLDER.fullmatch(match.group())
        if exact is None or exact.group(1) not in FIELD_BY_TAG:
            raise TemplateProblem(
                f"{where_file}:{first_line}",
                "a filter was applied to a personal value (name, email or link); "
                "personal values can only be printed as they are",
            )
    return out


_MARKDOWN_EXTENSIONS = ["extra", "sane_lists", "smarty"]
RESEARCH_HEADING = "What the research says, and its limits"


# Markdown and premailer are imported where they are used: compiling happens at
# `campaigns load`, while sending (which imports this module for CompiledStep) never needs them.


def markdown_to_html(source: str) -> str:
    import markdown

    return markdown.markdown(source, extensions=_MARKDOWN_EXTENSIONS, output_format="html")


def compile_step(
    step: StepSource, campaign: CampaignContext, sender: Sender, confirmation: bool = False
) -> CompiledStep:
    """Compile one email, with placeholders for the personal values. Raises TemplateProblem
    on the first template error."""
    subject, preheader, html_part, text_part = render_parts(
        step, campaign, sender, confirmation, personal=None
    )
    greeting = campaign.letter.get("greeting", "")
    fallback = campaign.letter.get("greeting_fallback", "")
    digest = hashlib.sha256()
    for part in (__version__, subject, preheader, html_part, text_part, greeting, fallback):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return CompiledStep(
        subject, preheader, html_part, text_part, digest.hexdigest(), greeting, fallback
    )


@dataclass(frozen=True)
class _Pieces:
    """One email's parts before the layouts place them: html fragments and plain texts."""

    body: Markup
    research: Markup
    footer: dict[str, Markup]  # crisis, crisis_line, abroad, note (disclaimer + risk), reason
    next_step: dict[str, str] | None  # text, url
    signoff: str
    signature: str


def render_parts(
    step: StepSource,
    campaign: CampaignContext,
    sender: Sender,
    confirmation: bool,
    personal: Mapping[str, str] | None,
) -> tuple[str, str, str, str]:
    """(subject, preheader, inlined html, text). With `personal` None the personal values are
    placeholders (compile once); with values, this is the whole slow path for one reader (the
    reference the fast path is checked against, and the benchmark's baseline)."""
    context = template_context(campaign, sender, step, confirmation=confirmation)
    greeting: Any = _PersonalValue("greeting")
    if personal is not None:
        context["subscriber"] = SimpleNamespace(
            first_name=personal["first_name"], name=personal["name"], email=personal["email"]
        )
        for name in ("unsubscribe_url", "preferences_url", "confirm_url"):
            if name in context:
                context[name] = personal[name]
        letter = campaign.letter
        greeting = greeting_for(
            letter.get("greeting", ""), letter.get("greeting_fallback", ""), personal["first_name"]
        )
    pieces = _render_pieces(step, campaign, context)
    plain_context = template_context(campaign, sender, step, personal=False)
    subject = _one_line(
        render_fragment(step.subject, step.file, step.subject_line, plain_context, False)
    )
    preheader = _one_line(
        render_fragment(step.preheader, step.file, step.preheader_line, plain_context, False)
    )
    links: dict[str, Any] = {
        name: (_PersonalValue(name) if personal is None else personal[name])
        for name in ("unsubscribe_url", "preferences_url")
    }
    page, text = _render_layouts(
        campaign, sender, step, pieces, greeting, links, (subject, preheader)
    )
    return subject, preheader, double_quoted_attributes(inline_css(page)), finish(text)


def _render_layouts(
    campaign: CampaignContext,
    sender: Sender,
    step: StepSource,
    pieces: _Pieces,
    greeting: Any,
    links: dict[str, Any],
    heads: tuple[str, str],
) -> tuple[str, str]:
    """The html and text layouts around the pieces (templates/email/layout.*)."""
    shared = {
        "sender": sender,
        "crisis_at_top": step.crisis_at_top,
        "has_greeting": bool(campaign.letter.get("greeting")),
        "signoff": pieces.signoff,
        "signature": pieces.signature,
        "contact": contact_line(campaign.contact),
        "preferences_link": campaign.preferences_link,
        "research_heading": RESEARCH_HEADING,
        "has_research": bool(pieces.research),
    }
    page = (
        _layout_environment(True)
        .get_template("email/layout.html")
        .render(
            subject=heads[0],
            preheader=heads[1],
            greeting=greeting,
            body=pieces.body,
            research=pieces.research,
            footer=pieces.footer,
            next_step=pieces.next_step,
            **shared,
            **links,
        )
    )
    text = (
        _layout_environment(False)
        .get_template("email/layout.txt")
        .render(
            greeting=str(greeting),
            body=html_to_text(pieces.body),
            research=html_to_text(pieces.research),
            footer={name: html_to_text(value) for name, value in pieces.footer.items()},
            next_step=pieces.next_step and link_line(**pieces.next_step),
            **shared,
            **{name: str(value) for name, value in links.items()},
        )
    )
    return page, text


def _render_pieces(step: StepSource, campaign: CampaignContext, context: dict[str, Any]) -> _Pieces:
    """The body, research paragraph, footer, button and sign-off, each rendered (Jinja, then
    Markdown where it is Markdown); a template error names its file and line."""
    body = markdown_to_html(render_fragment(step.body, step.file, step.body_line, context))
    research = ""
    if step.research.strip():
        research = markdown_to_html(
            render_fragment(step.research, step.file, step.research_line, context)
        )
    footer_markdown = {
        name: render_fragment(source, "campaign.toml", campaign.footer_lines.get(name, 1), context)
        for name, source in campaign.footer.items()
    }
    # The disclaimer and the risk note make one sentence (CONTENT.md: the footer is short).
    note = " ".join(
        footer_markdown.pop(name).strip()
        for name in ("disclaimer", "risk")
        if name in footer_markdown
    )
    footer = {name: Markup("") for name in ("crisis", "crisis_line", "abroad", "note", "reason")}
    for name, rendered in [*footer_markdown.items(), ("note", note)]:
        footer[name] = Markup(markdown_to_html(rendered)) if rendered.strip() else Markup("")
    next_step = None
    if step.next_step is not None:
        text, url = (
            _one_line(render_fragment(part, step.file, step.next_step_line, context, False))
            for part in step.next_step
        )
        next_step = {"text": text, "href": url}
    signoff, signature = (
        _one_line(
            render_fragment(
                campaign.letter.get(name, ""),
                "campaign.toml",
                campaign.letter_lines.get(name, 1),
                context,
                False,
            )
        )
        for name in ("signoff", "signature")
    )
    return _Pieces(Markup(body), Markup(research), footer, next_step, signoff, signature)


def _one_line(text: str) -> str:
    return " ".join(text.split())
