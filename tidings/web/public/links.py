"""The links in every email: unsubscribe (RFC 8058 one-click too) and preferences."""

from __future__ import annotations

import logging
from typing import Any

from flask import abort, render_template, request, url_for

from tidings.db.models import Subscriber
from tidings.errors import Conflict, InvalidInput
from tidings.states import SubscriberStatus
from tidings.subscribers.forms import (
    PAUSE_WEEKS,
    TIMEZONE_MAX_CHARS,
    InvalidFields,
    campaign_names,
    check_profile,
    pause,
    resume,
    update_profile,
)
from tidings.subscribers.lifecycle import unsubscribe as unsubscribe_subscriber
from tidings.subscribers.validation import NAME_MAX_CHARS, mask_email
from tidings.web.public.common import (
    LIMITS,
    ONE_CLICK_FIELD,
    ONE_CLICK_VALUE,
    STILL_RECEIVING,
    blueprint,
    invalid_link,
    link_for,
    local_date,
    lookup,
    request_time,
    unit_of_work,
)
from tidings.web.public.timezones import timezone_choices

log = logging.getLogger(__name__)


@blueprint.route("/unsubscribe/<token>", methods=["GET", "POST"])
def unsubscribe(token: str) -> Any:
    """GET: one button. POST: unsubscribe now; with the body List-Unsubscribe=One-Click
    (RFC 8058, sent by mail providers) without a CSRF token and without any page to press."""
    now = request_time()
    with unit_of_work() as session:
        subscriber = lookup(session, "unsubscribe", token)
        if subscriber is None:
            return invalid_link("unsubscribe")
        if request.method == "POST":
            one_click = request.form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE
            # Bounced and complained addresses already get nothing; keep why.
            if subscriber.status in STILL_RECEIVING:
                unsubscribe_subscriber(
                    session, subscriber, "one-click" if one_click else "unsubscribe-page", now
                )
                log.info(
                    "unsubscribed (%s): %s",
                    "one-click" if one_click else "page",
                    mask_email(subscriber.email),
                )
            return _unsubscribed_page()
        if subscriber.status not in STILL_RECEIVING:
            return _unsubscribed_page()
        active = subscriber.status == SubscriberStatus.ACTIVE
        page = render_template(
            "web/unsubscribe.html",
            title="Unsubscribe",
            token=token,
            campaigns=campaign_names(session, subscriber),
            pending=not active,
            # Only an active subscriber can pause: the pause part of their preferences page.
            pause_url=f"{link_for('preferences', subscriber)}#pause" if active else None,
            pause_choices=_weeks_in_words(PAUSE_WEEKS),
        )
    return page, 200


def _weeks_in_words(choices: tuple[int, ...]) -> str:
    """(1, 2, 4) -> '1, 2 or 4 weeks'."""
    numbers = [str(n) for n in choices]
    listed = numbers[0] if len(numbers) == 1 else f"{', '.join(numbers[:-1])} or {numbers[-1]}"
    return f"{listed} week{'s' if choices[-1] > 1 else ''}"


def _unsubscribed_page() -> Any:
    return (
        render_template(
            "web/unsubscribed.html",
            title="You are unsubscribed",
            subscribe_url=url_for("pages.subscribe"),
        ),
        200,
    )


# ----------------------------------------------------------------------------- preferences


def _preferences_page(
    subscriber: Subscriber,
    token: str,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
) -> Any:
    now = request_time()
    paused = subscriber.paused_until is not None and subscriber.paused_until > now
    return (
        render_template(
            "web/preferences.html",
            title="Your email preferences" if status < 400 else "Error: Your email preferences",
            token=token,
            values=values or {"name": subscriber.name, "timezone": subscriber.timezone},
            errors=errors or {},
            notice=notice,
            active=subscriber.status == SubscriberStatus.ACTIVE,
            paused_until=(
                local_date(subscriber.paused_until, subscriber.timezone)
                if paused and subscriber.paused_until
                else None
            ),
            pause_weeks=PAUSE_WEEKS,
            limits=LIMITS,
            timezones=timezone_choices(),
        ),
        status,
    )


@blueprint.route("/preferences/<token>", methods=["GET", "POST"])
def preferences(token: str) -> Any:
    """Change name and timezone, pause for 1, 2 or 4 weeks, resume, or leave."""
    now = request_time()
    with unit_of_work() as session:
        subscriber = lookup(session, "preferences", token)
        if subscriber is None:
            return invalid_link("preferences")
        if subscriber.status not in STILL_RECEIVING:
            page = render_template(
                "web/preferences_closed.html",
                title="Your email preferences",
                subscribe_url=url_for("pages.subscribe"),
            )
            return page, (409 if request.method == "POST" else 200)
        if request.method != "POST":
            return _preferences_page(subscriber, token)
        action = request.form.get("action")
        if action == "save":
            values = {
                "name": (request.form.get("name") or "")[: NAME_MAX_CHARS + 1],
                "timezone": (request.form.get("timezone") or "")[: TIMEZONE_MAX_CHARS + 1],
            }
            try:
                profile = check_profile(request.form.get("name"), request.form.get("timezone"))
            except InvalidFields as exc:
                return _preferences_page(subscriber, token, 422, values, exc.errors)
            changed = update_profile(session, subscriber, profile, now)
            notice = "Your details are saved." if changed else "Nothing to change."
            return _preferences_page(subscriber, token, notice=notice)
        if action == "pause":
            try:
                weeks = int(request.form.get("weeks") or "")
            except ValueError:
                weeks = 0
            try:
                until = pause(session, subscriber, weeks, now)
            except InvalidInput as exc:
                return _preferences_page(subscriber, token, 422, errors={"weeks": exc.reason})
            except Conflict:
                return _preferences_page(
                    subscriber, token, 409, notice="Please confirm your subscription first."
                )
            notice = (
                f"Your emails are paused until {local_date(until, subscriber.timezone)}. "
                "Nothing is skipped: the series continues where it stopped."
            )
            return _preferences_page(subscriber, token, notice=notice)
        if action == "resume":
            resumed = resume(session, subscriber, now)
            notice = (
                "Your emails will continue, at the usual pace."
                if resumed
                else "Your emails were not paused."
            )
            return _preferences_page(subscriber, token, notice=notice)
        if action == "leave":
            unsubscribe_subscriber(session, subscriber, "preferences-page", now)
            log.info("unsubscribed (preferences): %s", mask_email(subscriber.email))
            return _unsubscribed_page()
    abort(400)
