"""The sign-up form, the confirm link and the come-back link."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from flask import render_template, request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from tidings.campaigns.store import series_on_confirm
from tidings.db.models import Subscriber
from tidings.states import SubscriberStatus
from tidings.subscribers.forms import (
    Confirmed,
    InvalidFields,
    campaign_names,
    check_sign_up,
    come_back,
    confirm_campaign_names,
    subscriber_by_key,
    subscriber_for_token,
)
from tidings.subscribers.forms import confirm as confirm_subscriber
from tidings.subscribers.lifecycle import Consent, may_come_back
from tidings.subscribers.signups import receive, resend_confirmation
from tidings.subscribers.tokens import ExpiredToken, InvalidToken, token_time
from tidings.subscribers.validation import mask_email
from tidings.web.app import context
from tidings.web.public.common import (
    LIMITS,
    blueprint,
    consent_here,
    first_name,
    invalid_link,
    link_for,
    reading,
    request_time,
    unit_of_work,
)
from tidings.web.public.timezones import DEFAULT_TIMEZONE, timezone_choices, timezone_in_words

log = logging.getLogger(__name__)


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
    try:
        with reading() as session:
            outlines = series_on_confirm(session)
    except SQLAlchemyError as exc:
        # The form still shows (it says what it can); sending it will meet the same trouble.
        log.warning("sign-up page: the series could not be read: %s", type(exc).__name__)
        outlines = []
    return (
        render_template(
            "web/subscribe.html",
            title="Sign up" if status < 400 else "Error: Sign up",
            outlines=outlines,
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


@blueprint.route("/subscribe", methods=["GET", "POST"])
def subscribe() -> Any:
    if request.method != "POST":
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
    consent = consent_here("contact-form", f"sign-up form at {where}", ctx.consent_text)
    with unit_of_work() as session:
        receive(session, sign_up, consent, request_time())
    return _sent()


# ----------------------------------------------------------------------------- confirm
# Opening a link is not consent: mail scanners and chat previews open links too. GET (and
# HEAD) show a page with one button and change nothing; only its POST confirms. The POST
# carries no CSRF token (it must work in any browser, even one that never saw our pages):
# the signed, expiring token in the URL is the authority.


def _link_subscriber(
    session: Session, scope: str, token: str, now: datetime
) -> tuple[Subscriber | None, bool]:
    """(whose link it is, whether it has expired); (None, False) for a link for nobody."""
    ctx = context()
    try:
        return subscriber_for_token(
            session, ctx.secret, scope, token, now, max_age=ctx.confirm_max_age
        ), False
    except ExpiredToken as exc:
        return subscriber_by_key(session, exc.subscriber_key), True
    except InvalidToken:
        return None, False


def _expired(token: str, subscriber: Subscriber, scope: str) -> Any:
    # Expired for everyone, whatever became of the address: an old link opens nothing.
    can_resend = scope == "confirm" and subscriber.status == SubscriberStatus.PENDING
    page = render_template(
        "web/link_expired.html",
        title="Error: This link has expired",
        token=token,
        can_resend=can_resend,
    )
    return page, 410


def _clicked(token: str, what: str) -> Consent:
    """The evidence of a button pressed on a link's page: where from, and how long after the
    email was made (its token says when)."""
    sent = token_time(token)
    seconds = int((request_time() - sent).total_seconds()) if sent is not None else None
    return replace(consent_here("email", what), seconds_after_email=seconds)


def _subscribed_page(session: Session, subscriber: Subscriber, already: bool) -> Any:
    names = campaign_names(session, subscriber) or confirm_campaign_names(session)
    outlines = {series.name: series.in_words for series in series_on_confirm(session)}
    page = render_template(
        "web/confirmed.html",
        title="You are subscribed",
        already=already,
        first_name=first_name(subscriber),
        campaigns=[(name, outlines.get(name)) for name in names],
        timezone=timezone_in_words(subscriber.timezone),
        timezone_is_default=subscriber.timezone == DEFAULT_TIMEZONE,
        preferences_url=link_for("preferences", subscriber),
        unsubscribe_url=link_for("unsubscribe", subscriber),
    )
    return page, 200


def _gone() -> Any:
    page = render_template("web/confirm_gone.html", title="Error: This link no longer applies")
    return page, 409


@blueprint.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str) -> Any:
    """GET: the question. POST: confirm (idempotent)."""
    now = request_time()
    with unit_of_work() as session:
        subscriber, expired = _link_subscriber(session, "confirm", token, now)
        if subscriber is None:
            return invalid_link("confirm")
        if expired:
            return _expired(token, subscriber, "confirm")
        if request.method != "POST":  # GET or HEAD: the question, nothing changes
            if subscriber.status == SubscriberStatus.PENDING:
                return render_template("web/confirm_ask.html", title="Confirm", token=token)
            if subscriber.status == SubscriberStatus.ACTIVE:
                return _subscribed_page(session, subscriber, already=True)
            return _gone()
        consent = _clicked(token, "pressed 'Yes, subscribe me' on the confirmation page")
        result = confirm_subscriber(session, subscriber, consent, now)
        if result == Confirmed.GONE:
            return _gone()
        if result == Confirmed.NOW:
            log.info("confirmed: %s", mask_email(subscriber.email))
        return _subscribed_page(session, subscriber, already=result == Confirmed.ALREADY)


@blueprint.post("/confirm/<token>/resend")
def confirm_resend(token: str) -> Any:
    """From the page of an expired link: a new confirmation email, within the usual limits."""
    ctx = context()
    now = request_time()
    with unit_of_work() as session:
        subscriber, _ = _link_subscriber(session, "confirm", token, now)
        if subscriber is None:
            return invalid_link("confirm")
        resend_confirmation(session, subscriber, now, ctx.settings, ctx.secret)
    # The same page whether or not an email was queued (mailed recently, a cap, confirmed).
    return render_template("web/confirm_resent.html", title="Check your inbox"), 200


@blueprint.route("/comeback/<token>", methods=["GET", "POST"])
def comeback(token: str) -> Any:
    """The link of the come-back email. GET: the question. POST: back on the list, where
    they left it (idempotent)."""
    now = request_time()
    with unit_of_work() as session:
        subscriber, expired = _link_subscriber(session, "comeback", token, now)
        if subscriber is None:
            return invalid_link("comeback")
        if expired:
            return _expired(token, subscriber, "comeback")
        if subscriber.status == SubscriberStatus.ACTIVE:
            return _subscribed_page(session, subscriber, already=True)
        if not may_come_back(session, subscriber):
            return _gone()
        if request.method != "POST":  # GET or HEAD: the question, nothing changes
            page = render_template(
                "web/comeback_ask.html",
                title="Receive our emails again?",
                token=token,
                campaigns=confirm_campaign_names(session),
            )
            return page, 200
        consent = _clicked(token, "pressed 'Yes, send me these emails again' (come-back email)")
        come_back(session, subscriber, consent, now)
        log.info("came back: %s", mask_email(subscriber.email))
        return _subscribed_page(session, subscriber, already=False)
