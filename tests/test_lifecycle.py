"""One way out: `lifecycle.stop(reason)` does the same whatever asks for it, and no other
module changes a subscriber's status."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import run_for
from sqlalchemy import select

from tidings.db.models import ConsentEvent, Delivery, Enrollment, Suppression
from tidings.states import DeliveryStatus, EnrollmentStatus, StopReason, SubscriberStatus
from tidings.subscribers.directory import find_subscriber
from tidings.subscribers.lifecycle import (
    Consent,
    add_subscriber,
    stop,
    suppress_address,
    unsubscribe,
)
from tidings.subscribers.operators import add_by_operator, bring_back
from tidings.subscribers.suppressions import suppression_of

ROOT = Path(__file__).resolve().parents[1]

# reason -> (status, consent kind recorded, outcome of the emails still waiting)
EXPECTED = {
    StopReason.UNSUBSCRIBE: ("unsubscribed", "unsubscribed", "skipped: unsubscribed"),
    StopReason.MANUAL: ("unsubscribed", "unsubscribed", "skipped: address suppressed"),
    StopReason.HARD_BOUNCE: ("bounced", None, "skipped: address bounced"),
    StopReason.COMPLAINT: ("complained", "complained", "skipped: spam complaint"),
}


def reader_with_a_queued_email(runtime, worker, clock, email="ann@example.org"):
    with runtime.sessions.begin() as session:
        add_subscriber(
            session,
            clock.now(),
            email,
            Consent(source="cli", evidence="paper form"),
            confirmed=True,
            message_domain="center.example.org",
        )
    clock.advance(hours=1)  # 09:00: the welcome is due; planned, not sent yet
    worker.plan()
    with runtime.sessions.begin() as session:
        queued = session.scalars(select(Delivery.status)).all()
    assert queued == [DeliveryStatus.QUEUED]


@pytest.mark.parametrize("reason", list(StopReason))
def test_stop_for_each_reason(runtime, kap, worker, clock, reason):
    reader_with_a_queued_email(runtime, worker, clock)
    status, consent_kind, skipped = EXPECTED[reason]
    with runtime.sessions.begin() as session:
        ann = find_subscriber(session, "ann@example.org")
        assert stop(session, ann, reason, "test", "the detail", clock.now())
    with runtime.sessions.begin() as session:
        ann = find_subscriber(session, "ann@example.org")
        assert ann.status == status
        assert (ann.unsubscribed_at is not None) == (status == "unsubscribed")
        kinds = session.scalars(
            select(ConsentEvent.kind).where(ConsentEvent.subscriber_id == ann.id)
        ).all()
        assert kinds[-1] == (consent_kind or "confirmed"), "a bounce is no consent decision"
        entry = suppression_of(session, ann.email)
        assert entry is not None and session.scalars(select(Suppression)).one() == entry
        assert (entry.reason, entry.detail) == (reason, "the detail")
        assert session.scalars(select(Enrollment.status)).all() == [EnrollmentStatus.EXITED]
        assert session.execute(select(Delivery.status, Delivery.outcome)).one() == (
            DeliveryStatus.SKIPPED,
            skipped,
        )
    run_for(worker, clock, timedelta(days=3))  # and nothing reaches them


def test_someone_who_left_keeps_their_status_and_the_first_reason(runtime, kap, worker, clock):
    reader_with_a_queued_email(runtime, worker, clock)
    with runtime.sessions.begin() as session:
        ann = find_subscriber(session, "ann@example.org")
        assert unsubscribe(session, ann, "unsubscribe-link", clock.now())
        assert not unsubscribe(session, ann, "unsubscribe-link", clock.now())
        assert not stop(session, ann, StopReason.COMPLAINT, "email", "arf", clock.now())
    with runtime.sessions.begin() as session:
        ann = find_subscriber(session, "ann@example.org")
        assert ann.status == SubscriberStatus.UNSUBSCRIBED
        assert session.scalars(select(Suppression.reason)).all() == ["unsubscribe"]


def test_a_complaint_is_recorded_alike_from_a_report_and_from_an_operator(
    runtime, kap, worker, clock
):
    reader_with_a_queued_email(runtime, worker, clock, "ann@example.org")
    with runtime.sessions.begin() as session:
        add_subscriber(
            session,
            clock.now(),
            "bob@example.org",
            Consent(source="cli", evidence="paper form"),
            confirmed=True,
        )
    with runtime.sessions.begin() as session:
        ann = find_subscriber(session, "ann@example.org")
        stop(session, ann, StopReason.COMPLAINT, "email", "complaint (abuse)", clock.now())
        result = suppress_address(session, "bob@example.org", "complaint", "ticket 7", clock.now())
        assert result.stopped and result.added
    with runtime.sessions.begin() as session:
        for address in ("ann@example.org", "bob@example.org"):
            person = find_subscriber(session, address)
            last = session.scalars(
                select(ConsentEvent.kind)
                .where(ConsentEvent.subscriber_id == person.id)
                .order_by(ConsentEvent.id.desc())
            ).first()
            assert (person.status, last) == ("complained", "complained"), address


def test_no_other_module_sets_a_subscribers_status():
    """Status changes live in subscribers/lifecycle.py. The import writes new rows with a
    status (a creation, not a change); nothing else may assign one, by attribute or UPDATE."""
    by_attribute = re.compile(r"subscriber\w*\.status\s*=[^=]")
    by_update = re.compile(r"update\(Subscriber\)[^;]*?\.values\([^)]*\bstatus=", re.S)
    offenders = []
    for path in (ROOT / "tidings").rglob("*.py"):
        name = str(path.relative_to(ROOT))
        if name == "tidings/subscribers/lifecycle.py":
            continue
        text = path.read_text()
        offenders += [f"{name}: {m.group()!r}" for m in by_attribute.finditer(text)]
        offenders += [f"{name}: UPDATE subscribers SET status" for _ in by_update.finditer(text)]
    assert offenders == []


def test_an_operator_adds_and_brings_back_with_the_emails_to_send_at_once(runtime, kap, clock):
    """What `subscribers add` and `resubscribe` call: one function each, saying what to tell
    the operator and which confirmation or come-back email to send now."""
    form, domain = Consent(source="cli", evidence="paper form"), "center.example.org"
    kept = {"name": None, "timezone": "UTC", "message_domain": domain}
    with runtime.sessions.begin() as session:
        ann = add_by_operator(
            session, clock.now(), "Ann@Example.org", form, confirmed=False, **kept
        )
        bob = add_by_operator(session, clock.now(), "bob@example.org", form, confirmed=True, **kept)
        unsubscribe(session, find_subscriber(session, "bob@example.org"), "test", clock.now())
    assert (ann.email, ann.status, ann.campaigns) == ("ann@example.org", "pending", [])
    assert len(ann.waiting) == 1, "her confirmation email, to send at once"
    assert (bob.status, bob.waiting) == ("active", [])
    with runtime.sessions.begin() as session:
        asked = bring_back(session, "bob@example.org", form, clock.now(), domain, confirmed=False)
        assert (asked.status, len(asked.waiting)) == ("unsubscribed", 1)
        back = bring_back(session, "bob@example.org", form, clock.now(), domain, confirmed=True)
    assert (back.status, back.campaigns) == ("active", ["kap-benefits"])
