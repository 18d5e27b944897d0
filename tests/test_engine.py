"""How the engine behaves over time: leaving, pausing, editing a live campaign, catching up
after downtime, bounces. Real SMTP server, real databases, simulated time."""

from __future__ import annotations

import itertools
import textwrap
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import received, run_for
from sqlalchemy import func, select

from tidings.campaigns.loading import load_campaign
from tidings.campaigns.store import set_status
from tidings.db.models import Delivery, Enrollment, Step, Subscriber, Suppression
from tidings.errors import CampaignError, Conflict
from tidings.runtime import Runtime
from tidings.scheduler import Worker
from tidings.sending.devsmtp import LocalSMTPServer
from tidings.states import StopReason
from tidings.subscribers.directory import find_subscriber
from tidings.subscribers.lifecycle import (
    Consent,
    add_subscriber,
    resubscribe,
    stop,
    unsubscribe,
)


def subscribe(runtime: Runtime, email: str, tz: str = "America/New_York") -> None:
    with runtime.sessions.begin() as session:
        add_subscriber(
            session,
            runtime.clock.now(),
            email,
            Consent(source="cli", evidence="test"),
            name="Test Reader",
            timezone=tz,
            confirmed=True,
            message_domain=runtime.settings.sender_domain,
        )


def subjects_to(server: LocalSMTPServer, address: str) -> list[str]:
    return [m["Subject"] for m in received(server) if m["To"].addresses[0].addr_spec == address]


def test_unsubscribe_halfway_stops_everything_including_queued(
    runtime, worker, kap, clock, smtp_server
):
    subscribe(runtime, "ann@example.org")
    run_for(worker, clock, timedelta(days=9))
    before = subjects_to(smtp_server, "ann@example.org")
    assert 3 <= len(before) < 16

    # The next step is planned (in the ledger, queued) but not yet sent when she leaves.
    upcoming = worker.next_event()
    assert upcoming is not None
    clock.set(upcoming)
    planned = worker.plan()
    assert planned.planned == 1
    with runtime.sessions.begin() as session:
        assert unsubscribe(session, find_subscriber(session, "ann@example.org"), "cli", clock.now())

    run_for(worker, clock, timedelta(days=40))
    assert subjects_to(smtp_server, "ann@example.org") == before
    with runtime.sessions.begin() as session:
        statuses = dict(
            session.execute(
                select(Delivery.status, func.count())
                .where(Delivery.kind == "step")
                .group_by(Delivery.status)
            ).all()
        )
        assert statuses == {"sent": len(before), "skipped": 1}
        assert session.scalars(select(Enrollment.status)).one() == "exited"
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1


def test_pause_sends_nothing_and_resume_sends_nothing_twice(
    runtime, worker, kap, clock, smtp_server
):
    subscribe(runtime, "ann@example.org")
    subscribe(runtime, "bob@example.org", tz="Europe/London")
    run_for(worker, clock, timedelta(days=5))
    sent_before = len(received(smtp_server))
    assert sent_before >= 4

    # Pause with a step already planned (queued) for one of them.
    clock.set(worker.next_event())
    assert worker.plan().planned >= 1
    with runtime.sessions.begin() as session:
        set_status(session, kap, "paused", "test")
    run_for(worker, clock, timedelta(days=14))
    assert len(received(smtp_server)) == sent_before

    with runtime.sessions.begin() as session:
        set_status(session, kap, "active", None)
    run_for(worker, clock, timedelta(days=60))
    for address in ("ann@example.org", "bob@example.org"):
        subjects = subjects_to(smtp_server, address)
        assert len(subjects) == 17
        assert len(set(subjects)) == 17, "a step was sent twice"


def test_catch_up_after_downtime_is_one_email_at_a_time(runtime, worker, kap, clock, smtp_server):
    subscribe(runtime, "ann@example.org")
    run_for(worker, clock, timedelta(days=3))
    assert len(received(smtp_server)) == 2  # welcome, then the first benefit

    clock.advance(days=12)  # the engine was down for 12 days: several steps are overdue
    back_at = clock.now()
    worker.tick()
    worker.tick()
    run_for(worker, clock, timedelta(days=10))
    dates = [m["Date"].datetime for m in received(smtp_server)[2:]]
    assert dates, "nothing was sent after the restart"
    assert dates[0] >= back_at
    local = dates[0].astimezone(ZoneInfo("America/New_York"))
    assert local.weekday() < 5 and 9 <= local.hour < 17, "catch-up waits for the window"
    for earlier, later in itertools.pairwise(dates):
        assert later - earlier >= timedelta(days=2), "no burst after downtime"


CAMPAIGN_TOML = """\
slug = "mini"
name = "Mini series"
kind = "sequence"
trigger = "confirm"

[schedule]
every = "1d"

[footer]
reason = "You signed up."
"""


def write_step(folder: Path, filename: str, subject: str) -> None:
    (folder / filename).write_text(
        textwrap.dedent(f"""\
        +++
        subject = "{subject}"
        preheader = "{subject} preheader"
        +++
        Body of {subject}.
        """),
        encoding="utf-8",
    )


def test_editing_a_live_campaign_keeps_subscribers_in_place(
    runtime, worker, clock, smtp_server, tmp_path
):
    folder = tmp_path / "mini"
    folder.mkdir()
    (folder / "campaign.toml").write_text(CAMPAIGN_TOML, encoding="utf-8")
    for filename, subject in [
        ("10-a.md", "A"),
        ("20-b.md", "B"),
        ("30-c.md", "C"),
        ("40-d.md", "D"),
    ]:
        write_step(folder, filename, subject)
    with runtime.sessions.begin() as session:
        load_campaign(session, folder, runtime.settings, clock.now())

    subscribe(runtime, "early@example.org", tz="UTC")
    run_for(worker, clock, timedelta(hours=30))
    assert subjects_to(smtp_server, "early@example.org") == ["A", "B"]

    # Insert X before her position (between A and B) and Y after it (between C and D).
    write_step(folder, "15-x.md", "X")
    write_step(folder, "35-y.md", "Y")
    with runtime.sessions.begin() as session:
        report = load_campaign(session, folder, runtime.settings, clock.now())
    assert report.added == ["x", "y"]
    subscribe(runtime, "late@example.org", tz="UTC")
    run_for(worker, clock, timedelta(days=10))

    assert subjects_to(smtp_server, "early@example.org") == ["A", "B", "C", "Y", "D"]
    assert subjects_to(smtp_server, "late@example.org") == ["A", "X", "B", "C", "Y", "D"]


def test_a_template_error_fails_the_load_not_the_send(
    runtime, worker, clock, smtp_server, tmp_path
):
    folder = tmp_path / "mini"
    folder.mkdir()
    (folder / "campaign.toml").write_text(CAMPAIGN_TOML, encoding="utf-8")
    write_step(folder, "10-a.md", "A")
    write_step(folder, "20-b.md", "B")
    with runtime.sessions.begin() as session:
        load_campaign(session, folder, runtime.settings, clock.now())
    subscribe(runtime, "ann@example.org", tz="UTC")

    (folder / "20-b.md").write_text(
        '+++\nsubject = "B2"\n+++\nHello {{ subscriber.nmae }}\n', encoding="utf-8"
    )
    with pytest.raises(CampaignError) as failure, runtime.sessions.begin() as session:
        load_campaign(session, folder, runtime.settings, clock.now())
    assert "20-b.md:4" in str(failure.value)

    run_for(worker, clock, timedelta(days=3))
    assert subjects_to(smtp_server, "ann@example.org") == ["A", "B"], "old version still sends"
    with runtime.sessions.begin() as session:
        assert set(session.scalars(select(Step.subject))) == {"A", "B"}


class RejectingHandler:
    """An SMTP server that refuses one mailbox permanently (550 5.1.1) at RCPT."""

    def __init__(self, refused: str):
        self.refused = refused
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == self.refused:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 2.0.0 Ok: queued"


def test_a_hard_bounce_suppresses_the_address_and_others_still_get_theirs(
    settings, clock, kap, runtime
):
    with LocalSMTPServer(RejectingHandler("gone@example.org")) as server:
        bouncing = Runtime.open(settings.replace(smtp_url=server.url), clock)
        worker = Worker(bouncing)
        subscribe(bouncing, "gone@example.org")
        subscribe(bouncing, "ann@example.org")
        with worker:
            run_for(worker, clock, timedelta(days=5))
        bouncing.close()
        recipients = {rcpt for _, rcpts, _ in server.handler.messages for rcpt in rcpts}
    assert recipients == {"ann@example.org"}
    with runtime.sessions.begin() as session:
        gone = find_subscriber(session, "gone@example.org")
        assert gone.status == "bounced"
        delivery = session.scalars(select(Delivery).where(Delivery.subscriber_id == gone.id)).one()
        assert delivery.status == "bounced"
        assert "550 5.1.1" in (delivery.outcome or "")
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1
        ann_sent = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .join(Subscriber)
            .where(Subscriber.email == "ann@example.org", Delivery.status == "sent")
        )
        assert ann_sent >= 3


def test_someone_who_left_can_come_back_with_new_consent_and_resumes_where_they_left(
    runtime, worker, kap, clock, smtp_server
):
    subscribe(runtime, "ann@example.org")
    run_for(worker, clock, timedelta(days=6))
    with runtime.sessions.begin() as session:
        unsubscribe(session, find_subscriber(session, "ann@example.org"), "cli", clock.now())
    before = subjects_to(smtp_server, "ann@example.org")
    run_for(worker, clock, timedelta(days=10))
    assert subjects_to(smtp_server, "ann@example.org") == before

    with runtime.sessions.begin() as session:
        resubscribe(
            session,
            find_subscriber(session, "ann@example.org"),
            Consent(source="contact-form"),
            clock.now(),
            runtime.settings.sender_domain,
        )
    run_for(worker, clock, timedelta(days=3))
    after_request = subjects_to(smtp_server, "ann@example.org")
    assert after_request == [*before, "Would you like our emails again?"], (
        "only the come-back email while she has not pressed its button"
    )

    with runtime.sessions.begin() as session:
        joined = resubscribe(
            session,
            find_subscriber(session, "ann@example.org"),
            Consent(source="email", evidence="pressed the button of the come-back email"),
            clock.now(),
            runtime.settings.sender_domain,
            confirmed=True,
        )
        assert joined == [kap]
        assert session.scalar(select(func.count()).select_from(Suppression)) == 0
    run_for(worker, clock, timedelta(days=60))
    series = [
        s
        for s in subjects_to(smtp_server, "ann@example.org")
        if s not in ("Please confirm your subscription", "Would you like our emails again?")
    ]
    assert len(series) == 17 and len(set(series)) == 17, "resumed, nothing twice or skipped"


def test_a_bounced_address_cannot_come_back(runtime, kap, clock):
    subscribe(runtime, "gone@example.org")
    with runtime.sessions.begin() as session:
        gone = find_subscriber(session, "gone@example.org")
        stop(session, gone, StopReason.HARD_BOUNCE, "smtp", "550 no such user", clock.now())
    with pytest.raises(Conflict, match="bounced"), runtime.sessions.begin() as session:
        resubscribe(
            session,
            find_subscriber(session, "gone@example.org"),
            Consent(source="cli", evidence="asked by phone"),
            clock.now(),
            runtime.settings.sender_domain,
            confirmed=True,
        )
