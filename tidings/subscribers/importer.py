"""Streaming CSV import of subscribers: constant memory, batch commits, safe to re-run.

    bytes -> physical lines (size cap, decoded one by one so an encoding error names its
    line) -> CSV records (a quoted field may span lines; one that never closes is cut off)
    -> validated rows or rejects -> batches of `batch_size` rows, each one transaction

Each batch is idempotent: rows are matched to stored subscribers by normalized address, so a
batch that was committed before a crash is "unchanged" when the file is imported again, and
a batch that was not committed is simply done again. Nothing is ever duplicated, and a row is
written whole (subscriber, consent events, enrollments, confirmation email) or not at all.

Rows are written with bulk statements (a few per batch, not a few per row): a 100,000-row
file is a matter of seconds on SQLite.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import csv
import functools
import json
import logging
import os
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import IO, Any

from sqlalchemy import JSON, Column, Dialect, Table, bindparam, insert, select, update
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tidings.campaigns.sequencing import first_enrollment_values, message_id
from tidings.clock import Clock
from tidings.errors import InvalidInput, TidingsError
from tidings.models import (
    Campaign,
    ConsentEvent,
    Delivery,
    DeliveryStatus,
    Enrollment,
    Step,
    Subscriber,
    SubscriberStatus,
)
from tidings.subscribers.service import Consent, activate, record_consent
from tidings.subscribers.validation import (
    NAME_MAX_CHARS,
    check_timezone,
    clean_name,
    email_sha256,
    normalize_email,
)

log = logging.getLogger(__name__)

# Rows per transaction. Bigger batches mean fewer commits (most of SQLite's cost); a crash
# loses at most one batch's work, which running the import again redoes.
BATCH_SIZE = 2000
# One CSV line may hold at most this many bytes; a longer one is rejected without being held
# in memory (a file with no line breaks at all cannot exhaust memory).
MAX_LINE_BYTES = 64 * 1024
# A quoted field may run over this many lines before the import calls its quote unclosed
# and reads the following lines as rows of their own again.
MAX_RECORD_LINES = 20
MAX_COLUMNS = 50
MAX_COLUMN_NAME_CHARS = 64
EMAIL_MAX_CHARS = 254
TIMEZONE_MAX_CHARS = 64
ATTRIBUTE_MAX_CHARS = 1000
MIN_LIMIT = min(EMAIL_MAX_CHARS, NAME_MAX_CHARS, TIMEZONE_MAX_CHARS, ATTRIBUTE_MAX_CHARS)
EVIDENCE_MAX_CHARS = 1000
# How many suppressed line numbers the report keeps (the count is always exact).
SUPPRESSED_LINES_KEPT = 20

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
LEFT = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_LINE_BREAK = re.compile(r"[\r\n\u2028\u2029]")
_OPEN_QUOTE = "unexpected end of data"  # what the csv module says about an unclosed quote


class ImportFileError(TidingsError):
    """The file as a whole cannot be imported (no header, no email column...): nothing was."""


@dataclass(frozen=True)
class ImportOptions:
    evidence: str | None = None  # consent given elsewhere: recorded per new or activated row
    double_opt_in: bool = False  # new addresses get a confirmation email instead
    dry_run: bool = False
    encoding: str = "utf-8"
    batch_size: int = BATCH_SIZE

    def check(self) -> None:
        if not self.double_opt_in and not (self.evidence and self.evidence.strip()):
            raise InvalidInput(
                "--evidence",
                "say how these people agreed (e.g. 'paper form, 2026 open day'), "
                "or use --double-opt-in to ask each new address to confirm",
            )
        if self.evidence is not None:
            check_evidence(self.evidence)
        check_encoding(self.encoding)
        if self.batch_size < 1:
            raise InvalidInput("--batch-size", "must be at least 1")


def check_evidence(evidence: str, option: str = "--evidence") -> str:
    text = evidence.strip()
    if not text:
        raise InvalidInput(option, "must not be empty")
    if _CONTROL.search(text):
        raise InvalidInput(option, "must be one line without control characters")
    if len(text) > EVIDENCE_MAX_CHARS:
        raise InvalidInput(option, f"is {len(text)} characters long; the limit is 1000")
    return text


def check_encoding(name: str) -> str:
    try:
        info = codecs.lookup(name)
    except LookupError as exc:
        raise InvalidInput("--encoding", f"unknown encoding {name!r}") from exc
    # Lines are split on b"\n" before decoding, so the encoding must write ASCII as ASCII.
    try:
        ascii_compatible = "email,\r\n".encode(info.name) == b"email,\r\n"
    except UnicodeError:
        ascii_compatible = False
    if not ascii_compatible:
        raise InvalidInput(
            "--encoding",
            f"{name} is not supported: use an encoding that extends ASCII "
            "(utf-8, latin-1, cp1252...); convert UTF-16 files to UTF-8 first",
        )
    return info.name


@dataclass(frozen=True)
class Reject:
    """A row that was not imported: where, which field, why, and the row as it was."""

    line: int
    field: str  # a column name, or "" when the problem is the whole line
    reason: str
    data: str


@dataclass
class ImportReport:
    rows: int = 0  # data rows read (blank lines not counted)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressed: int = 0
    rejected: int = 0
    confirmations_queued: int = 0
    suppressed_lines: list[int] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    attribute_columns: list[str] = field(default_factory=list)
    last_committed_line: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "suppressed": self.suppressed,
            "rejected": self.rejected,
            "confirmations_queued": self.confirmations_queued,
            "suppressed_lines": self.suppressed_lines,
            "ignored_columns": self.ignored_columns,
            "attribute_columns": self.attribute_columns,
        }


# ----------------------------------------------------------------------------- reading


@dataclass(slots=True)  # one per line: slots, not frozen (frozen is slower to build)
class _Line:
    number: int
    text: str | None  # decoded, line ending included; None when it could not be read
    problem: str = ""
    preview: str = ""  # what the reject file shows of an unreadable line


def _physical_lines(
    stream: IO[bytes], encoding: str, progress: Callable[[int], None]
) -> Iterator[_Line]:
    """The file's lines, decoded one at a time, so a bad byte costs one line, not the file."""
    codec = codecs.lookup(encoding).name
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            head, consumed = raw[:120], len(raw)
            while raw and not raw.endswith(b"\n"):  # skip the rest of it, never holding it
                raw = stream.readline(MAX_LINE_BYTES + 1)
                consumed += len(raw)
            progress(consumed)
            yield _Line(
                number,
                None,
                f"the line is longer than {MAX_LINE_BYTES} bytes",
                head.decode(codec, errors="backslashreplace") + "...",
            )
            continue
        progress(len(raw))
        if number == 1 and codec == "utf-8" and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]  # spreadsheets write one; it is not data
        try:
            yield _Line(number, raw.decode(codec))
        except UnicodeDecodeError as exc:
            column = len(raw[: exc.start].decode(codec, errors="replace")) + 1
            hint = " (if it comes from Excel, try --encoding cp1252)" if codec == "utf-8" else ""
            yield _Line(
                number,
                None,
                f"not valid {codec}: byte 0x{raw[exc.start]:02x} at column {column}{hint}",
                raw.decode(codec, errors="backslashreplace").rstrip("\r\n"),
            )


@dataclass(slots=True)
class _Record:
    first_line: int
    last_line: int
    fields: list[str] | None
    problem: str  # "" when the record could be parsed
    data: str  # the record's text, for the reject file


def _parse(text: str) -> tuple[list[str] | None, str]:
    """One CSV record from its text, or why it is not one."""
    try:
        return next(csv.reader([text], strict=True)), ""
    except StopIteration:
        return [], ""
    except csv.Error as exc:
        message = str(exc)
        if message == _OPEN_QUOTE:
            return None, _OPEN_QUOTE
        if "new-line character" in message:
            return None, "a carriage return (CR) in the middle of the line"
        if "expected after" in message:
            return None, 'malformed quoting: a closing " must be followed by a comma'
        return None, f"malformed CSV: {message}"


class _Records:
    """CSV records from physical lines, with line numbers. A record whose quoted field does
    not close within MAX_RECORD_LINES lines is reported alone and the lines after it are read
    again as records of their own, so one stray quote cannot swallow the rest of the file."""

    def __init__(self, lines: Iterator[_Line]):
        self._lines = lines
        self._pushed: deque[_Line] = deque()

    def _next_line(self) -> _Line | None:
        if self._pushed:
            return self._pushed.popleft()
        return next(self._lines, None)

    def __iter__(self) -> Iterator[_Record]:
        while (line := self._next_line()) is not None:
            if line.text is None:
                yield _Record(line.number, line.number, None, line.problem, line.preview)
                continue
            text = line.text
            if not text.strip():
                continue  # blank lines are not rows
            body = text[:-2] if text.endswith("\r\n") else text.rstrip("\n")
            if '"' not in body and "\r" not in body:
                # No quoting and no stray CR: what the csv module would do, faster.
                yield _Record(line.number, line.number, body.split(","), "", body)
                continue
            fields, problem = _parse(text)
            if problem == _OPEN_QUOTE:
                yield self._spanning(line)
            else:
                yield _Record(line.number, line.number, fields, problem, line.text.rstrip("\r\n"))

    def _spanning(self, first: _Line) -> _Record:
        assert first.text is not None
        taken = [first]
        text = first.text
        while len(taken) < MAX_RECORD_LINES and len(text) <= MAX_LINE_BYTES:
            line = self._next_line()
            if line is None:
                break
            if line.text is None:
                self._pushed.appendleft(line)
                break
            taken.append(line)
            text += line.text
            fields, problem = _parse(text)
            if problem != _OPEN_QUOTE:
                return _Record(first.number, line.number, fields, problem, text.rstrip("\r\n"))
        for line in reversed(taken[1:]):
            self._pushed.appendleft(line)
        return _Record(
            first.number,
            first.number,
            None,
            'a quoted field is never closed (a " without its closing ")',
            first.text.rstrip("\r\n"),
        )


def read_records(
    stream: IO[bytes], encoding: str = "utf-8", progress: Callable[[int], None] | None = None
) -> Iterator[_Record]:
    """The CSV records of a byte stream, with their line numbers; unreadable lines come as
    records with a `problem`. `progress` is told how many bytes each line took."""
    return iter(_Records(_physical_lines(stream, encoding, progress or (lambda _n: None))))


# ----------------------------------------------------------------------------- validating


@dataclass
class _Header:
    columns: list[str]  # as written (stripped)
    email: int
    name: int | None
    timezone: int | None
    attributes: list[tuple[int, str]]
    ignored: list[str]

    @functools.cached_property
    def limits(self) -> list[int]:
        special = {
            self.email: EMAIL_MAX_CHARS,
            self.name: NAME_MAX_CHARS,
            self.timezone: TIMEZONE_MAX_CHARS,
        }
        return [special.get(i, ATTRIBUTE_MAX_CHARS) for i in range(len(self.columns))]


def _read_header(records: Iterator[_Record]) -> _Header:
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
    ignored: list[str] = []
    seen: dict[str, int] = {}
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
        else:
            attributes.append((index, name))
    if "email" not in roles:
        raise ImportFileError(
            f"{where}: the header has no 'email' column (found: {', '.join(columns)}); "
            "the first line must name the columns, e.g. email,name,timezone"
        )
    return _Header(
        columns, roles["email"], roles.get("name"), roles.get("timezone"), attributes, ignored
    )


@dataclass(slots=True)
class _Row:
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


def _validate(record: _Record, header: _Header) -> _Row | Reject:
    def reject(column: str, reason: str) -> Reject:
        if record.last_line != record.first_line:
            reason += f" (the row runs over lines {record.first_line}-{record.last_line})"
        return Reject(record.first_line, column, reason, record.data)

    if record.fields is None:
        return reject("", record.problem)
    fields = record.fields
    if len(fields) != len(header.columns):
        return reject(
            "",
            f"{len(fields)} fields, but the header has {len(header.columns)} "
            f"({', '.join(header.columns)})",
        )
    limits = header.limits
    # One look at the whole row first: nearly every row is clean.
    if _CONTROL.search("".join(fields)) or (
        max(map(len, fields)) > MIN_LIMIT
        and any(len(v) > limit for v, limit in zip(fields, limits, strict=True))
    ):
        for index, value in enumerate(fields):
            column = header.columns[index]
            if _LINE_BREAK.search(value):
                return reject(column, "contains a line break (CR or LF)")
            if len(value) > limits[index]:
                return reject(
                    column, f"is {len(value)} characters long; the limit is {limits[index]}"
                )
            if _CONTROL.search(value):
                return reject(column, "contains a control character")
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
    attributes = {name_: fields[i].strip() for i, name_ in header.attributes if fields[i].strip()}
    return _Row(record.first_line, email, name, timezone, attributes)


# ----------------------------------------------------------------------------- writing


def new_keys(count: int) -> list[str]:
    """`count` values of tokens.new_subscriber_key() (16 random bytes, URL-safe base64),
    from one read of the system's random source instead of one per subscriber."""
    pool = os.urandom(16 * count)
    return [
        base64.urlsafe_b64encode(pool[i : i + 16]).rstrip(b"=").decode("ascii")
        for i in range(0, 16 * count, 16)
    ]


class _Batch:
    """What one batch changes, worked out against what is stored, then written in bulk."""

    def __init__(self, importer: Importer, session: Session, now: datetime):
        self.importer = importer
        self.options = importer.options
        self.session = session
        self.now = now
        self.report = ImportReport()
        self.new: dict[str, dict[str, Any]] = {}  # email -> values to insert, in file order
        self.changed: dict[int, dict[str, Any]] = {}  # id -> values after this batch
        self.to_activate: list[int] = []
        active = not self.options.double_opt_in
        # What every new subscriber of this batch has in common.
        self.constants = {
            "status": SubscriberStatus.ACTIVE if active else SubscriberStatus.PENDING,
            "created_at": now,
            "updated_at": now,
            "confirmed_at": now if active else None,
            "unsubscribed_at": None,
            "paused_until": None,
        }

    def plan(self, rows: list[_Row]) -> None:
        digests = {r.email: email_sha256(r.email) for r in rows}
        emails = list(digests)
        # Plain driver statements: with 2,000 values in an IN list, SQLAlchemy's per-value
        # work would cost more than the query.
        stored = {
            email: {
                "id": sid,
                "email": email,
                "name": name,
                "timezone": timezone,
                "status": status,
                "attributes": json.loads(attributes) if isinstance(attributes, str) else attributes,
            }
            for sid, email, name, timezone, status, attributes in select_in(
                self.session,
                "SELECT id, email, name, timezone, status, attributes FROM subscribers "
                "WHERE email IN ({})",
                emails,
            )
        }
        suppressed = {
            digest
            for (digest,) in select_in(
                self.session,
                "SELECT email_sha256 FROM suppressions WHERE email_sha256 IN ({})",
                list(digests.values()),
            )
        }
        for row in rows:
            if row.email in self.new:  # the same address twice in one batch: an update
                self._count(self._merge(self.new[row.email], row))
                continue
            current = stored.get(row.email)
            if digests[row.email] in suppressed or (
                current is not None and current["status"] in LEFT
            ):
                self.report.suppressed += 1
                if len(self.report.suppressed_lines) < SUPPRESSED_LINES_KEPT:
                    self.report.suppressed_lines.append(row.line)
                continue
            if current is None:
                self.new[row.email] = self._new_values(row)
                self.report.created += 1
                continue
            changed = self._merge(current, row)
            if (
                current["status"] == SubscriberStatus.PENDING
                and not self.options.double_opt_in
                and current["id"] not in self.to_activate
            ):
                # Pending (asked on the web, never clicked) and the list says they agreed.
                self.to_activate.append(current["id"])
                changed = True
            if changed:
                self.changed[current["id"]] = current
            self._count(changed)

    def _count(self, changed: bool) -> None:
        if changed:
            self.report.updated += 1
        else:
            self.report.unchanged += 1

    def _new_values(self, row: _Row) -> dict[str, Any]:
        return {
            "email": row.email,
            "name": row.name or "",
            "timezone": row.timezone or "UTC",
            "key": "",  # filled in write(), for the whole batch at once
            "attributes": dict(row.attributes),
        }

    @staticmethod
    def _merge(values: dict[str, Any], row: _Row) -> bool:
        """Apply a row's non-empty cells to stored values; True if anything changed."""
        changed = False
        if row.name is not None and row.name != values["name"]:
            values["name"] = row.name
            changed = True
        if row.timezone is not None and row.timezone != values["timezone"]:
            values["timezone"] = row.timezone
            changed = True
        attributes = dict(values["attributes"] or {})
        for key, value in row.attributes.items():
            if attributes.get(key) != value:
                attributes[key] = value
                changed = True
        values["attributes"] = attributes
        return changed

    def write(self) -> None:
        table = Subscriber.__table__
        if self.changed:
            self.session.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(
                    name=bindparam("b_name"),
                    timezone=bindparam("b_timezone"),
                    attributes=bindparam("b_attributes"),
                    updated_at=bindparam("b_updated_at"),
                ),
                [
                    {
                        "b_id": sid,
                        "b_name": v["name"],
                        "b_timezone": v["timezone"],
                        "b_attributes": v["attributes"],
                        "b_updated_at": self.now,
                    }
                    for sid, v in self.changed.items()
                ],
            )
        if self.new:
            for values, key in zip(self.new.values(), new_keys(len(self.new)), strict=True):
                values["key"] = key
            bulk_insert(self.session, table, list(self.new.values()), self.constants)
            created = sorted(
                select_in(
                    self.session,
                    "SELECT id, timezone FROM subscribers WHERE email IN ({})",
                    list(self.new),
                )
            )
            if self.options.double_opt_in:
                self._request_confirmation([sid for sid, _ in created])
            else:
                self._record_imported(created)
        for sid in self.to_activate:
            self._activate_pending(sid)

    def _add_consent(self, kinds: tuple[str, ...], ids: list[int]) -> None:
        bulk_insert(
            self.session,
            ConsentEvent.__table__,
            [{"subscriber_id": sid, "kind": kind} for sid in ids for kind in kinds],
            {
                "source": "import",
                "evidence": self.options.evidence,
                "consent_text_sha256": None,
                "ip": None,
                "user_agent": None,
                "created_at": self.now,
            },
        )

    def _record_imported(self, created: list[Any]) -> None:
        # One 'imported' event carrying the evidence (it is the consent: they are active from
        # it, confirmed_at says when), and every sequence that starts at confirmation, as
        # activate() would enroll them.
        self._add_consent(("imported",), [sid for sid, _ in created])
        rows = [
            {"subscriber_id": sid, **values}
            for sid, timezone in created
            for values in self.importer.enrollments(self.session, timezone, self.now)
        ]
        bulk_insert(
            self.session,
            Enrollment.__table__,
            rows,
            {"created_at": self.now, "updated_at": self.now},
        )

    def _request_confirmation(self, ids: list[int]) -> None:
        # As add_subscriber(confirmed=False): a 'requested' event and a queued confirmation.
        self._add_consent(("requested",), ids)
        domain = self.importer.message_domain
        bulk_insert(
            self.session,
            Delivery.__table__,
            [{"subscriber_id": sid, "message_id": message_id(domain)} for sid in ids],
            {
                "kind": "confirmation",
                "campaign_id": None,
                "step_id": None,
                "status": DeliveryStatus.QUEUED,
                "attempts": 0,
                "next_attempt_at": self.now,
                "created_at": self.now,
                "updated_at": self.now,
            },
        )
        self.report.confirmations_queued += len(ids)

    def _activate_pending(self, subscriber_id: int) -> None:
        # Rare (someone who asked on the web and is also on the imported list): the service's
        # own path, so a confirmation by import is exactly a confirmation.
        subscriber = self.session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        consent = Consent(source="import", evidence=self.options.evidence)
        record_consent(self.session, subscriber, "imported", consent, self.now)
        activate(self.session, subscriber, consent, self.now)


def bulk_insert(
    session: Session, table: Table, rows: list[dict[str, Any]], constants: dict[str, Any]
) -> None:
    """INSERT many rows, fast: what session.execute(insert(table), rows) does, with
    `constants` merged into every row, minus SQLAlchemy's per-row work.

    On SQLite most of the cost of an ORM or Core executemany is SQLAlchemy preparing each
    row's parameters. Here each column's own type converts the values up front (a constant
    once per batch), and the driver's executemany runs one plain INSERT.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    given = set(rows[0]) | set(constants)
    fixed = dict(constants)
    for col in table.columns:  # Python-side defaults of columns not given (e.g. counters)
        if col.name not in given and col.default is not None and col.default.is_scalar:
            fixed[col.name] = col.default.arg  # type: ignore[attr-defined]
    names = list(rows[0])
    for name in names:  # convert in place (the rows are built for this call)
        process = _processor(table.c[name], dialect)
        if process is not None:
            memo: dict[Any, Any] = {}
            for row in rows:
                value = row[name]
                if isinstance(value, dict | list):
                    row[name] = process(value)
                elif value in memo:
                    row[name] = memo[value]
                else:
                    row[name] = memo[value] = process(value)
    tail = tuple(
        value if (p := _processor(table.c[name], dialect)) is None else p(value)
        for name, value in fixed.items()
    )
    getter = itemgetter(*names)
    if len(names) == 1:
        params = [(getter(row), *tail) for row in rows]
    else:
        params = [getter(row) + tail for row in rows]
    names += list(fixed)
    if dialect.paramstyle not in ("qmark", "format", "pyformat"):
        untyped = sql_table(table.name, *(sql_column(name) for name in names))
        session.execute(insert(untyped), [dict(zip(names, p, strict=True)) for p in params])
        return
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    quote = dialect.identifier_preparer.quote
    statement = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
        f"VALUES ({', '.join(mark for _ in names)})"
    )
    session.connection().exec_driver_sql(statement, params)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4096)
def _json_of(items: tuple[tuple[str, Any], ...]) -> str:
    return json.dumps(dict(items))


def _json(value: Any) -> str:
    # Attribute dicts repeat a lot in a list (same city, same source): serialize each once.
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return _json_of(tuple(value.items()))
    return json.dumps(value)


def select_in(session: Session, statement: str, values: list[Any]) -> list[tuple[Any, ...]]:
    """Rows of a SELECT whose one `{}` is filled with a placeholder per value, through the
    driver (SQLite's "?" or psycopg's "%s"). Values must be plain strings or numbers."""
    if not values:
        return []
    dialect = session.get_bind().dialect
    if dialect.paramstyle not in ("qmark", "format", "pyformat"):  # pragma: no cover
        raise NotImplementedError(f"paramstyle {dialect.paramstyle}")
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = statement.format(", ".join(mark for _ in values))
    cursor = session.connection().connection.cursor()  # the driver's own, inside our transaction
    try:
        cursor.execute(sql, tuple(values))
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _processor(col: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    if isinstance(col.type, JSON):
        return _json  # what SQLAlchemy's JSON type stores, without its wrapping
    # dialect_impl: on SQLite the string format of DATETIME comes from the dialect's type.
    return col.type.dialect_impl(dialect).bind_processor(dialect)


class Importer:
    """Reads a CSV stream and imports it, batch after batch. See the module docstring."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        options: ImportOptions,
        message_domain: str,
        on_reject: Callable[[Reject], None],
        progress: Callable[[int], None] | None = None,
    ):
        options.check()
        self.sessions = sessions
        self.clock = clock
        self.options = options
        self.message_domain = message_domain
        self.on_reject = on_reject
        self.progress = progress or (lambda _n: None)
        self.report = ImportReport()
        self._sequences: list[tuple[Campaign, int | None]] | None = None
        self._enrollment_values: dict[tuple[str, datetime], list[dict[str, Any]]] = {}
        self._dry_run: Session | None = None  # the one transaction of a dry run

    def run(self, stream: IO[bytes]) -> ImportReport:
        records = read_records(stream, self.options.encoding, self.progress)
        header = _read_header(records)  # a file that cannot be imported fails here, whole
        self.report.ignored_columns = header.ignored
        self.report.attribute_columns = [name for _, name in header.attributes]
        # Reading and checking rows (Python) runs in a thread of its own while this one
        # writes the previous batch (mostly inside SQLite or the network, which let go of the
        # GIL). The queue holds two batches: memory stays flat.
        batches: queue.Queue[list[_Row] | BaseException | None] = queue.Queue(maxsize=2)
        stop = threading.Event()
        reader = threading.Thread(
            target=self._read,
            args=(records, header, batches, stop),
            name="import-reader",
            daemon=True,  # it may be blocked reading stdin when the import is interrupted
        )
        reader.start()
        try:
            while (item := batches.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                self._apply(item)
        finally:
            stop.set()  # the reader stops at its next row
            reader.join(timeout=5)
            if self._dry_run is not None:
                self._dry_run.rollback()
                self._dry_run.close()
                self._dry_run = None
        return self.report

    def _dry_run_session(self) -> Session:
        if self._dry_run is None:
            self._dry_run = self.sessions()
            self._dry_run.begin()
        return self._dry_run

    def _read(
        self,
        records: Iterator[_Record],
        header: _Header,
        batches: queue.Queue[list[_Row] | BaseException | None],
        stop: threading.Event,
    ) -> None:
        def hand_over(item: list[_Row] | BaseException | None) -> bool:
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    batches.put(item, timeout=0.1)
                    return True
            return False

        try:
            batch: list[_Row] = []
            for record in records:
                if stop.is_set():
                    return
                self.report.rows += 1
                row = _validate(record, header)
                if isinstance(row, Reject):
                    self.report.rejected += 1
                    self.on_reject(row)
                    continue
                batch.append(row)
                if len(batch) >= self.options.batch_size:
                    if not hand_over(batch):
                        return
                    batch = []
            if batch and not hand_over(batch):
                return
            hand_over(None)
        except BaseException as exc:  # the writer re-raises it, in its own thread
            hand_over(exc)

    def _apply(self, rows: list[_Row]) -> None:
        for attempt in range(1, 4):
            try:
                result = self._apply_once(rows)
                break
            except IntegrityError:
                # Someone else (the web form) stored one of these addresses between our read
                # and our write (PostgreSQL). The batch rolled back whole: do it again.
                if attempt == 3:
                    raise
                log.info("import: lines %d-%d collided, retrying", rows[0].line, rows[-1].line)
        for name in ("created", "updated", "unchanged", "suppressed", "confirmations_queued"):
            setattr(self.report, name, getattr(self.report, name) + getattr(result, name))
        room = SUPPRESSED_LINES_KEPT - len(self.report.suppressed_lines)
        self.report.suppressed_lines.extend(result.suppressed_lines[:room])
        self.report.last_committed_line = rows[-1].line
        if not self.options.dry_run:
            log.info("import: committed lines %d-%d", rows[0].line, rows[-1].line)

    def _apply_once(self, rows: list[_Row]) -> ImportReport:
        now = self.clock.now()
        if self.options.dry_run:
            # Every batch is written into one transaction that is never committed, so a later
            # batch sees the earlier ones as the real run would (an address repeated across
            # batches is new once, then updated). A savepoint per batch lets _apply retry one.
            session = self._dry_run_session()
            with session.begin_nested():
                batch = _Batch(self, session, now)
                batch.plan(rows)
                batch.write()
            return batch.report
        with self.sessions.begin() as session:
            batch = _Batch(self, session, now)
            batch.plan(rows)
            batch.write()
        return batch.report

    def enrollments(self, session: Session, timezone: str, now: datetime) -> list[dict[str, Any]]:
        """The enrollments of a newly active subscriber in this timezone: what
        sequencing.enroll() writes for each sequence whose trigger is confirmation."""
        if self._sequences is None:
            campaigns = session.scalars(
                select(Campaign)
                .where(Campaign.kind == "sequence", Campaign.trigger == "confirm")
                .order_by(Campaign.id)
            ).all()
            self._sequences = [
                (
                    c,
                    session.scalar(
                        select(Step.delay_seconds).where(
                            Step.campaign_id == c.id, Step.position == 1
                        )
                    ),
                )
                for c in campaigns
            ]
        key = (timezone, now)
        cached = self._enrollment_values.get(key)
        if cached is None:
            cached = [
                {
                    "campaign_id": campaign.id,
                    **first_enrollment_values(campaign, first_delay, timezone, now),
                }
                for campaign, first_delay in self._sequences
            ]
            if len(self._enrollment_values) > 1000:
                self._enrollment_values.clear()
            self._enrollment_values[key] = cached
        return cached
