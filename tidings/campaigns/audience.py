"""Who a broadcast goes to: every active subscriber, or those matching a simple filter.

    [audience]                       # in campaign.toml; `schedule` options may replace it
    timezones = ["Europe/*", "America/New_York"]   # IANA names, * matches any run of text
    enrolled = "kap-benefits"        # is in (or finished) that sequence
    not_enrolled = "kap-benefits"    # never started it, or left it
    [audience.attributes]
    clinic = "portland"              # an imported attribute equals this (or one of a list)

Every condition must hold. Only active subscribers are ever chosen, and never from clinical
data: attributes are what an operator imported, compared as text. `Audience` is the filter
(pure); `audience_filter` and `iter_audience` are its query.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.orm import Session

from tidings.clock import zone
from tidings.db.models import Campaign, Enrollment, Subscriber
from tidings.states import EnrollmentStatus, SubscriberStatus

AUDIENCE_FIELDS = ("timezones", "enrolled", "not_enrolled", "attributes")
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")  # as in definition.py
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TZ_PATTERN = re.compile(r"^[A-Za-z0-9_+*/-]{1,64}$")


@dataclass(frozen=True)
class Audience:
    timezones: tuple[str, ...] = ()
    enrolled: str | None = None
    not_enrolled: str | None = None
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)

    @property
    def everyone(self) -> bool:
        return not (self.timezones or self.enrolled or self.not_enrolled or self.attributes)

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None) -> Audience:
        """From campaign.toml's [audience] or a stored schedule. Raises ValueError naming the
        field that is wrong."""
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError("audience: expected a table of conditions")
        unknown = sorted(set(data) - set(AUDIENCE_FIELDS))
        if unknown:
            raise ValueError(
                f"audience: unknown field(s) {unknown} (known: {', '.join(AUDIENCE_FIELDS)})"
            )
        timezones = data.get("timezones", [])
        if isinstance(timezones, str):
            timezones = [timezones]
        if not isinstance(timezones, list) or not all(isinstance(t, str) for t in timezones):
            raise ValueError("audience.timezones: expected a list of timezone names")
        for pattern in timezones:
            check_timezone_pattern(pattern)
        slugs = {}
        for name in ("enrolled", "not_enrolled"):
            value = data.get(name)
            if value is not None and (not isinstance(value, str) or not SLUG.match(value)):
                raise ValueError(f"audience.{name}: expected a campaign slug, got {value!r}")
            slugs[name] = value
        raw_attributes = data.get("attributes", {})
        if not isinstance(raw_attributes, Mapping):
            raise ValueError('audience.attributes: expected a table like { clinic = "x" }')
        attributes = []
        for key, value in sorted(raw_attributes.items()):
            if not _ATTRIBUTE_NAME.match(str(key)):
                raise ValueError(f"audience.attributes: bad attribute name {key!r}")
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str | int | float) for v in values):
                raise ValueError(
                    f"audience.attributes.{key}: expected text, or a list of texts, got {value!r}"
                )
            attributes.append((str(key), tuple(str(v) for v in values)))
        return cls(
            timezones=tuple(timezones),
            enrolled=slugs["enrolled"],
            not_enrolled=slugs["not_enrolled"],
            attributes=tuple(attributes),
        )

    def as_stored(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.timezones:
            data["timezones"] = list(self.timezones)
        if self.enrolled:
            data["enrolled"] = self.enrolled
        if self.not_enrolled:
            data["not_enrolled"] = self.not_enrolled
        if self.attributes:
            data["attributes"] = {k: list(v) for k, v in self.attributes}
        return data

    def matches_attributes(self, attributes: Mapping[str, Any] | None) -> bool:
        attributes = attributes or {}
        for key, wanted in self.attributes:
            value = attributes.get(key)
            if value is None or str(value) not in wanted:
                return False
        return True

    def describe(self) -> str:
        if self.everyone:
            return "every active subscriber"
        parts = []
        if self.timezones:
            parts.append("timezone " + " or ".join(self.timezones))
        if self.enrolled:
            parts.append(f"enrolled in {self.enrolled}")
        if self.not_enrolled:
            parts.append(f"not enrolled in {self.not_enrolled}")
        for key, values in self.attributes:
            parts.append(f"{key} = " + " or ".join(repr(v) for v in values))
        return "active subscribers with " + ", ".join(parts)


def audience_from_options(
    where: Sequence[str],
    timezones: Sequence[str],
    enrolled: str | None,
    not_enrolled: str | None,
) -> Audience | None:
    """An audience from command-line style options (`--where clinic=portland`), or None when
    none is given (the campaign's own [audience], or everyone). ValueError names what is
    wrong."""
    if not (where or timezones or enrolled or not_enrolled):
        return None
    attributes: dict[str, list[str]] = {}
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--where: expected KEY=VALUE, got {item!r}")
        attributes.setdefault(key.strip(), []).append(value.strip())
    return Audience.parse(
        {
            "timezones": list(timezones),
            "attributes": attributes,
            **({"enrolled": enrolled} if enrolled else {}),
            **({"not_enrolled": not_enrolled} if not_enrolled else {}),
        }
    )


def check_timezone_pattern(pattern: str) -> None:
    """An IANA name ("Europe/Paris") or a pattern with * ("America/*")."""
    if not _TZ_PATTERN.match(pattern):
        raise ValueError(f"audience.timezones: {pattern!r} is not a timezone name or pattern")
    if "*" in pattern:
        return
    try:
        zone(pattern)
    except ValueError as exc:
        raise ValueError(
            f"audience.timezones: unknown timezone {pattern!r} (use IANA names such as "
            "Europe/Paris, or a pattern such as America/*)"
        ) from exc


def like_pattern(pattern: str) -> str:
    """SQL LIKE for a timezone pattern: * is any text; _ and % are literal in zone names."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def audience_filter(query: Select[Any], session: Session, audience: Audience) -> Select[Any]:
    """Add the SQL part of an audience (status, timezones, enrollment) to a subscriber query.
    Attributes are compared in Python (`Audience.matches_attributes`): exact on every
    database, and the rows are streamed anyway."""
    query = query.where(Subscriber.status == SubscriberStatus.ACTIVE)
    if audience.timezones:
        query = query.where(
            or_(
                *(
                    Subscriber.timezone.like(like_pattern(p), escape="\\")
                    if "*" in p
                    else Subscriber.timezone == p
                    for p in audience.timezones
                )
            )
        )
    for slug, wanted in ((audience.enrolled, True), (audience.not_enrolled, False)):
        if not slug:
            continue
        campaign_id = session.scalar(select(Campaign.id).where(Campaign.slug == slug)) or -1
        in_it = exists().where(
            Enrollment.subscriber_id == Subscriber.id,
            Enrollment.campaign_id == campaign_id,
            Enrollment.status.in_((EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED)),
        )
        query = query.where(in_it if wanted else ~in_it)
    return query


def iter_audience(
    session: Session, audience: Audience, batch: int = 1000
) -> Iterator[list[tuple[int, str]]]:
    """(id, timezone) of the matching subscribers, batch by batch, in id order."""
    after = 0
    while True:
        rows = session.execute(
            audience_filter(
                select(Subscriber.id, Subscriber.timezone, Subscriber.attributes), session, audience
            )
            .where(Subscriber.id > after)
            .order_by(Subscriber.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        yield [(r.id, r.timezone) for r in rows if audience.matches_attributes(r.attributes)]


def count_audience(session: Session, audience: Audience) -> tuple[int, dict[str, int]]:
    """How many subscribers match now, and how many per timezone."""
    zones: dict[str, int] = {}
    for rows in iter_audience(session, audience):
        for _, tz in rows:
            zones[tz] = zones.get(tz, 0) + 1
    return sum(zones.values()), zones
