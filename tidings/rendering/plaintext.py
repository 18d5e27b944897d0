"""The text/plain part: real plain text from the html of an email's pieces.

Rules (issue 12, CONTENT.md): headings as text lines, no Markdown syntax (no `**`, `##`,
`[x](y)`), links as bare URLs on their own line or after a colon ("Book a call: https://..."),
lines wrapped at 72 characters with URLs never broken, at most one blank line in a row.

html2text writes Markdown, and inscriptis lays out what a browser would show (tables as
columns) but not links as lines of their own; the pieces here are the small html that
Markdown writes, so a short walk over it with the stdlib's parser says exactly what we want.

Two steps, so that each reader's values can be filled in after compiling:
- `html_to_text` writes each block (paragraph, heading, list item) as ONE line, unwrapped;
- `wrap_line` wraps a line. Compiling wraps every line without a personal value; the lines
  with one are wrapped per reader once filled in (mime.py), and the reference path wraps
  them with the values already in: the same function on the same line, so both agree.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import unquote

WIDTH = 72
BULLET = "• "
_SPACES = re.compile(r"[ \t\n\r\f\v]+")  # not U+00A0: a no-break space stays one
# What starts a line and is repeated (as spaces) on the lines it wraps to: an indent, then a
# list marker.
_PREFIX = re.compile(r"( *)(• |\d{1,3}\. )?")
_HIDDEN = frozenset({"head", "style", "script", "title"})
_BLOCKS = frozenset(
    {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "hr"}
)
_PLACEHOLDER_MARK = "TIDINGSVAR"


def wrap_line(line: str, width: int = WIDTH) -> str:
    """One line wrapped at `width`, its indent and list marker kept (continuation lines are
    indented under the text), runs of spaces collapsed, long words (URLs) never broken."""
    match = _PREFIX.match(line)
    prefix = match.group(0) if match else ""
    words = [w for w in _SPACES.split(line[len(prefix) :]) if w]
    if not words:
        return prefix.rstrip()
    lines: list[str] = []
    current = prefix + words[0]
    hanging = " " * len(prefix)
    for word in words[1:]:
        if len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            lines.append(current)
            current = hanging + word
    lines.append(current)
    return "\n".join(lines)


def finish(text: str) -> str:
    """The whole text part: each line without a personal value wrapped, blank lines at most
    one in a row, none at the start or end."""
    out: list[str] = []
    for raw in text.split("\n"):
        line = raw.rstrip() if _PLACEHOLDER_MARK in raw else wrap_line(raw)
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def html_to_text(fragment: str) -> str:
    """The blocks of an html fragment as text, one line per block (wrap with `finish`)."""
    writer = _TextWriter()
    writer.feed(fragment)
    writer.close()
    return writer.text()


def url_like(text: str, href: str) -> bool:
    """Whether a link's text is its address written short ("988lifeline.org" for
    https://988lifeline.org/chat): the text part then shows the address alone."""
    text = text.strip().rstrip("/").lower()
    bare = re.sub(r"^[a-z][a-z0-9+.-]*://(www\.)?", "", href.lower())
    if text == href.lower():
        return True
    return "." in text and " " not in text and bare.startswith(text.removeprefix("www."))


def link_line(text: str, href: str, around: str = "") -> str | None:
    """How a link is written on a line of its own in plain text; None when the words already
    say it all: a phone number or address (tel:, sms:, mailto:) written in the link's text or
    the text `around` it ("Call or text 988")."""
    text = " ".join(text.split())
    scheme, _, target = href.partition(":")
    if scheme.lower() in ("tel", "sms", "mailto"):
        target = unquote(target.split("?")[0]).lstrip("/")
        said = f"{text} {around}"
        if target in said or _number_written(target, said):
            return None
        return f"{_capitalized(text)}: {target}" if text else target
    if href.startswith("#") or not href:
        return None
    if not text or url_like(text, href):
        return href
    return f"{_capitalized(text)}: {href}"


def _number_written(target: str, text: str) -> bool:
    """Whether a phone number (988, +15555550142) is written in the text ("(555) 555-0142")."""
    wanted = re.sub(r"\D", "", target)
    if not wanted:
        return False
    for written in re.findall(r"\d[\d ().-]*\d|\d", text):
        digits = re.sub(r"\D", "", written)
        if len(digits) >= 3 and (wanted.endswith(digits) or digits.endswith(wanted)):
            return True
    return False


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


class _TextWriter(HTMLParser):
    """Walks the html: inline text gathers into the current block; a block ends at the next
    block tag. Each block is one line (or several at <br>), then its links, one a line."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, bool]] = []  # (text, joined to the previous by one \n)
        self.inline: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.link: tuple[str, int] | None = None  # (href, where its text starts in inline)
        self.lists: list[list[int | str]] = []  # per open list: [kind, next number]
        self.marker: str | None = None  # the marker the next block of a list item gets
        self.tight = False
        self.list_start = False
        self.hidden = 0
        self.quotes = 0
        self.pre = 0

    # -------------------------------------------------------------- parsing
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCKS or tag in ("ul", "ol", "li", "tr"):
            self.flush()
            self._open_block(tag)
        elif tag == "br":
            self.inline.append("\n")
        elif tag == "a":
            self.link = (values.get("href", ""), len(self.inline))
        elif tag == "img" and values.get("alt", "").strip():
            self.inline.append(values["alt"].strip())
        elif tag in ("td", "th"):
            self.inline.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "a" and self.link is not None:
            href, start = self.link
            self.links.append(("".join(self.inline[start:]), href))
            self.link = None
        elif tag in _BLOCKS or tag in ("li", "tr"):
            self.flush()
            if tag == "blockquote":
                self.quotes = max(0, self.quotes - 1)
            elif tag == "pre":
                self.pre = max(0, self.pre - 1)
        elif tag in ("ul", "ol"):
            self.flush()
            if self.lists:
                self.lists.pop()
            self.tight = False

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        self.inline.append(data if self.pre else _SPACES.sub(" ", data))

    def _open_block(self, tag: str) -> None:
        if tag in ("ul", "ol"):
            self.list_start = not self.lists  # a blank line before a list, not a sublist
            self.lists.append([tag, 1])
        elif tag == "li" and self.lists:
            kind, number = self.lists[-1]
            self.marker = BULLET if kind == "ul" else f"{number}. "
            self.lists[-1][1] = int(number) + 1
            self.tight, self.list_start = not self.list_start, False
        elif tag == "blockquote":
            self.quotes += 1
        elif tag == "pre":
            self.pre += 1
        elif tag == "tr":
            self.tight = True

    # -------------------------------------------------------------- output
    def _indent(self) -> str:
        return "  " * (self.quotes + max(0, len(self.lists) - 1))

    def flush(self) -> None:
        """The gathered inline text as a block, then its links."""
        raw = "".join(self.inline)
        self.inline = []
        links, self.links = self.links, []
        if self.pre:
            lines = [line.rstrip() for line in raw.strip("\n").split("\n")]
        else:
            lines = [_SPACES.sub(" ", line).strip() for line in raw.split("\n")]
            lines = [line for line in lines if line]
        if not lines:
            return
        lines = _with_links(lines, links)
        indent = self._indent()
        if self.marker is not None:  # the first block of a list item
            first = indent + self.marker + lines[0]
            hanging = indent + " " * len(self.marker)
        else:
            hanging = indent + (" " * len(BULLET) if self.lists else "")
            first = hanging + lines[0]
        self.marker = None
        rest = [hanging + line for line in lines[1:]]
        self.blocks.append(("\n".join([first, *rest]), self.tight and bool(self.blocks)))
        if not self.lists:
            self.tight = False

    def text(self) -> str:
        self.flush()
        out: list[str] = []
        for text, tight in self.blocks:
            if out:
                out.append("\n" if tight else "\n\n")
            out.append(text)
        return "".join(out)


def _with_links(lines: list[str], links: list[tuple[str, str]]) -> list[str]:
    """A block's lines, then one line per link; a block that is only a link becomes the
    link's line ("Book a call: https://...")."""
    written: list[str] = []
    for text, href in links:
        line = link_line(text, href, " ".join(lines))
        if line is not None and line not in written:
            written.append(line)
    if len(links) == 1 and written and " ".join(lines) == " ".join(links[0][0].split()):
        return written
    return lines + written
