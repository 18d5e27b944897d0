"""API keys for POST /api/subscribers: the center's own contact-form backend forwards opt-ins.

A key is shown once, when created; only its SHA-256 is stored, so a copy of the database
cannot be used to call the API. The first characters (`prefix`) are kept in clear to tell keys
apart in `tidings apikeys list`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.db import audit
from tidings.db.models import ApiKey
from tidings.errors import Conflict, InvalidInput, NotFound

KEY_PREFIX = "tdk_"  # recognizable in a leaked config file or a secret scanner
PREFIX_CHARS = 12
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@:-]{0,99}$")


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_key_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise InvalidInput(
            "name",
            "use 1 to 100 letters, digits, spaces or . _ @ : - (starting with a letter or digit), "
            "e.g. 'contact-form'",
        )
    return name


def create_api_key(session: Session, name: str, now: datetime) -> tuple[ApiKey, str]:
    """A new key named `name`. Returns the stored row and the key itself (never stored)."""
    name = check_key_name(name)
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise Conflict(f"an API key named {name!r} already exists (revoke it or pick another name)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)  # 256 bits
    row = ApiKey(
        name=name,
        key_sha256=key_sha256(key),
        prefix=key[:PREFIX_CHARS],
        created_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(session, now, "apikey.create", name)
    return row, key


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def api_key_rows(session: Session) -> list[dict[str, Any]]:
    """What `apikeys list` shows of each key: never the key, only its first characters."""
    return [
        {
            "name": k.name,
            "prefix": k.prefix,
            "created_at": k.created_at,
            "last_used_at": k.last_used_at,
            "revoked_at": k.revoked_at,
        }
        for k in list_api_keys(session)
    ]


def revoke_api_key(session: Session, name: str, now: datetime) -> bool:
    """Revoke by name. Returns False if it was already revoked."""
    row = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if row is None:
        raise NotFound(f"no API key named {name!r} (see `tidings apikeys list`)")
    if row.revoked_at is not None:
        return False
    row.revoked_at = now
    audit.record(session, now, "apikey.revoke", name)
    return True


def authenticate(session: Session, presented: str | None, now: datetime) -> ApiKey | None:
    """The live key matching `presented`, or None (missing, unknown or revoked)."""
    if not presented or not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        return None
    digest = key_sha256(presented)
    row = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == digest))
    # The lookup is by hash, so timing says nothing about the key; compare anyway for clarity.
    if row is None or not hmac.compare_digest(row.key_sha256, digest) or row.revoked_at:
        return None
    row.last_used_at = now
    return row
