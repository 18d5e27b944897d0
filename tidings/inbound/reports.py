"""Reading bounce and complaint reports: what one message says, as a Report. Pure.

- RFC 3464 delivery status notifications (what Postfix, Exim, Gmail and Microsoft send):
  a `failed` action with a 5.x.x status is a hard bounce (the address is suppressed), a
  4.x.x status or a `delayed` action a soft one (counted on the subscriber).
- RFC 5965 ARF feedback reports (a recipient pressed "spam"): a complaint, suppressed.
- Older plain-text bounces with an X-Failed-Recipients header are read too.

`inbound.ingest` matches a report to the delivery it is about and acts on it.
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message

from tidings.states import BounceKind

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")


@dataclass(frozen=True)
class Report:
    """What one bounce or complaint message says."""

    kind: BounceKind
    status: str | None  # enhanced status code, e.g. 5.1.1
    diagnostic: str
    recipient: str | None  # the address that failed, as the report gives it
    original_message_id: str | None  # without angle brackets
    returned_to: list[str] = field(default_factory=list)  # where the report was sent (VERP)
    # Every address the report says failed (one report may list several); `recipient` is one.
    recipients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.recipients and self.recipient:
            object.__setattr__(self, "recipients", (self.recipient,))


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
    report_type = str(message.get_param("report-type") or "").lower()
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
    recipient = _dsn_recipient(fields)
    failed = tuple(
        dict.fromkeys(
            r
            for f in recipients
            if f.get("action", "").lower() == action and (r := _dsn_recipient(f))
        )
    )
    diagnostic = fields.get("diagnostic-code", "")
    status = _status_code(fields.get("status", ""))
    detailed = _status_code(diagnostic)
    if status is None or (status.endswith(".0.0") and detailed and detailed[0] == status[0]):
        status = detailed or status  # Exim says 5.0.0 where the remote server said 5.1.1
    if action in ("delivered", "relayed", "expanded"):
        raise NotAReport(f"a delivery notification ({action}), not a bounce")
    if action not in ("failed", "delayed"):
        raise NotAReport(f"delivery-status report with action {action or 'missing'!r}")
    kind = (
        BounceKind.HARD
        if action == "failed" and is_permanent_address_failure(status)
        else BounceKind.SOFT
    )
    return Report(
        kind=kind,
        status=status,
        diagnostic=_one_line(diagnostic) or f"{action} {status or ''}".strip(),
        recipient=recipient,
        original_message_id=_original_message_id(message),
        returned_to=returned_to,
        recipients=failed,
    )


def _dsn_recipient(fields: dict[str, str]) -> str | None:
    """The address we sent to: Original-Recipient when the server kept it (Final-Recipient is
    then where an alias or a forward led, e.g. user@sims-ms-daemon), else Final-Recipient."""
    return _address_field(fields.get("original-recipient")) or _address_field(
        fields.get("final-recipient")
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
    recipient = _address_field(fields.get("original-rcpt-to")) or next(
        iter(_addresses_from(original.get("To", ""))), None
    )
    return Report(
        kind=BounceKind.COMPLAINT,
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
        kind=BounceKind.HARD if is_permanent_address_failure(status) else BounceKind.SOFT,
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
        blocks = [
            {k.lower(): str(v) for k, v in block.items()}
            for block in payload
            if isinstance(block, Message)
        ]
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
