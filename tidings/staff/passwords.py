"""Passwords of staff accounts: argon2id hashes (argon2-cffi's defaults, RFC 9106's second
recommended profile), and a policy: 12 characters at least, not one of the common passwords
that attackers try first (zxcvbn's list of 30,000), not guessable by zxcvbn's estimate.
"""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tidings.errors import InvalidInput

MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 takes any length; a megabyte of "password" is a denial of service
_HASHER = PasswordHasher()
# A hash to verify against when the account does not exist, so that an unknown address takes
# as long to refuse as a wrong password (the failure says nothing about who has an account).
DUMMY_HASH = _HASHER.hash("not the password of anyone at all")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify(stored_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored_hash or DUMMY_HASH, password[:MAX_LENGTH]) and bool(
            stored_hash
        )
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _HASHER.check_needs_rehash(stored_hash)


@lru_cache(maxsize=1)
def _common() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def check_policy(password: str, *personal: str) -> None:
    """InvalidInput naming what is wrong with a new password. `personal`: the account's
    address and name, which a password must not be built from."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput("password", f"at least {MIN_LENGTH} characters, please")
    if len(password) > MAX_LENGTH:
        raise InvalidInput("password", f"at most {MAX_LENGTH} characters")
    if password.lower() in _common() or password.lower().rstrip("0123456789!") in _common():
        raise InvalidInput("password", "that is one of the most common passwords; choose another")
    from zxcvbn import zxcvbn

    words = [p for item in personal for p in item.replace("@", " ").split() if p]
    verdict = zxcvbn(password[:100], user_inputs=words)
    if verdict["score"] < 3:
        hint = verdict["feedback"].get("warning") or "it would be guessed quickly"
        raise InvalidInput(
            "password",
            f"too easy to guess ({hint.rstrip('.')}); a few unrelated words make a strong one",
        )
