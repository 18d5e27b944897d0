"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives: for the demo and
the tests. Not a relay: it never forwards anything."""

from __future__ import annotations

import mailbox
import socket
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MaildirHandler:
    """Stores each message, byte for byte as received, in a Maildir."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.maildir = mailbox.Maildir(self.path, create=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        key = self.maildir.add(envelope.original_content)
        return f"250 2.0.0 Ok: stored as {key}"


class MemoryHandler:
    """Keeps (mail_from, rcpt_tos, content bytes) of each message in `self.messages`."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(
                (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return "250 2.0.0 Ok: queued"


class _TimingOutSMTP(SMTP):
    def _timeout_cb(self) -> None:
        if self._writer is not None:
            self._writer.write(b"421 4.4.2 Idle timeout, closing\r\n")
        super()._timeout_cb()


class _TimingOutController(Controller):
    def factory(self) -> SMTP:
        return _TimingOutSMTP(self.handler, **self.SMTP_kwargs)


class LocalSMTPServer:
    """`with LocalSMTPServer(handler) as server:` listens on 127.0.0.1:server.port."""

    def __init__(
        self,
        handler: Any,
        host: str = "127.0.0.1",
        port: int | None = None,
        idle_timeout: float | None = None,
    ):
        """idle_timeout: after this many idle seconds, say "421" and close the connection, as
        Postfix does (aiosmtpd's own default: close silently after 5 minutes)."""
        self.handler = handler
        self.host = host
        self.port = port or free_port(host)
        if idle_timeout is None:
            self._controller = Controller(handler, hostname=host, port=self.port)
        else:
            self._controller = _TimingOutController(
                handler, hostname=host, port=self.port, timeout=idle_timeout
            )

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> LocalSMTPServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> LocalSMTPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
