"""Bounces and complaints that arrive later, by email: read them, match them, act on them.

- RFC 3464 delivery status notifications (what Postfix, Exim, Gmail and Microsoft send):
  a `failed` action with a 5.x.x status is a hard bounce (the address is suppressed), a
  4.x.x status or a `delayed` action a soft one (counted on the subscriber).
- RFC 5965 ARF feedback reports (a recipient pressed "spam"): a complaint, suppressed.
- Older plain-text bounces with an X-Failed-Recipients header are read too.

A report is matched to the delivery it is about by the VERP address it was sent back to
(bounces+<id>-<mac>@domain, see TIDINGS_BOUNCE_ADDRESS), else by the Message-ID of the
original message quoted in it. Nothing is ever deleted from the mailbox: unrecognised
messages are reported and left where they are, and each report is recorded by its hash so
that reading the same mailbox twice counts nothing twice.
"""

from __future__ import annotations

import email
import hashlib
import logging
import mailbox
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tidings.config import Settings
from tidings.models import (
    BounceEvent,
    Campaign,
    Delivery,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
)
from tidings.subscribers.service import (
    Consent,
    exit_enrollments,
    record_consent,
    skip_waiting_deliveries,
    suppress,
)
from tidings.subscribers.tokens import read_verp_address
from tidings.subscribers.validation import mask_addresses, mask_email

log = logging.getLogger(__name__)

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")


@dataclass(frozen=True)
class Report:
    """What one bounce or complaint message says."""

    kind: str  # hard | soft | complaint
    status: str | None  # enhanced status code, e.g. 5.1.1
    diagnostic: str
    recipient: str | None  # the address that failed, as the report gives it
    original_message_id: str | None  # without angle brackets
    returned_to: list[str] = field(default_factory=list)  # where the report was sent (VERP)


class NotAReport(ValueError):
    """The message is not a bounce or complaint tidings understands; `str()` says why."""


def parse_report(raw: bytes) -> Report:
    """Read one message. Raises NotAReport for anything else (or a malformed report)."""
    try:
        message = email.message_from_bytes(raw, policy=policy.default)
    except Exception as exc:  # the stdlib parser is lenient; this is a truly broken file
        raise NotAReport(f"unreadable message: {exc}") from exc
    returned_to = _addresses(message, ("Delivered-To", "X-Original-To", "Envelope-To", "To"))
    content_type = message.get_content_type()
    report_type = (message.get_param("report-type") or "").lower()
    if content_type == "multipart/report" and report_type == "feedback-report":
        return _parse_arf(message, returned_to)
    if content_type == "multipart/report" and report_type == "delivery-status":
        return _parse_dsn(message, returned_to)
    if message.get("X-Failed-Recipients"):
        return _parse_plain_bounce(message, returned_to)
    raise NotAReport(
        f"not a bounce or complaint report ({content_type}"
        + (f"; report-type={report_type}" if report_type else "")
        + ")"
    )


def _parse_dsn(message: EmailMessage, returned_to: list[str]) -> Report:
    status_part = _part(message, ("message/delivery-status",))
    if status_part is None:
        raise NotAReport("delivery-status report without a message/delivery-status part")
    recipients = _dsn_recipient_fields(status_part)
    if not recipients:
        raise NotAReport("delivery-status report with no per-recipient fields")
    # One report may list several recipients; we send one recipient per message, so take
    # the most severe: a failure over a delay.
    fields = max(
        recipients,
        key=lambda f: (f.get("action", "") == "failed", f.get("status", "").startswith("5")),
    )
    action = fields.get("action", "").lower()
    diagnostic = fields.get("diagnostic-code", "")
    status = _status_code(fields.get("status", ""))
    detailed = _status_code(diagnostic)
    if status is None or (status.endswith(".0.0") and detailed and detailed[0] == status[0]):
        status = detailed or status  # Exim says 5.0.0 where the remote server said 5.1.1
    if action in ("delivered", "relayed", "expanded"):
        raise NotAReport(f"a delivery notification ({action}), not a bounce")
    if action not in ("failed", "delayed"):
        raise NotAReport(f"delivery-status report with action {action or 'missing'!r}")
    kind = "hard" if action == "failed" and is_permanent_address_failure(status) else "soft"
    return Report(
        kind=kind,
        status=status,
        diagnostic=_one_line(diagnostic) or f"{action} {status or ''}".strip(),
        recipient=_address_field(fields.get("final-recipient") or fields.get("original-recipient")),
        original_message_id=_original_message_id(message),
        returned_to=returned_to,
    )


def _parse_arf(message: EmailMessage, returned_to: list[str]) -> Report:
    feedback = _part(message, ("message/feedback-report",))
    if feedback is None:
        raise NotAReport("feedback report without a message/feedback-report part")
    fields = _header_block(_payload_text(feedback))
    feedback_type = fields.get("feedback-type", "").lower()
    if not feedback_type:
        raise NotAReport("feedback report without a Feedback-Type")
    if feedback_type not in ("abuse", "fraud", "virus", "other", "not-spam"):
        raise NotAReport(f"feedback report of unknown type {feedback_type!r}")
    if feedback_type == "not-spam":
        raise NotAReport("a not-spam feedback report")
    original = _original_headers(message)
    recipient = (
        _address_field(fields.get("original-rcpt-to"))
        or (_addresses_from(original.get("To", "")) or [None])[0]
    )
    return Report(
        kind="complaint",
        status=None,
        diagnostic=f"complaint ({feedback_type}) from "
        f"{fields.get('user-agent', 'a mailbox provider')}",
        recipient=recipient,
        original_message_id=_original_message_id(message),
        returned_to=returned_to,
    )


def _parse_plain_bounce(message: EmailMessage, returned_to: list[str]) -> Report:
    """An old-style Exim bounce: X-Failed-Recipients and the reason in the text."""
    text = _payload_text(message)
    code = re.search(r"\b([45])\d\d\b", text)
    status = _status_code(text) or (f"{code.group(1)}.0.0" if code else "5.0.0")
    reason = re.search(r"([45]\d\d[ -].*)$", text, re.MULTILINE)
    return Report(
        kind="hard" if is_permanent_address_failure(status) else "soft",
        status=status,
        diagnostic=_one_line(reason.group(1) if reason else "delivery failed"),
        recipient=_address_field(str(message.get("X-Failed-Recipients"))),
        original_message_id=_original_message_id(message) or _message_id_in_text(text),
        returned_to=returned_to,
    )


def is_permanent_address_failure(status: str | None) -> bool:
    """5.x.x, except the classes about the mail system or policy (5.3.x, 5.7.x: a message
    too big, content refused, our sender blocked): those say something about us, not about
    the address, so they are counted like soft bounces and never suppress anyone."""
    if status is None:
        return True  # a failure with no code at all: trust the "failed" action
    major, _, rest = status.partition(".")
    return major == "5" and rest.split(".")[0] not in ("3", "7")


def _status_code(text: str) -> str | None:
    found = _STATUS.search(text)
    return ".".join(found.groups()) if found else None


# --------------------------------------------------------------------------- MIME helpers


def _part(message: Message, types: tuple[str, ...]) -> Message | None:
    for part in message.walk():
        if part.get_content_type() in types:
            return part
    return None


def _payload_text(part: Message) -> str:
    """The text of a part, whatever the stdlib made of it (string, bytes or sub-messages)."""
    payload = part.get_payload(decode=False)
    if isinstance(payload, list):
        return "\n\n".join(p.as_string() if isinstance(p, Message) else str(p) for p in payload)
    raw = part.get_payload(decode=True)
    if isinstance(raw, bytes):
        return raw.decode(part.get_content_charset() or "utf-8", "replace")
    return str(payload or "")


def _dsn_recipient_fields(part: Message) -> list[dict[str, str]]:
    """The per-recipient field groups of a message/delivery-status part (RFC 3464 §2.3)."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the stdlib splits it into header blocks
        blocks = [{k.lower(): str(v) for k, v in block.items()} for block in payload]
        return [b for b in blocks[1:] if "action" in b or "status" in b] or [
            b for b in blocks if "action" in b or "status" in b
        ]
    text = _payload_text(part)
    blocks = [_header_block(chunk) for chunk in re.split(r"\r?\n\s*\r?\n", text) if chunk.strip()]
    return [b for b in blocks if "action" in b or "status" in b]


def _header_block(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and last:
            fields[last] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            last = name.strip().lower()
            fields[last] = value.strip()
    return fields


def _original_headers(message: Message) -> dict[str, str]:
    part = _part(message, ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"))
    if part is None:
        return {}
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return {k: str(v) for k, v in payload[0].items()}
    return {k.title(): v for k, v in _header_block(_payload_text(part).split("\n\n")[0]).items()}


def _original_message_id(message: Message) -> str | None:
    headers = _original_headers(message)
    value = headers.get("Message-ID") or headers.get("Message-Id")
    if value:
        found = _MESSAGE_ID.search(value)
        return found.group(1) if found else value.strip().strip("<>")
    return None


def _message_id_in_text(text: str) -> str | None:
    found = re.search(r"^Message-ID:\s*<([^<>\s]+)>", text, re.MULTILINE | re.IGNORECASE)
    return found.group(1) if found else None


def _address_field(value: str | None) -> str | None:
    """'rfc822; ann@example.org' -> 'ann@example.org'."""
    if not value:
        return None
    value = value.split(";", 1)[-1].strip().strip("<>")
    return value.lower() or None


def _addresses(message: Message, headers: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for name in headers:
        for value in message.get_all(name, []):
            found += _addresses_from(str(value))
    return found


def _addresses_from(text: str) -> list[str]:
    return [a.lower() for a in re.findall(r"[\w.+-]+@[\w.-]+", text)]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


# --------------------------------------------------------------------------- reading


def read_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """(where, raw bytes) for every message in a Maildir, an mbox file, an .eml file or a
    folder of .eml files."""
    if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
        box = mailbox.Maildir(path, create=False)
        for key in box.iterkeys():
            yield f"{path}:{key}", box.get_bytes(key)
    elif path.is_dir():
        for file in sorted(path.iterdir()):
            if file.is_file() and not file.name.startswith("."):
                yield str(file), file.read_bytes()
    elif path.is_file():
        with path.open("rb") as fh:
            starts_like_mbox = fh.read(5) == b"From "
        if starts_like_mbox:
            box = mailbox.mbox(path, create=False)
            for key in box.iterkeys():
                yield f"{path}:{key}", box.get_bytes(key)
        else:
            yield str(path), path.read_bytes()
    else:
        raise FileNotFoundError(f"{path}: no such Maildir, mbox or .eml file")


# --------------------------------------------------------------------------- acting


@dataclass
class IngestReport:
    read: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    already_seen: int = 0
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    unrecognised: list[tuple[str, str]] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)  # campaigns paused by the bounce rate


def find_delivery(
    session: Session, report: Report, settings: Settings, secret: str
) -> Delivery | None:
    if settings.bounce_address:
        for address in report.returned_to:
            delivery_id = read_verp_address(settings.bounce_address, secret, address)
            if delivery_id is not None:
                delivery = session.get(Delivery, delivery_id)
                if delivery is not None:
                    return delivery
    if report.original_message_id:
        return session.scalar(
            select(Delivery).where(Delivery.message_id == report.original_message_id)
        )
    return None


def apply_report(
    session: Session,
    report: Report,
    raw: bytes,
    delivery: Delivery,
    settings: Settings,
    now: datetime,
) -> bool:
    """Act on one matched report. Returns False if this very report was applied before."""
    digest = hashlib.sha256(raw).hexdigest()
    if session.scalar(select(BounceEvent.id).where(BounceEvent.report_sha256 == digest)):
        return False
    session.add(
        BounceEvent(
            report_sha256=digest,
            kind=report.kind,
            status=report.status,
            diagnostic=mask_addresses(report.diagnostic),
            delivery_id=delivery.id,
            campaign_id=delivery.campaign_id,
            created_at=now,
        )
    )
    subscriber = session.get(Subscriber, delivery.subscriber_id)
    if subscriber is None:
        return True
    if report.kind == "soft":
        subscriber.soft_bounces = (subscriber.soft_bounces or 0) + 1
        return True
    reason, status = (
        ("hard-bounce", SubscriberStatus.BOUNCED)
        if report.kind == "hard"
        else ("complaint", SubscriberStatus.COMPLAINED)
    )
    masked = mask_addresses(report.diagnostic)
    log.warning("%s for %s: %s", reason, mask_email(subscriber.email), masked)
    suppress(session, subscriber.email, reason, masked, now)
    subscriber.status = status
    subscriber.updated_at = now
    if report.kind == "complaint":
        # Marking an email as spam withdraws consent as surely as unsubscribing does.
        record_consent(
            session, subscriber, "complained", Consent(source="email", evidence=masked), now
        )
    if report.kind == "hard" and delivery.status == DeliveryStatus.SENT:
        delivery.status = DeliveryStatus.BOUNCED
        delivery.outcome = f"bounced later: {report.diagnostic}"[:1000]
        delivery.updated_at = now
    exit_enrollments(session, subscriber.id, now)
    skip_waiting_deliveries(session, subscriber.id, f"skipped: {reason}", now)
    return True


def ingest(
    session: Session, path: Path, settings: Settings, secret: str, now: datetime
) -> IngestReport:
    """Read every message under `path` and act on the reports. Deletes nothing."""
    result = IngestReport()
    campaigns: set[int] = set()
    for where, raw in read_messages(path):
        result.read += 1
        try:
            report = parse_report(raw)
        except NotAReport as exc:
            result.unrecognised.append((where, str(exc)))
            continue
        delivery = find_delivery(session, report, settings, secret)
        if delivery is None:
            result.unmatched.append(
                (
                    where,
                    f"{report.kind} report matches no delivery "
                    f"(Message-ID {report.original_message_id})",
                )
            )
            continue
        if not apply_report(session, report, raw, delivery, settings, now):
            result.already_seen += 1
            continue
        if report.kind == "hard":
            result.hard += 1
        elif report.kind == "soft":
            result.soft += 1
        else:
            result.complaints += 1
        if report.kind == "hard" and delivery.campaign_id is not None:
            campaigns.add(delivery.campaign_id)
    session.flush()
    for campaign_id in sorted(campaigns):
        slug = check_bounce_rate(session, campaign_id, settings, now)
        if slug:
            result.paused.append(slug)
    return result


def check_bounce_rate(
    session: Session, campaign_id: int, settings: Settings, now: datetime
) -> str | None:
    """Pause a campaign whose last N sends hold too many hard bounces. Returns its slug if
    this call paused it. Only sends since the last resume count: an operator who resumed has
    seen the earlier ones."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.status != "active":
        return None
    window = settings.bounce_pause_sends
    recent = (
        select(Delivery.status)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.id > campaign.bounce_check_after_id,
            Delivery.status.in_((DeliveryStatus.SENT, DeliveryStatus.BOUNCED)),
        )
        .order_by(Delivery.id.desc())
        .limit(window)
        .subquery()
    )
    bounced = (
        session.scalar(
            select(func.count())
            .select_from(recent)
            .where(recent.c.status == DeliveryStatus.BOUNCED)
        )
        or 0
    )
    # Measured against the full window, so a handful of early sends cannot trip it.
    if bounced / window < settings.bounce_pause_ratio:
        return None
    campaign.status = "paused"
    campaign.status_reason = (
        f"paused automatically {now:%Y-%m-%d %H:%M} UTC: {bounced} hard bounces in the "
        f"last {window} sends ({bounced / window:.0%}, the limit is "
        f"{settings.bounce_pause_ratio:.0%}); check the list, then `tidings campaigns resume`"
    )
    log.error(
        "campaign %s paused: %d hard bounces in its last %d sends", campaign.slug, bounced, window
    )
    return campaign.slug
