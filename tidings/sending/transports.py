"""Transports: how a finished message leaves. One small interface, several implementations:
memory and Maildir here, SMTP in `smtp.py`.

    with transport:                      # open() once, close() at the end
        results = transport.send_messages(messages)

Every message gets its own SendResult (sent / retry / bounced / failed, with the server's
reply), so one bad recipient never hides the others. Transports never touch the database:
the dispatcher records what they report, as they report it when it passes a `Progress`.
"""

from __future__ import annotations

import mailbox
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tidings.states import SendOutcome


@dataclass(frozen=True)
class OutgoingMessage:
    delivery_id: int
    sender: str  # envelope sender (MAIL FROM)
    recipient: str  # envelope recipient (RCPT TO)
    data: bytes


@dataclass(frozen=True)
class SendResult:
    delivery_id: int
    outcome: SendOutcome
    reply: str
    # False when the server was never reached with this message (connection refused, TLS or
    # login failed, dropped before MAIL FROM): another server may safely take it at once.
    reached: bool = True


class Progress(Protocol):
    """Follows a batch as it goes: told of each message the server answered, and asked
    before each next message is sent (it may hold the sender until earlier answers are
    recorded: the dispatcher's group commit)."""

    def answered(self, result: SendResult) -> None: ...

    def wait_for_room(self) -> None: ...


class Transport:
    """Base class. Subclasses implement `_send_one`, and `open`/`close` if they hold a resource."""

    def open(self) -> bool:
        """Open what the transport needs. Returns True if this call opened it."""
        return False

    def close(self) -> None:
        pass

    def warm(self) -> None:
        """Get ready to send at once (connect ahead of time). Best effort: a failure here is
        met again, and reported per message, when sending."""

    def send_messages(
        self, messages: Sequence[OutgoingMessage], progress: Progress | None = None
    ) -> list[SendResult]:
        results = []
        for message in messages:
            if progress is not None:
                progress.wait_for_room()
            result = self._send_one(message)
            results.append(result)
            if progress is not None and result.reached:
                progress.answered(result)
        return results

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        raise NotImplementedError

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MemoryTransport(Transport):
    """Keeps messages in `self.outbox` (for tests and previews)."""

    def __init__(self) -> None:
        self.outbox: list[OutgoingMessage] = []
        self._lock = threading.Lock()

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        with self._lock:
            self.outbox.append(message)
        return SendResult(message.delivery_id, SendOutcome.SENT, "250 stored in memory")


class MaildirTransport(Transport):
    """Writes each message as a file in a Maildir (new/), where any mail client can open it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._maildir: mailbox.Maildir | None = None

    def open(self) -> bool:
        if self._maildir is not None:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._maildir = mailbox.Maildir(self.path, create=True)
        return True

    def close(self) -> None:
        self._maildir = None

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        opened = False
        try:
            opened = self.open()
            assert self._maildir is not None
            key = self._maildir.add(message.data)
        except OSError as exc:
            return SendResult(message.delivery_id, SendOutcome.RETRY, f"maildir {self.path}: {exc}")
        finally:
            if opened:
                self.close()
        return SendResult(message.delivery_id, SendOutcome.SENT, f"250 stored as {key}")
