"""The SMTP transport: a pool of connections kept open across batches, each taking the next
unsent message, pipelined (RFC 2920) when the server allows it; every message gets its own
result, classified from the server's reply (sent, retry, bounced, failed)."""

from __future__ import annotations

import queue
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from tidings.config import SmtpServer
from tidings.sending.transports import OutgoingMessage, Progress, SendResult, Transport
from tidings.states import SendOutcome

# Permanent failures that are about the recipient's address: the address is bounced and
# suppressed. Other 5xx replies (content refused, policy, relaying denied) fail the message
# only: suppressing on those would punish subscribers for our own configuration problems.
_ADDRESS_STATUS = re.compile(r"^5\.(1\.\d+|2\.\d+)\b")
_ENHANCED_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\b")


def classify(code: int, reply: str, stage: str) -> SendOutcome:
    """Map an SMTP reply code at a stage (mail, rcpt, data) to an outcome."""
    if 200 <= code < 300:
        return SendOutcome.SENT
    if 400 <= code < 500 or code < 200:
        return SendOutcome.RETRY
    if stage == "mail":
        return (
            SendOutcome.RETRY
        )  # our sender was refused: a configuration problem, not the recipient's
    if _ADDRESS_STATUS.match(reply):
        return SendOutcome.BOUNCED
    if stage == "rcpt" and not _ENHANCED_STATUS.match(reply) and "relay" not in reply.lower():
        return SendOutcome.BOUNCED  # a plain "550 No such user here"
    return SendOutcome.FAILED


# A pooled connection idle this long (real seconds) is checked with NOOP before it carries a
# message: servers close idle connections (Postfix after 300 s, many after 60), and writing to
# a closed socket only fails later, when the replies are read, with a message half-sent.
IDLE_CHECK_SECONDS = 10.0


class _Connection:
    def __init__(
        self,
        server: SmtpServer,
        local_hostname: str | None,
        idle_check_seconds: float = IDLE_CHECK_SECONDS,
    ):
        self.server = server
        self.local_hostname = local_hostname
        self.smtp: smtplib.SMTP | None = None
        self.idle_check_seconds = idle_check_seconds
        self.last_used = 0.0  # time.monotonic()

    def ensure_open(self) -> smtplib.SMTP:
        if self.smtp is not None and self._still_open(self.smtp):
            self.last_used = time.monotonic()
            return self.smtp
        self.last_used = time.monotonic()
        s = self.server
        context = ssl.create_default_context() if s.ssl or s.starttls else None
        if s.ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                s.host,
                s.port,
                local_hostname=self.local_hostname,
                timeout=s.timeout,
                context=context,
            )
        else:
            smtp = smtplib.SMTP(
                s.host, s.port, local_hostname=self.local_hostname, timeout=s.timeout
            )
        try:
            smtp.ehlo()
            if s.starttls:
                smtp.starttls(context=context)
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, s.password or "")
        except BaseException:
            smtp.close()
            raise
        self.smtp = smtp  # counts as open only once TLS and login succeeded
        return smtp

    def _still_open(self, smtp: smtplib.SMTP) -> bool:
        if time.monotonic() - self.last_used < self.idle_check_seconds:
            return True
        try:
            if smtp.noop()[0] == 250:
                return True
        except (TimeoutError, smtplib.SMTPException, OSError, ssl.SSLError):
            pass
        self.close()  # the server closed it while idle: open a new one
        return False

    def close(self) -> None:
        if self.smtp is None:
            return
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()
        self.smtp = None

    def send_all(
        self, messages: Sequence[OutgoingMessage], take: Callable[[], int | None]
    ) -> Iterator[tuple[int, SendResult]]:
        """Send messages[take()] until take() gives None, yielding (index, result) as each
        outcome is known. With PIPELINING (RFC 2920), the next message's MAIL, RCPT and DATA
        go out in the same write as this message's content: one round trip per message
        instead of two. Without it, one message at a time (`send`)."""
        i = take()
        envelope_sent = False  # messages[i]'s commands went out with the previous content
        while i is not None:
            message = messages[i]
            if not envelope_sent:
                if not self._pipelining():
                    yield i, self.send(message)
                    i = take()
                    continue
                failed = self._start(message)
                if failed is not None:
                    yield i, failed
                    i = take()
                    continue
            result, following, envelope_sent = self._finish(messages, i, take)
            self.last_used = time.monotonic()
            yield i, result
            i = following if following is not None else take()

    def _finish(
        self, messages: Sequence[OutgoingMessage], i: int, take: Callable[[], int | None]
    ) -> tuple[SendResult, int | None, bool]:
        """Read the replies to messages[i]'s commands, send its content (with the next
        message's commands when there is one) and read the verdict. Returns the result, the
        next message's index if one was taken, and whether its commands went out."""
        message, smtp = messages[i], self.smtp
        assert smtp is not None
        following: int | None = None
        content_sent = False
        try:
            refusal = self._envelope_replies(smtp)
            if refusal is not None:
                return self._result(message, refusal[1], refusal[2], refusal[0]), None, False
            following = take()
            data = _dot_stuffed(message.data) + b".\r\n"
            if following is not None:
                data += _envelope(messages[following])
            content_sent = True
            smtp.send(data)
            code, reply = smtp.getreply()
        except (TimeoutError, smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            # The next message's commands died with the connection: it starts again.
            self.close()
            return self._failed(message, exc, reached=content_sent), following, False
        return self._result(message, code, reply, "data"), following, following is not None

    def _pipelining(self) -> bool:
        """Open the connection if needed; does the server take pipelined commands? A
        connection that cannot be opened is answered per message by `send`."""
        try:
            smtp = self.ensure_open()
        except (TimeoutError, smtplib.SMTPException, OSError, ssl.SSLError):
            return False
        return bool(smtp.does_esmtp and smtp.has_extn("pipelining"))

    def _start(self, message: OutgoingMessage) -> SendResult | None:
        """Write a message's MAIL, RCPT and DATA. An idle pooled connection that the server
        closed meanwhile is opened again once: nothing of the message was sent on it."""
        for attempt in (1, 2):
            smtp = self.smtp
            assert smtp is not None
            try:
                smtp.send(_envelope(message))
                return None
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self.close()
                if attempt == 2 or not self._pipelining():
                    return self._failed(message, exc, reached=False)
        return None  # unreachable

    @staticmethod
    def _envelope_replies(smtp: smtplib.SMTP) -> tuple[str, int, bytes] | None:
        """Read the replies to MAIL, RCPT and DATA: None when DATA may follow (354), else
        the stage and reply that refused the message (the transaction is reset)."""
        mail, rcpt, data = smtp.getreply(), smtp.getreply(), smtp.getreply()
        for stage, (code, reply), accepted in (
            ("mail", mail, (250,)),
            ("rcpt", rcpt, (250, 251)),
        ):
            if code not in accepted:
                if data[0] == 354:  # DATA accepted anyway: end an empty message
                    smtp.send(b".\r\n")
                    smtp.getreply()
                smtp.rset()
                return stage, code, reply
        if data[0] != 354:
            smtp.rset()
            return ("data", *data)
        return None

    def _failed(self, message: OutgoingMessage, exc: BaseException, reached: bool) -> SendResult:
        return SendResult(
            message.delivery_id,
            SendOutcome.RETRY,
            f"connection to {self.server.host}:{self.server.port} failed: "
            f"{type(exc).__name__}: {exc}",
            reached=reached,
        )

    def send(self, message: OutgoingMessage) -> SendResult:
        reused = self.smtp is not None
        stage = "connect"  # connect -> mail (commands, nothing of the message yet) -> data
        try:
            smtp = self.ensure_open()
            stage = "mail"
            try:
                stage, code, reply = self._transaction(smtp, message)
            except (smtplib.SMTPServerDisconnected, OSError):
                if not reused or stage != "mail":
                    raise
                # The server closed this idle pooled connection (timeout, restart). Nothing
                # of the message has been sent on it, so reconnecting once is safe.
                self.close()
                stage = "connect"
                smtp = self.ensure_open()
                stage = "mail"
                stage, code, reply = self._transaction(smtp, message)
            return self._result(message, code, reply, stage)
        except smtplib.SMTPResponseException as exc:
            self.close()
            if stage == "connect":
                # A refusal at greeting, STARTTLS or login: about us or the server, never
                # about this recipient. Try again later (or elsewhere).
                return SendResult(
                    message.delivery_id,
                    SendOutcome.RETRY,
                    f"{self.server.name or self.server.host} refused the session: "
                    f"{exc.smtp_code} {_text(exc.smtp_error)}",
                    reached=False,
                )
            return self._result(message, exc.smtp_code, exc.smtp_error, stage)
        except (TimeoutError, smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            self.close()
            return SendResult(
                message.delivery_id,
                SendOutcome.RETRY,
                f"connection to {self.server.host}:{self.server.port} failed: "
                f"{type(exc).__name__}: {exc}",
                reached=stage not in ("connect", "mail"),
            )

    def _transaction(self, smtp: smtplib.SMTP, message: OutgoingMessage) -> tuple[str, int, bytes]:
        """One mail transaction. Returns the stage (mail, rcpt, data) and reply that decided
        it. Uses PIPELINING (RFC 2920) when the server offers it: MAIL, RCPT and DATA in one
        write, then their three replies, which saves two round trips per message."""
        if smtp.does_esmtp and smtp.has_extn("pipelining"):
            smtp.send(_envelope(message))
            refusal = self._envelope_replies(smtp)
            if refusal is not None:
                return refusal
        else:
            for stage, (code, reply), accepted in (
                ("mail", smtp.mail(message.sender), (250,)),
                ("rcpt", smtp.rcpt(message.recipient), (250, 251)),
                ("data", smtp.docmd("DATA"), (354,)),
            ):
                if code not in accepted:
                    smtp.rset()
                    return stage, code, reply
        smtp.send(_dot_stuffed(message.data) + b".\r\n")
        code, reply = smtp.getreply()
        return "data", code, reply

    @staticmethod
    def _result(message: OutgoingMessage, code: int, reply: bytes | str, stage: str) -> SendResult:
        text = _text(reply)
        return SendResult(message.delivery_id, classify(code, text, stage), f"{code} {text}")


def _envelope(message: OutgoingMessage) -> bytes:
    return f"MAIL FROM:<{message.sender}>\r\nRCPT TO:<{message.recipient}>\r\nDATA\r\n".encode(
        "ascii"
    )


def _dot_stuffed(data: bytes) -> bytes:
    """The message as sent after DATA (RFC 5321 4.5.2): CRLF line ends, a final CRLF, and a
    dot doubled at the start of any line. Our messages are built with CRLF already, so this
    is two byte replacements instead of smtplib's regular expressions."""
    if b"\n" in data.replace(b"\r\n", b""):
        data = re.sub(rb"\r?\n|\r", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    data = data.replace(b"\r\n.", b"\r\n..")
    return b"." + data if data.startswith(b".") else data


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


class SMTPTransport(Transport):
    """A pool of `pool_size` SMTP connections, kept open across batches until close()."""

    def __init__(
        self,
        server: SmtpServer,
        pool_size: int = 4,
        local_hostname: str | None = None,
        idle_check_seconds: float = IDLE_CHECK_SECONDS,
    ):
        self.server = server
        self.pool_size = pool_size
        self.local_hostname = local_hostname
        self.idle_check_seconds = idle_check_seconds
        self._idle: queue.SimpleQueue[_Connection] = queue.SimpleQueue()
        self._all: list[_Connection] = []
        self._executor: ThreadPoolExecutor | None = None

    def open(self) -> bool:
        if self._executor is not None:
            return False
        self._all = [
            _Connection(self.server, self.local_hostname, self.idle_check_seconds)
            for _ in range(self.pool_size)
        ]
        for connection in self._all:
            self._idle.put(connection)
        self._executor = ThreadPoolExecutor(self.pool_size, thread_name_prefix="smtp")
        return True

    def close(self) -> None:
        if self._executor is None:
            return
        self._executor.shutdown(wait=True)
        self._executor = None
        for connection in self._all:
            connection.close()
        self._all = []
        self._idle = queue.SimpleQueue()

    def warm(self) -> None:
        self.open()
        assert self._executor is not None

        def connect(connection: _Connection) -> None:
            try:
                connection.ensure_open()
            except (smtplib.SMTPException, OSError, ssl.SSLError):
                connection.close()

        list(self._executor.map(connect, self._all))

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        return self.send_messages([message])[0]

    def send_messages(
        self, messages: Sequence[OutgoingMessage], progress: Progress | None = None
    ) -> list[SendResult]:
        """Each connection takes the next unsent message until none is left: one task per
        connection, not one per message (thread hand-offs cost more than the SMTP work).
        `progress` hears of each answer as it comes and may hold back the next message."""
        opened = self.open()
        try:
            assert self._executor is not None
            results: list[SendResult | None] = [None] * len(messages)
            indexes = iter(range(len(messages)))
            taking = threading.Lock()

            def take() -> int | None:
                if progress is not None:
                    progress.wait_for_room()
                with taking:
                    return next(indexes, None)

            def work() -> None:
                connection = self._idle.get()
                try:
                    for i, result in connection.send_all(messages, take):
                        results[i] = result
                        if progress is not None and result.reached:
                            progress.answered(result)
                finally:
                    self._idle.put(connection)

            tasks = [self._executor.submit(work) for _ in range(min(self.pool_size, len(messages)))]
            for task in tasks:
                task.result()
            return [r for r in results if r is not None]
        finally:
            if opened:
                self.close()
