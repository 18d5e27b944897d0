"""Public holidays, and which country's apply to a reader: what `[schedule] skip_holidays`
needs.

A subscriber stores an IANA timezone, not a country. The tz database's own tables say where
a zone is: zone.tab gives each zone (and each country's own name for it: Europe/Vaduz) one
country, zone1970.tab the countries sharing a zone, most populous first. They are read from
the `tzdata` wheel (the same files on every system), else from the system's zoneinfo folder.
An old name (US/Eastern, Japan) is followed to its zone through tzdata.zi's links. UTC, Etc/*
and abbreviations (EST, CET) name no place: they have no country.

Holiday dates come from the `holidays` package (imported only when first needed: it takes
a twentieth of a second), computed once per (country, year) and kept (the most recent
HOLIDAY_SETS_KEPT of them): the planner asks for every email it plans, and then pays a cache
and a set lookup.
"""

from __future__ import annotations

import zoneinfo
from datetime import date
from functools import lru_cache
from importlib import resources
from pathlib import Path

# Links that name a time, not a place: EST is a link to America/Panama, CET to Brussels.
TIME_NAMES = frozenset({"CET", "EET", "MET", "WET", "EST", "MST", "HST"})

# (country, year) sets kept: a few years ahead for every country of a worldwide list.
HOLIDAY_SETS_KEPT = 1024


@lru_cache(maxsize=HOLIDAY_SETS_KEPT)
def holiday_dates(country: str, year: int) -> frozenset[date]:
    """The public holidays (observed days included) of `country` in `year`."""
    import holidays

    return frozenset(holidays.country_holidays(country, years=year))


@lru_cache(maxsize=1)
def supported_countries() -> frozenset[str]:
    """Country codes the `holidays` package knows (ISO 3166 alpha-2, and aliases like UK)."""
    import holidays

    return frozenset(holidays.list_supported_countries(include_aliases=True))


@lru_cache(maxsize=4096)
def holiday_country(zone: str, campaign_country: str) -> str:
    """Whose holidays a reader in `zone` keeps: their country's when the tz tables place the
    zone in one the `holidays` package knows, else the campaign's."""
    country = zone_country(zone)
    if country is not None and country in supported_countries():
        return country
    return campaign_country


@lru_cache(maxsize=4096)
def zone_country(zone: str) -> str | None:
    """The ISO 3166 code of the country an IANA zone is in, or None (UTC, Etc/GMT+5, EST, a
    name the tables do not place)."""
    if zone in TIME_NAMES or zone.startswith("Etc/"):
        return None
    tables = _zone_tables()
    if zone in tables:
        return tables[zone]
    target = _links().get(zone)
    for _ in range(4):  # links point at zones; a chain is followed a few steps at most
        if target is None or target in tables:
            break
        target = _links().get(target)
    return tables.get(target) if target is not None else None


@lru_cache(maxsize=1)
def _zone_tables() -> dict[str, str]:
    """zone -> country: zone.tab's entry, else zone1970.tab's first (most populous) one."""
    countries: dict[str, str] = {}
    for name in ("zone.tab", "zone1970.tab"):
        for line in _tz_file(name).splitlines():
            fields = line.split("\t")
            if line.startswith("#") or len(fields) < 3:
                continue
            countries.setdefault(fields[2], fields[0].split(",")[0])
    return countries


@lru_cache(maxsize=1)
def _links() -> dict[str, str]:
    """Old or alternative name -> the zone it stands for, from tzdata.zi's `L` lines."""
    links = {}
    for line in _tz_file("tzdata.zi").splitlines():
        if line.startswith("L "):
            _, target, name = line.split()[:3]
            links[name] = target
    return links


def _tz_file(name: str) -> str:
    """A file of the tz database: the tzdata wheel's, else the system's; '' if neither."""
    try:
        return (resources.files("tzdata") / "zoneinfo" / name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    for folder in zoneinfo.TZPATH:
        path = Path(folder) / name
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return ""
