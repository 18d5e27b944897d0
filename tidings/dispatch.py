"""Dispatch: claim due deliveries, check them again, render, send, record the outcome.

    claim (lease)  ->  re-check (status, suppression, enrollment, window)  ->  render
        ->  route (server by weight, within its caps)  ->  send  ->  record the outcome
            (sent / retry / bounced / failed / skipped)

A claimed delivery is `sending` with a lease: if this process dies, the lease expires and
`reap_expired_leases` puts it back in the queue, so nothing is lost. A hard crash can repeat
what was sent but not yet recorded: the chunk on the wire and the one being recorded, at most
2 × settings.chunk_size messages. A graceful stop (the `stop` event) finishes and records the
chunk in flight and gives the rest of the claim back before returning.
If the database goes away after a chunk was sent, recording its outcome is retried until
the database is back (within the lease), so a sent message is not sent again.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from tidings.bounces import check_bounce_rate
from tidings.campaigns.sequencing import advance_after_deliveries, campaign_window, zone
from tidings.clock import Clock
from tidings.config import Settings
from tidings.db import signing_key, update_by_id
from tidings.delivery import OutgoingMessage, SendResult, Transport
from tidings.messages import Addressee, MessageBuilder
from tidings.models import (
    Campaign,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Step,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from tidings.rendering import CompiledStep
from tidings.routing import Lane, RateLimiter, Router, single_lane
from tidings.subscribers.service import exit_enrollments, skip_waiting_deliveries, suppress
from tidings.subscribers.tokens import Links, verp_address
from tidings.subscribers.validation import email_sha256, mask_addresses, mask_email

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 60.0
RETRY_MAX_DELAY_SECONDS = 3600.0
# When a server's cap frees up within this many (real) seconds, wait for it instead of
# putting the messages back in the queue.
MAX_RATE_WAIT_SECONDS = 5.0
T = TypeVar("T")


@dataclass
class DispatchResult:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    skipped: int = 0
    deferred: int = 0  # claimed, but not to be sent yet (window closed, campaign paused)

    def __iadd__(self, other: DispatchResult) -> DispatchResult:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @property
    def total(self) -> int:
        return self.sent + self.retried + self.failed + self.bounced + self.skipped


@dataclass
class _Job:
    delivery_id: int
    subscriber_id: int
    campaign_id: int | None
    email: str
    created_at: datetime
    attempts: int
    message: OutgoingMessage | None = None


# What sending a chunk gave: the outcomes (job, result, server), the jobs no server had
# room for, and when there will be room.
_Sent = tuple[list[tuple["_Job", SendResult, str | None]], list["_Job"], datetime | None]


@dataclass
class _Claimed:
    jobs: list[_Job] = field(default_factory=list)
    result: DispatchResult = field(default_factory=DispatchResult)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


class Dispatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        settings: Settings,
        out: Transport | Sequence[Lane],
        owner: str | None = None,
        stop: threading.Event | None = None,
    ):
        """`out` is one transport, or the lanes (SMTP servers) to route among."""
        self.sessions = sessions
        self.clock = clock
        self.settings = settings
        lanes = single_lane(out) if isinstance(out, Transport) else list(out)
        self.router = Router(lanes, RateLimiter(sessions, clock), clock)
        self.owner = owner or worker_id()
        self.stop = stop or threading.Event()
        self._builder: MessageBuilder | None = None
        self._compiled: dict[tuple[int, str], CompiledStep] = {}
        # Sends one chunk while this thread records the one before (see _process).
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="dispatch")
        # The most a hard crash can send twice: what is on the wire, not yet recorded.
        self.chunk_size = settings.chunk_size
        # Claims are whole chunks, so the last chunk of a claim keeps every connection busy.
        self.claim_size = -(-settings.batch_size // self.chunk_size) * self.chunk_size

    # ----------------------------------------------------------------- public

    def run_pass(
        self, stop: threading.Event | None = None, only_ids: list[int] | None = None
    ) -> DispatchResult:
        """Send everything due now, batch after batch, until nothing is due or `stop` is set."""
        if stop is not None:
            self.stop = stop
        total = DispatchResult()
        while not self.stop.is_set():
            claimed = self._claim(only_ids)
            if not claimed:
                break
            total += self._process(claimed)
            if only_ids is not None:
                break
        return total

    # ----------------------------------------------------------------- stages

    def _claim(self, only_ids: list[int] | None) -> list[int]:
        now = self.clock.now()
        with self.sessions.begin() as session:
            query = (
                select(Delivery.id)
                .outerjoin(Campaign, Campaign.id == Delivery.campaign_id)
                .where(
                    Delivery.status.in_(DeliveryStatus.WAITING),
                    Delivery.next_attempt_at <= now,
                    or_(Delivery.campaign_id.is_(None), Campaign.status == "active"),
                )
                .order_by(Delivery.next_attempt_at, Delivery.id)
                .limit(self.claim_size)
                .with_for_update(of=Delivery, skip_locked=True)
            )
            if only_ids is not None:
                query = query.where(Delivery.id.in_(only_ids))
            ids = list(session.scalars(query))
            if ids:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids))
                    .values(
                        status=DeliveryStatus.SENDING,
                        lease_owner=self.owner,
                        lease_expires_at=now + self.clock.span(self.settings.lease_seconds),
                        attempts=Delivery.attempts + 1,
                        updated_at=now,
                    )
                )
        return ids

    def _process(self, ids: list[int]) -> DispatchResult:
        """Send the claim chunk by chunk. While one chunk is on the wire (a sender thread,
        which mostly waits on the network) the previous one is recorded here, so the SMTP
        connections and the database are both kept busy."""
        claimed = self._prepare(ids)
        result = claimed.result
        queue = claimed.jobs
        sending: Future[_Sent] | None = None
        while queue or sending is not None:
            chunk: list[_Job] = []
            if queue and not self.stop.is_set():
                chunk, queue = queue[: self.chunk_size], queue[self.chunk_size :]
            current = self._sender.submit(self._send_chunk, chunk) if chunk else None
            if sending is not None:
                outcomes, waiting, retry_at = sending.result()
                result += self._record(outcomes)
                if waiting:
                    # A server cap is reached: wait if it frees up soon, else requeue.
                    now = self.clock.now()
                    if retry_at is not None and retry_at - now <= self.clock.span(
                        MAX_RATE_WAIT_SECONDS
                    ):
                        self._wait_until(retry_at)
                        queue = waiting + queue
                    else:
                        self._release(waiting + queue, not_before=retry_at)
                        result.deferred += len(waiting) + len(queue)
                        queue = []
            sending = current
            if self.stop.is_set() and queue:
                self._release(queue)  # stopping: the chunk in flight is finished, not these
                queue = []
        return result

    def _send_chunk(self, chunk: list[_Job]) -> _Sent:
        """Route and send one chunk. Returns (outcomes, jobs without capacity, when capacity
        frees). A server that cannot be reached is marked down and its messages go to
        another server at once; with no server left they are retried later."""
        outcomes: list[tuple[_Job, SendResult, str | None]] = []
        pending, down = chunk, set[str]()
        while pending:
            assignment = self.router.assign(len(pending), exclude=down)
            waiting = [pending[i] for i in assignment.unassigned]
            if not assignment.by_lane:
                if not self.router.up_lanes(exclude=down):
                    why = "no SMTP server could be reached"
                    outcomes += [
                        (j, SendResult(j.delivery_id, "retry", why, False), None) for j in waiting
                    ]
                    return outcomes, [], None
                return outcomes, waiting, assignment.retry_at
            failed_over: list[_Job] = []
            for name, indexes in assignment.by_lane.items():
                group = [pending[i] for i in indexes]
                lane = self.router.lanes[name]
                results = lane.transport.send_messages([j.message for j in group if j.message])
                if results and not any(r.reached for r in results):
                    self.router.mark_down(name, results[0].reply)
                    down.add(name)
                    if self.router.up_lanes(exclude=down):
                        failed_over += group
                        continue
                outcomes += [(j, r, name) for j, r in zip(group, results, strict=True)]
            if waiting and not failed_over:
                return outcomes, waiting, assignment.retry_at
            pending = failed_over + waiting
        return outcomes, [], None

    def _wait_until(self, at: datetime) -> None:
        """Wait (real time, scaled with the clock) until `at`, or until asked to stop."""
        real = (at - self.clock.now()) / self.clock.span(1.0)
        if real > 0:
            self.stop.wait(min(real, MAX_RATE_WAIT_SECONDS))

    def _prepare(self, ids: list[int]) -> _Claimed:
        """Re-check each claimed delivery and render the ones still to send.

        Plain rows, not ORM objects, and each step's compiled form fetched once per version:
        this runs for every message sent.
        """
        now = self.clock.now()
        claimed = _Claimed()
        with self.sessions.begin() as session:
            builder = self._get_builder(session)
            rows = session.execute(
                select(
                    Delivery.id,
                    Delivery.kind,
                    Delivery.message_id,
                    Delivery.created_at,
                    Delivery.attempts,
                    Delivery.campaign_id,
                    Delivery.step_id,
                    Step.content_sha256.label("step_version"),
                    Subscriber.id.label("sid"),
                    Subscriber.email,
                    Subscriber.name,
                    Subscriber.timezone,
                    Subscriber.status,
                    Subscriber.key,
                    Subscriber.paused_until,
                )
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .outerjoin(Step, Step.id == Delivery.step_id)
                .where(
                    Delivery.id.in_(ids),
                    Delivery.lease_owner == self.owner,
                    Delivery.status == DeliveryStatus.SENDING,
                )
                .order_by(Delivery.id)
            ).all()
            if not rows:
                return claimed
            campaigns = {
                c.id: c
                for c in session.scalars(
                    select(Campaign).where(
                        Campaign.id.in_({r.campaign_id for r in rows if r.campaign_id is not None})
                    )
                )
            }
            suppressed = dict(
                session.execute(
                    select(Suppression.email_sha256, Suppression.reason).where(
                        Suppression.email_sha256.in_([email_sha256(r.email) for r in rows])
                    )
                ).all()
            )
            ended: set[tuple[int, int]] = set(
                session.execute(
                    select(Enrollment.subscriber_id, Enrollment.campaign_id).where(
                        Enrollment.subscriber_id.in_([r.sid for r in rows]),
                        Enrollment.status != EnrollmentStatus.ACTIVE,
                    )
                ).all()
            )
            self._load_compiled(session, {(r.step_id, r.step_version) for r in rows if r.step_id})
            skipped: list[dict[str, object]] = []
            later: list[dict[str, object]] = []
            exiting: set[int] = set()
            for row in rows:
                campaign = campaigns.get(row.campaign_id) if row.campaign_id else None
                why_not = self._reason_not_to_send(row, campaign, suppressed, ended)
                if why_not:
                    skipped.append(
                        {
                            "id": row.id,
                            "status": DeliveryStatus.SKIPPED,
                            "outcome": why_not,
                            "lease_expires_at": None,
                            "updated_at": now,
                        }
                    )
                    if campaign is not None and (row.sid, campaign.id) not in ended:
                        # Skipped for who they are (suppressed, not active): nothing more
                        # may go to them, in any sequence.
                        exiting.add(row.sid)
                    continue
                if campaign is not None:
                    not_before = self._not_before(campaign, row, now)
                    if not_before is not None:
                        # Not an attempt: it was never offered to a server.
                        later.append(
                            {
                                "id": row.id,
                                "status": DeliveryStatus.QUEUED,
                                "next_attempt_at": not_before,
                                "attempts": row.attempts - 1,
                                "lease_owner": None,
                                "lease_expires_at": None,
                                "updated_at": now,
                            }
                        )
                        continue
                to = Addressee(row.email, row.name, row.key)
                if campaign is not None and row.step_id is not None:
                    compiled = self._compiled[(row.step_id, row.step_version)]
                    data = builder.step_message(campaign, compiled, to, row.message_id, now)
                else:
                    data = builder.confirmation_message(to, row.message_id, now)
                job = _Job(
                    row.id, row.sid, row.campaign_id, row.email, row.created_at, row.attempts
                )
                job.message = OutgoingMessage(
                    row.id, self._envelope_sender(row.id, campaign, builder), row.email, data
                )
                claimed.jobs.append(job)
            if skipped or later:
                update_by_id(session, Delivery, skipped + later)
            for subscriber_id in exiting:
                exit_enrollments(session, subscriber_id, now)
            claimed.result.skipped += len(skipped)
            claimed.result.deferred += len(later)
        return claimed

    def _load_compiled(self, session: Session, versions: set[tuple[int, str]]) -> None:
        missing = {
            step_id for step_id, version in versions if (step_id, version) not in self._compiled
        }
        if not missing:
            return
        if len(self._compiled) > 1000:
            self._compiled.clear()
        for step_id, compiled in session.execute(
            select(Step.id, Step.compiled).where(Step.id.in_(missing))
        ):
            step = CompiledStep.from_stored(compiled)
            self._compiled[(step_id, step.content_sha256)] = step

    @staticmethod
    def _not_before(campaign: Campaign, row: Any, now: datetime) -> datetime | None:
        """When a campaign email may go out if not now (campaign paused, subscriber pausing,
        send window closed); None if it may go now."""
        if campaign.status != "active":
            return now  # not claimed again until the campaign is resumed
        window = campaign_window(campaign)
        tz = zone(row.timezone)
        if row.paused_until is not None and row.paused_until > now:
            return window.next_open(row.paused_until, tz)
        if not window.contains(now, tz):
            return window.next_open(now, tz)
        return None

    def _reason_not_to_send(
        self,
        row: Any,
        campaign: Campaign | None,
        suppressed: dict[str, str],
        ended: set[tuple[int, int]],
    ) -> str | None:
        reason = suppressed.get(email_sha256(row.email))
        # The one exception: someone who unsubscribed and asked to come back gets the
        # confirmation email (their suppression is lifted only when they click it).
        coming_back = (
            reason == "unsubscribe"
            and row.kind == "confirmation"
            and row.status == SubscriberStatus.PENDING
        )
        if reason is not None and not coming_back:
            return "skipped: address is suppressed"
        if row.kind == "confirmation":
            if row.status != SubscriberStatus.PENDING:
                return f"skipped: subscriber is {row.status}, no confirmation needed"
            return None
        if row.status != SubscriberStatus.ACTIVE:
            return f"skipped: subscriber is {row.status}"
        if campaign is not None and (row.sid, campaign.id) in ended:
            return "skipped: subscriber left the campaign"
        return None

    def _record(self, outcomes: list[tuple[_Job, SendResult, str | None]]) -> DispatchResult:
        if not outcomes:
            return DispatchResult()
        # These messages are on their way: losing their outcome would send them again, so
        # a database outage is waited out here (within the lease) rather than given up on.
        return self._with_database_retries(lambda: self._record_once(outcomes))

    def _record_once(self, outcomes: list[tuple[_Job, SendResult, str | None]]) -> DispatchResult:
        result = DispatchResult()
        now = self.clock.now()
        max_age = self.clock.span(self.settings.retry_max_age_seconds)
        changes: list[dict[str, object]] = []
        finished: list[tuple[int, int]] = []  # (subscriber, campaign) whose step is done
        bounced: list[tuple[_Job, str]] = []
        for job, outcome, server in outcomes:
            # lease_owner stays: it tells which worker handled the delivery last.
            # (The lease needs no clearing: only `sending` rows have one that counts.)
            change: dict[str, object] = {
                "id": job.delivery_id,
                "outcome": outcome.reply[:1000],
                "updated_at": now,
                "server": server,
            }
            status = outcome.outcome
            if status == "retry" and now - job.created_at >= max_age:
                status = "failed"
                change["outcome"] = f"gave up after {job.attempts} attempts: {outcome.reply}"[:1000]
            if status == "sent":
                change.update(status=DeliveryStatus.SENT, sent_at=now)
                result.sent += 1
            elif status == "retry":
                change.update(
                    status=DeliveryStatus.RETRY, next_attempt_at=now + self._backoff(job.attempts)
                )
                result.retried += 1
                log.info("retry %s later: %s", mask_email(job.email), mask_addresses(outcome.reply))
            elif status == "bounced":
                change.update(status=DeliveryStatus.BOUNCED)
                result.bounced += 1
                bounced.append((job, outcome.reply))
            else:
                change.update(status=DeliveryStatus.FAILED)
                result.failed += 1
                log.warning("failed %s: %s", mask_email(job.email), mask_addresses(outcome.reply))
            changes.append(change)
            if status in ("sent", "failed") and job.campaign_id is not None:
                finished.append((job.subscriber_id, job.campaign_id))
        with self.sessions.begin() as session:
            update_by_id(session, Delivery, changes)
            advance_after_deliveries(session, finished, now)
            for job, reply in bounced:
                self._bounce(session, job, reply, now)
            session.flush()
            for campaign_id in {j.campaign_id for j, _ in bounced if j.campaign_id is not None}:
                check_bounce_rate(session, campaign_id, self.settings, now)
        return result

    def _with_database_retries(self, work: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.settings.lease_seconds * 0.8
        pause = 0.5
        while True:
            try:
                return work()
            except DBAPIError as exc:
                if not _is_disconnect(exc) or time.monotonic() + pause > deadline:
                    raise
                log.warning(
                    "database unreachable while recording outcomes (%s); retrying in %.1fs",
                    type(exc.orig).__name__,
                    pause,
                )
                time.sleep(pause)  # not the stop event: these outcomes must be recorded
                pause = min(pause * 2, 10.0)

    def _bounce(self, session: Session, job: _Job, reply: str, now: datetime) -> None:
        masked = mask_addresses(reply)
        log.warning("bounced %s: %s", mask_email(job.email), masked)
        suppress(session, job.email, "hard-bounce", masked[:500], now)
        session.execute(
            update(Subscriber)
            .where(Subscriber.id == job.subscriber_id)
            .values(status=SubscriberStatus.BOUNCED, updated_at=now)
        )
        exit_enrollments(session, job.subscriber_id, now)
        skip_waiting_deliveries(session, job.subscriber_id, "skipped: address bounced", now)

    def _release(self, jobs: list[_Job], not_before: datetime | None = None) -> None:
        """Give claimed, unsent deliveries back to the queue (stopping, or no capacity)."""
        if not jobs:
            return
        now = self.clock.now()
        values: dict[str, object] = {
            "status": DeliveryStatus.QUEUED,
            "lease_owner": None,
            "lease_expires_at": None,
            "attempts": Delivery.attempts - 1,
            "updated_at": now,
        }
        if not_before is not None:
            values["next_attempt_at"] = not_before

        def release() -> None:
            with self.sessions.begin() as session:
                session.execute(
                    update(Delivery)
                    .where(
                        Delivery.id.in_([j.delivery_id for j in jobs]),
                        Delivery.lease_owner == self.owner,
                    )
                    .values(**values)
                )

        self._with_database_retries(release)

    # ----------------------------------------------------------------- helpers

    def _backoff(self, attempts: int) -> timedelta:
        delay = min(RETRY_MAX_DELAY_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1))
        return self.clock.span(delay * random.uniform(0.8, 1.2))

    def _envelope_sender(
        self, delivery_id: int, campaign: Campaign | None, builder: MessageBuilder
    ) -> str:
        if self.settings.bounce_address:
            return verp_address(self.settings.bounce_address, builder.links.secret, delivery_id)
        return builder.sender(campaign).from_address if campaign else self.settings.from_address

    def _get_builder(self, session: Session) -> MessageBuilder:
        if self._builder is None:
            links = Links(
                self.settings.public_base_url, signing_key(session, self.settings.secret_key)
            )
            self._builder = MessageBuilder(self.settings, links)
        return self._builder


def _is_disconnect(exc: DBAPIError) -> bool:
    """True when the database connection was lost or refused (not a bad statement)."""
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower()
    return any(
        word in text
        for word in (
            "connection",
            "server closed",
            "terminating",
            "shutting down",
            "could not connect",
            "database is locked",
            "the database system is",
        )
    )


def reap_expired_leases(sessions: sessionmaker[Session], clock: Clock) -> int:
    """Put deliveries whose worker died (lease expired) back in the queue."""
    now = clock.now()
    with sessions.begin() as session:
        result = session.execute(
            update(Delivery)
            .where(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_expires_at < now)
            .values(
                status=DeliveryStatus.QUEUED,
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=now,
                updated_at=now,
            )
        )
    count = result.rowcount or 0
    if count:
        log.warning("reclaimed %d deliveries whose worker stopped before finishing", count)
    return count
