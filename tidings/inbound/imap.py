"""Reading a mailbox over IMAP with TLS (`tidings inbox fetch`, and `run`/`worker` every
TIDINGS_INBOX_FETCH_SECONDS when TIDINGS_INBOX_URL is set).

    imaps://user:password@host[:993][/FOLDER][?cafile=/etc/tidings/ca.pem&timeout=60]

The server's certificate is verified against the system's authorities, or only against the
`cafile` given (a private CA); there is no way to turn verification off. User, password and
folder are percent-encoded (an @ in a user name is %40).

Each message is fetched without marking it read (BODY.PEEK), handled in its own transaction
(`ingest.handle_message`), then:
- moved to TIDINGS_INBOX_DONE_FOLDER (made if missing) when tidings dealt with it: a bounce or
  complaint of one of our emails, an unsubscribe request it acted on, automatic mail;
- left where it is, unread, when a person should see it: a reply or any message not
  automatic, an unsubscribe request whose key is nobody's, a report that names no email of
  ours. It gets the keyword `TidingsRead` so that later fetches pass over it; remove the
  keyword to have tidings read it again.
Nothing is deleted. A fetch that stops half-way loses nothing: what was handled is recorded
and is moved by the next fetch (reading it again does nothing twice).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from tidings.errors import ConfigError, TidingsError
from tidings.inbound.ingest import IngestReport, handle_message

if TYPE_CHECKING:
    from tidings.runtime import Runtime

log = logging.getLogger(__name__)

LOOKED_AT = b"TidingsRead"  # keyword on the messages left for a person
BATCH = 50  # messages fetched in one command


class InboxError(TidingsError):
    """The mailbox could not be read: the server, the login, the certificate, the folder."""


@dataclass(frozen=True)
class InboxAddress:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    folder: str
    cafile: str | None
    timeout: float

    def __str__(self) -> str:  # without the password
        return f"imaps://{self.user}@{self.host}:{self.port}/{self.folder}"


def parse_inbox_url(url: str) -> InboxAddress:
    """Read an imaps:// URL (see the module). ConfigError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme == "imap":
        raise ConfigError(
            "TIDINGS_INBOX_URL: imap:// would send the password in clear; use imaps:// "
            "(IMAP over TLS, port 993)"
        )
    if parts.scheme != "imaps" or not parts.hostname:
        raise ConfigError(
            "TIDINGS_INBOX_URL: expected imaps://user:password@host/INBOX, got "
            f"{_no_password(url)!r}"
        )
    if not parts.username or parts.password is None:
        raise ConfigError("TIDINGS_INBOX_URL: give the user and password: imaps://user:pass@host/")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"cafile", "timeout"}
    if unknown:
        raise ConfigError(
            f"TIDINGS_INBOX_URL: unknown parameter {sorted(unknown)[0]!r} (known: cafile, timeout)"
        )
    try:
        timeout = float(query.get("timeout", "60"))
        port = parts.port or 993
    except ValueError as exc:
        raise ConfigError(f"TIDINGS_INBOX_URL: {exc}") from None
    if timeout <= 0:
        raise ConfigError("TIDINGS_INBOX_URL: timeout must be positive")
    return InboxAddress(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username),
        password=unquote(parts.password),
        folder=unquote(parts.path.lstrip("/")) or "INBOX",
        cafile=query.get("cafile"),
        timeout=timeout,
    )


def _no_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


@dataclass
class FetchReport(IngestReport):
    """An IngestReport, and where the messages went."""

    mailbox: str = ""
    done_folder: str = ""
    moved: int = 0
    left: int = 0


def fetch_inbox(runtime: Runtime, url: str) -> FetchReport:
    """Read every message of the mailbox not looked at before, act on each, and move what was
    dealt with (see the module). InboxError if the mailbox cannot be read."""
    address = parse_inbox_url(url)
    settings = runtime.settings
    secret = runtime.secret()
    report = FetchReport(mailbox=str(address), done_folder=settings.inbox_done_folder)
    with _connected(address) as client:
        _ensure_folder(client, settings.inbox_done_folder)
        uids = client.search(["NOT", "KEYWORD", LOOKED_AT.decode()])
        for start in range(0, len(uids), BATCH):
            done: list[int] = []
            left: list[int] = []
            batch = uids[start : start + BATCH]
            for uid, data in client.fetch(batch, ["BODY.PEEK[]"]).items():
                raw = data.get(b"BODY[]")
                if not isinstance(raw, bytes):
                    continue
                with runtime.sessions.begin() as session:
                    handled = handle_message(
                        session, raw, "imap", settings, secret, runtime.clock.now()
                    )
                report.add(f"uid {uid}", handled)
                (left if handled.for_a_person else done).append(uid)
            _move(client, done, settings.inbox_done_folder)
            _mark(client, left)
            report.moved += len(done)
            report.left += len(left)
    return report


@contextlib.contextmanager
def _connected(address: InboxAddress) -> Iterator[Any]:
    """A logged-in IMAPClient with the folder selected; InboxError says what failed."""
    from imapclient import IMAPClient  # only the commands that read a mailbox need it
    from imapclient.exceptions import IMAPClientError

    try:
        context = ssl.create_default_context(cafile=address.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise InboxError(f"cannot read the CA file {address.cafile}: {exc}") from None
    try:
        client = IMAPClient(
            address.host, address.port, ssl=True, ssl_context=context, timeout=address.timeout
        )
    except ssl.SSLCertVerificationError as exc:
        raise InboxError(
            f"{address}: the server's certificate is not trusted ({exc.verify_message}); "
            "for a private CA add ?cafile=/path/to/ca.pem to the URL"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise InboxError(f"{address}: cannot connect: {exc}") from None
    try:
        try:
            client.login(address.user, address.password)
            client.select_folder(address.folder)
        except IMAPClientError as exc:
            raise InboxError(f"{address}: {_reason(exc)}") from None
        yield client
    except IMAPClientError as exc:
        raise InboxError(f"{address}: {_reason(exc)}") from None
    except (OSError, ssl.SSLError) as exc:
        raise InboxError(f"{address}: the connection failed: {exc}") from None
    finally:
        try:
            client.logout()
        except Exception:  # the connection is gone already: just close the socket
            with contextlib.suppress(Exception):
                client.shutdown()


def _reason(exc: Exception) -> str:
    text = str(exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text


def _ensure_folder(client: Any, folder: str) -> None:
    if not client.folder_exists(folder):
        client.create_folder(folder)
        log.info("made the IMAP folder %s for handled messages", folder)


def _move(client: Any, uids: Sequence[int], folder: str) -> None:
    if not uids:
        return
    if client.has_capability("MOVE"):
        client.move(uids, folder)
        return
    # An older server: copy, then mark the originals deleted; they are expunged only where
    # UIDPLUS lets us expunge exactly these (never someone else's deleted messages).
    client.copy(uids, folder)
    client.delete_messages(uids)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)


def _mark(client: Any, uids: Sequence[int]) -> None:
    """Keyword the messages left for a person, so the next fetch passes over them. A server
    that keeps no keywords gets them fetched again; their digests make that harmless."""
    if not uids:
        return
    try:
        client.add_flags(uids, [LOOKED_AT])
    except Exception as exc:  # PERMANENTFLAGS without \\*: keywords are not kept
        log.info("the IMAP server keeps no keyword on messages left in place: %s", exc)
