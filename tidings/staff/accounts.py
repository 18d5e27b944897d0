"""Staff accounts: add, list, change role, disable, reset; set a password from a one-time
link; sign in (password, then the second factor when it is on); TOTP and recovery codes.

Every change is written to the audit log in its own transaction (db/audit.py). Messages of a
failed sign-in never say whether the account exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tidings.db import audit
from tidings.db.staff import RecoveryCode, StaffSession, StaffUser
from tidings.errors import Conflict, InvalidInput, NotFound, TidingsError
from tidings.staff import passwords
from tidings.states import StaffRole
from tidings.subscribers.validation import normalize_email

SET_PASSWORD_VALID = timedelta(hours=24)
RECOVERY_CODES = 10
TOTP_ISSUER = "tidings"


class SignInFailed(TidingsError):
    """The one message for every refused sign-in: wrong address, wrong password, disabled."""

    def __init__(self) -> None:
        super().__init__("that address and password do not match an account that may sign in")


def role_of(value: str) -> StaffRole:
    try:
        return StaffRole(value)
    except ValueError:
        known = ", ".join(r.value for r in StaffRole)
        raise InvalidInput("role", f"{value!r} is not a role ({known})") from None


def find(session: Session, email: str) -> StaffUser:
    address = normalize_email(email)
    user = session.scalar(select(StaffUser).where(StaffUser.email == address))
    if user is None:
        raise NotFound(f"no staff account for {address}")
    return user


@dataclass(frozen=True)
class NewAccount:
    user: StaffUser
    set_password_token: str | None  # when no password was given: the link's token


def add_user(
    session: Session,
    now: datetime,
    secret: str,
    email: str,
    role: str,
    name: str = "",
    password: str | None = None,
) -> NewAccount:
    """A new account; with no password, a one-time set-password token valid 24 hours."""
    address = normalize_email(email)
    if session.scalar(select(StaffUser.id).where(StaffUser.email == address)) is not None:
        raise Conflict(f"{address} already has a staff account")
    if password is not None:
        passwords.check_policy(password, address, name)
    user = StaffUser(
        email=address,
        name=name.strip()[:200],
        role=role_of(role),
        password_hash=passwords.hash_password(password) if password else None,
        credentials_version=1,
        created_at=now,
    )
    session.add(user)
    session.flush()
    audit.record(session, now, "user.add", address, {"role": user.role})
    token = None if password else set_password_token(secret, user, now)
    return NewAccount(user, token)


def list_users(session: Session) -> Sequence[StaffUser]:
    return session.scalars(select(StaffUser).order_by(StaffUser.email)).all()


def set_role(session: Session, now: datetime, email: str, role: str) -> StaffUser:
    user = find(session, email)
    before, user.role = user.role, role_of(role)
    audit.record(session, now, "user.set-role", user.email, {"from": before, "to": user.role})
    return user


def disable(session: Session, now: datetime, email: str) -> StaffUser:
    """No more sign-ins; every open session ends now."""
    user = find(session, email)
    if user.disabled_at is None:
        user.disabled_at = now
    end_sessions(session, user)
    audit.record(session, now, "user.disable", user.email)
    return user


def reset(session: Session, now: datetime, secret: str, email: str) -> str:
    """Forget the password and the second factor, end every session, and return the token
    of a new set-password link (the old links stop working too)."""
    user = find(session, email)
    user.password_hash = None
    user.credentials_version += 1
    user.totp_enabled, user.totp_secret = False, None
    user.disabled_at = None
    session.execute(update(RecoveryCode).where(RecoveryCode.user_id == user.id).values(used_at=now))
    end_sessions(session, user)
    audit.record(session, now, "user.reset", user.email)
    return set_password_token(secret, user, now)


def end_sessions(session: Session, user: StaffUser) -> None:
    session.query(StaffSession).filter(StaffSession.user_id == user.id).delete()


# ----------------------------------------------------------------------------- passwords


def _mac(secret: str, message: str) -> str:
    digest = hmac.digest(secret.encode(), f"staff-set-password:{message}".encode(), "sha256")
    return base64.urlsafe_b64encode(digest[:18]).decode()


def set_password_token(secret: str, user: StaffUser, now: datetime) -> str:
    """<user id>.<credentials version>.<time>.<mac>: it stops working after 24 hours, or once
    used (setting a password moves the credentials version on)."""
    body = f"{user.id}.{user.credentials_version}.{int(now.timestamp()):x}"
    return f"{body}.{_mac(secret, body)}"


def user_of_token(session: Session, now: datetime, secret: str, token: str) -> StaffUser:
    parts = token.split(".")
    invalid = InvalidInput("link", "not valid, or used already: ask an admin for a new one")
    if len(parts) != 4:
        raise invalid
    body = ".".join(parts[:3])
    if not hmac.compare_digest(parts[3].encode(), _mac(secret, body).encode()):
        raise invalid
    try:
        user_id, version, stamp = int(parts[0]), int(parts[1]), int(parts[2], 16)
    except ValueError:
        raise invalid from None
    user = session.get(StaffUser, user_id)
    if user is None or user.credentials_version != version or user.disabled_at is not None:
        raise invalid
    if now.timestamp() - stamp > SET_PASSWORD_VALID.total_seconds():
        raise InvalidInput("link", "expired (it works for 24 hours): ask an admin for a new one")
    return user


def set_password(session: Session, now: datetime, user: StaffUser, password: str) -> None:
    """A new password: every session of this account ends (logout everywhere)."""
    passwords.check_policy(password, user.email, user.name)
    user.password_hash = passwords.hash_password(password)
    user.credentials_version += 1
    end_sessions(session, user)
    audit.record(session, now, "user.set-password", user.email)


def change_password(
    session: Session, now: datetime, user: StaffUser, current: str, new: str
) -> None:
    if not passwords.verify(user.password_hash, current):
        raise InvalidInput("current password", "that is not it")
    set_password(session, now, user, new)


# ----------------------------------------------------------------------------- signing in


def check_password(session: Session, now: datetime, email: str, password: str) -> StaffUser:
    """The account these credentials open, or SignInFailed (same message, same work, whatever
    was wrong)."""
    try:
        address = normalize_email(email)
    except InvalidInput:
        address = ""
    user = session.scalar(select(StaffUser).where(StaffUser.email == address)) if address else None
    ok = passwords.verify(user.password_hash if user else None, password)
    if user is None or not ok or user.disabled_at is not None:
        raise SignInFailed()
    if user.password_hash and passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    return user


def signed_in(session: Session, now: datetime, user: StaffUser) -> None:
    user.last_login_at = now
    audit.record(session, now, "user.sign-in", user.email)


# ----------------------------------------------------------------------------- two factors


def start_totp(user: StaffUser, password: str) -> str:
    """A new TOTP seed for the account (not on until confirmed with a code from the app);
    returns the otpauth:// URI the authenticator app reads. Asks for the password again: a
    session left open on someone's desk must not be able to move the second factor."""
    import pyotp

    if not passwords.verify(user.password_hash, password):
        raise InvalidInput("current password", "that is not it")
    user.totp_secret = pyotp.random_base32()
    user.totp_enabled = False
    user.totp_last_step = None
    return str(
        pyotp.TOTP(user.totp_secret).provisioning_uri(name=user.email, issuer_name=TOTP_ISSUER)
    )


def confirm_totp(session: Session, now: datetime, user: StaffUser, code: str) -> list[str]:
    """Turn two-factor on with a first code from the app; returns the recovery codes, shown
    once (only their hashes are kept)."""
    if not user.totp_secret or not _totp_ok(user, code, now):
        raise InvalidInput("code", "not the code your app shows now; try the next one")
    user.totp_enabled = True
    session.execute(update(RecoveryCode).where(RecoveryCode.user_id == user.id).values(used_at=now))
    codes = [f"{secrets.token_hex(3)}-{secrets.token_hex(3)}" for _ in range(RECOVERY_CODES)]
    session.add_all(RecoveryCode(user_id=user.id, code_sha256=_sha(c)) for c in codes)
    audit.record(session, now, "user.two-factor-on", user.email)
    return codes


def check_second_factor(session: Session, now: datetime, user: StaffUser, code: str) -> bool:
    """A TOTP code, or an unused recovery code (which is then used up)."""
    code = code.strip().replace(" ", "")
    if user.totp_secret and user.totp_enabled and _totp_ok(user, code, now):
        return True
    recovery = session.scalar(
        select(RecoveryCode).where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_sha256 == _sha(code.lower()),
            RecoveryCode.used_at.is_(None),
        )
    )
    if recovery is None:
        return False
    recovery.used_at = now
    audit.record(session, now, "user.recovery-code-used", user.email)
    return True


def _totp_ok(user: StaffUser, code: str, now: datetime) -> bool:
    """The code of the current 30-second step or of the one before or after (clocks drift),
    and of a later step than any accepted before (a code works once)."""
    import pyotp

    assert user.totp_secret is not None
    totp = pyotp.TOTP(user.totp_secret)
    current = totp.timecode(now)
    for step in (current - 1, current, current + 1):
        fresh = user.totp_last_step is None or step > user.totp_last_step
        if fresh and hmac.compare_digest(totp.generate_otp(step), code.strip()):
            user.totp_last_step = step
            return True
    return False


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
