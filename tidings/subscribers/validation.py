"""Checks on what people type: addresses, names, timezones. Each failure names the field."""

from __future__ import annotations

import functools
import hashlib
import re
from zoneinfo import available_timezones

from tidings.clock import zone
from tidings.errors import InvalidInput

NAME_MAX_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


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
    name = (raw or "").strip()
    if _CONTROL.search(name):
        raise InvalidInput(field, "must be one line without control characters")
    if len(name) > NAME_MAX_CHARS:
        raise InvalidInput(field, f"is {len(name)} characters long; the limit is {NAME_MAX_CHARS}")
    return " ".join(name.split())


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
