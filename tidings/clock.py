"""All "now" in tidings comes from here, and every timezone (`zone`).

- RealClock: wall time.
- FixedClock: stands still until a test moves it (`set`, `advance`).
- ScaledClock: starts at a chosen instant and runs `factor` times faster than real time;
  the demo and rehearsals use it to run weeks of a drip series in minutes.

Durations that are about the real world (a lease on a claimed message, a retry backoff)
go through `Clock.span(real_seconds)`, so a scaled clock scales them too.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tidings.errors import ConfigError


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...

    def span(self, real_seconds: float) -> timedelta:
        """How much clock time passes while `real_seconds` of real time pass."""
        ...


class RealClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def span(self, real_seconds: float) -> timedelta:
        return timedelta(seconds=real_seconds)


class FixedClock:
    """A clock for tests: time moves only when told to."""

    def __init__(self, at: datetime):
        self._at = _as_utc(at)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def set(self, at: datetime) -> None:
        with self._lock:
            self._at = _as_utc(at)

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        step = delta if delta is not None else timedelta(**kwargs)
        with self._lock:
            self._at += step
            return self._at

    def span(self, real_seconds: float) -> timedelta:
        return timedelta(seconds=real_seconds)


class ScaledClock:
    """Simulated time: `start` at creation, then `factor` simulated seconds per real second.

    With `anchor` (a Unix time), simulated time is `start` at that wall-clock instant instead
    of at creation: processes given the same anchor share one simulated timeline (several
    workers rehearsing together).
    """

    def __init__(self, start: datetime, factor: float, anchor: float | None = None):
        if factor <= 0:
            raise ValueError("factor must be positive")
        self.start = _as_utc(start)
        self.factor = factor
        # monotonic time at which simulated time was `start`
        self._t0 = time.monotonic() - (0.0 if anchor is None else time.time() - anchor)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.factor)

    def span(self, real_seconds: float) -> timedelta:
        return timedelta(seconds=real_seconds * self.factor)

    def real_seconds_until(self, at: datetime) -> float:
        return max(0.0, (at - self.now()).total_seconds() / self.factor)


def clock_from_spec(spec: str | None) -> Clock:
    """Parse TIDINGS_CLOCK: unset, 'fixed:<ISO8601>', 'scaled:<ISO8601 start>:<factor>', or
    'scaled:<ISO8601 start>:<factor>@<unix time>' (start at that wall-clock instant)."""
    if not spec:
        return RealClock()
    kind, _, rest = spec.partition(":")
    try:
        if kind == "fixed":
            return FixedClock(_parse_instant(rest))
        if kind == "scaled":
            rest, _, anchor = rest.partition("@")
            start, _, factor = rest.rpartition(":")
            return ScaledClock(
                _parse_instant(start), float(factor), float(anchor) if anchor else None
            )
    except ValueError as exc:
        raise ConfigError(f"TIDINGS_CLOCK: {exc} in {spec!r}") from exc
    raise ConfigError(
        f"TIDINGS_CLOCK: expected 'fixed:<ISO8601>' or 'scaled:<ISO8601>:<factor>', got {spec!r}"
    )


def _parse_instant(text: str) -> datetime:
    return _as_utc(datetime.fromisoformat(text))


def _as_utc(at: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted."""
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA timezone `name` (cached: it is looked up for every email planned). Raises
    ValueError naming it when this machine does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None


def zone_or_utc(name: str) -> ZoneInfo:
    """zone(name), or UTC for a name this machine no longer knows: a stored name was checked
    when it was given, so this only happens after tzdata changed; never fail a send for it."""
    try:
        return zone(name)
    except ValueError:
        return zone("UTC")
