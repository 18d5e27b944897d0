"""Bounces that are not RFC 3464 reports, read with flufl.bounce. Pure.

Many servers still answer in their own words (qmail's "failure notice", Yahoo's, Exchange's
and GroupWise's "Undeliverable", DSNs with a missing report-type or an `Action: failure`).
flufl.bounce, Mailman's bounce detectors, knows them: it says which addresses failed and
whether for good (permanent) or for now (temporary). `reports.parse_report` reads the
standard reports first; what it cannot read comes here.

flufl.bounce names addresses only; what the delivery was is read here from the original
message the bounce quotes (its Message-ID), and the reason from the first SMTP reply in it.
"""

from __future__ import annotations

import email
import logging
import re
from email.message import Message

from flufl.bounce import all_failures

from tidings.inbound.reports import Report
from tidings.states import BounceKind

log = logging.getLogger(__name__)

_REPLY = re.compile(r"\b([45]\d\d)[ -]+((?:[245]\.\d{1,3}\.\d{1,3}\b)?.*)$", re.MULTILINE)
_DSN_STATUS = re.compile(r"^Status:[ \t]*([245]\.\d{1,3}\.\d{1,3})\b", re.MULTILINE | re.IGNORECASE)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_QUOTED_ID = re.compile(
    r"^[ \t>]*Message-Id:[ \t]*\r?\n?[ \t]*<([^<>\s]+@[^<>\s]+)>", re.MULTILINE | re.IGNORECASE
)
TEXT_LIMIT = 256 * 1024  # a bounce quoting a huge attachment: its reason is near the top


def read_heuristic_bounce(raw: bytes, returned_to: list[str]) -> Report | None:
    """The bounce flufl.bounce finds in `raw`, as a Report; None when it finds none."""
    message = email.message_from_bytes(raw)  # compat32: what flufl.bounce's detectors expect
    try:
        temporary, permanent = all_failures(message)
    except Exception as exc:  # a detector tripping over a malformed message
        log.debug("flufl.bounce could not read a message: %s", exc)
        return None
    failed = permanent or temporary
    if not failed:
        return None
    text = _body_text(message)
    reply = _REPLY.search(text)
    status = _status(reply) if reply else None
    if status is None:  # a DSN flufl.bounce read: its Status field (RFC 3464)
        field = _DSN_STATUS.search(raw[:TEXT_LIMIT].decode("latin-1"))
        status = field.group(1) if field else None
    # Hard or soft as flufl.bounce says: the codes these servers quote are too unreliable to
    # overrule it ("553 5.3.0 No such user here").
    kind = BounceKind.HARD if permanent else BounceKind.SOFT
    recipients = tuple(sorted({a.decode("utf-8", "replace").lower() for a in failed}))
    diagnostic = " ".join(reply.group(0).split())[:500] if reply else ""
    return Report(
        kind=kind,
        status=status,
        diagnostic=diagnostic or ("permanent failure" if permanent else "temporary failure"),
        recipient=recipients[0],
        original_message_id=quoted_message_id(message, text),
        returned_to=returned_to,
        recipients=recipients,
    )


def quoted_message_id(message: Message, text: str | None = None) -> str | None:
    """The Message-ID of the original message a bounce quotes (in an attached message, its
    headers, or inline text); never the bounce's own, which is in its top-level header."""
    for part in message.walk():
        if part is message:
            continue
        value = part.get("Message-ID") if part.get_content_maintype() == "message" else None
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                value = inner[0].get("Message-ID")
        if value:
            found = re.search(r"<([^<>\s]+@[^<>\s]+)>", str(value))
            if found:
                return found.group(1)
    found = _QUOTED_ID.search(text if text is not None else _body_text(message))
    return found.group(1) if found else None


def _status(reply: re.Match[str]) -> str | None:
    """The enhanced status code of an SMTP reply line, when its class agrees with the reply's
    ("550 5.1.1 ..."); else the reply's own class, e.g. 5.0.0."""
    found = _STATUS.search(reply.group(2))
    if found and found.group(1) == reply.group(1)[0]:
        return ".".join(found.groups())
    return f"{reply.group(1)[0]}.0.0"


def _body_text(message: Message) -> str:
    """Every text part and quoted header block, decoded, up to TEXT_LIMIT characters."""
    chunks: list[str] = []
    size = 0
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() not in ("text", "message"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            chunk = payload.decode(part.get_content_charset() or "latin-1", "replace")
        except LookupError:  # a charset Python does not know
            chunk = payload.decode("latin-1")
        chunks.append(chunk)
        size += len(chunk)
        if size >= TEXT_LIMIT:
            break
    return "\n".join(chunks)[:TEXT_LIMIT]
