"""Campaigns: the list, one campaign with its steps and their funnel, pause and resume."""

from __future__ import annotations

import re
from typing import Any

from flask import redirect, render_template, request, url_for

from tidings.campaigns.sequencing import enroll_addresses
from tidings.campaigns.store import (
    campaign_details,
    campaign_summaries,
    get_campaign,
    pause,
    resume,
)
from tidings.errors import InvalidInput, NotFound
from tidings.ops.stats import campaign_stats
from tidings.web.staff import now, reading, staff_route, unit_of_work


@staff_route("/campaigns")
def campaigns() -> Any:
    with reading() as session:
        rows = campaign_summaries(session)
    return render_template("staff/campaigns.html", title="Campaigns", campaigns=rows)


@staff_route("/campaigns/<slug>")
def campaign(slug: str) -> Any:
    with reading() as session:
        try:
            info = campaign_details(session, slug)
        except NotFound:
            return render_template(
                "staff/message.html",
                title="No such campaign",
                message=f"There is no campaign {slug!r}.",
            ), 404
        # Only this campaign's funnel: not the list-wide counts `tidings stats` adds.
        funnel = campaign_stats(session, get_campaign(session, slug))
    enrolled = request.args.get("enrolled", type=int)
    notice = None
    if enrolled is not None:
        already = request.args.get("already", 0, type=int)
        notice = f"{enrolled} enrolled; {already} were in this series already."
    return render_template(
        "staff/campaign.html", title=info["name"], info=info, funnel=funnel, notice=notice
    )


@staff_route("/campaigns/<slug>/pause", permission="campaigns.pause", methods=("POST",))
def campaign_pause(slug: str) -> Any:
    reason = " ".join(request.form.get("reason", "").split())[:300]
    if not reason:
        raise InvalidInput("reason", "say why you pause it (the dashboard shows it)")
    with unit_of_work() as session:
        pause(session, now(), slug, reason)
    return redirect(url_for("staff.campaign", slug=slug), 303)


@staff_route("/campaigns/<slug>/resume", permission="campaigns.pause", methods=("POST",))
def campaign_resume(slug: str) -> Any:
    with unit_of_work() as session:
        resume(session, now(), slug)
    return redirect(url_for("staff.campaign", slug=slug), 303)


@staff_route("/campaigns/<slug>/enroll", permission="campaigns.enroll", methods=("POST",))
def campaign_enroll(slug: str) -> Any:
    """Start a series for subscribers who confirmed before it was loaded: the addresses
    typed (one a line, or separated by commas), or every active subscriber."""
    everyone = request.form.get("who") == "all-active"
    typed = [a for a in re.split(r"[\s,;]+", request.form.get("addresses", "")) if a]
    if not everyone and not typed:
        raise InvalidInput("addresses", "type at least one address, or choose every active one")
    with unit_of_work() as session:
        result = enroll_addresses(session, slug, None if everyone else typed, now())
    return redirect(
        url_for("staff.campaign", slug=slug, enrolled=result.added, already=result.already),
        303,
    )
