"""Issue 11, point 5: the time a sign-up takes says nothing about who is subscribed.

Before, a new address answered the form in 6.4 ms (median) and an active one in 3.5 ms, and
the API's two distributions did not overlap. Now the request only stores a sign-up request
(the worker decides it later), so both should take the same time.

The app runs under waitress in this process, on a SQLite file holding ACTIVE confirmed
subscribers. One client sends sign-ups one at a time over a keep-alive connection, NEW
addresses and ACTIVE ones in a random order, first on the form (POST /subscribe, with the
session cookie and CSRF token of one GET), then on the API (POST /api/subscribers with an API
key). The worker does not run: what is timed is the request's own work.

Figures per channel: median(new) / median(active) (target 0.85..1.15) and the two-sample
Kolmogorov-Smirnov statistic D of the two distributions (target < 0.2). Afterwards the
database must hold one signup_requests row per request and no new subscriber.

The HTTP pieces (FormClient, ApiClient) and the statistics are shared with signup_spike.py.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from common import MONDAY, QUICK, bench_runtime, database, report
from sqlalchemy import func, insert, select

from tidings.db.models import SignUpRequest, Subscriber
from tidings.runtime import Runtime
from tidings.subscribers.apikeys import create_api_key
from tidings.web import create_app
from tidings.web.server import WebServer

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
UNLIMITED = "1000000/minute"
API_CONSENT = "Yes, email me the KAP series (checkbox on the contact page)."
FIRST_ACTIVE = 100_000  # addresses reader100000@... : the same length as the new ones
FIRST_NEW = 500_000


# ----------------------------------------------------------------------------- HTTP clients


class Client:
    """One keep-alive connection; `sign_up(email)` returns (status, seconds, body)."""

    def __init__(self, host: str, port: int, timeout: float = 60.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.connection = http.client.HTTPConnection(host, port, timeout=timeout)

    def reconnect(self) -> None:
        self.connection.close()
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, float, bytes, http.client.HTTPResponse]:
        started = time.perf_counter()
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        data = response.read()
        return response.status, time.perf_counter() - started, data, response

    def close(self) -> None:
        self.connection.close()


class FormClient(Client):
    """A browser on the public form: one GET for the session cookie and the hidden fields
    (CSRF token, consent version), then any number of POSTs reusing them."""

    def __init__(self, host: str, port: int, timeout: float = 60.0):
        super().__init__(host, port, timeout)
        self.load_form()

    def load_form(self) -> None:
        status, _, body, response = self.request("GET", "/subscribe")
        if status != 200:
            raise RuntimeError(f"GET /subscribe answered {status}")
        cookie = SimpleCookie(response.headers.get("Set-Cookie", ""))
        self.cookie = "; ".join(f"{k}={m.value}" for k, m in cookie.items())
        self.hidden = dict(HIDDEN.findall(body.decode()))
        if "csrf_token" not in self.hidden or not self.cookie:
            raise RuntimeError("GET /subscribe carried no CSRF token or session cookie")

    def reconnect(self) -> None:
        super().reconnect()
        self.load_form()

    def sign_up(self, email: str) -> tuple[int, float, bytes]:
        body = urlencode(
            {
                **self.hidden,
                "email": email,
                "name": "Ann Example",
                "timezone": "Europe/Paris",
                "consent": "yes",
            }
        ).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": self.cookie}
        status, seconds, data, _ = self.request("POST", "/subscribe", body, headers)
        return status, seconds, data


class ApiClient(Client):
    """The center's contact-form backend forwarding opt-ins with its API key."""

    def __init__(self, host: str, port: int, key: str, timeout: float = 60.0):
        super().__init__(host, port, timeout)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def sign_up(self, email: str) -> tuple[int, float, bytes]:
        body = json.dumps(
            {
                "email": email,
                "name": "Ann Example",
                "timezone": "Europe/Paris",
                "consent_text": API_CONSENT,
                "source": "bench",
            }
        ).encode()
        status, seconds, data, _ = self.request("POST", "/api/subscribers", body, self.headers)
        return status, seconds, data


def new_api_key(runtime: Runtime, name: str = "bench") -> str:
    with runtime.sessions.begin() as session:
        _, key = create_api_key(session, name, runtime.clock.now())
    return key


# ----------------------------------------------------------------------------- statistics


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, linear between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ks_statistic(a: list[float], b: list[float]) -> float:
    """Two-sample Kolmogorov-Smirnov D: the largest gap between the empirical distribution
    functions (0: the same distribution; 1: no overlap at all)."""
    xs, ys = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(xs) and j < len(ys):
        value = min(xs[i], ys[j])
        while i < len(xs) and xs[i] <= value:
            i += 1
        while j < len(ys) and ys[j] <= value:
            j += 1
        d = max(d, abs(i / len(xs) - j / len(ys)))
    return d


def ks_critical(n: int, m: int) -> float:
    """The D above which two samples of sizes n and m differ at the 5% level (asymptotic)."""
    return 1.358 * ((n + m) / (n * m)) ** 0.5


def iqr_overlap(a: list[float], b: list[float]) -> float:
    """How much the interquartile ranges overlap: the shared part over their union (1: the
    same range; 0: disjoint)."""
    a1, a3, b1, b3 = quantile(a, 0.25), quantile(a, 0.75), quantile(b, 0.25), quantile(b, 0.75)
    shared = max(0.0, min(a3, b3) - max(a1, b1))
    union = max(a3, b3) - min(a1, b1)
    return shared / union if union > 0 else 1.0


# ----------------------------------------------------------------------------- the bench


@dataclass
class Timings:
    channel: str
    seconds: dict[str, list[float]] = field(default_factory=lambda: {"new": [], "active": []})
    requests: int = 0  # warm-up included: each stores a row


def add_active(runtime: Runtime, count: int) -> None:
    """`count` active, confirmed subscribers written in bulk."""
    rows = [
        {
            "email": f"reader{FIRST_ACTIVE + i}@example.org",
            "name": f"Reader {i}",
            "timezone": "Europe/Paris",
            "status": "active",
            "key": secrets.token_urlsafe(16),
            "attributes": {},
            "created_at": MONDAY,
            "updated_at": MONDAY,
            "confirmed_at": MONDAY,
            "soft_bounces": 0,
        }
        for i in range(count)
    ]
    with runtime.sessions.begin() as session:
        session.execute(insert(Subscriber.__table__), rows)


def measure(
    client: FormClient | ApiClient,
    channel: str,
    per_group: int,
    actives: int,
    next_new: list[int],
    seed: int,
) -> Timings:
    """Warm up, then `per_group` new and `per_group` active sign-ups in a random order."""
    timings = Timings(channel)
    rng = random.Random(seed)
    order = ["new"] * per_group + ["active"] * per_group
    rng.shuffle(order)
    warm_up = ["new", "active"] * 25
    for index, kind in enumerate(warm_up + order):
        if kind == "new":
            email = f"reader{FIRST_NEW + next_new[0]}@example.org"
            next_new[0] += 1
        else:
            email = f"reader{FIRST_ACTIVE + rng.randrange(actives)}@example.org"
        status, seconds, body = client.sign_up(email)
        timings.requests += 1
        if status not in (200, 202):
            raise RuntimeError(f"{channel} sign-up of {email}: {status} {body[:300]!r}")
        if index >= len(warm_up):
            timings.seconds[kind].append(seconds)
    return timings


def summarize(timings: Timings) -> dict[str, float]:
    new, active = timings.seconds["new"], timings.seconds["active"]
    figures = {
        "new_p50": quantile(new, 0.5) * 1000,
        "new_p90": quantile(new, 0.9) * 1000,
        "active_p50": quantile(active, 0.5) * 1000,
        "active_p90": quantile(active, 0.9) * 1000,
        "ks": ks_statistic(new, active),
        "iqr": iqr_overlap(new, active),
    }
    figures["ratio"] = figures["new_p50"] / figures["active_p50"]
    print(
        f"{timings.channel}: new p50 {figures['new_p50']:.2f} ms, p90 {figures['new_p90']:.2f} ms;"
        f" active p50 {figures['active_p50']:.2f} ms, p90 {figures['active_p90']:.2f} ms;"
        f" ratio {figures['ratio']:.3f}; KS D {figures['ks']:.3f};"
        f" IQR overlap {figures['iqr']:.2f} ({len(new)} + {len(active)} requests)",
        file=sys.stderr,
    )
    return figures


def report_channel(timings: Timings, figures: dict[str, float]) -> None:
    n = len(timings.seconds["new"])
    ratio = figures["ratio"]
    report(
        f"5. sign-up time, new vs active address, {timings.channel}, p50 ms ({n:,} each)",
        round(figures["new_p50"], 2),
        round(figures["active_p50"], 2),
        round(ratio, 3),
        "0.85..1.15",
        0.85 <= ratio <= 1.15,
        "ms",
        f"p90 new {figures['new_p90']:.2f} ms, active {figures['active_p90']:.2f} ms; before "
        + ("this issue: 6.4 vs 3.5 ms" if timings.channel == "form" else "it: no overlap"),
    )
    report(
        f"5. sign-up time, new vs active, {timings.channel}, Kolmogorov-Smirnov D",
        round(figures["ks"], 3),
        None,
        None,
        "< 0.2",
        figures["ks"] < 0.2,
        "",
        f"interquartile ranges overlap {figures['iqr']:.2f} (shared / union); D above "
        f"{ks_critical(n, n):.3f} would tell the two apart at the 5% level",
    )


def main() -> None:
    per_group = 200 if QUICK else 1500
    actives = 2_000 if QUICK else 20_000
    started = time.perf_counter()
    with database("sqlite") as url:
        runtime = bench_runtime(
            url,
            base_url="http://127.0.0.1",
            subscribe_rate_limit=UNLIMITED,
            api_rate_limit=UNLIMITED,
        )
        add_active(runtime, actives)
        key = new_api_key(runtime)
        server = WebServer(create_app(runtime), "127.0.0.1", 0).start()
        next_new = [0]
        try:
            form = FormClient("127.0.0.1", server.port)
            api = ApiClient("127.0.0.1", server.port, key)
            results = [
                measure(form, "form", per_group, actives, next_new, seed=5),
                measure(api, "API", per_group, actives, next_new, seed=19),
            ]
            form.close()
            api.close()
        finally:
            server.stop()
        with runtime.sessions.begin() as session:
            stored = session.scalar(select(func.count()).select_from(SignUpRequest))
            subscribers = session.scalar(select(func.count()).select_from(Subscriber))
        runtime.close()
    for timings in results:
        report_channel(timings, summarize(timings))
    sent = sum(t.requests for t in results)
    print(
        f"side condition: {stored} signup_requests rows for {sent} requests, "
        f"{subscribers - actives} new subscribers; {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    assert stored == sent, f"{stored} signup_requests rows for {sent} requests"
    assert subscribers == actives, f"{subscribers} subscribers, expected {actives} (none new)"


if __name__ == "__main__":
    main()
