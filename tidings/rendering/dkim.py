"""DKIM: make a key pair and its DNS record, and sign every outgoing message with dkimpy.

    tidings dkim generate --selector s2026 --domain center.example.org

writes `dkim/s2026.private` (PEM, readable only by its owner) and `dkim/s2026.txt` (the
record, kept to compare with later), and prints the TXT record to publish at
`s2026._domainkey.center.example.org`. With TIDINGS_DKIM_SELECTOR and
TIDINGS_DKIM_PRIVATE_KEY set, MessageBuilder signs each message's final bytes: relaxed/relaxed
canonicalization, rsa-sha256, covering the headers receivers and one-click unsubscribe
depend on. Headers listed but absent (Reply-To) are signed as absent, so nobody can add one.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tidings.config import Settings
from tidings.errors import ConfigError
from tidings.files import check_writable, write_private

SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"list-id",
    b"reply-to",
    b"mime-version",
    b"content-type",
)
KEY_BITS = 2048  # what receivers expect today; 1024 is refused by some
_SELECTOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*$")
_DOMAIN = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


# dkimpy and cryptography are imported where they are used: every `tidings` command (and
# each worker process) would otherwise pay a fifth of a second to load them.


def public_record(private_pem: bytes) -> str:
    """The TXT record value for the public half of a PEM private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("the DKIM key must be an RSA key")
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def zone_file_line(selector: str, domain: str, record: str) -> str:
    """The record as a zone-file line: TXT strings are at most 255 characters, so a 2048-bit
    key's record is split into several quoted strings (DNS joins them)."""
    chunks = [record[i : i + 250] for i in range(0, len(record), 250)]
    quoted = " ".join(f'"{c}"' for c in chunks)
    return f"{record_name(selector, domain)}. IN TXT ( {quoted} )"


def record_key(record: str) -> str:
    """The p= of a DKIM TXT record (spaces, quotes and string splits removed)."""
    flat = re.sub(r'["\s]', "", record)
    match = re.search(r"(?:^|;)p=([A-Za-z0-9+/=]*)", flat)
    return match.group(1) if match else ""


@dataclass(frozen=True)
class GeneratedKey:
    private_path: Path
    record_path: Path
    record: str


def generate_key(selector: str, domain: str, directory: Path, force: bool = False) -> GeneratedKey:
    """Write <selector>.private and <selector>.txt in `directory`, as every file of tidings
    that holds a secret (tidings.files): mode 600, complete or not at all, never through a
    symbolic link placed at either path."""
    if not _SELECTOR.match(selector):
        raise ConfigError(f"--selector: expected letters, digits and dashes, got {selector!r}")
    if not _DOMAIN.match(domain):
        raise ConfigError(f"--domain: expected a domain name like example.org, got {domain!r}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path = directory / f"{selector}.private"
    record_path = directory / f"{selector}.txt"
    for path in (private_path, record_path):
        check_writable(path)  # a link at either: refused before a key is made
    if private_path.exists() and not force:
        raise ConfigError(
            f"{private_path} exists: a new key would break the record already published for "
            "it. Use another selector (rotate keys by selector), or --force"
        )
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    record = public_record(pem)
    write_private(private_path, pem)
    write_private(record_path, zone_file_line(selector, domain, record) + "\n")
    return GeneratedKey(private_path, record_path, record)


class DkimSigner:
    """Signs final message bytes. The key is read once, when the signer is made."""

    def __init__(self, selector: str, domain: str, private_pem: bytes):
        self.selector = selector
        self.domain = domain
        self.private_pem = private_pem
        self.record = public_record(private_pem)  # checks the key now, not at the first send

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner | None:
        if not settings.dkim_selector or not settings.dkim_private_key:
            return None
        path = Path(settings.dkim_private_key)
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"TIDINGS_DKIM_PRIVATE_KEY: cannot read {path}: {exc.strerror}"
            ) from exc
        try:
            return cls(settings.dkim_selector, settings.dkim_signing_domain, pem)
        except ConfigError as exc:
            raise ConfigError(f"TIDINGS_DKIM_PRIVATE_KEY: {path}: {exc}") from exc

    @cached_property
    def _selector(self) -> bytes:
        return self.selector.encode("ascii")

    def sign(self, message: bytes) -> bytes:
        """The message with a DKIM-Signature header in front."""
        import dkim

        signature = dkim.sign(
            message,
            self._selector,
            self.domain.encode("ascii"),
            self.private_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
            linesep=b"\r\n",
        )
        return signature + message


def verify(message: bytes, record: str) -> bool:
    """Verify a signed message against a TXT record value, without DNS (this machine has
    none): the preflight check uses it."""
    import dkim

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes:
        return record.encode("ascii")

    return bool(dkim.verify(message, dnsfunc=dnsfunc))
