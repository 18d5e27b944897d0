"""Dispatch: the sending pipeline. Every query is `ledger`'s, every decision `policy`'s.

    claim (lease)  ->  re-check (status, suppression, enrollment, window)  ->  render
        ->  route (server by weight, within its caps)  ->  send  ->  record the outcome

A claim is sent chunk by chunk (a sender thread, which mostly waits on the network) while
this thread claims and renders what comes next, so the SMTP connections never wait for the
database. Outcomes are recorded as the servers answer, by group commit (`recorder`): a hard
crash can repeat what was answered but not yet recorded, at most settings.unrecorded_max
messages, plus one on the wire per SMTP connection. A graceful stop (the `stop` event)
finishes and records the chunk in flight and gives the rest of the claim back. If the
database goes away after a message was sent, recording its outcome is retried until the
database is back (within the lease) and nothing more is sent meanwhile, so a sent message is
not sent again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from tidings.campaigns.sequencing import NextSteps, step_window
from tidings.clock import Clock, zone_or_utc
from tidings.config import Settings
from tidings.db import is_disconnect, make_read_sessions, signing_key
from tidings.db.models import Campaign
from tidings.rendering.compile import CompiledStep
from tidings.rendering.message import Addressee, MessageBuilder
from tidings.sending import ledger, policy
from tidings.sending.bounces import check_bounce_rate
from tidings.sending.recorder import Recorder
from tidings.sending.routing import Lane, RateLimiter, Router, send_routed
from tidings.sending.transports import OutgoingMessage, SendResult
from tidings.states import DeliveryKind, DeliveryStatus
from tidings.subscribers.tokens import Links, verp_address
from tidings.subscribers.validation import mask_addresses, mask_email

log = logging.getLogger(__name__)
T = TypeVar("T")
COMPILED_STEPS_KEPT = 256


@dataclass
class DispatchResult:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    skipped: int = 0
    deferred: int = 0  # claimed, but not to be sent yet (window closed, campaign paused)

    def __iadd__(self, other: DispatchResult) -> DispatchResult:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def total(self) -> int:
        return self.sent + self.retried + self.failed + self.bounced + self.skipped


@dataclass
class Job:
    """A claimed delivery on its way: who it is for and the message built for them."""

    delivery_id: int
    subscriber_id: int
    campaign_id: int | None
    email: str
    queued_at: datetime
    attempts: int
    message: OutgoingMessage


# What sending a chunk gave: the outcomes (job, result, server), the jobs no server had room
# for, and when there will be room.
Sent = tuple[list[tuple[Job, SendResult, str | None]], list[Job], datetime | None]


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


class Dispatcher:
    """`with Dispatcher(...) as dispatcher: dispatcher.run_pass()`; leaving the block shuts its
    sender thread."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        settings: Settings,
        lanes: Sequence[Lane],
        owner: str | None = None,
        stop: threading.Event | None = None,
    ):
        self.sessions = sessions
        self.clock = clock
        self.settings = settings
        self.router = Router(lanes, RateLimiter(sessions, clock), clock)
        self._read_sessions = make_read_sessions(sessions.kw["bind"])
        # Each step version's compiled form, fetched once per process (bounded: versions
        # accumulate over months of edits).
        self._compiled = lru_cache(maxsize=COMPILED_STEPS_KEPT)(self._fetch_compiled)
        self.owner = owner or worker_id()
        self.stop = stop or threading.Event()
        self._builder: MessageBuilder | None = None
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="dispatch")
        # What the sender thread took: the recorder finds each answer's job here.
        self._in_flight: dict[int, Job] = {}
        # The campaigns' send windows and step delays, as of the latest claim: recording an
        # outcome moves the reader on without reading them again for every group.
        self._next_steps: dict[int, NextSteps] = {}
        self._recorder = Recorder(self._write_answers, DispatchResult(), settings.unrecorded_max)
        # The unit handed to the sender thread, and finished before a graceful stop.
        self.chunk_size = settings.chunk_size
        # Claims are whole chunks, so the last chunk of a claim keeps every connection busy.
        self.claim_size = -(-settings.batch_size // self.chunk_size) * self.chunk_size

    def close(self) -> None:
        self._sender.shutdown(wait=True)
        self._recorder.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run_pass(self, only_ids: list[int] | None = None) -> DispatchResult:
        """Send everything due now, until nothing is due or `stop` is set. With `only_ids`,
        one claim of those deliveries (if due).

        One pipeline across claims: while a chunk is on the wire (the sender thread, which
        mostly waits on the network), this thread records the chunk before it and, when fewer
        than a chunk of prepared emails are left, claims and prepares the next batch, so the
        SMTP connections never wait for the database between claims. The recorder writes the
        outcomes meanwhile, as they come."""
        self._recorder.start()
        self._recorder.totals = DispatchResult()
        result = DispatchResult()
        jobs: list[Job] = []
        more = True  # the queue may hold more that is due
        sending: Future[Sent] | None = None
        while True:
            while more and len(jobs) < self.chunk_size and not self.stop.is_set():
                claimed = self._claim(only_ids)
                more = bool(claimed) and only_ids is None
                if claimed:
                    prepared, held = self._prepare(claimed)
                    jobs += prepared
                    result += held
            chunk: list[Job] = []
            if jobs and not self.stop.is_set():
                chunk, jobs = jobs[: self.chunk_size], jobs[self.chunk_size :]
            current = self._submit(chunk) if chunk else None
            if sending is not None:
                outcomes, waiting, retry_at = sending.result()
                # Answered messages are being recorded already; these never reached a server.
                self._recorder.add([(r, server) for job, r, server in outcomes if not r.reached])
                if waiting:
                    jobs, deferred = self._no_capacity(waiting + jobs, retry_at)
                    result.deferred += deferred
                    more = more and deferred == 0  # every server is at its cap: stop here
            sending = current
            if self.stop.is_set() and jobs:
                self._release(jobs)  # stopping: the chunk in flight is finished, not these
                jobs = []
            if sending is None and not jobs and not (more and not self.stop.is_set()):
                result += self._recorder.flush()
                return result

    # ------------------------------------------------------------------------- the pipeline

    def _claim(self, only_ids: list[int] | None) -> list[int]:
        now = self.clock.now()
        lease_until = now + self.clock.span(self.settings.lease_seconds)
        return ledger.claim(self.sessions, self.owner, now, lease_until, self.claim_size, only_ids)

    def _no_capacity(self, jobs: list[Job], retry_at: datetime | None) -> tuple[list[Job], int]:
        """A server's cap is reached: wait for it if it frees up soon (the jobs stay), else
        give the jobs back to the queue until it does. Returns (jobs to send, deferred)."""
        now = self.clock.now()
        if policy.wait_for_capacity(retry_at, now, self.clock.span(policy.MAX_RATE_WAIT_SECONDS)):
            assert retry_at is not None
            self._wait_until(retry_at)
            return jobs, 0
        self._release(jobs, not_before=retry_at)
        return [], len(jobs)

    def _prepare(self, ids: list[int]) -> tuple[list[Job], DispatchResult]:
        """Re-check each claimed delivery, hold back what may not go now, build the rest.
        Reading and rendering hold no write lock (on SQLite the recorder writes meanwhile);
        what is held back is written after, briefly."""
        now = self.clock.now()
        result = DispatchResult()
        jobs: list[Job] = []
        builder = self._get_builder()
        with self._read_sessions.begin() as session:
            claimed = ledger.load_claimed(session, ids, self.owner)
            self._next_steps = {**self._next_steps, **claimed.next_steps}  # one assignment
            skipped: list[tuple[int, str]] = []
            deferred: list[tuple[int, datetime, int]] = []
            stopped: set[int] = set()
            for row in claimed.rows:
                campaign = claimed.campaigns.get(row.campaign_id) if row.campaign_id else None
                left = campaign is not None and (row.sid, campaign.id) in claimed.ended
                why_not = policy.reason_not_to_send(
                    policy.Recheck(row.kind, row.status, claimed.suppressed.get(row.email), left)
                )
                if why_not:
                    skipped.append((row.id, why_not))
                    if campaign is not None and not left:
                        stopped.add(row.sid)  # skipped for who they are: stop every sequence
                    continue
                if campaign is not None:
                    at = policy.send_after(
                        campaign.status,
                        step_window(campaign, row.step_send_window is not False),
                        zone_or_utc(row.timezone),
                        row.paused_until,
                        now,
                    )
                    if at is not None:
                        deferred.append((row.id, at, row.attempts - 1))
                        continue
                jobs.append(self._job(builder, row, campaign, now))
        if skipped or deferred or stopped:
            with self.sessions.begin() as session:
                ledger.hold_back(session, skipped, deferred, stopped, now)
        result.skipped, result.deferred = len(skipped), len(deferred)
        return jobs, result

    def _submit(self, chunk: list[Job]) -> Future[Sent]:
        for job in chunk:
            self._in_flight[job.delivery_id] = job
        return self._sender.submit(self._send_chunk, chunk)

    def _send_chunk(self, chunk: list[Job]) -> Sent:
        routed = send_routed(self.router, [job.message for job in chunk], self._recorder)
        sent = [(chunk[i], result, server) for i, result, server in routed.sent]
        waiting = [chunk[i] for i in routed.waiting]
        for job in waiting:  # not sent: they go back to the queue or wait for room
            self._in_flight.pop(job.delivery_id, None)
        return sent, waiting, routed.retry_at

    def _write_answers(self, answers: list[tuple[SendResult, str | None]]) -> DispatchResult:
        """The recorder's work: these answers, as one transaction."""
        jobs = [self._in_flight.pop(result.delivery_id) for result, _ in answers]
        return self._record(
            [(job, r, server) for job, (r, server) in zip(jobs, answers, strict=True)]
        )

    def _record(self, sent: list[tuple[Job, SendResult, str | None]]) -> DispatchResult:
        result = DispatchResult()
        if not sent:
            return result
        now = self.clock.now()
        max_age = self.clock.span(self.settings.retry_max_age_seconds)
        outcomes = []
        for job, attempt, server in sent:
            decision = policy.decide(
                attempt.outcome,
                attempt.reply,
                job.attempts,
                job.queued_at,
                now,
                max_age,
                self.clock.span(policy.backoff(job.attempts)),
            )
            self._count(result, job, decision)
            outcomes.append(
                ledger.Outcome(
                    job.delivery_id, job.subscriber_id, job.campaign_id, decision, server
                )
            )

        def write() -> None:
            with self.sessions.begin() as session:
                for campaign_id in ledger.record(session, outcomes, now, self._next_steps):
                    check_bounce_rate(session, campaign_id, self.settings, now)

        # These messages are on their way: losing their outcome would send them again, so a
        # database outage is waited out here (within the lease) rather than given up on.
        self._with_database_retries(write)
        return result

    # ------------------------------------------------------------------------- helpers

    @staticmethod
    def _count(result: DispatchResult, job: Job, decision: policy.Decision) -> None:
        status = decision.status
        if status == DeliveryStatus.SENT:
            result.sent += 1
        elif status == DeliveryStatus.RETRY:
            result.retried += 1
            log.info("retry %s later: %s", mask_email(job.email), mask_addresses(decision.outcome))
        elif status == DeliveryStatus.BOUNCED:
            result.bounced += 1
        else:
            result.failed += 1
            log.warning("failed %s: %s", mask_email(job.email), mask_addresses(decision.outcome))

    def _job(
        self, builder: MessageBuilder, row: Any, campaign: Campaign | None, now: datetime
    ) -> Job:
        to = Addressee(row.email, row.name, row.key)
        if campaign is not None and row.step_id is not None:
            compiled = self._compiled(row.step_id, row.step_version)
            data = builder.step_message(campaign, compiled, to, row.message_id, now)
        elif row.kind == DeliveryKind.COMEBACK:
            data = builder.comeback_message(to, row.message_id, now)
        else:
            data = builder.confirmation_message(to, row.message_id, now)
        if self.settings.bounce_address:
            envelope = verp_address(self.settings.bounce_address, builder.links.secret, row.id)
        elif campaign is not None:
            envelope = builder.sender(campaign).from_address
        else:
            envelope = self.settings.from_address
        message = OutgoingMessage(row.id, envelope, row.email, data)
        return Job(
            row.id, row.sid, row.campaign_id, row.email, row.created_at, row.attempts, message
        )

    def _fetch_compiled(self, step_id: int, version: str) -> CompiledStep:
        """A step's compiled form. `version` is only part of the cache key, so that an edited
        step is fetched again."""
        with self._read_sessions.begin() as session:
            return CompiledStep.from_stored(ledger.compiled_step(session, step_id))

    def _release(self, jobs: list[Job], not_before: datetime | None = None) -> None:
        if not jobs:
            return

        def give_back() -> None:
            with self.sessions.begin() as session:
                ledger.release(
                    session,
                    [j.delivery_id for j in jobs],
                    self.owner,
                    self.clock.now(),
                    not_before,
                )

        self._with_database_retries(give_back)

    def _wait_until(self, at: datetime) -> None:
        """Wait (real time, scaled with the clock) until `at`, or until asked to stop."""
        real = (at - self.clock.now()) / self.clock.span(1.0)
        if real > 0:
            self.stop.wait(min(real, policy.MAX_RATE_WAIT_SECONDS))

    def _with_database_retries(self, work: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.settings.lease_seconds * 0.8
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

    def _get_builder(self) -> MessageBuilder:
        if self._builder is None:
            with self.sessions.begin() as session:  # the key is made on first use
                secret = signing_key(session, self.settings.secret_key)
            self._builder = MessageBuilder(
                self.settings, Links(self.settings.public_base_url, secret)
            )
        return self._builder
