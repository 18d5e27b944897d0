"""The timezone names offered as suggestions in the forms (the field stays free text)."""

from __future__ import annotations

import functools
from zoneinfo import available_timezones

# What an empty timezone field becomes (subscribers.validation.check_timezone).
DEFAULT_TIMEZONE = "UTC"

# Region/City names people recognize; the rest (Etc/GMT+5, US/Eastern, EST5EDT...) are
# accepted if typed but not suggested.
_REGIONS = (
    "Africa/",
    "America/",
    "Antarctica/",
    "Asia/",
    "Atlantic/",
    "Australia/",
    "Europe/",
    "Indian/",
    "Pacific/",
)


@functools.cache
def timezone_choices() -> tuple[str, ...]:
    return (DEFAULT_TIMEZONE, *sorted(z for z in available_timezones() if z.startswith(_REGIONS)))


# Names of Coordinated Universal Time (and of Greenwich Mean Time, the same clock).
_UNIVERSAL = frozenset(
    {"UTC", "UCT", "GMT", "Greenwich", "Universal", "Zulu", "GMT0", "GMT+0", "GMT-0"}
)


def timezone_in_words(name: str) -> str:
    """A timezone as people say it: 'Paris time', 'New York time', 'Greenwich Mean Time
    (GMT)' (what UTC, the default, is called outside computing). Names that are not a place
    (EST5EDT, Etc/GMT+5) stay as they are."""
    place = name.removeprefix("Etc/")
    if place in _UNIVERSAL:
        return "Greenwich Mean Time (GMT)"
    if "/" not in name or name.startswith("Etc/"):
        return name
    return f"{name.rsplit('/', 1)[1].replace('_', ' ')} time"
