"""The engine's heartbeat: APScheduler jobs that plan due sends, dispatch them and reclaim
expired leases.

APScheduler fires in real time (every `tick_seconds`); what is due is always decided by the
clock module, so a fixed or scaled clock drives exactly the same code in tests and demos.
`Worker.tick()` is one full pass and is what `tidings send-due` runs once (for cron).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tidings.campaigns.broadcast_planning import next_broadcast_event, plan_broadcasts
from tidings.campaigns.sequencing import PlanResult, plan_due
from tidings.clock import RealClock
from tidings.db.models import Delivery, Enrollment, SignUpRequest
from tidings.errors import TidingsError
from tidings.runtime import Runtime
from tidings.sending import ledger
from tidings.sending.dispatch import Dispatcher, DispatchResult
from tidings.states import WAITING, EnrollmentStatus

if TYPE_CHECKING:
    from tidings.inbound.imap import FetchReport
    from tidings.subscribers.signups import Decided

log = logging.getLogger(__name__)


class _BusyFilter(logging.Filter):
    """A pass still running when the next one is due is normal (a big batch, a short tick):
    APScheduler warns "maximum number of running instances reached"; we do not."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in record.getMessage()


logging.getLogger("apscheduler.scheduler").addFilter(_BusyFilter())


@dataclass
class TickResult:
    planned: PlanResult
    dispatched: DispatchResult
    reclaimed: int
    signed_up: int = 0  # sign-up requests decided
    more_sign_ups: bool = False  # some are still waiting: run the next pass at once


class DispatcherBusy(TidingsError):
    """Another process is already dispatching for this SQLite database."""


class DispatcherLock:
    """SQLite has a single writer, so one dispatcher per database file. An advisory lock on
    a file beside the database says so; the operating system drops it if the process dies.
    PostgreSQL needs no such lock: row locks let any number of workers share the work."""

    def __init__(self, database_url: str):
        url = make_url(database_url)
        self.path: Path | None = None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            self.path = Path(str(url.database)).with_name(Path(str(url.database)).name + ".lock")
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self.path is None or self._file is not None

    def acquire(self) -> None:
        if self.held:
            return
        assert self.path is not None
        handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DispatcherBusy(
                f"{holder} is already sending for {self.path.with_suffix('')}: SQLite allows one "
                "dispatcher (tidings run, worker or send-due) at a time. Stop the other one, "
                "or use PostgreSQL to run several workers."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"tidings process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class Worker:
    """Plans and dispatches for one process. Keeps its transport (and SMTP connections) open."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.lanes = runtime.lanes()
        self.stop = threading.Event()
        self.dispatcher = Dispatcher(
            runtime.sessions, runtime.clock, runtime.settings, self.lanes, stop=self.stop
        )
        self._lock = threading.Lock()  # one pass at a time in this process
        self.dispatcher_lock = DispatcherLock(runtime.settings.database_url)
        self._failures = 0  # consecutive passes that failed because the database was away
        self._pause_until = 0.0  # monotonic seconds: back off while the database is away
        self._inbox_due: datetime | None = None  # next read of TIDINGS_INBOX_URL (clock time)

    def open(self) -> None:
        """Open every lane's transport (SMTP connections are then kept across passes)."""
        for lane in self.lanes:
            lane.transport.open()

    def close(self) -> None:
        for lane in self.lanes:
            lane.transport.close()
        self.dispatcher.close()

    def __enter__(self) -> Worker:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def plan(self) -> PlanResult:
        total = PlanResult()
        settings = self.runtime.settings
        while not self.stop.is_set():
            with self.runtime.sessions.begin() as session:
                result = plan_due(
                    session, self.runtime.clock.now(), settings.batch_size, settings.sender_domain
                )
            total += result
            if result.planned + result.deferred + result.completed < settings.batch_size:
                break
        # Newsletters: each due broadcast wave, one batch per transaction (constant memory).
        total += plan_broadcasts(
            self.runtime.sessions, self.runtime.clock.now(), settings, self.stop
        )
        return total

    def sign_ups(self) -> Decided:
        """Decide the sign-ups the web received, for at most a couple of seconds (their
        emails go out in this same pass; `more` says some are still waiting)."""
        from tidings.subscribers.signups import handle_requests

        runtime = self.runtime
        return handle_requests(
            runtime.sessions, runtime.clock, runtime.settings, runtime.secret(), self.stop
        )

    def fetch_inbox(self) -> FetchReport | None:
        """Read TIDINGS_INBOX_URL if it is due: every inbox_fetch_seconds of real time, as the
        clock counts them (`span`). Never raises: a failed read is logged and tried again a
        minute later (at most), and sending goes on meanwhile. None when nothing was read."""
        settings, clock = self.runtime.settings, self.runtime.clock
        now = clock.now()
        if not settings.inbox_url or self.stop.is_set():
            return None
        if self._inbox_due is not None and now < self._inbox_due:
            return None
        from tidings.inbound.imap import fetch_inbox

        try:
            report = fetch_inbox(self.runtime, settings.inbox_url)
        except Exception as exc:
            retry = min(60.0, settings.inbox_fetch_seconds)
            self._inbox_due = now + clock.span(retry)
            log.warning("reading the inbox failed; trying again in %gs: %s", retry, exc)
            return None
        self._inbox_due = now + clock.span(settings.inbox_fetch_seconds)
        if report.read:
            log.info("inbox: read %d, moved %d, left %d", report.read, report.moved, report.left)
        return report

    def dispatch(self) -> DispatchResult:
        return self.dispatcher.run_pass()

    def reap(self) -> int:
        reclaimed = ledger.reap(self.runtime.sessions, self.runtime.clock.now())
        self.dispatcher.router.limiter.prune()
        return reclaimed

    def next_event(self) -> datetime | None:
        """When something is next due (a sign-up to decide, an enrollment to plan, a delivery
        to try), if ever."""
        with self.runtime.sessions.begin() as session:
            due = session.scalar(
                select(func.min(Enrollment.next_due_at)).where(
                    Enrollment.status == EnrollmentStatus.ACTIVE
                )
            )
            attempt = session.scalar(
                select(func.min(Delivery.next_attempt_at)).where(Delivery.status.in_(WAITING))
            )
            broadcast = next_broadcast_event(session)
            sign_up = session.scalar(select(func.min(SignUpRequest.received_at)))
        times = [t for t in (due, attempt, broadcast, sign_up) if t is not None]
        return min(times) if times else None

    def tick(self) -> TickResult:
        """One full pass: reclaim expired leases, decide the sign-ups received, plan what is
        due, send it."""
        with self._lock:
            started_here = not self.dispatcher_lock.held
            self.dispatcher_lock.acquire()
            try:
                reclaimed = self.reap()
                decided = self.sign_ups()
                planned = self.plan()
                dispatched = self.dispatch()
            finally:
                if started_here:  # a one-off pass (send-due); `start` holds it throughout
                    self.dispatcher_lock.release()
        signed_up = sum(decided.outcomes.values())
        return TickResult(planned, dispatched, reclaimed, signed_up, decided.more)

    def _job(self) -> None:
        # A spike of sign-ups: pass after pass (each decides a couple of seconds' worth, then
        # sends) until none is waiting, rather than a pass per tick.
        while not self.stop.is_set() and time.monotonic() >= self._pause_until:
            result = self._pass()
            if result is None or not result.more_sign_ups:
                return

    def _pass(self) -> TickResult | None:
        try:
            result = self.tick()
        except DBAPIError as exc:
            # The database went away (restart, network): say so once per attempt, back off,
            # and let the connection pool reconnect on the next pass. Nothing is lost: what
            # was claimed keeps its lease, what was sent is recorded by the dispatcher.
            self._failures += 1
            delay = min(60.0, 2.0**self._failures)
            self._pause_until = time.monotonic() + delay
            log.warning(
                "database unreachable (%s); trying again in %.0fs",
                str(exc.orig).splitlines()[0] if exc.orig else exc,
                delay,
            )
            return None
        except Exception:  # keep the scheduler alive; the next tick retries
            log.exception("tick failed")
            return None
        if self._failures:
            log.warning("database reachable again after %d failed passes", self._failures)
            self._failures = 0
        d = result.dispatched
        if d.total:
            log.info(
                "sent %d, retrying %d, failed %d, bounced %d, skipped %d",
                d.sent,
                d.retried,
                d.failed,
                d.bounced,
                d.skipped,
            )
        return result

    def start(self, tick_seconds: float | None = None) -> Any:
        """Run `tick` every tick_seconds in a background thread until `shutdown()`. Returns
        the APScheduler BackgroundScheduler (imported here: `send-due` never needs it)."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        interval = tick_seconds or self.runtime.settings.tick_seconds
        self.dispatcher_lock.acquire()  # fails at once if another dispatcher runs on SQLite
        self.open()
        for lane in self.lanes:
            lane.transport.warm()
        scheduler = BackgroundScheduler(
            # The inbox has a thread of its own: a slow IMAP server never holds up sending.
            executors={"default": ThreadPoolExecutor(1), "inbox": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        scheduler.add_job(
            self._job,
            IntervalTrigger(seconds=interval),
            id="plan-and-dispatch",
            next_run_time=RealClock().now(),
        )
        if self.runtime.settings.inbox_url:
            scheduler.add_job(
                self.fetch_inbox,
                IntervalTrigger(seconds=interval),
                id="inbox",
                executor="inbox",
                next_run_time=RealClock().now(),
            )
        scheduler.start()
        self._scheduler = scheduler
        return scheduler

    def shutdown(self) -> None:
        """Finish the message in flight, give back the rest of the claim, close connections."""
        self.stop.set()
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        self.close()
        self.dispatcher_lock.release()
