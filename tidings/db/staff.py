"""The staff console's tables: accounts, their sessions and recovery codes, and the audit log.

Kept apart from models.py (the mailing engine's schema) but on the same metadata, created by
migration 0008. Nothing secret is stored in a form that can be used: passwords as argon2
hashes, session ids and recovery codes as SHA-256 hashes; the TOTP seed is the exception
(a TOTP check needs it), and it is never shown again after it is set up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import false

from tidings.db.models import Base, one_of
from tidings.states import StaffRole


class StaffUser(Base):
    __tablename__ = "staff_users"
    __table_args__ = (one_of("role", StaffRole),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalized, lower case
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(200))  # None: not set yet
    # Bumped at every password change or reset: set-password links and sessions made before
    # carry the old value and stop working (logout everywhere).
    credentials_version: Mapped[int] = mapped_column(Integer, default=1)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enabled: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The last 30-second TOTP step a code was accepted for: a code seen once (over a
    # shoulder, in a phishing proxy) is not accepted again.
    totp_last_step: Mapped[int | None]
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]


class StaffSession(Base):
    """A signed-in browser. The cookie holds a random id; this row holds its hash."""

    __tablename__ = "staff_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("staff_users.id", ondelete="CASCADE"), index=True
    )
    credentials_version: Mapped[int] = mapped_column(Integer)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    # Signed in with the password but the second factor still to give (TOTP or a code).
    needs_second_factor: Mapped[bool] = mapped_column(default=False, server_default=false())


class RecoveryCode(Base):
    """One-time codes that stand in for the TOTP app when it is lost."""

    __tablename__ = "staff_recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("staff_users.id", ondelete="CASCADE"), index=True
    )
    code_sha256: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None]


class AuditEntry(Base):
    """Who did what, when, to which campaign or subscriber. Append-only: the database refuses
    UPDATE and DELETE on this table (triggers of migration 0008)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"), Index("ix_audit_log_actor", "actor"))

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))  # staff:ann@..., cli:root, api:crm, system
    action: Mapped[str] = mapped_column(String(64))  # campaign.pause, subscriber.erase...
    target: Mapped[str] = mapped_column(String(200), default="")  # a slug, a masked address
    detail: Mapped[dict[str, Any] | None]
    note: Mapped[str | None] = mapped_column(Text)  # a reason the person gave
