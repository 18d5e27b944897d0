"""One Settings object, read from TIDINGS_* environment variables and an optional TOML file.

The TOML file (path in TIDINGS_CONFIG) uses the same names in lower case without the prefix,
e.g. `database_url = "sqlite:///tidings.db"`. Environment variables win over the file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
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
# Next to the sign-up form's checkbox; "{organization}" is replaced by TIDINGS_ORGANIZATION.
DEFAULT_CONSENT_TEXT = (
    "Yes, please send me the educational email series from {organization}. Every email has a "
    "link to unsubscribe with one click or to pause it, and I can leave at any time."
)


MIN_SECRET_KEY_BYTES = 32
RATE_WINDOWS = {"per_second": 1, "per_minute": 60, "per_hour": 3600, "per_day": 86400}


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to reach one SMTP server, parsed from an smtp:// or smtps:// URL.

    Query parameters: starttls=1, timeout=SECONDS, name=NAME, weight=N (share of the traffic
    among several servers), and caps per_second / per_minute / per_hour / per_day (messages,
    shared by every worker through the database; absent = no cap).
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ssl: bool = False  # implicit TLS (smtps://, usually port 465)
    starttls: bool = False
    timeout: float = 30.0
    name: str = ""
    weight: float = 1.0
    limits: tuple[tuple[int, int], ...] = ()  # (window seconds, max messages), e.g. (3600, 500)

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(
                f"TIDINGS_SMTP_URL: expected smtp://[user:pass@]host[:port] or smtps://..., "
                f"got {_redact(url)!r}"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"starttls", "timeout", "name", "weight", *RATE_WINDOWS}
        if unknown:
            raise ConfigError(
                f"TIDINGS_SMTP_URL: unknown parameter(s) {sorted(unknown)} in {_redact(url)!r}"
            )
        ssl = parts.scheme == "smtps"
        try:
            port = parts.port or (465 if ssl else 25)
            timeout = float(query.get("timeout", 30))
            weight = float(query.get("weight", 1))
            limits = tuple(
                sorted(
                    (seconds, int(query[key]))
                    for key, seconds in RATE_WINDOWS.items()
                    if key in query
                )
            )
        except ValueError as exc:
            raise ConfigError(f"TIDINGS_SMTP_URL: {exc} in {_redact(url)!r}") from exc
        if weight <= 0 or any(cap < 1 for _, cap in limits):
            raise ConfigError(
                f"TIDINGS_SMTP_URL: weight and caps must be positive in {_redact(url)!r}"
            )
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ssl=ssl,
            starttls=query.get("starttls", "0").lower() in ("1", "true", "yes"),
            timeout=timeout,
            name=query.get("name") or f"{parts.hostname}:{port}",
            weight=weight,
            limits=limits,
        )


def parse_smtp_servers(text: str) -> tuple[SmtpServer, ...]:
    """One or more SMTP URLs separated by commas or whitespace."""
    servers = tuple(SmtpServer.from_url(url) for url in re.split(r"[,\s]+", text) if url)
    if not servers:
        raise ConfigError("TIDINGS_SMTP_URL: no SMTP server given")
    names = [s.name for s in servers]
    if len(set(names)) != len(names):
        raise ConfigError(f"TIDINGS_SMTP_URL: two servers share a name ({names}); add name=...")
    return servers


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


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
    # VERP: bounces come back to bounces+<token>@domain, which names the delivery.
    # Unset: the envelope sender is the From address and bounces are matched by Message-ID.
    bounce_address: str | None = None
    # A campaign pauses itself when hard bounces among its last N sends reach this share.
    bounce_pause_sends: int = 50
    bounce_pause_ratio: float = 0.05
    # Engine tuning.
    tick_seconds: float = 5.0
    batch_size: int = 1000
    # Emails handed to the SMTP threads at once (and finished before a graceful stop).
    # Rounded up to a multiple of the SMTP pool size so that every connection stays busy.
    send_chunk: int = 200
    # Outcomes are recorded as the servers answer (group commit); a sender waits while this
    # many answers are not yet written. With one message on the wire per SMTP connection, it
    # bounds what a hard crash (SIGKILL, power loss) can send twice.
    unrecorded_max: int = 20
    lease_seconds: float = 300.0
    retry_max_age_seconds: float = 3 * 86400
    confirm_token_max_age_seconds: float = 7 * 86400
    # The web pages (`tidings serve`, and `tidings run` unless --no-web).
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    web_threads: int = 4
    # How many reverse proxies stand in front: the client's address is then read from
    # X-Forwarded-For (and the scheme from X-Forwarded-Proto). 0 trusts no such header.
    trusted_proxies: int = 0
    # Per client address (Flask-Limiter syntax, e.g. "10/minute;100/day"); 429 past it.
    subscribe_rate_limit: str = "10/minute"
    api_rate_limit: str = "120/minute"
    # The text beside the consent checkbox; the SHA-256 of the exact text shown is recorded.
    consent_text: str = DEFAULT_CONSENT_TEXT
    # The organization's privacy notice (an http(s) URL), linked from the sign-up page and
    # the footer of every public page. None: no link.
    privacy_url: str | None = None
    # A pending address gets at most one new confirmation email per this many seconds.
    confirm_resend_seconds: float = 900.0
    # Confirmation emails, whoever asks for them (so the form cannot be used to flood an
    # inbox): per mailbox a day (ann+1@ and a.n.n@gmail count as ann@), per recipient domain
    # an hour, and in all an hour. Past a cap nothing is sent; the page says the same.
    confirm_mailbox_per_day: int = 3
    confirm_domain_per_hour: int = 100
    confirm_total_per_hour: int = 1000
    # Someone who left and signs up again gets at most one "you asked to come back" email
    # per this many days; clicking its link is the only way back.
    comeback_email_days: float = 30.0
    # Where the web rate limits are counted: "memory://" (per process), or a shared store
    # such as "redis://localhost:6379" (the `limits` library's URLs) for several processes.
    rate_limit_storage: str = "memory://"
    # Columns of an imported CSV kept as attributes besides email, name and timezone
    # (comma-separated); `subscribers import --keep COLUMN` adds to them.
    import_keep_columns: str = ""
    # Mail that comes back (bounces, complaints, unsubscribe requests, replies): an IMAP
    # mailbox, imaps://user:password@host/INBOX, read by `tidings run` and `tidings worker`
    # every `inbox_fetch_seconds`; handled messages are moved to `inbox_done_folder`.
    inbox_url: str | None = None
    inbox_fetch_seconds: float = 300.0
    inbox_done_folder: str = "tidings-handled"
    # Origins (https://www.example.org, comma-separated) whose pages may post the embedded
    # sign-up form (`tidings form-snippet`) without a CSRF token.
    form_origins: str = ""
    # DKIM: every message is signed when a selector and a private key (PEM file made by
    # `tidings dkim generate`) are set. The domain defaults to the From address's domain.
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key: str | None = None
    # A newsletter (broadcast) that would reach someone within this many seconds of one of
    # their drip emails: "wait" holds it until the gap has passed, "send" sends it anyway.
    newsletter_after_drip: str = "wait"
    newsletter_gap_seconds: float = 86400.0
    # The staff console (/staff/): the networks it answers (CIDRs, comma-separated; empty:
    # any), and whether every account must use two-factor sign-in (1) or may choose (0).
    staff_networks: str = ""
    staff_require_2fa: int = 0

    def __post_init__(self) -> None:
        if self.transport not in ("smtp", "maildir"):
            raise ConfigError(
                f"TIDINGS_TRANSPORT: expected 'smtp' or 'maildir', got {self.transport!r}"
            )
        if self.transport == "smtp":
            parse_smtp_servers(self.smtp_url)  # fail early on a malformed URL
        base = urlsplit(self.base_url)
        if base.scheme not in ("http", "https") or not base.hostname or base.query or base.fragment:
            raise ConfigError(
                f"TIDINGS_BASE_URL: expected the public address of the web pages, like "
                f"https://news.example.org, got {self.base_url!r}"
            )
        for name in ("from_address", "reply_to", "unsubscribe_address", "bounce_address"):
            value = getattr(self, name)
            if value is not None and not _ADDRESS.match(value):
                raise ConfigError(
                    f"TIDINGS_{name.upper()}: expected an email address like "
                    f"news@example.org, got {value!r}"
                )
        self._check_numbers()
        if self.privacy_url is not None and not re.match(r"https?://[^\s/]+", self.privacy_url):
            raise ConfigError(
                "TIDINGS_PRIVACY_URL: expected the address of a privacy notice, like "
                f"https://www.example.org/privacy, got {self.privacy_url!r}"
            )
        if not self.consent_text.strip():
            raise ConfigError("TIDINGS_CONSENT_TEXT: must not be empty")
        if self.newsletter_after_drip not in ("wait", "send"):
            raise ConfigError(
                "TIDINGS_NEWSLETTER_AFTER_DRIP: expected 'wait' or 'send', got "
                f"{self.newsletter_after_drip!r}"
            )
        self.staff_network_list()  # fail early on a malformed network
        if bool(self.dkim_selector) != bool(self.dkim_private_key):
            raise ConfigError(
                "TIDINGS_DKIM_SELECTOR and TIDINGS_DKIM_PRIVATE_KEY go together: set both to "
                "sign messages (see `tidings dkim generate`), or neither"
            )
        if self.dkim_selector and not re.fullmatch(
            r"[A-Za-z0-9][A-Za-z0-9._-]*", self.dkim_selector
        ):
            raise ConfigError(
                f"TIDINGS_DKIM_SELECTOR: expected letters, digits, dots and dashes, got "
                f"{self.dkim_selector!r}"
            )

    def staff_network_list(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """TIDINGS_STAFF_NETWORKS parsed; empty means any."""
        networks = []
        for item in re.split(r"[,\s]+", self.staff_networks.strip()):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(
                    f"TIDINGS_STAFF_NETWORKS: expected networks like 10.0.0.0/8 or "
                    f"2001:db8::/32, got {item!r}"
                ) from None
        return networks

    def _check_numbers(self) -> None:
        for name in ("smtp_pool_size", "batch_size", "send_chunk", "unrecorded_max", "web_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TIDINGS_{name.upper()}: must be at least 1")
        for name in (
            "trusted_proxies",
            "confirm_resend_seconds",
            "confirm_mailbox_per_day",
            "confirm_domain_per_hour",
            "confirm_total_per_hour",
            "comeback_email_days",
            "newsletter_gap_seconds",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"TIDINGS_{name.upper()}: must not be negative")
        if self.inbox_fetch_seconds <= 0:
            raise ConfigError("TIDINGS_INBOX_FETCH_SECONDS: must be positive")
        if not 0 <= self.web_port <= 65535:
            raise ConfigError(f"TIDINGS_WEB_PORT: expected 0-65535, got {self.web_port}")

    @property
    def smtp_servers(self) -> tuple[SmtpServer, ...]:
        return parse_smtp_servers(self.smtp_url)

    @property
    def smtp(self) -> SmtpServer:
        """The first (or only) SMTP server."""
        return self.smtp_servers[0]

    @property
    def chunk_size(self) -> int:
        """send_chunk, rounded up to a whole number of SMTP connections."""
        pool = self.smtp_pool_size
        return -(-self.send_chunk // pool) * pool

    @property
    def public_base_url(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def sender_domain(self) -> str:
        return self.from_address.rpartition("@")[2] or "localhost"

    @property
    def dkim_signing_domain(self) -> str:
        """The d= of DKIM signatures: TIDINGS_DKIM_DOMAIN, or the From address's domain."""
        return self.dkim_domain or self.sender_domain

    def check_secret_key(self) -> None:
        """The link-signing key of a process that serves or sends: at least 32 bytes, or none
        (one is then made and kept in the database). A short key can be guessed offline from
        one link in one email, and every link forged with it."""
        key = self.secret_key
        if key is not None and len(key.encode("utf-8")) < MIN_SECRET_KEY_BYTES:
            raise ConfigError(
                f"TIDINGS_SECRET_KEY: {len(key.encode('utf-8'))} bytes is too short to sign "
                f"links safely; use at least {MIN_SECRET_KEY_BYTES} random bytes, e.g. "
                '`python3 -c "import secrets; print(secrets.token_urlsafe(32))"`, or leave it '
                "unset and tidings keeps a random one in the database"
            )

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
