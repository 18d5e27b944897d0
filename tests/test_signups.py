"""Sign-ups under attack: confirmation bombing, the same work in every request, clients that
hold a whole IPv6 /64, rate limits shared by several processes (Redis), several workers
deciding the same requests.

Real app over HTTP (Flask's test client), real databases, real SMTP server, real Redis.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import decide_sign_ups
from sqlalchemy import func, select
from web_helpers import Visitor, api_post, app_with

from tidings.clock import FixedClock
from tidings.db.models import ConsentEvent, Delivery, SignUpRequest, Subscriber
from tidings.runtime import Runtime
from tidings.scheduler import Worker
from tidings.states import StopReason
from tidings.subscribers.apikeys import create_api_key
from tidings.subscribers.directory import find_subscriber
from tidings.subscribers.lifecycle import Consent, add_subscriber, stop, unsubscribe
from tidings.subscribers.signups import handle_requests
from tidings.subscribers.throttle import mailbox_of
from tidings.web import create_app

REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def app(runtime: Runtime) -> Any:
    return create_app(runtime)


@pytest.fixture
def engine_with(runtime: Runtime, clock: FixedClock) -> Iterator[Any]:
    """engine_with(**settings) -> (app, worker) on the test database with other settings."""
    opened: list[tuple[Runtime, Worker]] = []

    def make(**changes: Any) -> tuple[Any, Worker]:
        app, other = app_with(runtime, clock, **changes)
        worker = Worker(other)
        worker.open()
        opened.append((other, worker))
        return app, worker

    yield make
    for other, worker in opened:
        worker.close()
        other.close()


def count(runtime: Runtime, model: Any) -> int:
    with runtime.read_sessions.begin() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


# ----------------------------------------------------------------------------- mailboxes


@pytest.mark.parametrize(
    ("address", "mailbox"),
    [
        ("victim+1@gmail.com", "victim@gmail.com"),
        ("v.i.c.t.i.m+20@gmail.com", "victim@gmail.com"),
        ("V.Ictim@GoogleMail.com", "victim@gmail.com"),
        ("ann.lee+news@example.org", "ann.lee@example.org"),  # dots count elsewhere
        ("ann@example.org", "ann@example.org"),
    ],
)
def test_a_mailbox_is_counted_without_its_tag_and_gmail_dots(address, mailbox):
    assert mailbox_of(address) == mailbox


# ----------------------------------------------------------------------------- bombing


def test_twenty_sign_ups_for_one_mailbox_send_three_emails_and_look_the_same(
    engine_with, runtime, smtp_server
):
    app, worker = engine_with(subscribe_rate_limit="1000/minute")
    answers = set()
    addresses = []
    for n in range(20):
        address = f"victim+{n}@gmail.com" if n % 2 else f"v.i.c.t.i.m+{n}@gmail.com"
        ip = "198.51.100.1" if n % 2 else "203.0.113.1"
        response = Visitor(app, ip=ip).sign_up(address, decide=False)
        assert response.status_code == 200
        answers.add(response.get_data())
        addresses.append(address)
    assert len(answers) == 1  # the page a sender sees stays the same
    worker.tick()
    delivered = [
        m for m in smtp_server.handler.messages if mailbox_of(m[1][0]) == "victim@gmail.com"
    ]
    assert len(delivered) == 3  # TIDINGS_CONFIRM_MAILBOX_PER_DAY
    # Past the cap nothing is stored: no pending row waits for a confirmation never sent.
    assert count(runtime, Subscriber) == 3
    assert count(runtime, SignUpRequest) == 0


def test_confirmations_are_capped_per_domain_and_in_all_per_hour(
    engine_with, runtime, smtp_server, clock
):
    app, worker = engine_with(
        subscribe_rate_limit="1000/minute", confirm_domain_per_hour=4, confirm_total_per_hour=6
    )
    visitor = Visitor(app)
    for n in range(5):
        visitor.sign_up(f"a{n}@one.example", decide=False)
    for n in range(5):
        visitor.sign_up(f"b{n}@two.example", decide=False)
    worker.tick()
    to = [rcpt[0].rpartition("@")[2] for _, rcpt, _ in smtp_server.handler.messages]
    assert (to.count("one.example"), to.count("two.example")) == (4, 2)
    # An hour later there is room again; the addresses turned away can simply sign up again.
    clock.advance(minutes=61)
    visitor.sign_up("b4@two.example", decide=False)
    worker.tick()
    assert len(smtp_server.handler.messages) == 7


def test_operators_are_not_capped(engine_with, runtime, smtp_server):
    """The CLI and imports act for the center, not for strangers: no cap applies."""
    _, worker = engine_with(confirm_total_per_hour=1)
    with runtime.sessions.begin() as session:
        for n in range(3):
            add_subscriber(session, runtime.clock.now(), f"p{n}@example.org", Consent("cli"))
    worker.tick()
    assert len(smtp_server.handler.messages) == 3


# ----------------------------------------------------------------------------- same work


def test_every_sign_up_does_the_same_work_in_the_request(app, runtime, clock):
    """New, pending, active, unsubscribed or bounced: the request stores one sign-up request
    and touches nothing else, so its timing cannot tell them apart either."""
    with runtime.sessions.begin() as session:
        now = clock.now()
        add_subscriber(session, now, "pending@example.org", Consent("cli"))
        for email in ("active@example.org", "gone@example.org", "bounced@example.org"):
            add_subscriber(session, now, email, Consent("cli", "t"), confirmed=True)
        unsubscribe(session, find_subscriber(session, "gone@example.org"), "cli", now)
        stop(
            session,
            find_subscriber(session, "bounced@example.org"),
            StopReason.HARD_BOUNCE,
            "t",
            None,
            now,
        )
    tables = (Subscriber, ConsentEvent, Delivery)
    before = {model: count(runtime, model) for model in tables}
    for n, email in enumerate(("new", "pending", "active", "gone", "bounced")):
        assert Visitor(app).sign_up(f"{email}@example.org", decide=False).status_code == 200
        assert {model: count(runtime, model) for model in tables} == before
        assert count(runtime, SignUpRequest) == n + 1
    with runtime.sessions.begin() as session:
        kept = session.scalars(select(SignUpRequest).order_by(SignUpRequest.id)).all()
        assert [r.email for r in kept][-1] == "bounced@example.org"
        assert {r.source for r in kept} == {"contact-form"}
        assert all(r.consent_text_sha256 and len(r.consent_text_sha256) == 64 for r in kept)
    outcomes = decide_sign_ups(runtime)
    assert outcomes == {
        "created": 1,
        "throttled": 1,  # pending@ was mailed moments ago
        "already-active": 1,
        "comeback": 1,
        "refused": 1,
    }
    assert count(runtime, SignUpRequest) == 0


def test_the_api_stores_a_request_too(app, runtime):
    with runtime.sessions.begin() as session:
        _, key = create_api_key(session, "contact-form", runtime.clock.now())
    body = {"email": "ann@example.org", "consent_text": "Yes, email me."}
    assert api_post(app, body, key).status_code == 202
    assert (count(runtime, SignUpRequest), count(runtime, Subscriber)) == (1, 0)
    decide_sign_ups(runtime)
    assert (count(runtime, SignUpRequest), count(runtime, Subscriber)) == (0, 1)


# ----------------------------------------------------------------------------- rate limits


def test_ipv6_clients_are_limited_by_their_64(engine_with):
    app, _ = engine_with(subscribe_rate_limit="2/minute")
    same_64 = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:9"]
    statuses = [
        Visitor(app, ip=ip).sign_up(f"p{i}@example.org").status_code for i, ip in enumerate(same_64)
    ]
    assert statuses == [200, 200, 429]
    assert Visitor(app, ip="2001:db8:1:3::1").sign_up("q@example.org").status_code == 200
    assert Visitor(app, ip="::ffff:192.0.2.50").sign_up("r@example.org").status_code == 200


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # Redis runs on this machine (.ci/deps starts it): a failure here is real
    client.flushdb()
    return REDIS_URL


def test_with_redis_the_rate_limits_are_shared_by_every_process(engine_with, redis_url):
    client_ip = f"198.51.100.{uuid.uuid4().int % 200 + 1}"
    first, _ = engine_with(subscribe_rate_limit="2/minute", rate_limit_storage=redis_url)
    second, _ = engine_with(subscribe_rate_limit="2/minute", rate_limit_storage=redis_url)
    assert Visitor(first, ip=client_ip).sign_up("a@example.org").status_code == 200
    assert Visitor(second, ip=client_ip).sign_up("b@example.org").status_code == 200
    assert Visitor(first, ip=client_ip).sign_up("c@example.org").status_code == 429
    assert Visitor(second, ip=client_ip).sign_up("d@example.org").status_code == 429
    assert redis.Redis.from_url(redis_url).keys("*")  # counted in Redis, not in the process


def test_without_redis_each_process_counts_its_own(engine_with):
    first, _ = engine_with(subscribe_rate_limit="1/minute")
    second, _ = engine_with(subscribe_rate_limit="1/minute")
    assert Visitor(first).sign_up("a@example.org").status_code == 200
    assert Visitor(second).sign_up("b@example.org").status_code == 200


# ----------------------------------------------------------------------------- workers


@pytest.mark.slow  # PostgreSQL only, several workers: 15 s
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_several_workers_decide_each_request_exactly_once(runtime, settings, clock):
    with runtime.sessions.begin() as session:
        for n in range(600):
            session.add(
                SignUpRequest(
                    email=f"p{n}@example{n % 50}.org",
                    name="",
                    timezone="UTC",
                    source="api",
                    received_at=clock.now(),
                )
            )
    results: list[Any] = []

    def work() -> None:
        with Runtime.open(settings, clock) as other:
            while True:
                decided = handle_requests(other.sessions, other.clock, other.settings, "k")
                results.append(decided.outcomes)
                if not decided.more:
                    return

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(sum(r.values()) for r in results) == 600
    assert sum(r["created"] for r in results) == 600
    assert count(runtime, Subscriber) == 600
    with runtime.read_sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 600
    assert count(runtime, SignUpRequest) == 0
