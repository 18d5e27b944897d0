"""Figure 3: end to end when the SMTP server is slow (latency-bound), as real remote servers
are: Postfix's smtp-sink waits 1 s before answering each DATA.

a) one process, 64 SMTP connections: against the ideal of 64 messages per second;
b) `tidings worker` processes on PostgreSQL: two workers against one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from common import (
    BENCH_SECRET_KEY,
    MONDAY,
    QUICK,
    ROOT,
    bench_runtime,
    database,
    enroll,
    notice_campaign,
    report,
    smtp_sink,
)
from sqlalchemy import func, select

from tidings.db.models import Delivery
from tidings.scheduler import Worker

CONNECTIONS = 64


def one_process(count: int) -> float:
    with database("sqlite") as url, smtp_sink(delay=1) as sink:
        runtime = bench_runtime(
            url,
            sink,
            smtp_pool_size=CONNECTIONS,
            send_chunk=CONNECTIONS * 2,
            batch_size=CONNECTIONS * 4,
        )
        notice_campaign(runtime)
        enroll(runtime, count, MONDAY)
        worker = Worker(runtime)
        worker.plan()
        with worker:
            for lane in worker.lanes:
                lane.transport.warm()  # as `tidings run`/`worker` do when they start
            started = time.perf_counter()
            result = worker.dispatch()
            elapsed = time.perf_counter() - started
        runtime.close()
    assert result.sent == count, result
    return count / elapsed


def workers_on_postgres(count: int, workers: int) -> float:
    """Sending rate of `workers` worker processes: from the moment the first email is
    claimed until the last is recorded as sent (started processes are warmed up first)."""
    with database("postgresql") as url, smtp_sink(delay=1) as sink:
        runtime = bench_runtime(url, sink)
        notice_campaign(runtime)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")},
            "TIDINGS_DATABASE_URL": url,
            "TIDINGS_SMTP_URL": sink,
            "TIDINGS_SECRET_KEY": BENCH_SECRET_KEY,
            "TIDINGS_POSTAL_ADDRESS": "1 Main St",
            "TIDINGS_FROM_ADDRESS": "kap@center.example",
            "TIDINGS_SMTP_POOL_SIZE": str(CONNECTIONS),
            "TIDINGS_SEND_CHUNK": "128",
            "TIDINGS_BATCH_SIZE": "256",
            "TIDINGS_TICK_SECONDS": "0.1",
        }
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "tidings", "worker"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        try:
            time.sleep(3)  # let the workers start and open their connections
            enroll(runtime, count, MONDAY)  # now there is work: time it
            started = finished = None
            while finished is None:
                with runtime.sessions.begin() as session:
                    counts = dict(
                        session.execute(
                            select(Delivery.status, func.count()).group_by(Delivery.status)
                        ).all()
                    )
                now = time.perf_counter()
                if started is None and sum(counts.values()) - counts.get("queued", 0) > 0:
                    started = now
                if counts.get("sent", 0) >= count:
                    finished = now
                time.sleep(0.05)  # polling a benchmark's progress, not a test
        finally:
            for p in processes:
                p.send_signal(signal.SIGTERM)
            for p in processes:
                p.wait(timeout=60)
        runtime.close()
    assert started is not None
    return count / (finished - started)


def main() -> None:
    count = 256 if QUICK else 1280
    rate = one_process(count)
    report(
        f"3a. latency-bound, msg/s ({count:,}, {CONNECTIONS} connections, 1 s per DATA)",
        round(rate, 1),
        CONNECTIONS,
        round(rate / CONNECTIONS, 3),
        ">= 0.90 of ideal",
        rate / CONNECTIONS >= 0.9,
        "msg/s",
        "baseline: the ideal, 64 replies per second",
    )
    many = 512 if QUICK else 2560
    one = workers_on_postgres(many, 1)
    two = workers_on_postgres(many, 2)
    report(
        f"3b. 2 workers vs 1 on PostgreSQL, msg/s ({many:,}, {CONNECTIONS} connections each)",
        round(two, 1),
        round(one, 1),
        round(two / one, 2),
        ">= 1.8x",
        two / one >= 1.8,
        "msg/s",
    )


if __name__ == "__main__":
    main()
