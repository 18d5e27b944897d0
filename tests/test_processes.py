"""The commands as a user runs them, in their own processes: `tidings demo` and `tidings run`."""

from __future__ import annotations

import email
import mailbox
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from email import policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from tidings.campaigns.loading import load_campaign, resolve_campaign_dir
from tidings.clock import FixedClock, clock_from_spec
from tidings.config import load_settings
from tidings.db.models import Delivery
from tidings.ops.demo import DEMO_TIMEZONES
from tidings.runtime import Runtime
from tidings.sending.devsmtp import LocalSMTPServer, free_port
from tidings.subscribers.lifecycle import Consent, add_subscriber

# Real processes, browsers or external programs, seconds each: the full suite, not the fast tier.
pytestmark = pytest.mark.slow

TIDINGS = [sys.executable, "-m", "tidings"]


def test_demo_runs_the_whole_series_for_three_subscribers(tmp_path: Path):
    demo_dir = tmp_path / "demo"
    done = subprocess.run(
        [*TIDINGS, "demo", "--dir", str(demo_dir), "--subscribers", "3", "--day-seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "51 emails delivered" in done.stdout
    # It says which holidays the series crossed, and that nothing went out on them.
    for holiday in ("Christmas Day, US", "New Year's Day, US", "Christmas Day, GB"):
        assert re.search(rf"\d{{4}} \({re.escape(holiday)}\): 0 emails sent", done.stdout), (
            done.stdout
        )
    assert str(demo_dir / "outbox") in done.stdout
    assert (demo_dir / "tidings.db").is_file()

    messages = [
        email.message_from_bytes(m.as_bytes(), policy=policy.default)
        for m in mailbox.Maildir(demo_dir / "outbox", create=False)
    ]
    assert len(messages) == 51
    by_reader: dict[str, list] = {}
    for message in messages:
        by_reader.setdefault(message["To"].addresses[0].addr_spec, []).append(message)
    assert sorted(by_reader) == [f"reader{i}@demo.example" for i in (1, 2, 3)]
    for i, (address, mails) in enumerate(sorted(by_reader.items())):
        tz = ZoneInfo(DEMO_TIMEZONES[i])
        assert len(mails) == 17
        assert len({m["Subject"] for m in mails}) == 17
        mails.sort(key=lambda m: m["Date"].datetime)
        # The welcome goes at once (the readers confirm at 12:00 UTC: 07:00 in New York, 04:00
        # in Los Angeles), every other email inside the window.
        assert mails[0]["Subject"] == "Welcome, and what to expect"
        for m in mails[1:]:
            local = m["Date"].datetime.astimezone(tz)
            assert local.weekday() < 5 and 9 <= local.hour < 17, (address, local)
        for m in mails:
            assert m.get_body(("plain",)) is not None and m.get_body(("html",)) is not None
        _no_email_on_christmas_or_new_years_day(
            address, [m["Date"].datetime.astimezone(tz) for m in mails]
        )
    assert len({DEMO_TIMEZONES[i] for i in range(3)}) >= 2


def test_demo_serve_keeps_the_console_open_with_a_printed_login(tmp_path: Path):
    """`tidings demo --serve`: the series runs, then the console answers at the printed
    address; the printed login opens it and shows what was sent; Ctrl-C ends it cleanly."""
    port = free_port()
    process = subprocess.Popen(
        [
            *TIDINGS,
            *("demo", "--dir", str(tmp_path / "demo"), "--subscribers", "2"),
            *("--day-seconds", "0.3", "--serve", "--port", str(port)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:  # the demo prints as it goes; the login comes last
            lines.append(line)
            if line.strip().startswith("password "):
                break
        output = "".join(lines)
        assert f"Staff console: http://127.0.0.1:{port}/staff/" in output, output
        login = re.search(r"sign in as (\S+)", output).group(1)  # type: ignore[union-attr]
        password = re.search(r"password (\S+)", output).group(1)  # type: ignore[union-attr]

        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        base = f"http://127.0.0.1:{port}"
        form = urllib.parse.urlencode({"email": login, "password": password}).encode()
        with opener.open(f"{base}/staff/login", data=form, timeout=10) as response:
            assert response.url.endswith("/staff/"), response.url
            dashboard = response.read().decode()
        assert "Dashboard" in dashboard and "Sent per day" in dashboard
        with opener.open(f"{base}/staff/campaigns/kap-benefits", timeout=10) as response:
            page = response.read().decode()
        assert "34 emails sent" in page, page  # 2 readers x 17 emails
        wrong = urllib.parse.urlencode({"email": login, "password": "not it at all"}).encode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(f"{base}/staff/login", data=wrong, timeout=10)
        assert refused.value.code == 401
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""


def _no_email_on_christmas_or_new_years_day(address: str, sent: list) -> None:
    """The demo runs from 1 December across the holidays (US for New York and Los Angeles,
    GB for London: both keep 25 December and 1 January): none is sent on them, and the
    series goes on the working days around them."""
    days = [when.date() for when in sent]
    christmas = next(d for d in days if d.month == 12).replace(day=25)
    new_year = christmas.replace(year=christmas.year + 1, month=1, day=1)
    assert christmas not in days and new_year not in days, (address, days)
    before = max(d for d in days if d < christmas)
    after = min(d for d in days if d > christmas)
    assert (christmas - before).days <= 4 and (after - christmas).days <= 4, (address, days)
    assert any(d > new_year for d in days), (address, days)


class SignallingHandler:
    """Stores messages and sets `enough` once `count` have arrived."""

    def __init__(self, count: int):
        self.count = count
        self.messages: list[bytes] = []
        self.enough = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content)
        if len(self.messages) >= self.count:
            self.enough.set()
        return "250 2.0.0 Ok"


def test_run_sends_on_schedule_and_stops_cleanly_on_sigterm(tmp_path: Path, sqlite_template):
    db_path = tmp_path / "tidings.db"
    db_path.write_bytes(sqlite_template.read_bytes())
    handler = SignallingHandler(count=10)
    with LocalSMTPServer(handler) as server:
        env = {
            **os.environ,
            "TIDINGS_DATABASE_URL": f"sqlite:///{db_path}",
            "TIDINGS_SMTP_URL": server.url,
            "TIDINGS_SECRET_KEY": "processes-test-secret-key-of-32-bytes",
            "TIDINGS_POSTAL_ADDRESS": "1 Main St",
            # A simulated day every 2 real seconds, starting on a Monday morning.
            "TIDINGS_CLOCK": "scaled:2026-10-19T08:00:00+00:00:43200",
            "TIDINGS_TICK_SECONDS": "0.02",
        }
        settings = load_settings(env)
        start = clock_from_spec(settings.clock).start  # type: ignore[attr-defined]
        with (
            Runtime.open(settings, FixedClock(start)) as runtime,
            runtime.sessions.begin() as session,
        ):
            load_campaign(session, resolve_campaign_dir("kap-benefits"), settings, start)
            for i in range(4):
                add_subscriber(
                    session,
                    start,
                    f"r{i}@example.org",
                    Consent("cli", "test"),
                    timezone="UTC",
                    confirmed=True,
                )
        # `run` serves the web pages too: on a free port, so a busy 8000 cannot fail this.
        process = subprocess.Popen(
            [*TIDINGS, "run", "--port", str(free_port())],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert handler.enough.wait(timeout=120), "tidings run sent nothing"
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        received_count = len(handler.messages)
    assert process.returncode == 0, err
    assert "stopped cleanly" in err

    with Runtime.open(settings) as runtime, runtime.sessions.begin() as session:
        counts = dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    assert "sending" not in counts, "a claimed delivery was left behind"
    assert counts.get("sent", 0) == received_count, "every send recorded exactly once"
    ids = [email.message_from_bytes(m)["Message-ID"] for m in handler.messages]
    assert len(set(ids)) == len(ids)
