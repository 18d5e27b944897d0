"""Send windows ("09:00-17:00, Monday to Friday, in the subscriber's own timezone, never on
a public holiday"), delays, and the one rule for when an email may go: `next_send_time`. The
planner (when to plan a step), the dispatcher (whether a claimed email may go now), a resumed
pause and a new enrollment all ask it, so they always agree. A step that is not held to the
window (`send_window = false`: a welcome right after confirming) is given `ANY_TIME`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from tidings.campaigns.calendars import holiday_country, holiday_dates

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DELAY_PART = re.compile(r"(\d+)\s*([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# How far ahead next_open looks for an open day: a week, and holidays on top of it.
_SEARCH_DAYS = 400


def parse_delay(text: str | int) -> int:
    """'2d', '36h', '1d12h', '90m' or 0 -> seconds. Raises ValueError naming what is wrong."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"delay must not be negative, got {text}")
        return text
    if not isinstance(text, str):
        raise ValueError(f"delay must be a string like '2d' or '36h', got {text!r}")
    compact = text.replace(" ", "").lower()
    if compact == "0":
        return 0
    if not compact or _DELAY_PART.sub("", compact):
        raise ValueError(f"delay {text!r}: use a number with d, h, m or s, like '2d' or '1d12h'")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DELAY_PART.findall(compact))


def format_delay(seconds: int) -> str:
    """The inverse of parse_delay, for people: 172800 -> '2d', 5400 -> '1h30m'."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{rest // 60}m" if rest // 60 else "",
    ]
    return "".join(parts) or "0"


def parse_days(spec: str | list[str]) -> frozenset[int]:
    """'mon-fri', 'mon,wed,fri', ['sat', 'sun'] or 'all' -> weekday numbers (Monday = 0)."""
    items = spec if isinstance(spec, list) else spec.replace(" ", "").lower().split(",")
    days: set[int] = set()
    for item in items:
        item = str(item).strip().lower()
        if item in ("all", "every", "*"):
            return frozenset(range(7))
        first, _, last = item.partition("-")
        if first not in DAY_NAMES or (last and last not in DAY_NAMES):
            raise ValueError(f"days {spec!r}: expected names like 'mon-fri' or 'mon,wed,fri'")
        a = DAY_NAMES.index(first)
        b = DAY_NAMES.index(last) if last else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


@dataclass(frozen=True)
class SendWindow:
    """Local hours and weekdays during which a campaign may send. end <= start is not allowed.
    `skip_holidays`: a country code; the window is closed on the public holidays of the
    reader's country (from their timezone), or of this country when theirs is unknown."""

    start: time = time(0, 0)
    end: time = time(23, 59, 59, 999999)
    days: frozenset[int] = frozenset(range(7))
    skip_holidays: str | None = None

    @classmethod
    def parse(cls, hours: str | None, days: str | list[str] | None) -> SendWindow:
        window = cls()
        if hours:
            try:
                start_text, end_text = hours.replace(" ", "").split("-")
                start, end = time.fromisoformat(start_text), time.fromisoformat(end_text)
            except ValueError as exc:
                raise ValueError(f"window {hours!r}: expected 'HH:MM-HH:MM'") from exc
            if end <= start:
                raise ValueError(f"window {hours!r}: must end after it starts")
            window = cls(start, end, window.days)
        if days:
            window = cls(window.start, window.end, parse_days(days))
        if not window.days:
            raise ValueError("days: the window must include at least one day")
        return window

    @property
    def always_open(self) -> bool:
        return (
            len(self.days) == 7
            and self.start == time(0)
            and self.end >= time(23, 59, 59)
            and self.skip_holidays is None
        )

    def contains(self, at: datetime, tz: ZoneInfo) -> bool:
        local = at.astimezone(tz)
        return (
            local.weekday() in self.days
            and self.start <= local.time() < self.end
            and not self.is_holiday(local.date(), tz)
        )

    def is_holiday(self, day: date, tz: ZoneInfo) -> bool:
        """`day` (a date in `tz`) is a public holiday this window skips for a reader there."""
        if self.skip_holidays is None:
            return False
        country = holiday_country(tz.key or "UTC", self.skip_holidays)
        return day in holiday_dates(country, day.year)

    def next_open(self, at: datetime, tz: ZoneInfo) -> datetime:
        """`at` if the window is open then, else the moment it next opens (UTC)."""
        if self.always_open or self.contains(at, tz):
            return at
        local = at.astimezone(tz)
        for offset in range(_SEARCH_DAYS):
            day = local.date() + timedelta(days=offset)
            if day.weekday() not in self.days or self.is_holiday(day, tz):
                continue
            # Wall-clock opening time that day. zoneinfo's fold=0 moves a time that DST skips
            # forward (02:30 -> 03:30) and takes the first of a time that happens twice.
            opening = datetime.combine(day, self.start, tzinfo=tz).astimezone(UTC)
            # A window that lies wholly inside the hour DST skips is not open that day.
            if opening > at and self.contains(opening, tz):
                return opening
        # Unreachable: no country has a year of holidays.
        raise AssertionError("a window with at least one day opens within a week of holidays")


# Always open, every day including holidays: for steps sent as soon as they are due.
ANY_TIME = SendWindow()


def next_send_time(
    window: SendWindow, tz: ZoneInfo, earliest: datetime, paused_until: datetime | None = None
) -> datetime:
    """The first moment at or after `earliest`, and after the reader's pause if they paused,
    at which the window is open in the reader's timezone (and not a holiday it skips)."""
    if paused_until is not None and paused_until > earliest:
        earliest = paused_until
    return window.next_open(earliest, tz)


def stored_window(definition: Mapping[str, Any]) -> SendWindow:
    """The window a loaded campaign keeps in Campaign.definition (always open when absent)."""
    window = definition.get("window")
    if not window:
        return ANY_TIME
    return _window(
        window["start"], window["end"], tuple(window["days"]), window.get("skip_holidays")
    )


@lru_cache(maxsize=256)
def _window(start: str, end: str, days: tuple[int, ...], skip_holidays: str | None) -> SendWindow:
    return SendWindow(
        time.fromisoformat(start), time.fromisoformat(end), frozenset(days), skip_holidays
    )
