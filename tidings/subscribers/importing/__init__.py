"""Streaming CSV import of subscribers: constant memory, batch commits, safe to re-run.

    bytes --reader--> CSV records --rows--> checked rows or rejects
          --writer--> batches of `batch_size` rows, each one transaction

Each batch is idempotent: rows are matched to stored subscribers by normalized address, so a
batch that was committed before a crash is "unchanged" when the file is imported again, and
a batch that was not committed is simply done again. Nothing is ever duplicated, and a row is
written whole (subscriber, consent events, enrollments, confirmation email) or not at all.
Rows are written with bulk statements (a few per batch, not a few per row): a 100,000-row
file is a matter of seconds on SQLite.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
from collections.abc import Callable, Iterator
from typing import IO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tidings.clock import Clock
from tidings.db import audit
from tidings.errors import InvalidInput
from tidings.subscribers.importing.columns import SETTING, check_kept, from_setting
from tidings.subscribers.importing.reader import Record, check_encoding, read_records
from tidings.subscribers.importing.rows import (
    ImportFileError,
    Reject,
    Row,
    check_row,
    fast_normalize_email,
    read_header,
)
from tidings.subscribers.importing.writer import (
    Batch,
    DryRunOverlay,
    ImportOptions,
    ImportReport,
    Sequences,
)

__all__ = [
    "BATCH_SIZE",
    "ImportFileError",
    "ImportOptions",
    "ImportReport",
    "Importer",
    "Reject",
    "check_encoding",
    "check_evidence",
    "check_options",
    "fast_normalize_email",
    "from_setting",
]

log = logging.getLogger(__name__)

# Rows per transaction. Bigger batches mean fewer commits (most of SQLite's cost); a crash
# loses at most one batch's work, which running the import again redoes.
BATCH_SIZE = 2000
EVIDENCE_MAX_CHARS = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def check_evidence(evidence: str, option: str = "--evidence") -> str:
    text = evidence.strip()
    if not text:
        raise InvalidInput(option, "must not be empty")
    if _CONTROL.search(text):
        raise InvalidInput(option, "must be one line without control characters")
    if len(text) > EVIDENCE_MAX_CHARS:
        raise InvalidInput(
            option, f"is {len(text)} characters long; the limit is {EVIDENCE_MAX_CHARS}"
        )
    return text


def check_options(options: ImportOptions) -> None:
    """Consent must be accounted for, and the options must make sense, before a row is read."""
    if not options.double_opt_in and not (options.evidence and options.evidence.strip()):
        raise InvalidInput(
            "--evidence",
            "say how these people agreed (e.g. 'paper form, 2026 open day'), "
            "or use --double-opt-in to ask each new address to confirm",
        )
    if options.evidence is not None:
        check_evidence(options.evidence)
    check_encoding(options.encoding)
    if options.batch_size < 1:
        raise InvalidInput("--batch-size", "must be at least 1")
    check_kept(options.keep, "--keep", options.allow_sensitive)
    check_kept(options.keep_if_present, SETTING, options.allow_sensitive)


class Importer:
    """Reads a CSV stream and imports it, batch after batch. See the module docstring.

    `read_sessions` serve the dry run, which only reads (no write lock on SQLite)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        read_sessions: sessionmaker[Session],
        clock: Clock,
        options: ImportOptions,
        message_domain: str,
        on_reject: Callable[[Reject], None],
        progress: Callable[[int], None] | None = None,
    ):
        check_options(options)
        self.sessions = sessions
        self.read_sessions = read_sessions
        self.clock = clock
        self.options = options
        self.message_domain = message_domain
        self.on_reject = on_reject
        self.progress = progress or (lambda _n: None)
        self.report = ImportReport()
        self.sequences = Sequences()
        self._overlay: DryRunOverlay | None = None

    def run(self, stream: IO[bytes]) -> ImportReport:
        records = read_records(stream, self.options.encoding, self.progress)
        # A file that cannot be imported fails here, whole.
        header = read_header(records, self.options.keep, self.options.keep_if_present)
        self.report.ignored_columns = header.ignored
        self.report.attribute_columns = [name for _, name in header.attributes]
        self.report.dropped_columns = header.dropped_names
        if self.options.dry_run:
            self._overlay = DryRunOverlay()
        # Reading and checking rows (Python) runs in a thread of its own while this one
        # writes the previous batch (mostly inside SQLite or the network, which let go of the
        # GIL). The queue holds two batches: memory stays flat.
        batches: queue.Queue[list[Row] | BaseException | None] = queue.Queue(maxsize=2)
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
            if self._overlay is not None:
                self._overlay.close()
                self._overlay = None
        return self.report

    def _read(
        self,
        records: Iterator[Record],
        header: object,
        batches: queue.Queue[list[Row] | BaseException | None],
        stop: threading.Event,
    ) -> None:
        def hand_over(item: list[Row] | BaseException | None) -> bool:
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    batches.put(item, timeout=0.1)
                    return True
            return False

        try:
            batch: list[Row] = []
            for record in records:
                if stop.is_set():
                    return
                self.report.rows += 1
                row = check_row(record, header)  # type: ignore[arg-type]
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

    def _apply(self, rows: list[Row]) -> None:
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
        self.report.add(result)
        self.report.last_committed_line = rows[-1].line
        if not self.options.dry_run:
            log.info("import: committed lines %d-%d", rows[0].line, rows[-1].line)

    def _apply_once(self, rows: list[Row]) -> ImportReport:
        now = self.clock.now()
        if self._overlay is not None:
            with self.read_sessions.begin() as session:
                batch = self._batch(session, now)
                batch.plan(rows)
                batch.remember()
            return batch.report
        with self.sessions.begin() as session:
            batch = self._batch(session, now)
            batch.plan(rows)
            batch.write()
            done = batch.report
            # One entry per committed batch, in its transaction: what it did, in numbers.
            audit.record(
                session,
                now,
                "subscriber.import",
                f"lines {rows[0].line}-{rows[-1].line}",
                {"created": done.created, "updated": done.updated, "suppressed": done.suppressed},
            )
        return batch.report

    def _batch(self, session: Session, now: object) -> Batch:
        return Batch(
            session,
            self.options,
            now,  # type: ignore[arg-type]
            self.sequences,
            self.message_domain,
            self._overlay,
        )
