"""Writing an import, one batch per transaction: what each row changes is worked out against
what is stored (`Batch.plan`), then written with a few bulk statements (`Batch.write`).

A dry run writes nothing and takes no write lock: each batch only reads, and what it would
have written is kept in a scratch database of its own (`DryRunOverlay`), so a later batch
sees it as the real run would see its own writes (an address repeated further down the file
is new once, then an update), in constant memory however long the file.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from tidings.campaigns.sequencing import first_enrollment_values
from tidings.db.bulk import bulk_insert, select_in, table_of
from tidings.db.models import (
    Campaign,
    ConsentEvent,
    Delivery,
    Enrollment,
    Step,
    Subscriber,
    queued_delivery,
)
from tidings.states import (
    LEFT,
    CampaignKind,
    CampaignTrigger,
    ConsentKind,
    DeliveryKind,
    SubscriberStatus,
)
from tidings.subscribers.importing.rows import Row
from tidings.subscribers.lifecycle import Consent, activate, record_consent
from tidings.subscribers.suppressions import suppressed_addresses

# How many suppressed line numbers the report keeps (the count is always exact).
SUPPRESSED_LINES_KEPT = 20


@dataclass(frozen=True)
class ImportOptions:
    evidence: str | None = None  # consent given elsewhere: recorded per new or activated row
    double_opt_in: bool = False  # new addresses get a confirmation email instead
    dry_run: bool = False
    encoding: str = "utf-8"
    batch_size: int = 2000
    # Columns kept as attributes besides email, name and timezone: `keep` must be in the file
    # (--keep), `keep_if_present` may be (the setting). Every other column is dropped.
    keep: tuple[str, ...] = ()
    keep_if_present: tuple[str, ...] = ()
    allow_sensitive: bool = False  # keep columns that look clinical or identifying


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
    attribute_columns: list[str] = field(default_factory=list)  # kept
    dropped_columns: list[str] = field(default_factory=list)  # not stored
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
            "dropped_columns": self.dropped_columns,
        }

    def summary(
        self, dry_run: bool, double_opt_in: bool, rejects: str | None
    ) -> list[tuple[str, bool]]:
        """What an import did, for people: (line, is it a warning) pairs. The CLI prints
        them; the console shows them."""
        counts = (
            f"created {self.created}, updated {self.updated}, unchanged {self.unchanged}, "
            f"suppressed {self.suppressed}, rejected {self.rejected}"
        )
        lines = [
            (f"dry run, nothing was stored: would have {counts}" if dry_run else counts, False)
        ]
        if self.ignored_columns:
            ignored = ", ".join(self.ignored_columns)
            lines.append((f"ignored columns {ignored}: tidings keeps these itself", True))
        if self.dropped_columns:
            dropped = ", ".join(self.dropped_columns)
            lines.append(
                (
                    f"dropped columns {dropped}: not stored (only email, name and timezone are, "
                    "and the columns named with --keep COLUMN or TIDINGS_IMPORT_KEEP_COLUMNS)",
                    True,
                )
            )
        if self.suppressed:
            numbers = ", ".join(str(n) for n in self.suppressed_lines)
            more = ", ..." if self.suppressed > len(self.suppressed_lines) else ""
            lines.append(
                (
                    f"{self.suppressed} rows are on the suppression list or unsubscribed and "
                    f"were not re-activated (lines {numbers}{more})",
                    False,
                )
            )
        if double_opt_in and self.confirmations_queued:
            lines.append(
                (
                    f"{self.confirmations_queued} confirmation emails queued: `tidings run` or "
                    "`tidings send-due` sends them",
                    False,
                )
            )
        if rejects:
            lines.append(
                (
                    f"{self.rejected} rejected rows written to {rejects} "
                    "(line, field, reason, and the row as it was)",
                    True,
                )
            )
        return lines

    def add(self, batch: ImportReport) -> None:
        """Count a batch's results in the whole import's."""
        for name in ("created", "updated", "unchanged", "suppressed", "confirmations_queued"):
            setattr(self, name, getattr(self, name) + getattr(batch, name))
        room = SUPPRESSED_LINES_KEPT - len(self.suppressed_lines)
        self.suppressed_lines.extend(batch.suppressed_lines[:room])


def new_keys(count: int) -> list[str]:
    """`count` values of tokens.new_subscriber_key() (16 random bytes, URL-safe base64),
    from one read of the system's random source instead of one per subscriber."""
    pool = os.urandom(16 * count)
    return [
        base64.urlsafe_b64encode(pool[i : i + 16]).rstrip(b"=").decode("ascii")
        for i in range(0, 16 * count, 16)
    ]


class Sequences:
    """Where a newly active subscriber starts in each sequence that begins at confirmation:
    what sequencing.enroll() writes, worked out once per timezone (a list holds few)."""

    def __init__(self) -> None:
        # Each sequence with its first step's delay and send_window (None: no step).
        self._campaigns: list[tuple[Campaign, Any]] | None = None
        self._values: dict[tuple[str, datetime], list[dict[str, Any]]] = {}

    def enrollments(self, session: Session, timezone: str, now: datetime) -> list[dict[str, Any]]:
        if self._campaigns is None:
            campaigns = session.scalars(
                select(Campaign)
                .where(
                    Campaign.kind == CampaignKind.SEQUENCE,
                    Campaign.trigger == CampaignTrigger.CONFIRM,
                )
                .order_by(Campaign.id)
            ).all()
            self._campaigns = [
                (
                    c,
                    session.execute(
                        select(Step.delay_seconds, Step.send_window).where(
                            Step.campaign_id == c.id, Step.position == 1
                        )
                    ).first(),
                )
                for c in campaigns
            ]
        key = (timezone, now)
        cached = self._values.get(key)
        if cached is None:
            cached = [
                {
                    "campaign_id": c.id,
                    **first_enrollment_values(
                        c,
                        first.delay_seconds if first else None,
                        timezone,
                        now,
                        send_window=first.send_window if first else True,
                    ),
                }
                for c, first in self._campaigns
            ]
            if len(self._values) > 1000:
                self._values.clear()
            self._values[key] = cached
        return cached


class DryRunOverlay:
    """What a dry run would have stored so far, by address, in a temporary SQLite file."""

    def __init__(self) -> None:
        # Deleted by close() (at the end of the import, however it ends).
        self._file = tempfile.NamedTemporaryFile(prefix="tidings-dry-run-", suffix=".db")  # noqa: SIM115
        self._db = sqlite3.connect(self._file.name, check_same_thread=False)
        self._db.execute("CREATE TABLE rows (email TEXT PRIMARY KEY, data TEXT NOT NULL)")

    def get(self, emails: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(emails), 500):
            chunk = emails[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for email, data in self._db.execute(
                f"SELECT email, data FROM rows WHERE email IN ({marks})", chunk
            ):
                found[email] = json.loads(data)
        return found

    def put(self, rows: Iterable[dict[str, Any]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO rows (email, data) VALUES (?, ?)",
            [(row["email"], json.dumps(row)) for row in rows],
        )

    def close(self) -> None:
        self._db.close()
        self._file.close()


class Batch:
    """What one batch changes, worked out against what is stored, then written in bulk (or,
    in a dry run, only remembered in the overlay)."""

    def __init__(
        self,
        session: Session,
        options: ImportOptions,
        now: datetime,
        sequences: Sequences,
        message_domain: str,
        overlay: DryRunOverlay | None = None,
    ):
        self.session = session
        self.options = options
        self.now = now
        self.sequences = sequences
        self.message_domain = message_domain
        self.overlay = overlay
        self.report = ImportReport()
        self.new: dict[str, dict[str, Any]] = {}  # email -> values to insert, in file order
        self.changed: dict[str, dict[str, Any]] = {}  # email -> values after this batch
        self.to_activate: list[str] = []  # pending subscribers the list says agreed
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

    def plan(self, rows: list[Row]) -> None:
        emails = list(dict.fromkeys(r.email for r in rows))
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
        if self.overlay is not None:
            stored.update(self.overlay.get(emails))  # what earlier batches would have written
        suppressed = suppressed_addresses(self.session, emails)
        for row in rows:
            if row.email in self.new:  # the same address twice in one batch: an update
                self._count(self._merge(self.new[row.email], row))
                continue
            current = stored.get(row.email)
            if row.email in suppressed or (current is not None and current["status"] in LEFT):
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
                and row.email not in self.to_activate
            ):
                # Pending (asked on the web, never clicked) and the list says they agreed.
                self.to_activate.append(row.email)
                changed = True
            if changed:
                self.changed[row.email] = current
            self._count(changed)

    def _count(self, changed: bool) -> None:
        if changed:
            self.report.updated += 1
        else:
            self.report.unchanged += 1

    def _new_values(self, row: Row) -> dict[str, Any]:
        return {
            "email": row.email,
            "name": row.name or "",
            "timezone": row.timezone or "UTC",
            "key": "",  # filled in write(), for the whole batch at once
            "attributes": dict(row.attributes),
        }

    @staticmethod
    def _merge(values: dict[str, Any], row: Row) -> bool:
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
        table = table_of(Subscriber)
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
                        "b_id": v["id"],
                        "b_name": v["name"],
                        "b_timezone": v["timezone"],
                        "b_attributes": v["attributes"],
                        "b_updated_at": self.now,
                    }
                    for v in self.changed.values()
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
        for email in self.to_activate:
            self._activate_pending(self.changed[email]["id"])

    def remember(self) -> None:
        """A dry run: keep what write() would have stored, for the batches after this one."""
        assert self.overlay is not None
        for email in self.to_activate:
            self.changed[email]["status"] = SubscriberStatus.ACTIVE
        status = self.constants["status"]
        self.overlay.put(
            [{**v, "id": None, "status": status} for v in self.new.values()]
            + list(self.changed.values())
        )
        if self.options.double_opt_in:
            self.report.confirmations_queued += len(self.new)

    def _add_consent(self, kinds: tuple[ConsentKind, ...], ids: list[int]) -> None:
        bulk_insert(
            self.session,
            table_of(ConsentEvent),
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
        self._add_consent((ConsentKind.IMPORTED,), [sid for sid, _ in created])
        rows = [
            {"subscriber_id": sid, **values}
            for sid, timezone in created
            for values in self.sequences.enrollments(self.session, timezone, self.now)
        ]
        bulk_insert(
            self.session,
            table_of(Enrollment),
            rows,
            {"created_at": self.now, "updated_at": self.now},
        )

    def _request_confirmation(self, ids: list[int]) -> None:
        # As add_subscriber(confirmed=False): a 'requested' event and a queued confirmation.
        self._add_consent((ConsentKind.REQUESTED,), ids)
        kind, domain = DeliveryKind.CONFIRMATION, self.message_domain
        bulk_insert(
            self.session,
            table_of(Delivery),
            [queued_delivery(sid, self.now, domain, kind=kind) for sid in ids],
            {},
        )
        self.report.confirmations_queued += len(ids)

    def _activate_pending(self, subscriber_id: int) -> None:
        # Rare (someone who asked on the web and is also on the imported list): the service's
        # own path, so a confirmation by import is exactly a confirmation.
        subscriber = self.session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        consent = Consent(source="import", evidence=self.options.evidence)
        record_consent(self.session, subscriber, ConsentKind.IMPORTED, consent, self.now)
        activate(self.session, subscriber, consent, self.now)
