"""Mail that comes back, as the real world sends it: the classifier on realistic messages
(a mailto: unsubscribe from Gmail and Apple Mail, out-of-office answers, a person's reply, DSN
and ARF reports, a qmail bounce only flufl.bounce reads), and acting on them through every
path: files (`tidings inbox ingest`, `bounces ingest`), a real IMAP server (Dovecot, with a
private CA), the SMTP listener (a real smtplib client), and the worker's schedule."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import mailbox
import os
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import MONDAY_9, SECRET_KEY, Tidings
from conftest import received
from imap_server import DOVECOT, PASSWORD, Dovecot
from sqlalchemy import select

from tidings.db.models import ConsentEvent, Delivery, InboundMessage, Subscriber, Suppression
from tidings.inbound.classify import classify
from tidings.inbound.listener import NOBODY_READS, InboundServer
from tidings.runtime import Runtime
from tidings.scheduler import Worker
from tidings.sending.devsmtp import free_port
from tidings.subscribers.tokens import verp_address

INBOUND = Path(__file__).parent / "data" / "inbound"
BOUNCES = Path(__file__).parent / "data" / "bounces"
BOUNCE_ADDRESS = "bounces@center.example.org"
A_KEY = "AbCdEfGhIjKlMnOpQrSt_-"


def fill(path: Path, key: str = "", verp: str = "", rcpt: str = "", msgid: str = "") -> bytes:
    text = path.read_text(encoding="utf-8")
    for name, value in (("KEY", key), ("VERP", verp), ("RCPT", rcpt), ("MSGID", msgid)):
        text = text.replace("{" + name + "}", value)
    return text.encode()


@pytest.fixture
def dovecot():
    if not os.path.exists(DOVECOT):
        if os.environ.get("CI") == "true":
            pytest.fail("Dovecot is required under CI=true: run .ci/deps (dovecot-imapd)")
        pytest.skip("Dovecot is not installed here: run .ci/deps (apt-get install dovecot-imapd)")
    with Dovecot() as server:
        yield server


# ----------------------------------------------------------------------------- classifier


@pytest.mark.parametrize(
    "folder, sample, kind, why",
    [
        (INBOUND, "unsubscribe-gmail.eml", "unsubscribe", "List-Unsubscribe mailto:"),
        (INBOUND, "unsubscribe-apple-mail.eml", "unsubscribe", "List-Unsubscribe mailto:"),
        (INBOUND, "out-of-office-exchange.eml", "automatic", "Auto-Submitted: auto-replied"),
        (INBOUND, "vacation-autoresponder.eml", "automatic", "Precedence: bulk"),
        (INBOUND, "out-of-office-webmail.eml", "automatic", "out-of-office subject"),
        (INBOUND, "relayed-dsn.eml", "automatic", "Auto-Submitted"),
        (INBOUND, "human-reply.eml", "other", "a person's message"),
        (INBOUND, "qmail-failure.eml", "bounce", "flufl.bounce"),
        (BOUNCES, "postfix-hard.eml", "bounce", "delivery status report"),
        (BOUNCES, "gmail-hard.eml", "bounce", "delivery status report"),
        (BOUNCES, "arf-complaint.eml", "complaint", "RFC 5965"),
    ],
)
def test_the_classifier_tells_each_kind_of_mail_apart(folder, sample, kind, why):
    raw = fill(folder / sample, A_KEY, "7-abcdefghij", "gone@example.net", "m7@center.example")
    inbound = classify(raw)
    assert (inbound.kind, why in inbound.why) == (kind, True), inbound.why
    assert "gone@example.net" not in inbound.why and "Welcome" not in inbound.why
    if kind == "unsubscribe":
        assert inbound.unsubscribe_key == A_KEY
    if kind in ("bounce", "complaint"):
        assert inbound.report is not None
        assert inbound.report.recipients == ("gone@example.net",)
        assert inbound.report.original_message_id == "m7@center.example"
    if sample in ("human-reply.eml", "out-of-office-exchange.eml"):
        assert inbound.replying_to == ("m7@center.example",), "room for replies (issue 16)"


def test_a_bounce_only_flufl_bounce_reads_is_hard_and_names_the_email():
    raw = fill(INBOUND / "qmail-failure.eml", "", "7-abcdefghij", "gone@example.net", "m7@x.org")
    report = classify(raw).report
    assert report is not None
    assert (report.kind, report.recipient, report.original_message_id) == (
        "hard",
        "gone@example.net",
        "m7@x.org",
    )
    assert "bounces+7-abcdefghij@center.example.org" in report.returned_to


def test_a_dsn_names_the_address_we_sent_to_not_the_one_it_was_forwarded_to():
    raw = fill(BOUNCES / "postfix-hard.eml", "", "1-x", "ann@example.org", "m@x").replace(
        b"Final-Recipient: rfc822; ann@example.org",
        b"Original-Recipient: rfc822;ann@example.org\nFinal-Recipient: rfc822; ann@mbox.internal",
    )
    assert b"ann@mbox.internal" in raw
    assert classify(raw).report.recipient == "ann@example.org"


# ----------------------------------------------------------------------------- acting


def subscribers_with_a_welcome(tidings: Tidings, *addresses: str) -> dict[str, Subscriber]:
    """Confirmed subscribers whose welcome email was sent (Monday 09:00)."""
    for address in addresses:
        tidings.ok("subscribers", "add", address, "--confirmed", "--evidence", "form")
    tidings.at(MONDAY_9)
    tidings.ok("send-due")
    with tidings.session() as session:
        found = {s.email: s for s in session.scalars(select(Subscriber))}
        session.expunge_all()
    return found


def welcome_of(tidings: Tidings, subscriber: Subscriber) -> Delivery:
    with tidings.session() as session:
        delivery = session.scalars(
            select(Delivery).where(
                Delivery.subscriber_id == subscriber.id, Delivery.campaign_id.is_not(None)
            )
        ).one()
        session.expunge(delivery)
    return delivery


def inbound_rows(tidings: Tidings) -> list[tuple]:
    with tidings.session() as session:
        return [
            (m.digest, m.source, m.kind, m.subscriber_id, m.delivery_id)
            for m in session.scalars(select(InboundMessage).order_by(InboundMessage.id))
        ]


def test_an_unsubscribe_request_by_email_unsubscribes_at_once(tidings_kap, tmp_path):
    tidings = tidings_kap
    people = subscribers_with_a_welcome(tidings, "ann@example.org", "bob@example.org")
    ann, bob = people["ann@example.org"], people["bob@example.org"]
    welcome = welcome_of(tidings, ann)
    messages = [
        fill(INBOUND / "unsubscribe-gmail.eml", key=ann.key),
        fill(INBOUND / "unsubscribe-apple-mail.eml", key="NotAnybodysKey123"),
        fill(INBOUND / "human-reply.eml", msgid=welcome.message_id),
        fill(INBOUND / "out-of-office-exchange.eml", msgid=welcome.message_id),
    ]
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for raw in messages:
        box.add(raw)

    result = tidings.ok("inbox", "ingest", str(tmp_path / "Maildir"))
    assert result.stdout.splitlines()[0] == (
        "read 4: 0 hard bounces, 0 soft bounces, 0 complaints, 1 unsubscribed by email, "
        "1 automatic, 1 for a person, 1 unmatched, 0 seen before"
    )
    assert "unsubscribe request with a key that is nobody's" in result.stderr
    assert "not a report, left in place" in result.stderr
    assert "ann@example.org" not in result.output, "addresses are masked"
    with tidings.session() as session:
        assert session.get(Subscriber, ann.id).status == "unsubscribed"
        assert session.get(Subscriber, bob.id).status == "active"
        kinds = session.execute(
            select(ConsentEvent.kind, ConsentEvent.source).where(
                ConsentEvent.subscriber_id == ann.id
            )
        ).all()
        assert ("unsubscribed", "email") in kinds
        assert session.scalar(select(Suppression.reason)) == "unsubscribe"
        statuses = session.scalars(select(Delivery.status).where(Delivery.subscriber_id == ann.id))
        assert "queued" not in list(statuses), "nothing else waits for her"
    digests = {hashlib.sha256(box.get_bytes(key)).hexdigest() for key in box.iterkeys()}
    rows = inbound_rows(tidings)
    assert {r[0] for r in rows} == digests
    assert sorted(((r[1], r[2], r[3]) for r in rows), key=str) == sorted(
        [
            ("maildir", "unsubscribe", ann.id),
            ("maildir", "unsubscribe", None),
            ("maildir", "other", ann.id),
            ("maildir", "automatic", ann.id),
        ],
        key=str,
    )
    assert len(list(box.iterkeys())) == 4, "the files are only read"

    again = tidings.ok("inbox", "ingest", str(tmp_path / "Maildir"))
    alias = tidings.ok("bounces", "ingest", str(tmp_path / "Maildir"))
    assert "1 unsubscribed" not in again.stdout and "4 seen before" in again.stdout
    assert alias.output == again.output, "`bounces ingest` is the same command"
    assert len(inbound_rows(tidings)) == 4, "read twice, counted once"


def test_a_bounce_only_flufl_bounce_reads_stops_the_address_its_verp_names(tidings_kap, tmp_path):
    tidings = tidings_kap
    tidings.env["TIDINGS_BOUNCE_ADDRESS"] = BOUNCE_ADDRESS
    people = subscribers_with_a_welcome(tidings, "ann@example.org", "bob@example.org")
    ann_welcome = welcome_of(tidings, people["ann@example.org"])
    verp = verp_address(BOUNCE_ADDRESS, SECRET_KEY, ann_welcome.id).split("+")[1].split("@")[0]
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "ann.eml").write_bytes(
        fill(INBOUND / "qmail-failure.eml", verp=verp, rcpt="ann@example.org", msgid="x@y")
    )
    forged = f"{welcome_of(tidings, people['bob@example.org']).id}-forgedmacx"
    (folder / "bob.eml").write_bytes(
        fill(INBOUND / "qmail-failure.eml", verp=forged, rcpt="bob@example.org", msgid="x@z")
    )
    result = tidings.ok("inbox", "ingest", str(folder))
    assert result.stdout.startswith("read 2: 1 hard bounces,")
    assert "unmatched, left in place" in result.stderr and "matches no delivery" in result.stderr
    with tidings.session() as session:
        statuses = dict(session.execute(select(Subscriber.email, Subscriber.status)).all())
        assert session.get(Delivery, ann_welcome.id).status == "bounced"
    assert statuses == {"ann@example.org": "bounced", "bob@example.org": "active"}


def test_inbox_ingest_reads_an_mbox_and_a_single_eml(tidings_kap, tmp_path):
    tidings = tidings_kap
    ann = subscribers_with_a_welcome(tidings, "ann@example.org")["ann@example.org"]
    box = mailbox.mbox(tmp_path / "inbox.mbox")
    box.add(fill(INBOUND / "vacation-autoresponder.eml"))
    box.add(fill(INBOUND / "unsubscribe-gmail.eml", key=ann.key))
    box.close()
    result = tidings.ok("inbox", "ingest", str(tmp_path / "inbox.mbox"))
    assert result.stdout.startswith("read 2: 0 hard bounces, 0 soft bounces, 0 complaints, 1 ")
    (tmp_path / "one.eml").write_bytes(fill(INBOUND / "out-of-office-webmail.eml"))
    assert "1 automatic" in tidings.ok("inbox", "ingest", str(tmp_path / "one.eml")).stdout
    assert sorted(r[1] for r in inbound_rows(tidings)) == ["file", "mbox", "mbox"]
    with tidings.session() as session:
        assert session.get(Subscriber, ann.id).status == "unsubscribed"


# ----------------------------------------------------------------------------- IMAP


@pytest.mark.slow
def test_inbox_fetch_acts_moves_what_it_handled_and_leaves_replies_unread(tidings_kap, dovecot):
    tidings = tidings_kap
    people = subscribers_with_a_welcome(tidings, "ann@example.org", "bob@example.org")
    ann, bob = people["ann@example.org"], people["bob@example.org"]
    bob_welcome = welcome_of(tidings, bob)
    dovecot.append(
        fill(INBOUND / "unsubscribe-gmail.eml", key=ann.key),
        fill(BOUNCES / "postfix-hard.eml", rcpt=bob.email, msgid=bob_welcome.message_id),
        fill(INBOUND / "out-of-office-exchange.eml", msgid=bob_welcome.message_id),
        fill(INBOUND / "human-reply.eml", msgid=bob_welcome.message_id),
        fill(BOUNCES / "postfix-hard.eml", rcpt="someone@example.net", msgid="not@ours"),
    )
    result = tidings.ok("inbox", "fetch", dovecot.url)
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "read 5: 1 hard bounces, 0 soft bounces, 0 complaints, 1 unsubscribed by email, "
        "1 automatic, 1 for a person, 1 unmatched, 0 seen before"
    )
    assert lines[1] == (
        f"moved 3 to tidings-handled, left 2 in imaps://bounces@127.0.0.1:{dovecot.port}/INBOX"
    )
    assert PASSWORD not in result.output
    with tidings.session() as session:
        assert session.get(Subscriber, ann.id).status == "unsubscribed"
        assert session.get(Subscriber, bob.id).status == "bounced"
        assert {m.source for m in session.scalars(select(InboundMessage))} == {"imap"}

    inbox = dovecot.folder("INBOX")
    assert len(inbox) == 2
    for flags, _ in inbox.values():
        assert b"\\Seen" not in flags, "left for a person: still unread"
        assert b"TidingsRead" in flags
    assert any(b"Could someone call me" in raw for _, raw in inbox.values())
    assert len(dovecot.folder("tidings-handled")) == 3, "moved, never deleted"

    dovecot.append(fill(INBOUND / "vacation-autoresponder.eml"))
    again = tidings.ok("inbox", "fetch", dovecot.url)
    assert again.stdout.startswith("read 1: ") and "moved 1 to tidings-handled, left 0" in (
        again.stdout
    ), "what was left for a person is not read again"


@pytest.mark.slow
def test_inbox_fetch_verifies_the_certificate_and_says_what_failed(tidings_sqlite, dovecot):
    tidings = tidings_sqlite
    untrusted = dovecot.url.split("?")[0]
    output = tidings.fails("inbox", "fetch", untrusted)
    assert "certificate is not trusted" in output and "?cafile=" in output
    wrong = dovecot.url.replace(PASSWORD, "wrong-password")
    output = tidings.fails("inbox", "fetch", wrong)
    assert "Authentication failed" in output and "wrong-password" not in output
    output = tidings.fails("inbox", "fetch", dovecot.url.replace("/INBOX", "/Nowhere"))
    assert "Nowhere" in output
    output = tidings.fails("inbox", "fetch", f"imap://u:p@127.0.0.1:{dovecot.port}/")
    assert "use imaps://" in output and "Traceback" not in output
    output = tidings.fails("inbox", "fetch", code=2)
    assert "give the mailbox" in output
    output = tidings.fails("inbox", "fetch", TIDINGS_INBOX_URL=untrusted)
    assert "certificate is not trusted" in output, "the URL may come from TIDINGS_INBOX_URL"


# ----------------------------------------------------------------------------- schedule


@pytest.fixture
def inbox_worker(runtime, kap):
    """A worker on the test's database and fixed clock, with TIDINGS_INBOX_URL to be set."""

    def make(url: str) -> Worker:
        settings = runtime.settings.replace(inbox_url=url, inbox_fetch_seconds=300)
        return Worker(dataclasses.replace(runtime, settings=settings))

    return make


def test_a_failing_fetch_is_logged_retried_and_never_stops_sending(
    inbox_worker, runtime, clock, smtp_server, caplog
):
    from tidings.subscribers.lifecycle import Consent, add_subscriber

    with runtime.sessions.begin() as session:
        add_subscriber(session, clock.now(), "ann@example.org", Consent("cli", "t"), confirmed=True)
    clock.set(MONDAY_9)
    closed = f"imaps://u:p@127.0.0.1:{free_port()}/INBOX"
    with inbox_worker(closed) as worker, caplog.at_level(logging.WARNING, "tidings.scheduler"):
        assert worker.fetch_inbox() is None
        worker.tick()
        assert len(received(smtp_server)) == 1, "the welcome went out all the same"
        clock.advance(seconds=59)
        assert worker.fetch_inbox() is None
        clock.advance(seconds=1)
        assert worker.fetch_inbox() is None
    failures = [r for r in caplog.records if "reading the inbox failed" in r.getMessage()]
    assert len(failures) == 2, "tried at once, then again a minute later, not in between"
    assert "cannot connect" in failures[0].getMessage() and ":p@" not in failures[0].getMessage()


@pytest.mark.slow
def test_the_worker_reads_the_inbox_every_inbox_fetch_seconds(inbox_worker, clock, dovecot):
    dovecot.append(fill(INBOUND / "vacation-autoresponder.eml"))
    with inbox_worker(dovecot.url) as worker:
        assert worker.fetch_inbox().read == 1
        dovecot.append(fill(INBOUND / "out-of-office-webmail.eml"))
        clock.advance(seconds=299)
        assert worker.fetch_inbox() is None, "not due yet"
        clock.advance(seconds=1)
        assert worker.fetch_inbox().moved == 1

        dovecot.append(fill(INBOUND / "out-of-office-exchange.eml", msgid="m@x"))
        worker.start(tick_seconds=0.05)  # what `tidings run` and `tidings worker` do
        try:
            clock.advance(seconds=300)
            deadline = time.monotonic() + 20
            while len(dovecot.folder("tidings-handled")) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)  # a real scheduler thread and a real server: poll the outcome
        finally:
            worker.shutdown()
    assert len(dovecot.folder("tidings-handled")) == 3
    assert dovecot.folder("INBOX") == {}


# ----------------------------------------------------------------------------- SMTP listener


@pytest.fixture
def listener(runtime, kap, tmp_path):
    settings = runtime.settings.replace(
        bounce_address=BOUNCE_ADDRESS, unsubscribe_address="unsubscribe@center.example.org"
    )
    rt = dataclasses.replace(runtime, settings=settings)
    servers = []

    def start(keep: Path | None = None) -> InboundServer:
        server = InboundServer(rt, "127.0.0.1", free_port(), keep).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def active(runtime: Runtime, address: str) -> Subscriber:
    from tidings.subscribers.lifecycle import Consent, add_subscriber

    with runtime.sessions.begin() as session:
        subscriber = add_subscriber(
            session, runtime.clock.now(), address, Consent("cli", "t"), confirmed=True
        )
        session.flush()
        session.expunge(subscriber)
    return subscriber


def test_the_smtp_listener_takes_only_our_addresses_and_acts_before_it_answers(
    listener, runtime, tmp_path
):
    ann = active(runtime, "ann@example.org")
    server = listener()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo("mx.example.net")
        client.mail("someone@example.net")
        assert client.rcpt("victim@gmail.com")[0] == 550, "not an open relay"
        assert client.rcpt("kap@center.example.org")[0] == 550, "only the configured mailboxes"
        assert client.rcpt("unsubscribe@center.example.org")[0] == 250
        assert client.rcpt("Bounces+12-abc@Center.Example.Org")[0] == 250, "VERP forms"
        code, reply = client.data(fill(INBOUND / "unsubscribe-gmail.eml", key=ann.key))
        assert code == 250, reply
    with runtime.sessions.begin() as session:
        assert session.get(Subscriber, ann.id).status == "unsubscribed"
        (row,) = session.scalars(select(InboundMessage))
        assert (row.source, row.kind, row.subscriber_id) == ("smtp", "unsubscribe", ann.id)

    reply = fill(INBOUND / "human-reply.eml", msgid="m@x")
    with (
        smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        client.sendmail("ann@example.org", ["unsubscribe@center.example.org"], reply)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.decode() == NOBODY_READS[4:], "its sender learns"
    with runtime.sessions.begin() as session:
        assert len(session.scalars(select(InboundMessage)).all()) == 1, "refused: not recorded"

    keeping = listener(keep=tmp_path / "replies")
    with smtplib.SMTP("127.0.0.1", keeping.port, timeout=10) as client:
        client.sendmail("ann@example.org", ["unsubscribe@center.example.org"], reply)
    (stored,) = (tmp_path / "replies" / "new").iterdir()
    assert stored.read_bytes().replace(b"\r\n", b"\n").rstrip() == reply.rstrip()
    assert stored.stat().st_mode & 0o777 == 0o600, "a person's message: private"


def test_the_smtp_listener_acts_on_a_bounce_to_its_verp_address(listener, runtime, clock):
    ann = active(runtime, "ann@example.org")
    clock.set(MONDAY_9)
    with Worker(runtime) as worker:
        worker.tick()  # the welcome
    with runtime.sessions.begin() as session:
        welcome = session.scalars(select(Delivery).where(Delivery.subscriber_id == ann.id)).one()
        verp = verp_address(BOUNCE_ADDRESS, runtime.secret(), welcome.id)
    raw = fill(INBOUND / "qmail-failure.eml", verp=verp.split("+")[1].split("@")[0], rcpt=ann.email)
    server = listener()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.sendmail("", [verp], raw)  # bounces come from the null sender
        client.sendmail("", [verp], raw)  # and the same one may come twice
    with runtime.sessions.begin() as session:
        assert session.get(Subscriber, ann.id).status == "bounced"
        assert len(session.scalars(select(InboundMessage)).all()) == 1


@pytest.mark.slow  # a real process that waits for its port: 5 s
def test_inbox_serve_on_a_busy_port_says_so(tidings_sqlite):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        output = tidings_sqlite.fails("inbox", "serve", "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}: " in output


@pytest.mark.slow
def test_tidings_inbox_serve_listens_until_sigterm(tidings_kap):
    tidings = tidings_kap
    people = subscribers_with_a_welcome(tidings, "ann@example.org")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update({k: v for k, v in tidings.env.items() if v is not None})
    process = subprocess.Popen(
        [sys.executable, "-m", "tidings", "inbox", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "taking mail for kap@center.example.org" in process.stderr.readline()
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            raw = fill(INBOUND / "unsubscribe-gmail.eml", key=people["ann@example.org"].key)
            client.sendmail("ann.example@gmail.com", ["kap@center.example.org"], raw)
        process.terminate()
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and "stopped cleanly" in err
    with tidings.session() as session:
        assert session.scalar(select(Subscriber.status)) == "unsubscribed"
