"""`tidings inbox serve`: an SMTP listener (aiosmtpd) for the bounce and unsubscribe
addresses, to put behind the MX that receives mail for them.

It is no relay and no mailbox: at RCPT it accepts only our own addresses (TIDINGS_BOUNCE_ADDRESS
and its VERP forms bounces+...@; the mailbox of List-Unsubscribe's mailto:, which is
TIDINGS_UNSUBSCRIBE_ADDRESS or else each From address the emails go out with, and its
plus forms); any other recipient gets 550. Each message is handled at DATA, in one
transaction, before the answer: 250 once it is recorded and acted on, 451 (try again later) if
that failed, so the sending server keeps it.

A person's message (a reply, an unsubscribe request whose key is nobody's) needs a person:
with `keep` (a Maildir) it is stored there, readable by its owner only; without, it is
refused with 550, so its sender learns that nobody will read it, instead of it vanishing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from tidings.db.models import Campaign
from tidings.errors import TidingsError
from tidings.files import write_private
from tidings.inbound.ingest import Handled, handle_message
from tidings.sending.devsmtp import free_port

if TYPE_CHECKING:
    from tidings.runtime import Runtime

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # bounces quote the original; ours are far smaller
NOBODY_READS = (
    "550 5.7.1 This address is read by a program, not a person; your message was not "
    "delivered. To unsubscribe, use the link at the bottom of any of our emails."
)


class InboundHandler:
    """aiosmtpd handler: our addresses only at RCPT; handle_message at DATA."""

    def __init__(self, runtime: Runtime, keep: Path | None = None):
        self.runtime = runtime
        self.keep = keep
        if keep is not None:
            for sub in ("tmp", "new", "cur"):
                (keep / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    def our_addresses(self) -> set[str]:
        """The addresses (lower case) this listener takes mail for, plus forms aside."""
        settings = self.runtime.settings
        found = {settings.bounce_address} if settings.bounce_address else set()
        if settings.unsubscribe_address:
            return {a.lower() for a in found | {settings.unsubscribe_address}}
        found.add(settings.from_address)
        with self.runtime.read_sessions() as session:
            for definition in session.scalars(select(Campaign.definition)):
                sender = (definition or {}).get("sender") or {}
                if sender.get("from_address"):
                    found.add(sender["from_address"])
        return {a.lower() for a in found}

    def is_ours(self, address: str) -> bool:
        local, _, domain = address.strip().strip("<>").lower().rpartition("@")
        base = local.split("+", 1)[0]
        return f"{local}@{domain}" in (ours := self.our_addresses()) or f"{base}@{domain}" in ours

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if not await asyncio.to_thread(self.is_ours, address):
            return "550 5.1.1 No such mailbox here: this server takes no mail for that address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or b""
        try:
            return await asyncio.to_thread(
                self.receive, raw, envelope.mail_from or "", tuple(envelope.rcpt_tos)
            )
        except Exception:
            log.exception("could not handle an inbound message; the sender will try again")
            return "451 4.3.0 Could not take the message now; try again later"

    def receive(self, raw: bytes, mail_from: str, rcpt_tos: tuple[str, ...]) -> str:
        """Handle one message in one transaction; the SMTP answer."""
        runtime = self.runtime
        sender = "" if mail_from in ("", "<>") else mail_from
        with runtime.sessions() as session:
            handled = handle_message(
                session,
                raw,
                "smtp",
                runtime.settings,
                runtime.secret(),
                runtime.clock.now(),
                envelope_sender=sender,
                envelope_recipients=rcpt_tos,
            )
            if handled.for_a_person and self.keep is None and not handled.seen_before:
                session.rollback()  # refused: not received, so not recorded either
                return NOBODY_READS
            session.commit()
        if handled.for_a_person and self.keep is not None:
            self._store(raw)  # after the commit: a failure here is a 451, and the retry stores it
        return f"250 2.0.0 OK: {_said(handled)}"

    def _store(self, raw: bytes) -> None:
        """Deliver into the Maildir `keep` (write in tmp/, then rename into new/)."""
        assert self.keep is not None
        stamp = int(self.runtime.clock.now().timestamp())
        name = f"{stamp}.{secrets.token_hex(8)}.{socket.gethostname().replace('/', '_')}"
        written = write_private(self.keep / "tmp" / name, raw)
        os.rename(written, self.keep / "new" / name)


def _said(handled: Handled) -> str:
    if handled.seen_before:
        return "seen before"
    return str(handled.inbound.kind)


class InboundServer:
    """`with InboundServer(runtime, host, port) as server:` listens until the block ends."""

    def __init__(self, runtime: Runtime, host: str, port: int, keep: Path | None = None):
        from aiosmtpd.controller import Controller

        self.handler = InboundHandler(runtime, keep)
        self.host = host
        self.port = port or free_port(host)
        self._controller = Controller(
            self.handler,
            hostname=host,
            port=self.port,
            data_size_limit=MAX_MESSAGE_BYTES,
            ident="tidings inbound",
        )

    def __enter__(self) -> InboundServer:
        try:
            self._controller.start()
        except OSError as exc:
            where = f"{self.host}:{self.port}"
            raise TidingsError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()
