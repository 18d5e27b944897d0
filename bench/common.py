"""Shared pieces of the benchmarks: Postfix's smtp-sink and smtp-source (started and stopped
by PID), throwaway databases, bulk data, and the result line every script prints.

Each bench script prints one JSON line per figure on stdout:
    {"figure": ..., "tidings": ..., "baseline": ..., "ratio": ..., "target": ..., "pass": ...}
`bench/run` collects them into a table.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select  # noqa: E402

from tidings.campaigns.loading import load_campaign  # noqa: E402
from tidings.clock import FixedClock  # noqa: E402
from tidings.config import Settings  # noqa: E402
from tidings.db import upgrade  # noqa: E402
from tidings.db.models import Campaign, Enrollment, Subscriber  # noqa: E402
from tidings.runtime import Runtime  # noqa: E402

MONDAY = datetime(2026, 10, 19, 9, 0, tzinfo=UTC)
POSTGRES_ADMIN = os.environ.get("TIDINGS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
QUICK = "--quick" in sys.argv
# `worker`, `run` and `send-due` refuse a TIDINGS_SECRET_KEY under 32 bytes.
BENCH_SECRET_KEY = "bench-secret-key-of-at-least-32-bytes"


def report(
    figure: str,
    tidings: float,
    baseline: float | None,
    ratio: float | None,
    target: str,
    passed: bool,
    unit: str = "",
    note: str = "",
) -> None:
    print(
        json.dumps(
            {
                "figure": figure,
                "tidings": tidings,
                "baseline": baseline,
                "ratio": ratio,
                "target": target,
                "pass": passed,
                "unit": unit,
                "note": note,
            }
        ),
        flush=True,
    )


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "system": platform.platform(),
    }


# ----------------------------------------------------------------------------- Postfix tools


def ensure_postfix_tools() -> None:
    """Install Debian's postfix for smtp-sink/smtp-source, without starting its daemon."""
    if shutil.which("smtp-sink") or Path("/usr/sbin/smtp-sink").exists():
        return
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")  # tell invoke-rc.d not to start services
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["debconf-set-selections"],
            input=b"postfix postfix/main_mailer_type select No configuration\n",
            check=False,
        )
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "postfix"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if created:
            policy.unlink(missing_ok=True)
    subprocess.run(
        ["postfix", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )


def tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def smtp_sink(delay: float = 0) -> Iterator[str]:
    """smtp-sink on a free loopback port; yields its smtp:// URL; stopped by PID."""
    ensure_postfix_tools()
    port = free_port()
    args = [tool("smtp-sink"), "-u", "nobody"]
    if delay:
        args += ["-w", str(int(delay))]
    process = subprocess.Popen(
        [*args, f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("smtp-sink did not start")
            time.sleep(0.05)
        yield f"smtp://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def smtp_source_rate(url: str, sessions: int, messages: int, size: int) -> float:
    """Messages per second smtp-source pushes into `url` with `sessions` connections."""
    host_port = url.removeprefix("smtp://")
    started = time.perf_counter()
    subprocess.run(
        [
            tool("smtp-source"),
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-l",
            str(size),
            "-f",
            "bench@center.example",
            "-t",
            "reader@example.org",
            host_port,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return messages / (time.perf_counter() - started)


# ----------------------------------------------------------------------------- databases


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    """A migrated, throwaway database ("sqlite" or "postgresql"); removed afterwards."""
    if kind == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="tidings-bench-"))
        url = f"sqlite:///{folder / 'bench.db'}"
        try:
            upgrade(url)
            yield url
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    import psycopg

    name = f"tidings_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES_ADMIN}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES_ADMIN.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(f"{POSTGRES_ADMIN}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


NOTICE_TOML = """\
slug = "notice"
name = "One notice"
kind = "sequence"
trigger = "manual"

[footer]
reason = "You signed up for the benchmark."
crisis = "If you are struggling or in crisis, call or text 988."

# The KAP email it copies links to these.
[contact]
phone = "(555) 555-0142"
website = "https://www.example.org/"
booking_url = "https://www.example.org/book"
office_hours = "Monday to Friday, 9 am to 5 pm"

[lint]
link_domains = ["example.org"]
"""


def message_size(runtime: Runtime, slug: str) -> int:
    """Bytes of one email of `slug` as the dispatcher sends it (the baseline sends the same)."""
    from tidings.ops.previews import preview_step

    return len(preview_step(runtime, slug).message)


def notice_campaign(runtime: Runtime) -> None:
    """A one-email sequence (no send window) shaped like a KAP email: about 8 KB of html."""
    folder = Path(tempfile.mkdtemp(prefix="tidings-notice-"))
    (folder / "campaign.toml").write_text(NOTICE_TOML, encoding="utf-8")
    kap = ROOT / "tidings" / "campaigns" / "kap-benefits" / "03-enhanced-therapeutic-process.md"
    (folder / "01-notice.md").write_text(
        kap.read_text(encoding="utf-8") + "\n" + "Dear {{ subscriber.first_name }}, thank you.\n",
        encoding="utf-8",
    )
    with runtime.sessions.begin() as session:
        load_campaign(session, folder, runtime.settings, runtime.clock.now())
    shutil.rmtree(folder, ignore_errors=True)


def enroll(
    runtime: Runtime,
    count: int,
    due: datetime,
    not_due: int = 0,
    chunk: int = 50_000,
    slug: str = "notice",
) -> None:
    """`count` active subscribers of campaign `slug` due at `due`, and `not_due` more due a
    year later."""
    with runtime.sessions.begin() as session:
        campaign_id = session.scalar(select(Campaign.id).where(Campaign.slug == slug))
        first = (session.scalar(select(func.max(Subscriber.id))) or 0) + 1
    later = due.replace(year=due.year + 1)
    total = count + not_due
    if runtime.engine.dialect.name == "postgresql":
        _copy_enroll(runtime, campaign_id, first, total, count, due, later)
        return
    for start in range(0, total, chunk):
        ids = range(first + start, first + min(total, start + chunk))
        with runtime.sessions.begin() as session:
            session.execute(
                insert(Subscriber.__table__),
                [
                    {
                        "id": i,
                        "email": f"reader{i}@example.org",
                        "name": f"Reader {i}",
                        "timezone": "UTC",
                        "status": "active",
                        "key": secrets.token_urlsafe(16),
                        "attributes": {},
                        "created_at": due,
                        "updated_at": due,
                        "confirmed_at": due,
                        "soft_bounces": 0,
                    }
                    for i in ids
                ],
            )
            session.execute(
                insert(Enrollment.__table__),
                [
                    {
                        "subscriber_id": i,
                        "campaign_id": campaign_id,
                        "status": "active",
                        "next_position": 1,
                        "next_due_at": due if i - first < count else later,
                        "created_at": due,
                        "updated_at": due,
                    }
                    for i in ids
                ],
            )


def _copy_enroll(
    runtime: Runtime,
    campaign_id: int,
    first: int,
    total: int,
    count: int,
    due: datetime,
    later: datetime,
) -> None:
    """The same rows as `enroll`, written with PostgreSQL's COPY: ten million rows through
    executemany take most of an hour; COPY takes minutes."""
    stamp, later_stamp = due.replace(tzinfo=None), later.replace(tzinfo=None)
    connection = runtime.engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            with cursor.copy(
                "COPY subscribers (id, email, name, timezone, status, key, attributes,"
                " created_at, updated_at, confirmed_at, soft_bounces) FROM STDIN"
            ) as copy:
                for i in range(first, first + total):
                    copy.write_row(
                        (
                            i,
                            f"reader{i}@example.org",
                            f"Reader {i}",
                            "UTC",
                            "active",
                            secrets.token_urlsafe(16),
                            "{}",
                            stamp,
                            stamp,
                            stamp,
                            0,
                        )
                    )
            with cursor.copy(
                "COPY enrollments (subscriber_id, campaign_id, status, next_position,"
                " next_due_at, created_at, updated_at) FROM STDIN"
            ) as copy:
                for i in range(first, first + total):
                    copy.write_row(
                        (
                            i,
                            campaign_id,
                            "active",
                            1,
                            stamp if i - first < count else later_stamp,
                            stamp,
                            stamp,
                        )
                    )
            # Explicit ids leave the sequence behind; later inserts must not collide.
            cursor.execute("SELECT setval('subscribers_id_seq', (SELECT max(id) FROM subscribers))")
        connection.commit()
    finally:
        connection.close()


def tidings_env(url: str, smtp_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `tidings` process of the benchmarks (nothing of ours leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        TIDINGS_DATABASE_URL=url,
        TIDINGS_SMTP_URL=smtp_url,
        TIDINGS_SECRET_KEY=BENCH_SECRET_KEY,
        TIDINGS_POSTAL_ADDRESS="1 Main St",
        TIDINGS_FROM_ADDRESS="kap@center.example.org",
        TIDINGS_BASE_URL="https://news.example.org",
        TIDINGS_CLOCK=f"fixed:{MONDAY.isoformat()}",
        **extra,
    )
    return env


def median_seconds(command: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """The median wall time of a whole process, start to exit."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def bench_runtime(url: str, smtp_url: str = "smtp://127.0.0.1:25", **settings: object) -> Runtime:
    base = Settings(
        database_url=url,
        smtp_url=smtp_url,
        secret_key=BENCH_SECRET_KEY,
        from_address="kap@center.example.org",
        postal_address="1 Main St",
        base_url="https://news.example.org",
    )
    return Runtime.open(base.replace(**settings), FixedClock(MONDAY))
