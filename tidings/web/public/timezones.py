"""The timezone names offered as suggestions in the forms (the field stays free text)."""

from __future__ import annotations

import functools
from zoneinfo import available_timezones

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
    return ("UTC", *sorted(z for z in available_timezones() if z.startswith(_REGIONS)))
