"""One Settings object, read from TIDINGS_* environment variables and an optional TOML file.

The TOML file (path in TIDINGS_CONFIG) uses the same names in lower case without the prefix,
e.g. `database_url = "sqlite:///tidings.db"`. Environment variables win over the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tidings.errors import ConfigError

ENV_PREFIX = "TIDINGS_"
# Enough to catch a missing or mistyped sender; addresses of people are checked properly in
# subscribers.validation.
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")

DEFAULT_CRISIS_LINE = (
    "If you are struggling or in crisis, call or text 988 or chat at 988lifeline.org. "
    "If anyone is in immediate danger, call 911."
)


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to reach one SMTP server, parsed from an smtp:// or smtps:// URL."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ssl: bool = False  # implicit TLS (smtps://, usually port 465)
    starttls: bool = False
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(
                f"TIDINGS_SMTP_URL: expected smtp://[user:pass@]host[:port] or smtps://..., "
                f"got {url!r}"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        ssl = parts.scheme == "smtps"
        try:
            port = parts.port or (465 if ssl else 25)
            timeout = float(query.get("timeout", 30))
        except ValueError as exc:
            raise ConfigError(f"TIDINGS_SMTP_URL: {exc}") from exc
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ssl=ssl,
            starttls=query.get("starttls", "0").lower() in ("1", "true", "yes"),
            timeout=timeout,
        )


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///tidings.db"
    # Where mail goes: "smtp" (TIDINGS_SMTP_URL) or "maildir" (files in TIDINGS_MAILDIR).
    transport: str = "smtp"
    smtp_url: str = "smtp://localhost:25"
    smtp_pool_size: int = 4
    maildir: str = "outbox"
    # Public address of the web pages that emails link to (unsubscribe, preferences...).
    base_url: str = "http://localhost:8000"
    # Signs the links in emails. Unset: a random key kept in the database is used.
    secret_key: str | None = None
    # "fixed:<ISO8601>", "scaled:<ISO8601 start>:<factor>" or unset for real time.
    clock: str | None = None
    # The sender. A campaign may override from_name/from_address.
    from_address: str = "newsletter@localhost"
    from_name: str = "tidings"
    organization: str = "tidings"
    postal_address: str = ""
    reply_to: str | None = None
    # Mailbox for List-Unsubscribe's mailto: URI; defaults to from_address.
    unsubscribe_address: str | None = None
    crisis_line: str = DEFAULT_CRISIS_LINE
    # Engine tuning.
    tick_seconds: float = 5.0
    batch_size: int = 200
    lease_seconds: float = 300.0
    retry_max_age_seconds: float = 3 * 86400
    confirm_token_max_age_seconds: float = 7 * 86400

    def __post_init__(self) -> None:
        if self.transport not in ("smtp", "maildir"):
            raise ConfigError(
                f"TIDINGS_TRANSPORT: expected 'smtp' or 'maildir', got {self.transport!r}"
            )
        if self.transport == "smtp":
            SmtpServer.from_url(self.smtp_url)  # fail early on a malformed URL
        base = urlsplit(self.base_url)
        if base.scheme not in ("http", "https") or not base.hostname or base.query or base.fragment:
            raise ConfigError(
                f"TIDINGS_BASE_URL: expected the public address of the web pages, like "
                f"https://news.example.org, got {self.base_url!r}"
            )
        for name in ("from_address", "reply_to", "unsubscribe_address"):
            value = getattr(self, name)
            if value is not None and not _ADDRESS.match(value):
                raise ConfigError(
                    f"TIDINGS_{name.upper()}: expected an email address like "
                    f"news@example.org, got {value!r}"
                )
        for name in ("smtp_pool_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TIDINGS_{name.upper()}: must be at least 1")

    @property
    def smtp(self) -> SmtpServer:
        return SmtpServer.from_url(self.smtp_url)

    @property
    def public_base_url(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def sender_domain(self) -> str:
        return self.from_address.rpartition("@")[2] or "localhost"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: str | Path | None = None
) -> Settings:
    """Settings from the TOML file named by TIDINGS_CONFIG (if any), then the environment."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                values.update(tomllib.load(fh))
        except OSError as exc:
            raise ConfigError(f"TIDINGS_CONFIG: cannot read {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"TIDINGS_CONFIG: {path}: {exc}") from exc
    known = {f.name: f for f in fields(Settings)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    for name in known:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = raw
    return Settings(**{name: _coerce(known[name], value) for name, value in values.items()})


def _coerce(spec: dataclasses.Field, value: Any) -> Any:
    """Check and convert one setting: text stays text, numbers may come as text (env vars)."""
    kind = str(spec.type).split("|")[0].strip()  # "str", "int" or "float"
    name = f"TIDINGS_{spec.name.upper()}"
    if value == "" and "None" in str(spec.type):
        return None
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected text, got {value!r}")
        return value
    convert = int if kind == "int" else float
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if convert is int and isinstance(value, float):
        raise ConfigError(f"{name}: expected a whole number, got {value!r}")
    try:
        return convert(value)
    except ValueError as exc:
        kind_text = "a whole number" if convert is int else "a number"
        raise ConfigError(f"{name}: expected {kind_text}, got {value!r}") from exc
