"""Suppressing every address of a file: one address per line, or a CSV whose header has an
email column (other columns are ignored). Streams; commits every BATCH_SIZE addresses; safe to
run again (an address already suppressed is counted, not duplicated)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tidings.clock import Clock
from tidings.db.models import Subscriber
from tidings.errors import InvalidInput
from tidings.states import RECEIVING, StopReason
from tidings.subscribers import suppressions
from tidings.subscribers.importing.reader import check_encoding, read_records
from tidings.subscribers.importing.rows import COLUMN_ALIASES, Reject, fast_normalize_email
from tidings.subscribers.lifecycle import stop
from tidings.subscribers.suppressions import check_detail, check_reason

BATCH_SIZE = 1000


@dataclass
class SuppressionImport:
    added: int = 0
    already: int = 0
    stopped: int = 0
    rejected: int = 0


def import_suppressions(
    sessions: sessionmaker[Session],
    stream: IO[bytes],
    reason: str,
    detail: str | None,
    clock: Clock,
    on_reject: Callable[[Reject], None],
    encoding: str = "utf-8",
    source: str = "cli",
) -> SuppressionImport:
    """Suppress every address of a file: one address per line, or a CSV whose header has an
    email column (other columns are ignored). Streams; commits every BATCH_SIZE addresses;
    safe to run again (an address already suppressed is counted, not duplicated)."""
    reason = check_reason(reason)
    detail = check_detail(detail)
    check_encoding(encoding)
    records = read_records(stream, encoding)
    result = SuppressionImport()
    column = 0
    pending: list[tuple[int, str]] = []  # (line, address)
    first = True
    for record in records:
        if first:
            first = False
            names = [f.strip().lower() for f in record.fields or []]
            header = [i for i, n in enumerate(names) if COLUMN_ALIASES.get(n) == "email"]
            if header:
                column = header[0]
                continue
        if record.fields is None:
            result.rejected += 1
            on_reject(Reject(record.first_line, "", record.problem, record.data))
            continue
        raw = record.fields[column] if column < len(record.fields) else ""
        try:
            pending.append((record.first_line, fast_normalize_email(raw)))
        except InvalidInput as exc:
            result.rejected += 1
            on_reject(Reject(record.first_line, exc.field, exc.reason, record.data))
            continue
        if len(pending) >= BATCH_SIZE:
            _suppress_batch(sessions, pending, reason, detail, clock, source, result)
            pending = []
    if pending:
        _suppress_batch(sessions, pending, reason, detail, clock, source, result)
    return result


def _suppress_batch(
    sessions: sessionmaker[Session],
    batch: Iterable[tuple[int, str]],
    reason: StopReason,
    detail: str | None,
    clock: Clock,
    source: str,
    result: SuppressionImport,
) -> None:
    now = clock.now()
    lines = list(batch)
    emails = list(dict.fromkeys(email for _, email in lines))
    with sessions.begin() as session:
        new = suppressions.add_entries(session, emails, reason, detail, now)
        stopped = 0
        if new:
            for subscriber in session.scalars(
                select(Subscriber).where(
                    Subscriber.email.in_(new), Subscriber.status.in_(RECEIVING)
                )
            ).all():
                stopped += stop(session, subscriber, reason, source, detail, now)
    result.added += len(new)
    result.already += len(lines) - len(new)  # a line repeated in the file counts here too
    result.stopped += stopped
