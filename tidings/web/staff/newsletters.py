"""Newsletters (broadcast campaigns): their state and results; one newsletter's page, where it
is scheduled (at an instant, or at a time of day in each reader's own timezone, to the
audience the filters choose, counted first), unscheduled or cancelled. Pause and resume are
the campaign page's.

The form is the CLI's `campaigns schedule` options, and goes through the same functions:
the Count button (a GET: nothing changes) shows who matches and when it would go, with a
Schedule button that posts exactly what was counted.
"""

from __future__ import annotations

import re
from typing import Any

from flask import redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from tidings.campaigns.audience import Audience, audience_from_options
from tidings.campaigns.broadcasts import (
    BroadcastError,
    ScheduleReport,
    cancel_broadcast,
    count_recipients,
    newsletter_overview,
    schedule_broadcast,
    unschedule_broadcast,
)
from tidings.campaigns.store import list_campaigns
from tidings.errors import InvalidInput, TidingsError
from tidings.ops.stats import campaign_stats
from tidings.states import CampaignKind
from tidings.web.public.timezones import timezone_choices
from tidings.web.staff import now, reading, staff_route, unit_of_work

MODES = ("instant", "local", "now")
_SPLIT = re.compile(r"[,\s]+")
# The library speaks in the CLI's options; the form's fields have names of their own.
_FIELD_WORDS = (
    ("--at now", "“now”"),
    ("--local-time", "“at this time in each reader's own timezone”"),
    ("--at", "Time"),
    ("--tz", "Timezone"),
    ("--where", "Attributes"),
)


@staff_route("/newsletters")
def newsletters() -> Any:
    with reading() as session:
        rows = newsletter_overview(session)
        results = {r["slug"]: _results(session, r) for r in rows}
    return render_template(
        "staff/newsletters.html", title="Newsletters", rows=rows, results=results
    )


@staff_route("/newsletters/<slug>")
def newsletter(slug: str) -> Any:
    if not request.args.get("count"):
        return _page(slug, _form_of(None, request.args))
    try:
        at, tz, local_time, audience = _plan(request.args, need_time=False)
        with reading() as session:
            report = count_recipients(session, slug, now(), at, tz, local_time, audience)
    except TidingsError as exc:
        return _page(slug, _form_of(None, request.args), error=_in_words(exc), status=400)
    return _page(slug, _form_of(None, request.args), count=report)


@staff_route("/newsletters/<slug>/schedule", permission="newsletters.schedule", methods=("POST",))
def newsletter_schedule(slug: str) -> Any:
    try:
        at, tz, local_time, audience = _plan(request.form, need_time=True)
        with unit_of_work() as session:
            report = schedule_broadcast(session, slug, at, now(), tz, local_time, audience)
    except TidingsError as exc:
        return _page(slug, _form_of(None, request.form), error=_in_words(exc), status=400)
    done = "unchanged" if report.unchanged else "scheduled"
    return redirect(url_for("staff.newsletter", slug=slug, done=done), 303)


@staff_route("/newsletters/<slug>/unschedule", permission="newsletters.schedule", methods=("POST",))
def newsletter_unschedule(slug: str) -> Any:
    with unit_of_work() as session:
        unschedule_broadcast(session, slug, now())
    return redirect(url_for("staff.newsletter", slug=slug, done="unscheduled"), 303)


@staff_route("/newsletters/<slug>/cancel", permission="newsletters.schedule", methods=("POST",))
def newsletter_cancel(slug: str) -> Any:
    with unit_of_work() as session:
        cancel_broadcast(session, slug, now())
    return redirect(url_for("staff.newsletter", slug=slug, done="cancelled"), 303)


# ----------------------------------------------------------------------------- the page

NOTICES = {
    "scheduled": "Scheduled. Who gets it is read when it is due: people who subscribe until "
    "then get it too.",
    "unchanged": "It was already scheduled just so: nothing changed.",
    "unscheduled": "Unscheduled: nothing more goes out, and emails queued but not sent were "
    "taken back. It can be scheduled again; nobody gets it twice.",
    "cancelled": "Cancelled for good: nothing more goes out.",
}


def _page(
    slug: str,
    form: dict[str, Any],
    count: ScheduleReport | None = None,
    error: str | None = None,
    status: int = 200,
) -> Any:
    with reading() as session:
        (row,) = newsletter_overview(session, slug)
        results = _results(session, row)
        sequences = [c.slug for c in list_campaigns(session) if c.kind == CampaignKind.SEQUENCE]
    if not request.args.get("count") and request.method == "GET" and row["scheduled"]:
        form = _form_of(row["scheduled"], MultiDict())
    page = render_template(
        "staff/newsletter.html",
        title=row["name"],
        row=row,
        results=results,
        form=form,
        count=count,
        sequences=sequences,
        timezones=timezone_choices(),
        notice=NOTICES.get(request.args.get("done", "")),
        error=error,
    )
    return page, status


def _results(session: Any, row: dict[str, Any]) -> dict[str, int] | None:
    """Sent, bounced, unsubscribed after it...: once anything was planned (ops.stats)."""
    if not row["planned"]:
        return None
    steps = campaign_stats(session, row["campaign"])["steps"]
    return next((s for s in steps if s["key"] == row["step"]), None)


def _form_of(scheduled: dict[str, Any] | None, values: MultiDict[str, str]) -> dict[str, Any]:
    """The form's fields: from what was sent (kept after an error, or counted), or from the
    stored schedule when the page is opened."""
    if scheduled is not None:
        audience = Audience.parse(scheduled["audience"])
        return {
            "when": "local" if scheduled["local_time"] else "instant",
            "at": scheduled["at"],
            "tz": "" if scheduled["local_time"] else scheduled["tz"],
            "where": [f"{k}={v}" for k, vs in audience.attributes for v in vs],
            "timezones": " ".join(audience.timezones),
            "enrolled": audience.enrolled or "",
            "not_enrolled": audience.not_enrolled or "",
        }
    return {
        "when": values.get("when", "instant"),
        "at": values.get("at", "")[:40],
        "tz": values.get("tz", "")[:64],
        "where": _lines(values.getlist("where")),
        "timezones": values.get("timezones", "")[:1000],
        "enrolled": values.get("enrolled", "")[:64],
        "not_enrolled": values.get("not_enrolled", "")[:64],
    }


def _lines(values: list[str]) -> list[str]:
    return [line.strip() for value in values for line in value[:2000].splitlines() if line.strip()]


def _plan(
    values: MultiDict[str, str], need_time: bool
) -> tuple[str, str | None, bool, Audience | None]:
    """The form as `schedule_broadcast`'s arguments: at, tz, local_time, audience."""
    form = _form_of(None, values)
    mode = form["when"]
    if mode not in MODES:
        raise InvalidInput("when", f"expected one of {', '.join(MODES)}, got {mode!r}")
    at = "now" if mode == "now" else form["at"].strip()
    if need_time and not at:
        raise InvalidInput("Time", "give a date and time, such as 2026-12-03 10:00")
    tz = (form["tz"].strip() or "UTC") if mode == "instant" else None
    try:
        audience = audience_from_options(
            form["where"],
            [p for p in _SPLIT.split(form["timezones"]) if p],
            form["enrolled"] or None,
            form["not_enrolled"] or None,
        )
    except ValueError as exc:  # names the filter: "audience.timezones: unknown timezone..."
        raise BroadcastError(str(exc)) from exc
    return at, tz, mode == "local", audience


def _in_words(exc: TidingsError) -> str:
    message = str(exc)
    for option, words in _FIELD_WORDS:
        message = message.replace(option, words)
    return message
