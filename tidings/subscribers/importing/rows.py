"""Checking the rows of a CSV import: the header (which column is what, which are kept), then
each row, into a clean Row or a Reject naming its line, column and reason. Pure: no database.

Only the address, the name, the timezone and the columns named to be kept are looked at; the
others are dropped unread (`columns`). A kept column may hold several lines (a quoted CSV
field with line breaks is legal, and attributes never go into an email header); the address,
the name and the timezone stay one line.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from tidings.errors import InvalidInput, TidingsError
from tidings.subscribers.importing.columns import MAX_COLUMN_NAME_CHARS
from tidings.subscribers.importing.reader import Record
from tidings.subscribers.validation import (
    NAME_MAX_CHARS,
    check_timezone,
    clean_name,
    normalize_email,
)

MAX_COLUMNS = 50
EMAIL_MAX_CHARS = 254
TIMEZONE_MAX_CHARS = 64
ATTRIBUTE_MAX_CHARS = 1000
MIN_LIMIT = min(EMAIL_MAX_CHARS, NAME_MAX_CHARS, TIMEZONE_MAX_CHARS, ATTRIBUTE_MAX_CHARS)

COLUMN_ALIASES = {
    "email": "email",
    "e-mail": "email",
    "email address": "email",
    "email_address": "email",
    "name": "name",
    "full name": "name",
    "full_name": "name",
    "timezone": "timezone",
    "time zone": "timezone",
    "time_zone": "timezone",
    "tz": "timezone",
}
# Columns of `tidings subscribers export --csv` that tidings keeps itself: importing an
# export again must not turn them into attributes, and cannot set them.
IGNORED_COLUMNS = frozenset(
    {"status", "created_at", "updated_at", "confirmed_at", "unsubscribed_at", "paused_until"}
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_LINE_BREAK = re.compile(r"[\r\n\u2028\u2029]")
# In a kept attribute: line breaks (written as LF) and tabs are text; other control
# characters and the ones that reorder text on screen are not.
_ATTRIBUTE_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_CRLF = re.compile(r"\r\n?")


class ImportFileError(TidingsError):
    """The file as a whole cannot be imported (no header, no email column...): nothing was."""


@dataclass(frozen=True)
class Reject:
    """A row that was not imported: where, which field, why, and the row as it was."""

    line: int
    field: str  # a column name, or "" when the problem is the whole line
    reason: str
    data: str


@dataclass
class Header:
    columns: list[str]  # as written (stripped)
    email: int
    name: int | None
    timezone: int | None
    attributes: list[tuple[int, str]]  # the columns kept
    ignored: list[str]  # an export's own columns (status, created_at...)
    dropped: list[tuple[int, str]] = field(default_factory=list)  # never read, never stored

    @functools.cached_property
    def used(self) -> list[tuple[int, int]]:
        """(index, length limit) of every column that is read, in file order."""
        special = {
            self.email: EMAIL_MAX_CHARS,
            self.name: NAME_MAX_CHARS,
            self.timezone: TIMEZONE_MAX_CHARS,
        }
        indexes = sorted({i for i in special if i is not None} | {i for i, _ in self.attributes})
        return [(i, special.get(i, ATTRIBUTE_MAX_CHARS)) for i in indexes]

    @functools.cached_property
    def one_line(self) -> frozenset[int]:
        return frozenset(i for i in (self.email, self.name, self.timezone) if i is not None)

    @property
    def dropped_names(self) -> list[str]:
        return [name for _, name in self.dropped]


# Long: one pass over the header, each problem its own message.
def read_header(
    records: Iterator[Record], keep: tuple[str, ...] = (), keep_if_present: tuple[str, ...] = ()
) -> Header:
    """Which column is what. `keep`: columns kept as attributes, each of which the file must
    have (`--keep`); `keep_if_present`: kept when the file has them (the setting)."""
    first = next(records, None)
    if first is None:
        raise ImportFileError(
            "the file is empty: expected a header line naming the columns, e.g. email,name,timezone"
        )
    where = f"line {first.first_line}"
    if first.fields is None:
        raise ImportFileError(
            f"{where}: {first.problem}; the first line must be the header naming the columns, "
            "e.g. email,name,timezone"
        )
    columns = [c.strip() for c in first.fields]
    if len(columns) > MAX_COLUMNS:
        raise ImportFileError(f"{where}: {len(columns)} columns; the limit is {MAX_COLUMNS}")
    roles: dict[str, int] = {}
    attributes: list[tuple[int, str]] = []
    dropped: list[tuple[int, str]] = []
    ignored: list[str] = []
    seen: dict[str, int] = {}
    wanted = {name.strip().lower() for name in keep + keep_if_present}
    for index, name in enumerate(columns):
        if not name:
            raise ImportFileError(f"{where}: column {index + 1} of the header has no name")
        if _CONTROL.search(name) or len(name) > MAX_COLUMN_NAME_CHARS:
            raise ImportFileError(
                f"{where}: column {index + 1} of the header is not a usable name "
                f"(one line, at most {MAX_COLUMN_NAME_CHARS} characters)"
            )
        key = name.lower()
        role = COLUMN_ALIASES.get(key)
        if role in roles or key in seen:
            raise ImportFileError(f"{where}: the header names the column {name!r} twice")
        seen[key] = index
        if role is not None:
            roles[role] = index
        elif key in IGNORED_COLUMNS:
            ignored.append(name)
        elif key in wanted:
            attributes.append((index, name))
        else:
            dropped.append((index, name))
    if "email" not in roles:
        raise ImportFileError(
            f"{where}: the header has no 'email' column (found: {', '.join(columns)}); "
            "the first line must name the columns, e.g. email,name,timezone"
        )
    for name in (n.strip() for n in keep):
        if name.lower() in IGNORED_COLUMNS:
            raise ImportFileError(f"--keep {name}: tidings keeps this column itself")
        if name.lower() not in seen:
            raise ImportFileError(
                f"--keep {name}: the file has no such column (found: {', '.join(columns)})"
            )
    return Header(
        columns,
        roles["email"],
        roles.get("name"),
        roles.get("timezone"),
        attributes,
        ignored,
        dropped,
    )


@dataclass(slots=True)
class Row:
    line: int
    email: str
    name: str | None  # None: no such column, or an empty cell (the stored value stays)
    timezone: str | None
    attributes: dict[str, str]


_SIMPLE_ADDRESS = re.compile(
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
)


@functools.lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    """The normalized form of a domain, or None when email_validator refuses it."""
    try:
        return normalize_email(f"a@{domain}").partition("@")[2]
    except InvalidInput:
        return None


def fast_normalize_email(raw: str, field: str = "email") -> str:
    """normalize_email, about fifty times faster for the everyday address.

    email_validator spends most of its time on the domain; lists repeat a few domains. A plain
    dot-atom address has its domain checked once (cached) and its local part by the same rule
    email_validator applies; anything else takes the full path, with its exact messages.
    """
    match = _SIMPLE_ADDRESS.fullmatch(raw)  # no strip: spaces and the rest take the full path
    if match is not None and len(match[1]) <= 64 and len(raw) <= EMAIL_MAX_CHARS:
        domain = _domain(match[2])
        if domain is not None:
            return f"{match[1].lower()}@{domain}"
    return normalize_email(raw, field)


@functools.lru_cache(maxsize=1024)
def _timezone(raw: str, column: str) -> str:
    return check_timezone(raw, column)  # a list holds a few timezones, many times over


def _without_dropped(record: Record, header: Header) -> str:
    """The row for the reject file: as it was, but with the cells of the dropped columns left
    empty (they are not tidings' to copy); as it was when it cannot be split into columns."""
    fields = record.fields
    if (
        fields is None
        or len(fields) != len(header.columns)
        or not any(fields[i] for i, _ in header.dropped)
    ):
        return record.data
    cells = list(fields)
    for index, _ in header.dropped:
        cells[index] = ""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    return out.getvalue()


def _problem(value: str, limit: int, one_line: bool) -> str | None:
    """What is wrong with one cell that is read, if anything."""
    if one_line and _LINE_BREAK.search(value):
        return "contains a line break (CR or LF)"
    if len(value) > limit:
        return f"is {len(value)} characters long; the limit is {limit}"
    pattern = _CONTROL if one_line else _ATTRIBUTE_CONTROL
    if pattern.search(_CRLF.sub("\n", value)):
        return "contains a control character"
    return None


def check_row(record: Record, header: Header) -> Row | Reject:
    def reject(column: str, reason: str) -> Reject:
        if record.last_line != record.first_line:
            reason += f" (the row runs over lines {record.first_line}-{record.last_line})"
        return Reject(record.first_line, column, reason, _without_dropped(record, header))

    if record.fields is None:
        return reject("", record.problem)
    fields = record.fields
    if len(fields) != len(header.columns):
        return reject(
            "",
            f"{len(fields)} fields, but the header has {len(header.columns)} "
            f"({', '.join(header.columns)})",
        )
    used = header.used
    cells = [fields[i] for i, _ in used]
    # One look at the cells that are read first: nearly every row is clean.
    if _CONTROL.search("".join(cells)) or (
        max(map(len, cells)) > MIN_LIMIT and any(len(fields[i]) > limit for i, limit in used)
    ):
        one_line = header.one_line
        for index, limit in used:
            problem = _problem(fields[index], limit, index in one_line)
            if problem is not None:
                return reject(header.columns[index], problem)
    try:
        email = fast_normalize_email(fields[header.email], header.columns[header.email])
        name = None
        if header.name is not None and fields[header.name].strip():
            name = clean_name(fields[header.name], header.columns[header.name])
        timezone = None
        if header.timezone is not None and fields[header.timezone].strip():
            timezone = _timezone(fields[header.timezone], header.columns[header.timezone])
    except InvalidInput as exc:
        return reject(exc.field, exc.reason)
    attributes = {
        name_: _CRLF.sub("\n", fields[i]).strip()
        for i, name_ in header.attributes
        if fields[i].strip()
    }
    return Row(record.first_line, email, name, timezone, attributes)
