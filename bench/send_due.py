"""Figure 8: the whole command, not only the loop. `tidings send-due` as a process from start
to exit (interpreter, imports, schema check, planning, sending, recording) for 5,000 due
welcome emails of the KAP series into Postfix's smtp-sink, against smtp-source pushing the
same number of messages of the same size over the same number of sessions, in the same run.
"""

from __future__ import annotations

import subprocess
import sys
import time

from common import (
    MONDAY,
    QUICK,
    ROOT,
    bench_runtime,
    database,
    enroll,
    message_size,
    report,
    smtp_sink,
    smtp_source_rate,
    tidings_env,
)
from sqlalchemy import func, select

from tidings.campaigns.loading import load_campaign, resolve_campaign_dir
from tidings.db.models import Delivery

SESSIONS = 4


def send_due_rate(count: int, sink: str) -> tuple[float, int]:
    with database("sqlite") as url:
        runtime = bench_runtime(url, sink)
        with runtime.sessions.begin() as session:
            kap = resolve_campaign_dir("kap-benefits")
            load_campaign(session, kap, runtime.settings, runtime.clock.now())
        size = message_size(runtime, "kap-benefits")
        enroll(runtime, count, MONDAY, slug="kap-benefits")  # the welcome is due now
        env = tidings_env(url, sink, TIDINGS_SMTP_POOL_SIZE=str(SESSIONS))
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tidings", "send-due"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        elapsed = time.perf_counter() - started
        with runtime.sessions.begin() as session:
            sent = session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == "sent")
            )
        runtime.close()
    assert sent == count, sent
    return count / elapsed, size


def main() -> None:
    count = 1_000 if QUICK else 5_000
    runs = 1 if QUICK else 3  # the best of three: this machine's neighbours are noisy
    with smtp_sink() as sink:
        rate, size = max(send_due_rate(count, sink) for _ in range(runs))
        baseline = max(smtp_source_rate(sink, SESSIONS, count, size) for _ in range(runs))
    ratio = rate / baseline
    report(
        f"8. send-due, whole process, msg/s ({count:,} welcome emails of {size:,} bytes, "
        f"{SESSIONS} sessions)",
        round(rate),
        round(baseline),
        round(ratio, 2),
        ">= 0.5x smtp-source",
        ratio >= 0.5,
        "msg/s",
    )


if __name__ == "__main__":
    main()
