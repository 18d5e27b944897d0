"""The public pages: sign up, confirm, unsubscribe (incl. RFC 8058 one-click), preferences,
and the health check. Their paths are fixed: they appear in emails already sent.

Every view works in one unit of work (`with sessions.begin()`), reads time from the runtime's
clock, and answers with a page; nothing here reveals whether an address is subscribed.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, jsonify, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from sqlalchemy.orm import Session

from tidings.errors import Conflict, InvalidInput
from tidings.models import Subscriber, SubscriberStatus
from tidings.subscribers.optin import (
    EMAIL_MAX_CHARS,
    PAUSE_WEEKS,
    TIMEZONE_MAX_CHARS,
    Confirmed,
    InvalidFields,
    campaign_names,
    check_profile,
    check_sign_up,
    confirm_campaign_names,
    pause,
    request_subscription,
    resend_confirmation,
    resume,
    subscriber_by_key,
    subscriber_for_token,
    update_profile,
)
from tidings.subscribers.optin import confirm as confirm_subscriber
from tidings.subscribers.service import Consent
from tidings.subscribers.service import unsubscribe as unsubscribe_subscriber
from tidings.subscribers.tokens import ExpiredToken, InvalidToken, make_token
from tidings.subscribers.validation import NAME_MAX_CHARS, mask_email
from tidings.web.app import context, error_response
from tidings.web.timezones import timezone_choices

log = logging.getLogger(__name__)
blueprint = Blueprint("pages", __name__)

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
LIMITS = {"email": EMAIL_MAX_CHARS, "name": NAME_MAX_CHARS, "timezone": TIMEZONE_MAX_CHARS}
STILL_RECEIVING = (SubscriberStatus.PENDING, SubscriberStatus.ACTIVE)


def csrf_exempt() -> bool:
    """The POSTs that carry no CSRF token by design: RFC 8058's one-click unsubscribe (sent by
    mail providers, authorized by the signed token in its URL), and the embedded sign-up form
    posted from a site listed in TIDINGS_FORM_ORIGINS (browsers set Origin; pages elsewhere
    cannot forge it)."""
    if request.endpoint == "pages.unsubscribe":
        return request.form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE
    if request.endpoint == "pages.subscribe":
        origin = (request.headers.get("Origin") or "").lower().rstrip("/")
        return origin in context().form_origins
    return False


def csrf_failed(exc: CSRFError) -> Any:
    """A form without a valid CSRF token: nothing is stored. The sign-up form comes back filled
    in, with a fresh token, so a person (e.g. from an embedded form) only has to send it again."""
    if request.endpoint == "pages.subscribe":
        return _subscribe_form(
            _sign_up_values(),
            {},
            400,
            notice="For your security, please check the details below and send the form again.",
        )
    return error_response(
        400, "This form has expired or was sent from another site. Please reload the page."
    )


# ----------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return context().runtime.clock.now()


def _session() -> Any:
    return context().runtime.sessions.begin()


def _consent(source: str, evidence: str | None = None, consent_text: str | None = None) -> Consent:
    return Consent(
        source=source,
        evidence=evidence,
        consent_text=consent_text,
        ip=request.remote_addr,
        user_agent=request.user_agent.string[:300] or None,
    )


def _link(scope: str, subscriber: Subscriber) -> str:
    """A same-site path for another page of this subscriber (never an absolute URL taken from
    the request)."""
    token = make_token(context().secret, scope, subscriber.key)
    return url_for(f"pages.{scope}", token=token)


def _invalid_link(scope: str) -> Any:
    return (
        render_template("web/link_invalid.html", scope=scope, title="This link does not work"),
        404,
    )


def _lookup(session: Session, scope: str, token: str) -> Subscriber | None:
    try:
        return subscriber_for_token(session, context().secret, scope, token, _now())
    except InvalidToken:
        return None


def _first_name(subscriber: Subscriber) -> str:
    return subscriber.name.split(" ")[0] if subscriber.name else ""


def _local_date(at: datetime, tz_name: str) -> str:
    local = at.astimezone(ZoneInfo(tz_name))
    return f"{local:%A} {local.day} {local:%B %Y}"


# ----------------------------------------------------------------------------- sign up


def _sign_up_values() -> dict[str, str]:
    form = request.form
    return {
        field: (form.get(field) or "")[: limit + 1]  # enough to show it was too long
        for field, limit in LIMITS.items()
    }


def _subscribe_form(
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


@blueprint.route("/subscribe", methods=["GET", "POST"])
def subscribe() -> Any:
    if request.method == "GET":
        return _subscribe_form({"email": "", "name": "", "timezone": ""}, {}, 200)
    ctx = context()
    form = request.form
    values = _sign_up_values()
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
        return _subscribe_form(values, errors, 422)
    origin = (request.headers.get("Origin") or "").lower().rstrip("/")
    where = origin if origin in ctx.form_origins else f"{ctx.settings.public_base_url}/subscribe"
    with _session() as session:
        outcome = request_subscription(
            session,
            _now(),
            sign_up,
            _consent("contact-form", f"sign-up form at {where}", ctx.consent_text),
            message_domain=ctx.settings.sender_domain,
            resend_after=ctx.resend_after,
        )
    log.info("sign-up form: %s: %s", mask_email(sign_up.email), outcome)
    return _sent()


# ----------------------------------------------------------------------------- confirm


@blueprint.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str) -> Any:
    """GET: confirm (idempotent). POST: send a new confirmation email (from the page shown for
    an expired link)."""
    ctx = context()
    now = _now()
    expired = False
    with _session() as session:
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
            return _invalid_link("confirm")
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
            session, subscriber, _consent("email", "opened the confirmation link"), now
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
            first_name=_first_name(subscriber),
            campaigns=campaigns,
            timezone=subscriber.timezone,
            preferences_url=_link("preferences", subscriber),
            unsubscribe_url=_link("unsubscribe", subscriber),
        )
        if result == Confirmed.NOW:
            log.info("confirmed: %s", mask_email(subscriber.email))
    return page, 200


# ----------------------------------------------------------------------------- unsubscribe


@blueprint.route("/unsubscribe/<token>", methods=["GET", "POST"])
def unsubscribe(token: str) -> Any:
    """GET: one button. POST: unsubscribe now; with the body List-Unsubscribe=One-Click
    (RFC 8058, sent by mail providers) without a CSRF token and without any page to press."""
    now = _now()
    with _session() as session:
        subscriber = _lookup(session, "unsubscribe", token)
        if subscriber is None:
            return _invalid_link("unsubscribe")
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
        page = render_template(
            "web/unsubscribe.html",
            title="Unsubscribe",
            token=token,
            campaigns=campaign_names(session, subscriber),
            pending=subscriber.status == SubscriberStatus.PENDING,
        )
    return page, 200


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
    now = _now()
    paused = subscriber.paused_until is not None and subscriber.paused_until > now
    return (
        render_template(
            "web/preferences.html",
            title="Your email preferences",
            token=token,
            values=values or {"name": subscriber.name, "timezone": subscriber.timezone},
            errors=errors or {},
            notice=notice,
            active=subscriber.status == SubscriberStatus.ACTIVE,
            paused_until=(
                _local_date(subscriber.paused_until, subscriber.timezone)
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
    now = _now()
    with _session() as session:
        subscriber = _lookup(session, "preferences", token)
        if subscriber is None:
            return _invalid_link("preferences")
        if subscriber.status not in STILL_RECEIVING:
            page = render_template(
                "web/preferences_closed.html",
                title="Your email preferences",
                subscribe_url=url_for("pages.subscribe"),
            )
            return page, (409 if request.method == "POST" else 200)
        if request.method == "GET":
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
                f"Your emails are paused until {_local_date(until, subscriber.timezone)}. "
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


# ----------------------------------------------------------------------------- health


@blueprint.get("/healthz")
def healthz() -> Any:
    """200 if the database answers, 503 if not. A raw connection: on SQLite, an ORM
    transaction would take the write lock (BEGIN IMMEDIATE) just to say hello."""
    engine = context().runtime.engine
    try:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
        finally:
            connection.close()
    except Exception as exc:
        log.warning("health check: database unreachable: %s", type(exc).__name__)
        return jsonify({"status": "error", "database": "unreachable"}), 503
    return jsonify({"status": "ok", "database": "ok"}), 200
