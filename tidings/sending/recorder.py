"""Group commit: outcomes written as the mail servers answer, a few at a time.

The SMTP threads hand each answer to the recorder (`answered`); its own thread writes
whatever has arrived in one transaction, then whatever arrived meanwhile in the next: under
load, a few dozen messages every few milliseconds. A sender waits (`wait_for_room`) while
`limit` answers are not yet written, so a hard crash can send again at most `limit` messages
the server accepted, plus the one on the wire on each SMTP connection. While the database is
away nothing more is sent, since what was sent could not be recorded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy.exc import DBAPIError

from tidings.db import is_disconnect
from tidings.errors import TidingsError
from tidings.sending.transports import SendResult

log = logging.getLogger(__name__)

Answer = tuple[SendResult, "str | None"]  # the result and the server that gave it
T = TypeVar("T")


class RecorderFailed(TidingsError):
    """Outcomes could not be written: sending stops (what was sent is sent again after the
    lease, as after a crash)."""


class Recorder(Generic[T]):
    """`write(answers) -> T` runs on the recorder's thread; `totals` combines what it returns
    (with `+=`). Start it with `start()`; `flush()` waits until everything handed over is
    written; `close()` flushes and ends the thread."""

    def __init__(self, write: Callable[[list[Answer]], T], totals: T, limit: int):
        self._write = write
        self.totals = totals
        self.limit = limit
        self._lock = threading.Condition()
        self._waiting: list[Answer] = []  # handed over, not yet being written
        self._unwritten = 0  # handed over, not yet written (waiting + being written)
        self._error: BaseException | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------------- senders

    def answered(self, result: SendResult, server: str | None) -> None:
        self.add([(result, server)])

    def add(self, answers: list[Answer]) -> None:
        if not answers:
            return
        with self._lock:
            self._waiting += answers
            self._unwritten += len(answers)
            self._lock.notify_all()

    def wait_for_room(self) -> None:
        with self._lock:
            self._lock.wait_for(lambda: self._unwritten < self.limit or self._error is not None)
            if self._error is not None:
                raise RecorderFailed(f"outcomes could not be recorded: {self._error}")

    # ------------------------------------------------------------------------- dispatcher

    def flush(self) -> T:
        """Wait until every answer handed over is written; the totals so far."""
        with self._lock:
            self._lock.wait_for(lambda: self._unwritten == 0 or self._error is not None)
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            return self.totals

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # ------------------------------------------------------------------------- its thread

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._waiting or self._closing)
                if not self._waiting:
                    return  # closing, and everything is written
                group, self._waiting = self._waiting, []
            try:
                written = self._write(group)
            except BaseException as exc:  # handed to the dispatcher, which raises it
                with self._lock:
                    # This group is lost: its leases expire and it is sent again, as after
                    # a crash. Senders stop at their next message.
                    self._error = self._error or exc
                    self._unwritten -= len(group)
                    self._lock.notify_all()
                continue
            with self._lock:
                self.totals += written  # type: ignore[operator]
                self._unwritten -= len(group)
                self._lock.notify_all()


def despite_outages(work: Callable[[], T], within_seconds: float) -> T:
    """Run `work` (a transaction), again and again while the database is unreachable, for up
    to `within_seconds`. For what must not be lost: an outcome not recorded is a message sent
    again, so an outage is waited out (within the lease) rather than given up on."""
    deadline = time.monotonic() + within_seconds
    pause = 0.5
    while True:
        try:
            return work()
        except DBAPIError as exc:
            if not is_disconnect(exc) or time.monotonic() + pause > deadline:
                raise
            log.warning(
                "database unreachable while recording outcomes (%s); retrying in %.1fs",
                type(exc.orig).__name__,
                pause,
            )
            time.sleep(pause)  # not the stop event: these outcomes must be recorded
            pause = min(pause * 2, 10.0)
