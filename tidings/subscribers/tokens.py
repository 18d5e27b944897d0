"""Signed, scoped tokens for the links in emails.

A token carries the subscriber's random key (never the address) and an HMAC-SHA256 over the
scope, so an unsubscribe token cannot confirm and a confirm token cannot change preferences.
Confirm and come-back tokens also carry their issue time (when the email was made) and
expire; the others never do (unsubscribe links must keep working long after the email was
sent).
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tidings.errors import TidingsError

SCOPES = ("confirm", "comeback", "unsubscribe", "preferences")
STAMPED = ("confirm", "comeback")  # the scopes whose tokens carry their issue time
MAC_CHARS = 22  # 132 bits


class InvalidToken(TidingsError):
    """The token is malformed, forged or of another scope."""


class ExpiredToken(InvalidToken):
    """The token is genuine but too old. `subscriber_key` says whose it was."""

    def __init__(self, subscriber_key: str):
        super().__init__("this link has expired")
        self.subscriber_key = subscriber_key


def new_subscriber_key() -> str:
    return secrets.token_urlsafe(16)  # 128 bits


def _mac(secret: str, message: str) -> str:
    digest = hmac.digest(secret.encode(), message.encode(), "sha256")
    return base64.urlsafe_b64encode(digest[:18]).decode()[:MAC_CHARS]


def make_token(
    secret: str, scope: str, subscriber_key: str, issued_at: datetime | None = None
) -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown token scope {scope!r}")
    if scope in STAMPED:
        if issued_at is None:
            raise ValueError(f"{scope} tokens need issued_at")
        stamp = format(int(issued_at.timestamp()), "x")
        return f"{subscriber_key}.{stamp}.{_mac(secret, f'{scope}:{subscriber_key}:{stamp}')}"
    return f"{subscriber_key}.{_mac(secret, f'{scope}:{subscriber_key}')}"


def read_token(
    secret: str,
    scope: str,
    token: str,
    now: datetime | None = None,
    max_age: timedelta | None = None,
) -> str:
    """The subscriber key in a genuine token of `scope`; InvalidToken / ExpiredToken otherwise."""
    parts = token.split(".")
    if scope in STAMPED and len(parts) == 3:
        key, stamp, mac = parts
        expected = _mac(secret, f"{scope}:{key}:{stamp}")
    elif scope not in STAMPED and len(parts) == 2:
        key, mac = parts
        stamp = None
        expected = _mac(secret, f"{scope}:{key}")
    else:
        raise InvalidToken("this link is not valid")
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        raise InvalidToken("this link is not valid")
    if (
        stamp is not None
        and max_age is not None
        and now is not None
        and (now - _stamp_time(stamp) > max_age)
    ):
        raise ExpiredToken(key)
    return key


def _stamp_time(stamp: str) -> datetime:
    try:
        return datetime.fromtimestamp(int(stamp, 16), UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidToken("this link is not valid") from exc


def token_time(token: str) -> datetime | None:
    """When a stamped token (read by read_token first) was made: when its email was built,
    moments before it was sent. None for tokens without a stamp."""
    parts = token.split(".")
    return _stamp_time(parts[1]) if len(parts) == 3 else None


@dataclass(frozen=True)
class Links:
    """Builds the public URLs that emails carry. Only ever under TIDINGS_BASE_URL."""

    base_url: str
    secret: str

    def unsubscribe(self, subscriber_key: str) -> str:
        return (
            f"{self.base_url}/unsubscribe/{make_token(self.secret, 'unsubscribe', subscriber_key)}"
        )

    def preferences(self, subscriber_key: str) -> str:
        return (
            f"{self.base_url}/preferences/{make_token(self.secret, 'preferences', subscriber_key)}"
        )

    def confirm(self, subscriber_key: str, issued_at: datetime) -> str:
        token = make_token(self.secret, "confirm", subscriber_key, issued_at)
        return f"{self.base_url}/confirm/{token}"

    def comeback(self, subscriber_key: str, issued_at: datetime) -> str:
        token = make_token(self.secret, "comeback", subscriber_key, issued_at)
        return f"{self.base_url}/comeback/{token}"


def verp_address(bounce_address: str, secret: str, delivery_id: int) -> str:
    """The envelope sender for one delivery: bounces+<id>-<mac>@domain (VERP).

    A bounce comes back to this address, which names the delivery; the MAC stops forged
    reports from suppressing someone else.
    """
    local, _, domain = bounce_address.partition("@")
    mac = _mac(secret, f"verp:{delivery_id}")[:10].lower().replace("-", "x").replace("_", "y")
    return f"{local}+{delivery_id}-{mac}@{domain}"


def read_verp_address(bounce_address: str, secret: str, address: str) -> int | None:
    """The delivery id in a VERP address made by verp_address, or None if it is not one."""
    local, _, domain = bounce_address.partition("@")
    candidate = address.strip().strip("<>").lower()
    prefix, suffix = f"{local.lower()}+", f"@{domain.lower()}"
    if not (candidate.startswith(prefix) and candidate.endswith(suffix)):
        return None
    token = candidate[len(prefix) : -len(suffix)]
    number, _, _ = token.partition("-")
    if not number.isdigit():
        return None
    if not hmac.compare_digest(
        verp_address(bounce_address, secret, int(number)).lower(), candidate
    ):
        return None
    return int(number)
