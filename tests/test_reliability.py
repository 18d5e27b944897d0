"""Delivery under faults: misbehaving SMTP servers, killed workers, several workers, caps,
failover, bounce reports, the database going away. Real SMTP servers (aiosmtpd), real
databases, real processes."""

from __future__ import annotations

import asyncio
import email
import mailbox
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from email import policy
from pathlib import Path

import psycopg
import pytest
from conftest import MONDAY, run_for
from sqlalchemy import func, insert, select

from tidings.campaigns.loading import load_campaign
from tidings.campaigns.store import set_status
from tidings.clock import FixedClock
from tidings.config import Settings, parse_smtp_servers
from tidings.db import signing_key
from tidings.db.models import (
    BounceEvent,
    Campaign,
    ConsentEvent,
    Delivery,
    Enrollment,
    Subscriber,
    Suppression,
)
from tidings.inbound.ingest import ingest
from tidings.inbound.reports import NotAReport, parse_report
from tidings.ops.status import collect_status
from tidings.runtime import Runtime
from tidings.scheduler import Worker
from tidings.sending.devsmtp import LocalSMTPServer, free_port
from tidings.subscribers.tokens import verp_address

# Real processes, browsers or external programs, seconds each: the full suite, not the fast tier.
pytestmark = pytest.mark.slow

TIDINGS = [sys.executable, "-m", "tidings"]
# What the worker processes sign links with (they refuse a key under 32 bytes).
SECRET_KEY = "reliability-test-secret-key-32-bytes"
SAMPLES = Path(__file__).parent / "data" / "bounces"
NOTICE_TOML = """\
slug = "notice"
name = "One notice"
kind = "sequence"
trigger = "confirm"

[footer]
reason = "You signed up."
"""


def notice_campaign(runtime: Runtime, folder: Path) -> None:
    """A one-email sequence with no send window: what is due goes out at once."""
    folder.mkdir(exist_ok=True)
    (folder / "campaign.toml").write_text(NOTICE_TOML, encoding="utf-8")
    (folder / "01-notice.md").write_text(
        '+++\nsubject = "A notice"\npreheader = "Just one."\n+++\nHello.\n', encoding="utf-8"
    )
    with runtime.sessions.begin() as session:
        load_campaign(session, folder, runtime.settings, runtime.clock.now())


def bulk_enroll(runtime: Runtime, addresses: list[str], due: datetime) -> None:
    """Active subscribers enrolled in `notice`, due at `due` (fast: a few statements)."""
    with runtime.sessions.begin() as session:
        campaign_id = session.scalar(select(Campaign.id).where(Campaign.slug == "notice"))
        start = (session.scalar(select(func.max(Subscriber.id))) or 0) + 1
        session.execute(
            insert(Subscriber),
            [
                {
                    "id": start + i,
                    "email": a,
                    "name": "",
                    "timezone": "UTC",
                    "status": "active",
                    "key": secrets.token_urlsafe(16),
                    "attributes": {},
                    "created_at": due,
                    "updated_at": due,
                    "confirmed_at": due,
                }
                for i, a in enumerate(addresses)
            ],
        )
        session.execute(
            insert(Enrollment),
            [
                {
                    "subscriber_id": start + i,
                    "campaign_id": campaign_id,
                    "status": "active",
                    "next_position": 1,
                    "next_due_at": due,
                    "created_at": due,
                    "updated_at": due,
                }
                for i in range(len(addresses))
            ],
        )


def statuses(runtime: Runtime) -> dict[str, str]:
    with runtime.sessions.begin() as session:
        return dict(
            session.execute(
                select(Subscriber.email, Delivery.status).join(
                    Delivery, Delivery.subscriber_id == Subscriber.id
                )
            ).all()
        )


# ----------------------------------------------------------------------------- SMTP faults


class ScriptedHandler:
    """An SMTP server that misbehaves on purpose, by the recipient's local part:

    ok-*        accepts
    greylist-*  451 at RCPT on the first two attempts, then accepts
    hard-*      550 5.1.1 at RCPT (no such user)
    full-*      452 4.2.2 at RCPT forever (mailbox full)
    content-*   554 5.7.1 after DATA (content refused)
    drop-*      closes the connection in the middle of DATA on the first attempt
    stall-*     stalls at RCPT past the client's timeout on the first attempt
    random-*    421 at RCPT with probability 0.4 on each attempt (seeded)
    """

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.attempts: Counter[str] = Counter()
        self.accepted: list[tuple[str, str]] = []  # (recipient, Message-ID)
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, options):
        kind = address.split("-", 1)[0]
        with self.lock:
            self.attempts[address] += 1
            attempt = self.attempts[address]
            unlucky = self.rng.random() < 0.4
        if kind == "greylist" and attempt <= 2:
            return "451 4.7.1 Greylisted, try again later"
        if kind == "hard":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if kind == "full":
            return "452 4.2.2 Mailbox full"
        if kind == "random" and unlucky:
            return "421 4.3.2 Service temporarily unavailable"
        if kind == "stall" and attempt == 1:
            await asyncio.sleep(2.5)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        address = envelope.rcpt_tos[0]
        kind = address.split("-", 1)[0]
        if kind == "content":
            return "554 5.7.1 Message rejected as spam"
        if kind == "drop" and self.attempts[address] == 1:
            server.transport.close()  # the connection dies before the server says 250
            return "421 4.4.2 Connection dropped"
        message = email.message_from_bytes(envelope.original_content, policy=policy.default)
        with self.lock:
            self.accepted.append((address, message["Message-ID"]))
        return "250 2.0.0 Ok: queued"


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
def test_every_message_ends_as_its_script_dictates_and_none_arrives_twice(
    database_url, tmp_path, pipelining
):
    """Every fault, with a server that takes one command at a time and with one that takes
    them pipelined (the next message's commands ride with this one's content)."""
    kinds = ["ok", "greylist", "hard", "full", "content", "drop", "stall", "random"]
    addresses = [f"{kind}-{i}@example.org" for kind in kinds for i in range(3)]
    handler = (PipeliningHandler if pipelining else ScriptedHandler)(seed=11)
    clock = FixedClock(MONDAY)
    with LocalSMTPServer(handler) as server:
        # (A bounce rate this high would pause the campaign: that is tested on its own below.)
        settings = Settings(
            database_url=database_url,
            smtp_url=f"{server.url}?timeout=1",
            secret_key="k",
            smtp_pool_size=3,
            from_address="kap@center.example",
            bounce_pause_ratio=1.0,
        )
        with Runtime.open(settings, clock) as runtime:
            notice_campaign(runtime, tmp_path / "notice")
            bulk_enroll(runtime, addresses, clock.now())
            with Worker(runtime) as worker:
                run_for(worker, clock, timedelta(days=4))
            final = statuses(runtime)
            with runtime.sessions.begin() as session:
                suppressed = session.scalar(select(func.count()).select_from(Suppression))

    expected = {
        "ok": "sent",
        "greylist": "sent",
        "drop": "sent",
        "stall": "sent",
        "random": "sent",
        "hard": "bounced",
        "content": "failed",
        "full": "failed",
    }
    assert {a: final[a] for a in addresses} == {a: expected[a.split("-")[0]] for a in addresses}
    received = Counter(rcpt for rcpt, _ in handler.accepted)
    for address in addresses:
        should_arrive = expected[address.split("-")[0]] == "sent"
        assert received[address] == (1 if should_arrive else 0), address
    message_ids = [mid for _, mid in handler.accepted]
    assert len(message_ids) == len(set(message_ids)), "a message arrived twice"
    assert suppressed == 3, "only the hard bounces are suppressed (not content or full)"
    assert handler.attempts["full-0@example.org"] > 5, "retried with backoff for days"


def test_a_campaign_pauses_itself_when_hard_bounces_pass_the_threshold(database_url, tmp_path):
    handler = ScriptedHandler()
    clock = FixedClock(MONDAY)
    addresses = [f"ok-{i}@example.org" for i in range(40)] + [
        f"hard-{i}@example.org" for i in range(4)
    ]
    with LocalSMTPServer(handler) as server:
        settings = Settings(
            database_url=database_url,
            smtp_url=server.url,
            secret_key="k",
            from_address="kap@center.example",
        )
        with Runtime.open(settings, clock) as runtime:
            notice_campaign(runtime, tmp_path / "notice")
            bulk_enroll(runtime, addresses, clock.now())
            with Worker(runtime) as worker:
                worker.tick()
            with runtime.sessions.begin() as session:
                campaign = session.scalars(select(Campaign)).one()
            info = collect_status(runtime)
    assert campaign.status == "paused"
    # 3 of 50 (6%) already passes the 5% limit: the pause comes at the 3rd or the 4th bounce,
    # as the outcomes are recorded (the recorder writes whatever has arrived).
    assert re.search(r"\b[34] hard bounces in the last 50 sends", campaign.status_reason or "")
    assert info["campaigns"][0]["why"] == campaign.status_reason

    # Resumed by someone who looked: the bounces already seen do not pause it again.
    with (
        LocalSMTPServer(handler) as server,
        Runtime.open(
            Settings(database_url=database_url, smtp_url=server.url, secret_key="k"), clock
        ) as runtime,
    ):
        with runtime.sessions.begin() as session:
            set_status(session, "notice", "active")
        bulk_enroll(runtime, ["hard-new@example.org", "ok-new@example.org"], clock.now())
        with Worker(runtime) as worker:
            worker.tick()
        with runtime.sessions.begin() as session:
            assert session.scalars(select(Campaign.status)).one() == "active"
        assert statuses(runtime)["ok-new@example.org"] == "sent"


# ----------------------------------------------------------------------------- reports


def fill(sample: str, verp: str, recipient: str, message_id: str) -> bytes:
    text = (SAMPLES / sample).read_text(encoding="utf-8")
    return (
        text.replace("{VERP}", verp)
        .replace("{RCPT}", recipient)
        .replace("{MSGID}", message_id)
        .encode()
    )


@pytest.mark.parametrize(
    "sample, kind, status",
    [
        ("postfix-hard.eml", "hard", "5.1.1"),
        ("postfix-delayed.eml", "soft", "4.2.2"),
        ("exim-dsn.eml", "hard", "5.1.1"),
        ("exim-plain.eml", "hard", "5.0.0"),
        ("gmail-hard.eml", "hard", "5.1.1"),
        ("microsoft-hard.eml", "hard", "5.5.0"),
        ("policy-rejection.eml", "soft", "5.7.1"),
        ("arf-complaint.eml", "complaint", None),
    ],
)
def test_real_world_reports_are_read(sample, kind, status):
    report = parse_report(fill(sample, "7-abcdefghij", "gone@example.net", "m7@center.example"))
    assert (report.kind, report.status) == (kind, status)
    assert report.recipient == "gone@example.net"
    assert report.original_message_id == "m7@center.example"


@pytest.mark.parametrize(
    "sample, why",
    [
        ("malformed-report.eml", "without a message/delivery-status part"),
        ("truncated-report.eml", "no per-recipient fields"),
        ("human-reply.eml", "not a bounce or complaint report"),
        ("out-of-office.eml", "not a bounce or complaint report"),
    ],
)
def test_other_messages_are_not_taken_for_reports(sample, why):
    with pytest.raises(NotAReport, match=why):
        parse_report(fill(sample, "1-x", "a@example.org", "m@x"))
    with pytest.raises(NotAReport):
        parse_report(b"\x00\xff garbage \r\n\r\n")


def test_ingest_matches_by_verp_and_message_id_and_counts_nothing_twice(runtime, tmp_path, clock):
    settings = runtime.settings.replace(bounce_address="bounces@center.example.org")
    notice_campaign(runtime, tmp_path / "notice")
    people = [
        "hard@example.net",
        "soft@example.net",
        "complains@example.net",
        "plain@example.net",
        "policy@example.net",
    ]
    bulk_enroll(runtime, people, clock.now())
    with Worker(
        Runtime(settings, clock, runtime.engine, runtime.sessions, runtime.read_sessions)
    ) as worker:
        worker.tick()
    with runtime.sessions.begin() as session:
        secret = signing_key(session, settings.secret_key)
        rows = dict(
            session.execute(
                select(Subscriber.email, Delivery).join(
                    Delivery, Delivery.subscriber_id == Subscriber.id
                )
            ).all()
        )

    def verp(address: str) -> str:
        return (
            verp_address(settings.bounce_address, secret, rows[address].id)
            .split("+")[1]
            .split("@")[0]
        )

    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    box.add(fill("postfix-hard.eml", verp("hard@example.net"), "hard@example.net", "unknown@x"))
    box.add(
        fill("postfix-delayed.eml", "", "soft@example.net", rows["soft@example.net"].message_id)
    )
    box.add(
        fill(
            "arf-complaint.eml",
            verp("complains@example.net"),
            "complains@example.net",
            rows["complains@example.net"].message_id,
        )
    )
    box.add(fill("exim-plain.eml", "", "plain@example.net", rows["plain@example.net"].message_id))
    box.add(
        fill(
            "policy-rejection.eml",
            "1-forged",
            "policy@example.net",
            rows["policy@example.net"].message_id,
        )
    )
    box.add(fill("human-reply.eml", "", "", rows["hard@example.net"].message_id))
    box.add(fill("postfix-hard.eml", "999-forgedmacx", "x@example.net", "nobody@nowhere"))

    with runtime.sessions.begin() as session:
        first = ingest(session, tmp_path / "bounces", settings, secret, clock.now())
    assert (first.read, first.hard, first.soft, first.complaints) == (7, 2, 2, 1)
    assert len(first.unrecognised) == 1 and len(first.unmatched) == 1
    assert len(list(box.iterkeys())) == 7, "nothing is deleted"

    with runtime.sessions.begin() as session:
        again = ingest(session, tmp_path / "bounces", settings, secret, clock.now())
        # Every message read is recorded by its digest, the reply and the unmatched one too.
        assert again.already_seen == 7 and again.hard == again.soft == again.complaints == 0
        subscribers = {s.email: s for s in session.scalars(select(Subscriber))}
        assert subscribers["hard@example.net"].status == "bounced"
        assert subscribers["plain@example.net"].status == "bounced"
        assert subscribers["complains@example.net"].status == "complained"
        assert subscribers["soft@example.net"].status == "active"
        assert subscribers["soft@example.net"].soft_bounces == 1
        assert subscribers["policy@example.net"].status == "active", "policy: not suppressed"
        assert session.scalar(select(func.count()).select_from(Suppression)) == 3
        assert session.scalar(select(func.count()).select_from(BounceEvent)) == 5
        hard_delivery = session.get(Delivery, rows["hard@example.net"].id)
        assert hard_delivery.status == "bounced"
        # The suppression list names nobody, even though servers quote the address.
        details = " ".join(d or "" for d in session.scalars(select(Suppression.detail)))
        diagnostics = " ".join(d or "" for d in session.scalars(select(BounceEvent.diagnostic)))
        assert "hard@example.net" not in details + diagnostics
        assert "h**@example.net" in details
        complainer = subscribers["complains@example.net"]
        kinds = session.scalars(
            select(ConsentEvent.kind).where(ConsentEvent.subscriber_id == complainer.id)
        )
        assert "complained" in list(kinds), "a complaint withdraws consent, on the record"


def test_the_bounces_ingest_command_reports_and_leaves_unknown_mail(runtime, tmp_path):
    from click.testing import CliRunner

    from tidings.cli import cli

    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "reply.eml").write_bytes(fill("human-reply.eml", "", "", "m@x"))
    env = {
        "TIDINGS_DATABASE_URL": runtime.settings.database_url,
        "TIDINGS_SMTP_URL": runtime.settings.smtp_url,
    }
    result = CliRunner().invoke(cli, ["bounces", "ingest", str(folder)], env=env)
    assert result.exit_code == 0, result.output
    assert "read 1: 0 hard bounces" in result.output
    assert "not a report, left in place" in result.output
    assert (folder / "reply.eml").exists()


# ----------------------------------------------------------------------------- routing


def test_two_servers_share_the_traffic_by_weight_and_fail_over_when_one_dies(
    database_url, tmp_path
):
    heavy, light = ScriptedHandler(), ScriptedHandler()
    clock = FixedClock(MONDAY)
    addresses = [f"ok-{i}@example.org" for i in range(200)]
    with LocalSMTPServer(heavy) as a, LocalSMTPServer(light) as b:
        servers = f"{a.url}?name=big&weight=3, {b.url}?name=small&weight=1"
        settings = Settings(database_url=database_url, smtp_url=servers, secret_key="k")
        with Runtime.open(settings, clock) as runtime:
            notice_campaign(runtime, tmp_path / "notice")
            bulk_enroll(runtime, addresses[:100], clock.now())
            with Worker(runtime) as worker:
                worker.tick()
            assert len(heavy.accepted) + len(light.accepted) == 100
            assert 60 <= len(heavy.accepted) <= 90, "about three quarters to weight 3"

            dead = f"smtp://127.0.0.1:{free_port()}?name=dead&weight=5"
            runtime.settings = settings.replace(smtp_url=f"{dead}, {b.url}?name=small")
            bulk_enroll(runtime, addresses[100:], clock.now())
            with Worker(runtime) as worker:
                worker.tick()
                info = collect_status(runtime)
    assert len(light.accepted) + len(heavy.accepted) == 200, "nothing lost to the dead server"
    assert {s["name"]: s["state"] for s in info["servers"]} == {"dead": "down", "small": "up"}
    assert "refused" in (info["servers"][0]["last_error"] or "").lower() or "failed" in (
        info["servers"][0]["last_error"] or ""
    )


def test_smtp_url_lists_parse_caps_and_weights():
    servers = parse_smtp_servers(
        "smtp://a.example.org?per_minute=20&per_day=1000&weight=2, smtps://u:p@b.example.org"
    )
    assert [s.name for s in servers] == ["a.example.org:25", "b.example.org:465"]
    assert servers[0].limits == ((60, 20), (86400, 1000)) and servers[0].weight == 2
    with pytest.raises(Exception, match="per_hour"):
        parse_smtp_servers("smtp://a.example.org?per_hour=0")
    with pytest.raises(Exception, match="unknown parameter"):
        parse_smtp_servers("smtp://a.example.org?per_week=5")


# ----------------------------------------------------------------------------- processes


class CountingHandler:
    """Accepts everything; records Message-IDs; sets `reached` when `target` have arrived."""

    def __init__(self) -> None:
        self.message_ids: list[str] = []
        self.arrivals: list[float] = []  # wall-clock seconds
        self.lock = threading.Lock()
        self.target = 0
        self.reached = threading.Event()

    def wait_for(self, count: int, timeout: float = 120) -> bool:
        with self.lock:
            self.target = count
            if len(self.message_ids) >= count:
                return True
            self.reached.clear()
        return self.reached.wait(timeout)

    async def handle_DATA(self, server, session, envelope):
        message_id = email.message_from_bytes(envelope.original_content)["Message-ID"]
        with self.lock:
            self.message_ids.append(message_id)
            self.arrivals.append(time.time())
            if self.target and len(self.message_ids) >= self.target:
                self.reached.set()
        return "250 2.0.0 Ok"


def process_env(database_url: str, smtp_url: str, clock: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        TIDINGS_DATABASE_URL=database_url,
        TIDINGS_SMTP_URL=smtp_url,
        TIDINGS_SECRET_KEY=SECRET_KEY,
        TIDINGS_CLOCK=clock,
        TIDINGS_TICK_SECONDS="0.05",
        TIDINGS_SMTP_POOL_SIZE="4",
        TIDINGS_FROM_ADDRESS="kap@center.example",
        TIDINGS_POSTAL_ADDRESS="1 Main St",
        **extra,
    )  # no real send starts without one
    return env


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*TIDINGS, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def queued_deliveries(database_url: str, tmp_path: Path, count: int) -> Runtime:
    settings = Settings(database_url=database_url, secret_key=SECRET_KEY)
    runtime = Runtime.open(settings, FixedClock(MONDAY))
    notice_campaign(runtime, tmp_path / "notice")
    bulk_enroll(runtime, [f"r{i}@example.org" for i in range(count)], MONDAY)
    return runtime


def at(hours: int) -> str:
    return f"fixed:{(MONDAY + timedelta(hours=hours)).isoformat()}"


# What a SIGKILL may send again at the default settings: the answers not yet recorded (group
# commit, TIDINGS_UNRECORDED_MAX) and one message on the wire per SMTP connection.
REPEATABLE = Settings().unrecorded_max + 4  # TIDINGS_SMTP_POOL_SIZE=4 in process_env


def repeated(handler: CountingHandler) -> int:
    return sum(n - 1 for n in Counter(handler.message_ids).values())


def assert_all_sent_once_at_least(runtime: Runtime, handler: CountingHandler, count: int) -> None:
    with runtime.sessions.begin() as session:
        ids = set(session.scalars(select(Delivery.message_id)))
        counts = dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    assert counts == {"sent": count}
    assert {mid.strip("<>") for mid in handler.message_ids} == ids, "every one arrived"


def test_a_killed_worker_loses_nothing_and_repeats_at_most_a_few_dozen(database_url, tmp_path):
    runtime = queued_deliveries(database_url, tmp_path, 2000)
    handler = CountingHandler()
    kills = 0
    with LocalSMTPServer(handler) as server:
        for hours, kill_at in enumerate((317, 900, 1504)):
            # Each restart runs an hour later, when the dead worker's leases have expired.
            worker = start(["worker"], process_env(database_url, server.url, at(hours)))
            assert handler.wait_for(kill_at), worker.stderr.read() if worker.poll() else ""
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
            kills += 1
        done = subprocess.run(
            [*TIDINGS, "send-due"],
            capture_output=True,
            text=True,
            timeout=300,
            env=process_env(database_url, server.url, at(5)),
        )
        assert done.returncode == 0, done.stderr
    assert_all_sent_once_at_least(runtime, handler, 2000)
    runtime.close()
    assert repeated(handler) <= kills * REPEATABLE, f"{repeated(handler)} sent twice"


class SlowHandler(CountingHandler):
    """A server that takes 5 ms per message: a pass lasts long enough to interfere with."""

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.005)
        return await super().handle_DATA(server, session, envelope)


def test_senders_wait_while_outcomes_cannot_be_written(sqlite_url, tmp_path):
    """Group commit's promise, seen from the mail server: while the database refuses writes
    (another process holds SQLite's write lock), at most TIDINGS_UNRECORDED_MAX more messages
    go out, plus one per connection; once it is free, the rest go, each exactly once."""
    import sqlite3

    runtime = queued_deliveries(sqlite_url, tmp_path, 300)
    handler = SlowHandler()
    with LocalSMTPServer(handler) as server:
        other = runtime.settings.replace(smtp_url=server.url, smtp_pool_size=4)
        with Runtime.open(other, FixedClock(MONDAY)) as sending, Worker(sending) as worker:
            worker.plan()
            passed = threading.Thread(target=worker.dispatch)
            passed.start()
            assert handler.wait_for(40, timeout=30)
            blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=30)
            blocker.execute("BEGIN IMMEDIATE")  # waits for the recorder's group, then holds
            at_lock = len(handler.message_ids)
            time.sleep(1.0)  # the test's own pause: the engine is not waited for here
            while_locked = len(handler.message_ids) - at_lock
            blocker.rollback()
            blocker.close()
            passed.join(timeout=60)
    runtime.close()
    assert while_locked <= REPEATABLE, f"{while_locked} sent while nothing could be recorded"
    assert len(handler.message_ids) == len(set(handler.message_ids)) == 300


def test_killing_one_of_four_postgresql_workers_repeats_a_few_dozen(postgres_url, tmp_path):
    """The issue's measurement: SIGKILLs of one of four workers on PostgreSQL repeated 584 of
    4,000 emails with two chunks of 200 in flight; now each kill repeats at most a few dozen."""
    runtime = queued_deliveries(postgres_url, tmp_path, 4000)
    handler = CountingHandler()
    kills = 0
    with LocalSMTPServer(handler) as server:
        env = process_env(postgres_url, server.url, at(0))
        others = [start(["worker"], env) for _ in range(3)]
        try:
            for kill_at in (600, 1500, 2400):
                victim = start(["worker"], env)
                assert handler.wait_for(kill_at, timeout=240)
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=30)
                kills += 1
            # The survivors send the rest; what the dead ones held waits for its lease.
        finally:
            for w in others:
                w.send_signal(signal.SIGTERM)
            for w in others:
                w.communicate(timeout=60)
        done = subprocess.run(
            [*TIDINGS, "send-due"],
            capture_output=True,
            text=True,
            timeout=300,
            env=process_env(postgres_url, server.url, at(1)),
        )
        assert done.returncode == 0, done.stderr
    assert_all_sent_once_at_least(runtime, handler, 4000)
    runtime.close()
    assert repeated(handler) <= kills * REPEATABLE, f"{repeated(handler)} sent twice"


def test_sigterm_finishes_the_chunk_in_flight_and_nothing_arrives_twice(database_url, tmp_path):
    runtime = queued_deliveries(database_url, tmp_path, 2000)
    handler = CountingHandler()
    with LocalSMTPServer(handler) as server:
        worker = start(["worker"], process_env(database_url, server.url, at(0)))
        assert handler.wait_for(700)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert "stopped cleanly" in err
        with runtime.sessions.begin() as session:
            assert (
                session.scalar(
                    select(func.count()).select_from(Delivery).where(Delivery.status == "sending")
                )
                == 0
            )
        done = subprocess.run(
            [*TIDINGS, "send-due"],
            capture_output=True,
            text=True,
            timeout=300,
            env=process_env(database_url, server.url, at(0)),
        )
        assert done.returncode == 0, done.stderr
    runtime.close()
    assert len(handler.message_ids) == 2000
    assert len(set(handler.message_ids)) == 2000, "exactly once"


# Several dispatchers share one database on PostgreSQL only; SQLite allows one (see
# test_sqlite_allows_one_dispatcher_and_says_so).


def test_four_workers_on_postgresql_send_each_email_exactly_once(postgres_url, tmp_path):
    database_url = postgres_url
    runtime = queued_deliveries(database_url, tmp_path, 5000)
    handler = CountingHandler()
    with LocalSMTPServer(handler) as server:
        env = process_env(database_url, server.url, at(0), TIDINGS_BATCH_SIZE="100")
        workers = [start(["worker"], env) for _ in range(4)]
        try:
            assert handler.wait_for(5000, timeout=240)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            errors = [w.communicate(timeout=60)[1] for w in workers]
    with runtime.sessions.begin() as session:
        owners = {o.rsplit(":", 1)[0] for o in session.scalars(select(Delivery.lease_owner))}
    runtime.close()
    assert all(w.returncode == 0 for w in workers), errors
    assert len(handler.message_ids) == 5000 and len(set(handler.message_ids)) == 5000
    assert len(owners) >= 2, "the work was shared"


def test_a_per_minute_cap_is_never_exceeded_across_two_workers(postgres_url, tmp_path):
    database_url = postgres_url
    cap, factor, total = 10, 30.0, 35
    runtime = queued_deliveries(database_url, tmp_path, total)
    handler = CountingHandler()
    anchor = time.time() + 0.5
    clock_spec = f"scaled:{MONDAY.isoformat()}:{factor}@{anchor}"
    with LocalSMTPServer(handler) as server:
        env = process_env(
            database_url,
            f"{server.url}?name=relay&per_minute={cap}",
            clock_spec,
            TIDINGS_BATCH_SIZE="5",
            TIDINGS_SEND_CHUNK="4",
        )
        workers = [start(["worker"], env) for _ in range(2)]
        try:
            assert handler.wait_for(total, timeout=120)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.communicate(timeout=60)
    with runtime.sessions.begin() as session:
        owners = {o.rsplit(":", 1)[0] for o in session.scalars(select(Delivery.lease_owner))}
    runtime.close()
    # Arrival times on the shared simulated timeline.
    arrivals = sorted((t - anchor) * factor for t in handler.arrivals)
    for i, first in enumerate(arrivals):
        in_window = [t for t in arrivals[i:] if t < first + 60]
        assert len(in_window) <= cap, f"{len(in_window)} sends within a minute from {first:.0f}s"
    assert arrivals[-1] - arrivals[0] >= 60 * (total // cap - 1), "the cap slowed sending down"
    assert len(owners) == 2, "both workers sent"


def test_sqlite_allows_one_dispatcher_and_says_so(sqlite_url, tmp_path):
    database_url = sqlite_url
    runtime = queued_deliveries(database_url, tmp_path, 1)
    runtime.close()
    with LocalSMTPServer(CountingHandler()) as server:
        env = process_env(database_url, server.url, at(0))
        first = start(["worker"], env)
        try:
            assert server.handler.wait_for(1)
            second = subprocess.run(
                [*TIDINGS, "worker"], env=env, capture_output=True, text=True, timeout=60
            )
            overlapping_cron = subprocess.run(
                [*TIDINGS, "send-due"], env=env, capture_output=True, text=True, timeout=60
            )
        finally:
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=60)
    assert second.returncode == 1
    assert "SQLite allows one dispatcher" in second.stderr
    assert f"tidings process {first.pid}" in second.stderr
    assert overlapping_cron.returncode == 0
    assert "skipped" in overlapping_cron.stderr


class StderrWatcher(threading.Thread):
    """Reads a process's stderr as it comes; `seen(text)` waits until a line contains it."""

    def __init__(self, process: subprocess.Popen):
        super().__init__(daemon=True)
        self.process = process
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.start()

    def run(self) -> None:
        for line in self.process.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def seen(self, text: str, timeout: float = 60) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: any(text in line for line in self.lines), timeout)


def test_workers_ride_out_the_database_going_away(postgres_url, tmp_path):
    database_url = postgres_url
    runtime = queued_deliveries(database_url, tmp_path, 1500)
    database = database_url.rsplit("/", 1)[1]
    admin_url = database_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    handler = CountingHandler()
    with LocalSMTPServer(handler) as server:
        # Real time here, so that leases of work interrupted by the outage really expire.
        env = process_env(
            database_url, server.url, "", TIDINGS_LEASE_SECONDS="8", TIDINGS_BATCH_SIZE="50"
        )
        worker = start(["worker"], env)
        stderr = StderrWatcher(worker)
        try:
            assert handler.wait_for(300)
            with psycopg.connect(f"{admin_url}/postgres", autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                )
                # Down until the worker has noticed (and backed off), then back up.
                noticed = stderr.seen("database unreachable")
                admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            assert noticed, "".join(stderr.lines)
            assert handler.wait_for(1500, timeout=180), "".join(stderr.lines)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
            stderr.join(timeout=10)
    runtime.engine.dispose()
    with runtime.sessions.begin() as session:
        counts = dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    runtime.close()
    assert worker.returncode == 0, "".join(stderr.lines)
    assert counts == {"sent": 1500}
    assert len(handler.message_ids) == 1500 and len(set(handler.message_ids)) == 1500


class PipeliningHandler(ScriptedHandler):
    """The scripted server, advertising PIPELINING (RFC 2920) like Postfix does."""

    def __init__(self, seed: int = 7) -> None:
        super().__init__(seed)
        self.raw: list[bytes] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server, session, envelope):
        self.raw.append(envelope.original_content)
        return await super().handle_DATA(server, session, envelope)


def test_pipelined_transactions_keep_each_outcome_and_the_exact_bytes():
    from tidings.sending.smtp import SMTPTransport
    from tidings.sending.transports import OutgoingMessage

    handler = PipeliningHandler()
    body = b"Subject: dots\r\n\r\n.a line starting with a dot\r\n..two\r\nend\r\n"
    recipients = [
        "ok-1@example.org",
        "hard-1@example.org",
        "content-1@example.org",
        "ok-2@example.org",
    ]
    with LocalSMTPServer(handler) as server:
        transport = SMTPTransport(parse_smtp_servers(server.url)[0], pool_size=1)
        with transport:
            results = transport.send_messages(
                [
                    OutgoingMessage(i, "kap@center.example", r, body)
                    for i, r in enumerate(recipients)
                ]
            )
            assert transport._all[0].smtp.has_extn("pipelining")
    assert [r.outcome for r in results] == ["sent", "bounced", "failed", "sent"]
    assert handler.raw[0] == body, "dot-stuffing undone exactly by the server"
    assert [rcpt for rcpt, _ in handler.accepted] == ["ok-1@example.org", "ok-2@example.org"]
