"""Which SMTP server takes which message: weights, per-server caps shared by every worker
through the database, and failover when a server cannot be reached.

A cap ("500 per hour") is enforced over a sliding window with counters in time buckets
(seconds for windows up to a minute, minutes up to an hour, hours beyond). Usage is summed
over every bucket that overlaps the window stretched by a tenth (a message reaches the server
a little after its slot was reserved), which can only over-count: a cap is never exceeded as
the server counts, at the price of some unused capacity. Reservations for one server are
serialized by locking that server's row, so two workers cannot both take the last slot.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from tidings.clock import Clock
from tidings.config import Settings
from tidings.db.bulk import affected, insert_ignore
from tidings.db.models import SendCounter, SmtpServerState
from tidings.sending.smtp import SMTPTransport
from tidings.sending.transports import (
    MaildirTransport,
    OutgoingMessage,
    SendResult,
    Transport,
)
from tidings.states import SendOutcome

log = logging.getLogger(__name__)

# How long a server that refused connections is left alone before it is tried again.
DOWN_SECONDS = 60.0
# Counters older than the longest window (a day) plus one bucket are deleted.
COUNTER_RETENTION = timedelta(days=1, hours=2)


def guarded_window(window_seconds: int) -> int:
    """The window as reserved: a tenth longer, for the time between reserving a slot and the
    message reaching the server."""
    return window_seconds + max(1, window_seconds // 10)


def bucket_seconds(window_seconds: int) -> int:
    if window_seconds <= 60:
        return 1
    if window_seconds <= 3600:
        return 60
    return 3600


def bucket_start(at: datetime, granularity: int) -> datetime:
    stamp = int(at.timestamp()) // granularity * granularity
    return datetime.fromtimestamp(stamp, at.tzinfo)


@dataclass
class Lane:
    """One way out: an SMTP server (or the maildir) with its transport and its limits."""

    name: str
    transport: Transport
    weight: float = 1.0
    limits: tuple[tuple[int, int], ...] = ()  # (window seconds, max messages)
    down_until: datetime | None = None


def lanes_from_settings(settings: Settings) -> list[Lane]:
    if settings.transport == "maildir":
        return [Lane("maildir", MaildirTransport(settings.maildir))]
    return [
        Lane(
            server.name,
            SMTPTransport(server, settings.smtp_pool_size, local_hostname=settings.sender_domain),
            server.weight,
            server.limits,
        )
        for server in settings.smtp_servers
    ]


@dataclass
class Grant:
    granted: int
    retry_at: datetime | None = None  # when more capacity frees up, if not all was granted


class RateLimiter:
    """Reserves sending capacity on a server, shared by all workers through the database."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock):
        self.sessions = sessions
        self.clock = clock

    def reserve(self, lane: Lane, wanted: int) -> Grant:
        if not lane.limits or wanted <= 0:
            return Grant(wanted)
        now = self.clock.now()
        with self.sessions.begin() as session:
            self._lock_server(session, lane.name, now)
            granted = wanted
            retry_at: datetime | None = None
            for window, cap in lane.limits:
                used, oldest = self._usage(session, lane.name, window, now)
                available = max(0, cap - used)
                if available < granted:
                    granted = available
                    g = bucket_seconds(window)
                    frees = (oldest or bucket_start(now, g)) + timedelta(
                        seconds=guarded_window(window) + g
                    )
                    retry_at = frees if retry_at is None else max(retry_at, frees)
            if granted:
                for g in {bucket_seconds(w) for w, _ in lane.limits}:
                    self._increment(session, lane.name, g, bucket_start(now, g), granted)
        return Grant(granted, retry_at)

    def usage(self, lane: Lane) -> list[tuple[int, int, int]]:
        """(window seconds, used, cap) for each cap of the lane, for `tidings status`."""
        now = self.clock.now()
        with self.sessions.begin() as session:
            return [(w, self._usage(session, lane.name, w, now)[0], cap) for w, cap in lane.limits]

    def note_server(self, name: str, down_until: datetime | None, error: str | None) -> None:
        """Keep what `tidings status` shows about a server (best effort)."""
        now = self.clock.now()
        try:
            with self.sessions.begin() as session:
                insert_ignore(session, SmtpServerState, {"name": name, "updated_at": now}, ["name"])
                session.execute(
                    update(SmtpServerState)
                    .where(SmtpServerState.name == name)
                    .values(down_until=down_until, last_error=error, updated_at=now)
                )
        except DBAPIError:
            log.warning("could not record the state of SMTP server %s", name)

    def prune(self) -> int:
        cutoff = self.clock.now() - COUNTER_RETENTION
        with self.sessions.begin() as session:
            result = session.execute(delete(SendCounter).where(SendCounter.bucket_start < cutoff))
        return affected(result)

    @staticmethod
    def _lock_server(session: Session, name: str, now: datetime) -> None:
        insert_ignore(session, SmtpServerState, {"name": name, "updated_at": now}, ["name"])
        session.execute(
            select(SmtpServerState.name).where(SmtpServerState.name == name).with_for_update()
        )

    @staticmethod
    def _usage(
        session: Session, server: str, window: int, now: datetime
    ) -> tuple[int, datetime | None]:
        g = bucket_seconds(window)
        since = bucket_start(now - timedelta(seconds=guarded_window(window)), g)
        used, oldest = session.execute(
            select(
                func.coalesce(func.sum(SendCounter.count), 0), func.min(SendCounter.bucket_start)
            ).where(
                SendCounter.server == server,
                SendCounter.granularity == g,
                SendCounter.bucket_start >= since,
            )
        ).one()
        return int(used), oldest

    @staticmethod
    def _increment(session: Session, server: str, g: int, start: datetime, n: int) -> None:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(SendCounter).values(
            server=server, granularity=g, bucket_start=start, count=n
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["server", "granularity", "bucket_start"],
                set_={"count": SendCounter.count + n},
            )
        )


@dataclass
class Assignment:
    by_lane: dict[str, list[int]] = field(default_factory=dict)  # lane name -> job indexes
    unassigned: list[int] = field(default_factory=list)  # no capacity or no server up
    retry_at: datetime | None = None  # when capacity frees up for the unassigned


class Router:
    """Splits messages among lanes by weight, within each lane's reserved capacity."""

    def __init__(
        self,
        lanes: Sequence[Lane],
        limiter: RateLimiter,
        clock: Clock,
        rng: random.Random | None = None,
    ):
        self.lanes = {lane.name: lane for lane in lanes}
        self.limiter = limiter
        self.clock = clock
        self.rng = rng or random.Random()

    def up_lanes(self, exclude: set[str] = frozenset()) -> list[Lane]:  # type: ignore[assignment]
        now = self.clock.now()
        return [
            lane
            for lane in self.lanes.values()
            if lane.name not in exclude and (lane.down_until is None or lane.down_until <= now)
        ]

    def assign(self, count: int, exclude: set[str] = frozenset()) -> Assignment:  # type: ignore[assignment]
        """Give each of `count` messages a lane, or leave it unassigned (no capacity now)."""
        result = Assignment()
        todo = list(range(count))
        lanes = self.up_lanes(exclude)
        if not lanes:
            result.unassigned = todo
            return result
        # Weighted shares first, then any lane with capacity left takes the rest.
        self.rng.shuffle(lanes)
        total_weight = sum(lane.weight for lane in lanes)
        shares = [max(1, round(count * lane.weight / total_weight)) for lane in lanes]
        for lane, share in [*zip(lanes, shares, strict=True), *((lane, count) for lane in lanes)]:
            if not todo:
                break
            grant = self.limiter.reserve(lane, min(share, len(todo)))
            if grant.granted:
                taken, todo = todo[: grant.granted], todo[grant.granted :]
                result.by_lane.setdefault(lane.name, []).extend(taken)
            if grant.retry_at is not None:
                result.retry_at = (
                    grant.retry_at
                    if result.retry_at is None
                    else min(result.retry_at, grant.retry_at)
                )
        result.unassigned = todo
        return result

    def mark_down(self, name: str, why: str) -> None:
        lane = self.lanes[name]
        lane.down_until = self.clock.now() + self.clock.span(DOWN_SECONDS)
        self.limiter.note_server(name, lane.down_until, why[:500])
        log.warning(
            "SMTP server %s unreachable, trying others for %.0fs: %s", name, DOWN_SECONDS, why
        )


@dataclass
class Routed:
    """What sending a batch through the router gave."""

    sent: list[tuple[int, SendResult, str | None]] = field(default_factory=list)  # (index, ...)
    waiting: list[int] = field(default_factory=list)  # no server had room: try at retry_at
    retry_at: datetime | None = None


class RoutedProgress(Protocol):
    """A transport's Progress that also hears which server answered."""

    def answered(self, result: SendResult, server: str) -> None: ...

    def wait_for_room(self) -> None: ...


@dataclass(frozen=True)
class _LaneProgress:
    progress: RoutedProgress
    server: str

    def answered(self, result: SendResult) -> None:
        self.progress.answered(result, self.server)

    def wait_for_room(self) -> None:
        self.progress.wait_for_room()


def send_routed(
    router: Router, messages: list[OutgoingMessage], progress: RoutedProgress | None = None
) -> Routed:
    """Send each message through a lane with room for it. A server that cannot be reached is
    marked down and its messages go to another server at once; with none left they come back
    as retries. The same path for every send: the dispatcher's chunks, test sends, and a
    confirmation sent at once. `progress` hears of every answer as it comes (an answered
    message is never failed over: only a group none of which reached its server is)."""
    routed = Routed()
    pending, down = list(range(len(messages))), set[str]()
    while pending:
        assignment = router.assign(len(pending), exclude=down)
        waiting = [pending[i] for i in assignment.unassigned]
        if not assignment.by_lane:
            if not router.up_lanes(exclude=down):
                why = "no SMTP server could be reached"
                routed.sent += [
                    (i, SendResult(messages[i].delivery_id, SendOutcome.RETRY, why, False), None)
                    for i in waiting
                ]
                return routed
            routed.waiting, routed.retry_at = waiting, assignment.retry_at
            return routed
        failed_over: list[int] = []
        for name, indexes in assignment.by_lane.items():
            group = [pending[i] for i in indexes]
            results = router.lanes[name].transport.send_messages(
                [messages[i] for i in group],
                _LaneProgress(progress, name) if progress is not None else None,
            )
            if results and not any(r.reached for r in results):
                router.mark_down(name, results[0].reply)
                down.add(name)
                if router.up_lanes(exclude=down):
                    failed_over += group
                    continue
            routed.sent += [(i, r, name) for i, r in zip(group, results, strict=True)]
        if waiting and not failed_over:
            routed.waiting, routed.retry_at = waiting, assignment.retry_at
            return routed
        pending = failed_over + waiting
    return routed
