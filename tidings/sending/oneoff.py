"""Sending at once, outside the scheduler's passes: a confirmation email for someone an
operator just added, and test sends of a campaign's emails. Both go through the lanes of the
settings (`Runtime.lanes`) and their caps, like every other email.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from tidings.campaigns.sequencing import active_steps
from tidings.campaigns.store import find_step, get_campaign
from tidings.db import audit
from tidings.db.models import message_id
from tidings.errors import InvalidInput
from tidings.rendering.compile import CompiledStep
from tidings.rendering.message import Addressee, MessageBuilder, stored_sender
from tidings.runtime import Runtime
from tidings.sending.dispatch import Dispatcher, DispatchResult
from tidings.sending.routing import Lane, RateLimiter, Router, send_routed
from tidings.sending.transports import OutgoingMessage, SendResult
from tidings.states import SendOutcome
from tidings.subscribers.validation import mask_email, normalize_email

# Test sends to several addresses at once (the console's form): a few colleagues, not a list.
MAX_TEST_ADDRESSES = 10


def send_now(runtime: Runtime, delivery_ids: Sequence[int]) -> DispatchResult:
    """Send these queued deliveries now (if they are due) instead of at the next pass; what
    cannot go now stays queued for the scheduler."""
    lanes = runtime.lanes()
    try:
        with Dispatcher(runtime.sessions, runtime.clock, runtime.settings, lanes) as dispatcher:
            return dispatcher.run_pass(only_ids=list(delivery_ids))
    finally:
        _close(lanes)


@dataclass(frozen=True)
class TestSend:
    step_key: str
    result: SendResult


def send_test(
    runtime: Runtime, slug: str, to_address: str, step_key: str | None = None
) -> list[TestSend]:
    """Send one step of a campaign (`step_key`: a key or position, default the first; "all"
    for every step) to an address now. Not recorded in the ledger; its links belong to nobody."""
    address = normalize_email(to_address, field="--to")
    to = Addressee(address, "Test Recipient", "test-" + secrets.token_urlsafe(8))
    settings, now = runtime.settings, runtime.clock.now()
    with runtime.read_sessions.begin() as session:
        campaign = get_campaign(session, slug)
        steps = (
            active_steps(session, campaign.id)
            if step_key == "all"
            else [find_step(session, campaign, step_key)]
        )
        builder = MessageBuilder(settings, runtime.links())
        envelope = stored_sender(settings, campaign).from_address
        messages = [
            OutgoingMessage(
                i,
                envelope,
                address,
                builder.step_message(
                    campaign,
                    CompiledStep.from_stored(step.compiled),
                    to,
                    message_id(settings.sender_domain),
                    now,
                ),
            )
            for i, step in enumerate(steps)
        ]
        keys = [step.key for step in steps]
    lanes = runtime.lanes()
    try:
        for lane in lanes:
            lane.transport.open()
        router = Router(lanes, RateLimiter(runtime.sessions, runtime.clock), runtime.clock)
        routed = send_routed(router, messages)
    finally:
        _close(lanes)
    results: dict[int, SendResult] = {i: result for i, result, _ in routed.sent}
    for i in routed.waiting:
        results[i] = SendResult(
            i, SendOutcome.RETRY, "not sent: every server's cap is reached; try again later"
        )
    return [TestSend(keys[i], results[i]) for i in range(len(messages))]


def send_tests(
    runtime: Runtime,
    session: Session,
    now: datetime,
    slug: str,
    addresses: Sequence[str],
    step_key: str | None = None,
    field: str = "to",
) -> list[tuple[str, TestSend]]:
    """`send_test` to each of a few addresses (the console's Send a test, and the CLI's
    test-send; `field` names the input in messages), recorded in the
    audit log through `session` (its transaction: the caller's unit of work) with the number
    of addresses and the addresses masked. Every address is checked before anything is sent:
    a malformed one is refused (InvalidInput naming it) and nothing goes out."""
    if not addresses:
        raise InvalidInput("to", "give at least one address")
    if len(addresses) > MAX_TEST_ADDRESSES:
        raise InvalidInput(
            "to", f"at most {MAX_TEST_ADDRESSES} addresses at once, got {len(addresses)}"
        )
    checked = list(dict.fromkeys(normalize_email(a, field=field) for a in addresses))
    sends = [(to, send) for to in checked for send in send_test(runtime, slug, to, step_key)]
    keys = sorted({send.step_key for _, send in sends})
    audit.record(
        session,
        now,
        "campaign.test-send",
        f"{slug}/{','.join(keys)}",
        {
            "addresses": len(checked),
            "to": [mask_email(to) for to in checked],
            "sent": sum(send.result.outcome == SendOutcome.SENT for _, send in sends),
        },
    )
    return sends


def _close(lanes: Sequence[Lane]) -> None:
    for lane in lanes:
        lane.transport.close()
