"""The sign-up form and the confirm link."""

from __future__ import annotations

import logging
from typing import Any

from flask import render_template, request

from tidings.db.models import Subscriber
from tidings.states import SubscriberStatus
from tidings.subscribers.forms import (
    Confirmed,
    InvalidFields,
    campaign_names,
    check_sign_up,
    confirm_campaign_names,
    request_subscription,
    resend_confirmation,
    subscriber_by_key,
    subscriber_for_token,
)
from tidings.subscribers.forms import confirm as confirm_subscriber
from tidings.subscribers.tokens import ExpiredToken, InvalidToken
from tidings.subscribers.validation import mask_email
from tidings.web.app import context
from tidings.web.public.common import (
    LIMITS,
    blueprint,
    consent_here,
    first_name,
    invalid_link,
    link_for,
    request_time,
    unit_of_work,
)
from tidings.web.public.timezones import timezone_choices


def sign_up_values() -> dict[str, str]:
    form = request.form
    return {
        field: (form.get(field) or "")[: limit + 1]  # enough to show it was too long
        for field, limit in LIMITS.items()
    }


def subscribe_form(
    values: dict[str, str], errors: dict[str, str], status: int, notice: str | None = None
) -> Any:
    ctx = context()
    return (
        render_template(
            "web/subscribe.html",
            title="Sign up",
            values=values,
            errors=errors,
            notice=notice,
            consent_text=ctx.consent_text,
            consent_version=ctx.consent_version,
            limits=LIMITS,
            timezones=timezone_choices(),
        ),
        status,
    )


def _sent() -> Any:
    # The one answer to every sign-up that passed the checks, whatever the address's state:
    # nothing in it depends on who is subscribed.
    return render_template("web/subscribe_sent.html", title="Check your inbox"), 200


log = logging.getLogger(__name__)


@blueprint.route("/subscribe", methods=["GET", "POST"])
def subscribe() -> Any:
    if request.method == "GET":
        return subscribe_form({"email": "", "name": "", "timezone": ""}, {}, 200)
    ctx = context()
    form = request.form
    values = sign_up_values()
    if form.get("website"):
        # The honeypot: a field people never see. A bot gets the usual answer and we store
        # nothing, so it learns nothing.
        return _sent()
    errors: dict[str, str] = {}
    sign_up = None
    try:
        sign_up = check_sign_up(form.get("email"), form.get("name"), form.get("timezone"))
    except InvalidFields as exc:
        errors.update(exc.errors)
    if form.get("consent") != "yes":
        errors["consent"] = "Please tick the box if you agree to receive these emails."
    elif form.get("consent_version") != ctx.consent_version:
        errors["consent"] = (
            "The wording of this agreement has changed since the form was loaded. "
            "Please read it and tick the box again."
        )
    if errors or sign_up is None:
        return subscribe_form(values, errors, 422)
    origin = (request.headers.get("Origin") or "").lower().rstrip("/")
    where = origin if origin in ctx.form_origins else f"{ctx.settings.public_base_url}/subscribe"
    with unit_of_work() as session:
        outcome = request_subscription(
            session,
            request_time(),
            sign_up,
            consent_here("contact-form", f"sign-up form at {where}", ctx.consent_text),
            message_domain=ctx.settings.sender_domain,
            resend_after=ctx.resend_after,
        )
    log.info("sign-up form: %s: %s", mask_email(sign_up.email), outcome)
    return _sent()


# ----------------------------------------------------------------------------- confirm


# Long: each state of the link (expired, for nobody, pending, active, gone) in turn.
@blueprint.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str) -> Any:
    """GET: confirm (idempotent). POST: send a new confirmation email (from the page shown for
    an expired link)."""
    ctx = context()
    now = request_time()
    expired = False
    with unit_of_work() as session:
        try:
            subscriber: Subscriber | None = subscriber_for_token(
                session,
                ctx.secret,
                "confirm",
                token,
                now,
                max_age=ctx.confirm_max_age,
            )
        except ExpiredToken as exc:
            expired = True
            subscriber = subscriber_by_key(session, exc.subscriber_key)
        except InvalidToken:
            subscriber = None
        if subscriber is None:
            return invalid_link("confirm")
        if request.method == "POST":
            resend_confirmation(
                session, subscriber, now, ctx.settings.sender_domain, ctx.resend_after
            )
            # The same page whether or not an email was queued (throttled, already confirmed).
            return render_template("web/confirm_resent.html", title="Check your inbox"), 200
        if expired and subscriber.status != SubscriberStatus.ACTIVE:
            return (
                render_template(
                    "web/confirm_expired.html",
                    title="This link has expired",
                    token=token,
                    can_resend=subscriber.status == SubscriberStatus.PENDING,
                ),
                410,
            )
        result = confirm_subscriber(
            session, subscriber, consent_here("email", "opened the confirmation link"), now
        )
        if result == Confirmed.GONE:
            return (
                render_template("web/confirm_gone.html", title="This link no longer applies"),
                409,
            )
        campaigns = campaign_names(session, subscriber) or confirm_campaign_names(session)
        page = render_template(
            "web/confirmed.html",
            title="You are subscribed",
            already=result == Confirmed.ALREADY,
            first_name=first_name(subscriber),
            campaigns=campaigns,
            timezone=subscriber.timezone,
            preferences_url=link_for("preferences", subscriber),
            unsubscribe_url=link_for("unsubscribe", subscriber),
        )
        if result == Confirmed.NOW:
            log.info("confirmed: %s", mask_email(subscriber.email))
    return page, 200
