"""Personalizing a compiled step for one reader and building the message's bytes.

The placeholders of the compiled parts are replaced by the reader's values (HTML-escaped in
the html part, raw in the text part), and the message is assembled from a MIME skeleton the
stdlib built once for the step version: per message, only the headers and the two encoded
parts are new. Header values are cleaned of CR/LF (no header injection) and never encoded
where clients would then ignore them (List-Unsubscribe). Pure: no database, no network.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from functools import lru_cache

from tidings.rendering.compile import FIELD_BY_TAG, PERSONAL_FIELDS, PLACEHOLDER, CompiledStep
from tidings.rendering.letter import greeting_for
from tidings.rendering.plaintext import wrap_line

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


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
        """The reader's own values (the greeting is made of them and the campaign's words)."""
        return {name: self.value(name) for name in PERSONAL_FIELDS if name != "greeting"}

    def greeting(self, compiled: CompiledStep) -> str:
        return greeting_for(compiled.greeting, compiled.greeting_fallback, self.value("first_name"))


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


# Escaping as the compiled html is written (lxml, then compile.double_quoted_attributes): in
# text, & < >; inside attribute values also both quotes, so that no value can end the
# attribute it is in, whichever quote the template used. Byte for byte the slow path's.
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTRIBUTE_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}
)


def _in_attribute(html_text: str, position: int) -> bool:
    return html_text.rfind("<", 0, position) > html_text.rfind(">", 0, position)


def _split_segments(template: str, is_html: bool) -> tuple[list[str], list[tuple[str, bool]]]:
    """'a TIDINGSVARNAMEX b' -> (['a ', ' b'], [('name', in_attribute)])."""
    literals: list[str] = []
    fields: list[tuple[str, bool]] = []
    last = 0
    for match in PLACEHOLDER.finditer(template):
        literals.append(template[last : match.start()])
        attribute = is_html and _in_attribute(template, match.start())
        fields.append((FIELD_BY_TAG[match.group(1)], attribute))
        last = match.end()
    literals.append(template[last:])
    return literals, fields


def _split_lines(template: str) -> tuple[list[str], list[str]]:
    """The text part as (literals, lines with a personal value between them): such a line is
    wrapped once the reader's values are in (plaintext.wrap_line), as the reference path
    wraps it with them."""
    literals: list[str] = []
    lines: list[str] = []
    chunk: list[str] = []
    for line in template.split("\n"):
        if PLACEHOLDER.search(line):
            literals.append("\n".join([*chunk, ""]) if chunk else "")
            lines.append(line)
            chunk = [""]  # the line break after it
        else:
            chunk.append(line)
    literals.append("\n".join(chunk))
    return literals, lines


def _escaped(value: str, is_html: bool, attribute: bool) -> str:
    if not is_html:
        return value
    return value.translate(_ATTRIBUTE_ESCAPES if attribute else _TEXT_ESCAPES)


def _fill(template: str, recipient: Recipient, greeting: str, is_html: bool) -> str:
    literals, fields = _split_segments(template, is_html)
    out = [literals[0]]
    for (name, attribute), literal in zip(fields, literals[1:], strict=True):
        value = greeting if name == "greeting" else recipient.value(name)
        out.append(_escaped(value, is_html, attribute))
        out.append(literal)
    return "".join(out)


def personalize(template: str, recipient: Recipient, is_html: bool, greeting: str = "") -> str:
    """The html or text of a compiled step for one reader (previews; the reference for the
    encoded fast path below)."""
    if is_html:
        return _fill(template, recipient, greeting, is_html=True)
    literals, lines = _split_lines(template)
    out = [literals[0]]
    for line, literal in zip(lines, literals[1:], strict=True):
        out.append(wrap_line(_fill(line, recipient, greeting, is_html=False)))
        out.append(literal)
    return "".join(out)


def personalize_html(compiled: CompiledStep, recipient: Recipient) -> str:
    return personalize(compiled.html, recipient, True, recipient.greeting(compiled))


def personalize_text(compiled: CompiledStep, recipient: Recipient) -> str:
    return personalize(compiled.text, recipient, False, recipient.greeting(compiled))


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
    """The html part of a step, ready to personalize and encode quickly: literal pieces
    encoded once, each personal value escaped and encoded between them."""

    def __init__(self, template: str):
        literals, self.fields = _split_segments(template, is_html=True)
        self.literals = [_qp_piece(lit) for lit in literals[:-1]] + [_qp_final(literals[-1])]

    def render(self, recipient: Recipient, greeting: str) -> bytes:
        literals = self.literals
        out = [literals[0]]
        for i, (name, attribute) in enumerate(self.fields, start=1):
            value = greeting if name == "greeting" else recipient.value(name)
            out.append(_qp_piece(_escaped(value, True, attribute)))
            out.append(literals[i])
        return b"".join(out)


class _EncodedText:
    """The text part: literal pieces encoded once; each line with a personal value filled
    in, wrapped and encoded per reader."""

    def __init__(self, template: str):
        literals, lines = _split_lines(template)
        self.lines = [_split_segments(line, is_html=False) for line in lines]
        self.literals = [_qp_piece(lit) for lit in literals[:-1]] + [_qp_final(literals[-1])]

    def render(self, recipient: Recipient, greeting: str) -> bytes:
        literals = self.literals
        out = [literals[0]]
        for i, (pieces, fields) in enumerate(self.lines, start=1):
            line = [pieces[0]]
            for (name, _), piece in zip(fields, pieces[1:], strict=True):
                line.append(greeting if name == "greeting" else recipient.value(name))
                line.append(piece)
            out.append(_qp_piece(wrap_line("".join(line))))
            out.append(literals[i])
        return b"".join(out)


class MessageSkeleton:
    """The parts of a message that are the same for every recipient of one step version."""

    TEXT_MARK = "TIDINGSTEXTPARTMARK"
    HTML_MARK = "TIDINGSHTMLPARTMARK"

    def __init__(self, compiled: CompiledStep):
        self.compiled = compiled
        self.html = _EncodedPart(compiled.html)
        self.text = _EncodedText(compiled.text)
        self.greets = bool(compiled.greeting)
        self.subject_header = format_unstructured("Subject", compiled.subject)
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
        greeting = recipient.greeting(self.compiled) if self.greets else ""
        return b"".join(
            (
                self._headers(recipient, headers).encode("ascii"),
                self._head,
                self.text.render(recipient, greeting),
                self._middle,
                self.html.render(recipient, greeting),
                self._tail,
            )
        )

    def _headers(self, recipient: Recipient, h: MessageHeaders) -> str:
        lines = [
            "From: ",
            _sender_address(h.from_name, h.from_address),
            "\r\n",
            "To: ",
            format_address(recipient.name, recipient.email),
            "\r\n",
            self.subject_header,
            "Date: ",
            _date_header(h.date),
            "\r\n",
            "Message-ID: <",
            clean_header_text(h.message_id),
            ">\r\n",
            "List-Id: ",
            _sender_address(h.list_name, h.list_id),
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
            lines += ["Reply-To: ", _sender_address("", h.reply_to), "\r\n"]
        return "".join(lines)


@lru_cache(maxsize=1024)
def _date_header(at: datetime) -> str:
    return format_datetime(at)  # a chunk of messages shares one instant


def _sender_address(name: str, address: str) -> str:
    return _cached_address(name, address)


@lru_cache(maxsize=64)
def skeleton(compiled: CompiledStep) -> MessageSkeleton:
    """The skeleton of a step version, built once (CompiledSteps hash by their version)."""
    return MessageSkeleton(compiled)


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


_cached_address = lru_cache(maxsize=256)(format_address)  # senders and list names repeat


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
