"""`tidings check`: before a real send, what is configured and what is missing or wrong.

Each check gives one line: ok, warn (works, but look at it), FAIL (a blocker: the command
exits non-zero), or info (something to do outside tidings, e.g. DNS records to publish:
this machine cannot query DNS, so they are printed, not fetched).

Also here: the rule that sending refuses to start without a postal address (CAN-SPAM), used
by `run`, `worker` and `send-due`.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.config import Settings, SmtpServer
from tidings.db.models import Campaign, Subscriber
from tidings.errors import ConfigError, TidingsError
from tidings.rendering.dkim import DkimSigner, record_key, record_name, verify, zone_file_line
from tidings.runtime import Runtime
from tidings.states import SubscriberStatus
from tidings.subscribers.tokens import Links

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"
TIMEOUT = 10.0  # seconds, for each network check
_LOCAL_NAMES = {"localhost", "localhost.localdomain"}


class PostalAddressMissing(TidingsError):
    """Sending would start without the postal address the law requires."""


def require_postal_address(settings: Settings) -> None:
    """Refuse to send for real without a postal address (CAN-SPAM requires one in every
    marketing email). The maildir transport sends nothing out, so it may go without."""
    if settings.transport == "smtp" and not settings.postal_address.strip():
        raise PostalAddressMissing(
            "TIDINGS_POSTAL_ADDRESS is empty: the law (CAN-SPAM) requires the sender's postal "
            "address in every marketing email, so sending will not start. Set it, load the "
            "campaigns again (`tidings campaigns load ...`), and run `tidings check`."
        )


def check_before_sending(settings: Settings) -> None:
    """What `run`, `worker` and `send-due` check before they start: the postal address, and
    that a configured DKIM key can be read (nothing may go out unsigned by mistake)."""
    require_postal_address(settings)
    DkimSigner.from_settings(settings)


@dataclass(frozen=True)
class Check:
    status: str  # ok | warn | FAIL | info
    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.status:<4}  {self.name:<12} {self.message}"


def is_local_host(host: str) -> bool:
    host = host.lower().strip("[]")
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class StoredFacts:
    """What the checks need from the database, read in one short transaction before any
    network call (on SQLite a transaction holds the write lock: the web pages being checked
    could not answer meanwhile)."""

    unaddressed: tuple[tuple[str, str], ...]  # (slug, folder) loaded without a postal address
    secret: str  # the key links are signed with
    subscriber_key: str | None  # an active subscriber's, to open their unsubscribe page


def stored_facts(session: Session, settings: Settings, secret: str) -> StoredFacts:
    unaddressed = tuple(
        (c.slug, c.source_path or c.slug)
        for c in session.scalars(select(Campaign).order_by(Campaign.slug))
        if not str((c.definition.get("sender") or {}).get("postal_address", "")).strip()
    )
    key = session.scalar(
        select(Subscriber.key).where(Subscriber.status == SubscriberStatus.ACTIVE).limit(1)
    )
    return StoredFacts(unaddressed, secret, key)


def preflight(
    settings: Settings, open_runtime: Callable[[], Runtime], dkim_record: str | None = None
) -> list[Check]:
    """Every check of `tidings check`. A database that cannot be opened (unreachable, not
    migrated) is a blocker of its own; the other checks still run."""
    try:
        runtime = open_runtime()
    except Exception as exc:  # unreachable, not migrated...: say why, and check the rest
        return [
            Check(FAIL, "database", str(exc).splitlines()[0]),
            *run_checks(settings, None, dkim_record),
        ]
    with runtime.read_sessions.begin() as session:
        facts = stored_facts(session, settings, runtime.secret())
    return run_checks(settings, facts, dkim_record)  # outside the transaction


def run_checks(
    settings: Settings, facts: StoredFacts | None, dkim_record: str | None = None
) -> list[Check]:
    """Every check, in the order an operator fixes things. `facts` is None when the
    database could not be read (that is then a blocker of its own)."""
    return list(_checks(settings, facts, dkim_record))


def _checks(
    settings: Settings, facts: StoredFacts | None, dkim_record: str | None
) -> Iterator[Check]:
    yield from _secret_key(settings)
    yield from _sender(settings)
    yield from _postal(settings, facts)
    yield from _base_url(settings, facts)
    yield from _transport(settings)
    yield from _dkim(settings, dkim_record)
    yield from _dns_records(settings)


def _secret_key(settings: Settings) -> Iterator[Check]:
    """A short TIDINGS_SECRET_KEY can be found offline from one link, and every link forged
    with it: `run`, `worker`, `send-due` and `serve` refuse it, and so does the check."""
    try:
        settings.check_secret_key()
    except ConfigError as exc:
        yield Check(FAIL, "secret key", str(exc))


def _sender(settings: Settings) -> Iterator[Check]:
    domain = settings.sender_domain.lower()
    if is_local_host(domain) or "." not in domain:
        yield Check(
            FAIL,
            "sender",
            f"TIDINGS_FROM_ADDRESS is {settings.from_address}: use an address at your own "
            "domain (receivers refuse mail from a domain without DNS)",
        )
    else:
        yield Check(
            OK, "sender", f"{settings.from_name} <{settings.from_address}> (domain {domain})"
        )


def _postal(settings: Settings, facts: StoredFacts | None) -> Iterator[Check]:
    if not settings.postal_address.strip():
        yield Check(
            FAIL,
            "postal",
            "TIDINGS_POSTAL_ADDRESS is empty: every marketing email must show the sender's "
            "postal address (CAN-SPAM); sending refuses to start without it",
        )
    else:
        yield Check(OK, "postal", settings.postal_address)
    # The footer is compiled at load time: a campaign loaded before the address was set
    # still has none.
    for slug, folder in facts.unaddressed if facts is not None else ():
        yield Check(
            FAIL,
            "postal",
            f"campaign {slug} was loaded without a postal address: load it again "
            f"(tidings campaigns load {folder})",
        )


def _get(url: str, data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers={"User-Agent": "tidings-check"})
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.HTTPSHandler(context=ssl.create_default_context())
    ]
    if is_local_host(urlsplit(url).hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))  # this machine: never via a proxy
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            return response.status, response.read(200_000).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(200_000).decode("utf-8", "replace")


def _base_url(settings: Settings, facts: StoredFacts | None) -> Iterator[Check]:
    base = settings.public_base_url
    parts = urlsplit(base)
    local = is_local_host(parts.hostname or "")
    if parts.scheme != "https":
        if local:
            yield Check(
                WARN, "base url", f"{base} is http on this machine: fine to try, not for real"
            )
        else:
            yield Check(
                FAIL,
                "base url",
                f"TIDINGS_BASE_URL {base} is not https: unsubscribe links must be https "
                "(put tidings behind a proxy with a certificate, see the README)",
            )
    try:
        status, body = _get(f"{base}/healthz")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        yield Check(
            FAIL,
            "base url",
            f"{base}/healthz cannot be reached ({reason}): the links in emails would not work",
        )
        return
    healthy = False
    if status == 200:
        try:
            healthy = json.loads(body).get("status") == "ok"
        except ValueError:
            healthy = False
    if not healthy:
        yield Check(
            FAIL,
            "base url",
            f'{base}/healthz answered {status}, not tidings\' {{"status": "ok"}}: is it '
            "tidings that answers at this address?",
        )
        return
    yield Check(OK, "base url", f"{base} answers (healthz ok)")
    yield from _unsubscribe(settings, facts)


def _unsubscribe(settings: Settings, facts: StoredFacts | None) -> Iterator[Check]:
    """The unsubscribe page answers GET and RFC 8058's one-click POST, and accepts the links
    this configuration signs (same TIDINGS_SECRET_KEY as the web pages)."""
    if facts is None:
        return
    links = Links(settings.public_base_url, facts.secret)
    probe = links.unsubscribe("preflight-" + secrets.token_urlsafe(8))  # nobody's key
    try:
        get_status, get_body = _get(probe)
        post_status, _ = _get(probe, data=b"List-Unsubscribe=One-Click")
    except (urllib.error.URLError, OSError) as exc:
        yield Check(FAIL, "unsubscribe", f"the unsubscribe page cannot be reached ({exc})")
        return
    if get_status != 404 or post_status != 404 or "This link does not work" not in get_body:
        yield Check(
            FAIL,
            "unsubscribe",
            f"the unsubscribe page answered {get_status} (GET) and {post_status} (one-click "
            "POST) for an unknown reader instead of tidings' 404 page: check the proxy "
            "passes POST /unsubscribe/... through",
        )
        return
    # A real reader's page (GET only shows the button; nothing is changed).
    key = facts.subscriber_key
    if key is None:
        yield Check(OK, "unsubscribe", "the page answers GET and one-click POST")
        return
    status, _ = _get(links.unsubscribe(key))
    if status != 200:
        yield Check(
            FAIL,
            "unsubscribe",
            f"a subscriber's unsubscribe link answered {status}: the web pages sign links with "
            "another key. Give every process the same TIDINGS_SECRET_KEY",
        )
        return
    yield Check(OK, "unsubscribe", "the page answers GET and one-click POST, links are accepted")


def _transport(settings: Settings) -> Iterator[Check]:
    if settings.transport == "maildir":
        yield Check(
            WARN,
            "transport",
            f"maildir: emails are written to {settings.maildir}, nothing is sent",
        )
        return
    for server in settings.smtp_servers:
        yield _smtp(server)


def _smtp(server: SmtpServer) -> Check:
    name = f"smtp {server.name}"
    try:
        connection: smtplib.SMTP
        if server.ssl:
            connection = smtplib.SMTP_SSL(
                server.host, server.port, timeout=TIMEOUT, context=ssl.create_default_context()
            )
        else:
            connection = smtplib.SMTP(server.host, server.port, timeout=TIMEOUT)
    except (OSError, smtplib.SMTPException) as exc:
        return Check(FAIL, name, f"cannot connect to {server.host}:{server.port} ({exc})")
    done = []
    try:
        code, _ = connection.ehlo()
        if code != 250:
            return Check(FAIL, name, f"EHLO refused ({code})")
        done.append("EHLO")
        if server.starttls:
            if not connection.has_extn("starttls"):
                return Check(FAIL, name, "starttls=1 but the server does not offer STARTTLS")
            connection.starttls(context=ssl.create_default_context())
            connection.ehlo()
            done.append("STARTTLS")
        elif server.ssl:
            done.append("TLS")
        if server.username:
            connection.login(server.username, server.password or "")
            done.append(f"login as {server.username}")
        elif not is_local_host(server.host):
            return Check(
                WARN,
                name,
                " + ".join(done) + " ok; no login configured (fine if the relay trusts this "
                "machine's address)",
            )
        return Check(OK, name, " + ".join(done) + " ok")
    except smtplib.SMTPAuthenticationError as exc:
        return Check(FAIL, name, f"login refused: {exc.smtp_code} {_text(exc.smtp_error)}")
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        return Check(FAIL, name, " + ".join([*done, "?"]) + f" failed: {exc}")
    finally:
        try:
            connection.quit()
        except (OSError, smtplib.SMTPException):
            connection.close()


def _dkim(settings: Settings, published: str | None) -> Iterator[Check]:
    if not settings.dkim_selector:
        yield Check(
            WARN,
            "dkim",
            "not configured: Gmail and Yahoo expect bulk mail to be signed. "
            "`tidings dkim generate --selector S --domain D` makes a key",
        )
        return
    try:
        signer = DkimSigner.from_settings(settings)
    except ConfigError as exc:
        yield Check(FAIL, "dkim", str(exc))
        return
    assert signer is not None
    # Sign a probe and check it against the public half of the key.
    probe = (
        f"From: {settings.from_address}\r\nTo: check@example.org\r\nSubject: preflight\r\n"
        "Date: Mon, 19 Oct 2026 08:00:00 +0000\r\nMessage-ID: <preflight@tidings>\r\n\r\nok\r\n"
    ).encode()
    if not verify(signer.sign(probe), signer.record):
        yield Check(FAIL, "dkim", "a message signed with the key does not verify")
        return
    name = record_name(signer.selector, signer.domain)
    # Compare with the record as published (given with --dkim-record), or as written by
    # `tidings dkim generate` beside the key.
    beside = Path(str(settings.dkim_private_key)).with_suffix(".txt")
    expected, source = published, "the record given"
    if expected is None and beside.is_file():
        expected, source = beside.read_text(encoding="utf-8"), str(beside)
    if expected is not None and record_key(expected) != record_key(signer.record):
        yield Check(
            FAIL,
            "dkim",
            f"the key in TIDINGS_DKIM_PRIVATE_KEY does not match {source}: receivers would "
            f"fail every signature. Publish the record below at {name}",
        )
    else:
        yield Check(OK, "dkim", f"signing as d={signer.domain} s={signer.selector}; key ok")
    domain = settings.sender_domain.lower()
    d = signer.domain.lower()
    if not (domain == d or domain.endswith("." + d)):
        yield Check(
            WARN,
            "dkim",
            f"d={d} does not align with the From domain {domain}: DMARC needs them to match",
        )
    yield Check(INFO, "dkim", "publish: " + zone_file_line(signer.selector, d, signer.record))


def _dns_records(settings: Settings) -> Iterator[Check]:
    domain = settings.sender_domain
    yield Check(
        INFO,
        "spf",
        f'publish: {domain}. IN TXT "v=spf1 include:<your SMTP provider\'s SPF domain> -all" '
        "(or ip4:<your relay's address>); one SPF record per domain",
    )
    yield Check(
        INFO,
        "dmarc",
        f'publish: _dmarc.{domain}. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@{domain}" '
        "(start with p=none, move to quarantine once reports look right)",
    )


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
