"""Compiling a step, once per version (at `campaigns load`): Markdown and Jinja to an inlined
html part and a text part, with placeholders where each reader's values go.

    Markdown body -> Jinja (sandboxed, autoescape, StrictUndefined) -> HTML -> Jinja layout
    -> premailer inlines the CSS; the text part comes from the same HTML through html2text.
    Campaign texts (bodies, footer fields, subjects, preheaders) are untrusted templates: they
    run in Jinja's immutable sandbox and may not name anything starting with an underscore
    (`sender.__class__...` would reach Python itself); only tidings' own layouts run unsandboxed.
    Personal values (name, email, links) are rendered as plain-word placeholders such as
    TIDINGSVARFIRSTNAMEX: premailer would URL-quote Jinja syntax left in an href, and running
    premailer per recipient is far too slow.

Per reader, `mime` fills the placeholders in and builds the message. Nothing here touches
the database or the network.
"""

from __future__ import annotations

import functools
import hashlib
import logging
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
from tidings.rendering.sandbox import campaign_environment, private_name_problem, private_names

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

# Values that differ per recipient. Everything else is fixed when the step is compiled.
PERSONAL_FIELDS = (
    "first_name",
    "name",
    "email",
    "unsubscribe_url",
    "preferences_url",
    "confirm_url",
)
# What a campaign's footer may define; the layouts place each one.
FOOTER_FIELDS = ("reason", "crisis", "crisis_line", "disclaimer", "risk")
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


@dataclass(frozen=True)
class CampaignContext:
    slug: str
    name: str
    footer: Mapping[str, str] = field(default_factory=dict)
    footer_lines: Mapping[str, int] = field(default_factory=dict)  # for error messages
    base_url: str = ""


@dataclass(frozen=True, eq=False)
class CompiledStep:
    """A step ready to personalize. `html` and `text` contain placeholders. Two are the same
    when their version (content hash) is: caches key on it without hashing the html."""

    subject: str
    preheader: str
    html: str
    text: str
    content_sha256: str

    def as_stored(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "preheader": self.preheader,
            "html": self.html,
            "text": self.text,
            "content_sha256": self.content_sha256,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompiledStep) and other.content_sha256 == self.content_sha256

    def __hash__(self) -> int:
        return hash(self.content_sha256)

    @classmethod
    def from_stored(cls, data: Mapping[str, str]) -> CompiledStep:
        return cls(
            **{k: data[k] for k in ("subject", "preheader", "html", "text", "content_sha256")}
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
    misuse = _misused_personal_value(ast)
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
    template = env.from_string(source)
    try:
        out = template.render(context)
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        line = _template_line(exc) or 1
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


_PERSONAL_NAMES = frozenset({"unsubscribe_url", "preferences_url", "confirm_url"})


def _misused_personal_value(ast: nodes.Template) -> nodes.Node | None:
    """The first place a personal value is used other than printed directly ({{ x }}).

    Personal values are placeholders while compiling: a filter, a test or a condition would
    act on the placeholder, not on the subscriber's value, so it is refused with its line.
    """

    def is_personal(node: nodes.Node) -> bool:
        if isinstance(node, nodes.Name):
            return node.name in _PERSONAL_NAMES
        return (
            isinstance(node, nodes.Getattr | nodes.Getitem)
            and isinstance(node.node, nodes.Name)
            and node.node.name == "subscriber"
        )

    def visit(node: nodes.Node, parent: nodes.Node | None) -> nodes.Node | None:
        if is_personal(node):
            return None if isinstance(parent, nodes.Output) else node
        if isinstance(node, nodes.Name) and node.name == "subscriber":
            return node  # `subscriber` itself, not one of its fields
        for child in node.iter_child_nodes():
            found = visit(child, node)
            if found is not None:
                return found
        return None

    return visit(ast, None)


def _template_line(exc: BaseException) -> int | None:
    """The template line where a render error happened, from Jinja's rewritten traceback."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_MARKDOWN_EXTENSIONS = ["extra", "sane_lists", "smarty"]


# Markdown, html2text and premailer are imported where they are used: compiling happens at
# `campaigns load`, while sending (which imports this module for CompiledStep) never needs them.


def markdown_to_html(source: str) -> str:
    import markdown

    return markdown.markdown(source, extensions=_MARKDOWN_EXTENSIONS, output_format="html")


def html_to_text(fragment: str) -> str:
    import html2text

    converter = html2text.HTML2Text()
    # No hard wrapping: where a line breaks would depend on each reader's name (and the
    # quoted-printable transfer encoding keeps lines short anyway).
    converter.body_width = 0
    converter.wrap_links = False
    converter.ignore_images = True
    converter.unicode_snob = True  # keep “curly quotes” and accents as they are
    converter.ignore_emphasis = True  # **bold** markers are noise in a plain-text email
    return converter.handle(fragment).strip() + "\n"


def compile_step(
    step: StepSource, campaign: CampaignContext, sender: Sender, confirmation: bool = False
) -> CompiledStep:
    """Compile one email, with placeholders for the personal values. Raises TemplateProblem
    on the first template error."""
    subject, preheader, html_part, text_part = render_parts(
        step, campaign, sender, confirmation, personal=None
    )
    digest = hashlib.sha256()
    for part in (__version__, subject, preheader, html_part, text_part):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return CompiledStep(subject, preheader, html_part, text_part, digest.hexdigest())


# Long: the compile pipeline in order (body, footer, subject, layouts, inlining).
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
    if personal is not None:
        context["subscriber"] = SimpleNamespace(
            first_name=personal["first_name"], name=personal["name"], email=personal["email"]
        )
        for name in ("unsubscribe_url", "preferences_url", "confirm_url"):
            if name in context:
                context[name] = personal[name]
    body_markdown = render_fragment(step.body, step.file, step.body_line, context)
    body_html = markdown_to_html(body_markdown)
    footer_html: dict[str, Markup] = {name: Markup("") for name in FOOTER_FIELDS}
    for name, source in campaign.footer.items():
        rendered = render_fragment(
            source, "campaign.toml", campaign.footer_lines.get(name, 1), context
        )
        footer_html[name] = Markup(markdown_to_html(rendered))
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
    page = (
        _layout_environment(True)
        .get_template("email/layout.html")
        .render(
            subject=subject,
            preheader=preheader,
            body=Markup(body_html),
            footer=footer_html,
            crisis_at_top=step.crisis_at_top,
            sender=sender,
            **links,
        )
    )
    text = (
        _layout_environment(False)
        .get_template("email/layout.txt")
        .render(
            body=html_to_text(body_html),
            footer={name: html_to_text(value) for name, value in footer_html.items()},
            crisis_at_top=step.crisis_at_top,
            sender=sender,
            **{name: str(value) for name, value in links.items()},
        )
    )
    return subject, preheader, double_quoted_attributes(inline_css(page)), _normalize_newlines(text)


def inline_css(page: str) -> str:
    import premailer

    return premailer.Premailer(
        page,
        allow_network=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        remove_classes=False,
    ).transform()


# A start tag as lxml writes it, and each of its attributes (values always quoted, < and >
# escaped in them).
_START_TAG = re.compile(
    r"""<[A-Za-z][^\s/>]*(?:\s+[^\s=/>]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+))?)*\s*/?>"""
)
_ATTRIBUTE = re.compile(r"""(\s+[^\s=/>]+\s*=\s*)(?:'([^']*)'|"([^"]*)")""")


def double_quoted_attributes(page: str) -> str:
    """Every attribute value between double quotes, with both kinds of quote escaped in it.

    lxml writes a value that contains " between single quotes; a reader's value filled into
    it would then need ' escaped, and a value with ' between double quotes needs " escaped.
    One form for every attribute, applied to the compiled html and to the reference path's
    alike, lets the fast path escape every personal value in an attribute one way (& < > " '
    all escaped) and still produce the reference's bytes."""

    def attribute(match: re.Match[str]) -> str:
        single, double = match.group(2), match.group(3)
        value = (
            single.replace('"', "&quot;") if single is not None else double.replace("'", "&#39;")
        )
        return f'{match.group(1)}"{value}"'

    return _START_TAG.sub(lambda tag: _ATTRIBUTE.sub(attribute, tag.group()), page)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
