"""The engine's heartbeat: APScheduler jobs that plan due sends, dispatch them and reclaim
expired leases.

APScheduler fires in real time (every `tick_seconds`); what is due is always decided by the
clock module, so a fixed or scaled clock drives exactly the same code in tests and demos.
`Worker.tick()` is one full pass and is what `tidings send-due` runs once (for cron).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select

from tidings.campaigns.sequencing import PlanResult, plan_due
from tidings.clock import RealClock
from tidings.delivery import Transport
from tidings.dispatch import Dispatcher, DispatchResult, reap_expired_leases
from tidings.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus
from tidings.routing import single_lane
from tidings.runtime import Runtime

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


class Worker:
    """Plans and dispatches for one process. Keeps its transport (and SMTP connections) open."""

    def __init__(self, runtime: Runtime, transport: Transport | None = None):
        self.runtime = runtime
        self.lanes = single_lane(transport) if transport is not None else runtime.lanes()
        self.stop = threading.Event()
        self.dispatcher = Dispatcher(
            runtime.sessions, runtime.clock, runtime.settings, self.lanes, stop=self.stop
        )
        self._lock = threading.Lock()  # one pass at a time in this process

    def open(self) -> None:
        """Open every lane's transport (SMTP connections are then kept across passes)."""
        for lane in self.lanes:
            lane.transport.open()

    def close(self) -> None:
        for lane in self.lanes:
            lane.transport.close()

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
        return total

    def dispatch(self) -> DispatchResult:
        return self.dispatcher.run_pass(self.stop)

    def reap(self) -> int:
        return reap_expired_leases(self.runtime.sessions, self.runtime.clock)

    def next_event(self) -> datetime | None:
        """When something is next due (an enrollment to plan or a delivery to try), if ever."""
        with self.runtime.sessions.begin() as session:
            due = session.scalar(
                select(func.min(Enrollment.next_due_at)).where(
                    Enrollment.status == EnrollmentStatus.ACTIVE
                )
            )
            attempt = session.scalar(
                select(func.min(Delivery.next_attempt_at)).where(
                    Delivery.status.in_(DeliveryStatus.WAITING)
                )
            )
        times = [t for t in (due, attempt) if t is not None]
        return min(times) if times else None

    def tick(self) -> TickResult:
        with self._lock:
            reclaimed = self.reap()
            planned = self.plan()
            dispatched = self.dispatch()
        return TickResult(planned, dispatched, reclaimed)

    def _job(self) -> None:
        if self.stop.is_set():
            return
        try:
            result = self.tick()
        except Exception:  # keep the scheduler alive; the next tick retries
            log.exception("tick failed")
            return
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

    def start(self, tick_seconds: float | None = None) -> BackgroundScheduler:
        """Run `tick` every tick_seconds in a background thread until `shutdown()`."""
        interval = tick_seconds or self.runtime.settings.tick_seconds
        self.open()
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        scheduler.add_job(
            self._job,
            IntervalTrigger(seconds=interval),
            id="plan-and-dispatch",
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
