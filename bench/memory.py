"""Figure 5: memory stays flat. Peak resident memory of `tidings send-due` sending 100,000
messages (into smtp-sink), against the same command sending 10,000."""

from __future__ import annotations

import os
import subprocess
import sys

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


def peak_rss_mb(count: int) -> float:
    with database("sqlite") as url, smtp_sink() as sink:
        runtime = bench_runtime(url, sink)
        notice_campaign(runtime)
        enroll(runtime, count, MONDAY)
        runtime.close()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")},
            "TIDINGS_DATABASE_URL": url,
            "TIDINGS_SMTP_URL": sink,
            "TIDINGS_SECRET_KEY": BENCH_SECRET_KEY,
            "TIDINGS_POSTAL_ADDRESS": "1 Main St",
            "TIDINGS_FROM_ADDRESS": "kap@center.example",
            "TIDINGS_CLOCK": f"fixed:{MONDAY.isoformat()}",
        }
        # A fresh interpreter per measurement: ru_maxrss of the waited-for child.
        code = (
            "import resource, subprocess, sys; "
            "subprocess.run([sys.executable, '-m', 'tidings', 'send-due'], check=True, "
            "stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
    return int(done.stdout.strip()) / 1024  # Linux reports kilobytes


def main() -> None:
    small, large = (2_000, 20_000) if QUICK else (10_000, 100_000)
    base = peak_rss_mb(small)
    big = peak_rss_mb(large)
    ratio = big / base
    report(
        f"5. peak memory, MB (send-due of {large:,} vs {small:,})",
        round(big, 1),
        round(base, 1),
        round(ratio, 2),
        "<= 150 MB and <= 1.2x",
        big <= 150 and ratio <= 1.2,
        "MB",
    )


if __name__ == "__main__":
    main()
