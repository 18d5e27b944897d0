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
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from tidings.campaigns.sequencing import NextSteps, step_window
from tidings.clock import Clock, zone_or_utc
from tidings.config import Settings
from tidings.db import make_read_sessions
from tidings.sending import ledger, policy
from tidings.sending.jobs import Job, JobMaker
from tidings.sending.recorder import Recorder, despite_outages
from tidings.sending.routing import Lane, RateLimiter, Router, send_routed
from tidings.sending.transports import SendResult
from tidings.states import DeliveryStatus
from tidings.subscribers.validation import mask_addresses, mask_email

log = logging.getLogger(__name__)


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

    def count(self, job: Job, decision: policy.Decision) -> None:
        """Count one recorded outcome (and log a retry or a failure)."""
        status = decision.status
        if status == DeliveryStatus.SENT:
            self.sent += 1
        elif status == DeliveryStatus.RETRY:
            self.retried += 1
            log.info("retry %s later: %s", mask_email(job.email), mask_addresses(decision.outcome))
        elif status == DeliveryStatus.BOUNCED:
            self.bounced += 1
        else:
            self.failed += 1
            log.warning("failed %s: %s", mask_email(job.email), mask_addresses(decision.outcome))


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
        self._jobs = JobMaker(sessions, self._read_sessions, settings)
        self.owner = owner or worker_id()
        self.stop = stop or threading.Event()
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
        # How long a database outage is waited out: most of the lease, so the claim stays ours.
        self._within_lease = settings.lease_seconds * 0.8

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
        self._jobs.builder()  # the signing key, read (or made) before the read transaction
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
                jobs.append(self._jobs.job(row, campaign, now))
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
        """The recorder's work: these answers (never none), as one transaction."""
        result = DispatchResult()
        now = self.clock.now()
        max_age = self.clock.span(self.settings.retry_max_age_seconds)
        outcomes = []
        for attempt, server in answers:
            job = self._in_flight.pop(attempt.delivery_id)
            decision = policy.decide(
                attempt.outcome,
                attempt.reply,
                job.attempts,
                job.queued_at,
                now,
                max_age,
                self.clock.span(policy.backoff(job.attempts)),
            )
            result.count(job, decision)
            outcomes.append(
                ledger.Outcome(
                    job.delivery_id, job.subscriber_id, job.campaign_id, decision, server
                )
            )

        def write() -> None:
            with self.sessions.begin() as session:
                for campaign_id in ledger.record(session, outcomes, now, self._next_steps):
                    ledger.pause_if_bouncing(session, campaign_id, self.settings, now)

        # These messages are on their way: losing their outcome would send them again.
        despite_outages(write, self._within_lease)
        return result

    def _release(self, jobs: list[Job], not_before: datetime | None = None) -> None:
        ids = [job.delivery_id for job in jobs]

        def give_back() -> None:
            with self.sessions.begin() as session:
                ledger.release(session, ids, self.owner, self.clock.now(), not_before)

        if ids:
            despite_outages(give_back, self._within_lease)

    def _wait_until(self, at: datetime) -> None:
        """Wait (real time, scaled with the clock) until `at`, or until asked to stop."""
        real = (at - self.clock.now()) / self.clock.span(1.0)
        if real > 0:
            self.stop.wait(min(real, policy.MAX_RATE_WAIT_SECONDS))
