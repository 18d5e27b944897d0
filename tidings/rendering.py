"""Rendering: compile a step once per version, personalize it per recipient, build MIME bytes.

Compile (once per step version, at `campaigns load`):
    Markdown body -> Jinja (autoescape, StrictUndefined) -> HTML -> Jinja layout -> premailer
    inlines the CSS; the text part comes from the same HTML through html2text.
    Personal values (name, email, links) are rendered as plain-word placeholders such as
    TIDINGSVARFIRSTNAMEX: premailer would URL-quote Jinja syntax left in an href, and running
    premailer per recipient is far too slow.

Personalize (per recipient, at send time):
    the placeholders are replaced by the recipient's values (HTML-escaped in the html part,
    raw in the text part) and the message is assembled from a MIME skeleton the stdlib built
    once for the step; only the per-message headers and the two encoded parts are new.

Nothing here touches the database or the network.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import html2text
import jinja2
import jinja2.meta
import markdown
import premailer
from jinja2 import nodes
from markupsafe import Markup

from tidings import __version__

TEMPLATES_DIR = Path(__file__).with_name("templates")

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
_PLACEHOLDER = re.compile(r"TIDINGSVAR([A-Z]+)X")
_PLACEHOLDER_ANY_CASE = re.compile(r"tidingsvar[a-z]*x?", re.IGNORECASE)
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


def placeholder(field_name: str) -> str:
    return f"TIDINGSVAR{field_name.replace('_', '').upper()}X"


_FIELD_BY_TAG = {placeholder(f)[len("TIDINGSVAR") : -1]: f for f in PERSONAL_FIELDS}


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


@dataclass(frozen=True)
class CompiledStep:
    """A step ready to personalize. `html` and `text` contain placeholders."""

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
def _environment(autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


KNOWN_VARIABLES = frozenset(
    {"subscriber", "unsubscribe_url", "preferences_url", "sender", "campaign", "step", "base_url"}
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
    naming the file and line."""
    env = _environment(autoescape)
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(
            f"{where_file}:{first_line + (exc.lineno or 1) - 1}", exc.message or str(exc)
        ) from exc
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
        exact = _PLACEHOLDER.fullmatch(match.group())
        if exact is None or exact.group(1) not in _FIELD_BY_TAG:
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


def markdown_to_html(source: str) -> str:
    return markdown.markdown(source, extensions=_MARKDOWN_EXTENSIONS, output_format="html")


def html_to_text(fragment: str) -> str:
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
    subject, preheader, html_part, text_part = _render_parts(
        step, campaign, sender, confirmation, personal=None
    )
    digest = hashlib.sha256()
    for part in (__version__, subject, preheader, html_part, text_part):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return CompiledStep(subject, preheader, html_part, text_part, digest.hexdigest())


def _render_parts(
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
        _environment(True)
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
        _environment(False)
        .get_template("email/layout.txt")
        .render(
            body=html_to_text(body_html),
            footer={name: html_to_text(value) for name, value in footer_html.items()},
            crisis_at_top=step.crisis_at_top,
            sender=sender,
            **{name: str(value) for name, value in links.items()},
        )
    )
    return subject, preheader, inline_css(page), _normalize_newlines(text)


def inline_css(page: str) -> str:
    return premailer.Premailer(
        page,
        allow_network=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        remove_classes=False,
    ).transform()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --------------------------------------------------------------------------- personalize


@dataclass(slots=True)
class Recipient:
    email: str
    name: str
    unsubscribe_url: str
    preferences_url: str
    confirm_url: str = ""

    def value(self, field_name: str) -> str:
        if field_name == "first_name":
            name = clean_header_text(self.name)
            return name.split(" ")[0] if name else ""
        if field_name == "name":
            return clean_header_text(self.name)
        return getattr(self, field_name)

    def values(self) -> dict[str, str]:
        return {name: self.value(name) for name in PERSONAL_FIELDS}


@dataclass(slots=True)
class MessageHeaders:
    """Per-message header values. Everything here is cleaned of CR/LF before it is written."""

    from_name: str
    from_address: str
    message_id: str  # without angle brackets
    date: datetime
    list_id: str  # e.g. kap-benefits.example.org
    list_name: str
    unsubscribe_mailto: str  # mailto: URI
    reply_to: str | None = None


def clean_header_text(value: str) -> str:
    """Collapse CR, LF and other control characters to single spaces: no header injection."""
    if value.isprintable():  # the usual case, and much cheaper than the substitution
        return value.strip()
    return _CONTROL_CHARS.sub(" ", value).strip()


# Escaping as lxml writes HTML (premailer's output): in text, & < >; inside (double-quoted)
# attribute values also ". The fast path escapes exactly so, byte for byte the slow path's.
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTRIBUTE_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})


def _in_attribute(html_text: str, position: int) -> bool:
    return html_text.rfind("<", 0, position) > html_text.rfind(">", 0, position)


def _split_segments(template: str, is_html: bool) -> tuple[list[str], list[tuple[str, bool]]]:
    """'a TIDINGSVARNAMEX b' -> (['a ', ' b'], [('name', in_attribute)])."""
    literals: list[str] = []
    fields: list[tuple[str, bool]] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        literals.append(template[last : match.start()])
        attribute = is_html and _in_attribute(template, match.start())
        fields.append((_FIELD_BY_TAG[match.group(1)], attribute))
        last = match.end()
    literals.append(template[last:])
    return literals, fields


def _escaped(value: str, is_html: bool, attribute: bool) -> str:
    if not is_html:
        return value
    return value.translate(_ATTRIBUTE_ESCAPES if attribute else _TEXT_ESCAPES)


def personalize(template: str, recipient: Recipient, is_html: bool) -> str:
    """The html or text of a compiled step for one reader (previews; the reference for the
    encoded fast path below)."""
    literals, fields = _split_segments(template, is_html)
    out = [literals[0]]
    for (name, attribute), literal in zip(fields, literals[1:], strict=True):
        out.append(_escaped(recipient.value(name), is_html, attribute))
        out.append(literal)
    return "".join(out)


def personalize_html(compiled: CompiledStep, recipient: Recipient) -> str:
    return personalize(compiled.html, recipient, is_html=True)


def personalize_text(compiled: CompiledStep, recipient: Recipient) -> str:
    return personalize(compiled.text, recipient, is_html=False)


# Quoted-printable, prepared once per step version. A part is encoded as its literal pieces
# (encoded at compile time) with each personal value between them; every piece ends with a
# soft line break ("=" then CRLF), which decoding removes, so pieces never share a line and
# each can be encoded on its own. Lines stay within RFC 2045's 76 characters.
_QP_LINE = 75  # characters before the soft break's "="
_SOFT_BREAK = b"=\r\n"


def _qp_piece(text: str) -> bytes:
    """Quoted-printable for one piece, CRLF line ends, ending in a soft line break."""
    if not text:
        return b""
    if text.isascii() and text.isprintable() and "=" not in text:
        # Plain text (a link, a name): nothing to encode, only lines to keep short.
        data = text.encode("ascii")
        if len(data) <= _QP_LINE:
            return data + _SOFT_BREAK
        return (
            _SOFT_BREAK.join([data[i : i + _QP_LINE] for i in range(0, len(data), _QP_LINE)])
            + _SOFT_BREAK
        )
    data = text.encode("utf-8")
    encoded = binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")
    if encoded.endswith(b"\r\n"):
        return encoded + _SOFT_BREAK
    last_start = encoded.rfind(b"\r\n") + 2  # 1 when there is no line break
    if last_start == 1:
        last_start = 0
    return encoded[:last_start] + _wrap_last_line(encoded[last_start:])


def _qp_final(text: str) -> bytes:
    """Quoted-printable for the last piece of a part: ends with one real line break, as the
    stdlib ends a part (it adds a newline when the content has none)."""
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    if encoded.endswith(b"\r\n"):
        return encoded
    last_start = encoded.rfind(b"\r\n") + 2
    if last_start == 1:
        last_start = 0
    last = _wrap_last_line(encoded[last_start:])
    return encoded[:last_start] + last[: -len(_SOFT_BREAK)] + b"\r\n"


def _wrap_last_line(line: bytes) -> bytes:
    """Split an encoded line into pieces of at most _QP_LINE characters, each followed by a
    soft break, never inside an =XX escape."""
    out = []
    while line:
        cut = min(_QP_LINE, len(line))
        if cut < len(line):
            escape = line.rfind(b"=", max(0, cut - 2), cut)
            if escape != -1:
                cut = escape
        out.append(line[:cut] + _SOFT_BREAK)
        line = line[cut:]
    return b"".join(out)


class _EncodedPart:
    """One part (html or text) of a step, ready to personalize and encode quickly."""

    def __init__(self, template: str, is_html: bool):
        literals, self.fields = _split_segments(template, is_html)
        self.is_html = is_html
        self.literals = [_qp_piece(lit) for lit in literals[:-1]] + [_qp_final(literals[-1])]

    def render(self, recipient: Recipient) -> bytes:
        literals = self.literals
        out = [literals[0]]
        for i, (name, attribute) in enumerate(self.fields, start=1):
            out.append(_qp_piece(_escaped(recipient.value(name), self.is_html, attribute)))
            out.append(literals[i])
        return b"".join(out)


class MessageSkeleton:
    """The parts of a message that are the same for every recipient of one step version."""

    TEXT_MARK = "TIDINGSTEXTPARTMARK"
    HTML_MARK = "TIDINGSHTMLPARTMARK"

    def __init__(self, compiled: CompiledStep):
        self.compiled = compiled
        self.html = _EncodedPart(compiled.html, is_html=True)
        self.text = _EncodedPart(compiled.text, is_html=False)
        self.subject_header = format_unstructured("Subject", compiled.subject)
        self._addresses: dict[tuple[str, str], str] = {}
        self._dates: dict[datetime, str] = {}
        # The stdlib writes the MIME structure (boundary, part headers) once; per message we
        # only put the encoded parts into it. The boundary starts with "==", which a
        # quoted-printable body can never contain.
        shell = EmailMessage(policy=email_policy.SMTP)
        shell.set_content(self.TEXT_MARK + "\n", cte="quoted-printable")
        shell.add_alternative(self.HTML_MARK + "\n", subtype="html", cte="quoted-printable")
        raw = shell.as_bytes()
        head, rest = raw.split(self.TEXT_MARK.encode() + b"\r\n", 1)
        middle, tail = rest.split(self.HTML_MARK.encode() + b"\r\n", 1)
        self._head, self._middle, self._tail = head, middle, tail

    def render(self, recipient: Recipient, headers: MessageHeaders) -> bytes:
        return b"".join(
            (
                self._headers(recipient, headers).encode("ascii"),
                self._head,
                self.text.render(recipient),
                self._middle,
                self.html.render(recipient),
                self._tail,
            )
        )

    def _headers(self, recipient: Recipient, h: MessageHeaders) -> str:
        lines = [
            "From: ",
            self._address(h.from_name, h.from_address),
            "\r\n",
            "To: ",
            format_address(recipient.name, recipient.email),
            "\r\n",
            self.subject_header,
            "Date: ",
            self._date(h.date),
            "\r\n",
            "Message-ID: <",
            clean_header_text(h.message_id),
            ">\r\n",
            "List-Id: ",
            self._address(h.list_name, h.list_id),
            "\r\n",
            # Folded only between the two URIs, never encoded: clients ignore it otherwise.
            "List-Unsubscribe: <",
            clean_header_text(recipient.unsubscribe_url),
            ">,\r\n <",
            clean_header_text(h.unsubscribe_mailto),
            ">\r\n",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        ]
        if h.reply_to:
            lines += ["Reply-To: ", self._address("", h.reply_to), "\r\n"]
        return "".join(lines)

    def _address(self, name: str, address: str) -> str:
        key = (name, address)
        formatted = self._addresses.get(key)
        if formatted is None:
            formatted = self._addresses[key] = format_address(name, address)
        return formatted

    def _date(self, at: datetime) -> str:
        formatted = self._dates.get(at)
        if formatted is None:
            if len(self._dates) > 1000:
                self._dates.clear()
            formatted = self._dates[at] = format_datetime(at)
        return formatted


_PLAIN_NAME = re.compile(r"[A-Za-z0-9 '-]+")  # needs no quoting in a header


def format_address(name: str, address: str) -> str:
    """A header address: plain ASCII when possible, RFC 2047 words for non-ASCII names."""
    name = clean_header_text(name)
    address = clean_header_text(address)
    if not name:
        return address
    if _PLAIN_NAME.fullmatch(name):
        return f"{name} <{address}>"  # what formataddr writes too, without its checks
    if name.isascii():
        return formataddr((name, address))
    return f"{encoded_words(name)} <{address}>"


def encoded_words(text: str) -> str:
    """RFC 2047 base64 encoded words for non-ASCII text, each under 76 characters and never
    splitting a character, folded between words (where decoders ignore the whitespace)."""
    words: list[bytes] = []
    chunk = b""
    for char in text:
        data = char.encode("utf-8")
        if chunk and len(chunk) + len(data) > 45:  # 45 bytes = 60 base64 characters
            words.append(chunk)
            chunk = b""
        chunk += data
    words.append(chunk)
    return "\r\n ".join(
        "=?utf-8?b?" + binascii.b2a_base64(word, newline=False).decode() + "?=" for word in words
    )


def format_unstructured(name: str, value: str) -> str:
    """'Name: value\\r\\n', folded at spaces. ASCII is never encoded (clients ignore encoded
    List-* headers); non-ASCII text becomes RFC 2047 encoded words."""
    value = clean_header_text(value)
    if not value.isascii():
        return f"{name}: {encoded_words(value)}\r\n"
    line = f"{name}:"
    lines = []
    for word in value.split(" "):
        if len(line) + 1 + len(word) > 78 and line.strip() and not line.endswith(":"):
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


# --------------------------------------------------------------------------- the slow path


def render_message_naive(
    step: StepSource,
    campaign: CampaignContext,
    sender: Sender,
    recipient: Recipient,
    headers: MessageHeaders,
    confirmation: bool = False,
) -> bytes:
    """Everything per reader, the obvious way: Jinja, Markdown, premailer and the stdlib's
    EmailMessage for every single message. Far too slow to send with (milliseconds each);
    kept as the reference the fast path must match, and as the benchmark's baseline."""
    subject, _, html_part, text_part = _render_parts(
        step, campaign, sender, confirmation, personal=recipient.values()
    )
    message = EmailMessage(policy=email_policy.SMTP.clone(max_line_length=998))
    message["From"] = Address(clean_header_text(headers.from_name), addr_spec=headers.from_address)
    message["To"] = Address(clean_header_text(recipient.name), addr_spec=recipient.email)
    message["Subject"] = subject
    message["Date"] = format_datetime(headers.date)
    message["Message-ID"] = f"<{headers.message_id}>"
    message["List-Id"] = format_address(headers.list_name, headers.list_id)
    message["List-Unsubscribe"] = f"<{recipient.unsubscribe_url}>, <{headers.unsubscribe_mailto}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if headers.reply_to:
        message["Reply-To"] = headers.reply_to
    message.set_content(text_part, cte="quoted-printable")
    message.add_alternative(html_part, subtype="html", cte="quoted-printable")
    return message.as_bytes()
