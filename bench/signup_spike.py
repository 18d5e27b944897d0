"""Issue 11, point 19: a sign-up spike against a real `tidings run` process (web pages and
worker in one process, as the demo and a small installation run it).

Three phases of CLIENTS concurrent clients (threads here, one keep-alive connection each), one
after the other against the same process: GET /healthz (the baseline: it asks the database),
then sign-ups on the form (POST /subscribe, the session cookie and CSRF token of one GET per
client), then sign-ups on the API (POST /api/subscribers with an API key). Each sign-up client
sends distinct new addresses in a loop; REPEAT of its requests repeat an address already sent
(by any client) to check duplicates. Web rate limits and confirmation caps are raised, else
they would stop most requests by design. The clock is the real one.

Between phases and at the end the worker is left to decide what was received (until
signup_requests is empty, bounded); the process is stopped with SIGTERM. Then every address
accepted (2xx) must be one subscriber with exactly one confirmation delivery (queued or
sent): duplicates arrive within the resend interval (15 minutes), which allows no second
email. The process's stderr is kept: waitress's "Task queue depth" warnings are counted.

Full run: 30 s per phase, on SQLite and then on PostgreSQL; --quick: 5 s, SQLite only.
"""

from __future__ import annotations

import http.client
import itertools
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common import (
    QUICK,
    ROOT,
    bench_runtime,
    database,
    free_port,
    report,
    smtp_sink,
    tidings_env,
)
from signup_timing import UNLIMITED, ApiClient, Client, FormClient, new_api_key, quantile
from sqlalchemy import create_engine, func, select

from tidings.db.models import Delivery, SignUpRequest, Subscriber
from tidings.states import DeliveryKind

CLIENTS = 16
SECONDS = 5.0 if QUICK else 30.0
REPEAT = 0.05
DRAIN_SECONDS = 300.0
RAISED_CAP = "1000000000"
TICK_SECONDS = 5.0  # TIDINGS_TICK_SECONDS's default, as `tidings run` runs
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


@dataclass
class Phase:
    """What the clients of one phase saw."""

    name: str  # healthz | form | API
    started: float = 0.0  # perf_counter() when the clients began
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)  # perf_counter() at each answer
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    # Each sign-up sent: (address, status or None for a connection error, a repeat?)
    sent: list[tuple[str, int | None, bool]] = field(default_factory=list)
    accepted_at: dict[str, float] = field(default_factory=dict)  # first 2xx, time.time()
    drain_seconds: float = 0.0

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


class Addresses:
    """New addresses for every client, and the ones already sent (for the repeats)."""

    def __init__(self, prefix: str, seed: int):
        self.prefix = prefix
        self.lock = threading.Lock()
        self.sent: list[str] = []
        self.rng = random.Random(seed)
        self.count = 0

    def next(self) -> tuple[str, bool]:
        with self.lock:
            if self.sent and self.rng.random() < REPEAT:
                return self.rng.choice(self.sent), True
            self.count += 1
            address = f"{self.prefix}{self.count:07d}@example.org"
            self.sent.append(address)
            return address, False


# ----------------------------------------------------------------------------- the process


class Tidings:
    """`tidings run` in a subprocess; its stderr kept line by line."""

    def __init__(self, env: dict[str, str], port: int):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tidings", "run", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if "web pages at" in line:
                break
        else:
            raise RuntimeError("tidings run did not start:\n" + "".join(self.lines))
        self.drain = threading.Thread(target=self._read, daemon=True)
        self.drain.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def stop(self) -> int:
        """SIGTERM, by PID; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.drain.join(timeout=10)
        return code

    def count(self, pattern: str) -> int:
        return sum(1 for line in list(self.lines) if re.search(pattern, line))


# ----------------------------------------------------------------------------- the clients


def _client_loop(
    phase: Phase,
    connect: Any,
    addresses: Addresses | None,
    deadline: list[float],
    lock: threading.Lock,
    start: threading.Barrier,
) -> None:
    """One client: requests back to back until the deadline; a broken connection is counted
    and opened again."""
    latencies: list[float] = []
    finished: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    sent: list[tuple[str, int | None, bool]] = []
    accepted_at: dict[str, float] = {}
    client: Client = connect()
    start.wait()  # connecting (and loading the form) is not timed
    while time.perf_counter() < deadline[0]:
        address, repeat = addresses.next() if addresses else ("", False)
        try:
            if addresses is None:
                status, seconds, _, _ = client.request("GET", "/healthz")
            else:
                status, seconds, _ = client.sign_up(address)  # type: ignore[attr-defined]
        except CONNECTION_ERRORS as exc:
            errors[type(exc).__name__] += 1
            if addresses is not None:
                sent.append((address, None, repeat))
            try:
                client.reconnect()
            except CONNECTION_ERRORS as again:
                errors[f"reconnect {type(again).__name__}"] += 1
                time.sleep(0.1)  # the server is gone or saturated: do not spin
            continue
        latencies.append(seconds)
        finished.append(time.perf_counter())
        statuses[status] += 1
        if addresses is not None:
            sent.append((address, status, repeat))
            if 200 <= status < 300:
                accepted_at.setdefault(address, time.time())
    client.close()
    with lock:
        phase.latencies.extend(latencies)
        phase.finished.extend(finished)
        phase.statuses.update(statuses)
        phase.errors.update(errors)
        phase.sent.extend(sent)
        for address, at in accepted_at.items():
            phase.accepted_at[address] = min(at, phase.accepted_at.get(address, at))


def run_phase(name: str, connect: Any, addresses: Addresses | None) -> Phase:
    """CLIENTS clients for SECONDS, all starting together once connected."""
    phase = Phase(name)
    lock = threading.Lock()
    deadline = [0.0]

    def go() -> None:  # run by the barrier once every client is connected
        deadline[0] = time.perf_counter() + SECONDS

    start = threading.Barrier(CLIENTS, action=go)
    threads = [
        threading.Thread(
            target=_client_loop, args=(phase, connect, addresses, deadline, lock, start)
        )
        for _ in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.started = deadline[0] - SECONDS
    phase.seconds = SECONDS + max(0.0, time.perf_counter() - deadline[0])
    return phase


# ----------------------------------------------------------------------------- checks


def wait_for_worker(url: str, started: float) -> tuple[float, float]:
    """Seconds (from `started`) until signup_requests is empty, and until no confirmation
    waits to be sent; each bounded by DRAIN_SECONDS."""
    engine = create_engine(url)
    decided = sent = float("nan")
    try:
        while time.perf_counter() - started < DRAIN_SECONDS:
            with engine.connect() as connection:
                waiting = connection.scalar(select(func.count()).select_from(SignUpRequest))
                unsent = connection.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(
                        Delivery.kind == DeliveryKind.CONFIRMATION,
                        Delivery.status.in_(("queued", "sending", "retry")),
                    )
                )
            now = time.perf_counter() - started
            if waiting == 0 and decided != decided:  # nan: not yet
                decided = now
            if waiting == 0 and unsent == 0:
                sent = now
                break
            time.sleep(0.2)  # polling another process's progress
    finally:
        engine.dispose()
    return decided, sent


@dataclass
class Verdict:
    accepted: int  # distinct addresses with at least one 2xx
    stored_once: int  # of which one subscriber with exactly one confirmation
    missing: list[str]
    wrong_confirmations: dict[str, int]
    unexpected: list[str]  # subscribers for addresses never sent
    unsure_stored: int  # addresses whose only answers were errors, stored anyway
    repeats: int  # repeated sign-ups answered 2xx
    confirmation_statuses: Counter[str]
    # Per phase: seconds from an address's first 2xx to its confirmation email being sent.
    delays: dict[str, list[float]]
    leftover_requests: int

    @property
    def passed(self) -> bool:
        return not (self.missing or self.wrong_confirmations or self.unexpected)


def verify(url: str, phases: list[Phase]) -> Verdict:
    sent = [s for phase in phases for s in phase.sent]
    accepted = {a for a, status, _ in sent if status is not None and 200 <= status < 300}
    every = {a for a, _, _ in sent}
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            ids = dict(connection.execute(select(Subscriber.email, Subscriber.id)).all())
            per_subscriber = Counter(
                dict(
                    connection.execute(
                        select(Delivery.subscriber_id, func.count())
                        .where(Delivery.kind == DeliveryKind.CONFIRMATION)
                        .group_by(Delivery.subscriber_id)
                    ).all()
                )
            )
            statuses = Counter(
                dict(
                    connection.execute(
                        select(Delivery.status, func.count())
                        .where(Delivery.kind == DeliveryKind.CONFIRMATION)
                        .group_by(Delivery.status)
                    ).all()
                )
            )
            leftover = connection.scalar(select(func.count()).select_from(SignUpRequest))
            sent_at = dict(
                connection.execute(
                    select(Subscriber.email, Delivery.sent_at)
                    .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                    .where(Delivery.kind == DeliveryKind.CONFIRMATION)
                ).all()
            )
    finally:
        engine.dispose()
    missing = sorted(accepted - ids.keys())
    wrong = {
        a: per_subscriber[ids[a]] for a in accepted & ids.keys() if per_subscriber[ids[a]] != 1
    }
    return Verdict(
        accepted=len(accepted),
        stored_once=len(accepted) - len(missing) - len(wrong),
        missing=missing,
        wrong_confirmations=wrong,
        unexpected=sorted(ids.keys() - every),
        unsure_stored=len((every - accepted) & ids.keys()),
        repeats=sum(1 for a, s, r in sent if r and s is not None and 200 <= s < 300),
        confirmation_statuses=statuses,
        leftover_requests=leftover or 0,
        delays={
            phase.name: [
                _timestamp(sent_at[a]) - at
                for a, at in phase.accepted_at.items()
                if sent_at.get(a) is not None
            ]
            for phase in phases
        },
    )


def _timestamp(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


# ----------------------------------------------------------------------------- the bench


def spike(kind: str) -> tuple[list[Phase], Verdict, dict[str, int]]:
    """The three phases against one `tidings run` on a fresh `kind` database."""
    with database(kind) as url, smtp_sink() as sink:
        runtime = bench_runtime(url, sink)
        key = new_api_key(runtime)
        runtime.close()
        port = free_port()
        env = tidings_env(url, sink)
        env.pop("TIDINGS_CLOCK")  # real time, as in production
        env.update(
            TIDINGS_BASE_URL=f"http://127.0.0.1:{port}",
            TIDINGS_SUBSCRIBE_RATE_LIMIT=UNLIMITED,
            TIDINGS_API_RATE_LIMIT=UNLIMITED,
            TIDINGS_CONFIRM_TOTAL_PER_HOUR=RAISED_CAP,
            TIDINGS_CONFIRM_DOMAIN_PER_HOUR=RAISED_CAP,
        )
        process = Tidings(env, port)
        phases: list[Phase] = []
        queue_depth: dict[str, int] = {}
        try:
            plan = [
                ("healthz", lambda: Client("127.0.0.1", port), None),
                ("form", lambda: FormClient("127.0.0.1", port), Addresses("form", 1)),
                ("API", lambda: ApiClient("127.0.0.1", port, key), Addresses("api", 2)),
            ]
            for name, connect, addresses in plan:
                before = process.count("queue depth")
                phase = run_phase(name, connect, addresses)
                queue_depth[name] = process.count("queue depth") - before
                if addresses is not None:
                    decided, sent = wait_for_worker(url, time.perf_counter())
                    phase.drain_seconds = decided
                    print(
                        f"{kind} {name}: the worker decided the last sign-up {decided:.1f} s and "
                        f"sent the last confirmation {sent:.1f} s after the clients stopped",
                        file=sys.stderr,
                    )
                phases.append(phase)
        finally:
            code = process.stop()
        log = "".join(process.lines)
        if code != 0 or "stopped cleanly" not in log:
            raise RuntimeError(f"tidings run exited {code}:\n{log[-3000:]}")
        for pattern in ("Traceback", "ERROR", "database is locked", "deadlock"):
            found = process.count(pattern)
            if found:
                print(f"{kind}: {found} stderr lines match {pattern!r}", file=sys.stderr)
        if "Traceback" in log:  # the first one, for the report
            first = log.index("Traceback")
            print(log[max(0, log.rfind("\n", 0, first - 1)) : first + 4000], file=sys.stderr)
        queue_depth["max"] = max(
            (int(m) for m in re.findall(r"queue depth is (\d+)", log, re.IGNORECASE)), default=0
        )
        verdict = verify(url, phases[1:])
    return phases, verdict, queue_depth


def longest_silence(phase: Phase) -> float:
    """The longest stretch, in seconds, in which no client got an answer."""
    times = sorted([phase.started, *phase.finished, phase.started + phase.seconds])
    return max(b - a for a, b in itertools.pairwise(times))


def describe(kind: str, phase: Phase) -> str:
    p50, p99 = quantile(phase.latencies, 0.5) * 1000, quantile(phase.latencies, 0.99) * 1000
    return (
        f"{kind} {phase.name}: {phase.ok / phase.seconds:.0f}/s 2xx, p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, longest without an answer {longest_silence(phase):.1f} s, "
        f"statuses {dict(phase.statuses)}, errors {dict(phase.errors)}"
    )


def report_spike(
    kind: str, phases: list[Phase], verdict: Verdict, queue_depth: dict[str, int]
) -> None:
    health = phases[0]
    health_rate = health.ok / health.seconds
    health_p99 = quantile(health.latencies, 0.99) * 1000
    what = f"{CLIENTS} clients, {SECONDS:g} s, {kind}"
    for phase in phases:
        print(describe(kind, phase), file=sys.stderr)
    for phase in phases[1:]:
        rate = phase.ok / phase.seconds
        p50 = quantile(phase.latencies, 0.5) * 1000
        p99 = quantile(phase.latencies, 0.99) * 1000
        report(
            f"19. sign-up spike, {phase.name}, sign-ups/s ({what})",
            round(rate, 1),
            round(health_rate, 1),
            round(rate / health_rate, 3),
            ">= 100/s",
            rate >= 100,
            "req/s",
            f"baseline: GET /healthz, same clients; {phase.ok:,} accepted",
        )
        report(
            f"19. sign-up spike, {phase.name}, p99 ms ({what})",
            round(p99, 1),
            round(health_p99, 1),
            round(p99 / health_p99, 2),
            "<= 500 ms",
            p99 <= 500,
            "ms",
            f"p50 {p50:.1f} ms (healthz {quantile(health.latencies, 0.5) * 1000:.1f} ms), "
            f"max {max(phase.latencies) * 1000:.0f} ms; "
            f"longest without an answer {longest_silence(phase):.1f} s; "
            f"waitress queue-depth warnings {queue_depth[phase.name]} "
            f"(healthz {queue_depth['healthz']}, deepest {queue_depth['max']})",
        )
        delays = verdict.delays[phase.name]
        late = quantile(delays, 0.99)
        report(
            f"19. sign-up spike, {phase.name}, confirmation sent after the sign-up, p99 s ({what})",
            round(late, 1),
            None,
            None,
            "<= 60 s",
            late <= 60,
            "s",
            f"first {min(delays, default=float('nan')):.1f} s, p50 {quantile(delays, 0.5):.1f} s, "
            f"last {max(delays, default=float('nan')):.1f} s; "
            f"tick {TICK_SECONDS:g} s (the default)",
        )
        failures = phase.server_errors + sum(phase.errors.values())
        report(
            f"19. sign-up spike, {phase.name}, 5xx + connection errors ({what})",
            failures,
            None,
            None,
            "0",
            failures == 0,
            "requests",
            f"statuses {dict(phase.statuses)}; errors {dict(phase.errors)}",
        )
    report(
        f"19. sign-up spike, accepted addresses stored once with one confirmation ({kind})",
        verdict.stored_once,
        verdict.accepted,
        round(verdict.stored_once / max(1, verdict.accepted), 4),
        "all, none unexpected",
        verdict.passed,
        "addresses",
        f"{verdict.repeats} repeats accepted, no second email; missing {verdict.missing[:5]}; "
        f"wrong counts {dict(list(verdict.wrong_confirmations.items())[:5])}; unexpected "
        f"{verdict.unexpected[:5]}; confirmations {dict(verdict.confirmation_statuses)}",
    )


def main() -> None:
    for kind in ["sqlite"] if QUICK else ["sqlite", "postgresql"]:
        started = time.perf_counter()
        phases, verdict, queue_depth = spike(kind)
        report_spike(kind, phases, verdict, queue_depth)
        print(
            f"{kind}: {time.perf_counter() - started:.0f} s; {verdict.accepted} addresses "
            f"accepted, {verdict.stored_once} stored once with one confirmation, "
            f"{verdict.repeats} repeats, {verdict.unsure_stored} stored after an error, "
            f"{verdict.leftover_requests} requests left undecided",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
