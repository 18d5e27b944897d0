"""Figure 4: planning costs what is due, not the size of the list. One plan pass over
10,000 due enrollments among 1,000,000 (and among 10,000,000, or as many as the disk allows),
on SQLite and on PostgreSQL. The baseline is the same pass with the smaller total.
"""

from __future__ import annotations

import gc
import shutil
import time

from common import MONDAY, QUICK, bench_runtime, database, enroll, notice_campaign, report
from sqlalchemy import delete, func, select, update

from tidings.db.models import Delivery, Enrollment
from tidings.scheduler import Worker

DUE = 2_000 if QUICK else 10_000


def plan_pass(kind: str, total: int, repeats: int = 3) -> float:
    """The fastest of `repeats` plan passes (the state is put back between them)."""
    times = []
    with database(kind) as url:
        runtime = bench_runtime(url)
        notice_campaign(runtime)
        enroll(runtime, DUE, MONDAY, not_due=total - DUE)
        if kind == "postgresql":
            with runtime.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
        for _ in range(repeats):
            worker = Worker(runtime)
            gc.collect()  # the bulk insert above leaves garbage; do not time its collection
            started = time.perf_counter()
            planned = worker.plan()
            times.append(time.perf_counter() - started)
            with runtime.sessions.begin() as session:
                queued = session.scalar(select(func.count()).select_from(Delivery))
                assert planned.planned == DUE == queued, (planned, queued)
                session.execute(delete(Delivery))
                session.execute(
                    update(Enrollment)
                    .where(Enrollment.next_due_at.is_(None))
                    .values(next_position=1, next_due_at=MONDAY)
                )
        runtime.close()
    return min(times)


def main() -> None:
    small, large = (20_000, 200_000) if QUICK else (1_000_000, 10_000_000)
    free_gb = shutil.disk_usage("/tmp").free / 1e9
    if free_gb < large / 1_000_000 * 1.5:  # about 1.5 GB per million rows with indexes
        large = int(free_gb / 1.5 * 1_000_000) // 100_000 * 100_000
    for kind in ("sqlite", "postgresql"):
        base = plan_pass(kind, small)
        big = plan_pass(kind, large)
        ratio = big / base
        report(
            f"4. plan pass, s ({DUE:,} due of {large:,} vs of {small:,}, {kind})",
            round(big, 3),
            round(base, 3),
            round(ratio, 2),
            "<= 1 s and <= 1.5x",
            base <= 1 and ratio <= 1.5,
            "s",
        )


if __name__ == "__main__":
    main()
