"""Checks on what people type: addresses, names, timezones. Each failure names the field.
And the other side: text made safe where tidings writes it (a terminal, a spreadsheet, a log)."""

from __future__ import annotations

import functools
import hashlib
import re
from zoneinfo import available_timezones

from tidings.clock import zone
from tidings.errors import InvalidInput

NAME_MAX_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
# What a name may not hold: control characters (C0, DEL, C1: they move a terminal's cursor,
# change its colours, end a header line) and the bidirectional embeddings, overrides and
# isolates, which make text display in another order than it is stored ("Ann<U+202E>gro.live"
# shows as "Annlive.org"); line and paragraph separators too.
UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def normalize_email(raw: str, field: str = "email") -> str:
    """A syntactically valid address in canonical form (lower case, ASCII domain)."""
    # Imported here: its tables take a noticeable share of a short command's start.
    from email_validator import EmailNotValidError, validate_email

    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput(field, "an email address is required")
    if _CONTROL.search(raw):
        raise InvalidInput(field, "must not contain line breaks or control characters")
    try:
        result = validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidInput(field, f"{raw.strip()!r} is not a valid email address: {exc}") from exc
    return str(result.ascii_email).lower()


def clean_name(raw: str | None, field: str = "name") -> str:
    """A name as stored: trimmed, spaces collapsed, at most NAME_MAX_CHARS. Every input (the
    form, the API, the CLI, the import) comes through here: a name holding a control or
    text-direction character (UNSAFE_TEXT) is refused, not cleaned (only the blanks and line
    ends around it are trimmed)."""
    name = (raw or "").strip(" \t\r\n")
    found = UNSAFE_TEXT.search(name)
    if found is not None:
        raise InvalidInput(
            field,
            f"must be one line of plain text without control characters; it contains "
            f"{unsafe_character(found.group())}",
        )
    if len(name) > NAME_MAX_CHARS:
        raise InvalidInput(field, f"is {len(name)} characters long; the limit is {NAME_MAX_CHARS}")
    return " ".join(name.split())


def unsafe_character(char: str) -> str:
    """'U+202E (a text-direction control)': how an error names a character it refuses."""
    code = ord(char)
    kind = "a line break" if char in "\n\r\u2028\u2029" else "a control character"
    if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        kind = "a text-direction control"
    return f"U+{code:04X} ({kind})"


def _escape(char: str) -> str:
    special = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if char in special:
        return special[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def printable(text: str, keep: str = "") -> str:
    """`text` with every UNSAFE_TEXT character (but those in `keep`) written as an escape, for
    a terminal: a stored value cannot move its cursor, clear it, or show words in another
    order. 'Ann\u202egro' -> 'Ann\\u202egro'."""
    return UNSAFE_TEXT.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), text)


# Cells a spreadsheet takes for a formula (OWASP, CSV injection): =HYPERLINK(...) typed into
# the sign-up form would run when an export is opened.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A value as every CSV tidings writes holds it: a text starting with = + - @, a tab or a
    carriage return gets a leading ' (a spreadsheet shows it as text instead of running it),
    and control characters are escaped (line breaks and tabs stay: CSV quotes them)."""
    if not isinstance(value, str):
        return value
    value = printable(value, keep="\t\r\n")
    return "'" + value if value.startswith(_FORMULA_START) else value


def check_timezone(raw: str | None, field: str = "timezone") -> str:
    """An IANA timezone name such as 'America/New_York'. Empty means UTC."""
    name = (raw or "UTC").strip()
    if name not in _known_timezones():
        hint = ""
        if "/" not in name:
            hint = " (use a region name such as America/New_York, not an abbreviation)"
        raise InvalidInput(field, f"unknown timezone {name!r}{hint}")
    try:
        zone(name)
    except ValueError as exc:
        raise InvalidInput(field, str(exc)) from exc
    return name


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def email_sha256(normalized_email: str) -> str:
    """How suppressions identify an address without storing it."""
    return hashlib.sha256(normalized_email.encode("utf-8")).hexdigest()


def mask_email(address: str) -> str:
    """For logs: 'ann@example.org' -> 'a**@example.org' (logs never carry full addresses)."""
    local, _, domain = address.partition("@")
    return (local[:1] + "**@" + domain) if domain else "***"


_ADDRESS_IN_TEXT = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


def mask_addresses(text: str) -> str:
    """Every address in a text masked: mail servers quote the recipient in their replies
    ("550 5.1.1 <ann@example.org>: User unknown"), and such text goes to logs and to the
    suppression list, which must not name anyone."""
    return _ADDRESS_IN_TEXT.sub(lambda m: mask_email(m.group()), text)
